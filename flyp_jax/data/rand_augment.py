"""timm's RandAugment in TensorFlow, stateless: `parse(spec)` reads timm's config string, `apply(image, spec, seed)`
augments one uint8 [H, W, 3] image inside a tf.data map function.

What it reproduces: timm `timm/data/auto_augment.py` (huggingface/pytorch-image-models at aa4b5850c154,
`rand_augment_transform`, `RandAugment.__call__`, `AugmentOp.__call__`, the `*_level_to_arg` functions and the PIL
ops) as the attention-transfer reference uses it: `create_transform(is_training=True, auto_augment=
'rand-m9-mstd0.5-inc1', interpolation='bicubic', ...)` (timm `transforms_factory.py`), which runs it after the random
resized crop and the flip, on the uint8 image, before normalisation, with the hparams
- `img_mean` = round(255 * mean) of the mean it is given: ImageNet's (0.485, 0.456, 0.406) -> (124, 116, 104), the
  fill of the affine ops (`RandAugmentSpec.fill`; `fill_for_mean` for another mean);
- `interpolation` = BICUBIC (create_transform puts `str_to_pil_interp('bicubic')` in the hparams, so timm's
  `_interpolation` returns it instead of its default random choice of bilinear or bicubic): the affine ops here are
  bicubic only;
- translate_pct 0.45 (timm's default: create_transform's `translate_const` is for the absolute translations, which
  neither op list uses).

Why our own code: keras 3's `keras.layers.RandAugment`, tf-models-official's `official.vision.ops.augment.RandAugment`
and dm-pix each lack what this needs (a different op set and magnitude distribution, no per-op probability, stateful
random ops, bilinear resampling, float instead of PIL's uint8 arithmetic; dm-pix has no RandAugment and runs in JAX,
not in tf.data). Why stateless: every draw comes from `tf.random.stateless_*` seeded by the caller's int32 [2] seed
(with a tag of this module folded in, so the crop's own seed can be passed as is without the two being correlated),
so an (example, epoch) gets the same augmentation on every run and after a resume. The draws follow timm's
distributions, not its Python random stream: per layer, an op uniform over the list (`np.random.choice` with
replacement), applied when u <= prob (timm skips it when `random.random() > prob`), a magnitude of its own,
gauss(m, mstd) (uniform(0, m) for mstd = inf, m for mstd 0) clipped to [0, mmax], and for the signed ops (rotate,
shear, translate, the increasing enhancements) a negative argument with probability 1/2 (`_randomly_negate`).

PIL semantics (Pillow 13.0.0's Python, and python-pillow/Pillow at 4e5f09f533db `src/libImaging/Geometry.c`,
`Filter.c`, `Blend.c`, `Convert.c`): every op repeats PIL's own arithmetic, integer where PIL's is integer, float32
where it is float (Image.blend), float64 where it is double (the affine transform, AutoContrast's lut), with PIL's
truncations, so the output equals PIL's as timm calls it, bit for bit (tests/test_rand_augment.py checks each op
against PIL, inside tf.data; for Pillow built for x86-64 as its wheels are: a build that fuses a * b + c into one
instruction, as compilers may on ARM, can differ by 1 where a value lies within rounding of an integer):
- AutoContrast: per channel, lo/hi the darkest/lightest value, lut[i] = int(i * 255.0 / (hi - lo) - lo * scale)
  clipped (identity when hi <= lo). Equalize: per channel, step = (pixels - count of the last used value) // 255,
  lut[i] = (step // 2 + pixels below i) // step clipped to 255 (identity when one value or step 0).
- Invert, Posterize (x & mask; bits >= 8 unchanged; bits 0, which PosterizeIncreasing reaches at magnitude 10, gives
  black as Pillow's older lut did: Pillow 13 raises for it), Solarize (x < t ? x : 255 - x), SolarizeAdd (x < 128 ?
  min(255, x + add) : x).
- Color / Contrast / Brightness / Sharpness: Image.blend(degenerate, image, factor) = truncate(d + f * (x - d)) in
  float32, clipped; degenerate = the L image (L = (19595 R + 38470 G + 7471 B + 2^15) >> 16) / a constant grey of
  int(mean(L) + 0.5) / black / the image smoothed by [[1,1,1],[1,5,1],[1,1,1]] / 13 and rounded, the border pixels
  kept (PIL's float32 filter, whose result is provably that integer: `_smooth`).
- Rotate, ShearX/Y, TranslateX/YRel: Image.transform(AFFINE, BICUBIC, fillcolor): the output pixel centre
  (x + .5, y + .5) is mapped by the coefficients (Image.rotate's: cos and sin rounded to 15 decimals, about the
  centre); a source point outside [0, W) x [0, H) takes the fill, one inside the 4x4 cubic convolution with PIL's
  a = -1 kernel (not the a = -0.5 of its resize) over edge-clamped neighbours, rows first, in float64, truncated.
  The one possible difference: TensorFlow's cos/sin and the rounding to 15 decimals (done as rint(v * 1e15) / 1e15)
  can differ from Python's in the last bit, which moves a sample point by ~1e-13 pixel; it changes a pixel only if
  the point lies that close to a truncation or the fill's edge (never seen in the tests).

Order of float operations: Grappler reorders a chain of additions in a tf.data map function (measured: (a + b) + c
with a [1, 2], b [2, 1] and c a scalar became (a + c) + b) and can hoist a common factor out of a sum of products.
So the float64 sums that must keep PIL's order go through `_add` (a sum of exactly two terms, which no reordering
changes); without it, the sample points of the affine ops were seen to move (a pixel off by one in the tests).

Cost: `apply` runs the chosen op only (tf.switch_case). Measured on 224 x 224 images in a tf.data map with 2
parallel calls on 2 CPU cores shared with other work (so +-30%): 'rand-m9-mstd0.5-inc1' about halves the throughput of
a pipeline of JPEG decoding, random resized crop, flip and normalisation (275 -> 140 and 500 -> 195-280 images/s in
two sessions: 3-7 ms of CPU per image, one op per image on average). The ops alone, images/s: about 4000 for no op
drawn, 800-15000 for the pointwise and histogram ops, 1200 Sharpness, 250-280 the shears and translations (4
neighbours per pixel, float64), 65 Rotate (16 neighbours per pixel), the dearest; PIL's own ops are 2-10 times quicker.
Building the map function takes about 1 s (30 branches).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from flyp_jax import errors

LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: the magnitude m of 'rand-m9' is m / 10 of each op's range
TRANSLATE_PCT = 0.45  # timm's default translate_pct for TranslateXRel / TranslateYRel
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
REFERENCE_SPEC = "rand-m9-mstd0.5-inc1"  # the attention-transfer reference's --aa

# timm's _RAND_TRANSFORMS (the string without 'inc') and _RAND_INCREASING_TRANSFORMS ('inc1'), in timm's order.
RAND_TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                   "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                              "TranslateYRel")

_SEED_TAG = 0x52414E44  # folded into the caller's seed: this module's draws differ from the crop's on the same seed

_GRAMMAR = ("a RandAugment spec is 'rand' followed by '-'-separated sections, each a key and its number: m<int> the "
            "magnitude (of 10), n<int> the ops per image, p<float> each op's probability, mstd<float> the magnitude's "
            "standard deviation (over 100: uniform in [0, m]), mmax<int> the magnitude's cap, inc1 timm's increasing "
            f"op set; e.g. '{REFERENCE_SPEC}'")


def fill_for_mean(mean: Sequence[float]) -> tuple[int, int, int]:
  """The fill colour timm's create_transform derives from the normalisation mean (`img_mean`)."""
  return tuple(min(255, round(255 * x)) for x in mean)


