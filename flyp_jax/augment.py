"""Batch augmentations that run on the device inside the jitted train step: random erasing, and mixup / CutMix with
soft targets (trained with `losses.cross_entropy`, which takes soft targets as timm's SoftTargetCrossEntropy).

These are the regularisers of the attention-transfer reference (alexlioralexli/attention-transfer): timm's
`RandomErasing(probability=0.25, mode='pixel', max_count=1)` on each image after normalisation, then timm's
`Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch', label_smoothing=0.1)` on each
GPU's batch before the forward pass, trained with `SoftTargetCrossEntropy`. The reference draws them with Python's
and numpy's global generators on the host; here every function is pure (static shapes, all randomness from a
`jax.random` key), so they run inside `jit` on the batch already sharded over the mesh's `data` axis.

Written after timm's source at huggingface/pytorch-image-models commit aa4b5850c1543fa488abf260f18390eda46cf85d:
`timm/data/random_erasing.py` (`RandomErasing._erase`), `timm/data/mixup.py` (`Mixup._params_per_batch`,
`_mix_batch`, `rand_bbox`, `cutmix_bbox_and_lam`, `one_hot`, `mixup_target`). Each random decision is drawn first (`erasing_draws`, `mixup_draws`) and applied by a
deterministic function of the draws (`erase_with_draws`, `mix_with_draws`), so the tests can feed the same draws to
these functions and to a transcription of timm's code and require the same outputs.

Order, as the reference: erasing per image in the space the reference normalises to (ImageNet's mean and std for
attention transfer), then mixup / CutMix on the batch (it mixes the erased images), then the loss on soft targets
(`flyp_jax.methods.common.regularize` calls them so).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from flyp_jax import errors

ERASING_ATTEMPTS = 10  # timm's `for attempt in range(10)`
ERASING_MODES = ("pixel", "rand", "const")


def _number(value) -> bool:
  """Whether a setting is a finite Python number (settings are static: they shape the traced program)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _need(ok: bool, message: str) -> None:
  """Raise `errors.BadValue(message)` unless ok: a bad setting or input is the caller's to fix."""
  if not ok:
    raise errors.BadValue(message)


def _images_shape(images) -> tuple[int, int, int, int]:
  """The batch's (B, H, W, C); anything but a 4-D batch is an error."""
  shape = tuple(jnp.shape(images))
  _need(len(shape) == 4, f"images must be a batch [B, H, W, C], got shape {shape}")
  return shape


# ---------------------------------------------------------------- random erasing


class ErasingDraws(NamedTuple):
  """The random values of one `random_erasing` call, all drawn at once (uniforms are in [0, 1)).

  apply [B]: erase when below the probability (timm: `random.random() > probability` skips). area, aspect [B, 10]:
  one uniform per attempt for `random.uniform(min_area, max_area)` and `random.uniform(*log_aspect_ratio)`.
  top, left [B]: the uniforms behind `random.randint(0, H - h)` and `random.randint(0, W - w)` of the accepted
  attempt. fill: the values erased pixels take, broadcastable to [B, H, W, C] (per pixel, per image and channel, or
  a scalar 0); a box shows the fill at its own pixels.
  """
  apply: jax.Array
  area: jax.Array
  aspect: jax.Array
  top: jax.Array
  left: jax.Array
  fill: jax.Array


