"""Random erasing, mixup / CutMix and the soft-target cross-entropy (flyp_jax/augment.py) against timm's own code.

timm cannot be installed here (it needs torchvision), so the functions the reference calls are transcribed below into
numpy from huggingface/pytorch-image-models at commit aa4b5850c1543fa488abf260f18390eda46cf85d
(timm/data/random_erasing.py `RandomErasing._erase`; timm/data/mixup.py `one_hot`, `mixup_target`, `rand_bbox`,
`cutmix_bbox_and_lam`, `Mixup._params_per_batch`, `Mixup._mix_batch`; timm/loss/cross_entropy.py
`SoftTargetCrossEntropy`), line by line, with torch's tensor operations written in numpy and images in timm's
[C, H, W] layout. Where timm calls Python's `random` or numpy's `np.random`, the transcription calls an `rng`
argument: a `Replay` of the draws our functions used (the same random values into both, then equal outputs), or a
seeded generator (then the distributions are compared).
"""

from __future__ import annotations

import math
import random
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.stats

from flyp_jax import augment, errors, losses, parallel

# ---------------------------------------------------------------- timm, transcribed (commit aa4b585)


def timm_erase(img, chan, img_h, img_w, rng, get_pixels, probability, min_area=0.02, max_area=1 / 3, min_aspect=0.3,
               max_aspect=None, count=1):
  """`RandomErasing.__init__`'s settings and `RandomErasing._erase` (min_count = max_count = count); `get_pixels`
  stands for `_get_pixels(per_pixel, rand_color, (chan, h, w))` and is also given the box's corner."""
  max_aspect = max_aspect or 1 / min_aspect
  log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
  if rng.random() > probability:
    return
  area = img_h * img_w
  for _ in range(count):
    for attempt in range(10):
      target_area = rng.uniform(min_area, max_area) * area / count
      aspect_ratio = math.exp(rng.uniform(*log_aspect_ratio))
      h = int(round(math.sqrt(target_area * aspect_ratio)))
      w = int(round(math.sqrt(target_area / aspect_ratio)))
      if w < img_w and h < img_h:
        top = rng.randint(0, img_h - h)
        left = rng.randint(0, img_w - w)
        img[:, top:top + h, left:left + w] = get_pixels(chan, top, left, h, w)
        break


def timm_one_hot(x, num_classes, on_value=1., off_value=0.):
  out = np.full((len(x), num_classes), off_value, np.float32)
  out[np.arange(len(x)), x] = on_value  # torch's scatter_(1, x.view(-1, 1), on_value)
  return out


def timm_mixup_target(target, num_classes, lam=1., smoothing=0.0):
  off_value = smoothing / num_classes
  on_value = 1. - smoothing + off_value
  y1 = timm_one_hot(target, num_classes, on_value=on_value, off_value=off_value)
  y2 = timm_one_hot(target[::-1], num_classes, on_value=on_value, off_value=off_value)
  return y1 * np.float32(lam) + y2 * np.float32(1. - lam)