IMAGENET_FILL = fill_for_mean(IMAGENET_DEFAULT_MEAN)  # (124, 116, 104)


@dataclasses.dataclass(frozen=True)
class RandAugmentSpec:
  """A RandAugment configuration. The defaults are timm's for the sections a spec string leaves out ('rand' alone:
  n 2, m 10, no magnitude noise, cap 10, p 0.5, the non-increasing op set); `ops` None means the set `increasing`
  selects. `fill` is the affine ops' fill (timm's img_mean)."""
  num_ops: int = 2
  magnitude: float = LEVEL_DENOM
  magnitude_std: float = 0.0
  magnitude_max: float = LEVEL_DENOM
  increasing: bool = False
  prob: float = 0.5
  ops: Optional[tuple[str, ...]] = None
  fill: tuple[int, int, int] = IMAGENET_FILL

  def __post_init__(self):
    ops = tuple(self.ops) if self.ops is not None else (
        RAND_INCREASING_TRANSFORMS if self.increasing else RAND_TRANSFORMS)
    object.__setattr__(self, "ops", ops)
    object.__setattr__(self, "fill", tuple(self.fill))
    unknown = [name for name in ops if name not in _OPS]
    if not ops or unknown:
      raise errors.BadValue(f"RandAugment ops must be a non-empty list of {sorted(_OPS)}, got {list(ops)}")
    if isinstance(self.num_ops, bool) or not isinstance(self.num_ops, int) or self.num_ops < 0:
      raise errors.BadValue(f"RandAugment num_ops (n) must be an integer >= 0, got {self.num_ops!r}")
    for name in ("magnitude", "magnitude_std", "magnitude_max", "prob"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise errors.BadValue(f"RandAugment {name} must be a number >= 0, got {value!r}")
    if not math.isfinite(self.magnitude) or not 0 < self.magnitude_max < math.inf:
      raise errors.BadValue(f"RandAugment magnitude must be finite and magnitude_max finite and > 0, got "
                            f"{self.magnitude!r} and {self.magnitude_max!r}")
    if self.prob > 1:
      raise errors.BadValue(f"RandAugment prob (p) must be in [0, 1], got {self.prob!r}")
    if len(self.fill) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in self.fill):
      raise errors.BadValue(f"RandAugment fill must be 3 integers in [0, 255], got {self.fill!r}")


