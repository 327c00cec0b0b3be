"""`wilds_fmow`: WILDS FMoW v1.1 (satellite images, 62 land-use categories) read from its official archive.

Splits reproduce WILDS' `official` scheme (= `time_after_2016`) as p-lambda/wilds
`wilds/datasets/fmow_dataset.py` (`FMoWDataset.__init__`, with its default `use_ood_val=True`) computes it from
the `split` and `timestamp` columns of `rgb_metadata.csv`, timestamps compared in UTC:

  row `split`   timestamp < 2013-01-01     2013-01-01 <= t < 2016-01-01   t >= 2016-01-01
  'train'       train                      (unused)                       (unused)
  'val'         id_val                     val    (OOD val)               (unused)
  'test'        id_test                    (unused)                       test   (OOD test)
  'seq' / other (unused)                   (unused)                       (unused)

i.e. `test_ood_mask = t >= 2016`, `val_ood_mask = t >= 2013 & ~test_ood_mask`, and each split takes the rows of
its `split` value inside its period. Rows marked "(unused)" belong to no WILDS split and are left out.

Other features, as WILDS derives them:
  label        index of `category` in WILDS' `categories` list (CATEGORIES below, same order).
  region       `country_code` (ISO alpha-3) -> `region` through `country_code_mapping.csv` (its `alpha-3` and
               `region` columns); a code the file does not list is 'Other' (WILDS'
               `countrycode_to_region.get(code, 'Other')`). Indices follow REGIONS: Asia 0, Europe 1, Africa 2,
               Americas 3, Oceania 4, Other 5. WILDS numbers regions in order of first appearance in
               rgb_metadata.csv (`metadata['region'].unique()`), which for the released file is this order (the
               project's FMoW suite excludes group 5, 'Other', from the worst-region accuracy, as WILDS' `eval`
               does); the builder logs a warning when a file's first-appearance order differs. One deliberate
               difference: a listed country with an empty `region` (Antarctica in the ISO table) is 'Other' here,
               where pandas would give WILDS a NaN region of its own.
  year         the calendar year of `timestamp` in UTC (WILDS' `year` metadata is this minus 2002).
  image_index  the 0-based row of the image in rgb_metadata.csv, counting every row including 'seq' ones: the
               image is `images/rgb_img_<image_index>.png` (WILDS' `get_input` maps through `full_idxs`).
Images are the archive's PNG files, stored as they are (no decoding or re-encoding).

Usage:

  import flyp_jax.data.builders.wilds_fmow  # registers the builder
  tfds.builder('wilds_fmow', data_dir=...).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=...))
  ds = tfds.load('wilds_fmow', split='test', data_dir=...)
"""

from __future__ import annotations

import datetime
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from flyp_jax import errors
from flyp_jax.data.builders import _manual

NAME = "wilds_fmow"
ARCHIVE_FOLDER = "fmow_v1.1"
SPLITS: Tuple[str, ...] = ("train", "id_val", "id_test", "val", "test")  # WILDS' `_split_dict` order
METADATA_COLUMNS: Tuple[str, ...] = ("split", "category", "country_code", "timestamp")
COUNTRY_COLUMNS: Tuple[str, ...] = ("alpha-3", "region")
DOWNLOAD_URL = "https://worksheets.codalab.org/rest/bundles/0xaec91eb7c9d548ebb15e1b5e60f966ab/contents/blob/"

# WILDS' official split `time_after_2016`: OOD test from 2016, OOD validation the three years before.
OOD_TEST_START = datetime.datetime(2016, 1, 1, tzinfo=datetime.timezone.utc)
OOD_VAL_START = datetime.datetime(2013, 1, 1, tzinfo=datetime.timezone.utc)

REGIONS: Tuple[str, ...] = ("Asia", "Europe", "Africa", "Americas", "Oceania", "Other")
OTHER_REGION = REGIONS.index("Other")

