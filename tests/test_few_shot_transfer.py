"""FLYP's few-shot (PatchCamelyon, rendered SST2) and transfer-learning (Caltech101, StanfordCars, Flowers102)
experiments, offline: FLYP's class names and templates, each suite on mock TFDS data, the rendered SST2 builder on
a fake archive, the k-shot sampler, and the few-shot command end to end on the offline benchmark.

The expected strings are transcribed from locuslab/FLYP at commit 215d5bb6feeda6675f60e5818abcb4f6465c83af:
src/templates/patchcamelyon_template.py, src/templates/sst2_template.py, src/datasets/{patchcamelyon,sst2,
caltech101}.py, datacreation_scripts/flowers102.py.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import flyp_jax.data.builders  # noqa: F401  registers rendered_sst2
from conftest import use_small_suites

from flyp_jax import configs_lib, evaluate, models, parallel
from flyp_jax.data import classnames, kshot, label_maps, pipeline, suites, templates
from flyp_jax.data.builders import _manual, rendered_sst2
from flyp_jax.commands import few_shot

NAMES = ("patchcamelyon", "sst2", "caltech101", "stanfordcars", "flowers102")


# ------------------------------------------------------------------------------------- names and templates
def test_few_shot_templates_equal_flyp_files():
  # src/templates/patchcamelyon_template.py: [lambda c: f'this is a photo of {c}']
  assert templates.get("patchcamelyon") == ["this is a photo of {}"]
  # src/templates/sst2_template.py: [lambda c: f'a {c} review of a movie.']
  assert templates.get("sst2") == ["a {} review of a movie."]
  assert templates.render("sst2", "positive") == ["a positive review of a movie."]
  # src/datasets/patchcamelyon.py and sst2.py `classnames`
  assert classnames.get("patchcamelyon") == ["lymph node", "lymph node containing metastatic tumor tissue"]
  assert classnames.get("sst2") == ["negative", "positive"]


def test_transfer_templates_and_classnames_resolve():
  # src/templates/{caltech101,stanfordcars,flowers102}_template.py: 34, 8 and 1 templates
  assert [len(templates.get(n)) for n in ("caltech101", "stanfordcars", "flowers102")] == [34, 8, 1]
  assert templates.get("caltech101")[10] == "a {} in a video game."
  assert templates.get("stanfordcars")[3] == "i love my {}!"
  assert templates.get("flowers102") == ["a photo of a {}, a type of flower."]
  assert [len(classnames.get(n)) for n in NAMES] == [2, 2, 101, 196, 102]


def _tfds_names(name):
  return tfds.builder(name).info.features["label"].names


def test_transfer_classnames_follow_the_tfds_labels():
  """Entry i names TFDS label i: checked against TFDS's own label names, not against this project's lists."""
  # Caltech101: FLYP's list is in the sorted order of the original folders (capitals first: Faces, Faces_easy,
  # Leopards, Motorbikes, then the lower-case ones); TFDS lower-cases and sorts them, background_google included.
  tfds_caltech = _tfds_names("caltech101")
  assert tfds_caltech[label_maps.CALTECH101_BACKGROUND_LABEL] == "background_google"
  flyp_names = dict(zip(["faces", "faces_easy", "leopards", "motorbikes", "accordion", "airplanes", "anchor"],
                        ["off-center face", "centered face", "leopard", "motorbike", "accordion", "airplane",
                         "anchor"]))
  flyp_names.update({"car_side": "side of a car", "crocodile_head": "head of a  crocodile", "snoopy":
                     "snoopy (cartoon beagle)", "yin_yang": "yin and yang symbol", "water_lilly": "water lilly"})
  table = label_maps.class_table("caltech101")
  ours = classnames.get("caltech101")
  for folder, name in flyp_names.items():
    assert ours[table[tfds_caltech.index(folder)]] == name
  assert table[label_maps.CALTECH101_BACKGROUND_LABEL] == -1 and sorted(table[table >= 0]) == list(range(101))
  # StanfordCars: FLYP's name is the devkit's with '/' -> '-' (its folders cannot hold '/').
  cars = classnames.get("stanfordcars")
  assert cars == [n.replace("/", "-") for n in _tfds_names("cars196")]
  assert "Ram C-V Cargo Van Minivan 2012" in cars and cars[0] == "AM General Hummer SUV 2000"
  # Flowers102: datacreation_scripts/flowers102.py `open_ai_classes` is in label order; TFDS spells three
  # classes otherwise.
  flowers = classnames.get("flowers102")
  differ = [(i, a, b) for i, (a, b) in enumerate(zip(flowers, _tfds_names("oxford_flowers102"))) if a != b]
  assert differ == [(15, "globe flower", "globe-flower"), (59, "pink and yellow dahlia", "pink-yellow dahlia?"),
                    (92, "air plant", "ball moss")]
  assert flowers[:3] == ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]


# --------------------------------------------------------------------------------------- suites, mock data
N_EXAMPLES = 13


def _fake_as_dataset(self, split, decoders=None, read_config=None, **kwargs):
  """N_EXAMPLES mock examples of odd image sizes with labels over every TFDS label (Caltech101's background too)."""
  n_labels = self.info.features["label"].num_classes
  rng = np.random.default_rng(abs(hash((self.name, str(split)))) % 2**32)
  labels = (7 * np.arange(N_EXAMPLES) + 5) % n_labels  # no 4 among them
  if self.name == "caltech101":
    labels[:3] = label_maps.CALTECH101_BACKGROUND_LABEL
  images = [rng.integers(0, 256, (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3), np.uint8)
            for _ in range(N_EXAMPLES)]
  ds = tf.data.Dataset.from_generator(
      lambda: ({"image": images[i], "label": np.int64(labels[i])} for i in range(N_EXAMPLES)),
      output_signature={"image": tf.TensorSpec((None, None, 3), tf.uint8), "label": tf.TensorSpec((), tf.int64)})
  return ds.apply(tf.data.experimental.assert_cardinality(N_EXAMPLES))


@pytest.fixture(scope="module")
def tiny():
  model = models.create_model("ViT-T/8")
  return model, models.init_params(model, jax.random.PRNGKey(0)), parallel.make_mesh()


@pytest.mark.parametrize("name", NAMES)
def test_few_shot_and_transfer_suites_on_mock_data(name, tiny):
  model, params, mesh = tiny
  test_set, val_set = suites.get(name)[0], suites.VALIDATION[name]
  n_classes = len(classnames.get(name))
  # The zero-shot head of the two-class suites; the many-class ones take a random head (CPU time), whose width
  # is still the class count.
  head = None if n_classes <= 102 and len(templates.get(name)) == 1 else (
      models.normalize(jax.random.normal(jax.random.PRNGKey(1), (n_classes, 64))).T * 100)
  evaluator = evaluate.Evaluator(model, (test_set, val_set), mesh, batch_size=8)
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
    if head is None:
      assert evaluator.head(params, test_set).shape == (64, n_classes)
    results = evaluator(params, head=head)
    batch = next(pipeline.eval_batches(test_set.tfds_name, test_set.split, image_size=32, global_batch_size=8,
                                       mesh=mesh, label_table=label_maps.class_table(test_set.label_map)))
  assert batch["image"].shape == (8, 32, 32, 3)
  expected = N_EXAMPLES - (3 if name == "caltech101" else 0)  # the background is no class: not counted
  for ds in (test_set, val_set):
    assert results[f"{ds.name}/count"] == expected
    # top-1 a count of the examples scored; cross-entropy at least that of the best guess the counts allow
    assert abs(results[f"{ds.name}/top1"] * expected - round(results[f"{ds.name}/top1"] * expected)) < 1e-4
    assert results[f"{ds.name}/xent"] > 0
  assert test_set.tfds_name == {"patchcamelyon": "patch_camelyon", "sst2": "rendered_sst2", "caltech101":
                                "caltech101", "stanfordcars": "cars196", "flowers102": "oxford_flowers102"}[name]
  assert pipeline.get_builder(test_set.tfds_name).info.features["label"].num_classes == (
      n_classes + (1 if name == "caltech101" else 0))


def test_transfer_training_leaves_out_labels_of_no_class(data_dir):
  """As Caltech101's background is left out of training: a label map dropping label 3 of domain_shapes/small
  (10 photos of each of 10 classes) gives epochs of the other 90, labelled 0..8."""
  table = np.array([0, 1, 2, -1, 3, 4, 5, 6, 7, 8], np.int32)
  batches = pipeline.train_batches("domain_shapes/small", "train", data_dir=data_dir, image_size=16,
                                   global_batch_size=8, mesh=parallel.make_mesh(), num_classes=9, label_table=table)
  labels = np.concatenate([next(batches)["label"] for _ in range(45)])  # 360 examples: 4 epochs of 90
  assert np.bincount(labels, minlength=9).tolist() == [40] * 9
  with pytest.raises(pipeline.LabelOutOfRangeError, match="label map gives class 8"):
    pipeline.train_batches("domain_shapes/small", "train", data_dir=data_dir, image_size=16, global_batch_size=8,
                           mesh=parallel.make_mesh(), num_classes=8, label_table=table)


# ----------------------------------------------------------------------------------------- rendered SST2
def _png(value: int) -> bytes:
  return tf.io.encode_png(np.full((6, 9, 3), value, np.uint8)).numpy()


def _fake_archive(path, layout=None):
  layout = layout or {"train": (3, 2), "valid": (1, 2), "test": (2, 1)}  # folder -> (negatives, positives)
  with tarfile.open(path, "w:gz") as tar:
    for folder, counts in layout.items():
      for label, (cls, n) in enumerate(zip(rendered_sst2.CLASSES, counts)):
        for i in range(n):
          data = _png(100 * label + i)
          info = tarfile.TarInfo(f"rendered-sst2/{folder}/{cls}/{i}.png")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))


