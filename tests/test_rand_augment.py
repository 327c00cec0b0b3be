"""RandAugment (flyp_jax/data/rand_augment.py) against timm's own definitions, transcribed here with PIL.

timm itself cannot be installed here (it needs torchvision), so its op functions and level-to-argument functions
(timm/data/auto_augment.py at huggingface/pytorch-image-models aa4b5850c154) are transcribed below, a few lines
each, calling PIL exactly as timm does, with timm's `_randomly_negate` coin made a parameter. Every op must equal
them bit for bit (run inside a tf.data map function, where Grappler rewrites float arithmetic), the affine ones
included; the random draws must follow timm's distributions (op choice, per-op probability, magnitude noise, sign);
the whole `apply` must equal timm's chain of ops given the same draws.
"""

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from flyp_jax import errors
from flyp_jax.data import rand_augment as ra

FILL = (124, 116, 104)  # create_transform's img_mean for ImageNet's mean
AFFINE = dict(resample=Image.BICUBIC, fillcolor=FILL)  # AugmentOp's kwargs with create_transform's hparams


# ------------------------------------------------------------------------------ timm's ops, transcribed (PIL)
def timm_posterize(img, bits):
  # timm's posterize; bits 0 (PosterizeIncreasing at magnitude 10) with the lut of Pillow before 13, which raises
  if bits >= 8:
    return img
  if bits >= 1:
    return ImageOps.posterize(img, bits)
  return img.point([i & ~(2 ** (8 - bits) - 1) for i in range(256)] * 3)


def timm_solarize_add(img, add, thresh=128):
  lut = [min(255, i + add) if i < thresh else i for i in range(256)]
  return img.point(lut * 3)


TIMM_OPS = {
    "AutoContrast": lambda img: ImageOps.autocontrast(img),
    "Equalize": lambda img: ImageOps.equalize(img),
    "Invert": lambda img: ImageOps.invert(img),
    "Rotate": lambda img, degrees: img.rotate(degrees, **AFFINE),
    "Posterize": timm_posterize,
    "Solarize": lambda img, thresh: ImageOps.solarize(img, thresh),
    "SolarizeAdd": timm_solarize_add,
    "Color": lambda img, factor: ImageEnhance.Color(img).enhance(factor),
    "Contrast": lambda img, factor: ImageEnhance.Contrast(img).enhance(factor),
    "Brightness": lambda img, factor: ImageEnhance.Brightness(img).enhance(factor),
    "Sharpness": lambda img, factor: ImageEnhance.Sharpness(img).enhance(factor),
    "ShearX": lambda img, factor: img.transform(img.size, Image.AFFINE, (1, factor, 0, 0, 1, 0), **AFFINE),
    "ShearY": lambda img, factor: img.transform(img.size, Image.AFFINE, (1, 0, 0, factor, 1, 0), **AFFINE),
    "TranslateXRel": lambda img, pct: img.transform(img.size, Image.AFFINE, (1, 0, pct * img.size[0], 0, 1, 0),
                                                    **AFFINE),
    "TranslateYRel": lambda img, pct: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, pct * img.size[1]),
                                                    **AFFINE),
}


def negate_if(v, negate):
  return -v if negate else v


def enhance_increasing(level, negate):
  return (max(0.1, 1.0 + negate_if((level / 10.) * .9, negate)),)


