"""`wilds_iwildcam`: WILDS iWildCam v2.0 (camera-trap photos, 182 species) read from its official archive.

Splits are exactly WILDS' `official` scheme, which p-lambda/wilds `wilds/datasets/iwildcam_dataset.py`
(`IWildCamDataset.__init__`) reads verbatim from the `split` column of `metadata.csv`:

  train    training camera traps                          (WILDS 'Train')
  id_val   training traps, other dates                     (WILDS 'Validation (ID/Cis)')
  id_test  training traps, other dates                     (WILDS 'Test (ID/Cis)')
  val      camera traps never seen in training (OOD)       (WILDS 'Validation (OOD/Trans)')
  test     other unseen camera traps (OOD)                 (WILDS 'Test (OOD/Trans)')

A `split` value outside these five is an error, as in WILDS (its `_split_dict[x]` raises KeyError).
The label is the `y` column (0..181, WILDS' `_y_array`), the location `location_remapped` (WILDS' `location`
metadata field, the group of its per-location evaluation). Images are the archive's JPEG files, stored as they
are (no decoding or re-encoding); they all live in `train/`, whatever their split, as WILDS' `get_input` reads
them.

Usage:

  import flyp_jax.data.builders.wilds_iwildcam  # registers the builder
  tfds.builder('wilds_iwildcam', data_dir=...).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=...))
  ds = tfds.load('wilds_iwildcam', split='test', data_dir=...)

or `_manual.how_to_prepare('wilds_iwildcam')`.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from flyp_jax.data.builders import _manual

NAME = "wilds_iwildcam"
ARCHIVE_FOLDER = "iwildcam_v2.0"
NUM_CLASSES = 182
# WILDS' split names, in the order of its `_split_dict` ids (train 0, val 1, test 2, id_val 3, id_test 4).
SPLITS: Tuple[str, ...] = ("train", "val", "test", "id_val", "id_test")
METADATA_COLUMNS: Tuple[str, ...] = ("split", "y", "location_remapped", "filename")
DOWNLOAD_URL = "https://worksheets.codalab.org/rest/bundles/0x6313da2b204647e79a14b468131fcd64/contents/blob/"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download WILDS iWildCam v2.0 (a .tar.gz of about 11 GB, CodaLab bundle 0x6313da2b204647e79a14b468131fcd64, the
URL WILDS' own downloader uses) and extract it into a folder named `{ARCHIVE_FOLDER}` inside `manual_dir`:
`mkdir -p MANUAL_DIR/{ARCHIVE_FOLDER} && wget -O iwildcam_v2.0.tar.gz {DOWNLOAD_URL} &&
tar -xzf iwildcam_v2.0.tar.gz -C MANUAL_DIR/{ARCHIVE_FOLDER}` (`pip install wilds` then
`python -c "from wilds import get_dataset; get_dataset('iwildcam', download=True, root_dir='MANUAL_DIR')"` writes
the same folder). `manual_dir` must then contain `{ARCHIVE_FOLDER}/metadata.csv` (one row per image, with the
columns split, y, location_remapped and filename), `{ARCHIVE_FOLDER}/categories.csv` and
`{ARCHIVE_FOLDER}/train/<filename>` (the JPEG images of every split); `manual_dir` may also be the
`{ARCHIVE_FOLDER}` folder itself.
"""

_CITATION = """\
@inproceedings{koh2021wilds,
  title={{WILDS}: A Benchmark of in-the-Wild Distribution Shifts},
  author={Koh, Pang Wei and Sagawa, Shiori and Marklund, Henrik and Xie, Sang Michael and Zhang, Marvin and
          Balsubramani, Akshay and Hu, Weihua and Yasunaga, Michihiro and Phillips, Richard Lanas and
          Gao, Irena and others},
  booktitle={ICML},
  year={2021}
}
@article{beery2020iwildcam,
  title={The iWildCam 2020 Competition Dataset},
  author={Beery, Sara and Cole, Elijah and Gjoka, Arvi},
  journal={arXiv preprint arXiv:2004.10340},
  year={2020}
}
"""


def split_rows(metadata_path: epath.Path) -> Dict[str, List[Dict[str, object]]]:
  """Reads `metadata.csv` and groups its rows by WILDS split.

  Returns:
    {split: [{'filename': str, 'label': int, 'location': int}, ...]} for every split in SPLITS, rows in file
    order.

  Raises:
    ManualDataError: a required column is missing, a `split` value is not one of WILDS' five, or `y` /
      `location_remapped` is not an integer or `y` is outside 0..181.
  """
  instructions = MANUAL_DOWNLOAD_INSTRUCTIONS
  rows = _manual.read_csv(metadata_path, METADATA_COLUMNS, name=NAME, instructions=instructions)
  by_split: Dict[str, List[Dict[str, object]]] = {split: [] for split in SPLITS}
  for i, row in enumerate(rows):
    split = row["split"].strip()
    if split not in by_split:
      raise _manual.error(NAME, metadata_path, f"has split {split!r} in data row {i}; WILDS defines only "
                          f"{list(SPLITS)}", instructions)
    label = _manual.parse_int(row["y"], name=NAME, path=metadata_path, row=i, column="y",
                              instructions=instructions)
    if not 0 <= label < NUM_CLASSES:
      raise _manual.error(NAME, metadata_path, f"has y={label} in data row {i}, outside 0..{NUM_CLASSES - 1}",
                          instructions)
    location = _manual.parse_int(row["location_remapped"], name=NAME, path=metadata_path, row=i,
                                 column="location_remapped", instructions=instructions)
    by_split[split].append({"filename": row["filename"].strip(), "label": label, "location": location})
  return by_split


class WildsIwildcam(tfds.core.GeneratorBasedBuilder):
  """WILDS iWildCam v2.0 with WILDS' official splits, read from the manually downloaded archive."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "WILDS iWildCam v2.0, official splits, JPEGs as released."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=("WILDS iWildCam v2.0: camera-trap photos labelled with one of 182 species, split by camera "
                     "trap as WILDS defines it (train, id_val, id_test from training traps; val, test from "
                     "unseen traps)."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "location": tfds.features.Scalar(dtype=np.int64, doc="metadata.csv `location_remapped`"),
            "filename": tfds.features.Text(doc="image file name under train/"),
        }),
        supervised_keys=("image", "label"),
        homepage="https://wilds.stanford.edu/datasets/#iwildcam",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = _manual.manual_dir_of(dl_manager, NAME, MANUAL_DOWNLOAD_INSTRUCTIONS)
    root = _manual.find_root(manual_dir, ARCHIVE_FOLDER, ("metadata.csv", "train/"), name=NAME,
                             instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
    by_split = split_rows(root / "metadata.csv")
    return {split: self._generate_examples(root / "train", rows) for split, rows in by_split.items()}

  def _generate_examples(self, image_dir: epath.Path, rows: List[Dict[str, object]]):
    for row in rows:
      filename = str(row["filename"])
      image = _manual.read_image(image_dir / filename, name=NAME, instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
      # The file name is unique across the dataset, so it is a stable example key.
      yield filename, {"image": image, "label": row["label"], "location": row["location"], "filename": filename}
