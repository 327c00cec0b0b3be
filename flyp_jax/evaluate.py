"""Zero-shot heads, the jit-compiled evaluator and its metrics.

Evaluation keeps static shapes: batches are padded and masked (`data.pipeline.eval_batches`), so each
dataset shape compiles once. The compiled step accumulates integer counts on the devices (correct top-1 /
top-5, per-class true/predicted/true-positive counts, per-group counts), which are exact across hosts;
metrics are computed from those counts once per dataset, on the host.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import errors, files, models, parallel
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.data import label_maps, pipeline, suites
from flyp_jax.data import templates as templates_lib
from flyp_jax.tokenizer import prompt_tokens

Array = jax.Array


# ------------------------------------------------------------------------------------------ zero-shot head
HEAD_BATCH_SIZE = 1024  # prompts a zero-shot head encodes at once, by default


def zeroshot_head(model: models.CLIP, params, classnames: Sequence[str], templates: Sequence[str],
                  mesh: jax.sharding.Mesh, batch_size: int = HEAD_BATCH_SIZE) -> Array:
  """[embed_dim, n_classes] float32, replicated: per class, the normalised mean of the normalised text
  embeddings of all templates, times exp(logit_scale). Logits are `normalize(image_features) @ head`.

  Prompts are encoded in sharded batches of `batch_size` (rounded up to the data axis), one compilation.
  """
  tokens = prompt_tokens(classnames, templates, model.config.context_length)
  batch_size = head_batch_size(len(tokens), mesh, batch_size)
  tokens = np.concatenate([tokens, np.zeros((-len(tokens) % batch_size, tokens.shape[1]), tokens.dtype)])
  encode = _text_encoder(model, mesh)
  sharding = parallel.data_sharding(mesh)
  chunks = []
  for start in range(0, len(tokens), batch_size):
    chunk = tokens[start:start + batch_size]
    chunks.append(encode(params, jax.make_array_from_callback(chunk.shape, sharding, lambda idx, c=chunk: c[idx])))
  return _average_templates(jnp.concatenate(chunks), params["logit_scale"], len(classnames), len(templates))


def head_batch_size(n_prompts: int, mesh: jax.sharding.Mesh, batch_size: int) -> int:
  """The prompts `zeroshot_head` encodes at once: `batch_size` rounded to the data axis, at most all of them."""
  n_data = mesh.shape[parallel.DATA]
  return max(n_data, min(batch_size, -(-n_prompts // n_data) * n_data) // n_data * n_data)


_TEXT_ENCODERS: dict = {}


def _text_encoder(model: models.CLIP, mesh) -> Callable:
  key = (model, mesh)
  if key not in _TEXT_ENCODERS:
    _TEXT_ENCODERS[key] = jax.jit(
        lambda p, t: models.normalize(model.apply({"params": p}, t, method=model.encode_text)),
        out_shardings=parallel.data_sharding(mesh))
  return _TEXT_ENCODERS[key]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _average_templates(features: Array, logit_scale: Array, n_classes: int, n_templates: int) -> Array:
  per_class = features[:n_classes * n_templates].reshape(n_classes, n_templates, -1)
  return (models.normalize(per_class.mean(axis=1)) * jnp.exp(logit_scale)).T


def apply_head(features: Array, head) -> Array:
  """Logits [B, C] of normalised features [B, E] under a head: a kernel [E, C] (zero-shot heads) or a
  {'kernel' [E, C], 'bias' [C]} linear head (fine-tuning, linear probes)."""
  if isinstance(head, dict):
    return features @ head["kernel"] + head["bias"]
  return features @ head


# ----------------------------------------------------------------------------------------------- metrics
def _zero_stats(n_classes: int, n_groups: int) -> dict[str, np.ndarray]:
  z = lambda *s: np.zeros(s, np.int32)
  return {"count": z(), "correct": z(), "correct5": z(), "invalid": z(), "xent": np.zeros((), np.float32),
          "class_true": z(n_classes),
          "class_pred": z(n_classes), "class_tp": z(n_classes), "group_count": z(n_groups), "group_correct": z(n_groups)}


def batch_stats(logits: Array, labels: Array, mask: Array, groups: Array, n_groups: int) -> dict[str, Array]:
  """Integer counts of one batch: logits [B, C], labels/mask/groups [B] (mask 1 for real examples), and 'xent',
  the summed cross-entropy (nats, float32) of the counted examples.

  Labels or groups outside [0, C) / [0, n_groups) are not scored but counted as 'invalid', so that the
  caller can refuse the result instead of reporting a wrong number.
  """
  n_classes = logits.shape[-1]
  pred = jnp.argmax(logits, axis=-1)
  in_range = (labels >= 0) & (labels < n_classes) & (groups >= 0) & (groups < n_groups)
  invalid = (mask.astype(bool) & ~in_range).astype(jnp.int32)
  valid = mask.astype(jnp.int32) * in_range.astype(jnp.int32)
  hit = (pred == labels).astype(jnp.int32) * valid
  k = min(5, n_classes)
  hit5 = jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1).astype(jnp.int32) * valid
  per_class = lambda idx, w: jnp.zeros(n_classes, jnp.int32).at[idx].add(w)
  per_group = lambda w: jnp.zeros(n_groups, jnp.int32).at[groups].add(w)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_p, jnp.clip(labels, 0, n_classes - 1)[:, None], axis=-1)[:, 0]
  return {"count": valid.sum(), "correct": hit.sum(), "correct5": hit5.sum(), "invalid": invalid.sum(),
          "xent": jnp.sum(jnp.where(valid == 1, nll, 0.0)),
          "class_true": per_class(labels, valid), "class_pred": per_class(pred, valid), "class_tp": per_class(labels, hit),
          "group_count": per_group(valid), "group_correct": per_group(hit)}


def metrics_from_stats(stats: dict[str, np.ndarray], metrics: Sequence[str],
                       excluded_groups: Sequence[int] = ()) -> dict[str, float]:
  """Metrics as WILDS and the CLIP papers define them, from summed `batch_stats`.

  top1/top5: fraction correct. xent: mean cross-entropy of the logits (nats; FLYP's few-shot runs select on it,
  `F.cross_entropy` of the zero-shot head's logits on the validation batch). macro_f1: mean over the classes present in the labels of
  2 TP / (n_true + n_pred) (sklearn's f1_score(average='macro', labels=unique(y_true)), as WILDS uses).
  worst_group_top1: the lowest per-group accuracy over groups with examples, minus `excluded_groups`.
  """
  count = int(stats["count"])
  if int(stats["invalid"]):
    raise errors.BadValue(f"{int(stats['invalid'])} examples have a label or group outside the classes or groups "
                     f"being scored; the dataset does not match its suite definition")
  if count == 0:
    raise errors.BadValue("no examples were evaluated (empty split?)")
  out = {"count": count}
  for m in metrics:
    if m == "top1":
      out[m] = int(stats["correct"]) / count
    elif m == "top5":
      out[m] = int(stats["correct5"]) / count
    elif m == "xent":
      out[m] = float(stats["xent"]) / count
    elif m == "macro_f1":
      true, pred, tp = (np.asarray(stats[k], np.int64) for k in ("class_true", "class_pred", "class_tp"))
      present = true > 0
      out[m] = float(np.mean(2 * tp[present] / (true[present] + pred[present])))
    elif m == "worst_group_top1":
      counts, correct = np.asarray(stats["group_count"]), np.asarray(stats["group_correct"])
      groups = [g for g in range(len(counts)) if counts[g] > 0 and g not in excluded_groups]
      out[m] = min(correct[g] / counts[g] for g in groups) if groups else float("nan")
      out.update({f"group{g}_top1": float(correct[g] / counts[g]) for g in range(len(counts)) if counts[g]})
    else:
      raise errors.BadValue(f"unknown metric {m!r}")
  return out


def effective_robustness(id_acc: float, ood_acc: float, baseline: dict) -> float:
  """OOD accuracy above the baseline fit's prediction from ID accuracy (Taori et al., 2020).

  baseline: {'slope', 'intercept'} of a line fit between transformed accuracies, and 'transform' in
  {'logit', 'probit', 'linear'} (default 'logit', as in the effective-robustness literature).
  """
  transform = baseline.get("transform", "logit")
  if transform == "logit":
    f, f_inv = (lambda p: math.log(p / (1 - p))), (lambda x: 1 / (1 + math.exp(-x)))
  elif transform == "probit":
    from statistics import NormalDist
    f, f_inv = NormalDist().inv_cdf, NormalDist().cdf
  elif transform == "linear":
    f = f_inv = lambda p: p
  else:
    raise errors.BadValue(f"unknown baseline transform {transform!r}; use logit, probit or linear")
  eps = 1e-6
  predicted = f_inv(baseline["slope"] * f(min(max(id_acc, eps), 1 - eps)) + baseline["intercept"])
  return ood_acc - predicted


# --------------------------------------------------------------------------------------------- evaluator
def projection(dataset: suites.EvalDataset) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
  """(head indices per dataset class [C, K] int32 -1 padded, label table [n_labels] int32) or (None, None).

  Logits over the head's classes are projected onto the dataset's with `label_maps.project_logits`.
  TFDS labels ImageNet-R/A with their ImageNet ids, so their labels go through the table to the 200-class
  index; ObjectNet's builder labels are already the 113 classes in `label_maps`' order.
  """
  if dataset.projection is None:
    return None, None
  if dataset.projection == "objectnet":
    return label_maps.pad_indices(label_maps.objectnet_imagenet_indices()), None
  return (label_maps.pad_indices(label_maps.subset_indices(dataset.projection)),
          label_maps.imagenet_label_to_subset(dataset.projection))


@functools.partial(jax.jit, static_argnames=("model", "n_groups"), donate_argnames=("stats",))
def _eval_step(params, head: Array, indices: Optional[Array], label_table: Optional[Array], stats: dict,
               batch: dict, *, model: models.CLIP, n_groups: int) -> dict:
  logits = apply_head(head_features(model, params, batch["image"]), head)
  return jax.tree.map(jnp.add, stats, _score(logits, batch, indices, label_table, n_groups))


def head_features(model, params, images: Array) -> Array:
  """The image features a linear head of `model` reads, [B, E] float32 (what evaluation, FT's loss and the linear
  probe apply heads to): `model.encode_image`, L2-normalised unless the model says its head reads raw features
  (`normalize_features = False`: LP-FT's raw-feature heads, the timm-style classifier heads of attention-transfer
  students)."""
  features = model.apply({"params": params}, images, method=model.encode_image)
  return models.normalize(features) if getattr(model, "normalize_features", True) else features.astype(jnp.float32)


def _score(logits: Array, batch: dict, indices: Optional[Array], label_table: Optional[Array],
           n_groups: int) -> dict[str, Array]:
  """`batch_stats` of logits over the head's classes, projected onto the dataset's classes and labels."""
  labels = batch["label"]
  if indices is not None:
    logits = label_maps.project_logits(logits, indices, reduce=label_maps.OBJECTNET_REDUCE)
  if label_table is not None:
    known = (labels >= 0) & (labels < label_table.shape[0])
    labels = jnp.where(known, label_table[jnp.clip(labels, 0, label_table.shape[0] - 1)], -1)
  return batch_stats(logits, labels, batch["mask"], batch["group"], n_groups)


@functools.partial(jax.jit, static_argnames=("models_", "n_groups"), donate_argnames=("stats",))
def _ensemble_eval_step(params: tuple, heads: tuple, indices: Optional[Array], label_table: Optional[Array],
                        stats: tuple, batch: dict, *, models_: tuple, n_groups: int) -> tuple:
  """Stats of each member and, last, of the average of the members' softmax probabilities."""
  logits = [apply_head(head_features(m, p, batch["image"]), h) for m, p, h in zip(models_, params, heads)]
  probs = sum(jax.nn.softmax(l.astype(jnp.float32), axis=-1) for l in logits) / len(logits)
  # Log-probabilities rank classes as the probabilities do (top-1/top-5); floored so that log(0) stays finite.
  logits.append(jnp.log(jnp.maximum(probs, jnp.finfo(jnp.float32).tiny)))
  return tuple(jax.tree.map(jnp.add, s, _score(l, batch, indices, label_table, n_groups))
               for s, l in zip(stats, logits))


class Evaluator:
  """Evaluates CLIP parameters on a suite: zero-shot heads from the text tower, or a given head.

  `__call__(params, head=None)` returns {'<dataset>/<metric>': value, ..., 'avg_ood/top1': ...,
  'effective_robustness': ...} and writes it as JSON when a workdir is given.
  """

  def __init__(self, model: models.CLIP, suite: str | Sequence[suites.EvalDataset], mesh: jax.sharding.Mesh, *,
               batch_size: int = 256, data_dir: Optional[str] = None, image_size: Optional[int] = None,
               baseline: Optional[dict] = None, head_batch_size: int = HEAD_BATCH_SIZE, corrupt_images: str = "error",
               crop_fraction: float = 1.0):
    """`corrupt_images`: "error" or "skip" (and count) undecodable images, and `crop_fraction` the centre crop's
    share of the resized short side, as `pipeline.eval_batches`."""
    self.model, self.mesh = model, mesh
    self.corrupt_images, self.crop_fraction = corrupt_images, crop_fraction
    self.datasets = tuple(suites.get(suite) if isinstance(suite, str) else suite)
    self.batch_size, self.data_dir, self.baseline = batch_size, data_dir, baseline
    self.image_size = image_size or model.config.image_size
    self.head_batch_size = head_batch_size
    self._heads: dict = {}  # (classnames, templates) -> (param leaves it was built from, head)

  def head(self, params, dataset: suites.EvalDataset) -> Array:
    """The zero-shot head for `dataset`, cached for as long as the text tower's parameters are the same."""
    # 'tfds' names each dataset's own labels: the dataset is part of the key then.
    key = (dataset.classnames, dataset.templates,
           dataset.tfds_name if dataset.classnames == classnames_lib.FROM_DATASET else "")
    leaves = jax.tree.leaves((params["text"], params["logit_scale"]))
    cached = self._heads.get(key)
    if cached is None or len(cached[0]) != len(leaves) or any(a is not b for a, b in zip(cached[0], leaves)):
      head = zeroshot_head(self.model, params, self.classnames(dataset), templates_lib.get(dataset.templates),
                           self.mesh, self.head_batch_size)
      self._heads[key] = cached = (leaves, head)
    return cached[1]

  def classnames(self, dataset: suites.EvalDataset) -> list[str]:
    """The class names of `dataset`'s head ('tfds': its own labels' names)."""
    return classnames_lib.get(dataset.classnames, dataset.tfds_name, self.data_dir)

  def evaluate_dataset(self, params, dataset: suites.EvalDataset, head: Optional[Array] = None) -> dict:
    head = self.head(params, dataset) if head is None else head
    indices, label_table = projection(dataset)
    kernel = head["kernel"] if isinstance(head, dict) else head
    n_classes = kernel.shape[1] if indices is None else indices.shape[0]
    rep = parallel.replicated(self.mesh)
    stats, indices, label_table = jax.device_put((_zero_stats(n_classes, dataset.num_groups), indices, label_table), rep)
    for batch in self._batches(dataset):
      stats = _eval_step(params, head, indices, label_table, stats, batch, model=self.model,
                         n_groups=dataset.num_groups)
    return _metrics(dataset, jax.device_get(stats))

  def _batches(self, dataset: suites.EvalDataset):
    return pipeline.eval_batches(dataset.tfds_name, dataset.split, image_size=self.image_size,
                                 global_batch_size=self.batch_size, mesh=self.mesh, data_dir=self.data_dir,
                                 group_feature=dataset.group_feature, corrupt_images=self.corrupt_images,
                                 label_table=label_maps.class_table(dataset.label_map),
                                 crop_fraction=self.crop_fraction)

  def __call__(self, params, head: Optional[Array] = None, workdir: Optional[str] = None,
               filename: str = "results.json") -> dict[str, Any]:
    results: dict[str, Any] = {}
    per_dataset = {}
    for ds in self.datasets:
      start = time.time()
      per_dataset[ds.name] = r = self.evaluate_dataset(params, ds, head)
      results.update({f"{ds.name}/{k}": v for k, v in r.items()})
      logging.info("%s: %s (%.1fs)", ds.name, ", ".join(f"{k}={v:.4f}" for k, v in r.items() if k != "count"),
                   time.time() - start)
    results.update(summarize(self.datasets, per_dataset, self.baseline))
    if workdir and jax.process_index() == 0:
      files.makedirs(workdir)
      files.write_json(os.path.join(workdir, filename), results)
    return results

  def ensemble(self, members: Sequence[tuple[models.CLIP, Any, Optional[Array]]],
               names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each member alone and the average of their softmax probabilities, in one pass over each dataset.

    members: (model, params, head) triples; a member's model may differ from the evaluator's (any module
    with `encode_image` / `encode_text`), and a head of None is that member's zero-shot head. Returns
    {name: results as `__call__` returns them, ..., 'ensemble': results of the averaged probabilities}.
    """
    if len(names) != len(members) or "ensemble" in names or len(set(names)) != len(names):
      raise errors.BadValue(f"need one distinct name per member, other than 'ensemble'; got {names} for "
                       f"{len(members)} members")
    models_ = tuple(m for m, _, _ in members)
    params = tuple(p for _, p, _ in members)
    keys = (*names, "ensemble")
    per_dataset: dict[str, dict] = {k: {} for k in keys}
    rep = parallel.replicated(self.mesh)
    for ds in self.datasets:
      start = time.time()
      heads = tuple(self._member_head(m, p, ds) if h is None else h for m, p, h in members)
      indices, label_table = projection(ds)
      kernel = heads[0]["kernel"] if isinstance(heads[0], dict) else heads[0]
      n_classes = kernel.shape[1] if indices is None else indices.shape[0]
      stats = tuple(_zero_stats(n_classes, ds.num_groups) for _ in keys)
      stats, indices, label_table = jax.device_put((stats, indices, label_table), rep)
      for batch in self._batches(ds):
        stats = _ensemble_eval_step(params, heads, indices, label_table, stats, batch, models_=models_,
                                    n_groups=ds.num_groups)
      for k, s in zip(keys, jax.device_get(stats)):
        per_dataset[k][ds.name] = _metrics(ds, s)
      logging.info("%s: ensemble top-1 %.4f (%.1fs)", ds.name, per_dataset["ensemble"][ds.name]["top1"],
                   time.time() - start)
    out = {}
    for k in keys:
      out[k] = {f"{d}/{m}": v for d, r in per_dataset[k].items() for m, v in r.items()}
      out[k].update(summarize(self.datasets, per_dataset[k], self.baseline))
    return out

  def _member_head(self, model, params, dataset: suites.EvalDataset) -> Array:
    if model is self.model:
      return self.head(params, dataset)
    return zeroshot_head(model, params, self.classnames(dataset), templates_lib.get(dataset.templates), self.mesh,
                         self.head_batch_size)


def from_config(model: models.CLIP, config, mesh: jax.sharding.Mesh,
                datasets: Optional[Sequence[suites.EvalDataset]] = None) -> Evaluator:
  """The evaluator a run's config asks for: `config.eval.suite` (or `datasets`), its batch size and data."""
  return Evaluator(model, datasets or suites.of_config(config), mesh, batch_size=config.eval.batch_size,
                   data_dir=config.data.data_dir or None, corrupt_images=config.data.corrupt_images,
                   crop_fraction=config.data.eval_crop_fraction)


def _metrics(dataset: suites.EvalDataset, stats) -> dict[str, float]:
  try:
    return metrics_from_stats(stats, dataset.metrics, dataset.excluded_groups)
  except ValueError as e:  # e.g. labels outside the scored classes: say which dataset
    raise errors.BadValue(f"{dataset.name} ({dataset.tfds_name}, split {dataset.split!r}): {e}") from None


def summarize(datasets: Sequence[suites.EvalDataset], per_dataset: dict[str, dict],
              baseline: Optional[dict] = None) -> dict[str, float]:
  """Average ID and OOD of each metric the datasets share, and effective robustness on top-1."""
  out = {}
  for split, chosen in (("id", [d for d in datasets if not d.ood]), ("ood", [d for d in datasets if d.ood])):
    if not chosen:
      continue
    shared = set.intersection(*(set(d.metrics) for d in chosen))
    for m in sorted(shared):
      out[f"avg_{split}/{m}"] = float(np.mean([per_dataset[d.name][m] for d in chosen]))
  if "avg_ood/top1" in out:
    out["avg_ood"] = out["avg_ood/top1"]  # the headline number: average OOD top-1
  if baseline and "avg_id/top1" in out and "avg_ood/top1" in out:
    out["effective_robustness"] = effective_robustness(out["avg_id/top1"], out["avg_ood/top1"], baseline)
  return out
