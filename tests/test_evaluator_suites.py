"""Every suite's pipeline and the evaluator end to end on mock TFDS data, on 8 simulated CPU devices."""

import dataclasses
import json

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from flyp_jax import evaluate, models, parallel
from flyp_jax.data import label_maps, pipeline, suites
import flyp_jax.data.builders  # noqa: F401

N_EXAMPLES = 11  # not a multiple of the batch: exercises padding and masking


def valid_labels(builder):
  """Labels the real dataset can have: ImageNet-R/A hold only their 200 ImageNet classes."""
  if builder.name in ("imagenet_r", "imagenet_a"):
    return label_maps.subset_indices(builder.name)
  return np.arange(builder.info.features["label"].num_classes)


def fake_as_dataset(self, split, decoders=None, read_config=None, **kwargs):
  """Mock examples with the features the pipeline reads: images of odd sizes, valid labels, groups."""
  labels = valid_labels(self)
  rng = np.random.default_rng(abs(hash((self.name, split))) % 2**32)
  examples = {"image": [rng.integers(0, 256, (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3), np.uint8)
                        for _ in range(N_EXAMPLES)],
              "label": rng.choice(labels, N_EXAMPLES).astype(np.int64)}
  if "region" in self.info.features:
    examples["region"] = rng.integers(0, 6, N_EXAMPLES).astype(np.int64)
  ds = tf.data.Dataset.from_generator(
      lambda: ({k: v[i] for k, v in examples.items()} for i in range(N_EXAMPLES)),
      output_signature={k: tf.TensorSpec((None, None, 3) if k == "image" else (), tf.uint8 if k == "image"
                                         else tf.int64) for k in examples})
  return ds.apply(tf.data.experimental.assert_cardinality(N_EXAMPLES))


@pytest.fixture(scope="module")
def tiny():
  model = models.create_model("ViT-T/8")
  return model, jax.jit(models.init_params, static_argnums=0)(model, jax.random.PRNGKey(0)), parallel.make_mesh()


@pytest.mark.parametrize("suite", ["imagenet", "iwildcam", "fmow", "cifar10"])
def test_suite_end_to_end_on_mock_data(suite, tiny, tmp_path):
  model, params, mesh = tiny
  head = None
  if suite == "imagenet":  # 1000 classes x 80 templates is too slow for a test on CPU: use a random head
    head = models.normalize(jax.random.normal(jax.random.PRNGKey(3), (1000, 64))).T * 100
  evaluator = evaluate.Evaluator(model, suite, mesh, batch_size=8, baseline={"slope": 1.0, "intercept": 0.0})
  with tfds.testing.mock_data(as_dataset_fn=fake_as_dataset):
    results = evaluator(params, head=head, workdir=str(tmp_path))
  datasets = suites.get(suite)
  for ds in datasets:
    assert results[f"{ds.name}/count"] == N_EXAMPLES
    top1 = results[f"{ds.name}/top1"] * N_EXAMPLES  # a count of the examples
    assert abs(top1 - round(top1)) < 1e-4, (ds.name, top1)
  # the averages over the ID and the OOD datasets, and effective robustness against the line ood = id (slope 1,
  # intercept 0 in logit space: the baseline predicts the ID accuracy itself)
  for split, chosen in (("id", [d for d in datasets if not d.ood]), ("ood", [d for d in datasets if d.ood])):
    assert results[f"avg_{split}/top1"] == pytest.approx(np.mean([results[f"{d.name}/top1"] for d in chosen]))
  assert "effective_robustness" in results
  if 0 < results["avg_id/top1"] < 1:
    assert results["effective_robustness"] == pytest.approx(results["avg_ood/top1"] - results["avg_id/top1"],
                                                            abs=1e-9)
  assert json.loads((tmp_path / "results.json").read_text()) == pytest.approx(results, nan_ok=True)


@pytest.mark.parametrize("name", ["imagenet_r", "imagenet_a"])
def test_projection_scores_on_the_datasets_200_classes(name):
  """TFDS labels R/A with 1000-way ImageNet ids; scoring maps them and the logits onto the 200 classes."""
  ds = [d for d in suites.get("imagenet") if d.name == name][0]
  indices, table = evaluate.projection(ds)
  labels = np.random.default_rng(0).choice(label_maps.subset_indices(name), 50)
  logits = np.full((50, 1000), -5.0, np.float32)
  logits[np.arange(50), labels] = 1.0
  logits[:, 0] = 50.0  # tench is in neither dataset: the projection must ignore it
  projected = np.asarray(label_maps.project_logits(logits, indices))
  assert projected.shape == (50, 200) and (table[labels] >= 0).all()
  np.testing.assert_array_equal(np.argmax(projected, 1), table[labels])


def test_domain_shapes_suite_builds_offline_and_evaluates(tiny, tmp_path):
  model, params, mesh = tiny
  datasets = [dataclasses.replace(d, tfds_name="domain_shapes/small") for d in suites.get("domain_shapes")]
  results = evaluate.Evaluator(model, datasets, mesh, batch_size=16, data_dir=str(tmp_path))(params)
  assert results["domain_shapes_photo/count"] > 0
  assert set(k.split("/")[0] for k in results) >= {d.name for d in datasets} | {"avg_ood", "avg_id"}


def test_missing_dataset_says_how_to_prepare(tmp_path, tiny):
  _, _, mesh = tiny
  with pytest.raises(pipeline.DatasetNotPreparedError, match="ILSVRC2012_img_val.tar"):
    next(pipeline.eval_batches("imagenet2012", "validation", image_size=32, global_batch_size=8, mesh=mesh,
                               data_dir=str(tmp_path)))
  with pytest.raises(pipeline.DatasetNotPreparedError, match="fmow_v1.1/rgb_metadata.csv"):
    next(pipeline.eval_batches("wilds_fmow", "test", image_size=32, global_batch_size=8, mesh=mesh,
                               data_dir=str(tmp_path)))
  with pytest.raises(pipeline.DatasetNotPreparedError, match="unknown TFDS dataset"):
    pipeline.get_builder("no_such_dataset_xyz", str(tmp_path))


def test_labels_outside_the_classes_are_an_error_not_a_number(tiny):
  model, params, mesh = tiny
  ds = [dataclasses.replace(d, projection=None) for d in suites.get("imagenet") if d.name == "imagenet_r"]
  head = models.normalize(jax.random.normal(jax.random.PRNGKey(3), (10, 64))).T  # 10 classes, labels up to 999
  with tfds.testing.mock_data(as_dataset_fn=fake_as_dataset):
    with pytest.raises(ValueError, match="outside the classes"):
      evaluate.Evaluator(model, ds, mesh, batch_size=8)(params, head=head)


def test_evaluation_compiles_once_per_dataset_shape(tiny):
  model, params, mesh = tiny
  head = models.normalize(jax.random.normal(jax.random.PRNGKey(3), (1000, 64))).T * 100
  datasets = [d for d in suites.get("imagenet") if d.name in ("imagenet", "imagenet_v2", "imagenet_r", "imagenet_a")]
  evaluate._eval_step.clear_cache()
  evaluator = evaluate.Evaluator(model, datasets, mesh, batch_size=8)
  with tfds.testing.mock_data(as_dataset_fn=fake_as_dataset):
    evaluator(params, head=head)
    # Two shapes: 1000-way (ImageNet, V2) and 200-way projected (R, A), each over 2 batches of 8.
    assert evaluate._eval_step._cache_size() == 2
    evaluator(params, head=head)
    assert evaluate._eval_step._cache_size() == 2