def _check_erasing(probability, min_area, max_area, min_aspect, max_aspect, mode, count) -> float:
  """Validate random erasing's settings; returns max_aspect (timm's default 1 / min_aspect when None)."""
  _need(_number(probability) and 0 <= probability <= 1,
        f"random erasing's probability must be a number from 0 to 1, got {probability!r}")
  _need(_number(min_area) and _number(max_area) and 0 < min_area <= max_area,
        f"random erasing's areas must be numbers with 0 < min_area <= max_area, got {min_area!r} and {max_area!r}")
  _need(_number(min_aspect) and min_aspect > 0, f"random erasing's min_aspect must be above 0, got {min_aspect!r}")
  max_aspect = max_aspect or 1 / min_aspect  # timm's `max_aspect or 1 / min_aspect`
  _need(_number(max_aspect) and max_aspect >= min_aspect,
        f"random erasing's max_aspect must be at least min_aspect ({min_aspect}), got {max_aspect!r}")
  _need(mode in ERASING_MODES, f"random erasing's mode must be one of {', '.join(ERASING_MODES)}, got {mode!r}")
  _need(count == 1, f"random erasing draws one box per image (timm's max_count=1, the reference's re_count=1); "
                    f"count={count!r} is not supported")
  return max_aspect


def erasing_draws(key: jax.Array, shape, mode: str = "pixel", dtype=jnp.float32) -> ErasingDraws:
  """Draw every random value `random_erasing` needs for a batch of `shape` [B, H, W, C], from `key`.

  All ten attempts are drawn whether or not they are needed (static shapes); the first accepted one is used, so
  each image's box has the distribution of timm's sequential loop. The fill of mode 'pixel' is a whole [B, H, W, C]
  field of N(0, 1) (a box takes its part of it: i.i.d. normal pixels, as timm's fresh patch), of 'rand' one normal
  colour per image and channel, of 'const' zero.
  """
  b, h, w, c = shape
  k_apply, k_area, k_aspect, k_top, k_left, k_fill = jax.random.split(key, 6)
  if mode == "pixel":
    fill = jax.random.normal(k_fill, (b, h, w, c), dtype)
  elif mode == "rand":
    fill = jax.random.normal(k_fill, (b, 1, 1, c), dtype)
  else:
    fill = jnp.zeros((), dtype)
  return ErasingDraws(
      apply=jax.random.uniform(k_apply, (b,)),
      area=jax.random.uniform(k_area, (b, ERASING_ATTEMPTS)),
      aspect=jax.random.uniform(k_aspect, (b, ERASING_ATTEMPTS)),
      top=jax.random.uniform(k_top, (b,)),
      left=jax.random.uniform(k_left, (b,)),
      fill=fill)


def _randint_inclusive(u: jax.Array, high: jax.Array) -> jax.Array:
  """Python's `random.randint(0, high)` (both ends included) from a uniform u in [0, 1)."""
  # floor(u * (high + 1)) is uniform on 0..high; the min guards float32 rounding u * (high + 1) up to high + 1.
  return jnp.minimum(jnp.floor(u * (high + 1).astype(jnp.float32)).astype(jnp.int32), high)


def erasing_boxes(draws: ErasingDraws, height: int, width: int, probability: float = 0.25, min_area: float = 0.02,
                  max_area: float = 1 / 3, min_aspect: float = 0.3, max_aspect: Optional[float] = None):
  """Each image's erased box from its draws, as timm's `RandomErasing._erase` with one box (count 1).

  Returns (top, left, box_h, box_w) int32 [B]; box_h = box_w = 0 for an image left alone (not drawn for erasing,
  or none of the 10 attempts fits). Attempt k: target_area = U(min_area, max_area) * H * W, aspect =
  exp(U(log min_aspect, log max_aspect)), h = round(sqrt(target_area * aspect)), w = round(sqrt(target_area /
  aspect)) (round half to even, as Python's round), accepted when w < W and h < H; the first accepted one is used.
  """
  max_aspect = max_aspect or 1 / min_aspect
  area = height * width
  log_min, log_max = math.log(min_aspect), math.log(max_aspect)
  # random.uniform(a, b) is a + (b - a) * random().
  target_area = (min_area + (max_area - min_area) * draws.area) * area
  aspect = jnp.exp(log_min + (log_max - log_min) * draws.aspect)
  box_h = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)  # [B, 10]
  box_w = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
  accepted = (box_w < width) & (box_h < height)
  first = jnp.argmax(accepted, axis=1)[:, None]  # the first accepted attempt (0 when none is: masked below)
  box_h = jnp.take_along_axis(box_h, first, axis=1)[:, 0]
  box_w = jnp.take_along_axis(box_w, first, axis=1)[:, 0]
  erase = (draws.apply < probability) & jnp.any(accepted, axis=1)
  top = _randint_inclusive(draws.top, height - box_h)
  left = _randint_inclusive(draws.left, width - box_w)
  zero = jnp.zeros_like(box_h)
  return top, left, jnp.where(erase, box_h, zero), jnp.where(erase, box_w, zero)