TIMM_LEVEL_TO_ARG = {  # level = the clipped magnitude; _LEVEL_DENOM = 10
    "Rotate": lambda level, negate: (negate_if((level / 10.) * 30., negate),),
    "Posterize": lambda level, negate: (int((level / 10.) * 4),),
    "PosterizeIncreasing": lambda level, negate: (4 - int((level / 10.) * 4),),
    "Solarize": lambda level, negate: (min(256, int((level / 10.) * 256)),),
    "SolarizeIncreasing": lambda level, negate: (256 - min(256, int((level / 10.) * 256)),),
    "SolarizeAdd": lambda level, negate: (min(128, int((level / 10.) * 110)),),
    "Color": lambda level, negate: ((level / 10.) * 1.8 + 0.1,),
    "ColorIncreasing": enhance_increasing,
    "Contrast": lambda level, negate: ((level / 10.) * 1.8 + 0.1,),
    "ContrastIncreasing": enhance_increasing,
    "Brightness": lambda level, negate: ((level / 10.) * 1.8 + 0.1,),
    "BrightnessIncreasing": enhance_increasing,
    "Sharpness": lambda level, negate: ((level / 10.) * 1.8 + 0.1,),
    "SharpnessIncreasing": enhance_increasing,
    "ShearX": lambda level, negate: (negate_if((level / 10.) * 0.3, negate),),
    "ShearY": lambda level, negate: (negate_if((level / 10.) * 0.3, negate),),
    "TranslateXRel": lambda level, negate: (negate_if((level / 10.) * 0.45, negate),),
    "TranslateYRel": lambda level, negate: (negate_if((level / 10.) * 0.45, negate),),
}


def timm_op(image: np.ndarray, name: str, magnitude: float, negate: bool) -> np.ndarray:
  """timm's AugmentOp(name) after its coin and magnitude draw: NAME_TO_OP[name](img, *LEVEL_TO_ARG[name](m))."""
  base = name.replace("Increasing", "")
  args = TIMM_LEVEL_TO_ARG[name](magnitude, negate) if name in TIMM_LEVEL_TO_ARG else ()
  return np.asarray(TIMM_OPS[base](Image.fromarray(image), *args))


ALL_OPS = sorted(set(ra.RAND_TRANSFORMS) | set(ra.RAND_INCREASING_TRANSFORMS))


def test_op_lists_are_timms():
  assert ra.RAND_INCREASING_TRANSFORMS == (
      "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
      "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
      "TranslateXRel", "TranslateYRel")
  assert ra.RAND_TRANSFORMS == (
      "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
      "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
  assert ra.fill_for_mean(ra.IMAGENET_DEFAULT_MEAN) == FILL == ra.RandAugmentSpec().fill


# ------------------------------------------------------------------------------------------- the images
H, W = 29, 37  # not square: a width and a height swapped shows


def make_images() -> np.ndarray:
  """[4, H, W, 3]: random; a smooth gradient; a low-contrast random (autocontrast and equalize have work); two
  values in one channel and a constant in another (the degenerate histograms)."""
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:H, 0:W]
  gradient = np.clip(np.stack([x * 6 + 10, y * 7 + 40, x * 3 + y * 4], -1), 0, 255)
  low = rng.integers(60, 121, (H, W, 3))
  special = np.stack([np.where(rng.random((H, W)) < 0.3, 90, 200), np.full((H, W), 77), rng.integers(0, 256, (H, W))],
                     -1)
  return np.stack([rng.integers(0, 256, (H, W, 3)), gradient, low, special]).astype(np.uint8)


IMAGES = make_images()
MAGNITUDES = (0.0, 0.7, 2.5, 4.99, 5.0, 7.3, 9.0, 9.55, 10.0, 12.5)  # over 10: with a cap (mmax) over 10


def run_in_tf_data(fn, *columns):
  """fn applied to each row of `columns` inside a tf.data map function (2 parallel calls), as numpy."""
  ds = tf.data.Dataset.from_tensor_slices(tuple(np.asarray(c) for c in columns))
  return list(ds.map(fn, num_parallel_calls=2).as_numpy_iterator())


@pytest.mark.parametrize("name", ALL_OPS)
def test_each_op_equals_timm_with_pil_bit_for_bit(name):
  # Exact for all, the bicubic affine ops included: they repeat PIL's float64 arithmetic in its order. Measured
  # on 1.6 million affine output values (random magnitudes and sizes 20-70 px): 0 differ.
  cases = [(i, m, neg) for i in range(len(IMAGES)) for m in MAGNITUDES for neg in (False, True)]
  index, magnitude, negate = (np.array(c) for c in zip(*cases))
  images = tf.constant(IMAGES)
  ours = run_in_tf_data(lambda i, m, n: ra._apply_op(tf.gather(images, i), name, m, n, FILL), index, magnitude,
                        negate)
  for (i, m, neg), out in zip(cases, ours):
    expected = timm_op(IMAGES[i], name, float(m), bool(neg))
    differ = np.abs(out.astype(int) - expected)
    assert differ.max() == 0, (name, i, m, neg, int((differ > 0).sum()), int(differ.max()))


SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing", "ContrastIncreasing",
          "BrightnessIncreasing", "SharpnessIncreasing")


def test_ops_change_the_images_and_the_signed_ones_differ_by_sign():
  # The comparison above is not vacuous: every op changes some of the images, the signed ones differently with
  # either sign.
  images = tf.constant(IMAGES)
  for name in ALL_OPS:
    plus, minus = (ra._apply_op(images[2], name, 7.3, negate).numpy() for negate in (False, True))
    changed = [(ra._apply_op(images[i], name, 7.3, False).numpy() != IMAGES[i]).any() for i in range(len(IMAGES))]
    assert any(changed), name
    assert (plus != minus).any() == (name in SIGNED), name


def test_primitives_over_their_whole_argument_ranges():
  image = IMAGES[0]
  pil = Image.fromarray(image)
  for bits in range(0, 10):
    np.testing.assert_array_equal(ra._posterize(tf.constant(image), tf.constant(bits)).numpy(),
                                  np.asarray(timm_posterize(pil, bits)), err_msg=f"posterize {bits}")
  for thresh in (0, 1, 64, 127, 128, 200, 255, 256):
    np.testing.assert_array_equal(ra._solarize(tf.constant(image), tf.constant(thresh)).numpy(),
                                  np.asarray(ImageOps.solarize(pil, thresh)), err_msg=f"solarize {thresh}")
  for add in (0, 1, 55, 110, 128):
    np.testing.assert_array_equal(ra._solarize_add(tf.constant(image), tf.constant(add)).numpy(),
                                  np.asarray(timm_solarize_add(pil, add)), err_msg=f"solarize_add {add}")
  for factor in (0.0, 0.1, 0.37, 1.0, 1.5, 1.9, 3.0):  # inside [0, 1]: interpolation; outside: clipped
    for ours, cls in ((ra._color, ImageEnhance.Color), (ra._contrast, ImageEnhance.Contrast),
                      (ra._brightness, ImageEnhance.Brightness), (ra._sharpness, ImageEnhance.Sharpness)):
      np.testing.assert_array_equal(ours(tf.constant(image), tf.constant(factor, tf.float64)).numpy(),
                                    np.asarray(cls(pil).enhance(factor)), err_msg=f"{cls.__name__} {factor}")


def test_equalize_and_autocontrast_over_many_histograms():
  rng = np.random.default_rng(2)
  images = [rng.integers(0, 256, (32, 32, 3)), rng.integers(100, 108, (17, 23, 3)), rng.integers(0, 3, (40, 40, 3)),
            np.clip(rng.normal(128, 30, (64, 48, 3)), 0, 255), rng.integers(0, 256, (96, 96, 3)) // 37 * 37]
  steps_differ = False  # some channel where PIL's step (n - last) // 255 is not (n - last) // 256
  for image in (im.astype(np.uint8) for im in images):
    for name in ("Equalize", "AutoContrast"):
      np.testing.assert_array_equal(ra._apply_op(tf.constant(image), name, 0.0, False).numpy(),
                                    timm_op(image, name, 0.0, False), err_msg=f"{name} {image.shape}")
    for c in range(3):
      counts = np.bincount(image[..., c].ravel(), minlength=256)
      rest = counts.sum() - counts[np.nonzero(counts)[0][-1]]
      steps_differ |= rest // 255 != rest // 256
  assert steps_differ


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (3, 3), (4, 2)])
def test_tiny_images_as_pil(shape):
  # PIL's 3x3 filter copies images under 3 pixels a side; the affine ops clamp at both edges at once.
  image = np.random.default_rng(1).integers(0, 256, shape + (3,)).astype(np.uint8)
  for name in ("SharpnessIncreasing", "Rotate", "ShearX", "TranslateYRel", "Equalize", "AutoContrast"):
    ours = ra._apply_op(tf.constant(image), name, 7.3, True).numpy()
    np.testing.assert_array_equal(ours, timm_op(image, name, 7.3, True), err_msg=f"{name} {shape}")


