"""Procedural drawing for the `domain_shapes` benchmark: shapes as signed distance fields, five rendering styles.

Pure numpy, no TensorFlow, so it can be used (and tested, and previewed) without building the dataset.

Every example is drawn in two steps:

1. `sample_example(rng, label, domain, image_size)` draws everything random about one example (pose, colours,
   textures, noise) from that example's own generator. Nothing else consumes randomness, so an example depends
   only on its seed, never on which other examples share its batch.
2. `render(domain, examples, image_size)` draws a list of examples of one domain at once. The drawing code
   works on `[n, H, W]` arrays (one image per leading index) so that a batch costs a few hundred numpy calls
   instead of a few hundred per image; that keeps the default build (31,000 images) to seconds.

Geometry: image coordinates run over [-1, 1] on both axes with y up; a shape is defined in its own local frame
at unit size (extent about 1) and placed by a centre, rotation, scale and a slight aspect stretch. Distances are
converted to pixels for anti-aliasing (`coverage = clip(0.5 - d_px, 0, 1)`), so the same parameters render
consistently at 32 and 64 pixels.
"""

from __future__ import annotations

import bisect
import colorsys
import itertools
from typing import Callable, Dict, List, Sequence

import numpy as np

# Label order of the benchmark. Names are single common words starting with a consonant, so prompts such as
# 'a photo of a {}.' stay grammatical; silhouettes are chosen to stay distinct at 32 px under rotation (a
# hexagon, for instance, is dropped: at 32 px it is indistinguishable from a circle).
CLASSNAMES = ["circle", "square", "triangle", "star", "heart", "cross", "ring", "crescent", "diamond", "house"]
DOMAINS = ["photo", "sketch", "cartoon", "painting", "clutter"]

# Classes with a canonical "up" (a heart or house is rarely drawn upside down) are rotated less.
_UPRIGHT = {"heart", "house"}

# Named object colours as (name, hue in degrees, saturation, value); names feed the captions.
PALETTE = [
    ("red", 0, 0.80, 0.85), ("orange", 28, 0.85, 0.95), ("yellow", 52, 0.80, 0.95), ("green", 120, 0.65, 0.70),
    ("teal", 172, 0.70, 0.65), ("blue", 215, 0.75, 0.85), ("purple", 275, 0.55, 0.70), ("pink", 330, 0.45, 0.95),
    ("brown", 25, 0.65, 0.45), ("white", 0, 0.0, 0.95),
]
_PALETTE_INDEX = {name: i for i, (name, *_) in enumerate(PALETTE)}
# In photos objects have typical colours (hearts are mostly red, stars yellow), as real objects do. This is
# the in-distribution shortcut that fine-tuning on photos can latch onto and that the other domains do not
# share: it is one of the reasons ID gains of fine-tuning need not transfer OOD (see docs/domain_shapes.md).
CLASS_COLORS = {
    "circle": "orange", "square": "blue", "triangle": "green", "star": "yellow", "heart": "red", "cross": "teal",
    "ring": "purple", "crescent": "white", "diamond": "pink", "house": "brown",
}

# Photo backgrounds: (caption phrase, colour A (h, s, v), colour B, stripes, low-frequency, mid-frequency, grain
# weights). One parametric texture covers them all (stripes give wood grain, low-frequency noise gives clouds),
# which keeps the photo renderer a single vectorised pass.
PHOTO_SCENES = [
    ("on a wooden table", (28, 0.60, 0.55), (22, 0.70, 0.35), 0.55, 0.20, 0.15, 0.10),
    ("on the grass", (100, 0.65, 0.55), (85, 0.75, 0.30), 0.00, 0.30, 0.45, 0.35),
    ("in the sky", (205, 0.55, 0.90), (0, 0.00, 1.00), 0.00, 0.75, 0.15, 0.02),
    ("on the sand", (40, 0.40, 0.85), (35, 0.45, 0.65), 0.10, 0.40, 0.30, 0.25),
    ("on a concrete floor", (0, 0.00, 0.65), (30, 0.05, 0.45), 0.00, 0.45, 0.35, 0.30),
]
PEN_NAMES = ["pencil", "ink", "blue ink"]


# ---------------------------------------------------------------------------------------------------------
# Small vectorised helpers. Arrays are [n, H, W] (or [n, H, W, 3] for colours) unless said otherwise.


def _grid(size: int):
  """Pixel-centre coordinates X, Y of shape [1, H, W] in [-1, 1], y pointing up."""
  c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
  return c[None, None, :].repeat(size, 1), -c[None, :, None].repeat(size, 2)


