"""Every method on one benchmark: zero-shot, LP, FT, LP-FT, FLYP and WiSE-FT, as a table and a plot.

Each method runs in its own workdir beside this one (`<workdir>/../<config name>`, as every path to another run:
`flyp_jax.run_paths`), and a finished run is reused, so the comparison can be re-run cheaply and shares its runs
with the single-method commands. The sub-runs take the comparison's values of `configs_lib.SHARED` (model,
data location, seed, ...), so overrides of those given to the comparison reach them.
"""

from __future__ import annotations

import os

from flyp_jax import configs_lib, evaluate, files, parallel, run_paths, train
from flyp_jax.data import suites
from flyp_jax.methods import wiseft


def _run_or_reuse(spec: str, parent, workdir: str) -> dict:
  """The results of `spec` run beside `workdir` with `parent`'s shared settings, running it if unfinished."""
  config = configs_lib.load_sub_run(spec, parent)
  path = run_paths.resolve(workdir, config.name)
  done = os.path.join(path, "wiseft.json" if config.method == "wiseft" else "results.json")
  if not files.exists(done):
    train.dispatch(config, path)
  return files.read_json(done)


def run(config, workdir: str) -> dict:
  """Writes comparison.md (one row per method: ID, each OOD dataset, average OOD) and comparison.png."""
  files.makedirs(workdir)
  model, params = train.load_clip(config, workdir)
  mesh = parallel.make_mesh(config.get("model_axis", 1))
  evaluator = evaluate.from_config(model, config, mesh)
  rows = {"zero-shot": evaluator(params, workdir=workdir, filename="zeroshot.json")}
  for label, spec in config.compare.methods.items():
    rows[label] = _run_or_reuse(spec, config, workdir)
  curve = _run_or_reuse(config.compare.wiseft, config, workdir)
  picked = min(curve["results"], key=lambda r: abs(r["alpha"] - curve["picked_alpha"]))
  best_ood = max(curve["results"], key=lambda r: r["avg_ood/top1"])
  picked_on = curve.get("picked_on", wiseft.ID_KEY)
  rows[f"WiSE-FT, alpha {picked['alpha']:g} (picked on {picked_on})"] = picked
  rows[f"WiSE-FT, alpha {best_ood['alpha']:g} (best OOD)"] = best_ood

  datasets = suites.get(config.eval.suite)
  header = ["method"] + [d.name + (" (OOD)" if d.ood else " (ID)") for d in datasets] + ["avg OOD"]
  lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
  for label, r in rows.items():
    cells = [f"{100 * r[f'{d.name}/top1']:.1f}" if f"{d.name}/top1" in r else "" for d in datasets]
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * r['avg_ood/top1']:.2f} |")
  table = "\n".join(lines) + "\n"
  with files.open_file(os.path.join(workdir, "comparison.md"), "w") as f:
    f.write(f"Top-1 accuracy (%) on the `{config.eval.suite}` suite.\n\n" + table)
  extra = {label: (rows[label]["avg_id/top1"], rows[label]["avg_ood/top1"]) for label in config.compare.methods}
  wiseft.plot(curve["results"], os.path.join(workdir, "comparison.png"), title=f"{config.eval.suite}: all methods",
              extra=extra, pick_key=picked_on)
  print(table)
  return {label: {"avg_id/top1": r["avg_id/top1"], "avg_ood/top1": r["avg_ood/top1"]} for label, r in rows.items()}
