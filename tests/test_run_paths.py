"""One base for paths to other runs: the parent of the run's workdir (flyp_jax/run_paths.py); the comparison's
shared settings reach the runs it starts."""

import json
import os

import pytest

from flyp_jax import configs_lib, files, run_paths, train
from flyp_jax.methods import compare


def test_relative_paths_are_beside_the_workdir():
  assert run_paths.resolve("/runs/mine/wiseft", "ft_demo") == "/runs/mine/ft_demo"
  assert run_paths.resolve("/runs/mine/wiseft/", "ft_demo") == "/runs/mine/ft_demo"
  assert run_paths.resolve("gs://b/runs/wiseft", "ft_demo") == "gs://b/runs/ft_demo"
  assert run_paths.resolve("/runs/mine/wiseft", "/elsewhere/ft") == "/elsewhere/ft"
  assert run_paths.resolve("/runs/mine/wiseft", "gs://b/ft") == "gs://b/ft"
  assert run_paths.resolve("/runs/mine/wiseft", "") == ""
  assert run_paths.resolve("workdirs/wiseft_demo", "ft_demo") == os.path.abspath("workdirs/ft_demo")


@pytest.mark.parametrize("spec,field,made_by", [
    ("configs/wiseft.py:demo", "wiseft.finetuned", "wiseft.finetuned_config"),
    ("configs/wiseft.py:flyp", "wiseft.finetuned", "wiseft.finetuned_config"),
    ("configs/lpft.py:demo", "ft.lp_workdir", "configs/lp.py:demo"),
    ("configs/attention_transfer.py:demo", "at.ensemble.path", "at.ensemble.config"),
])
def test_default_paths_find_the_runs_the_other_commands_make(spec, field, made_by):
  """With default workdirs (workdirs/<name>), a config's path to another run is that run's default workdir."""
  config = configs_lib.load(spec)
  get = lambda c, key: c[key] if "." not in key else get(c[key.split(".")[0]], key.split(".", 1)[1])
  other_spec = made_by if made_by.startswith("configs/") else get(config, made_by)
  other = configs_lib.load(other_spec)
  workdir = os.path.join("workdirs", config.name)
  assert run_paths.resolve(workdir, get(config, field)) == os.path.abspath(os.path.join("workdirs", other.name))
  # The loop hands the methods these paths made absolute by the same rule.
  absolute = run_paths.absolute(config, "/custom/place/mine")
  assert get(absolute, field) == f"/custom/place/{other.name}"


def test_compare_runs_its_methods_beside_it_with_its_shared_settings(tmp_path, monkeypatch):
  config = configs_lib.load("configs/compare.py")
  config.unlock()
  config.seed = 3
  config.data.data_dir = str(tmp_path / "tfds")
  config.model.update(path=str(tmp_path / "model.npz"), dtype="bfloat16")
  config.eval.batch_size = 32
  config.lock()
  started = []

  def dispatch(sub, path):
    started.append((sub, path))
    files.makedirs(path)
    with open(os.path.join(path, "results.json"), "w") as f:
      json.dump({"avg_id/top1": 0.5}, f)

  monkeypatch.setattr(train, "dispatch", dispatch)
  assert compare._run_or_reuse("configs/ft.py:demo", config, str(tmp_path / "compare")) == {"avg_id/top1": 0.5}
  (sub, path), = started
  assert path == str(tmp_path / "ft_demo")
  assert sub.seed == 3 and sub.data.data_dir == str(tmp_path / "tfds") and sub.eval.batch_size == 32
  assert sub.model.path == str(tmp_path / "model.npz") and sub.model.dtype == "bfloat16"
  # What is the method's own stays its own.
  ft = configs_lib.load("configs/ft.py:demo")
  assert sub.method == "ft" and sub.optimizer.lr == ft.optimizer.lr and sub.trainable == ft.trainable
  compare._run_or_reuse("configs/ft.py:demo", config, str(tmp_path / "compare"))
  assert len(started) == 1  # finished: reused
