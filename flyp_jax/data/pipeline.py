"""TFDS -> tf.data -> host numpy -> global jax.Array: loading, CLIP preprocessing, batching.

Each process reads its own disjoint part of a split (`tfds.even_splits` over processes). Evaluation pads
the last batch and marks padding with `mask = 0`, and every process runs the same number of batches, so
each dataset compiles once and counts are exact. Training drops the remainder.

Images whose bytes do not decode (corrupt, truncated, not an image) are an error naming the record, or, with
`corrupt_images="skip"`, left out and counted: evaluation masks them (they are not in the metrics), training
removes them from the split before shuffling, so the stream stays a function of (seed, step).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterator, Optional, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from flyp_jax import errors, parallel
from flyp_jax.data import image_folder
from flyp_jax.data import rand_augment as rand_augment_lib

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # of CLIP's pretraining images, RGB in [0, 1]
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Builders that generate their data locally: prepared on first use instead of raising.
OFFLINE_BUILDERS = ("domain_shapes",)

CORRUPT_IMAGES = ("error", "skip")  # what an undecodable image does: stop with an error, or is left out


class DatasetNotPreparedError(errors.UserError, RuntimeError):
  """A TFDS dataset or split is missing from data_dir; the message says how to prepare it."""


class UndecodableImageError(errors.UserError, ValueError):
  """Images of a dataset cannot be decoded (corrupt or truncated bytes, or not an image)."""


class EmptySplitError(errors.UserError, ValueError):
  """A split, or a process's part of it, has no examples (left)."""


class LabelOutOfRangeError(errors.UserError, ValueError):
  """A training label is not one of the classes the method trains on."""


class DamagedDatasetError(errors.UserError, IOError):
  """A file of a prepared dataset is missing, truncated or corrupted (a bad copy); the message names it."""


# What reading a damaged file raises in tf.data: a record's checksum or length (DataLossError), a shard that is gone
# (NotFoundError), or a read past a truncated end (OutOfRangeError is the normal end, so not that).
_DAMAGED_FILE_ERRORS = (tf.errors.DataLossError, tf.errors.NotFoundError)


def _op_message(error: BaseException) -> str:
  """A TensorFlow op error's own words, without its function-node prefix and op suffix."""
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  return re.sub(r"\s*\[Op:\w+\].*$", "", re.sub(r"^\{\{[^}]*\}\}\s*", "", text)) or type(error).__name__


def damaged_file_error(builder: tfds.core.DatasetBuilder, split, error: BaseException) -> DamagedDatasetError:
  """The error for a read of `split` that failed with `error`: the first of the split's files that is missing or
  does not read to its end (each is read again to find it), and how to make it whole again."""
  base = split.split("[")[0] if isinstance(split, str) else str(split)
  bad, why = None, _op_message(error)
  for path in builder.info.splits[base].filepaths:
    if not tf.io.gfile.exists(os.fspath(path)):
      bad, why = os.fspath(path), "missing"
      break
    try:
      for _ in tf.data.TFRecordDataset(os.fspath(path)):
        pass
    except tf.errors.OpError as e:
      bad, why = os.fspath(path), _op_message(e)
      break
  where = f"file {bad}" if bad else f"one of its files in {builder.data_dir}"
  remake = (f"delete it and run the command again: {builder.name} is generated here, without a download"
            if builder.name in OFFLINE_BUILDERS or image_folder.is_converted(builder)
            else f"delete it and prepare the dataset again. {how_to_prepare(builder)}")
  return DamagedDatasetError(
      f"TFDS dataset {builder.name!r}, split {split!r}: {where} is damaged ({why}), as a partial or bad copy leaves "
      f"it; nothing was computed from the readable part. Copy the dataset folder {builder.data_dir} again from an "
      f"intact copy, or {remake}.")


