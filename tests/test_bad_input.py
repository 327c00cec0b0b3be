"""Bad input gives one clear error, or is skipped and counted where configured, never a silently wrong result.

Two small TFDS builders defined here and prepared into a temporary data_dir: `bad_input_images` holds image
bytes that do not decode (not an image, a truncated PNG, a JPEG header with nothing behind it) among intact
ones, and `bad_input_labels` holds labels beyond the 10 domain_shapes class names.
"""

import io
import logging

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from flyp_jax import configs_lib, evaluate, models, parallel, train
from flyp_jax.data import pipeline, suites

SIZES = {"train": 40, "test": 21, "all_bad": 3}
CORRUPT = {"train": {3, 17, 28}, "test": {4, 12}, "all_bad": {0, 1, 2}}  # ids whose bytes do not decode


def png(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(image).save(out, format="PNG")
  return out.getvalue()


def corrupt_bytes(i: int) -> bytes:
  kind = i % 3
  if kind == 0:
    return b"this is not an image"
  if kind == 1:
    whole = png(np.random.default_rng(i).integers(0, 256, (12, 12, 3), np.uint8))
    return whole[:len(whole) // 2]
  return b"\xff\xd8\xff\xe0" + bytes(40)  # a JPEG start, no image behind it


class BadInputImages(tfds.core.GeneratorBasedBuilder):
  """Intact 12x12 PNGs and undecodable image bytes; `id` is the example's number in its split."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(num_classes=10),
        "id": tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in SIZES}

  def _generate_examples(self, split):
    for i in range(SIZES[split]):
      image = np.random.default_rng(1000 + i).integers(0, 256, (12, 12, 3), np.uint8)
      yield i, {"image": corrupt_bytes(i) if i in CORRUPT[split] else image, "label": i % 10, "id": i}


class BadInputLabels(tfds.core.GeneratorBasedBuilder):
  """Intact images; `label` (a plain integer, 10 or 11 in half of the records) and `class_label` (declared with
  12 classes) go beyond the 10 domain_shapes classes."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.Scalar(np.int64),
        "class_label": tfds.features.ClassLabel(num_classes=12)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(32):
      image = np.random.default_rng(i).integers(0, 256, (12, 12, 3), np.uint8)
      yield i, {"image": image, "label": 10 + i % 2 if i >= 16 else i % 10, "class_label": i % 12}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  for name in ("bad_input_images", "bad_input_labels"):
    tfds.builder(name, data_dir=path).download_and_prepare()
  return path


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


def record_id(data_dir, split, tfds_id):
  """The `id` feature of the record a message names by its tfds_id."""
  builder = tfds.builder("bad_input_images", data_dir=data_dir)
  ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                          read_config=tfds.ReadConfig(add_tfds_id=True))
  ids = {ex["tfds_id"].decode(): int(ex["id"]) for ex in tfds.as_numpy(ds)}
  return ids[tfds_id]


def named_record(message):
  return message.split("record '")[1].split("'")[0]


def eval_list(data_dir, mesh, split, **kwargs):
  return list(pipeline.eval_batches("bad_input_images", split, image_size=16, global_batch_size=8, mesh=mesh,
                                    data_dir=data_dir, group_feature="id", **kwargs))


def train_take(data_dir, mesh, split, n, **kwargs):
  batches = pipeline.train_batches("bad_input_images", split, image_size=16, global_batch_size=8, mesh=mesh,
                                   data_dir=data_dir, features=("label", "id"), **kwargs)
  return [next(batches) for _ in range(n)]


# ---------------------------------------------------------------------------------------- corrupt images
def test_evaluation_stops_on_an_undecodable_image_naming_it(data_dir, mesh):
  with pytest.raises(pipeline.UndecodableImageError) as e:
    eval_list(data_dir, mesh, "test")
  message = str(e.value)
  assert "2 images" in message and "'bad_input_images'" in message and "'test'" in message
  assert "corrupt_images=skip" in message and "\n" not in message
  assert record_id(data_dir, "test", named_record(message)) in CORRUPT["test"]


def test_evaluation_skips_and_counts_undecodable_images(data_dir, mesh, caplog):
  with caplog.at_level(logging.WARNING):
    batches = eval_list(data_dir, mesh, "test", corrupt_images="skip")
  assert len(batches) == 3  # 21 records in batches of 8: the batches do not depend on what decodes
  mask = np.concatenate([np.asarray(b["mask"]) for b in batches]).astype(bool)
  ids = np.concatenate([np.asarray(b["group"]) for b in batches])
  assert sorted(ids[mask]) == sorted(set(range(SIZES["test"])) - CORRUPT["test"])
  assert "skipped 2 undecodable images in bad_input_images/test" in caplog.text
  assert "not counted" in caplog.text


def test_evaluation_with_every_image_undecodable_is_an_error(data_dir, mesh):
  with pytest.raises(pipeline.EmptySplitError, match="no image .* can be decoded"):
    eval_list(data_dir, mesh, "all_bad", corrupt_images="skip")


def test_evaluator_reports_an_undecodable_image(data_dir, mesh):
  model = models.create_model(models.get_config("ViT-T/8", context_length=16))
  params = jax.jit(models.init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
  dataset = suites.EvalDataset("bad", "bad_input_images", "test", False, "domain_shapes", "domain_shapes")
  with pytest.raises(pipeline.UndecodableImageError, match="bad_input_images"):
    evaluate.Evaluator(model, (dataset,), mesh, batch_size=8, data_dir=data_dir)(params)
  config = tiny_config("ft", data_dir, dataset="bad_input_images")  # a run's evaluator follows data.corrupt_images
  config.data.corrupt_images = "skip"
  results = evaluate.from_config(model, config, mesh, datasets=(dataset,))(params)
  assert results["bad/count"] == SIZES["test"] - len(CORRUPT["test"])


def test_training_stops_on_an_undecodable_image_naming_it(data_dir, mesh):
  with pytest.raises(pipeline.UndecodableImageError) as e:
    train_take(data_dir, mesh, "train", 10)  # 80 examples from 40 records: every record is met
  message = str(e.value)
  assert "'bad_input_images'" in message and "'train'" in message and "\n" not in message
  assert record_id(data_dir, "train", named_record(message)) in CORRUPT["train"]


@pytest.mark.parametrize("shards", [0, 2])
def test_training_skips_undecodable_images_and_resumes_exactly(data_dir, mesh, caplog, shards):
  with caplog.at_level(logging.WARNING):
    full = train_take(data_dir, mesh, "train", 12, corrupt_images="skip", shards=shards)
  assert "undecodable images in bad_input_images/train" in caplog.text
  ids = np.concatenate([b["id"] for b in full])
  good = set(range(SIZES["train"])) - CORRUPT["train"]
  assert not set(ids) & CORRUPT["train"]
  # Each part's stream goes through its intact records once per epoch: 96 examples of 37 records.
  counts = np.bincount(ids, minlength=SIZES["train"])
  assert set(np.flatnonzero(counts >= 2)) == good and counts.max() <= 3
  resumed = train_take(data_dir, mesh, "train", 5, corrupt_images="skip", shards=shards, start_step=7)
  for uninterrupted, again in zip(full[7:], resumed):
    for key in ("image", "label", "id"):
      np.testing.assert_array_equal(uninterrupted[key], again[key])


def test_training_with_every_image_undecodable_is_an_error(data_dir, mesh):
  with pytest.raises(pipeline.EmptySplitError, match="nothing left to train on"):
    train_take(data_dir, mesh, "all_bad", 1, corrupt_images="skip")


def test_unknown_corrupt_images_setting_is_an_error(data_dir, mesh):
  with pytest.raises(ValueError, match="corrupt_images must be one of"):
    eval_list(data_dir, mesh, "test", corrupt_images="ignore")


# -------------------------------------------------------------------------------------------- empty splits
def test_empty_split_is_a_clear_error(data_dir, mesh):
  with pytest.raises(pipeline.EmptySplitError, match="has no examples: there is nothing to evaluate"):
    eval_list(data_dir, mesh, "test[:0]")
  with pytest.raises(pipeline.EmptySplitError, match="has no examples: there is nothing to train on"):
    train_take(data_dir, mesh, "train[:0]", 1)
  with pytest.raises(pipeline.EmptySplitError, match="fewer than the 4 parts"):
    train_take(data_dir, mesh, "train[:3]", 1, shards=4)


def test_a_process_without_evaluation_examples_still_takes_part(data_dir, mesh, monkeypatch):
  # A split smaller than the number of processes leaves some processes an empty part: they yield blank
  # batches (here, with one process, none) instead of failing as if the dataset were missing.
  monkeypatch.setattr(pipeline, "process_split", lambda split, index=None, count=None: "test[:0]")
  assert eval_list(data_dir, mesh, "test", corrupt_images="skip") == []


# ---------------------------------------------------------------------------------------------- labels
def tiny_config(method, data_dir, dataset="bad_input_labels"):
  config = configs_lib.load(f"configs/{method}.py:demo")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.update(dataset=dataset, data_dir=data_dir)
  config.update(batch_size=8, steps=8, log_every=1, checkpoint_every=0)
  config.eval.suite = ""
  config.lock()
  return config


@pytest.mark.parametrize("method", ["flyp", "ft"])
def test_training_label_outside_the_class_names_is_an_error(tmp_path, data_dir, method):
  with pytest.raises(pipeline.LabelOutOfRangeError) as e:
    train.run(tiny_config(method, data_dir), str(tmp_path))
  message = str(e.value)
  assert "'bad_input_labels'" in message and ("label 10" in message or "label 11" in message) and "10 classes" in message
  assert "'domain_shapes'" in message and "\n" not in message


def test_linear_probe_label_outside_the_class_names_is_an_error(tmp_path, data_dir):
  config = tiny_config("lp", data_dir)
  config.lp.val_split = "train"
  with pytest.raises(pipeline.LabelOutOfRangeError, match="'bad_input_labels', split 'train', does not fit the 10 "
                     "classes of data.classnames='domain_shapes'.*label 1[01]"):
    train.dispatch(config, str(tmp_path))


def test_label_feature_declaring_more_classes_is_refused_up_front(data_dir, mesh):
  with pytest.raises(pipeline.LabelOutOfRangeError, match="'class_label' has 12 classes"):
    pipeline.train_batches("bad_input_labels", "train", image_size=16, global_batch_size=8, mesh=mesh,
                           data_dir=data_dir, features=("class_label",), num_classes=10, label_feature="class_label")
  batches = pipeline.train_batches("bad_input_labels", "train", image_size=16, global_batch_size=8, mesh=mesh,
                                   data_dir=data_dir, features=("class_label",), num_classes=12,
                                   label_feature="class_label")
  assert next(batches)["class_label"].max() < 12


# ---------------------------------------------------------------------- other bad input, clear errors
def test_batch_size_not_divisible_by_the_devices(tmp_path, data_dir):
  config = tiny_config("flyp", data_dir, "bad_input_images")
  config.unlock()
  config.batch_size = 12
  with pytest.raises(ValueError, match="batch size 12 is not divisible by the 8 devices"):
    train.run(config, str(tmp_path))


def test_unknown_config_key_names_it_and_the_valid_ones():
  problem = configs_lib.unknown_override(["--config=configs/flyp.py:demo", "--config.data.corupt_images=skip"])
  assert "'config.data.corupt_images'" in problem and "'corrupt_images'" in problem
  assert configs_lib.unknown_override(["--config=configs/flyp.py:demo", "--config.data.corrupt_images=skip"]) == ""


def test_unknown_method(tmp_path, data_dir):
  config = tiny_config("flyp", data_dir, "bad_input_images")
  config.unlock()
  config.method = "flypp"
  with pytest.raises(ValueError, match="unknown method 'flypp'; known: .*'flyp'"):
    train.dispatch(config, str(tmp_path))


def test_missing_split_names_the_splits_there_are(data_dir, mesh):
  with pytest.raises(pipeline.DatasetNotPreparedError, match=r"has no split 'validation'.*\['all_bad', 'test', "
                                                             r"'train'\]"):
    eval_list(data_dir, mesh, "validation")
  with pytest.raises(pipeline.DatasetNotPreparedError, match="has no split 'training'"):
    train_take(data_dir, mesh, "training", 1)


def test_missing_dataset_says_how_to_prepare(tmp_path, mesh):
  with pytest.raises(pipeline.DatasetNotPreparedError, match="not prepared there.*tfds.build|prepare it with"):
    train_take(str(tmp_path), mesh, "train", 1)
