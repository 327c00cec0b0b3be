"""OpenAI, open_clip and Hugging Face CLIP checkpoints (PyTorch's names and layouts) -> (CLIPConfig, params).

Sources: OpenAI `.pt` files (TorchScript archives or plain state dicts), open_clip checkpoints (`.pt`,
`.bin`, `.safetensors`, training checkpoints with a 'state_dict'), Hugging Face `CLIPModel` directories
(`config.json` + safetensors or `pytorch_model.bin`). Every source is first brought to OpenAI's state-dict
layout (names of OpenAI's `model.py`, PyTorch [out, in] matrices), the one layout the architecture is read from
and mapped onto our parameter tree. Files are read as data (`flyp_jax.checkpoint_files`): nothing in them is
executed. `flyp_jax.models.load_pretrained` reads them (and converted directories, `flyp_jax.models.converted`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from typing import Any, Optional

import numpy as np

from flyp_jax.checkpoint_files import CheckpointError, read_state_dict
from flyp_jax.models.clip import _some, check_params
from flyp_jax.models.converted import MARKER
from flyp_jax.models.variants import ACTIVATIONS, CLIPConfig, describe

_IGNORED = re.compile(r"(^|\.)(position_ids|attn_mask|input_resolution|context_length|vocab_size)$")


# ----------------------------------------------------------------------------------------------- sources
def read_source(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(OpenAI-layout state dict, facts the tensors cannot tell: 'activation', 'text_heads', ...)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, "config.json")):
      return _read_hf_directory(path)
    raise CheckpointError(f"{path} is a directory but holds neither a Hugging Face CLIPModel (config.json) "
                          f"nor a `python -m flyp_jax.convert` output ({MARKER})")
  sd = read_state_dict(path)
  if any(k.startswith(("vision_model.", "text_model.")) for k in sd):
    return _hf_to_openai(sd), {}
  hints = _open_clip_sidecar(path)
  if "activation" not in hints and _is_torchscript(path):
    hints["activation"] = "quick_gelu"  # OpenAI released its CLIPs as TorchScript archives; all QuickGELU.
  return _strip_open_clip_text_prefix(sd), hints


def _is_torchscript(path: str) -> bool:
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as z:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


_OPEN_CLIP_SUPPORTED = {  # option -> the values that keep OpenAI's computation
    "pool_type": {"tok", "argmax"}, "final_ln_after_pool": {False}, "no_ln_pre": {False},
    "pos_embed_type": {"learnable"}, "attentional_pool": {False}, "hf_model_name": {None, ""},
    "timm_model_name": {None, ""}, "embed_cls": {False}, "ls_init_value": {None}}


def _open_clip_sidecar(path: str) -> dict[str, Any]:
  """Facts from an `open_clip_config.json` beside the file, as open_clip's hub uploads have."""
  sidecar = os.path.join(os.path.dirname(os.path.abspath(path)), "open_clip_config.json")
  if not os.path.exists(sidecar):
    return {}
  with open(sidecar) as f:
    cfg = json.load(f).get("model_cfg", {})
  # Options that change the computation without changing tensor names; the rest show up as key mismatches.
  unsupported = [f"{k}={v!r}" for tower in ("vision_cfg", "text_cfg") for k, v in cfg.get(tower, {}).items()
                 if k in _OPEN_CLIP_SUPPORTED and v not in _OPEN_CLIP_SUPPORTED[k]]
  if unsupported:
    raise CheckpointError(f"{sidecar}: open_clip options {', '.join(unsupported)} are not supported; only the "
                          f"OpenAI CLIP layout (ViT image tower, CLIP text transformer) is")
  hints = {"activation": "quick_gelu" if cfg.get("quick_gelu") else "gelu"}
  for tower, key in (("vision", "vision_cfg"), ("text", "text_cfg")):
    if cfg.get(key, {}).get("heads"):
      hints[f"{tower}_heads"] = cfg[key]["heads"]
  return hints


