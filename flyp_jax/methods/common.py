"""Pieces the training methods share: labelled training batches, their on-device regularisers, encoding with the
model."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import augment, models, parallel
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.data import label_maps, pipeline


def train_batches(config, model: models.CLIP, mesh, start_step: int, features: Sequence[str] = ("label",),
                  num_classes: Optional[int] = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless local numpy batches of `config.data.train_split` ('image' plus `features`), augmented as FLYP.

  With `num_classes`, a label outside [0, num_classes) is an error rather than a silently wrong loss.
  """
  d = config.data
  return pipeline.train_batches(d.dataset, d.train_split, image_size=d.image_size or model.config.image_size,
                                global_batch_size=config.batch_size, mesh=mesh, data_dir=d.data_dir or None,
                                seed=config.seed, start_step=start_step, features=features, shards=d.shards,
                                scale=tuple(d.crop_scale), flip=d.flip, rand_augment=d.rand_augment,
                                corrupt_images=d.corrupt_images, num_classes=num_classes,
                                classnames=d.classnames if num_classes is not None else "",
                                label_table=label_maps.class_table(d.label_map))


def labelled_batches(config, model, mesh, start_step: int) -> Iterator[dict[str, jax.Array]]:
  """Global batches {'image' [B, S, S, 3] float32, 'label' [B] int32} sharded over the data axis.

  Labels index `config.data.classnames` (FLYP's captions, the columns of FT's head); one outside them is an
  error.
  """
  n_classes = len(classnames_lib.of_data(config.data))
  batches = train_batches(config, model, mesh, start_step, num_classes=n_classes)  # checked now, not at the first step
  return (parallel.global_batch({"image": b["image"], "label": b["label"].astype(np.int32)}, mesh) for b in batches)


def labelled_batch_shapes(config, model) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batches of `labelled_batches` as shapes (what `flyp_jax.tpu_plan` compiles the step for)."""
  size, n = config.data.image_size or model.config.image_size, config.batch_size
  return {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32),
          "label": jax.ShapeDtypeStruct((n,), jnp.int32)}


def regularize(config, images: jax.Array, labels: jax.Array, rng: jax.Array, mesh, num_classes: int,
               label_smoothing: float):
  """A labelled batch's regularisers on the device, as timm's training transform and Mixup order them: random
  erasing of each image (`data.random_erasing`, after normalisation, so call this on the images the model reads),
  then mixup/CutMix (`config.mixup`), one lambda per device of the data axis. (images, targets): the targets are
  soft [B, num_classes] (with `label_smoothing`) when mixing, else `labels`, for `losses.cross_entropy`. The
  methods whose loss calls this are config_checks.REGULARIZED_METHODS."""
  if config.data.random_erasing:
    images = augment.random_erasing(images, jax.random.fold_in(rng, 0x45524153), config.data.random_erasing)
  mixup = augment.MixupSettings.from_config(config)
  if not mixup.enabled:
    return images, labels
  return mixup.apply(images, labels, jax.random.fold_in(rng, 0x4D495855), num_classes, label_smoothing,
                     groups=mesh.shape[parallel.DATA])


def image_features(model: models.CLIP, clip_params, images: jax.Array) -> jax.Array:
  """L2-normalised image embeddings [B, embed_dim], float32."""
  return models.normalize(model.apply({"params": clip_params}, images, method=model.encode_image))


def text_features(model: models.CLIP, clip_params, tokens: jax.Array) -> jax.Array:
  """L2-normalised text embeddings [B, embed_dim], float32."""
  return models.normalize(model.apply({"params": clip_params}, tokens, method=model.encode_text))
