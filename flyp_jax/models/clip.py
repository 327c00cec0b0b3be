"""CLIP in Flax linen: a ViT image tower, a causal text tower and a learned logit scale.

Parameter tree (stable: checkpoints and optimiser masks refer to these names):
  visual/{conv1, class_embedding, positional_embedding, ln_pre, transformer/resblocks_{i}, ln_post, proj}
  text/{token_embedding, positional_embedding, transformer/resblocks_{i}, ln_final, text_projection}
  logit_scale  (log of the temperature's inverse; logits use exp(logit_scale))
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

import numpy as np

from flyp_jax import errors
from flyp_jax.checkpoint_files import CheckpointError
from flyp_jax.models.transformer import LayerNorm, Transformer, matmul, stack_blocks, token_at
from flyp_jax.models.variants import CLIPConfig, describe, get_config

Array = jax.Array
normal = nn.initializers.normal


class PatchEmbedding(nn.Module):
  """CLIP's patch embedding, a convolution with stride = kernel = patch and no bias: images [B, S, S, 3] ->
  [B, (S / patch)^2, width], patches in row-major order. Parameter `kernel` [patch, patch, 3, width] (HWIO),
  initialised as `nn.Conv`'s.

  Computed as one matmul of the flattened patches [B * patches, patch * patch * 3] with the kernel
  flattened the same way: the same values as the convolution (tests/test_models.py), while XLA:CPU ran the
  strided convolution and its weight gradient (a dilated convolution) at a third of its matmul speed.
  """
  patch: int
  width: int
  dtype: Any = jnp.float32
  use_bias: bool = False  # CLIP's has none; timm's (MAE's) PatchEmbed has one
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, images: Array) -> Array:
    p = self.patch
    kernel = self.param("kernel", self.kernel_init, (p, p, images.shape[-1], self.width), jnp.float32)
    b, h, w, ch = images.shape
    patches = images.reshape(b, h // p, p, w // p, p, ch).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b * (h // p) * (w // p), p * p * ch).astype(self.dtype)
    out = matmul(patches, kernel.reshape(p * p * ch, self.width).astype(self.dtype))
    if self.use_bias:  # initialised as torch's Conv2d bias: uniform in +-1 / sqrt(fan_in)
      bound = (p * p * ch) ** -0.5
      init = lambda rng, shape, dtype: jax.random.uniform(rng, shape, dtype, -bound, bound)
      out = out + self.param("bias", init, (self.width,), jnp.float32).astype(self.dtype)
    return out.reshape(b, (h // p) * (w // p), self.width)


class VisionTransformer(nn.Module):
  """Images [B, S, S, 3] (NHWC, CLIP-normalised) -> (features [B, embed_dim], aux).

  aux: 'attention' (per-layer maps [B, H, T, T] with T = 1 + patches, or None unless requested; "logits" asks
  for the pre-softmax scores, "q", "k" or "v" for each layer's projection [B, T, H, D]), 'pooled' (the class token after ln_post, [B, width]), 'tokens' (last block's
  output, [B, T, width]). `drop_masks`: stochastic depth's factors (`transformer.drop_path_masks`) or None.
  With `pool_only` the last block is computed at the class token only (`Transformer`'s pool_index): the
  same features, and aux 'tokens' is None.
  """
  config: CLIPConfig
  dtype: Any = jnp.float32
  remat: bool | str = False
  scan: bool = False  # model.scan_layers (Transformer's scan)

  @nn.compact
  def __call__(self, images: Array, attention_maps: Optional[Sequence[Optional[Array]]] = None,
               return_attention: bool | str = False, pool_only: bool = False,
               drop_masks: Optional[Array] = None) -> tuple[Array, dict]:
    c = self.config
    if images.ndim != 4 or images.shape[1:] != (c.image_size, c.image_size, 3):
      raise errors.BadValue(f"expected images of shape [B, {c.image_size}, {c.image_size}, 3] (NHWC), "
                       f"got {images.shape}")
    scale = c.vision_width ** -0.5
    x = PatchEmbedding(c.patch_size, c.vision_width, self.dtype, name="conv1")(images)
    cls = self.param("class_embedding", normal(scale), (c.vision_width,), jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, c.vision_width)), x], axis=1)
    x = x + self.param("positional_embedding", normal(scale), (c.num_patches + 1, c.vision_width),
                       jnp.float32).astype(x.dtype)
    x = LayerNorm(c.layer_norm_eps, name="ln_pre")(x)
    pool_index = jnp.zeros(x.shape[:1], jnp.int32) if pool_only else None
    x, maps = Transformer(c.vision_layers, c.vision_heads, c.mlp_ratio, c.activation, causal=False,
                          eps=c.layer_norm_eps, dtype=self.dtype, remat=self.remat, scan=self.scan, name="transformer")(
                              x, attention_maps, return_attention, pool_index, drop_masks)
    pooled = LayerNorm(c.layer_norm_eps, name="ln_post")(x[:, 0])
    proj = self.param("proj", normal(scale), (c.vision_width, c.embed_dim), jnp.float32)
    features = jnp.dot(pooled, proj.astype(pooled.dtype)).astype(jnp.float32)
    return features, {"attention": maps, "pooled": pooled, "tokens": None if pool_only else x}


class TextTransformer(nn.Module):
  """Token ids [B, L] (L <= context_length, zero padded) -> (features [B, embed_dim], aux).

  The sequence is read at its end-of-text token, found as the highest id in each row: the tokenizer's
  end-of-text id is the largest in the vocabulary, as in OpenAI's CLIP.
  aux: 'pooled' ([B, width], after ln_final), 'tokens' ([B, L, width]; None with `pool_only`, which
  computes the last block at the end-of-text token only, as `VisionTransformer`).
  """
  config: CLIPConfig
  dtype: Any = jnp.float32
  remat: bool | str = False
  scan: bool = False

  @nn.compact
  def __call__(self, tokens: Array, pool_only: bool = False) -> tuple[Array, dict]:
    c = self.config
    if tokens.ndim != 2 or tokens.shape[1] > c.context_length:
      raise errors.BadValue(f"expected token ids of shape [B, L] with L <= {c.context_length}, got {tokens.shape}")
    x = nn.Embed(c.vocab_size, c.text_width, dtype=self.dtype, param_dtype=jnp.float32,
                 embedding_init=normal(0.02), name="token_embedding")(tokens)
    pos = self.param("positional_embedding", normal(0.01), (c.context_length, c.text_width), jnp.float32)
    x = x + pos[: tokens.shape[1]].astype(x.dtype)
    eot = jnp.argmax(tokens, axis=-1)
    x, _ = Transformer(c.text_layers, c.text_heads, c.mlp_ratio, c.activation, causal=True,
                       eps=c.layer_norm_eps, dtype=self.dtype, remat=self.remat, scan=self.scan, name="transformer")(
                           x, pool_index=eot if pool_only else None)
    x = LayerNorm(c.layer_norm_eps, name="ln_final")(x)
    pooled = (x if pool_only else token_at(x, eot))[:, 0]
    proj = self.param("text_projection", normal(c.text_width ** -0.5), (c.text_width, c.embed_dim),
                      jnp.float32)
    features = jnp.dot(pooled, proj.astype(pooled.dtype)).astype(jnp.float32)
    return features, {"pooled": pooled, "tokens": None if pool_only else x}


class CLIP(nn.Module):
  """Both towers and the logit scale. Parameters are float32; `dtype` is the compute dtype.

  `encode_image` / `encode_text` return unnormalised projected features (float32), like open_clip's
  `encode_image(..., normalize=False)`, computing the last block at the pooled token only; the towers'
  aux outputs are reachable through `image_tower`.
  """
  config: CLIPConfig
  dtype: Any = jnp.float32
  remat: bool | str = False
  scan: bool = False  # model.scan_layers: parameters in the scanned layout (transformer.stack_blocks)
  # Whether linear heads read L2-normalised image features (zero-shot, WiSE-FT's FT) or raw ones (LP-FT's code,
  # `ft.head_input='raw'`): what `flyp_jax.evaluate` applies a head to. No parameter depends on it.
  normalize_features: bool = True

  def setup(self):
    self.visual = VisionTransformer(self.config, self.dtype, self.remat, self.scan)
    self.text = TextTransformer(self.config, self.dtype, self.remat, self.scan)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), (), jnp.float32)

  def image_tower(self, images: Array, attention_maps: Optional[Sequence[Optional[Array]]] = None,
                  return_attention: bool = False) -> tuple[Array, dict]:
    return self.visual(images, attention_maps, return_attention)

  def encode_image(self, images: Array) -> Array:
    return self.visual(images, pool_only=True)[0]

  def encode_text(self, tokens: Array) -> Array:
    return self.text(tokens, pool_only=True)[0]

  def __call__(self, images: Array, tokens: Array) -> tuple[Array, dict]:
    """-> (logits_per_image [N_images, N_texts], aux with normalised features and exp(logit_scale))."""
    image_features = normalize(self.encode_image(images))
    text_features = normalize(self.encode_text(tokens))
    scale = jnp.exp(self.logit_scale)
    logits = scale * image_features @ text_features.T
    return logits, {"image_features": image_features, "text_features": text_features, "logit_scale": scale}


def normalize(x: Array, axis: int = -1) -> Array:
  """x / ||x|| along `axis`, in float32 (features are compared by cosine similarity)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-24))


