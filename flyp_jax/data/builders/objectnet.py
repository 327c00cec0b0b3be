"""`objectnet`: ObjectNet 1.0 restricted to the 113 classes that overlap ImageNet, as WiSE-FT evaluates it.

Which images, which labels: mlfoundations/wise-ft `src/datasets/objectnet.py` (which FLYP copies).
* Classes: `get_metadata` keeps the ObjectNet labels that are keys of `mappings/objectnet_to_imagenet_1k.json`
  (113 of them) and maps each to its image folder through `mappings/folder_to_objectnet_label.json`. Images in
  the other folders (200 classes without an ImageNet counterpart) are left out, as `ObjectNetDataset` drops them.
* Label order: `get_test_dataset` numbers classes by their SORTED FOLDER NAMES
  (`label_map = {name: idx for idx, name in enumerate(sorted(folders_to_ids))}`), not by label names; this
  builder does the same (CLASSES below), so its labels match `flyp_jax.data.label_maps.objectnet_folders()` and
  the logit projection built there. The ClassLabel names are the ObjectNet labels lower-cased, the class names
  WiSE-FT/FLYP prompt with (`ObjectNetBase.classnames`).
* Border: ObjectNet images carry a thin red border (1 pixel, per ObjectNet's README) that WiSE-FT removes with
  `crop`, `img.crop((2, 2, width - 2, height - 2))`: 2 pixels off every side. This builder applies that same crop
  (after converting to RGB, as torchvision's ImageFolder loader does before WiSE-FT's crop) and stores the
  result as PNG, so images read from TFDS equal what WiSE-FT's preprocessing receives.

The mapping files of the download are checked against CLASSES, so a different ObjectNet release fails loudly
instead of silently renumbering classes. The ImageNet indices each class projects from are
`flyp_jax.data.label_maps.objectnet_imagenet_indices()` (or `objectnet_projection(<mappings dir>)`).

Usage:

  import flyp_jax.data.builders.objectnet  # registers the builder
  tfds.builder('objectnet', data_dir=...).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=...))
  ds = tfds.load('objectnet', split='test', data_dir=...)
"""

from __future__ import annotations

import json
from typing import List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from flyp_jax.data import label_maps
from flyp_jax.data.builders import _manual

NAME = "objectnet"
ARCHIVE_FOLDER = "objectnet-1.0"
CROP = 2  # pixels WiSE-FT's `crop` removes from each side
# Extensions torchvision's ImageFolder (which WiSE-FT uses) accepts as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The 113 ObjectNet classes that overlap ImageNet-1k as (image folder, ObjectNet label), sorted by folder: the
# class order of WiSE-FT's ObjectNet dataset, kept in one table with their ImageNet indices.
CLASSES: Tuple[Tuple[str, str], ...] = tuple((folder, label) for folder, label, _ in label_maps.OBJECTNET_CLASSES)
FOLDERS: Tuple[str, ...] = tuple(folder for folder, _ in CLASSES)
CLASSNAMES: Tuple[str, ...] = tuple(label.lower() for _, label in CLASSES)  # ClassLabel names, class order

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download ObjectNet 1.0 (`objectnet-1.0.zip`, about 180 GB) from https://objectnet.dev/download.html after
accepting its licence, and unzip it into `manual_dir` with the password given there:
`unzip objectnet-1.0.zip -d MANUAL_DIR`. `manual_dir` must then contain `{ARCHIVE_FOLDER}/images/<folder>/<image>.png`
(one folder per ObjectNet class; only the 113 classes that overlap ImageNet are read),
`{ARCHIVE_FOLDER}/mappings/folder_to_objectnet_label.json` and
`{ARCHIVE_FOLDER}/mappings/objectnet_to_imagenet_1k.json` (the other mapping files, pytorch_to_imagenet_2012_id.json
and imagenet_to_label_2012_v2, are read by flyp_jax.data.label_maps.objectnet_projection); `manual_dir` may also be
the `{ARCHIVE_FOLDER}` folder itself.
"""

_CITATION = """\
@inproceedings{barbu2019objectnet,
  title={ObjectNet: A large-scale bias-controlled dataset for pushing the limits of object recognition models},
  author={Barbu, Andrei and Mayo, David and Alverio, Julian and Luo, William and Wang, Christopher and
          Gutfreund, Dan and Tenenbaum, Josh and Katz, Boris},
  booktitle={NeurIPS},
  year={2019}
}
"""


def check_mappings(mappings_dir: epath.Path) -> None:
  """Checks that the download's mapping files define exactly CLASSES (WiSE-FT's `get_metadata` rule).

  Raises:
    ManualDataError: the ImageNet-overlapping classes of the files are not CLASSES (another release, or edited
      files), or a label of objectnet_to_imagenet_1k.json has no folder.
  """
  instructions = MANUAL_DOWNLOAD_INSTRUCTIONS
  folder_path = mappings_dir / "folder_to_objectnet_label.json"
  imagenet_path = mappings_dir / "objectnet_to_imagenet_1k.json"
  label_to_folder = {label: folder for folder, label in json.loads(folder_path.read_text()).items()}
  labels = list(json.loads(imagenet_path.read_text()))
  unknown = [label for label in labels if label not in label_to_folder]
  if unknown:
    raise _manual.error(NAME, imagenet_path, f"names ObjectNet labels {unknown} that {folder_path} does not map "
                        "to a folder", instructions)
  found = sorted((label_to_folder[label], label) for label in labels)
  if found != list(CLASSES):
    missing = sorted(set(CLASSES) - set(found))
    extra = sorted(set(found) - set(CLASSES))
    raise _manual.error(NAME, mappings_dir, f"defines other ImageNet-overlapping classes than ObjectNet 1.0 "
                        f"(missing {missing}, unexpected {extra})", instructions)


def list_images(images_dir: epath.Path) -> List[Tuple[str, str, int]]:
  """(folder, file name, label) of every image of the 113 classes, sorted by folder then file name.

  Only files directly in a class folder count (WiSE-FT's label is the image's parent folder). Hidden files (such
  as macOS '._x.png' resource forks in re-zipped copies) are skipped: they are not images.
  """
  entries = []
  missing = []
  for label, folder in enumerate(FOLDERS):
    folder_dir = images_dir / folder
    if not folder_dir.is_dir():
      missing.append(folder)
      continue
    for path in sorted(folder_dir.iterdir(), key=lambda p: p.name):
      if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or path.is_dir():
        continue
      entries.append((folder, path.name, label))
  if missing:
    # WiSE-FT would evaluate such a download without complaint; a partial extraction is the likely cause.
    logging.warning("%s: %d of the %d class folders are missing under %s (e.g. %s); those classes have no "
                    "images.", NAME, len(missing), len(FOLDERS), images_dir, missing[:3])
  return entries


def crop_border(image: np.ndarray) -> np.ndarray:
  """WiSE-FT's `crop`: `image` [H, W, C] without its outer CROP pixels on every side."""
  return image[CROP:image.shape[0] - CROP, CROP:image.shape[1] - CROP]


