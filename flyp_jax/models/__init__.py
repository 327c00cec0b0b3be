"""CLIP models: variants by name, random init, and loading of pretrained checkpoints."""

from __future__ import annotations

import os
from typing import Any, Optional

from flyp_jax import errors, files, pretrained
from flyp_jax.models import converted, from_torch
from flyp_jax.models.clip import (CLIP, TextTransformer, VisionTransformer, build_options, create_model, dummy_inputs,
                                  init_params, normalize, remat_setting)
from flyp_jax.models.transformer import stack_blocks, unstack_blocks
from flyp_jax.models.variants import ACTIVATIONS, CLIPConfig, get_config


def load_pretrained(path, activation: Optional[str] = None, dtype: Any = "float32", remat: bool | str = False,
                    scan: bool = False):
  """(model, params) from an OpenAI, open_clip or Hugging Face checkpoint (`models.from_torch`), a converted
  directory or `.npz` file (`models.converted`), or `openai:NAME` (`flyp_jax.pretrained`); params are float32
  numpy arrays (host memory).

  activation: "quick_gelu" or "gelu" when the source does not say (plain open_clip state dicts).
  dtype: the model's compute dtype ("bfloat16" on TPU). Put params on devices with `jax.device_put`.
  scan: the model's blocks under `nn.scan` (`model.scan_layers`), the parameters stacked to fit it; checkpoints
  on disk keep the per-layer layout.
  """
  path = pretrained.resolve(os.fspath(path))  # openai:NAME -> the cached, checked download
  if not files.is_remote(path) and not os.path.exists(path):
    raise errors.NotFound(pretrained.missing_checkpoint_message(path))
  is_dir = converted.is_converted(path)
  if is_dir or (path.endswith(".npz") and os.path.isfile(path)):
    config, params = converted.load(path) if is_dir else converted.load_npz(path)
    if activation and activation != config.activation:
      raise errors.BadValue(f"{path} was converted with activation {config.activation!r}, not {activation!r}")
  else:
    sd, hints = from_torch.read_source(path)
    if activation is not None:
      if activation not in ACTIVATIONS:
        raise errors.BadValue(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
      hints["activation"] = activation
    config = from_torch.infer_config(sd, hints)
    params = from_torch.openai_to_params(sd, config)
  return create_model(config, dtype=dtype, remat=remat, scan=scan), (stack_blocks(params) if scan else params)


__all__ = ["CLIP", "CLIPConfig", "TextTransformer", "VisionTransformer", "build_options", "create_model", "dummy_inputs",
           "get_config", "init_params", "load_pretrained", "normalize", "remat_setting",
           "stack_blocks", "unstack_blocks"]