def test_few_shot_rendered_sst2_builder_reads_clips_archive(tmp_path):
  (tmp_path / "manual").mkdir()
  _fake_archive(tmp_path / "manual" / rendered_sst2.ARCHIVE)
  builder = tfds.builder("rendered_sst2", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  sizes = {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")}
  assert sizes == {"train": 5, "validation": 3, "test": 3}
  train = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
  by_name = {ex["filename"].decode(): ex for ex in train}
  assert by_name["train/negative/2.png"]["label"] == 0 and by_name["train/positive/1.png"]["label"] == 1
  assert by_name["train/positive/1.png"]["image"].shape == (6, 9, 3)
  assert int(by_name["train/positive/1.png"]["image"][0, 0, 0]) == 101
  assert builder.info.features["label"].names == classnames.get("sst2")


def test_few_shot_rendered_sst2_missing_archive_says_where_to_put_it(tmp_path):
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / "notes.txt").write_text("not the archive")
  builder = tfds.builder("rendered_sst2", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(_manual.ManualDataError) as e:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
  message = str(e.value)
  assert "\n" not in message and "rendered-sst2.tgz" in message and str(tmp_path / "manual") in message
  assert "train" in message and "prepare it with" in message


# ------------------------------------------------------------------------------------------- the sampler
def test_few_shot_sampler_exactly_k_per_class_reproducible_per_seed():
  labels = np.random.default_rng(0).integers(-1, 3, 500)  # -1: a record of no class, never drawn
  a = kshot.sample(labels, k=4, num_classes=3, seed=7)
  assert len(a) == 12 and list(a) == sorted(set(a.tolist()))
  assert np.bincount(labels[a], minlength=3).tolist() == [4, 4, 4]
  np.testing.assert_array_equal(a, kshot.sample(labels, k=4, num_classes=3, seed=7))
  assert not np.array_equal(a, kshot.sample(labels, k=4, num_classes=3, seed=8))
  assert not np.array_equal(a, kshot.sample(labels, k=4, num_classes=3, seed=7, stream=kshot.VALIDATION_STREAM))
  with pytest.raises(kshot.NotEnoughExamplesError, match="class 2 has 1 examples"):
    kshot.sample(np.array([0, 0, 1, 1, 2]), k=2, num_classes=3, seed=0)
  assert kshot.split_expression("train", np.array([3, 4, 5, 9, 11, 12])) == "train[3:6]+train[9:10]+train[11:13]"


def test_few_shot_sample_reads_back_from_tfds(data_dir, tmp_path):
  labels = kshot.split_labels("domain_shapes/small", "train", data_dir, cache_dir=str(tmp_path))
  assert len(labels) == 100 and (tmp_path / "labels_domain_shapes_small_train.npy").exists()
  picked = kshot.sample(labels, k=3, num_classes=10, seed=1)
  split = kshot.split_expression("train", picked)
  builder = pipeline.get_builder("domain_shapes/small", data_dir)
  read = [int(ex["label"]) for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))]
  assert read == labels[picked].tolist() and pipeline.split_size(builder, split) == 30
  np.testing.assert_array_equal(kshot.split_labels("domain_shapes/small", "train", data_dir,
                                                   cache_dir=str(tmp_path)), labels)  # from the cache


