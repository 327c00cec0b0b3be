"""The ViT of timm and MAE (facebookresearch/mae `models_vit.py`, timm `vision_transformer.py`) in Flax: the
teachers and students of attention transfer (Li et al., 2024), loaded from MAE's released `.pth` files or a
timm-layout state dict through the safe reader (`flyp_jax.checkpoint_files`: nothing in the file is executed).

Architecture (timm `VisionTransformer` with `class_token`, no layer scale): a patch embedding (a convolution
with bias), a class token and learned positional embeddings added to the tokens (no pre-norm), pre-LN blocks
(`flyp_jax.models.transformer`, exact GELU, LayerNorm eps 1e-6), then pooling: 'gap' (mean of the patch tokens,
then `fc_norm`: MAE's fine-tuning `global_pool`, the attention-transfer code's default) or 'cls' (`norm`, then
the class token). The model returns the pooled features; a classifier head is kept beside it, as the other
methods' heads ({'kernel' [W, C], 'bias' [C]}).

Parameter tree: {patch_embed/{kernel, bias}, cls_token [W], pos_embed [T, W], transformer/resblocks_{i},
fc_norm | norm}. Images are NHWC, normalised as the checkpoint was trained (MAE: ImageNet mean and std).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import checkpoint_files, errors, files
from flyp_jax.checkpoint_files import CheckpointError
from flyp_jax.models import converted
from flyp_jax.models.clip import PatchEmbedding
from flyp_jax.models.transformer import LayerNorm, Transformer
from flyp_jax.models.variants import ShapeFields

Array = jax.Array
POOLS = ("gap", "cls")
KIND = "vit"  # the 'kind' a converted directory's marker names (CLIP directories have none)


@dataclasses.dataclass(frozen=True)
class ViTConfig(ShapeFields):
  """A timm / MAE ViT's shape. Widths are channels, sizes pixels."""
  image_size: int
  patch_size: int
  width: int
  layers: int
  heads: int
  mlp_ratio: float = 4.0
  layer_norm_eps: float = 1e-6
  pool: str = "gap"

  def __post_init__(self):
    if self.pool not in POOLS:
      raise errors.BadValue(f"pool must be one of {POOLS}, got {self.pool!r}")
    if self.image_size % self.patch_size:
      raise errors.BadValue(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
    if self.width % self.heads:
      raise errors.BadValue(f"width {self.width} is not divisible by its {self.heads} heads")


# MAE's models_vit.py: vit_base_patch16 (768, 12, 12), vit_large_patch16 (1024, 24, 16), vit_huge_patch14
# (1280, 32, 16: heads of 80 channels, so heads cannot be read off the width as 64-channel heads).
_SIZES = {"B": (768, 12, 12), "L": (1024, 24, 16), "H": (1280, 32, 16)}
HEADS_BY_WIDTH = {w: h for w, _, h in _SIZES.values()}


def get_config(variant: str, **overrides) -> ViTConfig:
  """'ViT-B/16', 'ViT-L/16', 'ViT-H/14' (MAE's), 224 px unless '@<size>'; keyword overrides replace fields."""
  m = re.match(r"^ViT-(?P<size>[BLH])[/-](?P<patch>\d+)(?:@(?P<res>\d+))?$", variant)
  if not m:
    raise errors.BadValue(f"unknown ViT variant {variant!r}; expected 'ViT-B/16', 'ViT-L/16' or 'ViT-H/14'")
  width, layers, heads = _SIZES[m["size"]]
  fields = dict(image_size=int(m["res"] or 224), patch_size=int(m["patch"]), width=width, layers=layers, heads=heads)
  fields.update(overrides)
  return ViTConfig(**fields)


class ViT(nn.Module):
  """Images [B, S, S, 3] -> (pooled features [B, width] float32, aux).

  aux: 'attention' (per-layer [B, H, T, T], T = 1 + patches: post-softmax maps, or with
  return_attention="logits" the pre-softmax scores; None unless asked), 'tokens' ([B, T, width], the last
  block's output). `attention_maps` (one entry per layer, None or a [B, H, T, T] map) replace the layers'
  own maps (attention copy); with `given` "q", "k" or "v" the entries are [B, T, H, D] queries, keys or values
  instead, and return_attention "q", "k" or "v" returns each layer's own (`flyp_jax.models.transformer.Attention`);
  `drop_masks` [layers, 2, B] are stochastic depth's branch factors.
  """
  config: ViTConfig
  dtype: Any = jnp.float32
  remat: bool | str = False

  @nn.compact
  def __call__(self, images: Array, attention_maps: Optional[Sequence[Optional[Array]]] = None,
               return_attention: bool | str = False, drop_masks: Optional[Array] = None,
               given: str = "probs") -> tuple[Array, dict]:
    c = self.config
    if images.ndim != 4 or images.shape[1:] != (c.image_size, c.image_size, 3):
      raise errors.BadValue(f"expected images of shape [B, {c.image_size}, {c.image_size}, 3] (NHWC), got {images.shape}")
    std = nn.initializers.normal(0.02)
    x = PatchEmbedding(c.patch_size, c.width, self.dtype, use_bias=True,
                       kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                       name="patch_embed")(images)
    cls = self.param("cls_token", std, (c.width,), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, c.width)), x], axis=1)
    x = x + self.param("pos_embed", std, (c.num_patches + 1, c.width), jnp.float32).astype(x.dtype)
    x, maps = Transformer(c.layers, c.heads, c.mlp_ratio, "gelu", causal=False, eps=c.layer_norm_eps,
                          dtype=self.dtype, remat=self.remat, name="transformer")(
                              x, attention_maps, return_attention, None, drop_masks, given)
    if c.pool == "gap":
      pooled = LayerNorm(c.layer_norm_eps, name="fc_norm")(x[:, 1:].astype(jnp.float32).mean(axis=1))
    else:
      pooled = LayerNorm(c.layer_norm_eps, name="norm")(x)[:, 0]
    return pooled.astype(jnp.float32), {"attention": maps, "tokens": x}


