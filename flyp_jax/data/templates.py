"""Zero-shot prompt templates: format strings with exactly one `{}`, filled with a class name.

`get(name)` returns a fresh list of templates; a prompt is `template.format(classname)`, and a class's
text embedding is the mean over its templates (CLIP's prompt ensembling).

Sources (exact text and order):
  imagenet: OpenAI's 80 ImageNet templates (openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb,
    = open_clip `zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES`, = WiSE-FT/FLYP
    `src/templates/openai_imagenet_template.py`).
  objectnet: the ImageNet templates, as WiSE-FT/FLYP evaluate ObjectNet with the ImageNet zero-shot setup.
  cifar10: the 18 CIFAR-10 templates of openai/CLIP `data/prompts.md`.
  iwildcam: FLYP's `iwildcam_template` (2 templates; mlfoundations/wise-ft
    `src/templates/iwildcam_template.py`, repeated in locuslab/FLYP `datacreation_scripts/iwildcam.py`).
  fmow: FLYP's `fmow_template` (16 templates; mlfoundations/wise-ft `src/templates/fmow_template.py`,
    imported by locuslab/FLYP `src/templates/__init__.py`).
  patchcamelyon, sst2, caltech101, stanfordcars, flowers102: FLYP's `<name>_template` (locuslab/FLYP
    `src/templates/<name>_template.py`), the names FLYP's commands pass as --template.
  domain_shapes: `CLASSNAMES`/`TEMPLATES` of `flyp_jax.data.builders.domain_shapes`, imported on demand.

FLYP/WiSE-FT write templates as lambdas; every lambda here is `lambda c: f"...{c}..."` and became
"...{}...", except two FMoW templates that call `append_proper_article(c)` (WiSE-FT
`src/templates/utils.py`): it replaces "_" with " " and prepends "a " or "an " (by whether the first
letter is a vowel), e.g. "airport_hangar" -> "an airport hangar", while FMoW's other 14 templates use the
raw class name ("satellite photo of a airport_hangar."). Those two are kept as `ArticleTemplate`s, `str`
subclasses whose text is "satellite photo of {}." / "aerial photo of {}." and whose `.format(c)` applies
the article rule first, so `[t.format(c) for t in get("fmow")]` reproduces FLYP's prompts exactly.
Code that bypasses `.format` (`str.format(t, c)`, `t.replace("{}", c)`) gets the name without the
article; `render(name, classname)` is the supported way to build prompts.
"""

from __future__ import annotations

import importlib
from typing import Callable

from flyp_jax import errors, files


def append_proper_article(name: str) -> str:
  """WiSE-FT/FLYP `append_proper_article`: '_' -> ' ', then 'an ' before a vowel, else 'a '."""
  name = name.replace("_", " ")
  if name[0] in "aeiou":
    return "an " + name
  return "a " + name


class ArticleTemplate(str):
  """A template whose `{}` receives `append_proper_article(classname)` instead of the bare class name."""

  def format(self, *args, **kwargs) -> str:  # noqa: A003 - mirrors str.format on purpose
    if len(args) != 1 or kwargs:
      raise TypeError("ArticleTemplate.format takes exactly one positional argument: the class name")
    return str.format(self, append_proper_article(args[0]))

  def __reduce__(self):
    # Keep the subclass through pickling/deepcopy (str's default would give a plain str back).
    return (ArticleTemplate, (str(self),))


# openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb (80 templates, notebook order).
IMAGENET_TEMPLATES: tuple[str, ...] = (
  "a bad photo of a {}.",
  "a photo of many {}.",
  "a sculpture of a {}.",
  "a photo of the hard to see {}.",
  "a low resolution photo of the {}.",
  "a rendering of a {}.",
  "graffiti of a {}.",
  "a bad photo of the {}.",
  "a cropped photo of the {}.",
  "a tattoo of a {}.",
  "the embroidered {}.",
  "a photo of a hard to see {}.",
  "a bright photo of a {}.",
  "a photo of a clean {}.",
  "a photo of a dirty {}.",
  "a dark photo of the {}.",
  "a drawing of a {}.",
  "a photo of my {}.",
  "the plastic {}.",
  "a photo of the cool {}.",
  "a close-up photo of a {}.",
  "a black and white photo of the {}.",
  "a painting of the {}.",
  "a painting of a {}.",
  "a pixelated photo of the {}.",
  "a sculpture of the {}.",
  "a bright photo of the {}.",
  "a cropped photo of a {}.",
  "a plastic {}.",
  "a photo of the dirty {}.",
  "a jpeg corrupted photo of a {}.",
  "a blurry photo of the {}.",
  "a photo of the {}.",
  "a good photo of the {}.",
  "a rendering of the {}.",
  "a {} in a video game.",
  "a photo of one {}.",
  "a doodle of a {}.",
  "a close-up photo of the {}.",
  "a photo of a {}.",
  "the origami {}.",
  "the {} in a video game.",
  "a sketch of a {}.",
  "a doodle of the {}.",
  "a origami {}.",
  "a low resolution photo of a {}.",
  "the toy {}.",
  "a rendition of the {}.",
  "a photo of the clean {}.",
  "a photo of a large {}.",
  "a rendition of a {}.",
  "a photo of a nice {}.",
  "a photo of a weird {}.",
  "a blurry photo of a {}.",
  "a cartoon {}.",
  "art of a {}.",
  "a sketch of the {}.",
  "a embroidered {}.",
  "a pixelated photo of a {}.",
  "itap of the {}.",
  "a jpeg corrupted photo of the {}.",
  "a good photo of a {}.",
  "a plushie {}.",
  "a photo of the nice {}.",
  "a photo of the small {}.",
  "a photo of the weird {}.",
  "the cartoon {}.",
  "art of the {}.",
  "a drawing of the {}.",
  "a photo of the large {}.",
  "a black and white photo of a {}.",
  "the plushie {}.",
  "a dark photo of a {}.",
  "itap of a {}.",
  "graffiti of the {}.",
  "a toy {}.",
  "itap of my {}.",
  "a photo of a cool {}.",
  "a photo of a small {}.",
  "a tattoo of the {}.",
)

# openai/CLIP data/prompts.md, "CIFAR10".
CIFAR10_TEMPLATES: tuple[str, ...] = (
  "a photo of a {}.",
  "a blurry photo of a {}.",
  "a black and white photo of a {}.",
  "a low contrast photo of a {}.",
  "a high contrast photo of a {}.",
  "a bad photo of a {}.",
  "a good photo of a {}.",
  "a photo of a small {}.",
  "a photo of a big {}.",
  "a photo of the {}.",
  "a blurry photo of the {}.",
  "a black and white photo of the {}.",
  "a low contrast photo of the {}.",
  "a high contrast photo of the {}.",
  "a bad photo of the {}.",
  "a good photo of the {}.",
  "a photo of the small {}.",
  "a photo of the big {}.",
)

# FLYP/WiSE-FT iwildcam_template: `lambda c: f"a photo of {c}."`, `lambda c: f"{c} in the wild."`.
IWILDCAM_TEMPLATES: tuple[str, ...] = (
  "a photo of {}.",
  "{} in the wild.",
)

# FLYP/WiSE-FT fmow_template, in order. Entries 3 and 4 use append_proper_article (see module docstring).
FMOW_TEMPLATES: tuple[str, ...] = (
  "satellite photo of a {}.",
  "aerial photo of a {}.",
  ArticleTemplate("satellite photo of {}."),
  ArticleTemplate("aerial photo of {}."),
  "satellite photo of a {} in asia.",
  "aerial photo of a {} in asia.",
  "satellite photo of a {} in africa.",
  "aerial photo of a {} in africa.",
  "satellite photo of a {} in the americas.",
  "aerial photo of a {} in the americas.",
  "satellite photo of a {} in europe.",
  "aerial photo of a {} in europe.",
  "satellite photo of a {} in oceania.",
  "aerial photo of a {} in oceania.",
  "a photo of a {}.",
  "{}.",
)