# --------------------------------------------------------------------------------- the command end to end
@pytest.fixture
def small_suite(monkeypatch):
  use_small_suites(monkeypatch, first=2)


@pytest.mark.slow
def test_few_shot_command_end_to_end_on_domain_shapes(tmp_path, data_dir, small_suite):
  config = configs_lib.load("configs/few_shot.py:demo")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.update(dataset="domain_shapes/small", data_dir=data_dir)
  # FLYP and LP (FT's run is the same loop with another config: method_config is checked for it below)
  config.few_shot.update(k=4, repetitions=2)
  config.few_shot.methods = ml_collections.ConfigDict({"FLYP": "configs/flyp.py", "LP": "configs/lp.py"})
  config.update(steps=2, log_every=1)
  config.eval.batch_size = 64
  config.lock()
  summary = few_shot.run(config, str(tmp_path))
  assert sorted(summary) == ["FLYP", "LP"] and sorted(os.listdir(tmp_path)) == [
      "FLYP", "LP", "few_shot.json", "few_shot.md", "labels"]
  seeds = [0, 1]
  splits = {}
  for label in ("FLYP", "LP"):
    assert summary[label]["seeds"] == seeds
    # mean and numpy's std (ddof 0, as FLYP's stats_final.txt) of the repetitions' own results.json
    top1 = [json.loads((tmp_path / label / f"seed_{s}" / "results.json").read_text())["domain_shapes_photo/top1"]
            for s in seeds]
    assert summary[label]["mean"]["domain_shapes_photo/top1"] == pytest.approx(np.mean(top1), abs=1e-9)
    assert summary[label]["std"]["domain_shapes_photo/top1"] == pytest.approx(np.std(top1), abs=1e-9)
    for seed in seeds:
      run_dir = tmp_path / label / f"seed_{seed}"
      recorded = json.loads((run_dir / "config.json").read_text())["config"] if label != "LP" else None
      if recorded:
        splits[label, seed] = (recorded["data"]["train_split"], recorded["eval"]["val_split"])
        assert recorded["batch_size"] == 40  # every step trains on all k * C examples
      result = json.loads((run_dir / "results.json").read_text())
      assert "domain_shapes_photo/top1" in result
      if label != "LP":
        # the lowest validation loss over steps 0-2 (the start a candidate), the later step on ties
        xent = {step: json.loads((run_dir / f"eval_{step}.json").read_text())["id_val/xent"] for step in (0, 1, 2)}
        assert result["selected_on"] == "id_val/xent"
        assert result["selected_step"] == min(xent, key=lambda step: (xent[step], -step)), (xent, result)
        assert sorted(f for f in os.listdir(run_dir) if f.startswith("eval_")) == ["eval_0.json", "eval_1.json",
                                                                                   "eval_2.json"]
        assert "domain_shapes_photo/top1" not in json.loads((run_dir / "eval_1.json").read_text())
  # the same sample for every method at a seed (LP's, and FT's config), another one at the next seed
  lp_val = [json.loads((tmp_path / "LP" / f"seed_{s}" / "results.json").read_text())["lp_val_top1"] for s in seeds]
  assert summary["LP"]["mean"]["id_val/top1"] == pytest.approx(np.mean(lp_val), abs=1e-9)  # LP's picked l2's
  for seed in seeds:
    train_split, val_split = few_shot.samples(config, str(tmp_path / "labels"), seed)
    assert splits["FLYP", seed] == (train_split, val_split)
    ft = few_shot.method_config("configs/ft.py", config, seed, train_split, val_split)
    lp_config = few_shot.method_config("configs/lp.py", config, seed, train_split, val_split)
    assert (ft.method, ft.data.train_split, ft.eval.val_split, ft.batch_size) == ("ft", train_split, val_split, 40)
    assert ft.trainable == configs_lib.load("configs/ft.py").trainable and ft.eval.select_on == "id_val/xent"
    assert (lp_config.data.train_split, lp_config.lp.val_split) == (train_split, val_split)
  assert splits["FLYP", 0] != splits["FLYP", 1] and splits["FLYP", 0][0].count("[") <= 40
  table = (tmp_path / "few_shot.md").read_text()
  assert "| FLYP | 2 |" in table and "| LP | 2 |" in table
  assert json.loads((tmp_path / "few_shot.json").read_text())["k"] == 4