def get_builder(name: str, data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `name`: a registered name ("imagenet_v2/matched-frequency", "domain_shapes", ...), or the
  path of a TFDS dataset directory or an image folder (`flyp_jax.data.image_folder`)."""
  import flyp_jax.data.builders  # noqa: F401  registers the project's builders with TFDS
  if image_folder.is_path(name):
    return image_folder.builder(name, data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotPreparedError(f"unknown TFDS dataset {name!r}: {str(e).splitlines()[0]} (a dataset of your own "
                                  f"is named by its path: a TFDS dataset directory or an image folder)") from None
  base = name.split("/")[0].split(":")[0]
  if base in OFFLINE_BUILDERS and not builder.is_prepared():
    # TFDS would announce a download ("Downloading and preparing dataset Unknown size"): there is none.
    print(f"building {name} in {builder.data_dir_root} (generated here, no download)", flush=True)
    with image_folder.quietly():
      builder.download_and_prepare()
  return builder


def _as_dataset(builder: tfds.core.DatasetBuilder, split: str, **kwargs) -> tf.data.Dataset:
  try:
    return builder.as_dataset(split=split, **kwargs)
  except (AssertionError, ValueError, KeyError, tf.errors.NotFoundError) as e:
    raise _missing(builder, split, str(e).splitlines()[0]) from None


def _missing(builder: tfds.core.DatasetBuilder, split, reason: str = "") -> DatasetNotPreparedError:
  """The error for a dataset that is not prepared in data_dir, or a split it does not have."""
  if builder.is_prepared() and builder.info.splits and split_size(builder, split) is None:
    return DatasetNotPreparedError(
        f"TFDS dataset {builder.name!r} in {builder.data_dir_root} has no split {split!r}; its splits are "
        f"{sorted(builder.info.splits)}. Use one of them (a slice such as 'train[:90%]' works too), or prepare "
        f"the dataset again if the split should be there.")
  return DatasetNotPreparedError(
      f"TFDS dataset {builder.name!r}, split {split!r}, is not available in {builder.data_dir_root} "
      f"({reason or 'the dataset is not prepared there'}). {how_to_prepare(builder)}")


def label_feature(builder: tfds.core.DatasetBuilder):
  """The dataset's 'label' feature (a ClassLabel: num_classes, names), or None where it has none."""
  return builder.info.features["label"] if "label" in builder.info.features else None


def split_size(builder: tfds.core.DatasetBuilder, split) -> Optional[int]:
  """Examples in `split` (a name, a slice such as 'train[:10%]', or a process's part) by the dataset's
  metadata; None where the metadata does not know the split."""
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError, AssertionError):
    return None


def num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
  """`split_size`, with a missing dataset or split as a `DatasetNotPreparedError` saying what to do."""
  n = split_size(builder, split)
  if n is None:
    raise _missing(builder, split)
  return n


def how_to_prepare(builder: tfds.core.DatasetBuilder) -> str:
  """One paragraph: what to download (for manual datasets) and the command that prepares the dataset."""
  from flyp_jax.data.builders import _manual
  name, data_dir = builder.name, builder.data_dir_root
  manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if manual:
    return (f"It needs a manual download: {_manual.one_paragraph(manual)} Then prepare it with: "
            f"{_manual.python_command(name, manual_dir='MANUAL_DIR', data_dir=data_dir)}")
  return (f"On a machine with internet access, prepare it with "
          f"{_manual.python_command(name, manual_dir=None, data_dir='DATA_DIR')} and copy DATA_DIR/{name} to "
          f"{data_dir} (a local path or a gs:// bucket).")


def process_split(split: str, index: Optional[int] = None, count: Optional[int] = None) -> str:
  """This process's disjoint, near-equal part of `split` (the whole split on one process)."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  return split if count == 1 else tfds.even_splits(split, n=count, drop_remainder=False)[index]


# ----------------------------------------------------------------------------------------- preprocessing
def normalize_image(image: tf.Tensor) -> tf.Tensor:
  """uint8 or [0, 255] float RGB -> float32 normalised with CLIP's mean and std."""
  image = tf.cast(image, tf.float32) / 255.0
  return (image - CLIP_MEAN) / CLIP_STD


def _resize(image: tf.Tensor, size) -> tf.Tensor:
  # Bicubic with antialiasing, as CLIP's PIL-based preprocessing; clip the bicubic overshoot back to [0, 255].
  return tf.clip_by_value(tf.image.resize(tf.cast(image, tf.float32), size, method="bicubic", antialias=True),
                          0.0, 255.0)