def erase_with_draws(images: jax.Array, draws: ErasingDraws, probability: float = 0.25, min_area: float = 0.02,
                     max_area: float = 1 / 3, min_aspect: float = 0.3, max_aspect: Optional[float] = None) -> jax.Array:
  """`random_erasing` with its random values given (`erasing_draws`): each image's box (`erasing_boxes`) set to the
  fill, everything else unchanged."""
  _, height, width, _ = _images_shape(images)
  top, left, box_h, box_w = erasing_boxes(draws, height, width, probability, min_area, max_area, min_aspect,
                                          max_aspect)
  rows = jnp.arange(height)[None, :]
  cols = jnp.arange(width)[None, :]
  in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # [B, H]
  in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # [B, W]
  inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]  # [B, H, W, 1]
  return jnp.where(inside, jnp.asarray(draws.fill, images.dtype), images)


def random_erasing(images: jax.Array, key: jax.Array, probability: float = 0.25, min_area: float = 0.02,
                   max_area: float = 1 / 3, min_aspect: float = 0.3, max_aspect: Optional[float] = None,
                   mode: str = "pixel", count: int = 1) -> jax.Array:
  """timm's `RandomErasing(probability, min_area, max_area, min_aspect, max_aspect, mode, max_count=1)` on each
  image of a batch [B, H, W, C] (float, already normalised: the fill is N(0, 1) in that space).

  With probability `probability` an image gets one box, of area U(min_area, max_area) of the image and log aspect
  ratio (height / width) U(log min_aspect, log max_aspect) (max_aspect defaults to 1 / min_aspect), placed uniformly
  where it fits (timm's up to 10 attempts, drawn at once here), filled with per-pixel N(0, 1) ('pixel'), one N(0, 1)
  colour per channel ('rand') or zeros ('const'). The settings are static Python numbers; each image's draws are
  its own, so under `jit` a batch sharded over the data axis is erased where it lies.
  """
  max_aspect = _check_erasing(probability, min_area, max_area, min_aspect, max_aspect, mode, count)
  shape = _images_shape(images)
  if probability == 0:
    return images
  draws = erasing_draws(key, shape, mode, images.dtype)
  return erase_with_draws(images, draws, probability, min_area, max_area, min_aspect, max_aspect)


# ---------------------------------------------------------------- mixup / CutMix


class MixupDraws(NamedTuple):
  """The random values of one `mixup_cutmix` call, one per group (timm's `_params_per_batch` result and the
  CutMix box centre of `rand_bbox`).

  lam [G] float32: the mixing weight drawn (1 where the group is not mixed); use_cutmix [G] bool; cy, cx [G] int32:
  the box centre, `np.random.randint(0, H)` and `np.random.randint(0, W)` (high excluded), used only with CutMix.
  """
  lam: jax.Array
  use_cutmix: jax.Array
  cy: jax.Array
  cx: jax.Array


def _check_mixup(mixup_alpha, cutmix_alpha, prob, switch_prob) -> None:
  """Validate mixup's settings (those of the config group `mixup`)."""
  for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
    _need(_number(value) and value >= 0, f"mixup's {name} must be a finite number, 0 or more (0: off), got {value!r}")
  for name, value in (("prob", prob), ("switch_prob", switch_prob)):
    _need(_number(value) and 0 <= value <= 1, f"mixup's {name} must be a probability from 0 to 1, got {value!r}")


