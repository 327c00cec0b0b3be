"""The pre-LN transformer shared by CLIP's two towers, with attention maps readable and replaceable.

Shapes: B batch, T tokens, W width, H heads, D = W // H head width. Attention maps are post-softmax
probabilities of shape [B, H, T_query, T_key], float32; asked for as "logits", the pre-softmax scores
q k^T / sqrt(D) of the same shape (what attention distillation's log_softmax needs: it stays finite where a
probability underflows to 0).
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import errors, parallel

Array = jax.Array
normal = nn.initializers.normal


def quick_gelu(x: Array) -> Array:
  # The sigmoid approximation of GELU that OpenAI's CLIP checkpoints were trained with.
  return x * jax.nn.sigmoid(1.702 * x)


PROJECTIONS = ("q", "k", "v")  # a layer's queries, keys or values [B, T, H, D], given or returned (see Attention)
MAP_OUTPUTS = (False, True, "probs", "logits") + PROJECTIONS  # what a layer returns beside its output
GIVEN = ("probs",) + PROJECTIONS  # what a layer's given `attention_map` entry is

ACTIVATION_FNS = {"quick_gelu": quick_gelu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, computed in float32 whatever the compute dtype (as OpenAI's fp16 CLIP
  does), cast back to the input's dtype. Parameters `scale` and `bias`, [W] float32."""
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (width,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (width,), jnp.float32)
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(x.dtype)


def token_at(x: Array, index: Array) -> Array:
  """x [B, T, ...] at one token per row, index [B] ints -> [B, 1, ...]."""
  return jnp.take_along_axis(x, index.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)


@jax.custom_vjp
def matmul(x: Array, w: Array) -> Array:
  """x [N, K] @ w [K, M], with the weight gradient computed as x.T @ dy (see `Projection`)."""
  return jnp.dot(x, w)


def _matmul_fwd(x, w):
  return jnp.dot(x, w), (x, w)


def _matmul_bwd(residuals, dy):
  x, w = residuals
  return jnp.dot(dy, w.T), jnp.dot(x.T, dy)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Projection(nn.Module):
  """`nn.DenseGeneral` over the last `in_axes` axes (`nn.Dense` when in_axes=1 and one feature axis), with
  the same parameters (kernel [*in, *features], bias [*features], float32, initialised the same way),
  computed as one 2-D matmul [N, K] @ [K, M] on flattened axes.

  Why: autodiff of DenseGeneral computes the weight gradient as dot(dy, x) contracting the token axis, and
  XLA:CPU then materialises dy transposed. dy is the residual stream's gradient, an elementwise chain
  through every later layer, and the transposing copy fuses (recomputes) that whole chain: quadratic in
  depth, a third of the ViT-B/32 training step on CPU. Here the weight gradient is x.T @ dy, so the copy
  transposes x, a single already-computed tensor. The values are the same (bitwise on CPU). On TPU it changes
  nothing: FLYP's ViT-B/16 train step at batch 512 compiled for v5litepod-8 has the same FLOPs (6.594e12),
  bytes accessed (1.051e11) and temporaries (6.88 GB) per chip with this matmul and with autodiff's `jnp.dot`.
  """
  features: tuple[int, ...]
  in_axes: int = 1
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[x.ndim - self.in_axes:]
    n_in, n_out = math.prod(in_shape), math.prod(self.features)
    # Initialised flat and reshaped, exactly as DenseGeneral does, so a seed gives the same parameters.
    init = lambda rng, shape, dtype: jnp.reshape(self.kernel_init(rng, (n_in, n_out), dtype), shape)
    kernel = self.param("kernel", init, in_shape + self.features, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, self.features, jnp.float32)
    batch_shape = x.shape[:x.ndim - self.in_axes]
    y = matmul(x.reshape(-1, n_in).astype(self.dtype), kernel.reshape(n_in, n_out).astype(self.dtype))
    return y.reshape(*batch_shape, *self.features) + bias.astype(self.dtype)