def dummy_inputs(config: CLIPConfig, batch: int = 1) -> tuple[Array, Array]:
  """Zero images and tokens of the shapes the model expects (for init and shape inference)."""
  return (jnp.zeros((batch, config.image_size, config.image_size, 3), jnp.float32),
          jnp.zeros((batch, config.context_length), jnp.int32))


def init_params(model: CLIP, rng: Array) -> dict:
  """Random parameters for `model` (float32 pytree); wrap in jax.jit with out_shardings to shard at birth. A
  scanned model's are the per-layer model's, stacked: one seed gives the same parameters in either layout."""
  if model.scan:
    return stack_blocks(init_params(model.clone(scan=False), rng))
  return model.init(rng, *dummy_inputs(model.config))["params"]


def create_model(variant: Union[str, CLIPConfig], dtype: Any = jnp.float32, remat: bool | str = False,
                 scan: bool = False) -> CLIP:
  """A CLIP module for a variant name ("ViT-B/16") or a CLIPConfig; `dtype` is the compute dtype; `scan`: its
  blocks under `nn.scan`, parameters in the scanned layout (`transformer.stack_blocks`)."""
  config = get_config(variant) if isinstance(variant, str) else variant
  return CLIP(config, dtype=jnp.dtype(dtype), remat=remat, scan=scan)