def mixup_params(apply_u: jax.Array, switch_u: jax.Array, lam_mixup: jax.Array, lam_cutmix: jax.Array,
                 mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5):
  """timm's `Mixup._params_per_batch` for each group from its draws: apply_u, switch_u uniforms in [0, 1) (the two
  `np.random.rand()`), lam_mixup ~ Beta(mixup_alpha, mixup_alpha) and lam_cutmix ~ Beta(cutmix_alpha, cutmix_alpha)
  (ignored where that alpha is 0). Returns (lam float32, use_cutmix bool), lam = 1 and no CutMix where the group is
  not mixed (apply_u >= prob) or both alphas are 0 (timm's `mixup_enabled = False`)."""
  applied = apply_u < prob
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = switch_u < switch_prob
    lam = jnp.where(use_cutmix, lam_cutmix, lam_mixup)
  elif mixup_alpha > 0:
    use_cutmix, lam = jnp.zeros(jnp.shape(apply_u), bool), lam_mixup
  elif cutmix_alpha > 0:
    use_cutmix, lam = jnp.ones(jnp.shape(apply_u), bool), lam_cutmix
  else:
    use_cutmix, lam, applied = jnp.zeros(jnp.shape(apply_u), bool), jnp.ones(jnp.shape(apply_u)), False
  lam = jnp.where(applied, jnp.asarray(lam, jnp.float32), 1.0)
  return lam, use_cutmix & applied


def _group_draws(key: jax.Array, height: int, width: int, mixup_alpha: float, cutmix_alpha: float, prob: float,
                 switch_prob: float) -> MixupDraws:
  """One group's draws (scalars) from its own key."""
  k_apply, k_switch, k_mixup, k_cutmix, k_cy, k_cx = jax.random.split(key, 6)
  one = jnp.ones((), jnp.float32)
  lam_mixup = jax.random.beta(k_mixup, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else one
  lam_cutmix = jax.random.beta(k_cutmix, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else one
  lam, use_cutmix = mixup_params(jax.random.uniform(k_apply), jax.random.uniform(k_switch), lam_mixup, lam_cutmix,
                                 mixup_alpha, cutmix_alpha, prob, switch_prob)
  return MixupDraws(lam=lam, use_cutmix=use_cutmix,
                    cy=jax.random.randint(k_cy, (), 0, height), cx=jax.random.randint(k_cx, (), 0, width))


def mixup_draws(key: jax.Array, groups: int, height: int, width: int, mixup_alpha: float = 0.8,
                cutmix_alpha: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5) -> MixupDraws:
  """Draw every random value `mixup_cutmix` needs, one set per group (each from its own key split from `key`).

  Both Beta variables are drawn and one is kept (`mixup_params`): the same distribution as timm drawing only the
  one it uses. The groups are drawn one after the other (`lax.map`) rather than as one [G] array: Beta variables
  are sampled by rejection in a while loop, and XLA's partitioner would split a [G] loop over the data axis, as the
  grouped images that use its result are, then all-reduce the loop's condition over the devices at every rejection
  round; scalar draws are computed whole on every device (a few scalars) and need no collective.
  """
  _check_mixup(mixup_alpha, cutmix_alpha, prob, switch_prob)
  draw = functools.partial(_group_draws, height=height, width=width, mixup_alpha=mixup_alpha,
                           cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob)
  return jax.lax.map(draw, jax.random.split(key, groups))


def cutmix_box(lam: jax.Array, cy: jax.Array, cx: jax.Array, height: int, width: int, correct_lam: bool = True):
  """timm's `cutmix_bbox_and_lam` (with `rand_bbox`, no margin or min/max ratio) from a drawn lam and box centre.

  cut_rat = sqrt(1 - lam), cut_h = int(H * cut_rat), cut_w = int(W * cut_rat), rows [clip(cy - cut_h // 2, 0, H),
  clip(cy + cut_h // 2, 0, H)), columns likewise. Returns ((y_low, y_high, x_low, x_high) int32, lam): lam corrected
  to 1 - box area / (H * W) with `correct_lam` (the box is clipped at the borders), else as given.
  """
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)  # int() of a non-negative number
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  y_low, y_high = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  x_low, x_high = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  if correct_lam:
    lam = 1.0 - ((y_high - y_low) * (x_high - x_low)).astype(jnp.float32) / float(height * width)
  return (y_low, y_high, x_low, x_high), lam


def soft_targets(labels: jax.Array, lam: jax.Array, num_classes: int, label_smoothing: float = 0.1) -> jax.Array:
  """timm's `mixup_target` for one group: one_hot(labels) * lam + one_hot(labels reversed) * (1 - lam), float32
  [N, K], each one-hot with off value smoothing / K and on value 1 - smoothing + smoothing / K."""
  off_value = label_smoothing / num_classes
  on_value = 1.0 - label_smoothing + off_value
  y1 = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), on_value, off_value).astype(jnp.float32)
  return y1 * lam + y1[::-1] * (1.0 - lam)