_KEYS = {"m": "magnitude", "n": "num_ops", "p": "prob", "mstd": "magnitude_std", "mmax": "magnitude_max",
         "inc": "increasing"}
_INT_KEYS = ("m", "n", "mmax", "inc")


def parse(spec: str) -> RandAugmentSpec:
  """timm's RandAugment string (`rand_augment_transform`'s grammar) as a RandAugmentSpec.

  As timm: sections split at '-', each a key and the number from its first digit on; m, n, mmax, inc integers, p
  and mstd floats, mstd over 100 meaning uniform magnitudes. Stricter than timm, which ignores what it cannot read or
  reads it against intuition: a section without a number, a key given twice, 'inc0' (timm's `bool('0')` is True, so
  it selects the increasing set, as 'inc1' does: write 'inc1', or leave 'inc' out for the other set), 'mmax0' (timm's
  `mmax or 10` reads it as 10) and 't' sections (timm's weighted and 3-augment op sets, not implemented) are errors.
  '' is not a spec (the caller's "off").
  """
  def bad(why: str) -> errors.BadValue:
    return errors.BadValue(f"RandAugment spec {spec!r}: {why}; {_GRAMMAR}")

  if not isinstance(spec, str) or not spec:
    raise bad("it is empty (leave augmentation off instead of passing '')" if spec == "" else "it is not a string")
  head, *sections = spec.split("-")
  if head != "rand":
    raise bad("it does not start with 'rand'")
  values = {}
  for section in sections:
    if section.startswith("t"):
      raise bad(f"section {section!r} names one of timm's weighted or 3-augment op sets, which are not supported")
    match = re.fullmatch(r"([a-z]*)(\d.*)", section)
    if not match:
      raise bad(f"section {section!r} is not a key followed by a number")
    key, text = match.groups()
    if key not in _KEYS:
      raise bad(f"section {section!r} has the unknown key {key!r}")
    if key in values:
      raise bad(f"the key {key!r} is given twice")
    if not re.fullmatch(r"\d+" if key in _INT_KEYS else r"\d+(\.\d+)?", text):
      raise bad(f"section {section!r}: {text!r} is not {'an integer' if key in _INT_KEYS else 'a decimal number'}")
    values[key] = int(text) if key in _INT_KEYS else float(text)
  if values.get("inc") == 0:
    raise bad("'inc0' is ambiguous (timm reads it as inc1: its bool('0') is True); write 'inc1' for the increasing "
              "op set or leave 'inc' out for the other")
  if values.get("mmax") == 0:
    raise bad("'mmax0' is ambiguous (timm reads it as no cap given, i.e. 10); write the cap, e.g. 'mmax10'")
  if values.get("mstd", 0) > 100:
    values["mstd"] = math.inf  # timm: uniform sampling in [0, m]
  fields = {_KEYS[key]: (bool(value) if key == "inc" else value) for key, value in values.items()}
  try:
    return RandAugmentSpec(**fields)
  except errors.BadValue as e:
    raise bad(str(e)) from None