def _strip_open_clip_text_prefix(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  # open_clip's CustomTextCLIP keeps the text tower under "text."; the tensors are otherwise OpenAI's.
  if "text.token_embedding.weight" not in sd:
    return sd
  return {k[len("text."):] if k.startswith("text.") else k: v for k, v in sd.items()}


def _read_hf_directory(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  with open(os.path.join(path, "config.json")) as f:
    cfg = json.load(f)
  if "vision_config" not in cfg or "text_config" not in cfg:
    raise CheckpointError(f"{path}/config.json is not a CLIPModel config (no vision_config/text_config; "
                          f"model_type={cfg.get('model_type')!r})")
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  else:
    files = [n for n in ("model.safetensors", "pytorch_model.bin") if os.path.exists(os.path.join(path, n))][:1]
  if not files:
    raise CheckpointError(f"{path} has a config.json but no model.safetensors, sharded index or pytorch_model.bin")
  sd = {}
  for name in files:
    sd.update(read_state_dict(os.path.join(path, name)))
  acts = {cfg[t].get("hidden_act", "quick_gelu") for t in ("vision_config", "text_config")}
  if len(acts) != 1 or not acts <= set(ACTIVATIONS):
    raise CheckpointError(f"{path}/config.json: activations {sorted(acts)} are not supported; both towers "
                          f"must use one of {ACTIVATIONS}")
  hints = {"activation": acts.pop(),
           "vision_heads": cfg["vision_config"].get("num_attention_heads"),
           "text_heads": cfg["text_config"].get("num_attention_heads"),
           "layer_norm_eps": cfg["vision_config"].get("layer_norm_eps", 1e-5)}
  return _hf_to_openai(sd), {k: v for k, v in hints.items() if v is not None}


_HF_RENAMES = [
    (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"^text_model\.encoder\.layers\.", "transformer.resblocks."),
    (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "visual.conv1.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"^vision_model\.encoder\.layers\.", "visual.transformer.resblocks."),
    (r"\.layer_norm1\.", ".ln_1."), (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."), (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
]


def _hf_to_openai(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Hugging Face CLIPModel tensors renamed (and q/k/v fused, projections transposed) to OpenAI's layout."""
  out, qkv = {}, {}
  for key, value in sd.items():
    if key in ("visual_projection.weight", "text_projection.weight"):
      out["visual.proj" if key.startswith("visual") else "text_projection"] = value.T
      continue
    for pattern, repl in _HF_RENAMES:
      key = re.sub(pattern, repl, key)
    m = re.match(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", key)
    if m:
      qkv.setdefault((m[1], m[3]), {})[m[2]] = value
    else:
      out[key] = value
  for (block, kind), parts in qkv.items():
    if set(parts) != {"q", "k", "v"}:
      raise CheckpointError(f"{block}: attention {kind} has only {sorted(parts)} of q, k, v projections")
    out[f"{block}.attn.in_proj_{kind}"] = np.concatenate([parts[n] for n in "qkv"], axis=0)
  return out


# ---------------------------------------------------------------------------------- architecture, mapping
def infer_config(sd: dict[str, np.ndarray], hints: Optional[dict[str, Any]] = None) -> CLIPConfig:
  """The architecture of an OpenAI-layout state dict, read from its tensors' shapes.

  Head counts are not visible in the tensors: they come from `hints` when the source says, else
  width // 64, as in every released CLIP.
  """
  hints = dict(hints or {})
  if "visual.conv1.weight" not in sd or "visual.proj" not in sd:
    if any(k.startswith("visual.layer1.") for k in sd):
      raise CheckpointError("ResNet image towers (RN50, RN101, ...) are not supported; use a ViT CLIP checkpoint")
    raise CheckpointError(f"not a CLIP checkpoint: no ViT image tower (visual.conv1.weight, visual.proj) among "
                          f"its {len(sd)} tensors (first keys: {sorted(sd)[:5]})")
  for key in ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight"):
    if key not in sd:
      raise CheckpointError(f"not a CLIP checkpoint: the text tower tensor {key!r} is missing")
  layers = lambda prefix: len({k.split(".")[len(prefix.split("."))] for k in sd if k.startswith(prefix + ".")})
  vision_width, _, patch, _ = sd["visual.conv1.weight"].shape
  grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
  text_width = sd["ln_final.weight"].shape[0]
  if "activation" not in hints:
    logging.warning("The checkpoint does not say which activation it was trained with; assuming QuickGELU "
                    "(OpenAI's CLIPs). For open_clip's LAION models pass activation='gelu' "
                    "(--activation=gelu).")
  return CLIPConfig(
      embed_dim=sd["text_projection"].shape[1], image_size=grid * patch, patch_size=patch,
      vision_width=vision_width, vision_layers=layers("visual.transformer.resblocks"),
      vision_heads=hints.get("vision_heads", vision_width // 64), text_width=text_width,
      text_layers=layers("transformer.resblocks"), text_heads=hints.get("text_heads", text_width // 64),
      context_length=sd["positional_embedding"].shape[0], vocab_size=sd["token_embedding.weight"].shape[0],
      mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
      activation=hints.get("activation", "quick_gelu"), layer_norm_eps=hints.get("layer_norm_eps", 1e-5))


def _expected_keys(c: CLIPConfig) -> set[str]:
  block = ["ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
           "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
           "mlp.c_proj.weight", "mlp.c_proj.bias"]
  keys = {"visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
          "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias", "visual.proj",
          "token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias",
          "text_projection", "logit_scale"}
  keys |= {f"visual.transformer.resblocks.{i}.{b}" for i in range(c.vision_layers) for b in block}
  keys |= {f"transformer.resblocks.{i}.{b}" for i in range(c.text_layers) for b in block}
  return keys


def openai_to_params(sd: dict[str, np.ndarray], config: CLIPConfig) -> dict:
  """Map an OpenAI-layout state dict onto our parameter tree (float32 numpy), checking names and shapes."""
  present = {k for k in sd if not _IGNORED.search(k)}
  expected = _expected_keys(config)
  if present != expected:
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    raise CheckpointError(f"the checkpoint does not match the CLIP architecture inferred from it "
                          f"({describe(config)}): missing {_some(missing)}; unexpected {_some(unexpected)}")
  f32 = lambda k: np.asarray(sd[k], dtype=np.float32)
  ln = lambda p: {"scale": f32(p + ".weight"), "bias": f32(p + ".bias")}
  dense = lambda p: {"kernel": f32(p + ".weight").T, "bias": f32(p + ".bias")}

  def tower(prefix, layers, width, heads):
    d = width // heads
    blocks = {}
    for i in range(layers):
      p = f"{prefix}resblocks.{i}."
      qkv_w = np.split(f32(p + "attn.in_proj_weight"), 3)
      qkv_b = np.split(f32(p + "attn.in_proj_bias"), 3)
      attn = {name: {"kernel": w.T.reshape(width, heads, d), "bias": b.reshape(heads, d)}
              for name, w, b in zip(("query", "key", "value"), qkv_w, qkv_b)}
      attn["out"] = {"kernel": f32(p + "attn.out_proj.weight").T.reshape(heads, d, width),
                     "bias": f32(p + "attn.out_proj.bias")}
      blocks[f"resblocks_{i}"] = {"ln_1": ln(p + "ln_1"), "attn": attn, "ln_2": ln(p + "ln_2"),
                                  "mlp": {"c_fc": dense(p + "mlp.c_fc"), "c_proj": dense(p + "mlp.c_proj")}}
    return blocks

  c = config
  params = {
      "visual": {
          "conv1": {"kernel": f32("visual.conv1.weight").transpose(2, 3, 1, 0)},  # OIHW -> HWIO
          "class_embedding": f32("visual.class_embedding"),
          "positional_embedding": f32("visual.positional_embedding"),
          "ln_pre": ln("visual.ln_pre"),
          "transformer": tower("visual.transformer.", c.vision_layers, c.vision_width, c.vision_heads),
          "ln_post": ln("visual.ln_post"),
          "proj": f32("visual.proj"),
      },
      "text": {
          "token_embedding": {"embedding": f32("token_embedding.weight")},
          "positional_embedding": f32("positional_embedding"),
          "transformer": tower("transformer.", c.text_layers, c.text_width, c.text_heads),
          "ln_final": ln("ln_final"),
          "text_projection": f32("text_projection"),
      },
      "logit_scale": f32("logit_scale").reshape(()),
  }
  check_params(params, config)
  return params