# locuslab/FLYP (commit 215d5bb) src/templates/<name>_template.py, each `lambda c: f"...{c}..."` as "...{}...",
# in order; FLYP's datacreation_scripts/ caption the training images with the same templates.
PATCHCAMELYON_TEMPLATES: tuple[str, ...] = ("this is a photo of {}",)
SST2_TEMPLATES: tuple[str, ...] = ("a {} review of a movie.",)
CALTECH101_TEMPLATES: tuple[str, ...] = (
  "a photo of a {}.", "a painting of a {}.", "a plastic {}.", "a sculpture of a {}.", "a sketch of a {}.",
  "a tattoo of a {}.", "a toy {}.", "a rendition of a {}.", "a embroidered {}.", "a cartoon {}.",
  "a {} in a video game.", "a plushie {}.", "a origami {}.", "art of a {}.", "graffiti of a {}.",
  "a drawing of a {}.", "a doodle of a {}.", "a photo of the {}.", "a painting of the {}.", "the plastic {}.",
  "a sculpture of the {}.", "a sketch of the {}.", "a tattoo of the {}.", "the toy {}.", "a rendition of the {}.",
  "the embroidered {}.", "the cartoon {}.", "the {} in a video game.", "the plushie {}.", "the origami {}.",
  "art of the {}.", "graffiti of the {}.", "a drawing of the {}.", "a doodle of the {}.",
)
# The eight active entries (the file's commented-out ones are not templates).
STANFORDCARS_TEMPLATES: tuple[str, ...] = (
  "a photo of a {}.", "a photo of the {}.", "a photo of my {}.", "i love my {}!", "a photo of my dirty {}.",
  "a photo of my clean {}.", "a photo of my new {}.", "a photo of my old {}.",
)
FLOWERS102_TEMPLATES: tuple[str, ...] = ("a photo of a {}, a type of flower.",)


def _domain_shapes() -> tuple[str, ...]:
  # Imported lazily: the builder module pulls in TensorFlow and TFDS, which plain name look-ups do not need.
  module = importlib.import_module("flyp_jax.data.builders.domain_shapes")
  return tuple(module.TEMPLATES)


# CLIP's plain prompt (Radford et al. 2021, section 3.1.4: "A photo of a {label}." as the default), for a dataset of
# one's own that has no template set of its own.
PHOTO_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

_REGISTRY: dict[str, Callable[[], tuple[str, ...]]] = {
  "photo": lambda: PHOTO_TEMPLATES,
  "imagenet": lambda: IMAGENET_TEMPLATES,
  "objectnet": lambda: IMAGENET_TEMPLATES,
  "cifar10": lambda: CIFAR10_TEMPLATES,
  "iwildcam": lambda: IWILDCAM_TEMPLATES,
  "fmow": lambda: FMOW_TEMPLATES,
  "domain_shapes": _domain_shapes,
  "patchcamelyon": lambda: PATCHCAMELYON_TEMPLATES,
  "sst2": lambda: SST2_TEMPLATES,
  "caltech101": lambda: CALTECH101_TEMPLATES,
  "stanfordcars": lambda: STANFORDCARS_TEMPLATES,
  "flowers102": lambda: FLOWERS102_TEMPLATES,
}


def names() -> list[str]:
  """The template sets `get` accepts by name, sorted."""
  return sorted(_REGISTRY)


FORMS = (f"a set name ({', '.join(names())}), one template with one {{}} for the class name ('a photo of a "
         f"{{}}.'), or a text file with one template per line")


def get(name: str) -> list[str]:
  """A fresh list of templates, each a format string with exactly one `{}`.

  `name` is a registered set (`names()`; 'photo' is CLIP's plain "a photo of a {}."), one template (text with a
  `{}`), or a text file with one template per line.

  Raises:
    errors.BadValue: `name` is none of these, or a template has no `{}` or more than one (the message says which).
  """
  if name in _REGISTRY:
    return list(_REGISTRY[name]())
  if "{}" in name:
    found = [name]
  elif name and files.exists(name) and not files.isdir(name):
    with files.open_file(name) as f:
      found = [line.strip() for line in f.read().splitlines() if line.strip()]
  else:
    raise errors.BadValue(f"unknown template set {name!r} (and no such file); data.templates is {FORMS}")
  wrong = [t for t in found if t.count("{}") != 1 or t.replace("{}", "").count("{") or t.replace("{}", "").count("}")]
  if not found or wrong:
    raise errors.BadValue(f"data.templates={name!r}: " + (f"template {wrong[0]!r} must hold the class name's place "
                          f"as exactly one {{}} and no other braces" if wrong else "the file holds no template"))
  return found


def render(name: str, classname: str) -> list[str]:
  """The prompts for one class: `[t.format(classname) for t in get(name)]`, FLYP's exact text."""
  return [template.format(classname) for template in get(name)]