# ----------------------------------------------------------------------------------------------------- helpers
def _add(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """a + b (broadcast) as one sum of two terms: Grappler cannot regroup it with other additions (module docstring)."""
  shape = tf.broadcast_dynamic_shape(tf.shape(a), tf.shape(b))
  return tf.reduce_sum(tf.stack([tf.broadcast_to(a, shape), tf.broadcast_to(b, shape)]), axis=0)


def _to_uint8(v: tf.Tensor) -> tf.Tensor:
  """PIL's float -> 8 bit: <= 0 is 0, >= 255 is 255, else truncated (C's (UINT8) cast)."""
  return tf.cast(tf.cast(tf.clip_by_value(v, 0.0, 255.0), tf.int32), tf.uint8)


def _luma(image: tf.Tensor) -> tf.Tensor:
  """PIL's RGB -> L [H, W] int32 (Convert.c L24: ITU-R 601-2 in 16-bit fixed point, rounded)."""
  x = tf.cast(image, tf.int32)
  return tf.bitwise.right_shift(x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000, 16)


def _histograms(x: tf.Tensor) -> tf.Tensor:
  """Per-channel histograms [3, 256] int32 of an int32 [H, W, 3] image."""
  return tf.reshape(tf.math.bincount(tf.reshape(x + tf.constant([0, 256, 512]), [-1]), minlength=768,
                                     maxlength=768), [3, 256])


def _apply_luts(x: tf.Tensor, luts: tf.Tensor) -> tf.Tensor:
  """Per-channel look-up tables luts [3, 256] (int32, in [0, 255]) applied to an int32 [H, W, 3] image."""
  return tf.cast(tf.gather(tf.reshape(luts, [-1]), x + tf.constant([0, 256, 512])), tf.uint8)


# ------------------------------------------------------------------------------------ PIL's ops (ImageOps etc.)
def _autocontrast(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.autocontrast(image) (cutoff 0): per channel, [lo, hi] stretched to [0, 255] by a float64 lut."""
  x = tf.cast(image, tf.int32)
  lo = tf.cast(tf.reduce_min(x, axis=[0, 1]), tf.float64)[:, None]  # [3, 1]
  hi = tf.cast(tf.reduce_max(x, axis=[0, 1]), tf.float64)[:, None]
  stretch = hi > lo
  scale = 255.0 / tf.where(stretch, hi - lo, 1.0)
  offset = -lo * scale
  ix = tf.cast(tf.range(256), tf.float64)[None, :]
  lut = tf.cast(_add(ix * scale, offset), tf.int32)  # Python's int(): toward zero, then clipped
  lut = tf.where(stretch, tf.clip_by_value(lut, 0, 255), tf.range(256)[None, :])
  return _apply_luts(x, lut)


def _equalize(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.equalize(image): per channel, the cumulative histogram scaled by step (integers, as PIL)."""
  x = tf.cast(image, tf.int32)
  hist = _histograms(x)
  used = hist > 0
  last_used = 255 - tf.argmax(tf.cast(tf.reverse(used, [1]), tf.int32), axis=1, output_type=tf.int32)
  last_count = tf.gather(hist, last_used, batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - last_count) // 255
  keep = (tf.reduce_sum(tf.cast(used, tf.int32), axis=1) <= 1) | (step == 0)
  below = tf.cumsum(hist, axis=1, exclusive=True)
  lut = (step[:, None] // 2 + below) // tf.maximum(step, 1)[:, None]
  lut = tf.where(keep[:, None], tf.range(256)[None, :], tf.minimum(lut, 255))  # point() clips to 255
  return _apply_luts(x, lut)


def _invert(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.invert."""
  return 255 - image


def _posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """timm's posterize: unchanged for bits >= 8, else ImageOps.posterize (x & ~(2^(8 - bits) - 1)); bits <= 0 gives
  0, as the mask of Pillow's older lut (Pillow 13 raises for bits 0)."""
  shift = tf.clip_by_value(8 - bits, 0, 8)
  mask = tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(255, shift), shift), tf.uint8)
  return tf.bitwise.bitwise_and(image, mask)


def _solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  """ImageOps.solarize: values >= threshold inverted."""
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def _solarize_add(image: tf.Tensor, add: tf.Tensor, threshold: int = 128) -> tf.Tensor:
  """timm's solarize_add: values below the threshold raised by `add`, capped at 255."""
  x = tf.cast(image, tf.int32)
  return tf.cast(tf.where(x < threshold, tf.minimum(255, x + add), x), tf.uint8)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """Image.blend(degenerate, image, factor) (Blend.c): d + f * (x - d) in float32 (f as C's float), clipped and
  truncated. The base of every ImageEnhance class."""
  alpha = tf.cast(factor, tf.float32)
  d = tf.cast(degenerate, tf.float32)
  return _to_uint8(d + alpha * (tf.cast(image, tf.float32) - d))


def _color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Color: blended with its grey (L) version."""
  return _blend(tf.repeat(_luma(image)[..., None], 3, axis=-1), image, factor)


def _contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Contrast: blended with a constant grey, the mean of the L image rounded: int(mean + 0.5)."""
  luma = _luma(image)
  total = tf.cast(tf.reduce_sum(tf.cast(luma, tf.int64)), tf.float64)
  mean = tf.floor(total / tf.cast(tf.size(luma), tf.float64) + 0.5)
  return _blend(mean, image, factor)


def _brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Brightness: blended with black."""
  return _blend(tf.zeros([], tf.float32), image, factor)


def _smooth(image: tf.Tensor) -> tf.Tensor:
  """image.filter(ImageFilter.SMOOTH) (Filter.c ImagingFilter3x3, kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13):
  an interior pixel gets round(S / 13), S the kernel's integer sum over its 3x3 neighbourhood; the border is kept.

  PIL computes S / 13 + 0.5 in float32 (weights 1/13 and 5/13 rounded to float32, 9 products and sums) and
  truncates. Its rounding errors, under 1e-4 at these magnitudes, cannot move the result across an integer:
  S / 13 + 0.5 = (2 S + 13) / 26 with 2 S + 13 odd, at least 1/26 from every integer. So the result is exactly the
  integer (2 S + 13) // 26, computed here without floats (and so without an order of float operations to keep).
  """
  def interior():
    x = tf.cast(image, tf.int32)
    rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]  # [H, W - 2]: each pixel's row of three
    total = rows[:-2] + rows[1:-1] + rows[2:] + 4 * x[1:-1, 1:-1]
    inner = tf.cast((2 * total + 13) // 26, tf.uint8)
    return tf.concat([image[:1], tf.concat([image[1:-1, :1], inner, image[1:-1, -1:]], axis=1), image[-1:]], axis=0)

  shape = tf.shape(image)
  return tf.cond((shape[0] >= 3) & (shape[1] >= 3), interior, lambda: image)  # PIL copies images under 3x3


def _sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Sharpness: blended with the SMOOTH-filtered image."""
  return _blend(_smooth(image), image, factor)


def _cubic(v0: tf.Tensor, v1: tf.Tensor, v2: tf.Tensor, v3: tf.Tensor, d: tf.Tensor) -> tf.Tensor:
  """Geometry.c's BICUBIC macro (the a = -1 cubic convolution) in PIL's order, float64, operands of one shape. At
  d = 0 it is v1 exactly."""
  p2 = v2 - v0
  p3 = (2.0 * (v0 - v1) + v2) - v3
  p4 = ((v1 - v0) - v2) + v3
  return v1 + d * (p2 + d * (p3 + d * p4))


def _affine(image: tf.Tensor, coeffs: Sequence[tf.Tensor], fill: Sequence[int], along: str = "xy") -> tf.Tensor:
  """image.transform(size, Image.AFFINE, coeffs, Image.BICUBIC, fillcolor=fill) (Geometry.c
  ImagingGenericTransform, affine_transform, bicubic_filter32RGB): output pixel (x, y) samples the input at
  (a x' + b y' + c, d x' + e y' + f), x' = x + 0.5, y' = y + 0.5; a sample point outside [0, W) x [0, H) is the fill,
  one inside the cubic convolution of its 4x4 edge-clamped neighbours, along the rows first, then down the column.

  `along` 'x' for coefficients (., ., ., 0, 1, 0) (shear and translation in x): every point lies on its own row's
  centre line, so PIL's pass down the column has d = 0 and returns that row's value exactly: only the pass along
  the row is computed. 'y' for (1, 0, 0, ., ., .), the other way round. 'xy': both passes (rotation).
  """
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  a, b, c, d, e, f = (tf.cast(v, tf.float64) for v in coeffs)
  xo = (tf.cast(tf.range(w), tf.float64) + 0.5)[None, :]
  yo = (tf.cast(tf.range(h), tf.float64) + 0.5)[:, None]
  xs = _add(_add(a * xo, b * yo), c)  # [H, W]
  ys = _add(_add(d * xo, e * yo), f)
  wf, hf = tf.cast(w, tf.float64), tf.cast(h, tf.float64)
  inside = (xs >= 0.0) & (xs < wf) & (ys >= 0.0) & (ys < hf)

  def taps(v, size, sizef):
    # The 4 neighbours' indices [4, H, W], edge-clamped, and the fraction d [H, W, 3] (shaped as the pixels, so
    # that _cubic's operations need no broadcasting). Points outside are masked at the end: the first clip keeps
    # their (unused) indices away from int32's range.
    v = v - 0.5
    base = tf.floor(v)
    first = tf.cast(tf.clip_by_value(base, -4.0, sizef + 4.0), tf.int32) - 1
    index = tf.clip_by_value(first[None] + tf.range(4)[:, None, None], 0, size - 1)
    return index, tf.broadcast_to((v - base)[..., None], shape)

  flat = tf.reshape(image, [-1, 3])
  if along == "x":
    cols, dx = taps(xs, w, wf)
    pixels = tf.cast(tf.gather(flat, tf.range(h)[:, None] * w + cols), tf.float64)  # [4, H, W, 3]
    value = _cubic(pixels[0], pixels[1], pixels[2], pixels[3], dx)
  elif along == "y":
    rows, dy = taps(ys, h, hf)
    pixels = tf.cast(tf.gather(flat, rows * w + tf.range(w)), tf.float64)
    value = _cubic(pixels[0], pixels[1], pixels[2], pixels[3], dy)
  else:
    cols, dx = taps(xs, w, wf)
    rows, dy = taps(ys, h, hf)
    across = []  # each of the 4 rows in turn (smaller intermediates than all at once: quicker on a CPU)
    for k in range(4):
      pixels = tf.cast(tf.gather(flat, rows[k] * w + cols), tf.float64)  # [4 columns, H, W, 3]
      across.append(_cubic(pixels[0], pixels[1], pixels[2], pixels[3], dx))
    value = _cubic(*across, dy)
  # Operands of one shape: TensorFlow's broadcasting select is several times slower on a CPU.
  fill = tf.broadcast_to(tf.constant(list(fill), tf.uint8), shape)
  return tf.where(tf.broadcast_to(inside[..., None], shape), _to_uint8(value), fill)


def _round15(v: tf.Tensor) -> tf.Tensor:
  """Python's round(v, 15), to the last bit in all but rare cases (module docstring)."""
  return tf.math.rint(v * 1e15) / 1e15


def _rotate(image: tf.Tensor, degrees: tf.Tensor, fill: Sequence[int]) -> tf.Tensor:
  """image.rotate(degrees, BICUBIC, fillcolor=fill): counter-clockwise about the centre (w / 2, h / 2), the
  coefficients computed as Image.rotate does (angle % 360, cos/sin rounded to 15 decimals), then _affine. Its fast
  paths (0, 180, and 90 / 270 on square images: copies and transposes) give what the affine gives at those angles."""
  shape = tf.cast(tf.shape(image), tf.float64)
  cx, cy = shape[1] / 2.0, shape[0] / 2.0
  angle = -(tf.math.floormod(tf.cast(degrees, tf.float64), 360.0) * (math.pi / 180.0))
  cos, sin = _round15(tf.cos(angle)), _round15(tf.sin(angle))
  c = _add(_add(cos * -cx, sin * -cy), cx)
  f = _add(_add(-sin * -cx, cos * -cy), cy)
  return _affine(image, (cos, sin, c, -sin, cos, f), fill)


# --------------------------------------------------------------------------- timm's ops: level -> argument -> op
def _signed(v: tf.Tensor, negate: tf.Tensor) -> tf.Tensor:
  """timm's _randomly_negate, with the coin drawn by the caller."""
  return tf.where(negate, -v, v)


def _level(m: tf.Tensor) -> tf.Tensor:
  return m / LEVEL_DENOM


def _enhance_arg(m):
  """_enhance_level_to_arg: (m / 10) * 1.8 + 0.1, unsigned."""
  return _level(m) * 1.8 + 0.1


def _enhance_increasing_arg(m, negate):
  """_enhance_increasing_level_to_arg: max(0.1, 1 +- (m / 10) * 0.9)."""
  return tf.maximum(tf.constant(0.1, tf.float64), 1.0 + _signed(_level(m) * 0.9, negate))


def _int(v: tf.Tensor) -> tf.Tensor:
  return tf.cast(v, tf.int32)  # Python's int() of a value >= 0


def _posterize_bits(m: tf.Tensor) -> tf.Tensor:
  return _int(_level(m) * 4.0)  # _posterize_level_to_arg


def _solarize_threshold(m: tf.Tensor) -> tf.Tensor:
  return tf.minimum(256, _int(_level(m) * 256.0))  # _solarize_level_to_arg


def _translate(image, m, negate, fill, axis):
  """translate_x_rel / translate_y_rel: pct * width (height) pixels, pct = +-(m / 10) * translate_pct."""
  pixels = _signed(_level(m) * TRANSLATE_PCT, negate) * tf.cast(tf.shape(image)[1 - axis], tf.float64)
  one, zero = tf.constant(1.0, tf.float64), tf.constant(0.0, tf.float64)
  coeffs = (one, zero, pixels, zero, one, zero) if axis == 0 else (one, zero, zero, zero, one, pixels)
  return _affine(image, coeffs, fill, along="xy"[axis])


def _shear(image, m, negate, fill, axis):
  """shear_x / shear_y: factor +-(m / 10) * 0.3."""
  factor = _signed(_level(m) * 0.3, negate)
  one, zero = tf.constant(1.0, tf.float64), tf.constant(0.0, tf.float64)
  coeffs = (one, factor, zero, zero, one, zero) if axis == 0 else (one, zero, zero, factor, one, zero)
  return _affine(image, coeffs, fill, along="xy"[axis])


# name -> fn(image uint8 [H, W, 3], magnitude float64 (clipped), negate bool, fill) -> image, as timm's
# NAME_TO_OP[name](img, *LEVEL_TO_ARG[name](magnitude)).
_OPS: dict[str, Callable] = {
    "AutoContrast": lambda im, m, neg, fill: _autocontrast(im),
    "Equalize": lambda im, m, neg, fill: _equalize(im),
    "Invert": lambda im, m, neg, fill: _invert(im),
    "Rotate": lambda im, m, neg, fill: _rotate(im, _signed(_level(m) * 30.0, neg), fill),
    "Posterize": lambda im, m, neg, fill: _posterize(im, _posterize_bits(m)),
    "PosterizeIncreasing": lambda im, m, neg, fill: _posterize(im, 4 - _posterize_bits(m)),
    "Solarize": lambda im, m, neg, fill: _solarize(im, _solarize_threshold(m)),
    "SolarizeIncreasing": lambda im, m, neg, fill: _solarize(im, 256 - _solarize_threshold(m)),
    "SolarizeAdd": lambda im, m, neg, fill: _solarize_add(im, tf.minimum(128, _int(_level(m) * 110.0))),
    "Color": lambda im, m, neg, fill: _color(im, _enhance_arg(m)),
    "ColorIncreasing": lambda im, m, neg, fill: _color(im, _enhance_increasing_arg(m, neg)),
    "Contrast": lambda im, m, neg, fill: _contrast(im, _enhance_arg(m)),
    "ContrastIncreasing": lambda im, m, neg, fill: _contrast(im, _enhance_increasing_arg(m, neg)),
    "Brightness": lambda im, m, neg, fill: _brightness(im, _enhance_arg(m)),
    "BrightnessIncreasing": lambda im, m, neg, fill: _brightness(im, _enhance_increasing_arg(m, neg)),
    "Sharpness": lambda im, m, neg, fill: _sharpness(im, _enhance_arg(m)),
    "SharpnessIncreasing": lambda im, m, neg, fill: _sharpness(im, _enhance_increasing_arg(m, neg)),
    "ShearX": lambda im, m, neg, fill: _shear(im, m, neg, fill, axis=0),
    "ShearY": lambda im, m, neg, fill: _shear(im, m, neg, fill, axis=1),
    "TranslateXRel": lambda im, m, neg, fill: _translate(im, m, neg, fill, axis=0),
    "TranslateYRel": lambda im, m, neg, fill: _translate(im, m, neg, fill, axis=1),
}


@tf.autograph.experimental.do_not_convert  # plain TensorFlow ops: AutoGraph's conversion would only slow tracing
def _apply_op(image: tf.Tensor, name: str, magnitude, negate, fill: Sequence[int] = IMAGENET_FILL) -> tf.Tensor:
  """One of timm's ops at a given (already clipped) magnitude and sign: `AugmentOp(name)` once its coin and draws
  are made. For the tests, and the building block of `apply`."""
  # A Python float goes to float64 directly: tf.cast would make it a float32 constant first.
  magnitude = tf.cast(magnitude, tf.float64) if tf.is_tensor(magnitude) else tf.constant(magnitude, tf.float64)
  out = _OPS[name](image, magnitude, tf.cast(negate, tf.bool), fill)
  out = tf.reshape(out, tf.shape(image))
  out.set_shape(image.shape)
  return out


# ------------------------------------------------------------------------------------------------ the policy
def _check_seed(seed) -> tf.Tensor:
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64) or seed.shape.rank != 1 or seed.shape[0] not in (None, 2):
    raise errors.BadValue(f"a RandAugment seed must be an int32 (or int64) tensor of shape [2], got {seed!r}")
  return seed


@tf.autograph.experimental.do_not_convert
def _draw(spec: RandAugmentSpec, seed) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """Every random choice of one image, from `seed`: per layer [num_ops] the op's index in `spec.ops` (int32,
  uniform), whether it is applied (bool, probability `prob`), its magnitude (float64, as AugmentOp.__call__: m,
  gauss(m, mstd) or for mstd = inf uniform(0, m), clipped to [0, magnitude_max]) and the sign coin of the signed ops
  (bool, True = negative, probability 1/2). Each is a stream of its own split from (seed, this module's tag)."""
  seed = _check_seed(seed)
  keys = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, _SEED_TAG), 4)
  n = spec.num_ops
  # (TensorFlow's uniform integers are biased by about len(ops) / 2^32 when len(ops) is not a power of 2.)
  op_index = tf.random.stateless_uniform([n], keys[0], minval=0, maxval=len(spec.ops), dtype=tf.int32)
  applied = tf.random.stateless_uniform([n], keys[1], dtype=tf.float64) <= spec.prob
  if spec.magnitude_std == math.inf:
    magnitude = tf.random.stateless_uniform([n], keys[2], dtype=tf.float64) * spec.magnitude
  elif spec.magnitude_std > 0:
    magnitude = spec.magnitude + spec.magnitude_std * tf.random.stateless_normal([n], keys[2], dtype=tf.float64)
  else:
    magnitude = tf.fill([n], tf.constant(spec.magnitude, tf.float64))
  magnitude = tf.clip_by_value(magnitude, 0.0, float(spec.magnitude_max))
  negate = tf.random.stateless_uniform([n], keys[3], dtype=tf.float64) > 0.5
  return op_index, applied, magnitude, negate