def test_rotation_by_large_angles_matches_pils_fast_paths():
  # With a magnitude cap over 10 the angle can reach 90 and 180 degrees, where Image.rotate transposes instead.
  square = IMAGES[0][:, :H]
  for degrees in (90.0, 180.0, 270.0, -90.0, 45.0, 360.0):
    ours = ra._rotate(tf.constant(square), tf.constant(degrees, tf.float64), FILL).numpy()
    np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(square).rotate(degrees, **AFFINE)),
                                  err_msg=str(degrees))


# ----------------------------------------------------------------------------------------------- the draws
def draws(spec: ra.RandAugmentSpec, n: int, stream: int = 0):
  """The draws of seeds (i, stream), i < n, as numpy: op index, applied, magnitude, negate, each [n, num_ops]."""
  ds = tf.data.Dataset.range(n).map(lambda i: ra._draw(spec, tf.stack([tf.cast(i, tf.int32), stream])))
  out = next(iter(ds.batch(n)))
  return tuple(np.asarray(v) for v in out)


N = 4000
Z = 4.5  # intervals at 4.5 standard errors: a false alarm about once in 150,000 checks


def test_op_choice_is_uniform_over_the_list_and_independent_across_layers():
  spec = ra.parse(ra.REFERENCE_SPEC)
  op, _, _, _ = draws(spec, N)
  counts = np.bincount(op.ravel(), minlength=15)
  assert counts.shape == (15,)
  assert scipy.stats.chisquare(counts).pvalue > 1e-5, counts
  same = (op[:, 0] == op[:, 1]).mean()  # with replacement: 1/15 of the images draw one op twice
  assert abs(same - 1 / 15) < Z * math.sqrt(1 / 15 * 14 / 15 / N), same


def test_each_op_is_applied_with_probability_p_so_the_count_per_image_is_binomial():
  for spec_text, p in (("rand-m9-mstd0.5-inc1", 0.5), ("rand-n3-p0.2-inc1", 0.2)):
    spec = ra.parse(spec_text)
    _, applied, _, _ = draws(spec, N)
    assert abs(applied.mean() - p) < Z * math.sqrt(p * (1 - p) / applied.size), (spec_text, applied.mean())
    counts = np.bincount(applied.sum(axis=1), minlength=spec.num_ops + 1)
    expected = scipy.stats.binom.pmf(np.arange(spec.num_ops + 1), spec.num_ops, p) * N
    assert scipy.stats.chisquare(counts, expected).pvalue > 1e-5, (spec_text, counts, expected)
  assert not draws(ra.parse("rand-p0"), 200)[1].any()
  assert draws(ra.parse("rand-p1"), 200)[1].all()


def test_magnitude_is_gauss_m_mstd_clipped_to_the_cap():
  spec = ra.parse(ra.REFERENCE_SPEC)  # m 9, mstd 0.5, cap 10: 2.3% of the draws are clipped to 10
  _, _, magnitude, _ = draws(spec, N)
  m = magnitude.ravel()
  assert m.min() >= 0 and m.max() == 10.0
  clipped = scipy.stats.norm.sf(2.0)
  assert abs((m == 10.0).mean() - clipped) < Z * math.sqrt(clipped * (1 - clipped) / m.size), (m == 10.0).mean()
  # The clipped normal's mean and standard deviation (numerically, from the normal's density).
  grid = np.linspace(9 - 8 * 0.5, 10, 200001)
  density = scipy.stats.norm.pdf(grid, 9, 0.5) * (grid[1] - grid[0])
  mean = (grid * density).sum() + 10 * clipped
  std = math.sqrt(((grid - mean) ** 2 * density).sum() + (10 - mean) ** 2 * clipped)
  assert abs(m.mean() - mean) < Z * std / math.sqrt(m.size), (m.mean(), mean)
  assert abs(m.std() - std) < 0.05 * std, (m.std(), std)
  unclipped = m[m < 10]
  assert scipy.stats.kstest(unclipped, scipy.stats.truncnorm(-np.inf, 2.0, loc=9, scale=0.5).cdf).pvalue > 1e-5


