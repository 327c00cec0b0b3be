"""Model soups (Wortsman et al., 2022): average the weights of models fine-tuned from one start.

`configs/soup.py`. The ingredients are runs of one fine-tuning config (`soup.ingredient`) whose hyperparameters are
drawn at random (`draw`), each selected on ID validation by the loop as every run is. Then, as
mlfoundations/model-soups `main.py` does:
- the uniform soup averages every ingredient;
- the greedy soup sorts the ingredients by held-out ID validation accuracy, starts from the best, and adds each next
  one only if the average with it strictly improves held-out accuracy.
Both are judged on held-out ID validation only (the suite's validation set: its selection metric); test splits are
reported, never consulted. Ingredients live in `<workdir>/ingredients/<i>`; a finished one is reused, so an
interrupted soup resumes. Writes soup.md, soup.png (ID against average OOD accuracy for every ingredient, the soups
and the best single model) and soup.json, last.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from flyp_jax import config_checks, configs_lib, errors, files, methods, parallel, run_paths, runs, train
from flyp_jax.commands import wiseft

ID, OOD = wiseft.ID_KEY, wiseft.OOD_KEY
RESULT = "soup.json"


def draw(config) -> list[dict]:
  """Each ingredient's hyperparameters ('a.b' config field -> value), drawn with `config.seed`.

  Learning rate and weight decay log-uniform in their ranges, epochs a uniform integer in theirs (inclusive), label
  smoothing 0 with probability `soup.no_smoothing` else uniform below its maximum, and the random crop's smallest
  area uniform in `soup.crop_scale` (the augmentation strength; the crop's largest area stays 1). The seed of
  ingredient i is `config.seed + i`."""
  s, rng = config.soup, np.random.default_rng(config.seed)
  log_uniform = lambda lo, hi: float(10 ** rng.uniform(math.log10(lo), math.log10(hi)))
  out = []
  for i in range(s.ingredients):
    out.append({"seed": config.seed + i, "optimizer.lr": log_uniform(*s.lr),
                "optimizer.weight_decay": log_uniform(*s.weight_decay),
                "total_epochs": int(rng.integers(s.epochs[0], s.epochs[1] + 1)),
                "ft.label_smoothing": 0.0 if rng.random() < s.no_smoothing else float(rng.uniform(0, s.max_smoothing)),
                "data.crop_scale": (float(rng.uniform(*s.crop_scale)), 1.0)})
  return out


def uniform_soup(load: Callable[[int], dict], n: int) -> dict:
  """The mean of the `n` parameter trees `load(0) ... load(n - 1)`, one held at a time (a running mean)."""
  soup = load(0)
  for i in range(1, n):
    soup = wiseft.interpolate(soup, load(i), 1 / (i + 1))
  return soup


def greedy_soup(load: Callable[[int], dict], held_out: Sequence[float], validate: Callable[[dict], float],
                progress: Callable[[str], None] = lambda _: None) -> tuple[dict, list[int], float]:
  """model-soups `main.py` step 4: ingredients in decreasing `held_out` accuracy (ties: the earlier first), the soup
  started from the first; each next one is added, as the running average soup * n / (n + 1) + new / (n + 1), only
  if `validate` of that average is strictly higher than the best so far. (soup, its ingredients, its accuracy)."""
  order = sorted(range(len(held_out)), key=lambda i: -held_out[i])
  soup, kept, best = load(order[0]), [order[0]], held_out[order[0]]
  for n, i in enumerate(order[1:], start=2):
    candidate = wiseft.interpolate(soup, load(i), 1 / (len(kept) + 1))
    score = validate(candidate)
    added = score > best
    progress(f"greedy soup {n}/{len(order)}: ingredient {i} {'added' if added else 'left out'} "
             f"(held-out {score:.4f} vs {best:.4f})")
    if added:
      soup, kept, best = candidate, kept + [i], score
  return soup, kept, best


def _ingredient_config(config, workdir: str, hparams: dict):
  base = configs_lib.load_sub_run(config.soup.ingredient, config)
  if base.method not in methods.NAMES:
    raise errors.BadValue(f"soup.ingredient must be a training method's config; {config.soup.ingredient!r} runs "
                          f"{base.method!r}")
  if base.method != "ft" and hparams["ft.label_smoothing"]:
    raise errors.BadValue(f"label smoothing is fine-tuning's (ft.label_smoothing), and {config.soup.ingredient!r} "
                          f"trains {base.method!r}: draw none with --config.soup.no_smoothing=1")
  updates = {**hparams, "eval.at_start": False}  # the start is the same for every ingredient: not evaluated again
  if base.ft.lp_workdir:  # LP-FT's probe, named beside the soup's workdir as every path to another run
    updates["ft.lp_workdir"] = run_paths.resolve(workdir, base.ft.lp_workdir)
  return configs_lib.load_sub_run(config.soup.ingredient, config, updates=updates)


def run(config, workdir: str) -> dict:
  """The soup; returns {'uniform': results, 'greedy': results, 'best_single': results, 'greedy_ingredients': [...]}."""
  settings = config_checks.resolved(config)
  done = files.read_json(os.path.join(workdir, RESULT))
  if done and done.get("config") == settings:
    print(f"{files.absolute(workdir)} holds a finished soup of these settings: reported as it is (another --workdir "
          f"computes it anew)", flush=True)
    return _report(done, workdir)
  files.makedirs(workdir)
  hparams = draw(config)
  configs = [_ingredient_config(config, workdir, h) for h in hparams]
  directories = [os.path.join(files.absolute(workdir), "ingredients", str(i)) for i in range(len(hparams))]
  ingredients = []
  for i, (h, c, d) in enumerate(zip(hparams, configs, directories)):
    print(f"ingredient {i + 1}/{len(hparams)}: " + ", ".join(f"{k} {_short(v)}" for k, v in h.items()), flush=True)
    ingredients.append(runs.results_of(c, d, train.dispatch))
  mesh = parallel.make_mesh(config.model_axis)
  model, first = runs.reported_params(directories[0], config.model)
  model = methods.get(configs[0].method).eval_model(configs[0], model)  # e.g. a head on raw features
  evaluate_fn, validate, key = wiseft.scorer(config, model, mesh)
  if validate is None:
    raise errors.BadValue(f"the greedy soup is chosen on held-out ID validation data, and the {config.eval.suite!r} "
                          f"suite has no validation set; use a suite that has one, or name a split of the training "
                          f"dataset with --config.eval.val_split")
  # Read one ingredient at a time; the first, read for the model, is kept rather than read again
  load = lambda i: first if i == 0 else runs.reported_params(directories[i], config.model)[1]
  held_out = [r[key] for r in ingredients]
  print(f"uniform soup of {len(hparams)}", flush=True)
  uniform = evaluate_fn(uniform_soup(load, len(hparams)))
  greedy, kept, _ = greedy_soup(load, held_out, lambda p: validate(p)[key], lambda line: print(line, flush=True))
  # A greedy soup of one ingredient is that run, whose evaluation is its results
  greedy_results = ingredients[kept[0]] if len(kept) == 1 else evaluate_fn(greedy)
  record = {"select_on": key, "ingredients": [{"hparams": h, **_metrics(r, key)} for h, r in zip(hparams, ingredients)],
            "best_single": int(np.argmax(held_out)), "uniform": _metrics(uniform, key),
            "greedy": _metrics(greedy_results, key), "greedy_ingredients": kept, "config": settings}
  if jax.process_index() == 0:
    plot(record, os.path.join(workdir, "soup.png"), title=f"Model soups: {config.name}")
    with files.open_file(os.path.join(workdir, "soup.md"), "w") as f:
      f.write(f"# Model soups: {config.name}\n\n" + table(record))
    files.write_json(os.path.join(workdir, RESULT), record)  # last: its presence means finished
  return _report(record, workdir)


def _short(v) -> str:
  return f"({v[0]:.3g}, {v[1]:g})" if isinstance(v, (tuple, list)) else f"{v:.3g}" if isinstance(v, float) else str(v)


def _metrics(results: dict, key: str) -> dict:
  """What the soup reports of a model: the selection metric, ID and average OOD accuracy, and each dataset's top-1."""
  return {k: float(v) for k, v in results.items() if k in (key, ID, OOD) or k.endswith("/top1")}


def _rows(record: dict) -> list[tuple[str, dict]]:
  best = record["best_single"]
  kept = ", ".join(str(i) for i in record["greedy_ingredients"])
  return ([(f"greedy soup (ingredients {kept})", record["greedy"]),
           (f"uniform soup ({len(record['ingredients'])})", record["uniform"]),
           (f"best single model (ingredient {best})", record["ingredients"][best])]
          + [(f"ingredient {i}", r) for i, r in enumerate(record["ingredients"])])


def table(record: dict) -> str:
  """A markdown table: the soups, the best single model, then every ingredient with its hyperparameters."""
  keys = wiseft.table_keys(record["select_on"])
  lines = ["| model | " + " | ".join(keys) + " | hyperparameters |", "|---|" + "---:|" * len(keys) + "---|"]
  for label, r in _rows(record):
    h = ", ".join(f"{k.split('.')[-1]} {_short(v)}" for k, v in r.get("hparams", {}).items())
    lines.append(f"| {label} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + f" | {h} |")
  return "\n".join(lines) + "\n"


def plot(record: dict, path: str, title: str) -> str:
  """A PNG of average OOD against ID top-1 (%): every ingredient, the best single model, the uniform and the greedy
  soup (as model-soups' `main.py --plot` draws them)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=150)
  points = lambda rows: ([100 * r[ID] for r in rows], [100 * r[OOD] for r in rows])
  ax.scatter(*points(record["ingredients"]), marker="d", s=50, color="tab:green", label="ingredients (random hyperparameters)")
  best = record["ingredients"][record["best_single"]]
  ax.scatter(*points([best]), marker="h", s=140, facecolors="none", edgecolors="black", linewidths=1.5,
             label=f"best single model (held-out {record['select_on']})")
  ax.scatter(*points([record["uniform"]]), marker="o", s=150, color="tab:blue", label="uniform soup")
  ax.scatter(*points([record["greedy"]]), marker="*", s=300, color="tab:purple", label="greedy soup", zorder=3)
  ax.margins(0.1)
  return wiseft.save_accuracy_plot(fig, ax, path, title)


def _report(record: dict, workdir: str) -> dict:
  written = ", ".join(os.path.join(files.absolute(workdir), n) for n in ("soup.md", "soup.png", RESULT))
  print(f"\n{table(record)}\nwritten: {written}", flush=True)
  best = record["ingredients"][record["best_single"]]
  return {"uniform": record["uniform"], "greedy": record["greedy"], "greedy_ingredients": record["greedy_ingredients"],
          "best_single": {k: v for k, v in best.items() if k != "hparams"}}