@tf.autograph.experimental.do_not_convert
def apply(image: tf.Tensor, spec: RandAugmentSpec, seed: tf.Tensor) -> tf.Tensor:
  """timm's RandAugment on one uint8 [H, W, 3] image, every draw from `seed` (int32 [2]): `spec.num_ops` layers,
  each an op drawn uniformly (with replacement) from `spec.ops`, applied with probability `spec.prob` at a magnitude
  and sign of its own (`_draw`). Only the chosen op runs. Usable in a tf.data map function; the same (image, seed)
  gives the same output everywhere."""
  if not isinstance(spec, RandAugmentSpec):
    raise errors.BadValue(f"rand_augment.apply needs a RandAugmentSpec (see rand_augment.parse), got {spec!r}")
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8 or image.shape.rank != 3 or image.shape[-1] not in (None, 3):
    raise errors.BadValue(f"RandAugment works on uint8 [H, W, 3] images (before normalisation, as timm's PIL "
                          f"ops), got {image.dtype.name} {image.shape}")
  op_index, applied, magnitude, negate = _draw(spec, seed)
  for layer in range(spec.num_ops):
    current, m, neg = image, magnitude[layer], negate[layer]
    branches = [lambda name=name, current=current, m=m, neg=neg: _apply_op(current, name, m, neg, spec.fill)
                for name in spec.ops]
    branches.append(lambda current=current: current)  # not applied
    index = tf.where(applied[layer], op_index[layer], len(spec.ops))
    image = tf.switch_case(index, branches)
    image.set_shape(current.shape)
  return image