def timm_rand_bbox(img_shape, lam, rng, margin=0., count=None):
  ratio = np.sqrt(1 - lam)
  img_h, img_w = img_shape[-2:]
  cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
  margin_y, margin_x = int(margin * cut_h), int(margin * cut_w)
  cy = rng.randint(0 + margin_y, img_h - margin_y, size=count)
  cx = rng.randint(0 + margin_x, img_w - margin_x, size=count)
  yl = np.clip(cy - cut_h // 2, 0, img_h)
  yh = np.clip(cy + cut_h // 2, 0, img_h)
  xl = np.clip(cx - cut_w // 2, 0, img_w)
  xh = np.clip(cx + cut_w // 2, 0, img_w)
  return yl, yh, xl, xh


def timm_cutmix_bbox_and_lam(img_shape, lam, rng, correct_lam=True):
  yl, yu, xl, xu = timm_rand_bbox(img_shape, lam, rng)
  if correct_lam:
    bbox_area = (yu - yl) * (xu - xl)
    lam = 1. - bbox_area / float(img_shape[-2] * img_shape[-1])
  return (yl, yu, xl, xu), lam


def timm_params_per_batch(rng, mixup_alpha, cutmix_alpha, mix_prob, switch_prob):
  lam = 1.
  use_cutmix = False
  if rng.rand() < mix_prob:
    if mixup_alpha > 0. and cutmix_alpha > 0.:
      use_cutmix = rng.rand() < switch_prob
      lam_mix = rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha)
    elif mixup_alpha > 0.:
      lam_mix = rng.beta(mixup_alpha, mixup_alpha)
    elif cutmix_alpha > 0.:
      use_cutmix = True
      lam_mix = rng.beta(cutmix_alpha, cutmix_alpha)
    else:
      assert False, "One of mixup_alpha > 0., cutmix_alpha > 0., cutmix_minmax not None should be true."
    lam = float(lam_mix)
  return lam, use_cutmix


def timm_mix_batch(x, lam, use_cutmix, rng, correct_lam=True):
  """`Mixup._mix_batch` on x [N, C, H, W] in place, after `_params_per_batch` gave (lam, use_cutmix)."""
  if lam == 1.:
    return 1.
  if use_cutmix:
    (yl, yh, xl, xh), lam = timm_cutmix_bbox_and_lam(x.shape, lam, rng, correct_lam=correct_lam)
    x[:, :, yl:yh, xl:xh] = x[::-1][:, :, yl:yh, xl:xh]
  else:
    x_flipped = x[::-1] * np.float32(1. - lam)
    x *= np.float32(lam)
    x += x_flipped
  return lam


class Replay:
  """Stands for `random` / `np.random` in the transcriptions: hands out the draws our functions used, in the order
  timm asks for them. random(), rand(): the next of `random`; uniform(a, b): a + (b - a) * the next of `uniform`
  (Python's formula); randint(a, b, size=None): with `randint`, a + the next of those integers' uniforms mapped as
  `augment` maps them (both bounds included, as Python's), with `integers`, the next given integer (numpy's);
  beta(a, a): `betas[a]`."""

  def __init__(self, random=(), uniform=(), randint=(), integers=(), betas=None):
    self.queues = {"random": list(random), "uniform": list(uniform), "randint": list(randint),
                   "integers": list(integers)}
    self.betas = betas or {}

  def _next(self, name):
    return self.queues[name].pop(0)

  def random(self):
    return float(self._next("random"))

  rand = random

  def uniform(self, a, b):
    return a + (b - a) * float(self._next("uniform"))

  def randint(self, a, b, size=None):
    if self.queues["integers"]:
      return int(self._next("integers"))
    # float32, as augment._randint_inclusive computes it on the device: the same integer for the same uniform
    n = b - a
    return a + min(int(np.floor(np.float32(self._next("randint")) * np.float32(n + 1))), n)

  def beta(self, a, b):
    assert a == b
    return float(self.betas[a])


def to_chw(x):
  return np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, -3))


def to_hwc(x):
  return np.moveaxis(x, -3, -1)


# ---------------------------------------------------------------- random erasing: the same draws, the same output


SETTINGS = {
    "reference": dict(probability=0.25, min_area=0.02, max_area=1 / 3, min_aspect=0.3, max_aspect=None),
    "wide": dict(probability=0.7, min_area=0.1, max_area=0.9, min_aspect=0.5, max_aspect=4.0),
}


def _timm_erase_with_draws(images, draws, settings, mode):
  """timm's `_erase` on each image (in [C, H, W]) with our draws replayed; returns the images and every box."""
  b, height, width, chan = images.shape
  out = to_chw(images).copy()
  fill = np.asarray(draws.fill, np.float32)
  boxes = []
  for i in range(b):
    uniforms = np.stack([np.asarray(draws.area[i]), np.asarray(draws.aspect[i])], axis=1).reshape(-1)
    rng = Replay(random=[draws.apply[i]], uniform=uniforms, randint=[draws.top[i], draws.left[i]])
    seen = []

    def get_pixels(chan, top, left, h, w, i=i, seen=seen):
      seen.append((top, left, h, w))
      if mode == "pixel":  # the part of the image's N(0, 1) field the box covers: i.i.d. normal as timm's patch
        return to_chw(fill[i])[:, top:top + h, left:left + w]
      if mode == "rand":  # one colour per channel, [C, 1, 1] as timm's
        return to_chw(fill[i])
      return np.zeros((chan, 1, 1), np.float32)

    timm_erase(out[i], chan, height, width, rng, get_pixels, **settings)
    boxes.append(seen[0] if seen else (None, None, 0, 0))
  return to_hwc(out), boxes


@pytest.mark.parametrize("mode,setting,shape", [("pixel", "reference", (96, 12, 8, 3)),
                                                ("rand", "wide", (96, 8, 12, 3)),
                                                ("const", "reference", (48, 24, 24, 1))])
def test_random_erasing_equals_timm_given_the_same_draws(mode, setting, shape):
  settings = SETTINGS[setting]
  images = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  key = jax.random.key(1)
  draws = jax.device_get(augment.erasing_draws(key, shape, mode))
  got = jax.jit(lambda x, d: augment.erase_with_draws(x, d, **settings))(images, draws)
  boxes = jax.jit(lambda d: augment.erasing_boxes(d, shape[1], shape[2], **settings))(draws)
  want, want_boxes = _timm_erase_with_draws(images, draws, settings, mode)
  np.testing.assert_array_equal(np.asarray(got), want)
  top, left, box_h, box_w = (np.asarray(a) for a in boxes)
  for i, (t, l, h, w) in enumerate(want_boxes):
    assert (box_h[i], box_w[i]) == (h, w), i
    if h:
      assert (top[i], left[i]) == (t, l), i
  # The whole function draws from its key exactly these values.
  full = jax.jit(lambda x, k: augment.random_erasing(x, k, mode=mode, **settings))(images, key)
  np.testing.assert_array_equal(np.asarray(full), want)
  # The cases are there: images erased and left alone, attempts rejected before one was accepted, every attempt
  # rejected, and boxes that touch the bottom or right edge (randint's upper bound included).
  erased = box_h > 0
  assert 0 < erased.sum() < len(erased)
  accepted = [[(round(math.sqrt(a * r)) < shape[1]) and (round(math.sqrt(a / r)) < shape[2]) for a, r in zip(
      *_attempt_areas_and_aspects(draws, i, shape, settings))] for i in range(shape[0])]
  if setting == "wide":
    assert any(not row[0] and any(row) for row in accepted)
  assert np.any((top + box_h == shape[1]) & erased) or np.any((left + box_w == shape[2]) & erased)


def _attempt_areas_and_aspects(draws, i, shape, settings):
  max_aspect = settings["max_aspect"] or 1 / settings["min_aspect"]
  lo, hi = math.log(settings["min_aspect"]), math.log(max_aspect)
  areas = [(settings["min_area"] + (settings["max_area"] - settings["min_area"]) * float(u)) * shape[1] * shape[2]
           for u in draws.area[i]]
  aspects = [math.exp(lo + (hi - lo) * float(u)) for u in draws.aspect[i]]
  return areas, aspects


# ---------------------------------------------------------------- random erasing: distributions against timm's loop


def _timm_boxes(n, height, width, settings, seed):
  """timm's loop run n times with Python's seeded `random`: (erased [n] bool, top, left, h, w [n] int)."""
  rng = random.Random(seed)
  img = np.zeros((1, height, width), np.float32)
  out = np.zeros((n, 5), np.int64)
  for i in range(n):
    seen = []
    timm_erase(img, 1, height, width, rng, lambda c, t, l, h, w: seen.append((t, l, h, w)) or 0.0, **settings)
    if seen:
      out[i] = (1, *seen[0])
  return out[:, 0].astype(bool), out[:, 1], out[:, 2], out[:, 3], out[:, 4]


def _our_boxes(n, height, width, settings, seed):
  draws = augment.erasing_draws(jax.random.key(seed), (n, height, width, 1), "const")
  top, left, h, w = jax.jit(lambda d: augment.erasing_boxes(d, height, width, **settings))(draws)
  h, w = np.asarray(h), np.asarray(w)
  return h > 0, np.asarray(top), np.asarray(left), h, w


def _same_distribution_of_pairs(a, b, min_count=10):
  """Chi-square test of homogeneity of two samples of (h, w) pairs; rare pairs pooled. Returns the p-value."""
  keys = sorted(set(map(tuple, a)) | set(map(tuple, b)))
  counts = np.array([[sum(1 for x in map(tuple, s) if x == k) for k in keys] for s in (a, b)])
  common = counts.sum(0) >= min_count
  table = np.concatenate([counts[:, common], counts[:, ~common].sum(1, keepdims=True)], axis=1)
  table = table[:, table.sum(0) > 0]
  return scipy.stats.chi2_contingency(table)[1]


@pytest.mark.parametrize("height,width,n", [(224, 224, 20000), (12, 8, 8000)])
def test_random_erasing_boxes_are_distributed_as_timms_rejection_sampling(height, width, n):
  settings = SETTINGS["reference"]
  ours = _our_boxes(n, height, width, settings, seed=3)
  timms = _timm_boxes(n, height, width, settings, seed=3)
  for erased, *_ in (ours, timms):  # erased with probability 0.25 (every image finds a box in 10 attempts here)
    assert abs(erased.mean() - 0.25) < 0.02
  (e1, t1, l1, h1, w1), (e2, t2, l2, h2, w2) = [tuple(a[s[0]] for a in s) for s in (ours, timms)]
  assert np.all(w1 < width) and np.all(h1 < height) and np.all(t1 + h1 <= height) and np.all(l1 + w1 <= width)
  assert np.all(t1 >= 0) and np.all(l1 >= 0)
  if height == 224:
    # The area and aspect ratio drawn (before rounding h and w) lie in [0.02, 1/3] of the image and [0.3, 1/0.3].
    area = height * width
    assert np.all((h1 - 0.5) * (w1 - 0.5) <= area / 3 * (1 + 1e-6))
    assert np.all((h1 + 0.5) * (w1 + 0.5) >= 0.02 * area * (1 - 1e-6))
    assert np.all((h1 + 0.5) / (w1 - 0.5) >= 0.3) and np.all((h1 - 0.5) / (w1 + 0.5) <= 1 / 0.3)
    for x, y in ((h1 * w1 / area, h2 * w2 / area), (np.log(h1 / w1), np.log(h2 / w2))):
      assert scipy.stats.ks_2samp(x, y).pvalue > 1e-3
  else:
    # Small images: many attempts are rejected, so the boxes kept are those of timm's loop only if the rejection
    # rule (w < W and h < H, the first accepted attempt) is the same.
    assert _same_distribution_of_pairs(np.stack([h1, w1], 1), np.stack([h2, w2], 1)) > 1e-3
  # The corner, uniform over where the box fits (randint's upper bound included).
  for x, y in (((t1 + 0.5) / (height - h1 + 1), (t2 + 0.5) / (height - h2 + 1)),
               ((l1 + 0.5) / (width - w1 + 1), (l2 + 0.5) / (width - w2 + 1))):
    assert scipy.stats.ks_2samp(x, y).pvalue > 1e-3


def test_random_erasing_fills_as_its_mode_says():
  images = np.full((64, 16, 16, 3), 7.0, np.float32)
  out = {m: np.asarray(jax.jit(lambda x, k, m=m: augment.random_erasing(x, k, probability=1.0, mode=m))(
      images, jax.random.key(0))) for m in augment.ERASING_MODES}
  mask = out["const"] != 7.0
  assert mask.any(axis=(1, 2, 3)).all()  # probability 1: every image erased
  np.testing.assert_array_equal(out["const"][mask], 0.0)
  for m in ("pixel", "rand"):
    np.testing.assert_array_equal(out[m] != 7.0, mask)  # the same draws, the same boxes
  pixels = out["pixel"][mask]
  assert abs(pixels.mean()) < 0.05 and abs(pixels.std() - 1) < 0.05
  colours = np.stack([np.unique(out["rand"][i][mask[i]].reshape(-1, 3), axis=0) for i in range(64)])
  assert colours.shape == (64, 1, 3)  # one colour per image and channel
  np.testing.assert_array_equal(augment.random_erasing(images, jax.random.key(0), probability=0.0), images)


# ---------------------------------------------------------------- mixup / CutMix: the same draws, the same output


def _timm_mixup_per_group(images, labels, draws, num_classes, smoothing, correct_lam):
  """timm's `Mixup.__call__` (mode 'batch') on each group with that group's drawn parameters, as each GPU of the
  reference on its own batch."""
  groups = len(draws.lam)
  xs, ys = np.split(to_chw(images).copy(), groups), np.split(np.asarray(labels), groups)
  outs, targets = [], []
  for g in range(groups):
    rng = Replay(integers=[draws.cy[g], draws.cx[g]])
    lam = timm_mix_batch(xs[g], float(draws.lam[g]), bool(draws.use_cutmix[g]), rng, correct_lam)
    outs.append(xs[g])
    targets.append(timm_mixup_target(ys[g], num_classes, lam, smoothing))
  return to_hwc(np.concatenate(outs)), np.concatenate(targets)


def _crafted_draws():
  """Groups that show each case: mixup, CutMix with its box clipped at a corner and inside, not mixed, CutMix of a
  box too small to cut (lam near 1), CutMix with lam near 0 (the whole image)."""
  return augment.MixupDraws(lam=np.array([0.3, 0.4, 1.0, 0.55, 0.999, 0.01, 1.0, 0.7], np.float32),
                            use_cutmix=np.array([False, True, True, True, True, True, False, True]),
                            cy=np.array([3, 0, 5, 6, 2, 4, 1, 11]), cx=np.array([1, 9, 2, 5, 0, 5, 3, 0]))


@pytest.mark.parametrize("correct_lam", [True, False])
def test_mixup_cutmix_equals_timm_given_the_same_draws(correct_lam):
  groups, n, height, width, num_classes = 8, 6, 12, 10, 7
  rng = np.random.default_rng(0)
  images = rng.normal(size=(groups * n, height, width, 3)).astype(np.float32)
  labels = rng.integers(0, num_classes, groups * n)
  mix = jax.jit(lambda x, y, d: augment.mix_with_draws(x, y, d, num_classes, 0.1, correct_lam))
  draw = jax.jit(lambda k, prob: augment.mixup_draws(k, groups, height, width, prob=prob), static_argnums=1)
  drawn = [jax.device_get(draw(jax.random.key(s), 0.8)) for s in range(4)]
  for draws in [_crafted_draws()] + drawn:
    got_images, got_targets = mix(images, labels, draws)
    want_images, want_targets = _timm_mixup_per_group(images, labels, draws, num_classes, 0.1, correct_lam)
    np.testing.assert_allclose(np.asarray(got_images), want_images, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_targets), want_targets, rtol=0, atol=1e-6)
  all_draws = jax.tree.map(lambda *a: np.concatenate(a), *drawn)
  assert all_draws.use_cutmix.any() and (~all_draws.use_cutmix & (all_draws.lam < 1)).any()
  # The whole function draws from its key exactly these values.
  key = jax.random.key(5)
  full = jax.jit(lambda x, y, k: augment.mixup_cutmix(x, y, k, num_classes, groups=groups, correct_lam=correct_lam))(
      images, labels, key)
  want = mix(images, labels, draw(key, 1.0))
  for a, b in zip(full, want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cutmix_box_and_corrected_lambda_equal_timms():
  rng = np.random.default_rng(1)
  for height, width in ((224, 224), (12, 10), (7, 16)):
    lams = np.concatenate([rng.uniform(size=200), [0.0, 1e-6, 0.5, 0.999999, 1.0]]).astype(np.float32)
    cy, cx = rng.integers(0, height, lams.size), rng.integers(0, width, lams.size)
    for correct_lam in (True, False):
      box, lam = jax.jit(lambda l, y, x: augment.cutmix_box(l, y, x, height, width, correct_lam))(lams, cy, cx)
      for i in range(lams.size):
        want_box, want_lam = timm_cutmix_bbox_and_lam((3, height, width), float(lams[i]),
                                                      Replay(integers=[cy[i], cx[i]]), correct_lam)
        assert tuple(int(np.asarray(b)[i]) for b in box) == tuple(int(v) for v in want_box), (height, width, i)
        assert abs(float(lam[i]) - want_lam) <= 1e-6


@pytest.mark.parametrize("alphas", [(0.8, 1.0), (0.8, 0.0), (0.0, 1.0)])
def test_mixup_parameters_equal_timms_given_the_same_draws(alphas):
  mixup_alpha, cutmix_alpha = alphas
  rng = np.random.default_rng(2)
  apply_u, switch_u, lam_mixup, lam_cutmix = rng.uniform(size=(4, 400)).astype(np.float32)
  lam, use_cutmix = augment.mixup_params(apply_u, switch_u, lam_mixup, lam_cutmix, mixup_alpha, cutmix_alpha,
                                         prob=0.7, switch_prob=0.3)
  for i in range(400):
    replay = Replay(random=[apply_u[i], switch_u[i]], betas={mixup_alpha: lam_mixup[i], cutmix_alpha: lam_cutmix[i]})
    want_lam, want_cutmix = timm_params_per_batch(replay, mixup_alpha, cutmix_alpha, 0.7, 0.3)
    assert float(lam[i]) == np.float32(want_lam) and bool(use_cutmix[i]) == (want_cutmix and want_lam != 1.0), i


def test_without_an_alpha_nothing_is_mixed_and_the_targets_are_smoothed_labels():
  images = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32)
  labels = np.arange(8) % 5
  out, targets = jax.jit(lambda x, y, k: augment.mixup_cutmix(x, y, k, 5, 0.0, 0.0, groups=2))(
      images, labels, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(out), images)
  np.testing.assert_allclose(np.asarray(targets), 0.9 * np.eye(5)[labels] + 0.1 / 5, atol=1e-7)


