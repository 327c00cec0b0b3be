"""The comparison command: reuses finished runs beside its workdir, and writes one table and one plot."""

import dataclasses
import json

import pytest

from flyp_jax import configs_lib, files, train
from flyp_jax.data import pipeline, suites
from flyp_jax.methods import compare


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  pipeline.get_builder("domain_shapes/small", path)
  return path


def test_compare_reuses_finished_runs_and_writes_the_table(tmp_path, data_dir, monkeypatch):
  monkeypatch.setitem(suites.SUITES, "domain_shapes", tuple(
      dataclasses.replace(d, tfds_name="domain_shapes/small") for d in suites.SUITES["domain_shapes"]))
  names = [d.name for d in suites.SUITES["domain_shapes"]]
  config = configs_lib.load("configs/compare.py")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.data_dir = data_dir
  config.eval.batch_size = 64
  # Finished runs beside the workdir (as the single-method commands leave them): nothing is trained again.
  for i, spec in enumerate(list(config.compare.methods.values()) + [config.compare.wiseft]):
    run = configs_lib.load(spec)
    result = {f"{n}/top1": (i + 1) / 10 for n in names}
    result.update({"avg_id/top1": (i + 1) / 10, "avg_ood/top1": (i + 2) / 20, "id_val/top1": (i + 1) / 10})
    if run.method == "wiseft":
      result = {"results": [dict(result, alpha=a) for a in (0.0, 0.5, 1.0)], "picked_alpha": 0.5,
                "picked_on": "id_val/top1"}
    files.makedirs(str(tmp_path / run.name))
    (tmp_path / run.name / ("wiseft.json" if run.method == "wiseft" else "results.json")).write_text(json.dumps(result))
  monkeypatch.setattr(train, "dispatch", lambda *a: pytest.fail("a finished run was run again"))
  rows = compare.run(config, str(tmp_path / "compare"))
  table = (tmp_path / "compare" / "comparison.md").read_text()
  assert list(rows)[0] == "zero-shot" and "WiSE-FT, alpha 0.5 (picked on id_val/top1)" in rows
  header = table.splitlines()[2]
  assert "domain_shapes_photo (ID)" in header and "domain_shapes_sketch (OOD)" in header
  assert "| FT | 20.0 |" in table  # FT's reused results.json, as a percentage
  assert (tmp_path / "compare" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
  assert 0 <= rows["zero-shot"]["avg_id/top1"] <= 1  # the zero-shot row is evaluated, not read
