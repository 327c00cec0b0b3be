"""Analytic matmul FLOPs of the CLIP towers and a contrastive training step (no JAX needed).

FLOP convention (the one MFU numbers are usually quoted in, e.g. PaLM's appendix B): only matrix
multiplications count, a multiply-add is 2 FLOPs, attention counts the full T x T score and mixing
matmuls (the causal text tower computes them in full too), and a training step costs 3x the forward pass
(the backward pass computes two matmuls per forward matmul). Layer norms, softmax, activations and the
optimiser's elementwise update are left out.

Per example, for a tower with T tokens, width W, L layers, MLP ratio r:
  per layer          2*T*4*W^2 (q, k, v, out)  +  2*T*2*r*W^2 (MLP)  +  2*2*T^2*W (scores, mixing)
  patch embedding    2 * (S/p)^2 * 3*p^2 * W_vision     (image tower only; the token embedding is a gather)
  projections        2 * W * E per tower
The contrastive loss adds 2 * 2 * B * E per example (image rows against all texts and text rows against all
images, the way `losses.sharded_clip_loss` computes them), B the global batch.

flyp_jax's towers compute their last block at the pooled token only (`Transformer`'s pool_index), so with
`pooled_last_block` that layer counts 2*T*2*W^2 (k, v) + 2*(2*W^2 + 2*r*W^2) (q, out, MLP at one token)
+ 2*2*T*W (one query's scores and mixing). Each framework's MFU counts the work it does: the PyTorch
reference computes the last block at every token.
"""

from __future__ import annotations

from typing import Optional


def _tower_flops(tokens: int, width: int, layers: int, mlp_ratio: float, pooled_last_block: bool) -> float:
  per_layer = 2 * tokens * 4 * width ** 2 + 2 * tokens * 2 * mlp_ratio * width ** 2 + 2 * 2 * tokens ** 2 * width
  if not pooled_last_block:
    return layers * per_layer
  last = 2 * tokens * 2 * width ** 2 + 2 * (2 * width ** 2 + 2 * mlp_ratio * width ** 2) + 2 * 2 * tokens * width
  return (layers - 1) * per_layer + last


def forward_flops(config, batch: int, text_length: Optional[int] = None, towers: str = "both",
                  pooled_last_block: bool = False) -> dict:
  """Analytic matmul FLOPs of one forward pass over `batch` examples (module docstring's formula).

  config: a `flyp_jax.models.CLIPConfig`; text_length: tokens per caption (default the context length);
  towers: 'both' (plus the contrastive loss), 'image' or 'text'; pooled_last_block: the last block computed
  at the pooled token only, as flyp_jax's towers do. Returns {'image', 'text', 'loss', 'total'}.
  """
  c = config
  length = text_length or c.context_length
  grid = c.image_size // c.patch_size
  image = (2 * grid ** 2 * 3 * c.patch_size ** 2 * c.vision_width
           + _tower_flops(1 + grid ** 2, c.vision_width, c.vision_layers, c.mlp_ratio, pooled_last_block)
           + 2 * c.vision_width * c.embed_dim) * batch
  text = (_tower_flops(length, c.text_width, c.text_layers, c.mlp_ratio, pooled_last_block)
          + 2 * c.text_width * c.embed_dim) * batch
  loss = 2 * 2 * batch * batch * c.embed_dim
  if towers == "image":
    text = loss = 0
  elif towers == "text":
    image = loss = 0
  elif towers != "both":
    raise ValueError(f"towers must be 'both', 'image' or 'text', got {towers!r}")
  return {"image": float(image), "text": float(text), "loss": float(loss), "total": float(image + text + loss)}


def train_flops(config, batch: int, text_length: Optional[int] = None, pooled_last_block: bool = False) -> float:
  """Analytic FLOPs of one FLYP training step on a global batch: 3x the forward pass of both towers and loss."""
  return 3 * forward_flops(config, batch, text_length, pooled_last_block=pooled_last_block)["total"]


def xla_flops(compiled) -> Optional[float]:
  """FLOPs per device that XLA's cost analysis assigns to a compiled program (None if it does not say)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])