# ---------------------------------------------------------------- mixup / CutMix: distributions


def _draws(groups, **kw):
  return jax.device_get(augment.mixup_draws(jax.random.key(kw.pop("seed", 0)), groups, 5, 7, **kw))


def test_lambda_is_beta_distributed_with_each_kinds_alpha():
  n = 4000
  for alpha, draws in ((0.8, _draws(n, mixup_alpha=0.8, cutmix_alpha=0.0)),
                       (1.0, _draws(n, mixup_alpha=0.0, cutmix_alpha=1.0))):
    lam = draws.lam.astype(np.float64)
    assert draws.use_cutmix.all() == (alpha == 1.0) and draws.use_cutmix.any() == (alpha == 1.0)
    want = scipy.stats.beta(alpha, alpha)
    assert abs(lam.mean() - want.mean()) < 4 * want.std() / math.sqrt(n)
    assert abs(lam.var() - want.var()) < 0.004  # Beta(0.8, 0.8): 0.0962, Beta(1, 1): 0.0833; SE about 0.001
    assert scipy.stats.kstest(lam, want.cdf).pvalue > 1e-3


def test_cutmix_is_chosen_with_switch_prob_and_each_kind_keeps_its_alpha():
  n = 4000
  draws = _draws(n, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.3, seed=1)
  cut = draws.use_cutmix
  assert abs(cut.mean() - 0.3) < 0.03
  assert scipy.stats.kstest(draws.lam[cut].astype(np.float64), scipy.stats.beta(1.0, 1.0).cdf).pvalue > 1e-3
  assert scipy.stats.kstest(draws.lam[~cut].astype(np.float64), scipy.stats.beta(0.8, 0.8).cdf).pvalue > 1e-3
  # The box centre: numpy's randint(0, H) and randint(0, W), the high end excluded.
  for centre, size in ((draws.cy, 5), (draws.cx, 7)):
    counts = np.bincount(centre, minlength=size)
    assert counts.size == size and scipy.stats.chisquare(counts).pvalue > 1e-3


