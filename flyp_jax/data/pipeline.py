"""TFDS -> tf.data -> host numpy -> global jax.Array: loading, CLIP preprocessing, batching.

Each process reads its own disjoint part of a split (`tfds.even_splits` over processes). Evaluation pads
the last batch and marks padding with `mask = 0`, and every process runs the same number of batches, so
each dataset compiles once and counts are exact. Training drops the remainder.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from flyp_jax import parallel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # of CLIP's pretraining images, RGB in [0, 1]
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Builders that generate their data locally: prepared on first use instead of raising.
OFFLINE_BUILDERS = ("domain_shapes",)

class DatasetNotPreparedError(RuntimeError):
  """A TFDS dataset is missing from data_dir; the message says how to prepare it."""


def get_builder(name: str, data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `name` ("imagenet_v2/matched-frequency", "domain_shapes", ...)."""
  import flyp_jax.data.builders  # noqa: F401  registers the project's builders with TFDS
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotPreparedError(f"unknown TFDS dataset {name!r}: {str(e).splitlines()[0]}") from None
  base = name.split("/")[0].split(":")[0]
  if base in OFFLINE_BUILDERS and not builder.is_prepared():
    builder.download_and_prepare()
  return builder


def _as_dataset(builder: tfds.core.DatasetBuilder, split: str, **kwargs) -> tf.data.Dataset:
  try:
    return builder.as_dataset(split=split, **kwargs)
  except (AssertionError, ValueError, KeyError, tf.errors.NotFoundError) as e:
    raise DatasetNotPreparedError(
        f"TFDS dataset {builder.name!r}, split {split!r}, is not available in {builder.data_dir_root} "
        f"({str(e).splitlines()[0]}). {how_to_prepare(builder)}") from None


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


def preprocess_eval(image: tf.Tensor, size: int) -> tf.Tensor:
  """[H, W, 3] uint8 -> [size, size, 3] float32: resize the short side to `size` (bicubic), centre crop, normalise."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = size / tf.minimum(h, w)
  new_h = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
  new_w = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
  image = _resize(image, (new_h, new_w))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  image = image[top:top + size, left:left + size]
  return tf.ensure_shape(normalize_image(image), (size, size, 3))


def preprocess_train(image: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3),
                     flip: bool = False) -> tf.Tensor:
  """Random resized crop (area fraction in `scale`, aspect ratio in `ratio`, as FLYP trains), optional flip.

  `seed`: int32 [2], so that a given (example, epoch) always gets the same crop (stateless, resumable).
  """
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, area_range=scale,
      aspect_ratio_range=ratio, min_object_covered=0.0, max_attempts=10, use_image_if_no_bounding_boxes=True)
  image = _resize(tf.slice(image, begin, crop_size), (size, size))
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
  return tf.ensure_shape(normalize_image(image), (size, size, 3))


# ---------------------------------------------------------------------------------------------- batches
def eval_batches(name: str, split: str, *, image_size: int, global_batch_size: int, mesh: jax.sharding.Mesh,
                 data_dir: Optional[str] = None, group_feature: Optional[str] = None,
                 label_feature: str = "label") -> Iterator[dict[str, jax.Array]]:
  """Global batches {'image' [B, S, S, 3] f32, 'label' [B] i32, 'group' [B] i32, 'mask' [B] i32}.

  All batches have the same shape (the last is padded, mask 0), and every process yields the same number of
  batches, so one compiled step serves the whole dataset and sums over `mask` are exact.
  """
  local_bs = parallel.local_batch_size(global_batch_size, mesh)
  ds = _as_dataset(get_builder(name, data_dir), process_split(split), read_config=tfds.ReadConfig(
      try_autocache=False))

  def convert(ex):
    return {"image": preprocess_eval(ex["image"], image_size), "label": tf.cast(ex[label_feature], tf.int32),
            "group": tf.cast(ex[group_feature], tf.int32) if group_feature else tf.constant(0, tf.int32)}

  ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE).batch(local_bs).prefetch(tf.data.AUTOTUNE)
  n_local = int(ds.cardinality())
  if n_local < 0:  # unknown: count once
    n_local = sum(1 for _ in ds)
  n_batches = n_local
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    n_batches = int(np.max(multihost_utils.process_allgather(np.int32(n_local))))
  blank = {"image": np.zeros((local_bs, image_size, image_size, 3), np.float32),
           "label": np.zeros((local_bs,), np.int32), "group": np.zeros((local_bs,), np.int32),
           "mask": np.zeros((local_bs,), np.int32)}
  it = iter(tfds.as_numpy(ds))
  for _ in range(n_batches):
    batch = next(it, None)
    yield parallel.global_batch(blank if batch is None else _pad(batch, local_bs), mesh)


def _pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  n = len(batch["label"])
  out = {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
  out["mask"] = (np.arange(size) < n).astype(np.int32)
  return out


def train_dataset(name: str, split: str, *, image_size: int, global_batch_size: int, mesh: jax.sharding.Mesh,
                  data_dir: Optional[str] = None, seed: int = 0, start_step: int = 0,
                  features: Sequence[str] = ("label",), shuffle_buffer: int = 10_000, shards: int = 0,
                  **augment) -> tf.data.Dataset:
  """An endless, shuffled tf.data pipeline of this process's local batches, starting at step `start_step`.

  Yields numpy-able dicts {'image' [b, S, S, 3] f32, <feature> [b] ...} with b the local batch size; turn them
  into global arrays with `parallel.global_batch`. `augment` goes to `preprocess_train` (scale, ratio, flip).

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
  """
  parallel.local_batch_size(global_batch_size, mesh)  # a clear error for a batch the data axis does not split
  shards = shards or jax.process_count()
  if shards % jax.process_count() or global_batch_size % shards:
    raise ValueError(f"data.shards={shards} must be a multiple of the {jax.process_count()} processes and divide "
                     f"the batch size {global_batch_size}")
  per_process = shards // jax.process_count()
  builder = get_builder(name, data_dir)
  streams = [_part_stream(builder, name, split, part, shards, global_batch_size // shards, image_size=image_size,
                          seed=seed, start_step=start_step, features=features, shuffle_buffer=shuffle_buffer,
                          **augment)
             for part in range(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)]
  ds = streams[0] if len(streams) == 1 else tf.data.Dataset.zip(tuple(streams)).map(
      lambda *parts: {k: tf.concat([p[k] for p in parts], axis=0) for k in parts[0]})
  return ds.prefetch(tf.data.AUTOTUNE)


def _part_stream(builder, name: str, split: str, part: int, parts: int, batch_size: int, *, image_size: int,
                 seed: int, start_step: int, features: Sequence[str], shuffle_buffer: int,
                 **augment) -> tf.data.Dataset:
  """Batches of `batch_size` from part `part` of `parts` of the split (see `train_dataset`)."""
  subsplit = process_split(split, part, parts)
  base = _as_dataset(builder, subsplit, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
                     read_config=tfds.ReadConfig(try_autocache=False, add_tfds_id="tfds_id" in features))
  n = builder.info.splits[subsplit].num_examples
  if n < 1:
    raise ValueError(f"{name!r} split {subsplit!r} is empty: nothing to train on")
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
