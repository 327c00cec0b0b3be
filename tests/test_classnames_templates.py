"""Class-name lists and prompt templates against their references (open_clip, FLYP/WiSE-FT, WILDS, CLIP)."""

from __future__ import annotations

import copy
import pickle
import re
import sys
import types

import pytest

from flyp_jax.data import classnames, label_maps, templates
from tests.references import load_open_clip_zero_shot_metadata

_DOMAIN_SHAPES = "flyp_jax.data.builders.domain_shapes"
_STATIC_TEMPLATE_SETS = ("imagenet", "objectnet", "cifar10", "iwildcam", "fmow")
_STATIC_CLASSNAME_LISTS = ("imagenet", "imagenet_r", "imagenet_a", "objectnet", "iwildcam", "fmow", "cifar10")


@pytest.fixture(scope="module")
def open_clip_metadata():
  return load_open_clip_zero_shot_metadata()


# ------------------------------------------------------------------------------------------- templates
def test_imagenet_templates_equal_open_clip(open_clip_metadata):
  expected = [t("{}") for t in open_clip_metadata.OPENAI_IMAGENET_TEMPLATES]
  got = templates.get("imagenet")
  assert len(got) == 80
  assert got == expected  # same text and order
  # Spot checks typed from the CLIP notebook, so a wrong reference cannot hide an error.
  assert got[0] == "a bad photo of a {}."
  assert got[35] == "a {} in a video game."
  assert got[-1] == "a tattoo of the {}."


def test_objectnet_uses_the_imagenet_templates():
  assert templates.get("objectnet") == templates.get("imagenet")


@pytest.mark.parametrize("name", _STATIC_TEMPLATE_SETS)
def test_every_template_has_exactly_one_placeholder(name):
  got = templates.get(name)
  assert got, name
  for t in got:
    assert isinstance(t, str)
    assert t.count("{}") == 1, t
    # No other format fields or stray braces that .format would choke on or swallow.
    assert re.sub(r"\{\}", "", t).count("{") == 0 and t.count("}") == 1, t
    assert "CLASS" in t.format("CLASS")


def test_cifar10_templates():
  got = templates.get("cifar10")
  assert len(got) == 18
  assert got[0] == "a photo of a {}." and got[8] == "a photo of a big {}." and got[-1] == "a photo of the big {}."
  assert len(set(got)) == 18


def test_iwildcam_templates_match_flyp():
  assert templates.get("iwildcam") == ["a photo of {}.", "{} in the wild."]
  assert templates.render("iwildcam", "cougar") == ["a photo of cougar.", "cougar in the wild."]


def _flyp_append_proper_article(name):
  # Independent copy of WiSE-FT/FLYP src/templates/utils.py append_proper_article.
  name = name.replace("_", " ")
  if name[0] in "aeiou":
    return "an " + name
  return "a " + name


# Independent copy of FLYP/WiSE-FT src/templates/fmow_template.py, lambdas and all.
_FLYP_FMOW_TEMPLATE = [
  lambda c: f"satellite photo of a {c}.",
  lambda c: f"aerial photo of a {c}.",
  lambda c: f"satellite photo of {_flyp_append_proper_article(c)}.",
  lambda c: f"aerial photo of {_flyp_append_proper_article(c)}.",
  lambda c: f"satellite photo of a {c} in asia.",
  lambda c: f"aerial photo of a {c} in asia.",
  lambda c: f"satellite photo of a {c} in africa.",
  lambda c: f"aerial photo of a {c} in africa.",
  lambda c: f"satellite photo of a {c} in the americas.",
  lambda c: f"aerial photo of a {c} in the americas.",
  lambda c: f"satellite photo of a {c} in europe.",
  lambda c: f"aerial photo of a {c} in europe.",
  lambda c: f"satellite photo of a {c} in oceania.",
  lambda c: f"aerial photo of a {c} in oceania.",
  lambda c: f"a photo of a {c}.",
  lambda c: f"{c}.",
]


def test_fmow_prompts_equal_flyp_for_every_class():
  got = templates.get("fmow")
  assert len(got) == 16
  for c in classnames.get("fmow"):
    expected = [t(c) for t in _FLYP_FMOW_TEMPLATE]
    assert templates.render("fmow", c) == expected
    assert [t.format(c) for t in got] == expected  # what the evaluator does
  assert templates.render("fmow", "airport_hangar")[2:4] == [
    "satellite photo of an airport hangar.", "aerial photo of an airport hangar."]
  assert templates.render("fmow", "barn")[2] == "satellite photo of a barn."


def test_article_templates_survive_copies():
  fmow = templates.get("fmow")
  for clone in (copy.deepcopy(fmow), pickle.loads(pickle.dumps(fmow)), list(fmow)):
    assert [t.format("office_building") for t in clone] == [t.format("office_building") for t in fmow]
    assert isinstance(clone[2], templates.ArticleTemplate)


def test_templates_get_returns_fresh_lists():
  a = templates.get("imagenet")
  a.append("junk {}")
  a[0] = "changed {}"
  b = templates.get("imagenet")
  assert len(b) == 80 and b[0] == "a bad photo of a {}."