def test_with_prob_half_of_the_groups_are_left_unmixed():
  draws = _draws(4000, prob=0.5, seed=2)  # both kinds
  unmixed = draws.lam == 1
  assert abs(unmixed.mean() - 0.5) < 0.03 and not draws.use_cutmix[unmixed].any()
  assert abs(draws.use_cutmix[~unmixed].mean() - 0.5) < 0.04
  # Through the whole function (mixup only: a CutMix box can be empty, leaving a mixed group unchanged).
  groups = 2000
  images = np.random.default_rng(0).normal(size=(2 * groups, 4, 4, 1)).astype(np.float32)
  labels = np.arange(2 * groups) % 3
  out, targets = jax.jit(lambda x, y, k: augment.mixup_cutmix(x, y, k, 3, cutmix_alpha=0.0, prob=0.5,
                                                             groups=groups))(images, labels, jax.random.key(3))
  unchanged = np.all(np.asarray(out) == images, axis=(1, 2, 3)).reshape(groups, 2).all(1)
  assert abs(unchanged.mean() - 0.5) < 0.04
  smoothed = np.all(np.isclose(np.asarray(targets), 0.9 * np.eye(3)[labels] + 0.1 / 3, atol=1e-7), axis=1)
  np.testing.assert_array_equal(smoothed.reshape(groups, 2).all(1), unchanged)


