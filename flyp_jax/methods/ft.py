"""Standard fine-tuning: cross-entropy through the image tower and a linear head.

The head ({'kernel', 'bias'}) reads L2-normalised features and starts from the zero-shot head (class text
embeddings times the logit scale, bias 0), as WiSE-FT does, or from a linear probe's head for LP-FT
(`config.ft.head_init = 'lp'`, read from `config.ft.lp_workdir`). LP-FT's code applies its head to raw
`encode_image` features (`config.ft.head_input = 'raw'`, from a probe fitted on raw features: `lp.features`).
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


PROBE_HEAD, PROBE_INPUT = "lp_head.npz", "input"  # a linear probe's head, and its entry naming the features it reads
HEAD_INPUTS = ("normalized", "raw")


def load_probe_head(lp_workdir: str) -> tuple[dict, str]:
  """The head of the linear probe in `lp_workdir` ({'kernel' [E, C], 'bias' [C]}) and the features it reads
  ('normalized' for a probe written before the entry existed)."""
  head = files.load_npz(os.path.join(lp_workdir, PROBE_HEAD))
  return head, str(head.pop(PROBE_INPUT, "normalized"))


def head_model(config, model):
  """`model` with its heads reading the features `config.ft.head_input` names (what the evaluator applies them to)."""
  if config.ft.head_input not in HEAD_INPUTS:
    raise errors.BadValue(f"ft.head_input must be one of {HEAD_INPUTS}, got {config.ft.head_input!r}")
  return model.clone(normalize_features=config.ft.head_input == "normalized")


def extra_params(config, model, clip_params, mesh, evaluator) -> dict:
  if config.ft.head_init == "zeroshot" and config.ft.head_input == "raw":
    raise errors.BadValue("the zero-shot head reads L2-normalised features (class text embeddings times the logit "
                          "scale): ft.head_input='raw' needs a head fitted on raw features, a linear probe with "
                          "lp.features='raw' (ft.head_init='lp')")
  if config.ft.head_init == "zeroshot":
    kernel = evaluate.zeroshot_head(model, clip_params, classnames_lib.of_data(config.data),
                                    templates_lib.get(config.data.templates), mesh)
    head = {"kernel": kernel, "bias": np.zeros(kernel.shape[1], np.float32)}
  elif config.ft.head_init == "lp":
    path = os.path.join(config.ft.lp_workdir, PROBE_HEAD)
    if not files.exists(path):
      raise errors.NotFound(f"LP-FT needs a linear probe first: {path} is missing; run configs/lp.py with "
                              f"--workdir={config.ft.lp_workdir}, or point --config.ft.lp_workdir at a finished "
                              f"probe (a relative path is relative to this run's workdir's parent)")
    head, reads = load_probe_head(config.ft.lp_workdir)
    if reads != config.ft.head_input:
      raise errors.BadValue(f"the linear probe in {config.ft.lp_workdir} was fitted on {reads} features and this run's "
                            f"head reads {config.ft.head_input} ones (ft.head_input): run the probe with "
                            f"--config.lp.features={config.ft.head_input}, or set --config.ft.head_input={reads}")
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
  model = head_model(config, model)

  def loss_fn(params, batch, rng):
    images, targets = common.regularize(config, batch["image"], batch["label"], rng, mesh,
                                        params["head"]["bias"].shape[-1], config.ft.label_smoothing)
    logits = evaluate.apply_head(evaluate.head_features(model, params["clip"], images), params["head"])
    return losses.cross_entropy(logits, targets, config.ft.label_smoothing), {}

  return loss_fn


# Step 0 is the zero-shot model unless the head starts from a linear probe (LP-FT), whose run ft.lp_workdir names.
METHOD = methods.Method(extra_params=extra_params, extra_param_shapes=extra_param_shapes, batches=batches,
                        batch_shapes=batch_shapes, make_loss=make_loss,
                        eval_model=head_model, starts_zero_shot=lambda config: config.ft.head_init == "zeroshot",
                        run_paths=("ft.lp_workdir",))
