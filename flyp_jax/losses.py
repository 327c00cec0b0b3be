"""Losses: CLIP's contrastive loss (single-device reference and batch-sharded), cross-entropy, temperature clamp.

FLYP fine-tunes with the pretraining objective: for a batch of N (image, caption) pairs, logits
`scale * img @ txt.T` [N, N], softmax cross-entropy with the diagonal as targets in both directions (image
-> its caption among all captions, caption -> its image among all images), averaged. All losses are
computed in float32 whatever the feature dtype.

`sharded_clip_loss` computes the same number for a batch sharded over the mesh's `data` axis without ever
holding the [N, N] logits: each device scores its local rows against all-gathered columns ([N_local, N]),
as open_clip's `ClipLoss(local_loss=True, gather_with_grad=True)` does.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from flyp_jax import errors
from flyp_jax.parallel import DATA

# Masked logits get the most negative float32 rather than -inf: exp() of it is exactly 0 after the
# max-subtraction in logsumexp, and, unlike -inf, it cannot turn 0 * logit into NaN further downstream.
_MASK_VALUE = float(jnp.finfo(jnp.float32).min)


def _contrastive_rows(features: jax.Array, others: jax.Array, logit_scale: jax.Array, targets: jax.Array,
                      row_labels: Optional[jax.Array], col_labels: Optional[jax.Array]) -> jax.Array:
  """Sum over rows of -log softmax(scale * features @ others.T)[row, targets[row]].

  features [R, E], others [C, E], targets [R] int (column index of each row's positive), row_labels [R] /
  col_labels [C] int class ids or None (no masking). Returns a float32 scalar: the SUM, not the mean, so
  shards can be added before dividing by the global batch.
  """
  logits = logit_scale * (features @ others.T)  # [R, C]
  if row_labels is not None:
    cols = jnp.arange(others.shape[0])
    # Same class but not the positive itself: also a correct caption/image, so not a negative.
    collide = (row_labels[:, None] == col_labels[None, :]) & (cols[None, :] != targets[:, None])
    logits = jnp.where(collide, _MASK_VALUE, logits)
  positive = jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]
  return jnp.sum(jax.nn.logsumexp(logits, axis=1) - positive)


def _contrastive_rows_blockwise(features: jax.Array, others: jax.Array, logit_scale: jax.Array, targets: jax.Array,
                                row_labels: Optional[jax.Array], col_labels: Optional[jax.Array],
                                block: int) -> jax.Array:
  """`_contrastive_rows` with the columns taken `block` at a time: memory R x block, not R x C.

  The logsumexp over columns is accumulated online (running max and rescaled sum) in a scan whose body is
  rematerialised, so neither the forward pass nor the gradient keeps more than one [R, block] logit block
  (plus [R] statistics per block). The positive logit is computed directly from its column.
  """
  c = others.shape[0]
  positive = logit_scale * jnp.sum(features * others[targets], axis=1)
  cols = jnp.arange(c).reshape(c // block, block)
  blocks = (others.reshape(c // block, block, -1), cols,
            None if col_labels is None else col_labels.reshape(c // block, block))

  @jax.checkpoint
  def step(carry, xs):
    running_max, running_sum = carry
    other, col, col_label = xs
    logits = logit_scale * (features @ other.T)  # [R, block]
    if row_labels is not None:
      collide = (row_labels[:, None] == col_label[None, :]) & (col[None, :] != targets[:, None])
      logits = jnp.where(collide, _MASK_VALUE, logits)
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=1))
    new_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(logits - new_max[:, None]), axis=1)
    return (new_max, new_sum), None

  zero = 0.0 * positive  # [R], and varying over the mesh axes as the carry will (shard_map checks it)
  start = (zero + _MASK_VALUE, zero)
  (running_max, running_sum), _ = jax.lax.scan(step, start, blocks)
  return jnp.sum(running_max + jnp.log(running_sum) - positive)


def _prepare(image_features, text_features, logit_scale, labels, mask_same_class):
  image_features = jnp.asarray(image_features, jnp.float32)
  text_features = jnp.asarray(text_features, jnp.float32)
  logit_scale = jnp.asarray(logit_scale, jnp.float32)
  if image_features.ndim != 2 or image_features.shape != text_features.shape:
    raise errors.BadValue(f"expected image and text features of the same shape [N, E], got "
                     f"{image_features.shape} and {text_features.shape}")
  if logit_scale.ndim != 0:
    raise errors.BadValue(f"logit_scale must be a scalar, got shape {logit_scale.shape}")
  if mask_same_class:
    if labels is None:
      raise errors.BadValue("mask_same_class=True needs labels [N]")
    labels = jnp.asarray(labels)
    if labels.shape != image_features.shape[:1]:
      raise errors.BadValue(f"labels must have shape [{image_features.shape[0]}], got {labels.shape}")
  else:
    labels = None  # labels without masking change nothing; dropping them keeps one code path
  return image_features, text_features, logit_scale, labels


def clip_loss(image_features: jax.Array, text_features: jax.Array, logit_scale: jax.Array, *,
              labels: Optional[jax.Array] = None, mask_same_class: bool = False) -> jax.Array:
  """CLIP's symmetric contrastive loss on one device (the reference; equals open_clip's `ClipLoss()`).

  Args:
    image_features: [N, E] L2-normalised image embeddings (any float dtype; computed in float32).
    text_features: [N, E] L2-normalised text embeddings; row i is the caption of image i.
    logit_scale: scalar, the already-exponentiated inverse temperature (CLIP: exp(log_scale) <= 100).
    labels: [N] int class ids; used only with `mask_same_class`.
    mask_same_class: drop pairs (i, j), i != j, with labels[i] == labels[j] from both softmax denominators
      (the FLYP ablation: both captions are correct, so neither is a negative).

  Returns:
    float32 scalar, nats: (mean_i CE(image i -> texts) + mean_i CE(text i -> images)) / 2. Holds the
    full [N, N] logits; use `sharded_clip_loss` for batches sharded over devices.
  """
  return _clip_loss(*_prepare(image_features, text_features, logit_scale, labels, mask_same_class))


@jax.jit  # one executable for eager callers instead of a dozen op-by-op dispatches; inlined under jit
def _clip_loss(img: jax.Array, txt: jax.Array, scale: jax.Array, labels: Optional[jax.Array]) -> jax.Array:
  n = img.shape[0]
  targets = jnp.arange(n)
  per_image = _contrastive_rows(img, txt, scale, targets, labels, labels)
  per_text = _contrastive_rows(txt, img, scale, targets, labels, labels)
  return (per_image + per_text) / (2 * n)


def sharded_clip_loss(image_features: jax.Array, text_features: jax.Array, logit_scale: jax.Array,
                      mesh: Mesh, *, labels: Optional[jax.Array] = None,
                      mask_same_class: bool = False, block: int = 0) -> jax.Array:
  """`clip_loss` for a global batch sharded over the mesh's `data` axis, without [N, N] logits anywhere.

  Each device all-gathers the other modality ([N, E] per tower) and scores its N_local = N / |data| rows
  against it, so the logits per device are [N_local, N] (N^2 / |data| floats, versus N^2 for `clip_loss`);
  the per-row losses are summed, `psum`-ed over `data` and divided by N. Inputs are replicated over any
  other mesh axis (e.g. `model`). Works eagerly and inside `jax.jit`, and is differentiable: the transpose
  of the all-gather is a reduce-scatter, so every device gets the gradient of its own rows.

  Args:
    image_features, text_features: [N, E] L2-normalised, N divisible by the size of the `data` axis;
      ideally already sharded with `parallel.data_sharding(mesh)` (otherwise they are resharded).
    logit_scale: scalar, already exponentiated.
    mesh: a mesh with a `data` axis (`parallel.make_mesh`).
    labels, mask_same_class: as in `clip_loss`; labels [N] are sharded like the features.
    block: if > 0, score the gathered columns `block` at a time (it must divide N), so the loss's working
      memory per device is N_local x block (linear in N at a fixed device count) instead of N_local x N, at
      the cost of recomputing each block's logits in the backward pass. 0: all columns at once (fastest).

  Returns:
    float32 scalar (replicated), equal to `clip_loss` on the same global arrays.
  """
  img, txt, scale, labels = _prepare(image_features, text_features, logit_scale, labels, mask_same_class)
  n, n_shards = img.shape[0], mesh.shape[DATA]
  if n % n_shards:
    raise errors.BadValue(f"global batch {n} is not divisible by the {n_shards} devices of the '{DATA}' axis")
  if block < 0 or (block and n % block):
    raise errors.BadValue(f"loss block {block} must be 0 (no blocks) or divide the global batch {n}")
  return _sharded_clip_loss(img, txt, scale, labels, mesh, block if block and block < n else 0)


# jit here (inlined under an outer jit) so eager callers get one cached executable: run op by op, a
# shard_map with collectives on 8 CPU devices takes seconds per call.
@functools.partial(jax.jit, static_argnames=("mesh", "block"))
def _sharded_clip_loss(img: jax.Array, txt: jax.Array, scale: jax.Array, labels: Optional[jax.Array],
                       mesh: Mesh, block: int) -> jax.Array:
  n = img.shape[0]
  rows = _contrastive_rows if not block else functools.partial(_contrastive_rows_blockwise, block=block)

  def local_loss(img, txt, scale, labels=None):
    # img, txt [N_local, E]; labels [N_local] or None.
    n_local = img.shape[0]
    all_img = jax.lax.all_gather(img, DATA, tiled=True)  # [N, E], shard order = global order
    all_txt = jax.lax.all_gather(txt, DATA, tiled=True)
    all_labels = None if labels is None else jax.lax.all_gather(labels, DATA, tiled=True)
    # The positives of the local rows sit at their global positions in the gathered columns.
    targets = jax.lax.axis_index(DATA) * n_local + jnp.arange(n_local)
    per_image = rows(img, all_txt, scale, targets, labels, all_labels)
    per_text = rows(txt, all_img, scale, targets, labels, all_labels)
    return jax.lax.psum(per_image + per_text, DATA) / (2 * n)

  args, specs = (img, txt, scale), (P(DATA), P(DATA), P())
  if labels is not None:
    args, specs = args + (labels,), specs + (P(DATA),)
  # check_vma (on by default) tracks which values vary over `data`; it is what makes autodiff insert the
  # psum for the replicated scale's gradient and the reduce-scatter for the gathered features.
  return jax.shard_map(local_loss, mesh=mesh, in_specs=specs, out_specs=P())(*args)


def clamp_logit_scale(log_scale: jax.Array, max_scale: float = 100.0) -> jax.Array:
  """Clip the log inverse temperature to [0, log(max_scale)], as open_clip does after every step.

  `log_scale` is the trainable parameter (CLIP: `logit_scale`, used as exp(log_scale)); the result keeps
  its shape and dtype, so exp() of it lies in [1, max_scale].
  """
  return jnp.clip(log_scale, 0.0, math.log(max_scale)).astype(jnp.asarray(log_scale).dtype)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy, float32 nats.

  logits [..., K] (any float dtype), labels [...] int in [0, K). With label_smoothing = a the target is
  (1 - a) * one_hot + a / K, the convention of torch's `F.cross_entropy(label_smoothing=a)`. Soft targets
  [..., K] instead of labels (mixup's, smoothed already): timm's SoftTargetCrossEntropy, the mean of
  sum_k -target_k log_softmax(logits)_k, and `label_smoothing` is not applied again.
  """
  logits = jnp.asarray(logits, jnp.float32)
  if jnp.ndim(labels) == logits.ndim:
    return jnp.mean(optax.softmax_cross_entropy(logits, jnp.asarray(labels, jnp.float32)))
  if label_smoothing:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32), label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def attention_distillation(teacher_maps, student_logits, *, kind: str = "cross_entropy") -> jax.Array:
  """Attention distillation (Li et al., 2024): summed over layers, the mean over batch, heads and queries of a
  divergence between the teacher's attention distribution over keys and the student's.

  teacher_maps: one entry per distilled layer, post-softmax maps [B, H, T_q, T_k] (rows sum to 1; they should
  carry no gradient: `jax.lax.stop_gradient`). student_logits: the student's pre-softmax scores of the same
  layers and shape. As the reference (attention-transfer `models_dual_vit.py`: `-(teacher.softmax(-1) *
  log_softmax(student, -1)).sum(-1).mean()`), the student's log-probabilities come from its scores through
  log_softmax, so they stay finite and exact where a probability underflows to 0 (log of a post-softmax map
  would be -inf there, or a floor's value). kind: 'cross_entropy' (the paper's loss, -sum_k t log s) or 'kl'
  (sum_k t log(t / s): the same gradient for the student, 0 when the maps agree, so it reads as a distance).
  Any float dtype in, float32 nats out.
  """
  if kind not in ("cross_entropy", "kl"):
    raise errors.BadValue(f"kind must be 'cross_entropy' or 'kl', got {kind!r}")
  if len(teacher_maps) != len(student_logits):
    raise errors.BadValue(f"got {len(teacher_maps)} teacher maps and {len(student_logits)} student score maps")
  total = jnp.zeros((), jnp.float32)
  for t, z in zip(teacher_maps, student_logits):
    t, z = jnp.asarray(t, jnp.float32), jnp.asarray(z, jnp.float32)
    if t.shape != z.shape:
      raise errors.BadValue(f"teacher map {t.shape} and student scores {z.shape} differ in shape")
    per_row = -jnp.sum(t * jax.nn.log_softmax(z, axis=-1), axis=-1)
    if kind == "kl":
      per_row = per_row + jnp.sum(jax.scipy.special.xlogy(t, t), axis=-1)
    total = total + jnp.mean(per_row)
  return total