def preprocess_eval(image: tf.Tensor, size: int, crop_fraction: float = 1.0) -> tf.Tensor:
  """[H, W, 3] uint8 -> [size, size, 3] float32: resize the short side to int(size / crop_fraction) (bicubic),
  centre crop `size`, normalise. crop_fraction 1 is CLIP's transform; 224 / 256 (resize to 256, crop 224) that of
  MAE's and attention transfer's `util/datasets.py` `build_transform`."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  short = int(size / crop_fraction)
  scale = short / tf.minimum(h, w)
  new_h = tf.maximum(short, tf.cast(tf.round(h * scale), tf.int32))
  new_w = tf.maximum(short, tf.cast(tf.round(w * scale), tf.int32))
  image = _resize(image, (new_h, new_w))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  image = image[top:top + size, left:left + size]
  return tf.ensure_shape(normalize_image(image), (size, size, 3))


def preprocess_train(image: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3),
                     flip: bool = False, rand_augment: str = "") -> tf.Tensor:
  """Random resized crop (area fraction in `scale`, aspect ratio in `ratio`, as FLYP trains), optional flip, then
  timm's RandAugment of spec `rand_augment` ('' none; flyp_jax/data/rand_augment.py) on the uint8 image, as timm's
  create_transform orders them.

  `seed`: int32 [2], so that a given (example, epoch) always gets the same crop (stateless, resumable).
  """
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, area_range=scale,
      aspect_ratio_range=ratio, min_object_covered=0.0, max_attempts=10, use_image_if_no_bounding_boxes=True)
  image = _resize(tf.slice(image, begin, crop_size), (size, size))
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
  if rand_augment:  # on uint8, as PIL's ops (the resize's rounding, as PIL's resize gives uint8)
    image = rand_augment_lib.apply(tf.cast(tf.round(image), tf.uint8), rand_augment_lib.parse(rand_augment), seed)
  return tf.ensure_shape(normalize_image(image), (size, size, 3))


# ----------------------------------------------------------------------------------------- bad images
def _check_corrupt_images(corrupt_images: str) -> None:
  if corrupt_images not in CORRUPT_IMAGES:
    raise errors.BadValue(f"data.corrupt_images must be one of {CORRUPT_IMAGES}, got {corrupt_images!r}")


def _read_encoded(builder: tfds.core.DatasetBuilder, part, add_tfds_id: bool = False) -> tf.data.Dataset:
  # Images stay encoded: they are decoded where a failure can be caught and traced to its record, and records a
  # resumed run skips are never decoded. The order is the files' order, so record i is the same on every read.
  return _as_dataset(builder, part, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
                     read_config=tfds.ReadConfig(try_autocache=False, add_tfds_id=add_tfds_id))


def _decode_flagged(ds: tf.data.Dataset, image_feature) -> tf.data.Dataset:
  """Decode each element's 'image'; one that does not decode is kept, flagged, instead of stopping the stream.

  Exactly one output per input, in order: the element with 'image' decoded ([H, W, C] uint8), 'image_ok' True and
  'encoded' ''; or, for bytes that do not decode, a black 1x1 'image', 'image_ok' False and the bytes in 'encoded'
  (for the error message). tf.data has no per-element try: each element is decoded in a dataset of its own
  whose error is dropped, with the flagged stand-in queued behind it.
  """
  channels = image_feature.shape[-1] or 3
  if ds.element_spec["image"].dtype != tf.string:  # already decoded (a mock, a dataset of raw arrays)
    return ds.map(lambda ex: dict(ex, image_ok=tf.constant(True), encoded=tf.constant("")))

  def decoded(ex):
    return dict(ex, image=image_feature.decode_example(ex["image"]), image_ok=tf.constant(True),
                encoded=tf.constant(""))

  def stand_in(ex):
    return dict(ex, image=tf.zeros([1, 1, channels], image_feature.tf_dtype), image_ok=tf.constant(False),
                encoded=ex["image"])

  def one(ex):
    single = tf.data.Dataset.from_tensors(ex)
    return single.map(decoded).ignore_errors().concatenate(single.map(stand_in)).take(1)

  return ds.interleave(one, block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _decoder_message(encoded: bytes) -> str:
  """The decoder's own complaint about `encoded`, one line."""
  try:
    tf.io.decode_image(encoded, expand_animations=False)
  except tf.errors.OpError as e:
    # Without TensorFlow's "{{function_node ...}}" prefix and "[Op:DecodeImage]" suffix.
    return re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", e.message.strip().splitlines()[0]).strip().rstrip(".")
  return "the image decodes alone but not as the dataset's image feature"


