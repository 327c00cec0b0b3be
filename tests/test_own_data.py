"""Your own data from the command line: an image folder (converted once to TFDS's format), class names from the
dataset, a file or a list, templates from a file or one string, an evaluation suite built from the config, and the
input checks that come before the workdir's."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from flyp_jax import config_checks, configs_lib, errors, train
from flyp_jax.data import classnames, image_folder, pipeline, suites, templates

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("circle", "square")
SPLITS = {"train": 12, "validation": 4, "test": 4}  # images per class


def write_image_folder(root, seed=0):
  """SPLIT/CLASS/NNN.(png|jpg): a filled circle or square of a random colour, 20-40 pixels a side."""
  rng = np.random.default_rng(seed)
  for split, n in SPLITS.items():
    for kind in CLASSES:
      os.makedirs(root / split / kind, exist_ok=True)
      for i in range(n):
        size = int(rng.integers(20, 41))
        y, x = np.mgrid[:size, :size] - size / 2
        r = size * rng.uniform(0.2, 0.4)
        inside = (x ** 2 + y ** 2 < r ** 2) if kind == "circle" else ((abs(x) < r) & (abs(y) < r))
        image = np.full((size, size, 3), 255, np.uint8)
        image[inside] = rng.integers(0, 200, 3)
        Image.fromarray(image).save(root / split / kind / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
  return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_image_folder(tmp_path_factory.mktemp("images") / "my_shapes")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_an_image_folder_converts_once_to_tfds_with_its_files_bytes_and_labels(folder, data_dir, capsys):
  built = pipeline.get_builder(str(folder), data_dir)
  assert "converting the image folder" in capsys.readouterr().out
  assert image_folder.is_converted(built) and built.info.features["label"].names == list(CLASSES)
  assert {k: v.num_examples for k, v in built.info.splits.items()} == {k: 2 * n for k, n in SPLITS.items()}
  seen = 0
  for ex in tfds.as_numpy(built.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()})):
    name = ex["image/filename"].decode()
    split, kind, _ = name.split(os.sep)
    assert split == "test" and CLASSES[ex["label"]] == kind  # label i is the i-th sorted class folder
    assert ex["image"] == (folder / name).read_bytes()  # the file's bytes as they are, not re-encoded
    seen += 1
  assert seen == 2 * SPLITS["test"]
  assert pipeline.split_size(built, "train[:50%]") == SPLITS["train"]  # slices work, as for every TFDS dataset

  again = pipeline.get_builder(str(folder), data_dir)  # converted once: read, not converted again
  assert "converting" not in capsys.readouterr().out and str(again.data_dir) == str(built.data_dir)
  # A changed folder is another dataset (another fingerprint), converted again beside the first.
  changed = folder.parent / "changed" / folder.name
  write_image_folder(changed)
  os.remove(changed / "test" / "circle" / "000.jpg")
  other = pipeline.get_builder(str(changed), data_dir)
  assert str(other.data_dir) != str(built.data_dir) and other.info.splits["test"].num_examples == 2 * SPLITS["test"] - 1
  # A TFDS dataset directory is read as it is.
  assert str(pipeline.get_builder(str(built.data_dir)).data_dir) == str(built.data_dir)


def test_a_path_that_is_no_dataset_and_a_folder_not_converted_on_several_processes_are_one_paragraph(folder, tmp_path):
  with pytest.raises(errors.NotFound, match=r"is a path, but there is no such directory\. A path must be a TFDS"):
    pipeline.get_builder(str(tmp_path / "nope"))
  (tmp_path / "empty" / "train").mkdir(parents=True)
  with pytest.raises(errors.NotFound, match=r"but it holds neither\. .*train.cat.0001\.jpg"):
    pipeline.get_builder(str(tmp_path / "empty"))
  with pytest.raises(errors.NotFound, match=r"python -m flyp_jax\.data\.image_folder .* --data_dir="):
    image_folder.builder(str(folder), str(tmp_path / "tfds"), convert=False)


@pytest.mark.slow
def test_the_conversion_command(folder, tmp_path):
  run = subprocess.run([sys.executable, "-m", "flyp_jax.data.image_folder", str(folder), f"--data_dir={tmp_path}"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert run.returncode == 0, run.stderr
  assert "splits test (8), train (24), validation (8); classes ['circle', 'square']" in run.stdout
  assert f"--config.data.dataset={folder} --config.data.data_dir={tmp_path}" in run.stdout


def test_class_names_from_the_dataset_a_file_or_a_list(folder, data_dir, tmp_path):
  assert classnames.get("tfds", str(folder), data_dir) == list(CLASSES)
  assert classnames.get(f"tfds:{folder}", "ignored", data_dir) == list(CLASSES)
  names = tmp_path / "names.txt"
  names.write_text("round thing\n\nboxy thing\n")
  assert classnames.get(str(names)) == ["round thing", "boxy thing"]
  assert classnames.get(" circle , square") == ["circle", "square"]
  assert classnames.get("imagenet")[:2] == ["tench", "goldfish"]  # the registered lists as before
  with pytest.raises(errors.BadValue, match="more than once"):
    classnames.get("cat,cat")
  with pytest.raises(errors.BadValue, match="empty class name"):
    classnames.get("cat,,dog")
  with pytest.raises(errors.BadValue, match=r"unknown class-name list 'nope.txt' \(and no such file\)"):
    classnames.get("nope.txt")


def test_templates_from_a_file_or_one_string(tmp_path):
  assert templates.get("photo") == ["a photo of a {}."]
  assert templates.get("a sketch of a {}.") == ["a sketch of a {}."]
  path = tmp_path / "t.txt"
  path.write_text("a photo of a {}.\na {}, drawn.\n")
  assert templates.get(str(path)) == ["a photo of a {}.", "a {}, drawn."]
  for wrong in ("{} and {}", "a {0}"):
    path.write_text(wrong + "\n")
    with pytest.raises(errors.BadValue, match="exactly one {}"):
      templates.get(str(path))
  with pytest.raises(errors.BadValue, match="unknown template set"):
    templates.get("no-such-set")


def _own(folder, data_dir, **updates):
  config = configs_lib.load("configs/flyp.py")
  config.unlock()
  config.data.update(dataset=str(folder), data_dir=data_dir, classnames="tfds", templates="photo")
  config.eval.suite = "data"
  config.update(updates)
  return config


def test_a_suite_built_from_the_config(folder, data_dir):
  config = _own(folder, data_dir)
  config.eval.ood = "validation,/data/night_shapes:test"
  test, ood_split, other = suites.of_config(config)
  assert (test.name, test.split, test.ood, test.classnames, test.templates) == ("my_shapes_test", "test", False,
                                                                                "tfds", "photo")
  assert (ood_split.name, ood_split.tfds_name, ood_split.ood) == ("my_shapes_validation", str(folder), True)
  assert (other.name, other.tfds_name, other.split) == ("night_shapes_test", "/data/night_shapes", "test")
  val = suites.validation_of(config)
  assert (val.name, val.split) == ("id_val", "validation")
  config.eval.val_split = "train[:25%]"
  assert suites.validation_of(config).split == "train[:25%]"
  config.eval.ood = "gs://bucket/night_shapes"
  with pytest.raises(errors.BadValue, match="give 'SPLIT'"):
    suites.of_config(config)
  config.eval.ood = "test"
  with pytest.raises(errors.BadValue, match="repeat"):
    suites.of_config(config)


def test_inputs_are_checked_before_the_workdir(folder, data_dir, tmp_path):
  """A missing checkpoint, a split the dataset lacks and class names that do not match its labels are each said
  before the workdir's guard (which would otherwise refuse first, as the settings differ from its run's)."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "checkpoints" / "10").mkdir(parents=True)  # a run of other settings
  (workdir / "config.json").write_text(json.dumps({"config": {"batch_size": 1}, "overrides": [], "resumed": []}))
  cases = [({"model.path": str(tmp_path / "nope.pt")}, errors.NotFound, "nope.pt' not found"),
           ({"data.train_split": "training"}, pipeline.DatasetNotPreparedError, "has no split 'training'"),
           ({"data.classnames": "a,b,c"}, config_checks.ConfigError, "names 3 classes, but .* has 2 labels")]
  for updates, kind, message in cases:
    config = _own(folder, data_dir)
    for key, value in updates.items():
      section, _, field = key.rpartition(".")
      (config[section] if section else config)[field] = value
    with pytest.raises(kind, match=message):
      train.run(config, str(workdir))
  # With the inputs right, the guard speaks, and names a workdir for the new settings, ready to paste.
  config = _own(folder, data_dir)
  with pytest.raises(config_checks.ConfigError, match=rf"add --workdir={workdir}_batch_size-{config.batch_size}$"):
    train.run(config, str(workdir))


