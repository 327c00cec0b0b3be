"""Every method on one benchmark, several seeds: zero-shot, LP, FT, LP-FT, FLYP, its cross-entropy ablation,
WiSE-FT of the fine-tuned methods, and model soups.

The protocol (`configs/compare.py`):
1. Each method's learning rate is picked from its grid (`compare.lr_grid`) with seed 0 only, on the suite's
   ID validation set (the metric that selects checkpoints, `train.selection_key`); test splits never choose.
2. Each method then runs `compare.seeds` seeds at the picked setting (seed 0 reused); every number reported is
   the mean over seeds with its 95% Student-t interval (`flyp_jax.seeds`). LP (L-BFGS on fixed features) has
   no randomness: it runs once.
3. WiSE-FT interpolates the zero-shot model with each seed's fine-tuned run (`compare.wiseft_of`) at
   `compare.alphas`. Model soups (`compare.soup`, flyp_jax/commands/soup.py) run once per seed of the first
   `compare.soup_seeds`, each seed drawing its own ingredients: the greedy soup, the uniform soup and the best
   single ingredient, each a row.
4. Effective robustness is measured against a line fit (logit axes, Taori et al., 2020) through models trained
   on ID data only: the checkpoints of `compare.baseline` (a ViT trained from scratch on photos).
5. `claims.md` tests the claims written in docs/demo_claims.md before the comparison was run, each from
   per-seed paired differences: held (the 95% interval is above 0), not held (below 0), or inconclusive.

Runs live in `<workdir>/runs/<method>/lr_<lr>/seed_<seed>`; a finished run is reused, so an interrupted
comparison resumes. Writes comparison.md, comparison.png, claims.md and comparison.json.
"""

from __future__ import annotations

import itertools
import os
from typing import Optional, Sequence

import jax
import numpy as np

from flyp_jax import configs_lib, evaluate, files, parallel, runs, seeds, train
from flyp_jax.data import suites
from flyp_jax.commands import wiseft

ID, OOD = wiseft.ID_KEY, wiseft.OOD_KEY
GREEDY, BEST_INGREDIENT = "greedy soup", "best soup ingredient"


def _sub_config(spec: str, parent, **updates):
  """The method config `spec` with the comparison's shared settings (`configs_lib.SHARED`: model, data location,
  ...) and `updates` ('a.b' -> value)."""
  # eval.at_start off: the zero-shot model is evaluated once, by the comparison itself
  return configs_lib.load_sub_run(spec, parent, updates={"eval.at_start": False, **updates})


def _run(config, path: str) -> dict:
  """The results of `config` in `path` (for WiSE-FT, its wiseft.json), run first unless finished."""
  return runs.results_of(config, path, train.dispatch)


def _lr_tag(lr: float) -> str:
  return f"lr_{lr:g}"


def run(config, workdir: str) -> dict:
  """The comparison; returns {label: {'mean': ..., 'ci95': ..., 'values': ...}} over the reported metrics."""
  files.makedirs(workdir)
  runs_dir = os.path.join(files.absolute(workdir), "runs")
  zero_shot, select_on = _zero_shot(config, workdir)
  seed_list = [int(config.seed) + i for i in range(int(config.compare.seeds))]
  per_seed, run_dirs, picked_lr = _methods(config, runs_dir, select_on, seed_list)
  curves = {label: [_run(_wiseft_config(config, d), os.path.join(d, "wiseft"))["results"] for d in run_dirs[label]]
            for label in config.compare.wiseft_of}
  for label, per_run in curves.items():
    per_seed[f"WiSE-FT of {label} (alpha picked on {select_on})"] = [wiseft.pick(c, select_on) for c in per_run]
  if config.compare.soup:
    per_seed.update(_soups(config, runs_dir, seed_list[:int(config.compare.soup_seeds)]))
  fit = _baseline_fit(config, runs_dir) if config.compare.baseline else None
  summary = {label: _aggregate(rows, fit) for label, rows in {"zero-shot": [zero_shot], **per_seed}.items()}
  table = comparison_table(summary, suites.of_config(config), len(seed_list), picked_lr, fit)
  claims = test_claims({"zero-shot": [zero_shot], **per_seed}, curves, fit)
  if jax.process_index() == 0:
    _write(config, workdir, table, claims, {
        "summary": summary, "picked_lr": picked_lr, "select_on": select_on, "seeds": seed_list, "baseline_fit": fit,
        "claims": claims, "curves": {k: [[{a: r[a] for a in ("alpha", ID, OOD)} for r in c] for c in v]
                                     for k, v in curves.items()}}, curves)
  print(table + "\n" + claims_table(claims), flush=True)
  return summary