def _col(v) -> np.ndarray:
  """Per-example scalars [n] -> [n, 1, 1] for broadcasting against images."""
  return np.asarray(v, np.float32)[:, None, None]


def _rgb(v) -> np.ndarray:
  """Per-example colours [n, 3] -> [n, 1, 1, 3]."""
  return np.asarray(v, np.float32)[:, None, None, :]


def hsv_to_rgb(h, s, v) -> np.ndarray:
  """HSV (hue in degrees) -> RGB in [0, 1]; any matching shapes, result has a trailing axis of 3."""
  h = (np.asarray(h, np.float32) % 360.0) / 60.0
  s, v = np.asarray(s, np.float32), np.asarray(v, np.float32)
  k = (np.array([5.0, 3.0, 1.0], np.float32) + h[..., None]) % 6.0
  return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _mix(a, b, t):
  return a + (b - a) * t


def _sample_grid(grid: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
  """Smooth (smoothstep-weighted bilinear) lookup of per-example grids [n, gh, gw] at continuous indices."""
  n, gh, gw = grid.shape
  fy = np.clip(fy, 0.0, gh - 1.001)
  fx = np.clip(fx, 0.0, gw - 1.001)
  y0, x0 = fy.astype(np.int32), fx.astype(np.int32)
  ty, tx = fy - np.floor(fy), fx - np.floor(fx)  # not fy - y0: float32 - int32 would promote to float64
  ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
  # One flat gather per corner is several times faster than indexing with three broadcast index arrays.
  flat = grid.reshape(-1)
  i00 = (np.arange(n, dtype=np.int32) * (gh * gw))[:, None, None] + y0 * gw + x0
  top = _mix(flat[i00], flat[i00 + 1], tx)
  bottom = _mix(flat[i00 + gw], flat[i00 + gw + 1], tx)
  return _mix(top, bottom, ty)


def _interp_matrix(g: int, size: int) -> np.ndarray:
  """[size, g] smoothstep-bilinear weights taking g grid values to `size` pixel centres."""
  f = np.clip((np.arange(size, dtype=np.float32) + 0.5) / size * (g - 1), 0.0, g - 1.001)
  i = f.astype(np.int32)
  t = f - np.floor(f)
  t = t * t * (3 - 2 * t)
  m = np.zeros((size, g), np.float32)
  m[np.arange(size), i] = 1 - t
  m[np.arange(size), i + 1] = t
  return m


def _value_noise(grid: np.ndarray, size: int) -> np.ndarray:
  """Smooth noise [n, H, W] from per-example random grids [n, g, g] (g controls the feature size).

  Axis-aligned interpolation is separable, so it is two small matrix products instead of a gather.
  """
  m = _interp_matrix(grid.shape[1], size)
  return m @ grid @ m.T


def _streak_noise(grid: np.ndarray, angle: np.ndarray, X, Y) -> np.ndarray:
  """Noise stretched along `angle` (coarse along the stroke, fine across it): brush strokes, wood grain."""
  gu, gv = grid.shape[1], grid.shape[2]
  ca, sa = _col(np.cos(angle)), _col(np.sin(angle))
  u = X * ca + Y * sa
  v = -X * sa + Y * ca
  return _sample_grid(grid, (u + 1.45) / 2.9 * (gu - 1), (v + 1.45) / 2.9 * (gv - 1))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur over axes 1 and 2 (H, W), edges reflected; sigma in pixels."""
  r = max(1, int(np.ceil(2.5 * sigma)))
  k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma) ** 2)
  k /= k.sum()
  for axis in (1, 2):
    pad = [(0, 0)] * img.ndim
    pad[axis] = (r, r)
    p = np.pad(img, pad, mode="reflect")
    n = img.shape[axis]
    img = sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
  return img


def _coverage(d_px: np.ndarray, soft: float = 1.0) -> np.ndarray:
  """Anti-aliased inside-ness from a distance in pixels (negative inside); `soft` widens the edge."""
  return np.clip(0.5 - d_px / soft, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Shapes: signed distance functions in the local frame, after Inigo Quilez's 2D distance functions.


def _sd_polygon(px: np.ndarray, py: np.ndarray, verts: Sequence[Sequence[float]]) -> np.ndarray:
  """Exact signed distance to a closed polygon (any winding); negative inside."""
  v = np.asarray(verts, np.float32)
  d = (px - v[0, 0]) ** 2 + (py - v[0, 1]) ** 2
  s = np.ones_like(px)
  for i in range(len(v)):
    j = i - 1
    ex, ey = v[j, 0] - v[i, 0], v[j, 1] - v[i, 1]
    wx, wy = px - v[i, 0], py - v[i, 1]
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    bx, by = wx - ex * t, wy - ey * t
    d = np.minimum(d, bx * bx + by * by)
    c1, c2, c3 = py >= v[i, 1], py < v[j, 1], ex * wy > ey * wx
    flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)  # crossing test of the winding number
    s = np.where(flip, -s, s)
  return s * np.sqrt(d)


def _star_vertices(points: int, outer: float, inner: float) -> List[List[float]]:
  a = np.pi / 2 + np.arange(2 * points) * np.pi / points
  r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
  return np.stack([r * np.cos(a), r * np.sin(a)], 1).tolist()


_POLYGONS = {
    "square": [[-0.75, -0.75], [0.75, -0.75], [0.75, 0.75], [-0.75, 0.75]],
    "triangle": [[0.0, 1.0], [-0.92, -0.62], [0.92, -0.62]],
    "star": _star_vertices(5, 1.0, 0.42),
    "cross": [[-0.28, 0.95], [0.28, 0.95], [0.28, 0.28], [0.95, 0.28], [0.95, -0.28], [0.28, -0.28],
              [0.28, -0.95], [-0.28, -0.95], [-0.28, -0.28], [-0.95, -0.28], [-0.95, 0.28], [-0.28, 0.28]],
    "diamond": [[0.0, 1.0], [0.55, 0.0], [0.0, -1.0], [-0.55, 0.0]],
    "house": [[-0.62, -0.85], [0.62, -0.85], [0.62, 0.1], [0.9, 0.1], [0.0, 0.95], [-0.9, 0.1], [-0.62, 0.1]],
}


def _sd_heart(px, py):
  # Quilez's heart spans x in [-0.6, 0.6], y in [0, 1.1]; rescale and centre it to the common unit extent.
  k = 0.6
  x, y = np.abs(px) * k, py * k + 0.55
  upper = np.sqrt((x - 0.25) ** 2 + (y - 0.75) ** 2) - np.sqrt(2.0) / 4.0
  m = 0.5 * np.maximum(x + y, 0.0)
  lower = np.sqrt(np.minimum(x ** 2 + (y - 1.0) ** 2, (x - m) ** 2 + (y - m) ** 2)) * np.sign(x - y)
  return np.where(y + x > 1.0, upper, lower) / k


def _sd_shape(name: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
  r = np.sqrt(px * px + py * py)
  if name == "circle":
    return r - 0.85
  if name == "ring":
    return np.abs(r - 0.68) - 0.24
  if name == "crescent":
    x = px + 0.15  # the bite shifts the crescent's mass left; recentre it
    return np.maximum(np.sqrt(x * x + py * py) - 0.92, -(np.sqrt((x - 0.5) ** 2 + py * py) - 0.74))
  if name == "heart":
    return _sd_heart(px, py)
  return _sd_polygon(px, py, _POLYGONS[name])


def shape_distance(labels: np.ndarray, cx, cy, theta, scale, aspect, X, Y, size: int,
                   jitter: tuple | None = None) -> np.ndarray:
  """Signed distance in pixels [n, H, W] from each pixel to each example's shape.

  `labels`, `cx`, ... are per-example arrays [n]; `jitter` optionally displaces the local coordinates by
  ([n, H, W], [n, H, W]) fields (hand-drawn wobble, brush-ragged edges).
  """
  dx, dy = X - _col(cx), Y - _col(cy)
  c, s = _col(np.cos(theta)), _col(np.sin(theta))
  sx, sy = _col(scale) * _col(aspect), _col(scale) / _col(aspect)
  lx = (c * dx + s * dy) / sx
  ly = (-s * dx + c * dy) / sy
  if jitter is not None:
    lx, ly = lx + jitter[0], ly + jitter[1]
  d = np.empty(lx.shape, np.float32)
  labels = np.asarray(labels)
  for k in np.unique(labels):
    idx = labels == k
    d[idx] = _sd_shape(CLASSNAMES[k], lx[idx], ly[idx])
  # Distances are measured in the local frame; the smaller axis scale converts them conservatively.
  return d * np.minimum(sx, sy) * (size / 2.0)


# ---------------------------------------------------------------------------------------------------------
# Sampling: everything random about one example, drawn from that example's generator. Per-example parameters
# are scalars, so this is plain Python (colorsys, bisect) rather than numpy calls on 1-element arrays, which
# cost ten times more and dominated the build time.


def pick(rng: np.random.Generator, seq: Sequence):
  """A uniformly random element of `seq`."""
  return seq[int(rng.integers(len(seq)))]


def pick_weighted(rng: np.random.Generator, weights: Sequence[float]) -> int:
  """A random index with probability proportional to `weights`."""
  return bisect.bisect_right(list(itertools.accumulate(weights)), rng.random() * sum(weights))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
  """One HSV colour (hue in degrees) -> RGB float32 [3]."""
  return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v), np.float32)


def _pose(rng: np.random.Generator, label: int, smin: float, smax: float, crop: float = 0.0) -> Dict:
  scale = rng.uniform(smin, smax)
  span = 0.95 - scale + crop  # keep the shape inside the frame unless a crop is asked for
  limit = np.pi * 35 / 180 if CLASSNAMES[label] in _UPRIGHT else np.pi
  return dict(label=label, scale=scale, aspect=np.exp(rng.uniform(-0.12, 0.12)),
              theta=rng.uniform(-limit, limit), cx=rng.uniform(-span, span), cy=rng.uniform(-span, span))


def _color(rng: np.random.Generator, index: int, sat_boost: float = 0.0) -> np.ndarray:
  _, h, s, v = PALETTE[index]
  return _hsv(h + rng.uniform(-8, 8), min(max(s + sat_boost + rng.uniform(-0.08, 0.08), 0.0), 1.0),
                    min(max(v + rng.uniform(-0.08, 0.08), 0.0), 1.0))


def _sample_photo(rng, label, size, color_bias):
  p = _pose(rng, label, 0.45, 0.75)
  if rng.random() < color_bias:
    color = _PALETTE_INDEX[CLASS_COLORS[CLASSNAMES[label]]]
  else:
    color = int(rng.integers(len(PALETTE)))
  scene = int(rng.integers(len(PHOTO_SCENES)))
  _, a, b, *_ = PHOTO_SCENES[scene]
  light = rng.uniform(-np.pi, np.pi)
  p.update(
      color=color, rgb=_color(rng, color), scene=scene,
      bg_a=_hsv(a[0] + rng.uniform(-8, 8), a[1], a[2] * rng.uniform(0.85, 1.1)),
      bg_b=_hsv(b[0] + rng.uniform(-8, 8), b[1], b[2] * rng.uniform(0.85, 1.1)),
      grain_angle=rng.uniform(-0.4, 0.4) + (np.pi / 2 if rng.random() < 0.5 else 0.0),
      grain_freq=rng.uniform(5, 9), grain_grid=rng.random((3, 6)).astype(np.float32),
      low=rng.random((4, 4)).astype(np.float32), mid=rng.random((9, 9)).astype(np.float32),
      fine=rng.standard_normal((size, size), dtype=np.float32),
      light=light, shadow_len=rng.uniform(0.05, 0.12), shadow_soft=rng.uniform(1.0, 2.5),
      exposure=rng.uniform(0.85, 1.15), camera_noise=rng.uniform(0.01, 0.035),
      cam=rng.standard_normal((size, size, 3), dtype=np.float32))
  return p


def _sample_sketch(rng, label, size, color_bias):
  p = _pose(rng, label, 0.45, 0.75)
  pen = pick_weighted(rng, [0.6, 0.25, 0.15])
  pen_rgb = [_hsv(0, 0, rng.uniform(0.15, 0.35)), _hsv(0, 0, rng.uniform(0.02, 0.12)),
             _hsv(222, 0.7, rng.uniform(0.35, 0.55))][pen]
  paper_tint = 40.0 if rng.random() < 0.7 else 210.0
  p.update(
      pen=pen, pen_rgb=pen_rgb, paper=_hsv(paper_tint, rng.uniform(0.0, 0.08), rng.uniform(0.9, 1.0)),
      width=rng.uniform(0.9, 1.5), jitter=rng.uniform(0.03, 0.08),
      j1=rng.uniform(-1, 1, (4, 5, 5)).astype(np.float32), j2=rng.uniform(-1, 1, (4, 5, 5)).astype(np.float32),
      second_stroke=rng.random() < 0.7, pressure=rng.random((5, 5)).astype(np.float32),
      hatch=rng.random() < 0.5, hatch_angle=rng.uniform(0, np.pi), hatch_period=rng.uniform(2.5, 4.0),
      ruled=rng.random() < 0.25, ruled_lines=int(rng.integers(4, 7)), ruled_phase=rng.random(),
      grain=rng.standard_normal((size, size), dtype=np.float32))
  return p


def _sample_cartoon(rng, label, size, color_bias):
  p = _pose(rng, label, 0.45, 0.75)
  color = int(rng.integers(len(PALETTE)))
  white_bg = rng.random() < 0.3
  p.update(
      color=color, rgb=_color(rng, color, sat_boost=0.15), white_bg=white_bg,
      bg=_hsv(rng.uniform(0, 360), 0.0 if white_bg else rng.uniform(0.12, 0.35), rng.uniform(0.93, 1.0)),
      ground=rng.random() < 0.3, ground_y=rng.uniform(-0.7, -0.2), outline=rng.uniform(1.5, 2.4),
      glint=rng.random() < 0.6, drop_shadow=rng.random() < 0.3)
  return p


def _sample_painting(rng, label, size, color_bias):
  p = _pose(rng, label, 0.45, 0.75)
  color = int(rng.integers(len(PALETTE)))
  rgb = _color(rng, color, sat_boost=-0.1)
  bg_hue = rng.uniform(0, 360)
  # Painters separate figure from ground by value: a light object gets a darker ground and vice versa.
  lo, hi = (0.3, 0.6) if rgb @ np.array([0.3, 0.59, 0.11]) > 0.55 else (0.62, 0.92)
  p.update(
      color=color, rgb=rgb,
      canvas=_hsv(rng.uniform(30, 48), rng.uniform(0.15, 0.3), rng.uniform(0.8, 0.92)),
      bg1=_hsv(bg_hue, rng.uniform(0.2, 0.5), rng.uniform(lo, hi)),
      bg2=_hsv(bg_hue + rng.uniform(-60, 60), rng.uniform(0.2, 0.5), rng.uniform(lo, hi)),
      stroke_bg=rng.random((4, 14)).astype(np.float32), angle_bg=rng.uniform(-np.pi, np.pi),
      stroke_fg=rng.random((4, 14)).astype(np.float32), angle_fg=rng.uniform(-np.pi, np.pi),
      ragged=rng.uniform(-1, 1, (2, 4, 12)).astype(np.float32), blur=rng.uniform(0.5, 0.9),
      grain=rng.standard_normal((size, size), dtype=np.float32))
  return p


def _sample_clutter(rng, label, size, color_bias):
  p = _pose(rng, label, 0.5, 0.8, crop=0.35 if rng.random() < 0.5 else 0.0)
  # Whether the shape (extent about 0.9 of its scale) actually leaves the frame: captions say so only then.
  cut = max(abs(p["cx"]), abs(p["cy"])) + 0.9 * p["scale"] > 1.0
  color = int(rng.integers(len(PALETTE)))
  others = [k for k in range(len(CLASSNAMES)) if k != label]
  n_distractors = int(rng.integers(1, 4))
  distractors = []
  for _ in range(4):  # always draw 4 so the sample layout is fixed; only the first n_distractors are shown
    d = _pose(rng, pick(rng, others), 0.16, 0.3)
    d["cx"], d["cy"] = rng.uniform(-0.9, 0.9, 2)
    d["rgb"] = _hsv(rng.uniform(0, 360), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    distractors.append(d)
  bars = []
  for _ in range(2):
    bars.append(dict(angle=rng.uniform(-np.pi, np.pi), offset=rng.uniform(-0.35, 0.35),
                     half_width=rng.uniform(0.04, 0.1),
                     rgb=_hsv(rng.uniform(0, 360), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0))))
  n_bars = pick_weighted(rng, [0.3, 0.5, 0.2])
  p.update(
      color=color, rgb=_color(rng, color, sat_boost=0.2), crop=cut, n_distractors=n_distractors,
      distractors=distractors, n_bars=n_bars, bars=bars,
      blocks=rng.random((4, 4, 3)).astype(np.float32), noise=rng.uniform(0.03, 0.1),
      salt=rng.uniform(0.005, 0.03), light=rng.uniform(-np.pi, np.pi),
      gauss=rng.standard_normal((size, size, 3), dtype=np.float32), sp=rng.random((size, size), dtype=np.float32),
      sp_val=(rng.random((size, size)) < 0.5).astype(np.float32))
  return p


_SAMPLERS: Dict[str, Callable] = {
    "photo": _sample_photo, "sketch": _sample_sketch, "cartoon": _sample_cartoon,
    "painting": _sample_painting, "clutter": _sample_clutter,
}


def sample_example(rng: np.random.Generator, label: int, domain: str, image_size: int,
                   color_bias: float = 0.5) -> Dict:
  """All random parameters of one example; `color_bias` is the chance a photo uses its class's colour."""
  return _SAMPLERS[domain](rng, label, image_size, color_bias)


# ---------------------------------------------------------------------------------------------------------
# Rendering: one function per domain over a batch of sampled examples.


def _stack(examples: Sequence[Dict], key: str) -> np.ndarray:
  return np.stack([np.asarray(e[key]) for e in examples])


def _pose_args(examples: Sequence[Dict]):
  return [_stack(examples, k) for k in ("label", "cx", "cy", "theta", "scale", "aspect")]


def _render_photo(ex, size):
  X, Y = _grid(size)
  px = size / 32.0  # pixel-valued parameters are given for 32 px images
  # Background: one parametric texture, weights per scene (see PHOTO_SCENES).
  w = np.array([PHOTO_SCENES[e["scene"]][3:] for e in ex], np.float32)
  grain = _streak_noise(_stack(ex, "grain_grid"), _stack(ex, "grain_angle"), X, Y)
  ga = _col(_stack(ex, "grain_angle"))
  stripes = 0.5 + 0.5 * np.sin(2 * np.pi * _col(_stack(ex, "grain_freq")) * (-X * np.sin(ga) + Y * np.cos(ga))
                               / 2 + 4.0 * grain)
  low, mid = _value_noise(_stack(ex, "low"), size), _value_noise(_stack(ex, "mid"), size)
  fine = _stack(ex, "fine")
  t = (_col(w[:, 0]) * stripes + _col(w[:, 1]) * low + _col(w[:, 2]) * mid + _col(w[:, 3]) * (0.5 + 0.25 * fine))
  t = t / _col(w.sum(1))
  bg = _mix(_rgb(_stack(ex, "bg_a")), _rgb(_stack(ex, "bg_b")), t[..., None])
  # Directional light: brighter towards the light, vignette towards the corners.
  light = _stack(ex, "light")
  lx, ly = _col(np.cos(light)), _col(np.sin(light))
  bg = bg * (0.8 + 0.2 * (X * lx + Y * ly))[..., None] * (1.0 - 0.12 * (X * X + Y * Y))[..., None]
  # Soft shadow: the shape's distance field shifted away from the light, with a soft edge.
  args = _pose_args(ex)
  label, cx, cy, theta, scale, aspect = args
  shadow_len = _stack(ex, "shadow_len")
  d_shadow = shape_distance(label, cx - shadow_len * np.cos(light), cy - shadow_len * np.sin(light), theta,
                            scale, aspect, X, Y, size)
  shadow = 0.5 * _coverage(d_shadow, soft=2.0 * _col(_stack(ex, "shadow_soft")) * px)
  bg = bg * (1.0 - shadow)[..., None]
  # Object: shaded across its extent towards the light, darker rim, specular highlight.
  d = shape_distance(*args, X, Y, size)
  rel = ((X - _col(cx)) * lx + (Y - _col(cy)) * ly) / _col(scale)
  shade = 0.62 + 0.38 * np.clip(0.5 + 0.5 * rel, 0, 1)
  shade = shade * (1.0 - 0.3 * np.exp(np.minimum(d, 0.0) / (1.5 * px)))
  hx, hy = _col(cx) + 0.45 * _col(scale) * lx, _col(cy) + 0.45 * _col(scale) * ly
  spec = 0.55 * np.exp(-((X - hx) ** 2 + (Y - hy) ** 2) / (2 * (0.18 * _col(scale)) ** 2))
  obj = _rgb(_stack(ex, "rgb")) * shade[..., None]
  obj = _mix(obj, 1.0, spec[..., None])
  img = _mix(bg, obj, _coverage(d)[..., None])
  # Camera: exposure and sensor noise.
  img = img * _col(_stack(ex, "exposure"))[..., None]
  img = img + _col(_stack(ex, "camera_noise"))[..., None] * _stack(ex, "cam")
  return img


def _render_sketch(ex, size):
  X, Y = _grid(size)
  px = size / 32.0
  args = _pose_args(ex)
  amp = _col(_stack(ex, "jitter"))
  j1, j2 = _stack(ex, "j1"), _stack(ex, "j2")
  # Hand-drawn wobble: two independent smooth displacement fields, one per pass of the pen.
  d1 = shape_distance(*args, X, Y, size, jitter=(amp * _value_noise(j1[:, 0], size),
                                                 amp * _value_noise(j1[:, 1], size)))
  d2 = shape_distance(*args, X, Y, size, jitter=(amp * 1.3 * _value_noise(j2[:, 0], size) + amp * j2[:, 2, :1, :1],
                                                 amp * 1.3 * _value_noise(j2[:, 1], size) + amp * j2[:, 3, :1, :1]))
  width = _col(_stack(ex, "width")) * px
  pressure = _value_noise(_stack(ex, "pressure"), size)
  a1 = np.clip(width / 2 + 0.5 - np.abs(d1), 0, 1) * np.clip(0.55 + 0.7 * pressure, 0, 1)
  a2 = np.clip(width / 2 + 0.1 - np.abs(d2), 0, 1) * 0.55 * _col(_stack(ex, "second_stroke"))
  # Hatching inside the outline on some drawings: parallel lines clipped to the (wobbly) shape.
  ha = _col(_stack(ex, "hatch_angle"))
  u = (X * np.cos(ha) + Y * np.sin(ha)) * (size / 2) / (_col(_stack(ex, "hatch_period")) * px)
  lines = np.clip(1.0 - np.abs(u - np.round(u)) * 3.0, 0, 1)
  ah = lines * np.clip(-d1 / px - 0.8, 0, 1) * 0.45 * _col(_stack(ex, "hatch"))
  ink = 1.0 - (1.0 - a1) * (1.0 - a2) * (1.0 - ah)
  # Paper: tinted, with grain, sometimes faint blue ruled lines.
  paper = _rgb(_stack(ex, "paper")) * (1.0 + 0.025 * _stack(ex, "grain"))[..., None]
  r = (Y + 1) / 2 * _col(_stack(ex, "ruled_lines")) + _col(_stack(ex, "ruled_phase"))
  rule = np.clip(1.0 - np.abs(r - np.round(r)) * size / _col(_stack(ex, "ruled_lines")), 0, 1)
  rule = rule * 0.35 * _col(_stack(ex, "ruled"))
  paper = _mix(paper, np.array([0.55, 0.7, 0.95], np.float32), rule[..., None])
  return _mix(paper, _rgb(_stack(ex, "pen_rgb")), ink[..., None])


def _render_cartoon(ex, size):
  X, Y = _grid(size)
  px = size / 32.0
  args = _pose_args(ex)
  label, cx, cy, theta, scale, aspect = args
  bg = np.broadcast_to(_rgb(_stack(ex, "bg")), (len(ex), size, size, 3))
  ground = (Y < _col(_stack(ex, "ground_y"))) & _col(_stack(ex, "ground")).astype(bool)
  bg = np.where(ground[..., None], bg * 0.85, bg)
  # Hard, flat drop shadow on some images (cartoons have no soft light).
  ds = shape_distance(label, cx + 0.07, cy - 0.07, theta, scale, aspect, X, Y, size)
  bg = bg * (1.0 - 0.3 * _coverage(ds) * _col(_stack(ex, "drop_shadow")))[..., None]
  d = shape_distance(*args, X, Y, size)
  outline = _col(_stack(ex, "outline")) * px
  img = _mix(bg, _rgb(_stack(ex, "rgb")), _coverage(d)[..., None])
  # Glint: a small white ellipse in the object's upper left, only well inside the outline.
  c, s = np.cos(theta), np.sin(theta)
  gx, gy = cx + scale * (-0.3 * c - 0.3 * s), cy + scale * (-0.3 * s + 0.3 * c)
  g = ((X - _col(gx)) ** 2 + (Y - _col(gy)) ** 2) / (0.14 * _col(scale)) ** 2
  glint = (g < 1.0) & (d < -outline) & _col(_stack(ex, "glint")).astype(bool)
  img = np.where(glint[..., None], _mix(img, 1.0, 0.85), img)
  ring = np.clip(outline / 2 + 0.5 - np.abs(d), 0, 1)
  return _mix(img, 0.03, ring[..., None])


def _render_painting(ex, size):
  X, Y = _grid(size)
  px = size / 32.0
  # Background in broad strokes of two muted colours over a canvas ground.
  sb = _streak_noise(_stack(ex, "stroke_bg"), _stack(ex, "angle_bg"), X, Y)
  bg = _mix(_rgb(_stack(ex, "bg1")), _rgb(_stack(ex, "bg2")), np.clip(1.6 * sb - 0.3, 0, 1)[..., None])
  bg = _mix(bg, _rgb(_stack(ex, "canvas")), 0.15)
  # Object: ragged, soft-edged, its colour modulated by its own brush direction (impasto-like ridges).
  ragged = _stack(ex, "ragged")
  jitter = (0.09 * _streak_noise(ragged[:, 0], _stack(ex, "angle_fg"), X, Y),
            0.09 * _streak_noise(ragged[:, 1], _stack(ex, "angle_fg"), X, Y))
  d = shape_distance(*_pose_args(ex), X, Y, size, jitter=jitter)
  sf = _streak_noise(_stack(ex, "stroke_fg"), _stack(ex, "angle_fg"), X, Y)
  obj = _rgb(_stack(ex, "rgb")) * (0.78 + 0.4 * sf)[..., None]
  img = _mix(bg, obj, _coverage(d, soft=1.8 * px)[..., None])
  # Blurred colours, then the canvas weave on top (the weave is in the paint, not under it).
  blur = _col(_stack(ex, "blur"))[..., None]
  img = _mix(img, _blur(img, 1.0 * px), np.clip(blur, 0, 1))
  i = np.arange(size)
  weave = ((i[:, None] // max(1, round(px))) + (i[None, :] // max(1, round(px)))) % 2
  img = img * (1.0 + 0.05 * (weave[None].astype(np.float32) - 0.5) + 0.03 * _stack(ex, "grain"))[..., None]
  # A mild posterisation gives the flat dabs of paint.
  return np.round(img * 14.0) / 14.0


def _render_clutter(ex, size):
  X, Y = _grid(size)
  # Busy background: a coarse grid of random colour blocks.
  blocks = _stack(ex, "blocks")  # [n, 4, 4, 3]
  cell = (np.arange(size) * 4) // size
  img = blocks[:, cell][:, :, cell] * 0.4 + 0.3  # muted, so the object stays findable
  # Distractors: smaller shapes of other classes, behind the main object.
  for k in range(4):
    dist = [e["distractors"][k] for e in ex]
    show = _col([k < e["n_distractors"] for e in ex])
    d = shape_distance(*_pose_args(dist), X, Y, size)
    img = _mix(img, _rgb(_stack(dist, "rgb")), (_coverage(d) * show)[..., None])
  # Main object: flat colour with mild shading, possibly partly outside the frame.
  args = _pose_args(ex)
  label, cx, cy, theta, scale, aspect = args
  d = shape_distance(*args, X, Y, size)
  light = _stack(ex, "light")
  rel = ((X - _col(cx)) * _col(np.cos(light)) + (Y - _col(cy)) * _col(np.sin(light))) / _col(scale)
  obj = _rgb(_stack(ex, "rgb")) * (0.8 + 0.2 * rel)[..., None]
  img = _mix(img, obj, _coverage(d)[..., None])
  # Occluders: bars crossing near the object's centre, drawn in front of it.
  for k in range(2):
    bar = [e["bars"][k] for e in ex]
    show = _col([k < e["n_bars"] for e in ex])
    a = _col(_stack(bar, "angle"))
    dist = np.abs((X - _col(cx)) * -np.sin(a) + (Y - _col(cy)) * np.cos(a) - _col(_stack(bar, "offset"))
                  * _col(scale)) - _col(_stack(bar, "half_width"))
    img = _mix(img, _rgb(_stack(bar, "rgb")), (_coverage(dist * size / 2) * show)[..., None])
  # Heavy sensor noise and salt-and-pepper.
  img = img + _col(_stack(ex, "noise"))[..., None] * _stack(ex, "gauss")
  salt = (_stack(ex, "sp") < _col(_stack(ex, "salt")))[..., None]
  return np.where(salt, _stack(ex, "sp_val")[..., None], img)


_RENDERERS: Dict[str, Callable] = {
    "photo": _render_photo, "sketch": _render_sketch, "cartoon": _render_cartoon,
    "painting": _render_painting, "clutter": _render_clutter,
}


def render(domain: str, examples: Sequence[Dict], image_size: int) -> np.ndarray:
  """uint8 images [n, H, W, 3] of `examples` (from `sample_example`), all of one domain."""
  if not examples:
    return np.zeros((0, image_size, image_size, 3), np.uint8)
  img = _RENDERERS[domain](examples, image_size)
  return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
