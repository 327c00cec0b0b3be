"""Several seeds of one run: `--config.seeds=N` runs the config N times and reports mean and 95% interval.

Seed i runs in `<workdir>/seed_<seed>` with `config.seed + i` (a finished seed is reused, so an interrupted
sweep resumes); `<workdir>/results.json` then holds, for every numeric metric the runs share, the mean, the
half-width of its two-sided 95% Student-t interval, the sample standard deviation and the per-seed values.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import jax
import numpy as np
from scipy import stats

from flyp_jax import errors, files, runs


def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
  """(mean, half-width) of the two-sided `level` Student-t confidence interval of the mean of `values`.

  The half-width is t_{(1 + level) / 2, n - 1} * s / sqrt(n), s the sample standard deviation (ddof 1); it is
  NaN for a single value (no spread can be estimated from one run).
  """
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or x.size == 0:
    raise errors.BadValue(f"need a non-empty list of numbers, got {values!r}")
  if x.size == 1:
    return float(x[0]), float("nan")
  half = stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
  return float(x.mean()), float(half)


def aggregate(runs: Sequence[dict], seeds: Sequence[int], ddof: int = 1) -> dict:
  """{'seeds', 'mean', 'ci95', 'std', 'values'} over the numeric metrics every run in `runs` has.

  Keys ending in '/count' (example counts) and non-numeric values are left out; each of 'mean', 'ci95',
  'std', 'values' maps a metric to a number (a list for 'values', in the order of `seeds`). 'std' has `ddof`
  degrees of freedom removed: 1 is the sample standard deviation, 0 numpy's default, which FLYP's few-shot
  script reports (`np.std`); the 95% interval always uses the sample standard deviation.
  """
  if len(runs) != len(seeds) or not runs:
    raise errors.BadValue(f"need one result per seed, got {len(runs)} results for seeds {list(seeds)}")
  numeric = lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
  keys = [k for k, v in runs[0].items()
          if numeric(v) and not k.endswith("/count") and all(numeric(r.get(k)) for r in runs)]
  out = {"seeds": list(seeds), "mean": {}, "ci95": {}, "std": {}, "values": {}}
  for k in keys:
    values = [float(r[k]) for r in runs]
    out["mean"][k], out["ci95"][k] = interval(values)
    out["std"][k] = float(np.std(values, ddof=ddof)) if len(values) > ddof else float("nan")
    out["values"][k] = values
  return out


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def run(config, workdir: str, run_one: Callable[[object, str], dict]) -> dict:
  """Runs `run_one(config with seed s and seeds 1, seed_dir)` for the config's N seeds; writes results.json.

  `run_one` is the single-run command (`flyp_jax.train.dispatch`). A seed whose run has finished is not run
  again (`flyp_jax.runs.results_of`).
  """
  n = int(config.seeds)
  seeds = [int(config.seed) + i for i in range(n)]
  per_seed = []
  for i, seed in enumerate(seeds):
    path = seed_dir(workdir, seed)
    print(f"seed {seed} ({i + 1} of {n}) in {path}", flush=True)
    one = config.copy_and_resolve_references()
    with one.unlocked():
      one.seed, one.seeds = seed, 1
    per_seed.append(runs.results_of(one, path, run_one))
  results = aggregate(per_seed, seeds)
  if jax.process_index() == 0:  # every process computed the same aggregate; one writes it
    files.write_json(os.path.join(workdir, "results.json"), results)
  print(summary(results), flush=True)
  return results


def summary(results: dict, keys: Sequence[str] = ()) -> str:
  """Lines 'metric: mean ± half-width (n seeds)' for `keys` (default: the averages and top-1 accuracies)."""
  keys = keys or [k for k in results["mean"] if k.startswith("avg_") or k.endswith("/top1")]
  n = len(results["seeds"])
  return "\n".join(f"{k}: {results['mean'][k]:.4f} ± {results['ci95'][k]:.4f} (95% interval, {n} seeds)"
                   for k in keys if k in results["mean"])