def undecodable_records(builder: tfds.core.DatasetBuilder, part, limit: Optional[int] = None
                        ) -> list[tuple[int, str, str]]:
  """(index in `part`, tfds_id, decoder message) of the records of `part` whose image does not decode.

  Decodes every image of `part` once (in parallel), stopping after `limit` bad records.
  """
  ds = _read_encoded(builder, part, add_tfds_id=True).enumerate().map(lambda i, ex: dict(ex, index=i))
  ds = _decode_flagged(ds, builder.info.features["image"]).filter(lambda ex: tf.logical_not(ex["image_ok"]))
  ds = ds.map(lambda ex: {k: ex[k] for k in ("index", "tfds_id", "encoded")})
  out = []
  for ex in tfds.as_numpy(ds if limit is None else ds.take(limit)):
    out.append((int(ex["index"]), ex["tfds_id"].decode(), _decoder_message(ex["encoded"])))
  return out


def _undecodable_error(name: str, split, what: str, tfds_id: str, message: str) -> UndecodableImageError:
  return UndecodableImageError(
      f"{what} of TFDS dataset {name!r}, split {split!r}, cannot be decoded (one of them: record "
      f"{tfds_id!r}: {message}). Re-create the dataset from intact image files, or set "
      f"--config.data.corrupt_images=skip to leave undecodable images out (training then never sees them; "
      f"evaluation does not count them, and both report how many were skipped).")


# ---------------------------------------------------------------------------------------------- batches
# Every evaluation of a run reads the same splits again. Building their tf.data pipelines traces the map
# functions (autograph included), which takes longer than reading a small split, so each process keeps them: a
# tf.data.Dataset is a description, and its files are read afresh each time it is iterated. The key holds the
# prepared dataset's directory and the split's size, so a dataset prepared again elsewhere or with another size
# gets a new pipeline, and the builder class's reading method, which `tfds.testing.mock_data` replaces.
_EVAL_PIPELINES: dict = {}
_EVAL_PIPELINES_KEPT = 64


def _eval_pipeline(builder: tfds.core.DatasetBuilder, part: str, image_size: int, local_bs: int,
                   group_feature: Optional[str], label_feature: str,
                   crop_fraction: float) -> tuple[Optional[tf.data.Dataset], int]:
  """(batched evaluation pipeline of this process's `part`, or None when it is empty; its number of examples)."""
  n_examples = split_size(builder, part)
  key = (str(builder.data_dir), part, n_examples, image_size, local_bs, group_feature, label_feature, crop_fraction,
         type(builder).as_dataset)
  if key in _EVAL_PIPELINES:
    return _EVAL_PIPELINES[key]

  def convert(ex):
    return {"image": preprocess_eval(ex["image"], image_size, crop_fraction),
            "label": tf.cast(ex[label_feature], tf.int32),
            "group": tf.cast(ex[group_feature], tf.int32) if group_feature else tf.constant(0, tf.int32),
            "image_ok": ex["image_ok"], "tfds_id": ex.get("tfds_id", tf.constant("")), "encoded": ex["encoded"]}

  # A process can have no share of a split smaller than the number of processes: it yields blank batches.
  ds = None
  if n_examples != 0:
    ds = _read_encoded(builder, part, add_tfds_id=True)
    if ds.cardinality() >= 0:
      n_examples = int(ds.cardinality())
    elif n_examples is None:  # neither the metadata nor tf.data know: count the encoded records
      n_examples = sum(1 for _ in ds)
    ds = _decode_flagged(ds, builder.info.features["image"])
    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(local_bs).prefetch(tf.data.AUTOTUNE)
  if len(_EVAL_PIPELINES) >= _EVAL_PIPELINES_KEPT:
    _EVAL_PIPELINES.pop(next(iter(_EVAL_PIPELINES)))
  _EVAL_PIPELINES[key] = ds, n_examples
  return ds, n_examples


