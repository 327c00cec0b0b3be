"""Pieces the training methods share: labelled training batches and encoding with the model."""

from __future__ import annotations

from typing import Iterator, Sequence

import jax
import numpy as np
import tensorflow_datasets as tfds

from flyp_jax import models, parallel
from flyp_jax.data import pipeline


def train_batches(config, model: models.CLIP, mesh, start_step: int,
                  features: Sequence[str] = ("label",)) -> Iterator[dict[str, np.ndarray]]:
  """Endless local numpy batches of `config.data.train_split` ('image' plus `features`), augmented as FLYP."""
  d = config.data
  ds = pipeline.train_dataset(d.dataset, d.train_split, image_size=d.image_size or model.config.image_size,
                              global_batch_size=config.batch_size, mesh=mesh, data_dir=d.data_dir or None,
                              seed=config.seed, start_step=start_step, features=features, shards=d.shards,
                              scale=tuple(d.crop_scale), flip=d.flip)
  return iter(tfds.as_numpy(ds))


def labelled_batches(config, model, mesh, start_step: int) -> Iterator[dict[str, jax.Array]]:
  """Global batches {'image' [B, S, S, 3] float32, 'label' [B] int32} sharded over the data axis."""
  for b in train_batches(config, model, mesh, start_step):
    yield parallel.global_batch({"image": b["image"], "label": b["label"].astype(np.int32)}, mesh)


def image_features(model: models.CLIP, clip_params, images: jax.Array) -> jax.Array:
  """L2-normalised image embeddings [B, embed_dim], float32."""
  return models.normalize(model.apply({"params": clip_params}, images, method=model.encode_image))


def text_features(model: models.CLIP, clip_params, tokens: jax.Array) -> jax.Array:
  """L2-normalised text embeddings [B, embed_dim], float32."""
  return models.normalize(model.apply({"params": clip_params}, tokens, method=model.encode_text))
