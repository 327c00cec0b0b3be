"""Few-shot: FLYP (and FT, LP) on k-shot samples, repeated with fresh samples; mean and standard deviation.

As locuslab/FLYP `src/few_shot.py` with `src/models/flyp_loss_few_shot.py` (commit 215d5bb):
1. Repetition r (seed = config.seed + r) draws k training examples of each class from `data.train_split` and k
   validation examples of each class from the suite's validation split (`flyp_jax.data.kshot`); every method of
   `few_shot.methods` runs on that same sample.
2. A run trains on all k * C examples at every step (batch k * C; FLYP's "epoch" is that one step), evaluates the
   k-shot validation batch after every step and at step 0 (the zero-shot model, FLYP's epoch -1), keeps the step
   with the lowest validation cross-entropy of the zero-shot head's logits (`eval.select_on = 'id_val/xent'`,
   later steps winning ties, as FLYP's `<=`) and reports that step's validation accuracy and its accuracy on the
   whole test split (evaluated once, on the kept parameters).
3. After all repetitions, each method's mean and standard deviation (numpy's, ddof 0, as FLYP's stats_final.txt)
   of validation and test accuracy, with the 95% interval of the mean (`flyp_jax.seeds.aggregate`).

A method's run takes the training settings of this config (model, data, batch, steps, optimiser, evaluation:
`SHARED`) and keeps its own method and trainable parameters (configs/ft.py trains the image tower and a head
initialised from the zero-shot head; configs/lp.py fits a logistic regression, its l2 picked on the same k-shot
validation sample). Runs live in `<workdir>/<method>/seed_<seed>`; a finished run is reused, so an interrupted
command resumes. Writes few_shot.md and few_shot.json.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from flyp_jax import configs_lib, errors, files, runs, seeds, train
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.data import kshot, label_maps, suites

# What each method's run takes from the few-shot config.
SHARED = configs_lib.SHARED + ("data", "eval", "optimizer", "steps", "log_every", "checkpoint_every",
                               "keep_checkpoints", "grad_accum_steps", "flyp")


def samples(config, cache_dir: str, seed: int) -> tuple[str, str]:
  """(training split, validation split) of the k-shot sample of repetition `seed`, as TFDS split expressions."""
  d, k = config.data, int(config.few_shot.k)
  n_classes = len(classnames_lib.of_data(d))
  table = label_maps.class_table(d.label_map)
  val = validation_set(config)
  train_labels = kshot.split_labels(d.dataset, d.train_split, d.data_dir or None, table, cache_dir)
  val_labels = kshot.split_labels(val.tfds_name, val.split, d.data_dir or None,
                                  label_maps.class_table(val.label_map), cache_dir)
  return (kshot.split_expression(d.train_split, kshot.sample(train_labels, k, n_classes, seed, kshot.TRAIN_STREAM)),
          kshot.split_expression(val.split, kshot.sample(val_labels, k, n_classes, seed, kshot.VALIDATION_STREAM)))


def validation_set(config) -> suites.EvalDataset:
  val = suites.validation_of(config)
  if val is None:
    raise errors.BadValue(f"few-shot runs select on a k-shot sample of the suite's validation set, and suite "
                          f"{config.eval.suite!r} has none; suites with one: {sorted(suites.VALIDATION)} and "
                          f"{suites.DATA_SUITE!r}")
  return val


def method_config(spec: str, parent, seed: int, train_split: str, val_split: str):
  """The run of method config `spec` on one k-shot sample, with the few-shot config's training settings."""
  config = configs_lib.load_sub_run(spec, parent, keys=SHARED)
  with config.unlocked():
    config.seed, config.seeds = seed, 1
    config.data.train_split = train_split
    config.eval.val_split = val_split
    config.batch_size = int(parent.few_shot.k) * len(classnames_lib.of_data(parent.data))
    if config.method == "lp":
      config.lp.val_split = val_split
  return config


def run(config, workdir: str) -> dict:
  """The repetitions of every method; returns {method: seeds.aggregate(...)} and writes few_shot.{md,json}."""
  fs = config.few_shot
  if int(fs.repetitions) < 1:
    raise errors.BadValue(f"few_shot.repetitions must be at least 1, got {fs.repetitions}")
  files.makedirs(workdir)
  seed_list = [int(config.seed) + r for r in range(int(fs.repetitions))]
  test_key = f"{suites.of_config(config)[0].name}/top1"
  rows: dict[str, list[dict]] = {label: [] for label in fs.methods}
  for i, seed in enumerate(seed_list):
    train_split, val_split = samples(config, os.path.join(workdir, "labels"), seed)
    for label, spec in fs.methods.items():
      one = method_config(spec, config, seed, train_split, val_split)
      result = runs.results_of(one, seeds.seed_dir(os.path.join(workdir, label), seed), train.dispatch)
      # LP picks its l2 on the validation sample but reports no evaluation of it under id_val/
      result = {**result, "id_val/top1": result.get("id_val/top1", result.get("lp_val_top1"))}
      rows[label].append(result)
    print(f"repetition {i + 1} of {len(seed_list)} (seed {seed}): " + ", ".join(
        f"{label} val {rows[label][-1]['id_val/top1']:.4f} test {rows[label][-1][test_key]:.4f}" for label in rows),
        flush=True)
  summary = {label: seeds.aggregate(r, seed_list, ddof=0) for label, r in rows.items()}
  table = few_shot_table(summary, int(fs.k), test_key)
  if jax.process_index() == 0:
    with files.open_file(os.path.join(workdir, "few_shot.md"), "w") as f:
      f.write(table)
    files.write_json(os.path.join(workdir, "few_shot.json"),
                     {"k": int(fs.k), "seeds": seed_list, "test_key": test_key, "summary": summary})
  print(table, flush=True)
  return summary


def few_shot_table(summary: dict, k: int, test_key: str) -> str:
  """Markdown: per method, validation and test top-1 (%) as mean ± standard deviation (ddof 0), and the test
  mean's 95% interval."""
  lines = [f"{k}-shot top-1 accuracy (%): mean ± standard deviation over repetitions (numpy's, ddof 0, as FLYP's "
           "few_shot.py); validation = the k-shot validation sample that selected the step.", "",
           "| method | repetitions | validation | test | test 95% interval |", "|---|---:|---:|---:|---:|"]
  for label, s in summary.items():
    cell = lambda key: f"{100 * s['mean'][key]:.2f} ± {100 * s['std'][key]:.2f}" if key in s["mean"] else ""
    half = s["ci95"].get(test_key, float("nan"))
    interval = "" if np.isnan(half) else f"± {100 * half:.2f}"
    lines.append(f"| {label} | {len(s['seeds'])} | {cell('id_val/top1')} | {cell(test_key)} | {interval} |")
  return "\n".join(lines) + "\n"