def eval_batches(name: str, split: str, *, image_size: int, global_batch_size: int, mesh: jax.sharding.Mesh,
                 data_dir: Optional[str] = None, group_feature: Optional[str] = None,
                 label_feature: str = "label", corrupt_images: str = "error",
                 label_table: Optional[np.ndarray] = None, crop_fraction: float = 1.0) -> Iterator[dict[str, jax.Array]]:
  """Global batches {'image' [B, S, S, 3] f32, 'label' [B] i32, 'group' [B] i32, 'mask' [B] i32}, each image
  `preprocess_eval`'s (with `crop_fraction`).

  `label_table` (`label_maps.class_table`): TFDS label -> class index; examples whose label maps to -1 get mask 0
  (no class: not counted), a label outside the table stays out of range (the evaluator refuses it).

  All batches have the same shape (the last is padded, mask 0), and every process yields the same number of
  batches, so one compiled step serves the whole dataset and sums over `mask` are exact.

  Undecodable images get mask 0 too. With corrupt_images="error" (the default) the generator raises
  `UndecodableImageError` after its last batch, on every process at once; with "skip" it logs a warning with
  the number skipped (over all processes), which the metrics then do not count.
  """
  _check_corrupt_images(corrupt_images)
  local_bs = parallel.local_batch_size(global_batch_size, mesh)
  builder = get_builder(name, data_dir)
  if split_size(builder, split) == 0:
    raise EmptySplitError(f"TFDS dataset {name!r}, split {split!r}, has no examples: there is nothing to evaluate. "
                          f"Check the split name (and slice), or prepare the dataset again.")
  ds, n_examples = _eval_pipeline(builder, process_split(split), image_size, local_bs, group_feature, label_feature,
                                  crop_fraction)
  batches: Iterator = iter(tfds.as_numpy(ds)) if ds is not None else iter(())
  n_batches = int(parallel.across_processes(-(-n_examples // local_bs), np.max))
  blank = {"image": np.zeros((local_bs, image_size, image_size, 3), np.float32),
           "label": np.zeros((local_bs,), np.int32), "group": np.zeros((local_bs,), np.int32),
           "mask": np.zeros((local_bs,), np.int32)}
  bad, decoded, first_bad, damaged = 0, 0, None, None
  for _ in range(n_batches):
    try:
      batch = next(batches, None)
    except _DAMAGED_FILE_ERRORS as e:  # the rest of this process's part is blank; all raise after the last batch
      damaged, batches, batch = damaged_file_error(builder, split, e), iter(()), None
      if jax.process_count() > 1:
        parallel.tell_input_error(damaged)  # its paragraph, for the other processes to print too
    if batch is None:
      local = blank
    else:
      ok, ids, encoded = batch.pop("image_ok"), batch.pop("tfds_id"), batch.pop("encoded")
      local = _pad(batch, local_bs)
      local["mask"][:len(ok)] *= ok.astype(np.int32)
      if label_table is not None:
        local["label"], kept = map_labels(local["label"], label_table)
        local["mask"] *= kept.astype(np.int32)
      decoded += int(ok.sum())
      if not ok.all():
        bad += int((~ok).sum())
        if first_bad is None:
          first_bad = (ids[~ok][0].decode(), _decoder_message(encoded[~ok][0]))
    yield parallel.global_batch(local, mesh)
  # After the last batch, so that all processes learn of a bad image or file on another one and stop together.
  total_bad, total_decoded, total_damaged = (int(v) for v in parallel.across_processes([bad, decoded,
                                                                                        damaged is not None]))
  if total_damaged:
    raise damaged or parallel.told_input_error() or DamagedDatasetError(
        f"TFDS dataset {name!r}, split {split!r}: a file read by another process is damaged; that process's error "
        f"names it.")
  if not total_bad:
    return
  tfds_id, message = first_bad or ("on another process", "see that process's log")
  if corrupt_images == "error":
    raise _undecodable_error(name, split, f"{total_bad} image{'s' if total_bad > 1 else ''}", tfds_id, message)
  if not total_decoded:
    raise EmptySplitError(f"no image of TFDS dataset {name!r}, split {split!r}, can be decoded (one of them: record "
                          f"{tfds_id!r}: {message}): there is nothing to evaluate. Re-create the dataset from "
                          f"intact image files.")
  logging.warning("skipped %d undecodable images in %s/%s: they are not counted in its metrics (one of them: "
                  "record %r: %s)", total_bad, name, split, tfds_id, message)


def map_labels(labels: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(class indices, kept) of TFDS `labels` under `table`: a label mapped to -1 is not kept (its class index
  reads 0); one outside the table maps to len(table) + label, out of every class range, so it is refused later."""
  labels = np.asarray(labels).astype(np.int64)
  inside = (labels >= 0) & (labels < len(table))
  mapped = np.where(inside, np.asarray(table)[np.clip(labels, 0, len(table) - 1)], len(table) + np.abs(labels))
  kept = mapped != -1
  return np.where(kept, mapped, 0).astype(np.int32), kept


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(batch["label"])
  out = {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
  out["mask"] = (np.arange(size) < n).astype(np.int32)
  return out


def train_dataset(name: str, split: str, *, image_size: int, global_batch_size: int, mesh: jax.sharding.Mesh,
                  data_dir: Optional[str] = None, seed: int = 0, start_step: int = 0,
                  features: Sequence[str] = ("label",), shuffle_buffer: int = 10_000, shards: int = 0,
                  corrupt_images: str = "error", label_table: Optional[np.ndarray] = None,
                  **augment) -> tf.data.Dataset:
  """An endless, shuffled tf.data pipeline of this process's local batches, starting at step `start_step`.

  Yields numpy-able dicts {'image' [b, S, S, 3] f32, <feature> [b] ...} with b the local batch size; turn them
  into global arrays with `parallel.global_batch`. `augment` goes to `preprocess_train` (scale, ratio, flip,
  rand_augment).

  The split is read as `shards` disjoint near-equal parts (0: one per process). Each part is a stream of
  global_batch_size / shards examples per step, and a global batch is the parts' batches in order; process p
  reads parts p * shards / P, ... . The streams depend on (seed, part) only, so training depends on `shards`,
  not on how many processes read them: 1 process with shards=2 trains exactly as 2 processes do, and a run
  resumed on a slice with another number of hosts continues the same stream if `shards` is kept.

  Part s is an endless stream: epoch e is the part in an order shuffled with seed (seed, s, e), and example i of
  it gets the crop seeded by (seed, e * n + i). Epochs follow each other without a gap (a batch may hold the end
  of one and the start of the next), so every example is seen once per epoch. Starting at `start_step` begins
  at epoch start_step * b // n and skips the examples before it in that epoch, still encoded: a resumed run
  sees exactly the batches the uninterrupted run would have seen from that step on.

  Undecodable images: with corrupt_images="error" iterating raises a TensorFlow error (`train_batches` turns it
  into an `UndecodableImageError` naming the record). With "skip", every image of this process's parts is
  decoded once here to find the bad ones, which are removed before shuffling: a part is then its intact records
  (n of them), so the stream, and resuming it, stay exact.

  `label_table` (`label_maps.class_table`): the records whose label maps to -1 are removed before shuffling in
  the same way (a part is then its n records of a class), and 'label' is the class index.
  """
  _check_corrupt_images(corrupt_images)
  parallel.local_batch_size(global_batch_size, mesh)  # a clear error for a batch the data axis does not split
  shards = shards or jax.process_count()
  if shards % jax.process_count() or global_batch_size % shards:
    raise errors.BadValue(f"data.shards={shards} must be a multiple of the {jax.process_count()} processes and divide "
                     f"the batch size {global_batch_size}")
  builder = get_builder(name, data_dir)
  _check_parts_not_empty(builder, split, shards)
  parts = _process_parts(shards)
  bases = [_part_records(builder, name, split, part, shards, corrupt_images, add_tfds_id="tfds_id" in features,
                         label_table=label_table)
           for part in parts]
  if corrupt_images == "skip" and parallel.across_processes(min(n for _, n in bases), np.min) == 0:
    raise EmptySplitError(
        f"every image of a part of TFDS dataset {name!r}, split {split!r}, cannot be decoded: that part has nothing "
        f"left to train on. Re-create the dataset from intact image files.")
  streams = [_part_stream(builder, base, n, part, global_batch_size // shards, image_size=image_size, seed=seed,
                          start_step=start_step, features=features, shuffle_buffer=shuffle_buffer, **augment)
             for part, (base, n) in zip(parts, bases)]
  ds = streams[0] if len(streams) == 1 else tf.data.Dataset.zip(tuple(streams)).map(
      lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]})
  return ds.prefetch(tf.data.AUTOTUNE)


def _part_records(builder, name: str, split: str, part: int, parts: int, corrupt_images: str,
                  add_tfds_id: bool, label_table: Optional[np.ndarray] = None) -> tuple[tf.data.Dataset, int]:
  """(the encoded records of part `part` of `parts` of the split, how many), without undecodable ones if skipped."""
  subsplit = process_split(split, part, parts)
  base = _read_encoded(builder, subsplit, add_tfds_id=add_tfds_id)
  n = num_examples(builder, subsplit)
  if corrupt_images == "skip":
    bad = undecodable_records(builder, subsplit)
    if bad:
      logging.warning("skipped %d undecodable images in %s/%s (part %d of %d, %d records; one of them: %s: %s)",
                      len(bad), name, split, part, parts, n, bad[0][1], bad[0][2])
      bad_index = tf.constant([i for i, _, _ in bad], tf.int64)
      base = base.enumerate().filter(lambda i, ex: tf.logical_not(tf.reduce_any(tf.equal(i, bad_index))))
      base = base.map(lambda i, ex: ex)
      n -= len(bad)
  if label_table is not None:
    table = tf.constant(np.asarray(label_table, np.int64))
    base = base.filter(lambda ex: tf.gather(table, ex["label"]) >= 0)
    base = base.map(lambda ex: dict(ex, label=tf.gather(table, ex["label"])))
    n = int(base.reduce(np.int64(0), lambda count, _: count + 1))  # images stay encoded: a read of the part
    if n == 0:
      raise EmptySplitError(f"TFDS dataset {name!r}, split {split!r} (part {part} of {parts}), has no example of "
                            f"a class the label map keeps: there is nothing to train on.")
  return base, n


def _part_stream(builder, base: tf.data.Dataset, n: int, part: int, batch_size: int, *, image_size: int,
                 seed: int, start_step: int, features: Sequence[str], shuffle_buffer: int,
                 **augment) -> tf.data.Dataset:
  """Batches of `batch_size` from the n records `base` of part `part` (see `train_dataset`)."""
  first_epoch, skip = divmod(start_step * batch_size, n)
  part_seed = seed * 1_000_003 + part

  def epoch(e):
    shuffled = base.shuffle(min(shuffle_buffer, n), seed=part_seed * 1_000_003 + e, reshuffle_each_iteration=False)
    return shuffled.enumerate().map(lambda i, ex: (e * n + i, ex))

  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)
  image_feature = builder.info.features["image"]

  def convert(index, ex):
    example_seed = tf.stack([tf.cast(seed % (2**31 - 1), tf.int32), tf.cast(index % (2**31 - 1), tf.int32)])
    image = image_feature.decode_example(ex["image"])
    out = {"image": preprocess_train(image, image_size, example_seed, **augment)}
    out.update({f: ex[f] for f in features})
    return out

  return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)


def _process_parts(shards: int) -> range:
  """The parts of a split read as `shards` that this process reads (`shards` a multiple of the processes)."""
  per_process = (shards or jax.process_count()) // jax.process_count()
  return range(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)


def _check_parts_not_empty(builder: tfds.core.DatasetBuilder, split: str, parts: int) -> None:
  # From the dataset's metadata, the same on every process: all of them stop here, none waits for the others.
  sizes = [num_examples(builder, process_split(split, i, parts)) for i in range(parts)]
  if sum(sizes) == 0:
    raise EmptySplitError(f"TFDS dataset {builder.name!r}, split {split!r}, has no examples: there is nothing to "
                          f"train on. Check data.train_split (and its slice), or prepare the dataset again.")
  if min(sizes) == 0:
    raise EmptySplitError(
        f"TFDS dataset {builder.name!r}, split {split!r}, has {sum(sizes)} examples, fewer than the {parts} parts "
        f"it is read as (data.shards, or one per process): part {sizes.index(0)} would have none to train on. Use "
        f"a larger split, or fewer shards or processes.")


def train_batches(name: str, split: str, *, data_dir: Optional[str] = None, num_classes: Optional[int] = None,
                  label_feature: str = "label", classnames: str = "", **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """`train_dataset(name, split, ...)` as endless numpy batches, with its bad input as clear errors.

  The dataset is checked and built now (an empty split, a wrong split name fail here, not at the first batch).
  An undecodable image (corrupt_images="error") becomes an `UndecodableImageError` naming its record. With
  `num_classes`, a label outside [0, num_classes) is a `LabelOutOfRangeError` naming it (a loss would index
  past its classes without a word); a dataset whose label feature declares more classes is refused here, on
  every process.
  """
  if num_classes is not None and kwargs.get("label_table") is not None:
    table = np.asarray(kwargs["label_table"])
    if table.max() >= num_classes:
      raise _label_error(name, split, f"its label map gives class {int(table.max())}", num_classes, classnames)
  elif num_classes is not None:
    label = get_builder(name, data_dir).info.features[label_feature]
    declared = getattr(label, "num_classes", None)
    if declared is not None and declared > num_classes:
      raise _label_error(name, split, f"its label feature {label_feature!r} has {declared} classes", num_classes,
                         classnames)
  ds = train_dataset(name, split, data_dir=data_dir, **kwargs)
  return _checked_batches(ds, name, split, data_dir, kwargs.get("shards") or 0, num_classes, label_feature,
                          classnames)


def _checked_batches(ds, name, split, data_dir, shards, num_classes, label_feature, classnames):
  """The batches, each checked; with several processes, a bad input on this one is told to the others and the
  stream goes on with NaN images, so that every process's next finiteness check of the loss (the loop's, at the
  same step on all of them) stops them together with this paragraph: none of them waits for this one at a
  collective, and nothing computed from those batches is saved (the loop saves only finite states)."""
  checked = _raising_batches(ds, name, split, data_dir, shards, num_classes, label_feature, classnames)
  if jax.process_count() == 1:
    yield from checked
    return
  try:
    yield from checked
  except errors.UserError as e:
    spec = ds.element_spec
    poisoned = {k: np.full(v.shape, np.nan if v.dtype.is_floating else 0, v.dtype.as_numpy_dtype)
                for k, v in spec.items()}
    if not np.issubdtype(poisoned["image"].dtype, np.floating):
      raise
    parallel.tell_input_error(e)
    while True:
      yield poisoned


def _raising_batches(ds, name, split, data_dir, shards, num_classes, label_feature, classnames):
  it = iter(tfds.as_numpy(ds))
  while True:
    try:
      batch = next(it)
    except _DAMAGED_FILE_ERRORS as e:
      raise damaged_file_error(get_builder(name, data_dir), split, e) from None
    except tf.errors.InvalidArgumentError:
      # The error does not name the record: search this process's parts for one that does not decode.
      builder, bad = get_builder(name, data_dir), []
      for part in _process_parts(shards):
        bad = bad or undecodable_records(builder, process_split(split, part, shards or jax.process_count()),
                                         limit=1)
      if not bad:
        raise
      raise _undecodable_error(name, split, "Images", bad[0][1], bad[0][2]) from None
    if num_classes is not None:
      check_labels(batch[label_feature], name, split, num_classes, classnames)
    yield batch


def check_labels(labels: np.ndarray, name: str, split: str, num_classes: int, classnames: str = "") -> None:
  """A `LabelOutOfRangeError` naming the first label of `labels` outside [0, num_classes), if there is one."""
  labels = np.asarray(labels)
  wrong = (labels < 0) | (labels >= num_classes)
  if wrong.any():
    raise _label_error(name, split, f"it has an example with label {int(labels[wrong][0])}", num_classes, classnames)


def _label_error(name: str, split: str, what: str, num_classes: int, classnames: str) -> LabelOutOfRangeError:
  names = f" of data.classnames={classnames!r}" if classnames else ""
  return LabelOutOfRangeError(
      f"TFDS dataset {name!r}, split {split!r}, does not fit the {num_classes} classes{names} that training uses: "
      f"{what}, and labels must lie in [0, {num_classes}). Set data.classnames (and data.templates) to the "
      f"dataset's own class list, or train on a dataset whose labels index those classes.")