class Attention(nn.Module):
  """Multi-head self-attention.

  `attention_map` ([B, H, T, T] probabilities) replaces the map computed from queries and keys: the
  values are then mixed with the given map (attention copy). With `given` "q", "k" or "v" it is instead
  [B, T, H, D] queries, keys or values that replace the layer's own (attention transfer's copy_q / copy_k /
  copy_v: the map is computed from the queries and keys then in use). `return_map`: False, True or "probs" (the
  post-softmax map used), "logits" (the pre-softmax scores; None for a layer given its map), or "q", "k", "v" (the
  layer's own projection, [B, T, H, D], bias included). Query and key parameters exist either way, so the
  parameter tree does not depend on the mode; with a given map XLA drops their dead computation and they receive
  zero gradient. `query_index` ([B] ints) computes the output at one token per row only, [B, 1, W], with keys and
  values from every token.
  """
  heads: int
  causal: bool = False
  dtype: Any = jnp.float32
  out_std: float = 0.02

  @nn.compact
  def __call__(self, x: Array, attention_map: Optional[Array] = None, return_map: bool | str = False,
               query_index: Optional[Array] = None, given: str = "probs") -> tuple[Array, Optional[Array]]:
    if return_map not in MAP_OUTPUTS:
      raise errors.BadValue(f"return_map must be one of {MAP_OUTPUTS}, got {return_map!r}")
    if given not in GIVEN:
      raise errors.BadValue(f"given must be one of {GIVEN}, got {given!r}")
    _, t, width = x.shape
    head_dim = width // self.heads
    proj = lambda name: Projection((self.heads, head_dim), dtype=self.dtype, kernel_init=normal(width ** -0.5),
                                   name=name)
    v = proj("value")(x)  # [B, T, H, D]
    if query_index is not None:
      if attention_map is not None or return_map:
        raise errors.BadValue("query_index computes one query per row: attention maps can be neither given nor returned")
      q = proj("query")(token_at(x, query_index))  # [B, 1, H, D]
      # A causal query at token p sees keys 0..p; the mask is [B, 1 (heads), 1 (query), T].
      mask = (jnp.arange(t) <= query_index[:, None])[:, None, None, :] if self.causal else None
      out = jax.nn.dot_product_attention(q, proj("key")(x), v, mask=mask)
      return Projection((width,), in_axes=2, dtype=self.dtype, kernel_init=normal(self.out_std), name="out")(out), None
    q, k = proj("query")(x), proj("key")(x)
    own = {"q": q, "k": k, "v": v}
    if attention_map is not None and given in PROJECTIONS:  # the map then comes from the q and k in use
      if attention_map.shape[1:] != own[given].shape[1:]:
        raise errors.BadValue(f"given {given} of shape {attention_map.shape} does not fit the layer's "
                              f"[B, {', '.join(map(str, own[given].shape[1:]))}]")
      q, k, v = ({**own, given: attention_map.astype(own[given].dtype)}[n] for n in PROJECTIONS)
      attention_map = None
    weights = logits = None
    if attention_map is not None:
      if attention_map.shape[-3:] != (self.heads, t, t):
        raise errors.BadValue(f"attention map of shape {attention_map.shape} does not fit {self.heads} heads "
                         f"over {t} tokens; expected [B, {self.heads}, {t}, {t}]")
      weights = attention_map.astype(jnp.float32)
    if weights is None and return_map in (False,) + PROJECTIONS:
      # No map needed outside: let JAX pick its fused attention implementation.
      out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
    else:
      if weights is None:
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * head_dim ** -0.5
        if self.causal:
          logits = jnp.where(jnp.tril(jnp.ones((t, t), bool)), logits, -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1)
      out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    out = Projection((width,), in_axes=2, dtype=self.dtype, kernel_init=normal(self.out_std), name="out")(out)
    if not return_map:
      return out, None
    if return_map in PROJECTIONS:
      return out, own[return_map]
    return out, (logits if return_map == "logits" else weights)


class MLP(nn.Module):
  hidden: int
  activation: str
  dtype: Any = jnp.float32
  out_std: float = 0.02

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    x = Projection((self.hidden,), dtype=self.dtype, kernel_init=normal((2 * width) ** -0.5), name="c_fc")(x)
    x = ACTIVATION_FNS[self.activation](x)
    return Projection((width,), dtype=self.dtype, kernel_init=normal(self.out_std), name="c_proj")(x)


