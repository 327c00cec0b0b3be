"""Several seeds: the mean and 95% interval of each metric, and the comparison's claim tests, on known inputs."""

import json
import math
import os

import pytest

from conftest import write_finished_run

from flyp_jax import seeds
from flyp_jax.commands import compare


def test_interval_matches_the_t_table_by_hand():
  # 1..5: mean 3, sample sd sqrt(2.5); t(0.975, 4 dof) = 2.7764 from a printed t table.
  mean, half = seeds.interval([1, 2, 3, 4, 5])
  assert mean == 3 and half == pytest.approx(2.7764 * math.sqrt(2.5) / math.sqrt(5), abs=2e-4)
  # Two values: t(0.975, 1 dof) = 12.706; sd of (0, 1) is sqrt(0.5).
  assert seeds.interval([0.0, 1.0])[1] == pytest.approx(12.706 * math.sqrt(0.5) / math.sqrt(2), abs=1e-3)
  assert math.isnan(seeds.interval([0.7])[1])  # one run has no interval
  with pytest.raises(ValueError):
    seeds.interval([])


def test_aggregate_keeps_shared_numeric_metrics():
  runs = [{"a/top1": 0.5, "a/count": 100, "note": "x", "only_first": 1.0}, {"a/top1": 0.7, "a/count": 100}]
  out = seeds.aggregate(runs, [0, 1])
  assert out["seeds"] == [0, 1] and set(out["mean"]) == {"a/top1"}
  assert out["mean"]["a/top1"] == pytest.approx(0.6) and out["values"]["a/top1"] == [0.5, 0.7]
  assert out["std"]["a/top1"] == pytest.approx(math.sqrt(0.02))
  with pytest.raises(ValueError):
    seeds.aggregate(runs, [0])


def test_seeds_run_each_seed_once_and_reuse_finished_ones(tmp_path):
  from flyp_jax import configs_lib
  config = configs_lib.load("configs/ft.py:demo")
  config.unlock()
  config.seed, config.seeds = 3, 3
  calls = []

  def run_one(c, path):
    calls.append((c.seed, c.seeds, path))
    result = {"avg_id/top1": c.seed / 10}
    write_finished_run(path, c.steps, result)
    return result

  out = seeds.run(config, str(tmp_path), run_one)
  assert [c[:2] for c in calls] == [(3, 1), (4, 1), (5, 1)] and calls[0][2].endswith("seed_3")
  assert out["mean"]["avg_id/top1"] == pytest.approx(0.4)
  seeds.run(config, str(tmp_path), lambda *a: pytest.fail("a finished seed ran again"))


def test_seeds_results_are_written_by_process_0_only(tmp_path, monkeypatch):
  """On several processes every one aggregates the seeds; only process 0 writes results.json."""
  from flyp_jax import configs_lib
  config = configs_lib.load("configs/ft.py:demo")
  config.unlock()
  config.seed, config.seeds = 0, 2
  for seed in (0, 1):  # finished seeds, as every process sees them in the shared workdir
    write_finished_run(seeds.seed_dir(str(tmp_path), seed), config.steps, {"avg_id/top1": 0.5})
  monkeypatch.setattr(seeds.jax, "process_index", lambda: 1)
  assert seeds.run(config, str(tmp_path), None)["mean"]["avg_id/top1"] == pytest.approx(0.5)
  assert not (tmp_path / "results.json").exists()
  monkeypatch.setattr(seeds.jax, "process_index", lambda: 0)
  seeds.run(config, str(tmp_path), None)
  assert json.loads((tmp_path / "results.json").read_text())["mean"]["avg_id/top1"] == pytest.approx(0.5)


def test_verdicts_and_curve_geometry():
  assert compare.verdict([0.02, 0.03, 0.025])["outcome"] == "held"
  assert compare.verdict([-0.02, -0.03, -0.025])["outcome"] == "not held"
  assert compare.verdict([0.05, -0.04, 0.01])["outcome"] == "inconclusive"
  assert compare.verdict([0.05])["outcome"] == "inconclusive"
  # Endpoints (0.4, 0.5) and (0.8, 0.3); alpha 0.5 at ID 0.6 lies on the chord at OOD 0.4: gap 0.05 above it.
  curve = [{"alpha": 0.0, "avg_id/top1": 0.4, "avg_ood/top1": 0.5},
           {"alpha": 0.5, "avg_id/top1": 0.6, "avg_ood/top1": 0.45},
           {"alpha": 1.0, "avg_id/top1": 0.8, "avg_ood/top1": 0.3}]
  assert compare._chord_gap(curve, 0.5) == pytest.approx(0.05)
  higher = [dict(r, **{"avg_ood/top1": r["avg_ood/top1"] + 0.1}) for r in curve]
  assert compare._curve_gap(higher, curve) == pytest.approx(0.1)  # only the interior point counts
  assert math.isnan(compare._curve_gap([dict(r, **{"avg_id/top1": 0.9}) for r in curve], curve))


def test_baseline_fit_recovers_a_line_on_logit_axes():
  logit = lambda p: math.log(p / (1 - p))
  expit = lambda z: 1 / (1 + math.exp(-z))
  points = [(x, expit(0.8 * logit(x) - 0.5)) for x in (0.2, 0.4, 0.6, 0.9)]
  fit = compare.fit_baseline(points)
  assert fit["slope"] == pytest.approx(0.8) and fit["intercept"] == pytest.approx(-0.5)


def test_claims_from_per_seed_results():
  zs = {"avg_id/top1": 0.5, "avg_ood/top1": 0.4}
  ft = [{"avg_id/top1": 0.8 + d, "avg_ood/top1": 0.3 + d} for d in (0.0, 0.01, 0.02)]
  lpft = [dict(r, **{"avg_ood/top1": r["avg_ood/top1"] + 0.05}) for r in ft]
  claims = compare.test_claims({"zero-shot": [zs], "FT": ft, "LP-FT": lpft}, {}, None)
  assert claims["a"]["outcome"] == "held" and claims["b"]["outcome"] == "held" and "c" not in claims
  assert claims["b"]["parts"]["LP-FT OOD - FT OOD"]["mean"] == pytest.approx(0.05)
  worse = [dict(r, **{"avg_ood/top1": r["avg_ood/top1"] - 0.05}) for r in ft]
  assert compare.test_claims({"zero-shot": [zs], "FT": ft, "LP-FT": worse}, {}, None)["b"]["outcome"] == "not held"


def test_dispatch_runs_seeds_through_the_single_run_command(tmp_path, monkeypatch):
  from flyp_jax import configs_lib, train
  config = configs_lib.load("configs/flyp.py:demo")
  config.unlock()
  config.seeds = 2
  seen = []

  def fake_run(c, path):
    seen.append((c.seed, c.seeds, os.path.basename(path)))
    return {"avg_id/top1": 0.5 + c.seed / 10}

  monkeypatch.setattr(train, "run", fake_run)
  out = train.dispatch(config, str(tmp_path))
  assert seen == [(0, 1, "seed_0"), (1, 1, "seed_1")]
  assert out["mean"]["avg_id/top1"] == pytest.approx(0.55)
  assert json.loads((tmp_path / "results.json").read_text())["values"]["avg_id/top1"] == [0.5, 0.6]
