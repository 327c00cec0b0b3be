"""Run files in a bucket or a local directory: the same calls, checked on TensorFlow's in-memory filesystem."""

import json
import os

import numpy as np
import pytest

from flyp_jax import errors, files, metric_writer, train
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


class _FillsUp:
  """A local file whose writes stop at `room` bytes with the OS's 'No space left on device', as a full disk's."""

  def __init__(self, path, mode, room):
    self._file, self._room = open(path, mode), room

  def write(self, data):
    if len(data) > self._room:
      self._file.write(data[:self._room])
      raise OSError(28, "No space left on device")
    self._room -= len(data)
    return self._file.write(data)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._file.close()


@pytest.mark.parametrize("write", ["json", "npz", "append"])
def test_a_write_that_finds_the_disk_full_is_storage_full_naming_the_file_and_the_old_file_stays_whole(
    tmp_path, monkeypatch, write):
  """Injected: the write stops half-way with ENOSPC. JSON and npz files are replaced whole or not at all (the
  previous results.json is still readable, no partial file is left); an append raises the same error."""
  path = tmp_path / {"json": "results.json", "npz": "head.npz", "append": "metrics.jsonl"}[write]

  def do():
    if write == "json":
      files.write_json(str(path), {"top1": 0.9, "pad": "x" * 100})
    elif write == "npz":
      files.save_npz(str(path), {"kernel": np.ones((8, 8), np.float32)})
    else:
      with files.open_file(str(path), "a") as f:
        f.write("y" * 100)
  do()
  before = path.read_bytes()
  monkeypatch.setattr(files, "open", lambda p, mode="r": _FillsUp(p, mode, room=10), raising=False)
  with pytest.raises(errors.StorageFull, match=f"writing {path} failed: no space left on device"):
    do()
  monkeypatch.undo()
  left = sorted(p.name for p in tmp_path.iterdir())
  assert left == [path.name], left  # no partial file beside it
  if write == "append":
    assert path.read_bytes().startswith(before) and len(path.read_bytes()) == len(before) + 10
  else:
    assert path.read_bytes() == before


def test_a_metrics_line_cut_short_by_a_full_disk_is_dropped_on_resume(tmp_path):
  """metrics.jsonl's last line cut short (the disk filled while it was appended): the resumed run's writer keeps
  the whole lines up to its step and drops the torn one, which its step writes again."""
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 10, "train/loss": 2.0}\n{"step": 20, "train/loss": 1.5}\n{"step": 30, "train/lo')
  writer = metric_writer.MetricWriter(str(tmp_path), resume_step=20)
  writer.write(30, {"train/loss": 1.25})
  writer.close()
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
      {"step": 10, "train/loss": 2.0}, {"step": 20, "train/loss": 1.5}, {"step": 30, "train/loss": 1.25}]
