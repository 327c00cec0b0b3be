"""FLYP's cross-entropy ablation: both towers fine-tuned, the text tower's class prompts as the linear head.

locuslab/FLYP src/models/ce_ablation.py: each step draws one template per class (uniformly, independently),
encodes the C prompts with the text tower, and applies cross-entropy to logit_scale x image x text^T on
L2-normalised features, the logit scale trained. It is FLYP's step with the contrastive loss over the batch's
captions replaced by a softmax over all classes, so the two differ in the loss alone (the FLYP paper's ablation).
The C prompts are split over the data axis (the reference's DataParallel splits them over its GPUs the same
way), so each device encodes about C / n of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import losses, methods, parallel
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.data import templates as templates_lib
from flyp_jax.methods import common, flyp
from flyp_jax.tokenizer import prompt_tokens


def make_loss(config, model, mesh):
  names = classnames_lib.of_data(config.data)
  templates = templates_lib.get(config.data.templates)
  n_classes = len(names)
  prompts = prompt_tokens(names, templates, model.config.context_length)
  prompts = parallel.constant(prompts, mesh)  # [classes * templates, longest prompt]
  n_templates, n_data = len(templates), mesh.shape[parallel.DATA]
  # Padded to a multiple of the data axis (repeats of class 0, dropped after encoding) so the prompts split evenly.
  padded = -(-n_classes // n_data) * n_data
  classes = np.concatenate([np.arange(n_classes), np.zeros(padded - n_classes, int)]).astype(np.int32)
  split = parallel.data_sharding(mesh)

  def loss_fn(params, batch, rng):
    clip = params["clip"]
    template = jax.random.randint(rng, (n_classes,), 0, n_templates)  # one per class, as ce_ablation.py's `s`
    rows = jnp.asarray(classes) * n_templates + jnp.pad(template, (0, padded - n_classes))
    tokens = jax.lax.with_sharding_constraint(jnp.asarray(prompts)[rows], split)
    txt = common.text_features(model, clip, tokens)[:n_classes]  # [C, embed]
    img = common.image_features(model, clip, batch["image"])  # [B, embed]
    scale = jnp.exp(clip["logit_scale"])
    return losses.cross_entropy(scale * img @ txt.T, batch["label"]), {"logit_scale": scale}

  return loss_fn


# What it trains, reads and evaluates is FLYP's: the same parameters, batches and zero-shot evaluation.
METHOD = methods.Method(extra_params=flyp.extra_params, extra_param_shapes=flyp.extra_param_shapes,
                        batches=flyp.batches, batch_shapes=flyp.batch_shapes, make_loss=make_loss,
                        starts_zero_shot=lambda config: True)
