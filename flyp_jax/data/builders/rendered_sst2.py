"""`rendered_sst2`: CLIP's Rendered SST2 (sentences of the Stanford Sentiment Treebank v2 rendered as images).

FLYP's few-shot SST2 experiment (locuslab/FLYP `src/datasets/sst2.py`, DATA.md) reads the images CLIP released
(openai/CLIP `data/rendered-sst2.md`: the archive `rendered-sst2.tgz`, 131 MB) as ImageFolders
`sst2/{train,val,test}/{negative,positive}/`. The archive holds `rendered-sst2/{train,valid,test}/{negative,
positive}/*.png` (6,920 / 872 / 1,821 images). Labels are the sorted folder names, as ImageFolder numbers
them: 0 negative, 1 positive (`flyp_jax.data.classnames.get('sst2')`). Splits: train, validation (the archive's
`valid`, FLYP's `val`), test.

The archive is not on TFDS: put `rendered-sst2.tgz` (as downloaded) in `manual_dir`, or its extracted
`rendered-sst2/` folder (`manual_dir` may also be that folder itself).
"""

from __future__ import annotations

import tarfile
from typing import Iterator, Tuple

import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from flyp_jax.data.builders import _manual

NAME = "rendered_sst2"
ARCHIVE = "rendered-sst2.tgz"
ARCHIVE_FOLDER = "rendered-sst2"
CLASSES = ("negative", "positive")  # sorted folder names = label order
SPLITS = {"train": "train", "validation": "valid", "test": "test"}  # TFDS split -> the archive's folder
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download CLIP's Rendered SST2 archive `{ARCHIVE}` (131 MB; the link is in openai/CLIP's data/rendered-sst2.md)
and put it, unextracted, in `manual_dir`, so that `manual_dir/{ARCHIVE}` exists; or extract it there
(`tar zxf {ARCHIVE} -C MANUAL_DIR`), giving `manual_dir/{ARCHIVE_FOLDER}/{{train,valid,test}}/{{negative,positive}}/*.png`
(`manual_dir` may also be the `{ARCHIVE_FOLDER}` folder itself; FLYP's `val` folder name is accepted for `valid`).
"""

_CITATION = """\
@inproceedings{radford2021learning,
  title={Learning Transferable Visual Models From Natural Language Supervision},
  author={Radford, Alec and Kim, Jong Wook and Hallacy, Chris and others},
  booktitle={ICML},
  year={2021}
}
"""


def _split_and_label(path: str) -> Tuple[str, int] | None:
  """(TFDS split, label) of an image at `path` ('.../<split folder>/<class>/<file>'), or None if it is none."""
  parts = path.replace("\\", "/").split("/")
  if len(parts) < 3 or parts[-1].startswith(".") or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
    return None
  folder, cls = parts[-3], parts[-2]
  folder = "valid" if folder == "val" else folder
  splits = {v: k for k, v in SPLITS.items()}
  if folder not in splits or cls not in CLASSES:
    return None
  return splits[folder], CLASSES.index(cls)


def _decode(data: bytes):
  # RGB as torchvision's loader gives FLYP (PIL convert('RGB')); TensorFlow decodes, so Pillow is not needed.
  return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False).numpy()


class RenderedSst2(tfds.core.GeneratorBasedBuilder):
  """CLIP's Rendered SST2: binary sentiment of rendered sentences."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "CLIP's rendered-sst2 archive: train, validation (valid), test."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="SST2 sentences rendered as images, as released with CLIP; labels negative (0), positive (1).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(CLASSES)),
            "filename": tfds.features.Text(doc="'<split folder>/<class>/<file>' in the archive"),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/openai/CLIP/blob/main/data/rendered-sst2.md",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = _manual.manual_dir_of(dl_manager, NAME, MANUAL_DOWNLOAD_INSTRUCTIONS)
    archive = manual_dir / ARCHIVE
    if archive.is_file():
      entries = list(self._from_archive(archive))
    else:
      root = _manual.find_root(manual_dir, ARCHIVE_FOLDER, ("train/", "test/"), name=NAME,
                               instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
      entries = list(self._from_folder(root))
    by_split = {split: [e for e in entries if e[1] == split] for split in SPLITS}
    empty = [SPLITS[s] for s, e in by_split.items() if not e]
    if empty:
      raise _manual.error(NAME, archive if archive.is_file() else manual_dir,
                          f"has no image in the folder(s) {empty} ({ARCHIVE_FOLDER}/<folder>/{{negative,positive}}/)",
                          MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {split: self._generate_examples(e) for split, e in by_split.items()}

  @staticmethod
  def _from_archive(archive: epath.Path) -> Iterator[Tuple[str, str, int, bytes]]:
    with archive.open("rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
      for member in tar:
        found = member.isfile() and _split_and_label(member.name)
        if found:
          yield member.name, found[0], found[1], tar.extractfile(member).read()

  @staticmethod
  def _from_folder(root: epath.Path) -> Iterator[Tuple[str, str, int, bytes]]:
    for folder in ("train", "valid", "val", "test"):
      for cls in CLASSES:
        directory = root / folder / cls
        if not directory.is_dir():
          continue
        for path in sorted(directory.iterdir(), key=lambda p: p.name):
          found = _split_and_label(f"{folder}/{cls}/{path.name}")
          if found:
            yield f"{folder}/{cls}/{path.name}", found[0], found[1], path.read_bytes()

  def _generate_examples(self, entries):
    for path, _, label, data in entries:
      key = "/".join(path.replace("\\", "/").split("/")[-3:])
      yield key, {"image": _decode(data), "label": label, "filename": key}