class ResidualBlock(nn.Module):
  heads: int
  mlp_ratio: float
  activation: str
  causal: bool
  eps: float
  dtype: Any
  out_std: float
  return_map: bool | str = False
  given: str = "probs"  # what `attention_map` is (Attention's `given`)

  @nn.compact
  def __call__(self, x: Array, attention_map: Optional[Array] = None, query_index: Optional[Array] = None,
               drop_mask: Optional[Array] = None) -> tuple[Array, Optional[Array]]:
    """-> (x [B, T, W], or [B, 1, W] at `query_index` ([B] ints) when given; the attention map or None).

    `drop_mask` [2, B]: per-example factors of the attention and MLP branches (stochastic depth: 0 or
    1 / keep probability; `drop_path_masks`), or None for both 1.
    """
    y, weights = Attention(self.heads, self.causal, self.dtype, self.out_std, name="attn")(
        LayerNorm(self.eps, name="ln_1")(x), attention_map, self.return_map, query_index, self.given)
    if query_index is not None:
      x = token_at(x, query_index)
    scale = (lambda i, b: b) if drop_mask is None else (lambda i, b: b * drop_mask[i][:, None, None].astype(b.dtype))
    x = x + scale(0, y)
    x = x + scale(1, MLP(int(x.shape[-1] * self.mlp_ratio), self.activation, self.dtype, self.out_std, name="mlp")(
        LayerNorm(self.eps, name="ln_2")(x)))
    return x, weights


SCANNED = parallel.SCANNED  # the first L - 1 blocks under `nn.scan` (Transformer's `scan`), stacked on axis 0


class Transformer(nn.Module):
  """A stack of pre-LN residual blocks named `resblocks_{i}`.

  `scan` (`model.scan_layers`): the first L - 1 blocks run as one `nn.scan` over a block whose parameters carry a
  leading axis of L - 1 (`SCANNED`), the last stays `resblocks_{L-1}` (it computes only the pooled token): XLA
  compiles one block instead of L, at the same values. Checkpoints keep the per-layer layout (`stack_blocks`,
  `unstack_blocks` convert); attention maps can then be neither given nor returned.

  `attention_maps`: None, or one entry per layer, each None (compute the layer's own map) or a
  [B, H, T, T] map to use instead; with `given` "q", "k" or "v", [B, T, H, D] queries, keys or values to use
  instead of the layer's own. With `return_attention` (True or "probs"), the second output is the tuple
  of every layer's map (the ones used, given or computed); with "logits", of every layer's pre-softmax scores
  (None where a map was given); with "q", "k" or "v", of every layer's own projection; otherwise it is None. `drop_masks` [layers, 2, B]: stochastic depth's
  per-example branch factors (`drop_path_masks`), or None.

  `pool_index` ([B] ints): the one token per row that is read after the stack (CLIP's class token or
  end-of-text token). The last block then computes its output at that token only, [B, 1, W]: the same
  values, without the last block's MLP, output projection and queries at every other token (about a
  twelfth of a 12-layer tower's cost). Not with attention maps.
  """
  layers: int
  heads: int
  mlp_ratio: float = 4.0
  activation: str = "quick_gelu"
  causal: bool = False
  eps: float = 1e-5
  dtype: Any = jnp.float32
  remat: bool | str = False  # False, True or a jax.checkpoint_policies name (models.remat_setting)
  scan: bool = False

  @nn.compact
  def __call__(self, x: Array, attention_maps: Optional[Sequence[Optional[Array]]] = None,
               return_attention: bool | str = False, pool_index: Optional[Array] = None,
               drop_masks: Optional[Array] = None, given: str = "probs") -> tuple[Array, Optional[tuple[Array, ...]]]:
    if attention_maps is not None and len(attention_maps) != self.layers:
      raise errors.BadValue(f"got {len(attention_maps)} attention maps for {self.layers} layers")
    if pool_index is not None and (attention_maps is not None or return_attention):
      raise errors.BadValue("pool_index cannot be combined with attention maps given or returned")
    if drop_masks is not None and drop_masks.shape[:2] != (self.layers, 2):
      raise errors.BadValue(f"drop_masks of shape {drop_masks.shape} do not fit {self.layers} layers; expected "
                       f"[{self.layers}, 2, B]")
    block = ResidualBlock
    if self.remat:  # True: the block recomputed whole in the backward pass; a name: what jax keeps of it
      block = nn.remat(block, policy=None if self.remat is True else getattr(jax.checkpoint_policies, self.remat),
                       prevent_cse=not self.scan)  # under scan no CSE can cross iterations (flax's advice)
    # Residual projections start small so that the stack's output variance does not grow with depth.
    out_std = x.shape[-1] ** -0.5 * (2 * self.layers) ** -0.5
    maps, first = [], 0
    if self.scan and self.layers > 1:
      if attention_maps is not None or return_attention:
        raise errors.BadValue("a scanned transformer (model.scan_layers) runs its blocks as one loop: attention maps "
                              "can be neither given nor returned; set model.scan_layers=False")
      scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=(nn.broadcast, nn.broadcast, 0), length=self.layers - 1)
      x, _ = scanned(self.heads, self.mlp_ratio, self.activation, self.causal, self.eps, self.dtype, out_std,
                     name=SCANNED)(x, None, None, None if drop_masks is None else drop_masks[:-1])
      first = self.layers - 1
    for i in range(first, self.layers):
      x, weights = block(self.heads, self.mlp_ratio, self.activation, self.causal, self.eps, self.dtype,
                         out_std, return_attention, given, name=f"resblocks_{i}")(
                             x, None if attention_maps is None else attention_maps[i],
                             pool_index if i == self.layers - 1 else None,
                             None if drop_masks is None else drop_masks[i])
      maps.append(weights)
    return x, (tuple(maps) if return_attention else None)


