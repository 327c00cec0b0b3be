"""Metrics on hand-checked predictions, zero-shot heads against a direct computation, effective robustness."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flyp_jax import evaluate, models, parallel
from flyp_jax.tokenizer import tokenize


def stats_for(logits, labels, groups=None, n_groups=1, pad=0):
  """batch_stats on numpy inputs, with `pad` masked garbage rows appended."""
  logits, labels = np.asarray(logits, np.float32), np.asarray(labels, np.int32)
  groups = np.zeros_like(labels) if groups is None else np.asarray(groups, np.int32)
  mask = np.ones_like(labels)
  if pad:
    rng = np.random.default_rng(0)
    logits = np.concatenate([logits, rng.normal(size=(pad, logits.shape[1])).astype(np.float32)])
    labels = np.concatenate([labels, rng.integers(0, logits.shape[1], pad).astype(np.int32)])
    groups = np.concatenate([groups, np.zeros(pad, np.int32)])
    mask = np.concatenate([mask, np.zeros(pad, np.int32)])
  return jax.device_get(evaluate.batch_stats(jnp.asarray(logits), labels, mask, groups, n_groups))


def one_hot_logits(pred, n):
  return np.eye(n, dtype=np.float32)[pred]


def test_macro_f1_matches_hand_computation_and_ignores_padding():
  y_true = [0, 0, 1, 2, 2, 2]
  y_pred = [0, 1, 1, 2, 3, 0]  # class 3 is predicted but never true: left out of the average, as WILDS does
  # per class: 0: tp 1, true 2, pred 2 -> 1/2; 1: tp 1, true 1, pred 2 -> 2/3; 2: tp 1, true 3, pred 1 -> 1/2
  stats = stats_for(one_hot_logits(y_pred, 4), y_true, pad=5)
  m = evaluate.metrics_from_stats(stats, ("top1", "macro_f1"))
  assert m["count"] == 6
  assert m["top1"] == pytest.approx(3 / 6)
  assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)


def test_top5_counts_label_among_five_highest():
  logits = np.tile(np.arange(10, dtype=np.float32), (3, 1))  # ranking 9, 8, 7, 6, 5, ...
  m = evaluate.metrics_from_stats(stats_for(logits, [9, 5, 4]), ("top1", "top5"))
  assert m["top1"] == pytest.approx(1 / 3) and m["top5"] == pytest.approx(2 / 3)


def test_worst_group_excludes_other_and_empty_groups():
  # groups: 0 -> 2/2 right, 1 -> 1/2 right, 5 ('Other') -> 0/2 right; groups 2-4 empty
  labels = [0, 1, 0, 1, 0, 1]
  preds = [0, 1, 0, 0, 1, 0]
  groups = [0, 0, 1, 1, 5, 5]
  stats = stats_for(one_hot_logits(preds, 2), labels, groups, n_groups=6, pad=3)
  m = evaluate.metrics_from_stats(stats, ("top1", "worst_group_top1"), excluded_groups=(5,))
  assert m["worst_group_top1"] == pytest.approx(0.5)
  assert m["group5_top1"] == 0.0 and m["top1"] == pytest.approx(3 / 6)
  assert evaluate.metrics_from_stats(stats, ("worst_group_top1",))["worst_group_top1"] == 0.0


def test_empty_evaluation_is_an_error():
  with pytest.raises(ValueError, match="no examples"):
    evaluate.metrics_from_stats(evaluate._zero_stats(3, 1), ("top1",))


def test_effective_robustness_logit_fit():
  baseline = {"slope": 0.8, "intercept": -0.5}
  id_acc, ood_acc = 0.7, 0.45
  logit = lambda p: math.log(p / (1 - p))
  expected = ood_acc - 1 / (1 + math.exp(-(0.8 * logit(0.7) - 0.5)))
  assert evaluate.effective_robustness(id_acc, ood_acc, baseline) == pytest.approx(expected)
  linear = evaluate.effective_robustness(0.7, 0.45, {"slope": 1.0, "intercept": -0.1, "transform": "linear"})
  assert linear == pytest.approx(0.45 - 0.6)


def test_summary_averages_id_and_ood_over_the_metrics_they_share():
  from flyp_jax.data.suites import EvalDataset
  d = lambda name, ood, metrics=("top1", "top5"): EvalDataset(name, "t", "test", ood, "c", "t", metrics)
  datasets = [d("a", False), d("b", True), d("c", True, ("top1", "xent")), d("e", True)]
  per_dataset = {"a": {"top1": 0.8, "top5": 0.9}, "b": {"top1": 0.2, "top5": 0.5},
                 "c": {"top1": 0.5, "xent": 1.0}, "e": {"top1": 0.6, "top5": 0.7}}
  out = evaluate.summarize(datasets, per_dataset, {"slope": 1.0, "intercept": 0.0, "transform": "linear"})
  # OOD top-1 (0.2 + 0.5 + 0.6) / 3, a mean and not the median 0.5; top5 and xent are not shared by all
  assert out == pytest.approx({"avg_id/top1": 0.8, "avg_id/top5": 0.9, "avg_ood/top1": 1.3 / 3,
                               "avg_ood": 1.3 / 3, "effective_robustness": 1.3 / 3 - 0.8})
  assert "avg_ood/top1" not in evaluate.summarize(datasets[:1], per_dataset)


def test_zeroshot_head_matches_direct_computation():
  model = models.create_model("ViT-T/8")
  params = jax.jit(models.init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
  classes, templates = ["cat", "dog", "red car"], ["a photo of a {}.", "a {}", "itap of the {}"]
  mesh = parallel.make_mesh()
  head = evaluate.zeroshot_head(model, params, classes, templates, mesh, batch_size=8)
  assert head.shape == (64, 3)
  direct = []
  encode = jax.jit(lambda t: model.apply({"params": params}, t, method=model.encode_text))
  for c in classes:
    f = np.asarray(encode(tokenize([t.format(c) for t in templates])))
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    mean = f.mean(0)
    direct.append(mean / np.linalg.norm(mean) * np.exp(params["logit_scale"]))
  np.testing.assert_allclose(head, np.stack(direct, 1), rtol=1e-4, atol=1e-5)
