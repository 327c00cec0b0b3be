"""CLIP models: variants by name, random init, and loading of pretrained checkpoints."""

from __future__ import annotations

from typing import Any, Union

import jax.numpy as jnp

from flyp_jax.models.clip import CLIP, TextTransformer, VisionTransformer, dummy_inputs, init_params, normalize
from flyp_jax.models.variants import CLIPConfig, get_config


def create_model(variant: Union[str, CLIPConfig], dtype: Any = jnp.float32, remat: bool | str = False) -> CLIP:
  """A CLIP module for a variant name ("ViT-B/16") or a CLIPConfig; `dtype` is the compute dtype."""
  config = get_config(variant) if isinstance(variant, str) else variant
  return CLIP(config, dtype=jnp.dtype(dtype), remat=remat)


def remat_setting(model_config) -> bool | str:
  """A config's `model.remat` and `model.remat_policy` as the modules' `remat`: False, True (every block
  recomputed whole in the backward pass) or the jax.checkpoint_policies name of what a block keeps."""
  return (model_config.remat_policy or True) if model_config.remat else False


def load_pretrained(path, **kwargs):
  """(model, params) from an OpenAI, open_clip or Hugging Face checkpoint, or a `flyp_jax.convert` output.

  See `flyp_jax.convert.load_pretrained` for the options.
  """
  from flyp_jax import convert  # convert imports this package; import late to keep the cycle harmless.
  return convert.load_pretrained(path, **kwargs)


__all__ = ["CLIP", "CLIPConfig", "TextTransformer", "VisionTransformer", "create_model", "dummy_inputs",
           "get_config", "init_params", "load_pretrained", "normalize"]