def stack_blocks(tree):
  """Parameters (or optimiser moments; shapes through `jax.eval_shape`) in the per-layer layout -> the scanned one (`Transformer`'s `scan`):
  wherever a dict holds `resblocks_0` .. `resblocks_{L-1}` (L > 1), the first L - 1 become one `SCANNED` entry
  with a leading axis of L - 1. A tree already scanned, or with no blocks, is returned as it is."""
  if not isinstance(tree, dict):
    return tree
  n = _block_count(tree)
  if n < 2 or SCANNED in tree:
    return {k: stack_blocks(v) for k, v in tree.items()}
  out = {k: stack_blocks(v) for k, v in tree.items() if not _block_index(k) or int(_block_index(k)) == n - 1}
  out[SCANNED] = jax.tree.map(lambda *xs: _stack(xs), *[tree[f"resblocks_{i}"] for i in range(n - 1)])
  return out


def unstack_blocks(tree):
  """The inverse of `stack_blocks`: every `SCANNED` entry back to `resblocks_0` .. `resblocks_{L-2}`; a tree in the
  per-layer layout is returned as it is."""
  if not isinstance(tree, dict):
    return tree
  out = {k: unstack_blocks(v) for k, v in tree.items() if k != SCANNED}
  if SCANNED in tree:
    n = jax.tree.leaves(tree[SCANNED])[0].shape[0]
    out.update({f"resblocks_{i}": jax.tree.map(lambda x: x[i], tree[SCANNED]) for i in range(n)})
  return out


def _block_index(key) -> str:
  match = re.fullmatch(r"resblocks_(\d+)", str(key))
  return match[1] if match else ""


def _block_count(tree: dict) -> int:
  return len([k for k in tree if _block_index(k)])


def _stack(xs):
  # host arrays (a loaded checkpoint) stay on the host, to be put on the devices shard by shard
  return np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs)


def drop_path_masks(rng: Array, rate: float, layers: int, batch: int) -> Array:
  """Stochastic depth's branch factors [layers, 2, B] float32: layer i keeps each example's attention and MLP
  branch with probability 1 - p_i (independently), p_i = linspace(0, rate, layers)[i], and scales a kept branch
  by 1 / (1 - p_i) (timm's drop_path; attention-transfer `models_dual_vit.py` `get_drop_path_mask`, whose masks
  the teacher and the student share)."""
  keep = 1.0 - jnp.linspace(0.0, rate, layers, dtype=jnp.float32)[:, None, None]
  uniform = jax.random.uniform(rng, (layers, 2, batch), jnp.float32)
  return jnp.floor(keep + uniform) / keep