def remat_setting(model_config) -> bool | str:
  """A config's `model.remat` and `model.remat_policy` as the modules' `remat`: False, True (every block
  recomputed whole in the backward pass) or the jax.checkpoint_policies name of what a block keeps."""
  return (model_config.remat_policy or True) if model_config.remat else False


def build_options(model_config) -> dict:
  """`create_model`'s and `load_pretrained`'s keyword arguments from a config's `model`: its compute dtype, remat
  (`remat_setting`) and scanned blocks (`model.scan_layers`)."""
  return dict(dtype=model_config.dtype, remat=remat_setting(model_config), scan=model_config.scan_layers)


def check_params(params: dict, config: CLIPConfig) -> None:
  """Raise CheckpointError naming every parameter whose path or shape differs from the model's."""
  abstract = jax.eval_shape(lambda: init_params(CLIP(config), jax.random.key(0)))
  name = lambda path: "/".join(str(getattr(k, "key", k)) for k in path)
  want = {name(p): v.shape for p, v in jax.tree.leaves_with_path(abstract)}
  got = {name(p): np.shape(v) for p, v in jax.tree.leaves_with_path(params)}
  bad = [f"{k}: checkpoint {got.get(k, 'missing')} vs model {want.get(k, 'absent')}"
         for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
  if bad:
    raise CheckpointError(f"parameters do not fit {describe(config)}: {_some(bad)}")


def _some(items: list, n: int = 8) -> str:
  return "none" if not items else ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")
