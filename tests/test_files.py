"""Run files in a bucket or a local directory: the same calls, checked on TensorFlow's in-memory filesystem."""

import os

import numpy as np
import pytest

from flyp_jax import files, train
from flyp_jax.commands import wiseft

REMOTE = "ram://flyp_files_test"  # a scheme like gs://, served by tf.io.gfile without a network


@pytest.mark.parametrize("root", ["local", "remote"])
def test_json_npz_and_directories_round_trip(tmp_path, root):
  base = str(tmp_path) if root == "local" else f"{REMOTE}/{tmp_path.name}"
  workdir = os.path.join(base, "run", "final")
  assert not files.exists(workdir)
  files.makedirs(workdir)
  files.write_json(os.path.join(workdir, "results.json"), {"a/top1": 0.5, "b": [1, 2]})
  arrays = {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.zeros(3, np.float32)}
  files.save_npz(os.path.join(workdir, "head.npz"), arrays)
  assert sorted(files.listdir(workdir)) == ["head.npz", "results.json"]
  assert files.read_json(os.path.join(workdir, "results.json")) == {"a/top1": 0.5, "b": [1, 2]}
  assert files.read_json(os.path.join(workdir, "missing.json"), default={}) == {}
  loaded = files.load_npz(os.path.join(workdir, "head.npz"))
  assert set(loaded) == set(arrays) and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
  assert files.is_remote(workdir) == (root == "remote")
  assert files.absolute(workdir) == (workdir if root == "remote" else os.path.abspath(workdir))
  assert files.join(base, "other") == os.path.join(base, "other") and files.join(base, "gs://b/x") == "gs://b/x"


def test_wiseft_writes_its_table_and_plot_to_a_bucket_path(tmp_path):
  results = [{"alpha": a, wiseft.ID_KEY: 0.5 + a / 10, wiseft.OOD_KEY: 0.3 - a / 20} for a in (0.0, 0.5, 1.0)]
  workdir = f"{REMOTE}/{tmp_path.name}/wiseft"
  best = wiseft.write(results, workdir)
  assert best["alpha"] == 1.0
  assert files.read_json(os.path.join(workdir, "wiseft.json"))["picked_alpha"] == 1.0
  with files.open_file(os.path.join(workdir, "wiseft.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_workdir_that_cannot_be_written_is_refused_before_any_work(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  workdir = str(blocker / "run")
  with pytest.raises(PermissionError, match="the workdir .* cannot be written .*Choose another --workdir"):
    files.check_writable(workdir)
  from flyp_jax import configs_lib
  with pytest.raises(PermissionError, match="nothing was run"):
    train.dispatch(configs_lib.load("configs/flyp.py:demo"), workdir)
  files.check_writable(str(tmp_path / "fine"))  # a writable one passes and is left empty
  assert os.listdir(tmp_path / "fine") == []