def _zero_shot(config, workdir: str) -> tuple[dict, str]:
  """The zero-shot model's results (the suite, and ID validation if the suite has it) and the selection metric."""
  model, params = train.load_clip(config, workdir)
  mesh = parallel.make_mesh(config.model_axis)
  evaluator = evaluate.from_config(model, config, mesh)
  validator = train.make_validator(config, model, mesh)
  zero_shot = evaluator(params, workdir=workdir, filename="zeroshot.json")
  if validator:
    zero_shot.update(validator(params))
  return zero_shot, train.selection_key(config) if validator else ID


def _methods(config, runs_dir: str, select_on: str, seed_list: list[int]):
  """Every method's runs: its learning rate picked on `select_on` with the first seed, then every seed at it.
  ({label: per-seed results}, {label: run directories}, {label: picked lr})."""
  per_seed: dict[str, list[dict]] = {}
  run_dirs: dict[str, list[str]] = {}
  picked_lr: dict[str, float] = {}
  bases = {label: _sub_config(spec, config) for label, spec in config.compare.methods.items()}
  for label in sorted(bases, key=lambda label: bases[label].method != "lp"):  # the probes first
    spec, base = config.compare.methods[label], bases[label]
    path = os.path.join(runs_dir, _directory(label))
    if base.method == "lp":  # deterministic: one run
      per_seed[label], run_dirs[label] = [_run(base, path)], [path]
      continue
    updates = {}
    if base.method == "ft" and base.ft.head_init == "lp":
      updates["ft.lp_workdir"] = run_dirs[config.compare.probe_of[label]][0]
    grid = list(config.compare.lr_grid.get(label, [base.optimizer.lr]))
    scores = {}
    for lr in grid:  # seed 0 of each setting, picked on ID validation
      one = _sub_config(spec, config, seed=seed_list[0], **updates, **{"optimizer.lr": lr})
      scores[lr] = _run(one, seeds.seed_dir(os.path.join(path, _lr_tag(lr)), seed_list[0]))[select_on]
    picked_lr[label] = max(grid, key=lambda lr: (scores[lr], -grid.index(lr)))  # ties: the first in the grid
    print(f"{label}: lr {picked_lr[label]:g} picked on {select_on} "
          f"({', '.join(f'{lr:g}: {s:.4f}' for lr, s in scores.items())})", flush=True)
    path = os.path.join(path, _lr_tag(picked_lr[label]))
    run_dirs[label] = [seeds.seed_dir(path, s) for s in seed_list]
    per_seed[label] = [_run(_sub_config(spec, config, seed=s, **updates, **{"optimizer.lr": picked_lr[label]}), d)
                       for s, d in zip(seed_list, run_dirs[label])]
  return per_seed, run_dirs, picked_lr


def _directory(label: str) -> str:
  """The runs directory of a method's label: 'LP-FT (reference)' -> 'LP-FT_reference'."""
  return label.replace(" (", "_").replace(")", "").replace(" ", "_")


def _soups(config, runs_dir: str, seed_list: list[int]) -> dict[str, list[dict]]:
  """{row: per-seed results} of the greedy soup, the uniform soup and the best single ingredient (on held-out ID
  validation) of `compare.soup` run with each seed, in runs/soup/seed_<seed>."""
  rows: dict[str, list[dict]] = {GREEDY: [], "uniform soup": [], BEST_INGREDIENT: []}
  for s in seed_list:
    soup = _sub_config(config.compare.soup, config, seed=s, **{"soup.ingredients": int(config.compare.soup_ingredients)})
    record = _run(soup, seeds.seed_dir(os.path.join(runs_dir, "soup"), s))
    best = {k: v for k, v in record["ingredients"][record["best_single"]].items() if k != "hparams"}
    for label, r in zip(rows, (record["greedy"], record["uniform"], best)):
      rows[label].append(r)
  return rows