def _lambdas_from_targets(targets, labels, groups, smoothing=0.1):
  """Each row's lambda read back from its soft target: the weight on its own label's one-hot."""
  k = targets.shape[1]
  n = len(labels) // groups
  flipped = labels.reshape(groups, n)[:, ::-1].reshape(-1)
  off, on = smoothing / k, 1 - smoothing + smoothing / k
  y1, y2 = np.eye(k)[labels] * (on - off) + off, np.eye(k)[flipped] * (on - off) + off
  # targets = y2 + lam * (y1 - y2): least squares over the classes
  d = y1 - y2
  return np.sum((targets - y2) * d, axis=1) / np.sum(d * d, axis=1)


def test_each_group_gets_its_own_lambda_and_mixes_within_itself():
  groups, n = 8, 4
  images = np.random.default_rng(0).normal(size=(groups * n, 6, 6, 3)).astype(np.float32)
  labels = np.tile([0, 1, 2, 3], groups)  # mirrored pairs within a group have different labels
  out, targets = jax.jit(lambda x, y, k: augment.mixup_cutmix(x, y, k, 4, cutmix_alpha=0.0, groups=groups))(
      images, labels, jax.random.key(0))
  lam = _lambdas_from_targets(np.asarray(targets), labels, groups).reshape(groups, n)
  np.testing.assert_allclose(lam, lam[:, :1].repeat(n, 1), atol=1e-5)  # one lambda per group
  assert len(np.unique(np.round(lam[:, 0], 5))) == groups  # and each group its own
  x = images.reshape(groups, n, -1)
  want = x * lam[:, :, None] + x[:, ::-1] * (1 - lam[:, :, None])  # image i with image n - 1 - i of its group
  np.testing.assert_allclose(np.asarray(out).reshape(groups, n, -1), want, atol=1e-5)


