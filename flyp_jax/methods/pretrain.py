"""Contrastive pretraining of a CLIP on image-caption data: the same loss and loop as FLYP.

Used to make the pretrained model of the offline benchmark (`domain_shapes`' `pretrain` split).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flyp_jax import losses, parallel
from flyp_jax import methods
from flyp_jax.methods import common
from flyp_jax.tokenizer import tokenize


def extra_params(config, model, clip_params, mesh, evaluator) -> dict:
  return {}


def extra_param_shapes(config, model) -> dict:
  return {}


def batches(config, model, mesh, start_step: int):
  for b in common.train_batches(config, model, mesh, start_step, features=("caption",)):
    captions = [c.decode("utf-8") for c in b["caption"]]
    yield parallel.global_batch({"image": b["image"], "tokens": tokenize(captions, model.config.context_length)},
                                mesh)


def batch_shapes(config, model) -> dict:
  image = common.labelled_batch_shapes(config, model)["image"]
  return {"image": image, "tokens": jax.ShapeDtypeStruct((image.shape[0], model.config.context_length), jnp.int32)}


def make_loss(config, model, mesh):
  def loss_fn(params, batch, rng):
    clip = params["clip"]
    img = common.image_features(model, clip, batch["image"])
    txt = common.text_features(model, clip, batch["tokens"])
    scale = jnp.exp(clip["logit_scale"])
    return losses.sharded_clip_loss(img, txt, scale, mesh, block=config.flyp.loss_block), {"logit_scale": scale}

  return loss_fn


METHOD = methods.Method(extra_params=extra_params, extra_param_shapes=extra_param_shapes, batches=batches,
                        batch_shapes=batch_shapes, make_loss=make_loss)