def test_templates_unknown_name_lists_known_names():
  with pytest.raises(ValueError, match="imagenet") as e:
    templates.get("imagenet_simple")
  for name in _STATIC_TEMPLATE_SETS + ("domain_shapes",):
    assert name in str(e.value)


# ------------------------------------------------------------------------------------------ class names
def test_imagenet_classnames_equal_open_clip(open_clip_metadata):
  got = classnames.get("imagenet")
  assert got == list(open_clip_metadata.IMAGENET_CLASSNAMES)
  assert got[0] == "tench" and got[1] == "goldfish" and got[999] == "toilet paper"


@pytest.mark.parametrize("name,length", [("imagenet", 1000), ("imagenet_r", 200), ("imagenet_a", 200),
                                         ("objectnet", 113), ("iwildcam", 182), ("fmow", 62), ("cifar10", 10)])
def test_lengths(name, length):
  got = classnames.get(name)
  assert len(got) == length
  assert all(isinstance(c, str) and c for c in got)


@pytest.mark.parametrize("name", ["imagenet_r", "imagenet_a"])
def test_subset_classnames_follow_the_projection(name):
  imagenet = classnames.get("imagenet")
  assert classnames.get(name) == [imagenet[i] for i in label_maps.subset_indices(name)]


def test_subset_classnames_hand_checked():
  r, a = classnames.get("imagenet_r"), classnames.get("imagenet_a")
  assert r[:3] == ["goldfish", "great white shark", "hammerhead shark"]  # ImageNet 1, 2, 4
  assert r[-1] == "acorn"                                                # ImageNet 988
  assert a[:3] == ["stingray", "goldfinch", "junco"]                     # ImageNet 6, 11, 13
  assert a[-1] == "acorn"


def test_objectnet_classnames():
  got = classnames.get("objectnet")
  assert got == label_maps.objectnet_classnames()
  assert got[:4] == ["alarm clock", "backpack", "banana", "band aid"]
  assert got[-1] == "wok"
  # Folder order, not label order: 'full_sized_towel' holds "Bath towel", 't-shirt' sorts before 'teapot'.
  folders = label_maps.objectnet_folders()
  assert got[folders.index("full_sized_towel")] == "bath towel"
  assert folders.index("t-shirt") < folders.index("teapot") < folders.index("tv")
  assert len(set(got)) == 113


def test_iwildcam_classnames_hand_checked():
  got = classnames.get("iwildcam")
  # WILDS label y -> lower-cased `english` column of labels.csv, as FLYP builds it.
  assert got[:5] == ["empty", "white-lipped peccary", "central american agouti", "lowland paca", "cougar"]
  assert got[24] == "cattle cow bull"
  assert got[52] == "günther's dik-dik"
  assert got[82] == got[178] == "unknown bird"    # two WILDS categories, one English name
  assert got[153] == got[181] == "central american red brocket"
  assert got[172] == "motorcycle"
  assert all(c == c.lower() for c in got)


def test_fmow_classnames_hand_checked():
  got = classnames.get("fmow")
  assert got[:4] == ["airport", "airport_hangar", "airport_terminal", "amusement_park"]
  assert got[30] == "multi-unit_residential" and got[47] == "single-unit_residential"
  assert got[-1] == "zoo"
  assert got == sorted(got)  # WILDS lists the categories alphabetically
  assert len(set(got)) == 62


def test_cifar10_classnames():
  assert classnames.get("cifar10") == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                       "horse", "ship", "truck"]


def test_classnames_get_returns_fresh_lists():
  for name in _STATIC_CLASSNAME_LISTS:
    a = classnames.get(name)
    first = a[0]
    a[0] = "changed"
    a.clear()
    assert classnames.get(name)[0] == first


def test_classnames_unknown_name_lists_known_names():
  with pytest.raises(ValueError) as e:
    classnames.get("imagenet_sketchy")
  for name in _STATIC_CLASSNAME_LISTS + ("domain_shapes",):
    assert name in str(e.value)


# ------------------------------------------------------------------------- domain_shapes, loaded lazily
def test_domain_shapes_reads_the_builder_module(monkeypatch):
  fake = types.ModuleType(_DOMAIN_SHAPES)
  fake.CLASSNAMES = ["circle", "square"]
  fake.TEMPLATES = ["a {} shape.", "a drawing of a {}."]
  monkeypatch.setitem(sys.modules, _DOMAIN_SHAPES, fake)
  assert classnames.get("domain_shapes") == ["circle", "square"]
  assert templates.get("domain_shapes") == ["a {} shape.", "a drawing of a {}."]
  # Fresh copies: callers must not be able to change the builder's constants.
  classnames.get("domain_shapes").append("x")
  templates.get("domain_shapes").clear()
  assert fake.CLASSNAMES == ["circle", "square"] and len(fake.TEMPLATES) == 2


def test_domain_shapes_missing_builder_fails_only_when_asked(monkeypatch):
  # A None entry makes the import fail as if the module did not exist; the other lists keep working.
  monkeypatch.setitem(sys.modules, _DOMAIN_SHAPES, None)
  with pytest.raises(ImportError):
    classnames.get("domain_shapes")
  with pytest.raises(ImportError):
    templates.get("domain_shapes")
  assert len(templates.get("imagenet")) == 80 and len(classnames.get("cifar10")) == 10
