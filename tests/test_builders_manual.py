"""The manual-download builders (WILDS iWildCam, WILDS FMoW, ObjectNet) on tiny fake archives in the official layout.

Each archive is written to a temporary folder with the real files' names and CSV columns, prepared with
`download_and_prepare(DownloadConfig(manual_dir=...))`, and read back. The expected split of every row is worked
out by hand from WILDS' code (iwildcam_dataset.py, fmow_dataset.py) and WiSE-FT's objectnet.py, not from the
builders, and the rows sit on each rule's boundaries. No network.
"""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

# Importing the builder modules registers them with TFDS.
from flyp_jax.data.builders import _manual, objectnet, wilds_fmow, wilds_iwildcam


def _prepare(name: str, manual_dir: Path, data_dir: Path) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _read(builder, split: str, raw_images: bool = False) -> list[dict]:
  """All examples of `split` as numpy dicts; raw_images=True keeps the image as its stored (encoded) bytes."""
  decoders = {"image": tfds.decode.SkipDecoding()} if raw_images else None
  return list(tfds.as_numpy(builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def _solid(value: int, size=(6, 5)) -> np.ndarray:
  """A small RGB image whose pixels encode `value` (so each file's content is recognisable after decoding)."""
  image = np.zeros((*size, 3), np.uint8)
  image[..., 0] = value % 251
  image[..., 1] = (value * 7) % 251
  image[..., 2] = 200
  return image


# ---------------------------------------------------------------------------------------------------------
# WILDS iWildCam

# metadata.csv columns of iwildcam_v2.0 (WILDS reads split, y, location_remapped, sequence_remapped, datetime,
# filename); rows: (split, location_remapped, y, filename). Every WILDS split value occurs, y spans 0..181.
IWILDCAM_HEADER = ["split", "location_remapped", "location", "sequence_remapped", "seq_id", "y", "category_id",
                   "datetime", "filename", "image_id"]
IWILDCAM_ROWS = [
  ("train", 0, 0, "8b2c.jpg"),
  ("train", 1, 181, "8b2d.jpg"),
  ("id_val", 0, 5, "90aa.jpg"),
  ("id_test", 1, 7, "91ab.jpg"),
  ("val", 2, 5, "92ac.jpg"),
  ("test", 3, 9, "93ad.jpg"),
  ("test", 4, 0, "94ae.jpg"),
]
# Hand-made from the rows above: WILDS' split is the `split` column as it is.
IWILDCAM_EXPECTED = {
  "train": {"8b2c.jpg": (0, 0), "8b2d.jpg": (181, 1)},
  "id_val": {"90aa.jpg": (5, 0)},
  "id_test": {"91ab.jpg": (7, 1)},
  "val": {"92ac.jpg": (5, 2)},
  "test": {"93ad.jpg": (9, 3), "94ae.jpg": (0, 4)},
}


def _fake_iwildcam(root: Path, rows=IWILDCAM_ROWS) -> dict[str, bytes]:
  """Writes `root`/iwildcam_v2.0 in WILDS' layout; returns {filename: jpeg bytes}."""
  archive = root / "iwildcam_v2.0"
  (archive / "train").mkdir(parents=True)
  jpegs = {}
  meta = []
  for i, (split, location, y, filename) in enumerate(rows):
    jpegs[filename] = tf.io.encode_jpeg(_solid(i), quality=90).numpy()
    (archive / "train" / filename).write_bytes(jpegs[filename])
    meta.append([split, location, 100 + location, i, f"seq{i}", y, 1000 + y, "2013-06-09 16:37:45.000", filename,
                 f"img{i}"])
  _write_csv(archive / "metadata.csv", IWILDCAM_HEADER, meta)
  _write_csv(archive / "categories.csv", ["y", "category_id", "name"], [[0, 0, "empty"], [5, 1005, "ocelot"]])
  (archive / "RELEASE_v2.0.txt").write_text("")
  return jpegs


@pytest.fixture(scope="module")
def iwildcam(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("iwildcam")
  jpegs = _fake_iwildcam(tmp / "manual")
  return _prepare("wilds_iwildcam", tmp / "manual", tmp / "data"), jpegs


def test_iwildcam_splits_labels_locations(iwildcam):
  builder, jpegs = iwildcam
  assert sorted(builder.info.splits) == sorted(IWILDCAM_EXPECTED)
  for split, expected in IWILDCAM_EXPECTED.items():
    examples = _read(builder, split, raw_images=True)
    got = {ex["filename"].decode(): (int(ex["label"]), int(ex["location"])) for ex in examples}
    assert got == expected, split
    assert builder.info.splits[split].num_examples == len(expected)
    for ex in examples:  # the JPEG is stored byte for byte, not re-encoded
      assert ex["image"] == jpegs[ex["filename"].decode()]
  assert builder.info.features["label"].num_classes == wilds_iwildcam.NUM_CLASSES == 182
  decoded = _read(builder, "val")[0]["image"]
  assert decoded.shape == (6, 5, 3) and decoded.dtype == np.uint8


def test_iwildcam_manual_dir_may_be_the_archive_folder(tmp_path):
  _fake_iwildcam(tmp_path / "manual", rows=IWILDCAM_ROWS[:1] + IWILDCAM_ROWS[2:6])
  builder = _prepare("wilds_iwildcam", tmp_path / "manual" / "iwildcam_v2.0", tmp_path / "data")
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
    "train": 1, "id_val": 1, "id_test": 1, "val": 1, "test": 1}


def test_iwildcam_unknown_split_value_is_an_error(tmp_path):
  _fake_iwildcam(tmp_path / "manual", rows=IWILDCAM_ROWS + [("seq", 0, 1, "zz.jpg")])
  with pytest.raises(_manual.ManualDataError, match=r"split 'seq' in data row 7"):
    _prepare("wilds_iwildcam", tmp_path / "manual", tmp_path / "data")


def test_iwildcam_missing_image_names_it(tmp_path):
  _fake_iwildcam(tmp_path / "manual")
  (tmp_path / "manual" / "iwildcam_v2.0" / "train" / "92ac.jpg").unlink()
  with pytest.raises(_manual.ManualDataError) as info:
    _prepare("wilds_iwildcam", tmp_path / "manual", tmp_path / "data")
  assert f"{tmp_path / 'manual' / 'iwildcam_v2.0' / 'train' / '92ac.jpg'} is missing" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# WILDS FMoW

FMOW_HEADER = ["split", "img_filename", "img_path", "spatial_reference", "epsg", "category", "visible",
               "img_width", "img_height", "country_code", "cloud_cover", "timestamp", "lat", "lon"]
# country_code_mapping.csv: the ISO-3166 table WILDS ships (only alpha-3 and region are read). ATA has an empty
# region in that table; XKX (Kosovo) is not in it.
COUNTRY_HEADER = ["name", "alpha-2", "alpha-3", "country-code", "iso_3166-2", "region", "sub-region",
                  "intermediate-region", "region-code", "sub-region-code", "intermediate-region-code"]
COUNTRIES = [("China", "CN", "CHN", "Asia"), ("France", "FR", "FRA", "Europe"), ("Nigeria", "NG", "NGA", "Africa"),
             ("United States", "US", "USA", "Americas"), ("Australia", "AU", "AUS", "Oceania"),
             ("Namibia", "NA", "NAM", "Africa"), ("Antarctica", "AQ", "ATA", "")]
# (split, timestamp, category, country_code), row i <-> images/rgb_img_<i>.png.
FMOW_ROWS = [
  ("train", "2002-01-01T00:00:00Z", "airport", "CHN"),           # 0  train
  ("train", "2012-12-31T23:59:59Z", "zoo", "FRA"),               # 1  train (last second before OOD val)
  ("train", "2013-01-01T00:00:00Z", "dam", "USA"),               # 2  unused: train row inside OOD val years
  ("train", "2016-06-01T10:00:00Z", "dam", "USA"),               # 3  unused: train row inside OOD test years
  ("val", "2012-07-04T12:00:00Z", "barn", "NGA"),                # 4  id_val
  ("val", "2013-01-01T00:00:00Z", "port", "AUS"),                # 5  val (OOD, first second)
  ("val", "2015-12-31T23:59:59.500Z", "park", "XKX"),            # 6  val (OOD), unmapped country -> Other
  ("val", "2016-01-01T00:00:00Z", "park", "USA"),                # 7  unused: val row inside OOD test years
  ("test", "2012-03-03T03:03:03Z", "tower", "ATA"),              # 8  id_test, empty region -> Other
  ("test", "2013-05-05T00:00:00Z", "tower", "CHN"),              # 9  unused: test row inside OOD val years
  ("test", "2015-12-31T23:59:59Z", "tower", "CHN"),              # 10 unused
  ("test", "2016-01-01T00:00:00Z", "shipyard", "NAM"),           # 11 test (OOD, first second)
  ("test", "2017-08-08T08:08:08Z", "wind_farm", ""),             # 12 test (OOD), no country code -> Other
  ("seq", "2010-01-01T00:00:00Z", "airport", "CHN"),             # 13 unused: sequestered
  ("train", "2011-11-11T11:11:11Z", "multi-unit_residential", "AUS"),  # 14 train (after a seq row)
]
CAT = {c: i for i, c in enumerate(wilds_fmow.CATEGORIES)}
ASIA, EUROPE, AFRICA, AMERICAS, OCEANIA, OTHER = range(6)
# Hand-made from WILDS' time_after_2016 rule: image_index -> (label, region, year).
FMOW_EXPECTED = {
  "train": {0: (CAT["airport"], ASIA, 2002), 1: (CAT["zoo"], EUROPE, 2012),
            14: (CAT["multi-unit_residential"], OCEANIA, 2011)},
  "id_val": {4: (CAT["barn"], AFRICA, 2012)},
  "id_test": {8: (CAT["tower"], OTHER, 2012)},
  "val": {5: (CAT["port"], OCEANIA, 2013), 6: (CAT["park"], OTHER, 2015)},
  "test": {11: (CAT["shipyard"], AFRICA, 2016), 12: (CAT["wind_farm"], OTHER, 2017)},
}
FMOW_UNUSED = {2, 3, 7, 9, 10, 13}


def _fake_fmow(root: Path, with_unused_images: bool = False) -> dict[int, bytes]:
  """Writes `root`/fmow_v1.1 in WILDS' layout; returns {image index: png bytes}.

  Images of rows that belong to no split are left out unless asked for: preparing then also proves they are
  never read.
  """
  archive = root / "fmow_v1.1"
  (archive / "images").mkdir(parents=True)
  pngs = {}
  meta = []
  for i, (split, stamp, category, country) in enumerate(FMOW_ROWS):
    meta.append([split, f"{category}_{i}_rgb.jpg", f"{split}/{category}/{category}_{i}_rgb.jpg", "WGS84", 4326,
                 category, True, 224, 224, country, 0, stamp, 1.5, 2.5])
    if i not in FMOW_UNUSED or with_unused_images:
      pngs[i] = tf.io.encode_png(_solid(i, (7, 4))).numpy()
      (archive / "images" / f"rgb_img_{i}.png").write_bytes(pngs[i])
  _write_csv(archive / "rgb_metadata.csv", FMOW_HEADER, meta)
  _write_csv(archive / "country_code_mapping.csv", COUNTRY_HEADER,
             [[name, a2, a3, 1, f"ISO 3166-2:{a2}", region, "", "", 1, 1, ""] for name, a2, a3, region in COUNTRIES])
  return pngs


@pytest.fixture(scope="module")
def fmow(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("fmow")
  pngs = _fake_fmow(tmp / "manual")
  return _prepare("wilds_fmow", tmp / "manual", tmp / "data"), pngs


def test_fmow_splits_labels_regions_years(fmow):
  builder, pngs = fmow
  assert sorted(builder.info.splits) == sorted(FMOW_EXPECTED)
  for split, expected in FMOW_EXPECTED.items():
    examples = _read(builder, split, raw_images=True)
    got = {int(ex["image_index"]): (int(ex["label"]), int(ex["region"]), int(ex["year"])) for ex in examples}
    assert got == expected, split
    for ex in examples:  # rgb_img_<image_index>.png, stored byte for byte
      assert ex["image"] == pngs[int(ex["image_index"])]
  for ex in _read(builder, "test"):
    np.testing.assert_array_equal(ex["image"], _solid(int(ex["image_index"]), (7, 4)))
  assert builder.info.features["label"].names == list(wilds_fmow.CATEGORIES)


def test_fmow_categories_and_regions_match_the_project():
  from flyp_jax.data import classnames, suites
  assert len(wilds_fmow.CATEGORIES) == 62
  assert tuple(classnames.FMOW_CLASSNAMES) == wilds_fmow.CATEGORIES
  fmow_suite = suites.get("fmow")
  assert all(d.num_groups == len(wilds_fmow.REGIONS) for d in fmow_suite)
  assert all(d.excluded_groups == (wilds_fmow.OTHER_REGION,) for d in fmow_suite)


@pytest.mark.parametrize("metadata_split, stamp, expected", [
  ("train", "2012-12-31T23:59:59Z", "train"), ("train", "2013-01-01T00:00:00Z", None),
  ("val", "2012-12-31T23:59:59Z", "id_val"), ("val", "2013-01-01T00:00:00Z", "val"),
  ("val", "2015-12-31T23:59:59Z", "val"), ("val", "2016-01-01T00:00:00Z", None),
  ("test", "2012-12-31T23:59:59Z", "id_test"), ("test", "2013-01-01T00:00:00Z", None),
  ("test", "2015-12-31T23:59:59Z", None), ("test", "2016-01-01T00:00:00Z", "test"),
  ("seq", "2012-01-01T00:00:00Z", None), ("seq", "2017-01-01T00:00:00Z", None),
  # Compared in UTC, as WILDS' tz-aware pandas timestamps are: 23:30 at UTC-1 is already 2016 in UTC.
  ("test", "2015-12-31T23:30:00-01:00", "test"), ("val", "2016-01-01T00:30:00+01:00", "val"),
])
def test_fmow_split_rule(metadata_split, stamp, expected):
  assert wilds_fmow.wilds_split(metadata_split, wilds_fmow.parse_timestamp(stamp)) == expected


def test_fmow_parse_timestamp():
  utc = datetime.timezone.utc
  assert wilds_fmow.parse_timestamp("2016-02-29T10:54:06Z") == datetime.datetime(2016, 2, 29, 10, 54, 6, tzinfo=utc)
  assert wilds_fmow.parse_timestamp("2015-12-31T23:59:59.123456789Z").microsecond == 123456
  assert wilds_fmow.parse_timestamp("2015-12-31T23:30:00-0100").year == 2016
  assert wilds_fmow.parse_timestamp("2014-01-02 03:04:05").tzinfo == utc  # no zone: UTC
  with pytest.raises(ValueError):
    wilds_fmow.parse_timestamp("last tuesday")


def test_fmow_unknown_category_is_an_error(tmp_path):
  _fake_fmow(tmp_path / "manual")
  meta = tmp_path / "manual" / "fmow_v1.1" / "rgb_metadata.csv"
  meta.write_text(meta.read_text().replace("shipyard", "spaceport"))
  with pytest.raises(_manual.ManualDataError, match="'spaceport' in data row 11"):
    _prepare("wilds_fmow", tmp_path / "manual", tmp_path / "data")


# ---------------------------------------------------------------------------------------------------------
# ObjectNet

# Folders of the fake download: three of the 113 ImageNet classes and one ObjectNet-only class that must be
# dropped. Labels are positions in the sorted list of the 113 folders (WiSE-FT's label_map).
OBJECTNET_IMAGES = {
  "alarm_clock": ["a1.png", "a2.png"],
  "full_sized_towel": ["f1.png"],  # label 'Bath towel': 32 by folder, 5 by label name (order check)
  "tv": ["t1.png"],
  "wok": ["w1.png"],
  "squeegee": ["s1.png"],  # no ImageNet counterpart: not in the dataset
}
OBJECTNET_EXPECTED_LABELS = {"alarm_clock": 0, "full_sized_towel": 32, "tv": 99, "wok": 112}


def _bordered(seed: int, height: int = 11, width: int = 9, channels: int = 3) -> np.ndarray:
  """A random image with ObjectNet's 1-pixel red frame and a green second ring (WiSE-FT crops both)."""
  image = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
  image[1:-1, 1:-1, :3] = [0, 255, 0]
  image[2:-2, 2:-2] = np.random.default_rng(seed + 1).integers(0, 256, (height - 4, width - 4, channels))
  image[[0, -1], :, :3] = [255, 0, 0]
  image[:, [0, -1], :3] = [255, 0, 0]
  if channels == 4:
    image[..., 3] = 255
  return image


def _fake_objectnet(root: Path) -> dict[str, np.ndarray]:
  """Writes `root`/objectnet-1.0 in ObjectNet's layout; returns {'<folder>/<file>': expected cropped RGB image}."""
  archive = root / "objectnet-1.0"
  folder_to_label = {folder: label for folder, label in objectnet.CLASSES}
  folder_to_label.update({"squeegee": "Squeegee", "air_freshener": "Air freshener"})
  # objectnet_to_imagenet_1k.json keys are the 113 labels (values: ImageNet names, not read by the builder).
  to_imagenet = {label: "some imagenet class; another" for _, label in reversed(objectnet.CLASSES)}
  (archive / "mappings").mkdir(parents=True)
  (archive / "mappings" / "folder_to_objectnet_label.json").write_text(json.dumps(folder_to_label))
  (archive / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps(to_imagenet))
  (archive / "mappings" / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({"0": 449}))
  expected = {}
  seed = 0
  for folder, files in OBJECTNET_IMAGES.items():
    (archive / "images" / folder).mkdir(parents=True)
    for filename in files:
      seed += 10
      channels = 4 if folder == "wok" else 3  # an RGBA file: stored as RGB
      image = _bordered(seed, channels=channels)
      (archive / "images" / folder / filename).write_bytes(tf.io.encode_png(image).numpy())
      if folder in OBJECTNET_EXPECTED_LABELS:
        expected[f"{folder}/{filename}"] = image[2:-2, 2:-2, :3]
  # Not images: a macOS resource fork and a text file inside a class folder, a stray file at the top.
  (archive / "images" / "alarm_clock" / "._a1.png").write_bytes(b"\x00\x05\x16\x07")
  (archive / "images" / "alarm_clock" / "notes.txt").write_text("not an image")
  (archive / "images" / "README.md").write_text("readme")
  return expected


@pytest.fixture(scope="module")
def objectnet_prepared(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("objectnet")
  expected = _fake_objectnet(tmp / "manual")
  return _prepare("objectnet", tmp / "manual", tmp / "data"), expected


def test_objectnet_classes_labels_and_border_crop(objectnet_prepared):
  builder, expected = objectnet_prepared
  assert list(builder.info.splits) == ["test"]
  examples = _read(builder, "test")
  got = {ex["filename"].decode(): ex for ex in examples}
  assert sorted(got) == sorted(expected)  # squeegee (no ImageNet class) and the non-images are left out
  label_feature = builder.info.features["label"]
  for key, ex in got.items():
    folder = key.split("/")[0]
    assert ex["folder"].decode() == folder
    assert int(ex["label"]) == OBJECTNET_EXPECTED_LABELS[folder]
    np.testing.assert_array_equal(ex["image"], expected[key])  # 2 pixels off each side, interior unchanged
    assert ex["image"].shape == (7, 5, 3)
  assert label_feature.num_classes == 113
  assert label_feature.int2str(0) == "alarm clock" and label_feature.int2str(99) == "tv"
  assert label_feature.int2str(13) == "butcher's knife" and label_feature.int2str(32) == "bath towel"


def test_objectnet_crop_removes_the_red_frame():
  image = _bordered(3)
  assert np.all(image[0] == [255, 0, 0]) and np.all(image[:, -1] == [255, 0, 0])
  cropped = objectnet.load_cropped(tf.io.encode_png(image).numpy())
  np.testing.assert_array_equal(cropped, image[2:-2, 2:-2])
  assert cropped.shape == (image.shape[0] - 4, image.shape[1] - 4, 3)


def test_objectnet_classes_match_wise_ft_order_and_the_label_maps():
  folders = [folder for folder, _ in objectnet.CLASSES]
  assert len(folders) == 113 and folders == sorted(folders) and len(set(objectnet.CLASSNAMES)) == 113
  from flyp_jax.data import label_maps
  assert label_maps.objectnet_folders() == folders
  assert label_maps.objectnet_classnames() == list(objectnet.CLASSNAMES)


def test_objectnet_other_mapping_files_are_refused(tmp_path):
  _fake_objectnet(tmp_path / "manual")
  path = tmp_path / "manual" / "objectnet-1.0" / "mappings" / "objectnet_to_imagenet_1k.json"
  mapping = json.loads(path.read_text())
  del mapping["Wok"]
  path.write_text(json.dumps(mapping))
  with pytest.raises(_manual.ManualDataError, match=r"missing \[\('wok', 'Wok'\)\]"):
    _prepare("objectnet", tmp_path / "manual", tmp_path / "data")


# ---------------------------------------------------------------------------------------------------------
# Errors and preparation hints shared by the three builders

ARCHIVES = {"wilds_iwildcam": ("iwildcam_v2.0", "metadata.csv"),
            "wilds_fmow": ("fmow_v1.1", "rgb_metadata.csv"),
            "objectnet": ("objectnet-1.0", "folder_to_objectnet_label.json")}


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_missing_manual_dir_is_one_clear_paragraph(name, tmp_path):
  missing = tmp_path / "no_such_dir"
  with pytest.raises(_manual.ManualDataError) as info:
    _prepare(name, missing, tmp_path / "data")
  message = str(info.value)
  assert "\n" not in message
  assert f"{missing} does not exist or is empty" in message
  folder, file = ARCHIVES[name]
  assert folder in message and file in message  # what the folder must contain
  assert f"import flyp_jax.data.builders.{name}, tensorflow_datasets as tfds; tfds.builder('{name}'" in message
  assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("name, present, missing", [
  ("wilds_iwildcam", ["train/"], "metadata.csv"),
  ("wilds_iwildcam", ["metadata.csv"], "train"),
  ("wilds_fmow", ["rgb_metadata.csv", "images/"], "country_code_mapping.csv"),
  ("objectnet", ["images/", "mappings/folder_to_objectnet_label.json"], "mappings/objectnet_to_imagenet_1k.json"),
])
def test_missing_file_is_named(name, present, missing, tmp_path):
  folder = tmp_path / "manual" / ARCHIVES[name][0]
  folder.mkdir(parents=True)
  for rel in present:
    if rel.endswith("/"):
      (folder / rel).mkdir(parents=True)
    else:
      (folder / rel).parent.mkdir(parents=True, exist_ok=True)
      (folder / rel).write_text("")
  with pytest.raises(_manual.ManualDataError) as info:
    _prepare(name, tmp_path / "manual", tmp_path / "data")
  message = str(info.value)
  assert f"{folder / missing} is missing" in message and "\n" not in message


def test_missing_csv_column_is_named(tmp_path):
  _fake_iwildcam(tmp_path / "manual")
  meta = tmp_path / "manual" / "iwildcam_v2.0" / "metadata.csv"
  meta.write_text(meta.read_text().replace("location_remapped", "loc", 1))
  with pytest.raises(_manual.ManualDataError, match=r"lacks the column\(s\) \['location_remapped'\]"):
    _prepare("wilds_iwildcam", tmp_path / "manual", tmp_path / "data")


def test_how_to_prepare():
  for name, module in _manual.MANUAL_DATASETS.items():
    text = _manual.how_to_prepare(name, manual_dir="/m", data_dir="/d")
    python, cli = text.splitlines()
    assert python == (f"python -c \"import {module}, tensorflow_datasets as tfds; tfds.builder('{name}', "
                      f"data_dir='/d').download_and_prepare(download_config=tfds.download.DownloadConfig("
                      f"manual_dir='/m'))\"")
    assert cli.startswith(f"tfds build {name} --imports={module} --manual_dir=/m --data_dir=/d  # ")
  with pytest.raises(KeyError):
    _manual.how_to_prepare("imagenet2012")


def test_how_to_prepare_python_command_works(tmp_path):
  """The Python line of how_to_prepare prepares the dataset (run in this process: no second TF start-up)."""
  _fake_fmow(tmp_path / "manual")
  python = _manual.how_to_prepare("wilds_fmow", manual_dir=str(tmp_path / "manual"),
                                  data_dir=str(tmp_path / "data")).splitlines()[0]
  assert python.startswith('python -c "') and python.endswith('"')
  exec(python[len('python -c "'):-1], {})  # pylint: disable=exec-used
  builder = tfds.builder("wilds_fmow", data_dir=str(tmp_path / "data"))
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
    s: len(rows) for s, rows in FMOW_EXPECTED.items()}


@pytest.mark.parametrize("name, split, features", [
  ("wilds_iwildcam", "id_test", {"image", "label", "location", "filename"}),
  ("wilds_fmow", "test", {"image", "label", "region", "year", "image_index"}),
  ("objectnet", "test", {"image", "label", "folder", "filename"}),
])
def test_mock_data(name, split, features, tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    ds = tfds.load(name, split=split, data_dir=str(tmp_path))
    examples = list(tfds.as_numpy(ds))
  assert len(examples) == 3
  for ex in examples:
    assert set(ex) == features
    assert ex["image"].ndim == 3 and ex["image"].shape[-1] == 3