# p-lambda/wilds fmow_dataset.py `categories`, in its order (label = index).
CATEGORIES: Tuple[str, ...] = (
  "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site", "barn",
  "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
  "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant", "fire_station",
  "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station", "helipad",
  "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse", "military_facility",
  "multi-unit_residential", "nuclear_powerplant", "office_building", "oil_or_gas_facility", "park",
  "parking_lot_or_garage", "place_of_worship", "police_station", "port", "prison", "race_track",
  "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard", "shopping_mall",
  "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium", "storage_tank",
  "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening", "waste_disposal",
  "water_treatment_facility", "wind_farm", "zoo",
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download WILDS FMoW v1.1 (a .tar.gz of about 54 GB, CodaLab bundle 0xaec91eb7c9d548ebb15e1b5e60f966ab, the URL
WILDS' own downloader uses) and extract it into a folder named `{ARCHIVE_FOLDER}` inside `manual_dir`:
`mkdir -p MANUAL_DIR/{ARCHIVE_FOLDER} && wget -O fmow_v1.1.tar.gz {DOWNLOAD_URL} &&
tar -xzf fmow_v1.1.tar.gz -C MANUAL_DIR/{ARCHIVE_FOLDER}` (`pip install wilds` then
`python -c "from wilds import get_dataset; get_dataset('fmow', download=True, root_dir='MANUAL_DIR')"` writes the
same folder). `manual_dir` must then contain `{ARCHIVE_FOLDER}/rgb_metadata.csv` (one row per image, with the
columns split, category, country_code and timestamp), `{ARCHIVE_FOLDER}/country_code_mapping.csv` (columns
alpha-3 and region) and `{ARCHIVE_FOLDER}/images/rgb_img_<i>.png` (the PNG image of data row i of
rgb_metadata.csv, counting from 0); `manual_dir` may also be the `{ARCHIVE_FOLDER}` folder itself.
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
@inproceedings{fmow2018,
  title={Functional Map of the World},
  author={Christie, Gordon and Fendley, Neil and Wilson, James and Mukherjee, Ryan},
  booktitle={CVPR},
  year={2018}
}
"""

# ISO 8601 as in rgb_metadata.csv ('2016-02-29T10:54:06Z'), parsed by hand because Python 3.10's fromisoformat
# accepts neither 'Z' nor fractional seconds of other than 3 or 6 digits.
_TIMESTAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
                        r"\s*(Z|[+-]\d{2}:?\d{2})?$")


def parse_timestamp(text: str) -> datetime.datetime:
  """A timestamp of rgb_metadata.csv as an aware UTC datetime; one without a zone is taken to be UTC.

  Raises:
    ValueError: `text` is not an ISO 8601 date-time.
  """
  match = _TIMESTAMP.match(text.strip())
  if not match:
    raise errors.BadValue(f"not an ISO 8601 timestamp: {text!r}")
  year, month, day, hour, minute, second, fraction, zone = match.groups()
  micro = int((fraction or "0")[:6].ljust(6, "0"))
  tz = datetime.timezone.utc
  if zone and zone != "Z":
    sign = 1 if zone[0] == "+" else -1
    digits = zone[1:].replace(":", "")
    tz = datetime.timezone(sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
  stamp = datetime.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                            micro, tzinfo=tz)
  return stamp.astimezone(datetime.timezone.utc)


def wilds_split(metadata_split: str, timestamp: datetime.datetime) -> Optional[str]:
  """WILDS' `time_after_2016` split of one row, or None when WILDS leaves the row out of every split.

  Follows FMoWDataset.__init__: OOD test = 'test' rows from 2016 on, OOD val = 'val' rows of 2013-2015, and
  train / id_val / id_test = 'train' / 'val' / 'test' rows before 2013.
  """
  if timestamp >= OOD_TEST_START:
    return "test" if metadata_split == "test" else None
  if timestamp >= OOD_VAL_START:
    return "val" if metadata_split == "val" else None
  return {"train": "train", "val": "id_val", "test": "id_test"}.get(metadata_split)


def region_table(mapping_path: epath.Path) -> Dict[str, str]:
  """country_code_mapping.csv as {alpha-3 code: region name}; an empty region becomes 'Other'.

  Raises:
    ManualDataError: a column is missing, or a region is not one of REGIONS (the file is not WILDS' table).
  """
  rows = _manual.read_csv(mapping_path, COUNTRY_COLUMNS, name=NAME, instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
  table = {}
  for i, row in enumerate(rows):
    region = (row["region"] or "").strip() or "Other"
    if region not in REGIONS:
      raise _manual.error(NAME, mapping_path, f"has region {region!r} in data row {i}; WILDS' regions are "
                          f"{list(REGIONS)}", MANUAL_DOWNLOAD_INSTRUCTIONS)
    table[(row["alpha-3"] or "").strip()] = region  # later rows win, as in WILDS' dict(zip(...))
  return table


def split_rows(metadata_path: epath.Path, mapping_path: epath.Path) -> Dict[str, List[Dict[str, object]]]:
  """Reads the two CSV files and assigns every row to its WILDS split.

  Returns:
    {split: [{'image_index', 'label', 'region', 'year'}, ...]} for every split in SPLITS, rows in file order.

  Raises:
    ManualDataError: a column is missing, a category is not one of WILDS' 62, or a timestamp cannot be read.
  """
  instructions = MANUAL_DOWNLOAD_INSTRUCTIONS
  regions = region_table(mapping_path)
  rows = _manual.read_csv(metadata_path, METADATA_COLUMNS, name=NAME, instructions=instructions)
  category_to_label = {c: i for i, c in enumerate(CATEGORIES)}
  by_split: Dict[str, List[Dict[str, object]]] = {split: [] for split in SPLITS}
  first_seen: List[str] = []
  for index, row in enumerate(rows):
    region = regions.get((row["country_code"] or "").strip(), "Other")
    if region not in first_seen:
      first_seen.append(region)
    try:
      stamp = parse_timestamp(row["timestamp"] or "")
    except ValueError:
      raise _manual.error(NAME, metadata_path, f"has timestamp {row['timestamp']!r} in data row {index}, not an "
                          "ISO 8601 date-time", instructions) from None
    split = wilds_split((row["split"] or "").strip(), stamp)
    if split is None:
      continue
    category = (row["category"] or "").strip()
    if category not in category_to_label:
      raise _manual.error(NAME, metadata_path, f"has category {category!r} in data row {index}, not one of "
                          "WILDS' 62 FMoW categories", instructions)
    by_split[split].append({"image_index": index, "label": category_to_label[category],
                            "region": REGIONS.index(region), "year": stamp.year})
  expected = [r for r in REGIONS if r in first_seen]
  if first_seen != expected:
    # WILDS numbers regions by first appearance; with another order its region ids would differ from ours.
    logging.warning("%s: regions first appear in %s in the order %s; WILDS would number them in that order, "
                    "this builder uses the fixed order %s.", NAME, metadata_path, first_seen, list(REGIONS))
  return by_split


class WildsFmow(tfds.core.GeneratorBasedBuilder):
  """WILDS FMoW v1.1 with WILDS' official (time_after_2016) splits, read from the manually downloaded archive."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "WILDS FMoW v1.1, official splits, PNGs as released."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=("WILDS FMoW v1.1: satellite images labelled with one of 62 building / land-use categories, "
                     "split by time as WILDS defines it (train, id_val, id_test before 2013; OOD val 2013-2015; "
                     "OOD test from 2016), with the region of each image for worst-region accuracy."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(CATEGORIES)),
            "region": tfds.features.Scalar(dtype=np.int64, doc=f"index into {list(REGIONS)}"),
            "year": tfds.features.Scalar(dtype=np.int64, doc="calendar year of the timestamp (UTC)"),
            "image_index": tfds.features.Scalar(dtype=np.int64, doc="row of rgb_metadata.csv = rgb_img_<i>.png"),
        }),
        supervised_keys=("image", "label"),
        homepage="https://wilds.stanford.edu/datasets/#fmow",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = _manual.manual_dir_of(dl_manager, NAME, MANUAL_DOWNLOAD_INSTRUCTIONS)
    root = _manual.find_root(manual_dir, ARCHIVE_FOLDER,
                             ("rgb_metadata.csv", "country_code_mapping.csv", "images/"), name=NAME,
                             instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
    by_split = split_rows(root / "rgb_metadata.csv", root / "country_code_mapping.csv")
    return {split: self._generate_examples(root / "images", rows) for split, rows in by_split.items()}

  def _generate_examples(self, image_dir: epath.Path, rows: List[Dict[str, object]]):
    for row in rows:
      index = int(row["image_index"])
      image = _manual.read_image(image_dir / f"rgb_img_{index}.png", name=NAME,
                                 instructions=MANUAL_DOWNLOAD_INSTRUCTIONS)
      yield index, {"image": image, **row}