def test_magnitude_without_noise_uniform_for_mstd_over_100_and_the_cap():
  assert (draws(ra.parse("rand-m7"), 50)[2] == 7.0).all()
  assert (draws(ra.parse("rand-m15"), 50)[2] == 10.0).all()  # the default cap, _LEVEL_DENOM
  assert (draws(ra.parse("rand-m15-mmax12"), 50)[2] == 12.0).all()
  uniform = draws(ra.parse("rand-m7-mstd101"), N)[2].ravel()  # timm: random.uniform(0, m)
  assert uniform.min() >= 0 and uniform.max() < 7
  assert scipy.stats.kstest(uniform, scipy.stats.uniform(0, 7).cdf).pvalue > 1e-5


def test_sign_is_negative_half_the_time():
  negate = draws(ra.parse(ra.REFERENCE_SPEC), N)[3]
  assert abs(negate.mean() - 0.5) < Z * math.sqrt(0.25 / negate.size), negate.mean()
  assert abs((negate[:, 0] == negate[:, 1]).mean() - 0.5) < Z * math.sqrt(0.25 / N)


def test_draws_are_a_function_of_the_seed():
  spec = ra.parse(ra.REFERENCE_SPEC)
  first, again, other = draws(spec, 300, 0), draws(spec, 300, 0), draws(spec, 300, 1)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[2], other[2])
  assert len({tuple(row) for row in first[2]}) == 300  # every seed its own magnitudes
  assert ra._draw(spec, tf.constant([3, 4], tf.int64))[2].shape == (2,)  # int64 seeds are accepted too


def test_bad_seeds_are_errors():
  spec = ra.parse(ra.REFERENCE_SPEC)
  for seed in (tf.constant([1, 2, 3]), tf.constant(1), tf.constant([1.0, 2.0])):
    with pytest.raises(errors.BadValue, match="seed"):
      ra._draw(spec, seed)


# ------------------------------------------------------------------------------------------------ apply
def timm_chain(image, spec, op, applied, magnitude, negate):
  """timm's RandAugment.__call__ given the draws: the chosen ops in turn, each skipped when not applied."""
  for layer in range(spec.num_ops):
    if applied[layer]:
      image = timm_op(image, spec.ops[op[layer]], float(magnitude[layer]), bool(negate[layer]))
  return image


@pytest.mark.parametrize("spec_text", [ra.REFERENCE_SPEC, "rand-n3-m6-mstd101-p0.8"])
def test_apply_is_timms_chain_of_ops_given_the_draws(spec_text):
  spec = ra.parse(spec_text)
  seeds = np.stack([np.arange(32, dtype=np.int32), np.full(32, 11, np.int32)], 1)
  image = IMAGES[0]
  ours = run_in_tf_data(lambda s: (ra.apply(tf.constant(image), spec, s), ra._draw(spec, s)), seeds)
  changed = 0
  for seed, (out, (op, applied, magnitude, negate)) in zip(seeds, ours):
    np.testing.assert_array_equal(out, timm_chain(image, spec, op, applied, magnitude, negate), err_msg=str(seed))
    changed += (out != image).any()
  assert 0 < changed < len(seeds) or spec.prob > 0.5  # some images left alone at p 0.5 (1 in 4 have no op)


