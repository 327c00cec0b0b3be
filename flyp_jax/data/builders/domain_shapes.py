"""`domain_shapes`: an offline, procedurally generated benchmark with real distribution shift.

Ten shape classes drawn in five visual domains (photo, sketch, cartoon, painting, clutter). A tiny CLIP is
contrastively pretrained on image-caption pairs from every domain (`pretrain`), then fine-tuned on labelled
photos only (`train`) and evaluated on photos (`test_photo`, in distribution) and on every other domain (out of
distribution). This reproduces, at CPU scale, what FLYP and WiSE-FT are about: fine-tuning on one domain raises
in-distribution accuracy and can lower out-of-distribution accuracy relative to zero-shot, and interpolating
the weights recovers it. See docs/domain_shapes.md.

Everything is generated locally from a fixed seed (no download): `tfds.load('domain_shapes')` works on a
machine without network and gives the same bytes on every build. Each example has its own random generator,
seeded by (seed, split, index), so splits never share images and a config's images do not depend on the
split sizes (the `small` config's images are the first ones of the default config's).

Usage:

  import flyp_jax.data.builders.domain_shapes  # registers the builder (flyp_jax.data.builders does too)
  ds = tfds.load('domain_shapes', split='test_sketch', data_dir=...)   # or 'domain_shapes/small'

Preview grid: `python -c "from flyp_jax.data.builders import domain_shapes as d; d.preview_grid('grid.png')"`.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Dict, Iterator, List, Tuple

import numpy as np
import tensorflow_datasets as tfds

from flyp_jax.data.builders import domain_shapes_render as render_lib

CLASSNAMES: List[str] = list(render_lib.CLASSNAMES)  # label order
DOMAINS: List[str] = list(render_lib.DOMAINS)  # domain label order
ID_DOMAIN = "photo"  # the domain of `train`, `validation` and `test_photo`
OOD_DOMAINS: List[str] = [d for d in DOMAINS if d != ID_DOMAIN]

# Zero-shot prompt templates (one '{}' for the class name), with the domain each describes (None: any). They
# cover every domain's wording so that their ensemble is not tuned to the ID domain; pretraining captions use
# each template on images of its domain, so zero-shot prompts are in-distribution text for the text tower.
_TEMPLATE_DOMAINS: Dict[str, str | None] = {
    "a photo of a {}.": "photo",
    "a picture of a {}.": "photo",
    "a sketch of a {}.": "sketch",
    "a drawing of a {}.": "sketch",
    "a cartoon {}.": "cartoon",
    "a cartoon of a {}.": "cartoon",
    "a painting of a {}.": "painting",
    "an oil painting of a {}.": "painting",
    "a cluttered photo of a {}.": "clutter",
    "a {} shape.": None,
    "a {}.": None,
}
TEMPLATES: List[str] = list(_TEMPLATE_DOMAINS)

# How each domain is named in a canonical caption: 'a clutter of a star' would not be English.
DOMAIN_PHRASES: Dict[str, str] = {
    "photo": "photo", "sketch": "sketch", "cartoon": "cartoon", "painting": "painting", "clutter": "cluttered photo",
}

SEED = 20230117  # fixed: the dataset is a function of this seed, the config and the code version
# Split ids feed the per-example seeds; fixed numbers (not list positions) so adding a split changes nothing.
SPLIT_IDS: Dict[str, int] = {
    "pretrain": 0, "train": 1, "validation": 2, "pretrain_val": 3,
    **{f"test_{d}": 10 + i for i, d in enumerate(DOMAINS)},
}
SPLITS: List[str] = list(SPLIT_IDS)
# Image-caption splits over every domain: `pretrain` trains the demo CLIP; `pretrain_val` (held out, never
# trained on) judges its zero-shot accuracy per domain without touching the test splits of the comparison.
PRETRAIN_SPLITS = ("pretrain", "pretrain_val")

_BATCH = 512  # examples rendered together: large enough to amortise numpy call overhead, small in memory


def canonical_caption(label: int, domain: str) -> str:
  """'a {domain} of a {class}.', the caption of the labelled splits."""
  return f"a {DOMAIN_PHRASES[domain]} of a {CLASSNAMES[label]}."


# ---------------------------------------------------------------------------------------------------------
# Pretraining captions. Varied on purpose: several words per domain, colours, backgrounds, sizes, positions,
# and some captions without the domain, so the text tower has to learn what words refer to, not one string per
# (class, domain). All facts in a caption are true of its image (colour, scene, size, position come from the
# sampled parameters).

_DOMAIN_WORDS = {
    "photo": ["photo", "picture", "photograph", "snapshot"],
    "sketch": ["sketch", "drawing", "pencil sketch", "doodle", "line drawing"],
    "cartoon": ["cartoon", "illustration", "clip art drawing", "comic drawing"],
    "painting": ["painting", "oil painting", "artwork", "painted picture"],
    "clutter": ["cluttered photo", "busy photo", "noisy photo", "messy picture"],
}
_STYLE_ADJECTIVES = {
    "photo": ["realistic", "shaded", "photographed"],
    "sketch": ["hand-drawn", "sketched", "pencil-drawn"],
    "cartoon": ["cartoon", "cartoonish", "flat"],
    "painting": ["painted", "brushy"],
    "clutter": ["occluded", "partly hidden", "cluttered"],
}
_STYLE_NOUNS = {
    "photo": ["photographic", "realistic"], "sketch": ["sketch", "pencil"], "cartoon": ["cartoon", "comic"],
    "painting": ["painting", "impressionist"], "clutter": ["cluttered", "noisy"],
}


def _a(phrase: str) -> str:
  """The phrase with its indefinite article."""
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _scene_phrases(domain: str, p: Dict) -> List[str]:
  if domain == "photo":
    return [render_lib.PHOTO_SCENES[p["scene"]][0]]
  if domain == "sketch":
    return ["on lined paper" if p["ruled"] else "on paper", "on a sheet of paper"]
  if domain == "cartoon":
    return ["on a plain background", "on a white background" if p["white_bg"] else "on a colored background"]
  if domain == "painting":
    return ["on canvas", "with visible brush strokes"]
  out = ["among other shapes"] if p["n_distractors"] else []
  if p["n_bars"]:
    out.append("partly hidden behind a bar")
  if p["crop"]:
    out.append("cut off at the edge")
  return out + ["with lots of noise"]


def _position(p: Dict) -> str:
  vertical = "top" if p["cy"] > 0.15 else "bottom" if p["cy"] < -0.15 else ""
  horizontal = "right" if p["cx"] > 0.15 else "left" if p["cx"] < -0.15 else ""
  if vertical and horizontal:
    return f"in the {vertical} {horizontal}"
  if vertical or horizontal:
    return f"at the {vertical or horizontal}"
  return "in the center"


def pretrain_caption(rng: np.random.Generator, label: int, domain: str, p: Dict) -> str:
  """A varied caption of the example with sampled parameters `p`, drawn with the example's generator."""
  pick = render_lib.pick
  cls = CLASSNAMES[label]
  dom = pick(rng, _DOMAIN_WORDS[domain])
  size = "small" if p["scale"] < 0.53 else ("large" if p["scale"] > 0.67 else "")
  if domain == "sketch":  # no fill colour: name the pen instead
    pen = render_lib.PEN_NAMES[p["pen"]]
    colored = f"{_a(pen)} drawing of a {cls}." if rng.random() < 0.5 else f"a {cls} drawn in {pen}."
  else:
    color = render_lib.PALETTE[p["color"]][0]
    colored = f"{_a(dom)} of {_a(color)} {cls}." if rng.random() < 0.75 else f"{_a(color)} {cls}."
  options = [  # (weight, caption); all are built (cheap) so the draws per example do not depend on the pick
      (3.0, f"{_a(dom)} of a {cls}."),
      (2.5, colored),
      (1.5, f"{_a(dom)} of a {cls} {pick(rng, _scene_phrases(domain, p))}."),
      (1.5, f"{_a(pick(rng, _STYLE_ADJECTIVES[domain]))} {cls}."),
      (1.0, f"a {cls} in {pick(rng, _STYLE_NOUNS[domain])} style."),
      (1.0, f"{_a(dom)} of a {cls} {_position(p)}."),
      (1.0 if size else 0.0, f"{_a(dom)} of {_a(size or 'medium')} {cls}."),  # weight 0 without a size
      (1.0, pick(rng, _DOMAIN_TEMPLATES[domain]).format(cls)),
      (0.4, f"a {cls}."),
      (0.2, cls),
  ]
  return options[render_lib.pick_weighted(rng, [w for w, _ in options])][1]


