"""Evaluation suites: named lists of datasets, in distribution (ID) and under distribution shift (OOD).

Each dataset names its TFDS builder and split, the class names and templates its zero-shot head is built
from, an optional projection of the head's logits onto the dataset's classes (ImageNet-R/A: 200 of the
1000 ImageNet classes; ObjectNet: 113), and its metrics.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from flyp_jax import errors

METRICS = ("top1", "top5", "macro_f1", "worst_group_top1", "xent")
LOWER_IS_BETTER = ("xent",)  # the metrics a smaller value of which is better (selection minimises them)


@dataclasses.dataclass(frozen=True)
class EvalDataset:
  """One dataset of a suite.

  name: the key results are reported under. tfds_name/split: where to read it. classnames/templates: keys
  of `flyp_jax.data.classnames` / `templates` for the zero-shot head. projection: key of
  `flyp_jax.data.label_maps` mapping head classes onto this dataset's labels (None: labels index the head).
  group_feature/num_groups/excluded_groups: the feature holding a group id (FMoW's region) for
  worst-group accuracy, how many groups there are, and which are left out of the worst case (WILDS excludes
  FMoW's 'Other' region). label_map: key of `label_maps.class_table` when the TFDS labels are not the classes
  one to one (Caltech101's background label is no class: its examples are not counted).
  """
  name: str
  tfds_name: str
  split: str
  ood: bool
  classnames: str
  templates: str
  metrics: tuple[str, ...] = ("top1", "top5")
  projection: Optional[str] = None
  group_feature: Optional[str] = None
  num_groups: int = 1
  excluded_groups: tuple[int, ...] = ()
  label_map: str = ""

  def __post_init__(self):
    unknown = set(self.metrics) - set(METRICS)
    if unknown:
      raise errors.BadValue(f"{self.name}: unknown metrics {sorted(unknown)}; known: {METRICS}")
    if "worst_group_top1" in self.metrics and not self.group_feature:
      raise errors.BadValue(f"{self.name}: worst_group_top1 needs a group_feature")


def _imagenet(name, tfds_name, split, ood, projection=None):
  return EvalDataset(name, tfds_name, split, ood, "imagenet", "imagenet", projection=projection)


_DOMAIN_SHAPES_OOD = ("sketch", "cartoon", "painting", "clutter")

SUITES: dict[str, tuple[EvalDataset, ...]] = {
    # FLYP / WiSE-FT: ImageNet validation, and five shifts.
    "imagenet": (
        _imagenet("imagenet", "imagenet2012", "validation", False),
        _imagenet("imagenet_v2", "imagenet_v2/matched-frequency", "test", True),
        _imagenet("imagenet_r", "imagenet_r", "test", True, projection="imagenet_r"),
        _imagenet("imagenet_sketch", "imagenet_sketch", "test", True),
        _imagenet("imagenet_a", "imagenet_a", "test", True, projection="imagenet_a"),
        _imagenet("objectnet", "objectnet", "test", True, projection="objectnet"),
    ),
    # WILDS: ID test and OOD test as WILDS defines them; FLYP reports macro-F1 for iWildCam and
    # worst-region accuracy for FMoW.
    "iwildcam": (
        EvalDataset("iwildcam_id", "wilds_iwildcam", "id_test", False, "iwildcam", "iwildcam",
                    metrics=("top1", "macro_f1")),
        EvalDataset("iwildcam_ood", "wilds_iwildcam", "test", True, "iwildcam", "iwildcam",
                    metrics=("top1", "macro_f1")),
    ),
    "fmow": tuple(
        EvalDataset(f"fmow_{kind}", "wilds_fmow", split, kind == "ood", "fmow", "fmow",
                    metrics=("top1", "worst_group_top1"), group_feature="region", num_groups=6,
                    excluded_groups=(5,))
        for kind, split in (("id", "id_test"), ("ood", "test"))),
    "cifar10": (
        EvalDataset("cifar10", "cifar10", "test", False, "cifar10", "cifar10"),
        EvalDataset("cifar10_1", "cifar10_1/v6", "test", True, "cifar10", "cifar10"),
    ),
    # The offline benchmark: ID = photo renderings, OOD = the other visual domains.
    "domain_shapes": (
        EvalDataset("domain_shapes_photo", "domain_shapes", "test_photo", False, "domain_shapes", "domain_shapes"),
        *(EvalDataset(f"domain_shapes_{d}", "domain_shapes", f"test_{d}", True, "domain_shapes", "domain_shapes")
          for d in _DOMAIN_SHAPES_OOD),
    ),
    # Held-out data for choosing a pretraining recipe of the offline benchmark, never its test splits: ID
    # validation photos, and the held-out image-caption split over every domain, scored per domain
    # (`domain_shapes_pretrain_val/group<k>_top1`, k indexing domain_shapes.DOMAINS).
    "domain_shapes_heldout": (
        EvalDataset("domain_shapes_validation", "domain_shapes", "validation", False, "domain_shapes",
                    "domain_shapes"),
        EvalDataset("domain_shapes_pretrain_val", "domain_shapes", "pretrain_val", True, "domain_shapes",
                    "domain_shapes", metrics=("top1", "worst_group_top1"), group_feature="domain", num_groups=5),
    ),
}

# FLYP's few-shot and transfer-learning datasets (locuslab/FLYP README, src/datasets/<name>.py): train on
# TRANSFER_SPLITS[name]["train"], select on "validation" (the reference's <Name>Val), report "test" (<Name>Test).
# patch_camelyon, oxford_flowers102 and rendered SST2 have the official three splits, as FLYP's copies do.
# StanfordCars: FLYP holds out 20% of cars196's train (datacreation_scripts/stanfordCars.py, sklearn's
# train_test_split with random_state=10, which cannot be repeated over TFDS records): here its last 20%; the test
# split is cars196's. Caltech101 has no official split: FLYP sends each image to train / val / test with
# probabilities 0.6 / 0.2 / 0.2 and no seed (datacreation_scripts/traintestsplit.py); here the same fractions of
# each TFDS split (records are in hashed order), so train is 60% of all images, as FLYP's is.
TRANSFER_SPLITS: dict[str, dict[str, str]] = {
    "patchcamelyon": {"train": "train", "validation": "validation", "test": "test"},
    "sst2": {"train": "train", "validation": "validation", "test": "test"},
    "caltech101": {"train": "train[:60%]+test[:60%]", "validation": "train[60%:80%]+test[60%:80%]",
                   "test": "train[80%:]+test[80%:]"},
    "stanfordcars": {"train": "train[:80%]", "validation": "train[80%:]", "test": "test"},
    "flowers102": {"train": "train", "validation": "validation", "test": "test"},
}
# name (= its class names and templates) -> (TFDS dataset, label map)
TRANSFER_DATASETS: dict[str, tuple[str, str]] = {
    "patchcamelyon": ("patch_camelyon", ""), "sst2": ("rendered_sst2", ""), "caltech101": ("caltech101", "caltech101"),
    "stanfordcars": ("cars196", ""), "flowers102": ("oxford_flowers102", ""),
}


def _transfer(name: str, split: str, dataset_name: str) -> EvalDataset:
  tfds_name, label_map = TRANSFER_DATASETS[name]
  return EvalDataset(dataset_name, tfds_name, TRANSFER_SPLITS[name][split], False, name, name,
                     metrics=("top1", "top5", "xent"), label_map=label_map)


SUITES.update({name: (_transfer(name, "test", f"{name}_test"),) for name in TRANSFER_DATASETS})

# The fraction of ImageNet's train split held out as its ID validation set (big_vision's `minival` does the
# same with 10,000 images): ImageNet's own validation split is this suite's ID test, on which FLYP and WiSE-FT
# report, so nothing may be chosen on it. Training presets read IMAGENET_TRAIN_SPLIT, which excludes it.
IMAGENET_VAL_SPLIT, IMAGENET_TRAIN_SPLIT = "train[98%:]", "train[:98%]"

# The held-out ID validation set of a suite: it picks the checkpoint a run reports (`eval.select_on`) and
# WiSE-FT's mixing coefficient, so that nothing is chosen on a test split.
VALIDATION: dict[str, EvalDataset] = {
    "imagenet": _imagenet("id_val", "imagenet2012", IMAGENET_VAL_SPLIT, False),
    "domain_shapes": EvalDataset("id_val", "domain_shapes", "validation", False, "domain_shapes", "domain_shapes"),
    "iwildcam": EvalDataset("id_val", "wilds_iwildcam", "id_val", False, "iwildcam", "iwildcam",
                            metrics=("top1", "macro_f1")),
    "fmow": EvalDataset("id_val", "wilds_fmow", "id_val", False, "fmow", "fmow",
                        metrics=("top1", "worst_group_top1"), group_feature="region", num_groups=6,
                        excluded_groups=(5,)),
    **{name: _transfer(name, "validation", "id_val") for name in TRANSFER_DATASETS},
}


# The headline ID metric of each suite, on its validation set: what a run's reported checkpoint is selected on
# (FLYP reports iWildCam by macro-F1 and FMoW by worst-region accuracy; top-1 elsewhere).
_SELECT_ON = {"iwildcam": "id_val/macro_f1", "fmow": "id_val/worst_group_top1"}


def higher_is_better(key: str) -> bool:
  """Whether a larger value of metric `key` ('id_val/top1', 'id_val/xent', ...) is better."""
  return key.rpartition("/")[2] not in LOWER_IS_BETTER


def select_on(suite: str) -> str:
  """The validation metric ('id_val/<metric>') that picks a run's reported checkpoint for `suite`."""
  return _SELECT_ON.get(suite, "id_val/top1")


# eval.suite=data: the suite is built from the config instead of this file's registry, for a dataset of one's own:
# ID test = data.dataset's eval.test_split, ID validation = its eval.val_split (default 'validation'), OOD = each
# entry of eval.ood ('SPLIT' of data.dataset, or 'DATASET:SPLIT' of another dataset with the same classes); all
# with data.classnames, data.templates and data.label_map.
DATA_SUITE = "data"


def get(name: str) -> tuple[EvalDataset, ...]:
  """The datasets of suite `name`."""
  if name not in SUITES:
    raise errors.BadValue(f"unknown evaluation suite {name!r}; known: {sorted(SUITES)}, or {DATA_SUITE!r} (built "
                          f"from data.dataset, eval.test_split, eval.val_split and eval.ood)")
  return SUITES[name]


def _label(dataset: str, split: str) -> str:
  """A results key for a split of a dataset given by name or path: 'my_images_test'."""
  base = dataset.rstrip("/").rsplit("/", 1)[-1] if "://" in dataset or dataset.startswith(("/", ".", "~")) else dataset
  return re.sub(r"[^A-Za-z0-9]+", "_", f"{base}_{split}").strip("_").lower()


def _of_data(config, dataset: str, split: str, ood: bool, name: str = "") -> EvalDataset:
  d = config.data
  return EvalDataset(name or _label(dataset, split), dataset, split, ood, d.classnames, d.templates,
                     label_map=d.label_map)


def _ood_entry(config, entry: str) -> EvalDataset:
  dataset, _, split = entry.rpartition(":")
  if not split or "/" in split:
    raise errors.BadValue(f"eval.ood entry {entry!r}: give 'SPLIT' (of data.dataset) or 'DATASET:SPLIT', e.g. "
                          f"'test_sketch' or '/data/my_images_night:test'")
  return _of_data(config, dataset or config.data.dataset, split, True)


def of_config(config) -> tuple[EvalDataset, ...]:
  """The datasets `config.eval.suite` evaluates (a registered suite, or the one built from the config)."""
  if config.eval.suite != DATA_SUITE:
    return get(config.eval.suite)
  datasets = (_of_data(config, config.data.dataset, config.eval.test_split, False),
              *(_ood_entry(config, e.strip()) for e in config.eval.ood.split(",") if e.strip()))
  names = [d.name for d in datasets]
  if len(set(names)) != len(names):
    raise errors.BadValue(f"eval.suite={DATA_SUITE!r}: the datasets' names {names} repeat; evaluate each split once")
  return datasets


def validation_of(config) -> Optional[EvalDataset]:
  """The ID validation set of `config.eval.suite` (None for a suite without one)."""
  if config.eval.suite == DATA_SUITE:
    return _of_data(config, config.data.dataset, config.eval.val_split or "validation", False, name="id_val")
  return VALIDATION.get(config.eval.suite)