# ---------------------------------------------------------------- sharded on 8 devices: local and equal


COLLECTIVES = re.compile(r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)")


@pytest.mark.parametrize("model", [1, 2])
def test_under_jit_a_batch_sharded_over_the_data_axis_stays_on_its_devices(model):
  mesh = parallel.make_mesh(model)
  groups = mesh.shape[parallel.DATA]
  sharding = parallel.data_sharding(mesh)
  rng = np.random.default_rng(0)
  images_np = rng.normal(size=(4 * groups, 16, 12, 3)).astype(np.float32)
  labels_np = rng.integers(0, 10, 4 * groups)
  images, labels = jax.device_put(images_np, sharding), jax.device_put(labels_np, sharding)
  key = jax.random.key(7)

  def augmented(x, y, k):
    k_erase, k_mix = jax.random.split(k)
    return augment.mixup_cutmix(augment.random_erasing(x, k_erase), y, k_mix, 10, groups=groups)

  step = jax.jit(augmented)
  hlo = step.lower(images, labels, key).compile().as_text()
  assert not COLLECTIVES.search(hlo), COLLECTIVES.search(hlo).group(0)  # no data moves between devices
  out, targets = step(images, labels, key)
  for x in (out, targets):
    assert x.sharding.is_equivalent_to(sharding, x.ndim)
  want_out, want_targets = jax.jit(augmented)(images_np, labels_np, key)  # the same on one device
  assert len(want_out.sharding.device_set) == 1
  np.testing.assert_array_equal(np.asarray(out), np.asarray(want_out))
  np.testing.assert_array_equal(np.asarray(targets), np.asarray(want_targets))
  assert np.any(np.asarray(out) != images_np)