# The zero-shot templates that fit each domain.
_DOMAIN_TEMPLATES = {d: [t for t, td in _TEMPLATE_DOMAINS.items() if td in (d, None)] for d in DOMAINS}


# ---------------------------------------------------------------------------------------------------------
# Generation.


def encode_png(images: np.ndarray) -> List[bytes]:
  """RGB uint8 images [n, H, W, 3] -> PNG files, without PIL or TensorFlow (deterministic and fast).

  Rows are stored unfiltered (filter type 0): the images carry sensor, paper or canvas noise, on which PNG's
  prediction filters saved nothing (measured: Sub, Up and Paeth gave equal or larger files) but cost more
  time than zlib itself.
  """
  n, h, w, _ = images.shape
  rows = np.concatenate([np.zeros((n, h, 1), np.uint8), images.reshape(n, h, w * 3)], 2)

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
  tail = chunk(b"IEND", b"")
  return [head + chunk(b"IDAT", zlib.compress(r.tobytes(), 6)) + tail for r in rows]


def example_label_domain(split: str, index: int) -> Tuple[int, str]:
  """Class and domain of example `index` of `split`: balanced by construction, not sampled.

  Exact balance keeps accuracies comparable across splits and makes the small config balanced too.
  """
  label = index % len(CLASSNAMES)
  if split in PRETRAIN_SPLITS:  # every (class, domain) pair equally often
    return label, DOMAINS[(index // len(CLASSNAMES)) % len(DOMAINS)]
  if split.startswith("test_"):
    return label, split[len("test_"):]
  return label, ID_DOMAIN


def generate_batches(split: str, start: int, stop: int, image_size: int = 32,
                     color_bias: float = 0.5) -> Iterator[Dict[str, np.ndarray]]:
  """Examples [start, stop) of `split` in batches: dicts of arrays `index`, `image` (uint8 [n, H, W, 3]),
  `label`, `domain` (ids) and `caption` (str).

  The builder, the tests and the preview share this. An example depends only on (SEED, split, index,
  image_size, color_bias): its parameters come from its own generator and the rendering is per-pixel, so
  batching changes nothing.
  """
  split_id = SPLIT_IDS[split]
  for lo in range(start, stop, _BATCH):
    indices = np.arange(lo, min(lo + _BATCH, stop))
    labels, domains, params, captions = [], [], [], []
    for index in indices:
      rng = np.random.default_rng([SEED, split_id, int(index)])
      label, domain = example_label_domain(split, int(index))
      p = render_lib.sample_example(rng, label, domain, image_size, color_bias)
      captions.append(pretrain_caption(rng, label, domain, p) if split in PRETRAIN_SPLITS else
                      canonical_caption(label, domain))
      labels.append(label)
      domains.append(domain)
      params.append(p)
    images = np.empty((len(indices), image_size, image_size, 3), np.uint8)
    for domain in DOMAINS:  # one vectorised render per domain present in the batch
      rows = [i for i, d in enumerate(domains) if d == domain]
      if rows:
        images[rows] = render_lib.render(domain, [params[i] for i in rows], image_size)
    yield dict(index=indices, image=images, label=np.array(labels),
               domain=np.array([DOMAINS.index(d) for d in domains]), caption=np.array(captions, dtype=object))


def generate(split: str, start: int, stop: int, image_size: int = 32,
             color_bias: float = 0.5) -> Iterator[Tuple[int, Dict]]:
  """Yields (index, example) for indices [start, stop) of `split`, the image as a uint8 array."""
  for batch in generate_batches(split, start, stop, image_size, color_bias):
    for i, index in enumerate(batch["index"]):
      yield int(index), dict(image=batch["image"][i], label=int(batch["label"][i]),
                             domain=int(batch["domain"][i]), caption=batch["caption"][i])


@dataclasses.dataclass(eq=False)
class DomainShapesConfig(tfds.core.BuilderConfig):
  """Image size and split sizes; `color_bias` is the chance a photo shows its class's typical colour."""

  image_size: int = 32
  pretrain_size: int = 20000
  pretrain_val_size: int = 2000
  train_size: int = 5000
  validation_size: int = 1000
  test_size: int = 1000  # per domain
  color_bias: float = 0.5

  def split_sizes(self) -> Dict[str, int]:
    return {"pretrain": self.pretrain_size, "pretrain_val": self.pretrain_val_size, "train": self.train_size,
            "validation": self.validation_size,
            **{f"test_{d}": self.test_size for d in DOMAINS}}


class DomainShapes(tfds.core.GeneratorBasedBuilder):
  """Ten shapes in five visual domains; pretrain on all, fine-tune on photos, test on each domain."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "A held-out image-caption split `pretrain_val`; the `pretrain_200k` config. The other "
                            "splits are unchanged."}
  BUILDER_CONFIGS = [
      DomainShapesConfig(name="default", description="32x32 images; pretrain 20000, pretrain_val 2000, train "
                         "5000, validation 1000, 1000 per test domain."),
      DomainShapesConfig(name="small", description="32x32 images; pretrain 500, 100 in every other split "
                         "(tests and demos).", pretrain_size=500, pretrain_val_size=100, train_size=100,
                         validation_size=100, test_size=100),
      # The demo CLIP's pretraining data: the default config's images (the same first 20,000 pretraining pairs)
      # and 180,000 more pairs, so that long pretraining sees few repeats.
      DomainShapesConfig(name="pretrain_200k", description="As `default` with 200,000 pretraining pairs.",
                         pretrain_size=200000),
      DomainShapesConfig(name="default_64px", description="As `default` with 64x64 images.", image_size=64),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=" ".join(__doc__.split("\n\n")[:2]).replace("\n", " "),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASSNAMES),
            "domain": tfds.features.ClassLabel(names=DOMAINS),
            "caption": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: all data is generated
    return {split: self._generate_examples(split, n) for split, n in self.builder_config.split_sizes().items()}

  def _generate_examples(self, split: str, size: int):
    cfg = self.builder_config
    for batch in generate_batches(split, 0, size, cfg.image_size, cfg.color_bias):
      pngs = encode_png(batch["image"])  # bytes pass through TFDS's Image feature unchanged
      for i, index in enumerate(batch["index"]):
        yield int(index), dict(image=pngs[i], label=int(batch["label"][i]), domain=int(batch["domain"][i]),
                               caption=batch["caption"][i])


# ---------------------------------------------------------------------------------------------------------
# Preview grid for the docs.


def preview_grid(path: str, image_size: int = 32, per_cell: int = 2, zoom: int = 3) -> None:
  """Writes a PNG grid, rows = classes, columns = domains, `per_cell` test images each (labels need PIL)."""
  pad, label_w, head_h = 2, 78, 16
  cell = image_size * zoom
  cols = []
  for d in DOMAINS:
    col = []
    for k in range(len(CLASSNAMES)):
      # The first test images of class k in domain d (index k, k + 10, ...), as in the built split.
      imgs = [ex["image"] for _, ex in (next(generate(f"test_{d}", i, i + 1, image_size))
                                        for i in range(k, k + 10 * per_cell, 10))]
      row = [np.kron(im, np.ones((zoom, zoom, 1), np.uint8)) for im in imgs]
      col.append(np.concatenate(sum([[r, np.full((cell, pad, 3), 255, np.uint8)] for r in row], [])[:-1], 1))
    cols.append(np.concatenate(sum([[c, np.full((pad, c.shape[1], 3), 255, np.uint8)] for c in col], [])[:-1], 0))
  gap = np.full((cols[0].shape[0], 3 * pad, 3), 255, np.uint8)
  grid = np.concatenate(sum([[c, gap] for c in cols], [])[:-1], 1)
  canvas = np.full((grid.shape[0] + head_h, grid.shape[1] + label_w, 3), 255, np.uint8)
  canvas[head_h:, label_w:] = grid
  try:
    from PIL import Image, ImageDraw  # only for the text labels
  except ImportError:
    open(path, "wb").write(encode_png(canvas[None])[0])
    return
  im = Image.fromarray(canvas)
  draw = ImageDraw.Draw(im)
  col_w = cols[0].shape[1] + 3 * pad
  for j, d in enumerate(DOMAINS):
    draw.text((label_w + j * col_w + 4, 2), d + (" (ID)" if d == ID_DOMAIN else " (OOD)"), fill=(0, 0, 0))
  for k, name in enumerate(CLASSNAMES):
    draw.text((4, head_h + k * (cell + pad) + cell // 2 - 6), name, fill=(0, 0, 0))
  im.save(path)