def test_apply_is_deterministic_eager_or_in_parallel_tf_data_and_differs_across_seeds():
  spec = ra.parse(ra.REFERENCE_SPEC)
  image = IMAGES[1]
  seeds = np.stack([np.arange(24, dtype=np.int32), np.full(24, 5, np.int32)], 1)
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: ra.apply(tf.constant(image), spec, s),
                                                     num_parallel_calls=2)
  first, again = list(ds.as_numpy_iterator()), list(ds.as_numpy_iterator())
  eager = [ra.apply(tf.constant(image), spec, tf.constant(s)).numpy() for s in seeds[:3]]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(first, eager):
    np.testing.assert_array_equal(a, b)
  assert len({out.tobytes() for out in first}) >= 15  # 1 in 4 images have no op: most outputs are distinct


def test_apply_keeps_shape_and_dtype_and_checks_its_inputs():
  spec = ra.parse(ra.REFERENCE_SPEC)
  seed = tf.constant([1, 2])
  out = ra.apply(tf.constant(IMAGES[0]), spec, seed)
  assert out.dtype == tf.uint8 and out.shape == (H, W, 3)
  np.testing.assert_array_equal(ra.apply(tf.constant(IMAGES[0]), ra.RandAugmentSpec(num_ops=0), seed), IMAGES[0])
  with pytest.raises(errors.BadValue, match="uint8"):
    ra.apply(tf.constant(IMAGES[0], tf.float32), spec, seed)
  with pytest.raises(errors.BadValue, match="uint8"):
    ra.apply(tf.constant(IMAGES[0][..., :1]), spec, seed)
  with pytest.raises(errors.BadValue, match="RandAugmentSpec"):
    ra.apply(tf.constant(IMAGES[0]), ra.REFERENCE_SPEC, seed)


# ------------------------------------------------------------------------------------------------ parse
def test_parse_reads_the_reference_string_and_every_key():
  spec = ra.parse("rand-m9-mstd0.5-inc1")
  assert (spec.num_ops, spec.magnitude, spec.magnitude_std, spec.magnitude_max, spec.increasing, spec.prob) == (
      2, 9, 0.5, 10, True, 0.5)
  assert spec.ops == ra.RAND_INCREASING_TRANSFORMS and spec.fill == FILL
  spec = ra.parse("rand-n3-mmax12-p0.7-m5-mstd1.5")  # in any order
  assert (spec.num_ops, spec.magnitude, spec.magnitude_std, spec.magnitude_max, spec.increasing, spec.prob) == (
      3, 5, 1.5, 12, False, 0.7)
  assert spec.ops == ra.RAND_TRANSFORMS
  assert ra.parse("rand") == ra.RandAugmentSpec() == ra.RandAugmentSpec(num_ops=2, magnitude=10, prob=0.5)
  assert ra.parse("rand-mstd101").magnitude_std == math.inf and ra.parse("rand-mstd100").magnitude_std == 100
  assert ra.parse("rand-inc2").increasing  # timm: bool('2')


@pytest.mark.parametrize("text", ["", "rand-", "rand--m9", "rnd-m9", "RAND-m9", "m9-rand", "rand-m", "rand-x9",
                                  "rand-m9.5", "rand-m9x", "rand-m9-m8", "rand-inc0", "rand-mmax0", "rand-tweights",
                                  "rand-p1.5", "rand-n-1", "rand-m9 ", "rand-mstd.5"])
def test_parse_rejects_bad_strings_with_the_grammar(text):
  with pytest.raises(errors.BadValue) as error:
    ra.parse(text)
  message = str(error.value)
  assert repr(text) in message and "'rand-m9-mstd0.5-inc1'" in message and "m<int>" in message, message


def test_spec_checks_its_fields():
  for kwargs in ({"ops": ("Rotate", "Nope")}, {"ops": ()}, {"prob": -0.1}, {"prob": 1.5}, {"num_ops": -1},
                 {"num_ops": 1.5}, {"magnitude": -1}, {"magnitude_std": float("nan")}, {"magnitude_max": 0},
                 {"fill": (1, 2)}, {"fill": (1, 2, 300)}):
    with pytest.raises(errors.BadValue):
      ra.RandAugmentSpec(**kwargs)
  assert ra.RandAugmentSpec(ops=["Invert"]).ops == ("Invert",)
  assert ra.RandAugmentSpec(increasing=True).ops == ra.RAND_INCREASING_TRANSFORMS