def load_cropped(data: bytes) -> np.ndarray:
  """Decodes an image file to RGB uint8 [H, W, 3] and crops its border, as WiSE-FT's loader and `crop` do.

  TensorFlow decodes (channels=3 turns grayscale, palette and RGBA images into RGB, as PIL's convert('RGB')
  does), which keeps Pillow out of the project's dependencies.
  """
  image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False).numpy()
  return crop_border(image)


class Objectnet(tfds.core.GeneratorBasedBuilder):
  """ObjectNet 1.0, the 113 ImageNet-overlapping classes in WiSE-FT's order, border cropped as WiSE-FT does."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "ObjectNet 1.0, 113 ImageNet classes (WiSE-FT order), 2-pixel border cropped, PNG."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=("ObjectNet 1.0 test images of the 113 classes that overlap ImageNet, labelled in WiSE-FT's "
                     "order (sorted folder names), with the red border cropped as WiSE-FT does (2 pixels per "
                     "side) and stored as PNG."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(CLASSNAMES)),
            "folder": tfds.features.Text(doc="ObjectNet image folder (class) name"),
            "filename": tfds.features.Text(doc="image path under images/, '<folder>/<file>'"),
        }),
        supervised_keys=("image", "label"),
        homepage="https://objectnet.dev/",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = _manual.manual_dir_of(dl_manager, NAME, MANUAL_DOWNLOAD_INSTRUCTIONS)
    root = _manual.find_root(
        manual_dir, ARCHIVE_FOLDER,
        ("images/", "mappings/folder_to_objectnet_label.json", "mappings/objectnet_to_imagenet_1k.json"),
        name=NAME, instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
    check_mappings(root / "mappings")
    entries = list_images(root / "images")
    if not entries:
      raise _manual.error(NAME, root / "images", "holds no image in the folders of the 113 ImageNet-overlapping "
                          f"classes (e.g. images/{FOLDERS[0]}/)", MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {"test": self._generate_examples(root / "images", entries)}

  def _generate_examples(self, images_dir: epath.Path, entries: List[Tuple[str, str, int]]):
    for folder, filename, label in entries:
      path = images_dir / folder / filename
      image = load_cropped(_manual.read_image(path, name=NAME, instructions=MANUAL_DOWNLOAD_INSTRUCTIONS))
      key = f"{folder}/{filename}"
      # np.ndarray: TFDS encodes it as PNG (the feature's encoding_format), losslessly.
      yield key, {"image": image, "label": label, "folder": folder, "filename": key}