def _mix_group(images: jax.Array, labels: jax.Array, lam: jax.Array, use_cutmix: jax.Array, cy: jax.Array,
               cx: jax.Array, num_classes: int, label_smoothing: float, correct_lam: bool):
  """timm's `Mixup.__call__` in mode 'batch' on one group [N, H, W, C] with its drawn parameters: each image is
  mixed with the one at the mirrored position (`x.flip(0)`), by blending (mixup) or by pasting the mirrored image's
  box (CutMix, with the corrected lam)."""
  _, height, width, _ = images.shape
  flipped = images[::-1]
  (y_low, y_high, x_low, x_high), box_lam = cutmix_box(lam, cy, cx, height, width, correct_lam)
  rows, cols = jnp.arange(height), jnp.arange(width)
  inside = (((rows >= y_low) & (rows < y_high))[:, None] & ((cols >= x_low) & (cols < x_high))[None, :])
  pasted = jnp.where(inside[None, :, :, None], flipped, images)
  # timm: x_flipped = x.flip(0) * (1 - lam); x * lam + x_flipped, in float32 whatever the images' dtype.
  blended = (images.astype(jnp.float32) * lam + flipped.astype(jnp.float32) * (1.0 - lam)).astype(images.dtype)
  # timm returns before mixing when lam == 1 (not mixed): the images are kept as they are.
  mixed = jnp.where(lam == 1.0, images, jnp.where(use_cutmix, pasted, blended))
  lam = jnp.where(use_cutmix & (lam != 1.0), box_lam, lam)
  return mixed, soft_targets(labels, lam, num_classes, label_smoothing)