# ---------------------------------------------------------------- soft-target cross-entropy


def test_cross_entropy_of_soft_targets_equals_timms_soft_target_cross_entropy_and_optax():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(16, 9)).astype(np.float32) * 3
  targets = rng.dirichlet(np.ones(9), 16).astype(np.float32)
  got = losses.cross_entropy(logits, targets)
  z = logits.astype(np.float64)
  log_softmax = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
  want = np.mean(np.sum(-targets * log_softmax, axis=-1))  # torch.sum(-target * F.log_softmax(x, -1), -1).mean()
  assert got.dtype == jnp.float32 and abs(float(got) - want) < 1e-6 * abs(want)
  np.testing.assert_allclose(float(got), float(jnp.mean(optax.softmax_cross_entropy(logits, targets))), rtol=1e-6)
  got_bf16 = losses.cross_entropy(jnp.asarray(logits, jnp.bfloat16), targets)
  assert got_bf16.dtype == jnp.float32 and abs(float(got_bf16) - want) < 0.05
  # Unmixed targets (lambda 1) with smoothing s: torch's label-smoothed cross-entropy (losses.cross_entropy).
  labels = rng.integers(0, 9, 16)
  smoothed = augment.soft_targets(labels, 1.0, 9, 0.1)
  np.testing.assert_allclose(float(losses.cross_entropy(logits, smoothed)),
                             float(losses.cross_entropy(logits, labels, 0.1)), rtol=1e-6)