def init_params(model: ViT, rng: Array) -> dict:
  """Random parameters as timm's / the attention-transfer student's `_init_weights`: every linear kernel
  normal(0.02) (timm's trunc_normal_(std=.02) cuts at +-2, i.e. 100 standard deviations: the same
  distribution), biases 0, LayerNorms 1 and 0, class token and positional embeddings normal(0.02), the patch
  embedding as torch's Conv2d default (uniform in +-1 / sqrt(fan_in))."""
  c = model.config
  params = model.init(rng, jnp.zeros((1, c.image_size, c.image_size, 3), jnp.float32))["params"]
  leaves, treedef = jax.tree.flatten_with_path(params)
  keys = jax.random.split(jax.random.fold_in(rng, 1), len(leaves))
  out = []
  for (path, leaf), key in zip(leaves, keys):
    names = [str(getattr(k, "key", k)) for k in path]
    if names[0] == "transformer" and names[-1] == "kernel":
      leaf = 0.02 * jax.random.normal(key, leaf.shape, leaf.dtype)
    elif names[0] == "transformer" and names[-1] == "bias" and names[-2] not in ("ln_1", "ln_2"):
      leaf = jnp.zeros_like(leaf)
    out.append(leaf)
  return jax.tree.unflatten(treedef, out)


def classifier_head(rng: Array, width: int, n_classes: int) -> dict:
  """A linear head as the attention-transfer student's: kernel normal(0.02) (trunc_normal_, see `init_params`;
  main_finetune.py re-initialises `student.head.weight` so), bias 0."""
  return {"kernel": np.asarray(0.02 * jax.random.normal(rng, (width, n_classes), jnp.float32)),
          "bias": np.zeros((n_classes,), np.float32)}


# ----------------------------------------------------------------------------------------------- checkpoints
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# Parts of other models saved beside a ViT encoder: MAE's pretraining decoder and mask token, a classifier
# head (a fine-tuned MAE), the final norm not used by the other pooling.
_IGNORED = re.compile(r"^(decoder_|decoder\.|mask_token$|head\.|head_drop|fc_norm\.|norm\.)")
_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
               "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
_OPTIONAL_BLOCK_KEYS = ("attn.qkv.bias",)  # timm's qkv_bias=False has none (zeros here); MAE's has one


