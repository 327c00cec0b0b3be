"""k-shot samples: exactly k examples of each class from a split, drawn by seed, as a TFDS split expression.

FLYP's few-shot loop (locuslab/FLYP src/models/flyp_loss_few_shot.py) takes, at each of its repetitions, the
first k images of each class from a freshly shuffled training loader, and the same from the validation set;
the training batch is those k * C images, the validation batch (which selects the epoch) the other k * C.
Here a sample is drawn from the labels of the whole split with numpy's generator seeded by (seed, stream), so
a repetition's sample is a function of its seed alone: every method run at that seed trains on the same images.
The sample becomes a split such as 'train[17:18]+train[301:302]', which every reader of the project (training
pipeline, evaluator, linear probe) takes like any split.
"""

from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from flyp_jax import errors, files

TRAIN_STREAM, VALIDATION_STREAM = 0, 1  # the generator streams of a repetition's training and validation samples


class NotEnoughExamplesError(errors.UserError, ValueError):
  """A class has fewer than k examples in the split a k-shot sample is drawn from."""


def split_labels(name: str, split: str, data_dir: Optional[str] = None, label_table: Optional[np.ndarray] = None,
                 cache_dir: Optional[str] = None) -> np.ndarray:
  """The labels [N] int64 of every record of `split`, in record order (class indices under `label_table`,
  -1 for a record of no class). Only the label feature is decoded. With `cache_dir`, kept there as a .npy file
  (PatchCamelyon's train split has 262,144 records: read once per few-shot command, not per repetition).
  """
  from flyp_jax.data import pipeline
  _check_plain(split)
  path = cache_dir and os.path.join(cache_dir, f"labels_{name.replace('/', '_')}_{split}.npy")
  if path and files.exists(path):
    labels = _load_npy(path)
  else:
    builder = pipeline.get_builder(name, data_dir)
    pipeline.num_examples(builder, split)  # a missing dataset or split: the error that says how to prepare it
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=tfds.decode.PartialDecoding({"label": True}))
    chunks = [np.asarray(b["label"], np.int64) for b in tfds.as_numpy(ds.batch(8192))]
    labels = np.concatenate(chunks) if chunks else np.zeros((0,), np.int64)
    if path:
      _save_npy(path, labels)
  if label_table is not None:
    mapped, kept = pipeline.map_labels(labels, label_table)
    labels = np.where(kept, mapped, -1).astype(np.int64)
  return labels


def sample(labels: np.ndarray, k: int, num_classes: int, seed: int, stream: int = TRAIN_STREAM) -> np.ndarray:
  """Sorted record indices [k * num_classes]: k distinct records of each class 0..num_classes-1, drawn without
  replacement by `np.random.default_rng([seed, stream])` (records labelled -1 are never drawn)."""
  if k < 1:
    raise errors.BadValue(f"k must be at least 1, got {k}")
  labels = np.asarray(labels)
  rng = np.random.default_rng([int(seed), int(stream)])
  chosen = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    if len(members) < k:
      raise NotEnoughExamplesError(
          f"class {c} has {len(members)} examples in the split, fewer than k={k}: a {k}-shot sample needs at least "
          f"{k} of every class. Use a smaller k (few_shot.k) or a larger split.")
    chosen.append(rng.choice(members, size=k, replace=False))
  return np.sort(np.concatenate(chosen))


def split_expression(split: str, indices: np.ndarray) -> str:
  """The TFDS split reading exactly the records `indices` (sorted, distinct) of `split`, in that order; runs of
  consecutive records become one slice ('train[3:6]')."""
  _check_plain(split)
  indices = np.asarray(indices, np.int64)
  if indices.size == 0 or np.any(np.diff(indices) <= 0) or indices[0] < 0:
    raise errors.BadValue(f"need sorted distinct non-negative record indices, got {indices.tolist()}")
  parts, start = [], 0
  for i in range(1, len(indices) + 1):
    if i == len(indices) or indices[i] != indices[i - 1] + 1:
      parts.append(f"{split}[{indices[start]}:{indices[i - 1] + 1}]")
      start = i
  return "+".join(parts)


def _check_plain(split: str) -> None:
  if any(ch in split for ch in "[]+"):
    raise errors.BadValue(f"a k-shot sample is drawn from a whole split, not from {split!r} (a slice or union): name "
                     f"one of the dataset's splits as data.train_split and the suite's validation split")


def _save_npy(path: str, array: np.ndarray) -> None:
  """Written by process 0 under another name, then moved: no process reads a half-written file."""
  import jax
  if jax.process_index() != 0:
    return
  files.makedirs(os.path.dirname(path))
  buffer = io.BytesIO()
  np.save(buffer, array)
  files.write_atomically(path, buffer.getvalue())


def _load_npy(path: str) -> np.ndarray:
  with files.open_file(path, "rb") as f:
    return np.load(f)