# ---------------------------------------------------------------- settings


def test_mixup_settings_from_config(monkeypatch):
  config = ml_collections.ConfigDict(dict(mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)))
  settings = augment.MixupSettings.from_config(config)
  assert settings == augment.MixupSettings(0.8, 1.0, 1.0, 0.5) and settings.enabled
  assert not augment.MixupSettings().enabled and not augment.MixupSettings(0.8, prob=0.0).enabled
  calls = []
  monkeypatch.setattr(augment, "mixup_cutmix", lambda *args, **kwargs: calls.append((args, kwargs)))
  augment.MixupSettings(0.5, 0.0, 0.9, 0.2).apply("images", "labels", "key", 4, 0.1, groups=2)
  assert calls == [(("images", "labels", "key", 4, 0.5, 0.0, 0.9, 0.2, 0.1), {"groups": 2})]


@pytest.mark.parametrize("call,words", [
    (lambda x, y, k: augment.random_erasing(x, k, count=2), "count=2"),
    (lambda x, y, k: augment.random_erasing(x, k, mode="noise"), "mode"),
    (lambda x, y, k: augment.random_erasing(x, k, probability=1.5), "probability"),
    (lambda x, y, k: augment.random_erasing(x, k, min_area=0.5, max_area=0.2), "areas"),
    (lambda x, y, k: augment.random_erasing(x[0], k), "[B, H, W, C]"),
    (lambda x, y, k: augment.mixup_cutmix(x, y, k, 10, groups=3), "groups"),
    (lambda x, y, k: augment.mixup_cutmix(x, y, k, 10, mixup_alpha=-1.0), "mixup_alpha"),
    (lambda x, y, k: augment.mixup_cutmix(x, y, k, 10, switch_prob=2.0), "switch_prob"),
    (lambda x, y, k: augment.mixup_cutmix(x, y, k, 0), "num_classes"),
    (lambda x, y, k: augment.mixup_cutmix(x, y, k, 10, label_smoothing=1.0), "label_smoothing"),
    (lambda x, y, k: augment.mixup_cutmix(x, y[:2], k, 10), "labels"),
    (lambda x, y, k: augment.MixupSettings(prob=-0.1), "prob"),
])
def test_bad_settings_are_one_clear_sentence(call, words):
  with pytest.raises(errors.BadValue, match=re.escape(words)):
    call(np.zeros((4, 4, 4, 3), np.float32), np.arange(4), jax.random.key(0))
