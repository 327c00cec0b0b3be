"""FLYP: fine-tune both towers with CLIP's contrastive loss, captions made from the class names.

Each example is paired with its class name in a template drawn at random per example and step (FLYP's
image x template rows). All prompts are tokenised once and cut to the longest (`tokenizer.prompt_tokens`:
the text tower's cost follows the token count); the step gathers the rows it needs on device. The
evaluator rebuilds the zero-shot head from the current text tower at each evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flyp_jax import losses, parallel
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.data import templates as templates_lib
from flyp_jax import methods
from flyp_jax.methods import common
from flyp_jax.tokenizer import prompt_tokens


def extra_params(config, model, clip_params, mesh, evaluator) -> dict:
  return {}


def extra_param_shapes(config, model) -> dict:
  return {}


def batches(config, model, mesh, start_step: int):
  return common.labelled_batches(config, model, mesh, start_step)


def batch_shapes(config, model) -> dict:
  return common.labelled_batch_shapes(config, model)


def make_loss(config, model, mesh):
  classnames = classnames_lib.of_data(config.data)
  templates = templates_lib.get(config.data.templates)
  prompts = prompt_tokens(classnames, templates, model.config.context_length)
  prompts = parallel.constant(prompts, mesh)  # [classes * templates, longest prompt]
  n_templates = len(templates)

  def loss_fn(params, batch, rng):
    clip = params["clip"]
    labels = batch["label"]
    template = jax.random.randint(rng, labels.shape, 0, n_templates)
    tokens = jnp.asarray(prompts)[labels * n_templates + template]  # (a host array on a compile-only mesh)
    img = common.image_features(model, clip, batch["image"])
    txt = common.text_features(model, clip, tokens)
    scale = jnp.exp(clip["logit_scale"])
    loss = losses.sharded_clip_loss(img, txt, scale, mesh, labels=labels,
                                    mask_same_class=config.flyp.mask_same_class, block=config.flyp.loss_block)
    return loss, {"logit_scale": scale}

  return loss_fn


# Step 0 is the zero-shot model: FLYP's head is the text tower's, from the start.
METHOD = methods.Method(extra_params=extra_params, extra_param_shapes=extra_param_shapes, batches=batches,
                        batch_shapes=batch_shapes, make_loss=make_loss,
                        starts_zero_shot=lambda config: True)