def _wiseft_config(config, finetuned: str):
  """WiSE-FT of the fine-tuned run in `finetuned` at the comparison's alphas."""
  return _sub_config("configs/wiseft.py", config, **{"wiseft.finetuned": finetuned, "wiseft.finetuned_config": "",
                                                      "wiseft.alphas": list(config.compare.alphas)})


def _write(config, workdir: str, table: str, claims: dict, record: dict, curves: dict) -> None:
  """comparison.md, claims.md, comparison.json (written last: the comparison has finished) and comparison.png."""
  with files.open_file(os.path.join(workdir, "comparison.md"), "w") as f:
    f.write(table)
  with files.open_file(os.path.join(workdir, "claims.md"), "w") as f:
    f.write(claims_table(claims))
  plot(record["summary"], curves, os.path.join(workdir, "comparison.png"), title=f"{config.eval.suite}: all methods",
       n_seeds=len(record["seeds"]))
  files.write_json(os.path.join(workdir, "comparison.json"), record)


def _aggregate(rows: Sequence[dict], fit: Optional[dict]) -> dict:
  rows = [dict(r) for r in rows]
  if fit:
    for r in rows:
      r["effective_robustness"] = evaluate.effective_robustness(r[ID], r[OOD], fit)
  return seeds.aggregate(rows, list(range(len(rows))))


# ------------------------------------------------------------------------------------- effective robustness
def fit_baseline(points: Sequence[tuple[float, float]]) -> dict:
  """Least-squares line logit(OOD) = slope * logit(ID) + intercept through (ID, OOD) accuracies (fractions),
  in the form `evaluate.effective_robustness` takes."""
  x, y = np.asarray(points, np.float64).T
  logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
  slope, intercept = np.polyfit(logit(x), logit(y), 1)
  return {"slope": float(slope), "intercept": float(intercept), "transform": "logit", "points": len(x)}