def infer_config(sd: dict[str, np.ndarray], path: str = "", heads: Optional[int] = None,
                 pool: str = "gap") -> ViTConfig:
  """The ViTConfig of a timm / MAE state dict; `heads` when the width is not one of MAE's (64-channel heads
  otherwise). A state dict of another layout raises CheckpointError, naming what is missing."""
  needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "blocks.0.attn.qkv.weight")
  missing = [k for k in needed if k not in sd]
  if missing:
    some = ", ".join(sorted(sd)[:6])
    raise CheckpointError(
        f"{path or 'the state dict'} is not a timm / MAE ViT: it has no {', '.join(missing)} (its first names: "
        f"{some}). Expected the layout of facebookresearch/mae models_vit.py or timm's VisionTransformer "
        f"(cls_token, pos_embed, patch_embed.proj, blocks.N.attn.qkv, ...), or a .pth holding it under 'model'; "
        f"a CLIP checkpoint loads with flyp_jax.models.load_pretrained instead.")
  width = int(sd["cls_token"].shape[-1])
  patch = int(sd["patch_embed.proj.weight"].shape[-1])
  tokens = int(np.prod(sd["pos_embed"].shape[:-1]))
  grid = math.isqrt(max(tokens - 1, 0))
  if grid * grid != tokens - 1:
    raise CheckpointError(f"{path or 'the state dict'}: pos_embed {tuple(sd['pos_embed'].shape)} is not a class "
                          f"token plus a square grid of patches (a ViT without a class-token embedding is not supported)")
  layers = 1 + max(int(m.group(1)) for m in map(_BLOCK.match, sd) if m)
  hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0]) if "blocks.0.mlp.fc1.weight" in sd else 4 * width
  heads = heads or HEADS_BY_WIDTH.get(width, max(width // 64, 1))
  return ViTConfig(image_size=grid * patch, patch_size=patch, width=width, layers=layers, heads=heads,
                   mlp_ratio=hidden / width, pool=pool)


def state_dict_to_params(sd: dict[str, np.ndarray], config: ViTConfig, path: str = "") -> dict:
  """timm / MAE names -> this module's tree (float32 numpy), checking every name and shape."""
  c = config
  expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
  expected |= {f"blocks.{i}.{k}" for i in range(c.layers) for k in _BLOCK_KEYS}
  optional = {f"blocks.{i}.{k}" for i in range(c.layers) for k in _OPTIONAL_BLOCK_KEYS}
  present = {k for k in sd if not _IGNORED.match(k)}
  missing, unexpected = sorted(expected - present), sorted(present - expected - optional)
  if missing or unexpected:
    raise CheckpointError(f"{path or 'the state dict'} does not match the ViT inferred from it ({c.layers} layers of "
                          f"width {c.width}, patch {c.patch_size}): missing {missing[:8]}; unexpected {unexpected[:8]} "
                          f"(layer scale, relative positions and other timm variants are not supported)")
  f32 = lambda k: np.asarray(sd[k], np.float32)
  w, h = c.width, c.heads
  d = w // h
  ln = lambda p: {"scale": f32(p + ".weight"), "bias": f32(p + ".bias")}
  dense = lambda p: {"kernel": f32(p + ".weight").T, "bias": f32(p + ".bias")}
  blocks = {}
  for i in range(c.layers):
    p = f"blocks.{i}."
    # timm's qkv output is laid out (3, heads, head_dim): rows [0, W) are the queries, then keys, then values.
    qkv_w = np.split(f32(p + "attn.qkv.weight"), 3)
    qkv_b = np.split(f32(p + "attn.qkv.bias") if p + "attn.qkv.bias" in sd else np.zeros(3 * w, np.float32), 3)
    attn = {n: {"kernel": wt.T.reshape(w, h, d), "bias": b.reshape(h, d)}
            for n, wt, b in zip(("query", "key", "value"), qkv_w, qkv_b)}
    attn["out"] = {"kernel": f32(p + "attn.proj.weight").T.reshape(h, d, w), "bias": f32(p + "attn.proj.bias")}
    blocks[f"resblocks_{i}"] = {"ln_1": ln(p + "norm1"), "attn": attn, "ln_2": ln(p + "norm2"),
                                "mlp": {"c_fc": dense(p + "mlp.fc1"), "c_proj": dense(p + "mlp.fc2")}}
  params = {"patch_embed": {"kernel": f32("patch_embed.proj.weight").transpose(2, 3, 1, 0),  # OIHW -> HWIO
                            "bias": f32("patch_embed.proj.bias")},
            "cls_token": f32("cls_token").reshape(w),
            "pos_embed": f32("pos_embed").reshape(-1, w),
            "transformer": blocks}
  # The pooling's norm: fc_norm (gap) or norm (cls) when the file has it, else the identity LayerNorm (an MAE
  # pretraining encoder saves `norm` only; a teacher's pooled output is not used).
  name, key = ("fc_norm", "fc_norm") if c.pool == "gap" else ("norm", "norm")
  params[name] = ln(key) if f"{key}.weight" in sd else {"scale": np.ones(w, np.float32), "bias": np.zeros(w, np.float32)}
  check_params(params, c, path)
  return params


def config_from_params(params: dict, pool: str = "gap") -> ViTConfig:
  """The ViTConfig of a parameter tree of this module (every size is in the shapes; eps is timm's 1e-6)."""
  width = int(np.shape(params["cls_token"])[-1])
  patch = int(np.shape(params["patch_embed"]["kernel"])[0])
  blocks = params["transformer"]
  first = blocks["resblocks_0"]
  grid = math.isqrt(int(np.shape(params["pos_embed"])[0]) - 1)
  return ViTConfig(image_size=grid * patch, patch_size=patch, width=width, layers=len(blocks),
                   heads=int(np.shape(first["attn"]["query"]["kernel"])[1]),
                   mlp_ratio=int(np.shape(first["mlp"]["c_fc"]["kernel"])[1]) / width, pool=pool)


def check_params(params: dict, config: ViTConfig, path: str = "") -> None:
  abstract = jax.eval_shape(lambda: ViT(config).init(jax.random.key(0), jnp.zeros(
      (1, config.image_size, config.image_size, 3)))["params"])
  want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree.leaves_with_path(abstract)}
  got = {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in jax.tree.leaves_with_path(params)}
  if want != got:
    bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    raise CheckpointError(f"{path or 'the parameters'} do not fit the ViT {config}: {bad[:6]}")


def load(path, heads: Optional[int] = None, pool: str = "gap", dtype: Any = jnp.float32,
         remat: bool | str = False) -> tuple[ViT, dict]:
  """(model, params) from an MAE `.pth` ({'model': state dict}), a timm state dict (torch.save or safetensors)
  or a directory written by `save`. Nothing in a torch file is executed (`flyp_jax.checkpoint_files`)."""
  path = os.fspath(path)
  if files.exists(os.path.join(path, MARKER)):
    config, params = load_saved(path)
    return ViT(config, jnp.dtype(dtype), remat), params
  if not os.path.exists(path):
    raise errors.NotFound(f"no ViT checkpoint at {path}: expected an MAE .pth (facebookresearch/mae releases "
                            f"mae_pretrain_vit_large.pth), a timm state dict or a saved flyp_jax ViT directory")
  sd = checkpoint_files.read_state_dict(path)
  config = infer_config(sd, path, heads, pool)
  return ViT(config, jnp.dtype(dtype), remat), state_dict_to_params(sd, config, path)


MARKER = converted.MARKER  # a finished run's final/ has it, CLIP or ViT (its "kind" tells them apart)


def save(dst: str, config: ViTConfig, params: dict, source: str = "", arrays: Optional[dict] = None) -> None:
  """Params as an orbax checkpoint under dst/params, `arrays` ({'head.npz': tree}) beside them, and the marker
  ({'kind': 'vit', 'config': ...}) written last: `flyp_jax.models.converted.save` with this kind."""
  converted.save(dst, config, params, source=source, arrays=arrays, kind=KIND)


def load_saved(path: str) -> tuple[ViTConfig, dict]:
  record = converted.read_marker(path)
  if record.get("kind") != KIND:
    raise errors.BadValue(f"{path} holds a CLIP, not a ViT: load it with flyp_jax.models.load_pretrained")
  config = ViTConfig.from_dict(record["config"])
  abstract = jax.eval_shape(lambda: ViT(config).init(jax.random.key(0), jnp.zeros(
      (1, config.image_size, config.image_size, 3)))["params"])
  return config, converted.restore_params(path, abstract)
