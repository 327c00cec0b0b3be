"""The Colab notebook, executed on CPU with its short settings, so that it cannot rot.

The kernel is a subprocess: it gets its environment explicitly (CPU, two simulated devices so that the
sharded paths run, the install cell skipped, data and outputs in a temporary directory).
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import xla_flags

try:
  import nbformat
  from nbclient import NotebookClient
except ImportError as e:  # a failure, not a skip: CI installs them through the test extra
  raise ImportError(f"{e}: pip install -e '.[test]' (nbformat, nbclient, ipykernel)") from e

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "flyp_colab.ipynb"


def test_notebook_is_stored_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code), "clear the outputs before committing"
  assert any("parameters" in c.metadata.get("tags", []) for c in code)


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  env = {
      "FLYP_NOTEBOOK_QUICK": "1",
      "FLYP_SKIP_INSTALL": "1",
      "FLYP_NOTEBOOK_DATA_DIR": str(tmp_path / "tfds"),
      "FLYP_NOTEBOOK_WORKDIR": str(tmp_path / "work"),
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": xla_flags(2),
      "TF_CPP_MIN_LOG_LEVEL": "2",
      "MPLBACKEND": "Agg",
      # The kernel imports this checkout's package even where it is not installed.
      "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
  }
  for k, v in env.items():
    monkeypatch.setenv(k, v)  # the kernel process inherits this process's environment
  return tmp_path


@pytest.mark.slow
def test_notebook_runs_on_cpu(kernel_env):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                          resources={"metadata": {"path": str(ROOT)}})
  client.execute()

  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in code), "a cell did not run"
  text = "\n".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
  assert "backend cpu: 2 devices" in text
  assert "zero-shot:" in text and "alpha 1.0:" in text and "trained 4 steps" in text
  images = [o for c in code for o in c.outputs if o.output_type == "display_data" and "image/png" in o.data]
  assert len(images) == 1, "the WiSE-FT plot was not shown"

  work = kernel_env / "work"
  assert (work / "wiseft.png").stat().st_size > 10_000
  assert (work / "flyp" / "final").is_dir()
  summary = json.loads((work / "notebook_results.json").read_text())
  assert summary["backend"] == "cpu" and summary["steps"] == 4 and summary["dataset"] == "domain_shapes/small"
  assert [r["alpha"] for r in summary["wiseft"]] == [0.0, 0.5, 1.0]
  # Accuracies over 100 images per small test split: ID a count of 100, OOD the mean of four such (of 400).
  for r in [summary["zeroshot"], *summary["wiseft"]]:
    assert abs(r["avg_id/top1"] * 100 - round(r["avg_id/top1"] * 100)) < 1e-4, r
    assert abs(r["avg_ood/top1"] * 400 - round(r["avg_ood/top1"] * 400)) < 1e-3, r
  # alpha 0 is the zero-shot model itself: the same accuracies as the zero-shot evaluation.
  assert summary["wiseft"][0]["avg_id/top1"] == pytest.approx(summary["zeroshot"]["avg_id/top1"], abs=1e-6)
  # WiSE-FT's pick: the highest ID accuracy, ties to the smaller alpha (wiseft.py's rule, written out here).
  best = max(summary["wiseft"], key=lambda r: (r["avg_id/top1"], -r["alpha"]))
  assert summary["picked_alpha"] == best["alpha"]


def _install_cell():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  return next(c.source for c in nb.cells if c.cell_type == "code" and "pip" in c.source)


@pytest.mark.parametrize("colab_tensorflow", [True, False])
def test_install_cell_keeps_colabs_tensorflow(colab_tensorflow, monkeypatch):
  """The install cell, run with pip and git replaced by a recorder: from a local folder (no placeholder URL),
  and without tensorflow-cpu where a tensorflow is installed (Colab's)."""
  import importlib.util
  import subprocess
  calls, real_find_spec = [], importlib.util.find_spec
  fake_spec = lambda name, *a: {"flyp_jax": None, "tensorflow": object() if colab_tensorflow else None}.get(
      name, real_find_spec(name, *a)) if name in ("flyp_jax", "tensorflow") else real_find_spec(name, *a)
  monkeypatch.setattr(importlib.util, "find_spec", fake_spec)
  monkeypatch.setattr(subprocess, "run", lambda command, **kw: calls.append(command))
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.delenv("FLYP_SKIP_INSTALL", raising=False)
  monkeypatch.chdir(ROOT)  # the cell changes into the project folder; restored after
  exec(_install_cell(), {"os": os, "REPO": str(ROOT)})
  installs = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
  assert not [c for c in calls if "git" in c[0]] and installs
  if colab_tensorflow:
    deps, project = installs
    names = [re.split(r"[<>=!~\[;]", w)[0] for w in deps]  # setup.py's requirements carry version ranges
    assert "tensorflow-datasets" in names and "orbax-checkpoint" in names
    assert "tensorflow-cpu" not in names
    assert project[-3:] == ["--no-deps", "-e", str(ROOT)]
  else:
    (project,) = installs
    assert project[-2:] == ["-e", str(ROOT)]  # tensorflow-cpu comes with the project's dependencies


def test_notebook_names_no_placeholder_repository():
  text = NOTEBOOK.read_text()
  assert "YOUR_ACCOUNT" not in text