def _baseline_fit(config, runs_dir: str) -> dict:
  """The fit through every evaluation after step 0 of the baseline run (trained on ID data only)."""
  steps = int(config.compare.baseline_steps)
  # Six evaluations along one run from scratch; no ensemble (it would fine-tune a teacher the fit does not use).
  base = _sub_config(config.compare.baseline, config, steps=steps, **{"eval.every_steps": max(steps // 6, 1),
                                                                      "at.ensemble.path": ""})
  path = os.path.join(runs_dir, "baseline")
  _run(base, path)
  points = []
  for name in files.listdir(path):
    if name.startswith("eval_") and name != "eval_0.json":
      r = files.read_json(os.path.join(path, name))
      points.append((r[ID], r[OOD]))
  return fit_baseline(points)


# ------------------------------------------------------------------------------------------------- claims
# Written down before the comparison was run (docs/demo_claims.md): name -> the statement tested.
CLAIMS = {
    "a": "FT raises ID accuracy over zero-shot and has lower effective robustness than zero-shot",
    "b": "LP-FT's OOD accuracy is at least FT's",
    "c": "FLYP's ID and OOD accuracy are at least FT's",
    "d": "WiSE-FT's curve (of FT) bows above the straight line between its endpoints (at alpha 0.5)",
    "e": "FLYP's WiSE-FT curve lies above FT's (OOD at the ID accuracies of FT's interior points)",
    "g": "the greedy soup's ID and OOD accuracy are at least its best single ingredient's",
    "h": "FLYP beats its cross-entropy ablation ID and OOD",
    "i": "WiSE-FT's curve of LP-FT bows above the straight line between its endpoints (at alpha 0.5)",
}


def verdict(diffs: Sequence[float]) -> dict:
  """{'mean', 'ci95', 'n', 'outcome'} of paired differences: 'held' when the whole 95% interval is above 0,
  'not held' when it is below 0, else 'inconclusive' (also for a single value, which has no interval)."""
  mean, half = seeds.interval(diffs)
  if np.isnan(half):
    outcome = "inconclusive"
  else:
    outcome = "held" if mean - half > 0 else "not held" if mean + half < 0 else "inconclusive"
  return {"mean": mean, "ci95": half, "n": len(diffs), "outcome": outcome}


def _chord_gap(curve: Sequence[dict], alpha: float) -> float:
  """OOD accuracy at `alpha` minus the straight line between the endpoints, at the same ID accuracy."""
  by_alpha = {round(r["alpha"], 6): r for r in curve}
  z, f, m = by_alpha[0.0], by_alpha[1.0], by_alpha[round(alpha, 6)]
  if f[ID] == z[ID]:
    return m[OOD] - (z[OOD] + f[OOD]) / 2
  t = (m[ID] - z[ID]) / (f[ID] - z[ID])
  return m[OOD] - (z[OOD] + t * (f[OOD] - z[OOD]))


def _curve_gap(upper: Sequence[dict], lower: Sequence[dict]) -> float:
  """Mean over `lower`'s interior points (0 < alpha < 1) within `upper`'s ID range of upper's OOD accuracy
  (linearly interpolated at that ID accuracy) minus lower's; NaN when no point is in range."""
  xs = np.array([r[ID] for r in upper])
  ys = np.array([r[OOD] for r in upper])
  order = np.argsort(xs)
  xs, ys = xs[order], ys[order]
  gaps = [np.interp(r[ID], xs, ys) - r[OOD] for r in lower
          if 0 < r["alpha"] < 1 and xs[0] <= r[ID] <= xs[-1]]
  return float(np.mean(gaps)) if gaps else float("nan")


def test_claims(per_seed: dict[str, list[dict]], curves: dict[str, list[list[dict]]],
                fit: Optional[dict]) -> dict:
  """Each claim of CLAIMS that the results allow: {name: {'claim', 'parts': {part: verdict(...)}, 'outcome'}}.

  Differences are paired by seed (run i of one method against run i of the other: same data order); the
  zero-shot model is one fixed number. A claim with several parts holds when every part holds, is not held
  when any part is not held, else inconclusive.
  """
  zs = per_seed["zero-shot"][0]
  diff = lambda a, b, key: [x[key] - y[key] for x, y in zip(per_seed[a], per_seed[b])]
  parts: dict[str, dict[str, list[float]]] = {}
  if "FT" in per_seed:
    parts["a"] = {"FT ID - zero-shot ID": [r[ID] - zs[ID] for r in per_seed["FT"]]}
    if fit:
      er = lambda r: evaluate.effective_robustness(r[ID], r[OOD], fit)
      parts["a"]["zero-shot ER - FT ER"] = [er(zs) - er(r) for r in per_seed["FT"]]
  if "FT" in per_seed and "LP-FT" in per_seed:
    parts["b"] = {"LP-FT OOD - FT OOD": diff("LP-FT", "FT", OOD)}
  if "FT" in per_seed and "FLYP" in per_seed:
    parts["c"] = {"FLYP ID - FT ID": diff("FLYP", "FT", ID), "FLYP OOD - FT OOD": diff("FLYP", "FT", OOD)}
  if curves.get("FT"):
    parts["d"] = {"OOD above the chord at alpha 0.5": [_chord_gap(c, 0.5) for c in curves["FT"]]}
  if curves.get("FT") and curves.get("FLYP"):
    gaps = [_curve_gap(up, low) for up, low in zip(curves["FLYP"], curves["FT"])]
    parts["e"] = {"FLYP curve OOD - FT curve OOD": [g for g in gaps if not np.isnan(g)]}
  if GREEDY in per_seed:
    parts["g"] = {"greedy soup ID - best ingredient ID": diff(GREEDY, BEST_INGREDIENT, ID),
                  "greedy soup OOD - best ingredient OOD": diff(GREEDY, BEST_INGREDIENT, OOD)}
  if "FLYP" in per_seed and "CE ablation" in per_seed:
    parts["h"] = {"FLYP ID - CE ablation ID": diff("FLYP", "CE ablation", ID),
                  "FLYP OOD - CE ablation OOD": diff("FLYP", "CE ablation", OOD)}
  if curves.get("LP-FT"):
    parts["i"] = {"OOD above the chord at alpha 0.5": [_chord_gap(c, 0.5) for c in curves["LP-FT"]]}
  out = {}
  for name, named in parts.items():
    verdicts = {p: verdict(d) if d else {"mean": float("nan"), "ci95": float("nan"), "n": 0,
                                         "outcome": "inconclusive"} for p, d in named.items()}
    outcomes = {v["outcome"] for v in verdicts.values()}
    outcome = "not held" if "not held" in outcomes else "held" if outcomes == {"held"} else "inconclusive"
    out[name] = {"claim": CLAIMS[name], "parts": verdicts, "outcome": outcome}
  return out


def claims_table(claims: dict) -> str:
  lines = ["| claim | measured (paired by seed; percentage points, mean ± 95% interval) | outcome |",
           "|---|---|---|"]
  for name, c in claims.items():
    measured = "; ".join(f"{p}: {100 * v['mean']:+.2f} ± {100 * v['ci95']:.2f} (n={v['n']})"
                         for p, v in c["parts"].items())
    lines.append(f"| ({name}) {c['claim']} | {measured} | **{c['outcome']}** |")
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ table and plot
def _cell(summary: dict, key: str) -> str:
  if key not in summary["mean"]:
    return ""
  mean, half = 100 * summary["mean"][key], 100 * summary["ci95"][key]
  return f"{mean:.1f}" if np.isnan(half) else f"{mean:.1f} ± {half:.1f}"


def comparison_table(summary: dict, datasets: Sequence[suites.EvalDataset], n_seeds: int,
                     picked_lr: dict, fit: Optional[dict]) -> str:
  """Markdown: one row per method, top-1 (%) per dataset, average OOD and effective robustness, mean ± 95%."""
  keys = [f"{d.name}/top1" for d in datasets] + [OOD] + (["effective_robustness"] if fit else [])
  header = (["method", "runs"] + [d.name + (" (OOD)" if d.ood else " (ID)") for d in datasets] + ["avg OOD"]
            + (["effective robustness"] if fit else []))
  lines = [f"Top-1 accuracy (%), mean ± 95% interval over {n_seeds} seeds (one run where a method has no "
           "randomness).", "", "| " + " | ".join(header) + " |", "|---|---:" + "|---:" * (len(header) - 2) + "|"]
  # ml_collections sorts the config's method names
  order = ["zero-shot", "LP", "LP (reference)", "FT", "LP-FT", "LP-FT (reference)", "FLYP", "CE ablation", GREEDY,
           "uniform soup", BEST_INGREDIENT]
  for label, s in sorted(summary.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
    name = f"{label} (lr {picked_lr[label]:g})" if label in picked_lr else label
    lines.append(f"| {name} | {len(s['seeds'])} | " + " | ".join(_cell(s, k) for k in keys) + " |")
  return "\n".join(lines) + "\n"


def plot(summary: dict, curves: dict, path: str, title: str, n_seeds: int) -> str:
  """Average OOD vs ID top-1 (%): each method's mean with 95% error bars, and each WiSE-FT curve's mean over
  seeds (error bars at every alpha). Returns `path`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7.2, 5.2), dpi=150)
  colors = {"zero-shot": "tab:blue", "LP": "tab:olive", "LP (reference)": "tab:green", "FT": "tab:red",
            "LP-FT": "tab:orange", "LP-FT (reference)": "tab:pink", "FLYP": "tab:purple", "CE ablation": "tab:brown",
            GREEDY: "black", "uniform soup": "tab:gray", BEST_INGREDIENT: "tab:cyan"}
  for label, per_seed in curves.items():
    alphas = [r["alpha"] for r in per_seed[0]]
    stats = [[seeds.interval([100 * c[i][k] for c in per_seed]) for i in range(len(alphas))] for k in (ID, OOD)]
    (x, xe), (y, ye) = (np.array(s).T for s in stats)
    ax.errorbar(x, y, xerr=np.nan_to_num(xe), yerr=np.nan_to_num(ye), fmt="-o", markersize=3, capsize=2,
                color=colors.get(label, "tab:blue"), alpha=0.7, label=f"WiSE-FT of {label} (alpha 0 to 1)")
  markers = itertools.cycle("s*P^vXD<>ohp")
  for label, s in summary.items():
    if label.startswith("WiSE-FT"):
      continue
    x, y = 100 * s["mean"][ID], 100 * s["mean"][OOD]
    xe, ye = (np.nan_to_num(100 * s["ci95"][k]) for k in (ID, OOD))
    ax.errorbar([x], [y], xerr=[xe], yerr=[ye], fmt=next(markers), markersize=9, capsize=3,
                color=colors.get(label, None), label=label)
  soups = len(summary[GREEDY]["seeds"]) if GREEDY in summary else n_seeds
  seeds_said = f"{n_seeds} seeds" + (f", soups {soups}" if soups != n_seeds else "")
  return wiseft.save_accuracy_plot(fig, ax, path, f"{title} (mean and 95% interval, {seeds_said})", legend_size=7)