def mix_with_draws(images: jax.Array, labels: jax.Array, draws: MixupDraws, num_classes: int,
                   label_smoothing: float = 0.1, correct_lam: bool = True):
  """`mixup_cutmix` with its random values given (`mixup_draws`, G = len(draws.lam) groups).

  The batch's B rows are cut into G equal contiguous groups, each mixed within itself with its own draws.
  Returns (mixed images [B, H, W, C] of images' dtype, soft targets [B, num_classes] float32).
  """
  b, height, width, channels = _images_shape(images)
  groups = int(jnp.shape(draws.lam)[0])
  _need(groups >= 1 and b % groups == 0,
        f"mixup's groups ({groups}) must divide the batch of {b} (one group per device of the data axis)")
  _need(jnp.shape(labels) == (b,), f"labels must have shape [B] = ({b},), got {tuple(jnp.shape(labels))}")
  # [B, ...] -> [G, B/G, ...] and a vmap over G: group g is rows g*B/G ... (g+1)*B/G - 1, which is exactly device g's
  # shard when G is the data axis's size and the batch is sharded over it (rows laid out device by device). The
  # reshape only splits the sharded leading axis, and everything per group (the flip, the box, the blend, the
  # targets) stays inside the group, so XLA's partitioner keeps each group on its device and moves no data; the
  # per-group draws are a few scalars from the replicated key.
  grouped_images = images.reshape(groups, b // groups, height, width, channels)
  grouped_labels = labels.reshape(groups, b // groups)
  mix = jax.vmap(_mix_group, in_axes=(0, 0, 0, 0, 0, 0, None, None, None))
  mixed, targets = mix(grouped_images, grouped_labels, draws.lam, draws.use_cutmix, draws.cy, draws.cx, num_classes,
                       label_smoothing, correct_lam)
  return mixed.reshape(images.shape), targets.reshape(b, num_classes)


def mixup_cutmix(images: jax.Array, labels: jax.Array, key: jax.Array, num_classes: int, mixup_alpha: float = 0.8,
                 cutmix_alpha: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 correct_lam: bool = True, groups: int = 1):
  """timm's `Mixup(mixup_alpha, cutmix_alpha, prob=prob, switch_prob, mode='batch', correct_lam, label_smoothing,
  num_classes)` applied to each of `groups` equal contiguous parts of the batch, as each GPU of the reference
  applies it to its own batch.

  images [B, H, W, C] float, labels [B] int in [0, num_classes). Per group: with probability `prob` it is mixed,
  by CutMix (lam ~ Beta(cutmix_alpha, cutmix_alpha), a box of the mirrored image pasted, lam corrected to the box's
  share) with probability `switch_prob` when both alphas are above 0, else by mixup (lam ~ Beta(mixup_alpha,
  mixup_alpha), x * lam + x.flip(0) * (1 - lam)); with one alpha 0 only the other kind, with both 0 nothing. Returns
  (images, soft targets [B, num_classes] float32): smoothed one-hots of the labels and of the mirrored labels,
  weighted lam and 1 - lam. Pass groups = the mesh's data-axis size for the reference's per-GPU lambdas: under
  `jit` with the batch sharded over that axis, each device mixes its own shard (see `mix_with_draws`).
  """
  _check_mixup(mixup_alpha, cutmix_alpha, prob, switch_prob)
  _need(isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 1,
        f"num_classes must be a positive whole number, got {num_classes!r}")
  _need(_number(label_smoothing) and 0 <= label_smoothing < 1,
        f"label_smoothing must be a number from 0 up to (not including) 1, got {label_smoothing!r}")
  b, height, width, _ = _images_shape(images)
  _need(isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1 and b % groups == 0,
        f"mixup's groups must be a positive whole number dividing the batch of {b} (one group per device of the "
        f"data axis), got {groups!r}")
  draws = mixup_draws(key, groups, height, width, mixup_alpha, cutmix_alpha, prob, switch_prob)
  return mix_with_draws(images, labels, draws, num_classes, label_smoothing, correct_lam)


@dataclasses.dataclass(frozen=True)
class MixupSettings:
  """The config group `mixup` (fields mixup_alpha, cutmix_alpha, prob, switch_prob; configs/common.py); the label
  smoothing is the method's own and is passed to `apply`."""
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0
  switch_prob: float = 0.5

  def __post_init__(self):
    _check_mixup(self.mixup_alpha, self.cutmix_alpha, self.prob, self.switch_prob)

  @classmethod
  def from_config(cls, config) -> "MixupSettings":
    """The settings of `config.mixup` (a config with that group, or the group itself)."""
    group = config.mixup if hasattr(config, "mixup") else config
    return cls(**{f.name: group[f.name] for f in dataclasses.fields(cls)})

  @property
  def enabled(self) -> bool:
    """Whether anything is mixed: an alpha above 0 and a probability above 0 (timm's Mixup is built then)."""
    return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0

  def apply(self, images: jax.Array, labels: jax.Array, key: jax.Array, num_classes: int,
            label_smoothing: float = 0.0, groups: int = 1):
    """`mixup_cutmix` with these settings."""
    return mixup_cutmix(images, labels, key, num_classes, self.mixup_alpha, self.cutmix_alpha, self.prob,
                        self.switch_prob, label_smoothing, groups=groups)
