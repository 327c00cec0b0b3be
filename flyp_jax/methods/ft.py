"""Standard fine-tuning: cross-entropy through the image tower and a linear head on normalised features.

The head ({'kernel', 'bias'}) starts from the zero-shot head (class text embeddings times the logit scale,
bias 0), as WiSE-FT does, or
from a linear probe's head for LP-FT (`config.ft.head_init = 'lp'`, read from `config.ft.lp_workdir`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import errors, evaluate, files, losses
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.data import templates as templates_lib
from flyp_jax import methods
from flyp_jax.methods import common


def extra_params(config, model, clip_params, mesh, evaluator) -> dict:
  if config.ft.head_init == "zeroshot":
    kernel = evaluate.zeroshot_head(model, clip_params, classnames_lib.of_data(config.data),
                                    templates_lib.get(config.data.templates), mesh)
    head = {"kernel": kernel, "bias": np.zeros(kernel.shape[1], np.float32)}
  elif config.ft.head_init == "lp":
    path = os.path.join(config.ft.lp_workdir, "lp_head.npz")
    if not files.exists(path):
      raise errors.NotFound(f"LP-FT needs a linear probe first: {path} is missing; run configs/lp.py with "
                              f"--workdir={config.ft.lp_workdir}, or point --config.ft.lp_workdir at a finished "
                              f"probe (a relative path is relative to this run's workdir's parent)")
    head = files.load_npz(path)
  else:
    raise errors.BadValue(f"ft.head_init must be 'zeroshot' or 'lp', got {config.ft.head_init!r}")
  return {"head": head}


def extra_param_shapes(config, model) -> dict:
  """The head's shapes: kernel [embed_dim, classes], bias [classes], whichever head it starts from."""
  n, e = len(classnames_lib.of_data(config.data)), model.config.embed_dim
  return {"head": {"kernel": jax.ShapeDtypeStruct((e, n), jnp.float32), "bias": jax.ShapeDtypeStruct((n,), jnp.float32)}}


def batches(config, model, mesh, start_step: int):
  return common.labelled_batches(config, model, mesh, start_step)


def batch_shapes(config, model) -> dict:
  return common.labelled_batch_shapes(config, model)


def make_loss(config, model, mesh):
  def loss_fn(params, batch, rng):
    logits = evaluate.apply_head(common.image_features(model, params["clip"], batch["image"]), params["head"])
    return losses.cross_entropy(logits, batch["label"], config.ft.label_smoothing), {}

  return loss_fn


# Step 0 is the zero-shot model unless the head starts from a linear probe (LP-FT), whose run ft.lp_workdir names.
METHOD = methods.Method(extra_params=extra_params, extra_param_shapes=extra_param_shapes, batches=batches,
                        batch_shapes=batch_shapes, make_loss=make_loss,
                        starts_zero_shot=lambda config: config.ft.head_init == "zeroshot",
                        run_paths=("ft.lp_workdir",))