def test_variant_workdir_names():
  assert config_checks.variant_workdir("workdirs/flyp_demo", {"batch_size": 7}) == "workdirs/flyp_demo_batch_size-7"
  assert (config_checks.variant_workdir("workdirs/flyp_demo/", {"model.path": "/ckpt/ViT-B-16.pt", "seed": 1})
          == "workdirs/flyp_demo_path-ViT-B-16.pt_seed-1")
  long = config_checks.variant_workdir("w", {f"optimizer.field_{i}": i for i in range(10)})
  assert len(long) < 60 and long.startswith("w_field_0-0")


@pytest.mark.slow
def test_fine_tune_on_your_own_data_as_the_readme_says(folder, tmp_path):
  """The README's command ("Fine-tune on your own data") on an image folder of the test's, shortened to 10 steps."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TFDS_DATA_DIR": str(tmp_path / "tfds")}
  command = [sys.executable, "main.py", "--config=configs/flyp.py", f"--config.data.dataset={folder}",
             "--config.data.classnames=tfds", "--config.data.templates=photo", "--config.eval.suite=data",
             f"--workdir={tmp_path / 'my_shapes'}"]
  run = subprocess.run(command + ["--config.steps=10", "--config.batch_size=16", "--config.eval.every_steps=10"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  assert run.returncode == 0, run.stdout + run.stderr
  results = json.loads((tmp_path / "my_shapes" / "results.json").read_text())
  assert results["selected_step"] == 10 and {"my_shapes_test/top1", "id_val/top1"} <= set(results)
  assert results["my_shapes_test/count"] == 2 * SPLITS["test"]  # every test image, each once
  assert "| my_shapes_test |" in run.stdout
  assert not re.search("[Dd]ownload(ing|ed) and prepar", run.stdout + run.stderr)  # TFDS's words for a download
