"""Settings checked before any work: values that cannot work, and a re-run that would change what a workdir holds.

`validate(config)` finds values that would otherwise fail late in a library (optax's schedule at steps=0, a
TensorFlow op at batch_size=0) or silently (a NaN learning rate trains NaNs). `check_resume(config, workdir)`
keeps the first start's resolved config in WORKDIR/config.json and refuses a re-run whose settings change what
the checkpoints hold; settings that are safe to change on resume (RESUME_SAFE) are allowed and recorded there.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import numbers
import os
import re
import sys
from typing import Any

from flyp_jax import errors, files, pretrained
from flyp_jax.data import classnames

CONFIG_FILE = "config.json"

# Settings a resumed run may change: how long it trains, how often it logs, saves and evaluates, where it reads
# the data, and memory/speed knobs that leave the state and its updates as they were. Any other setting (model,
# method, parameter groups, optimiser, seed, batch, data, method options) shapes the saved state or the training
# that produced it, so a change is refused rather than mixed into the same workdir.
# The methods whose loss applies the on-device regularisers (flyp_jax.methods.common.regularize).
REGULARIZED_METHODS = ("ft", "attention_transfer")
RESUME_SAFE = ("name", "steps", "total_epochs", "log_every", "checkpoint_every", "keep_checkpoints", "eval.",
               "model.dtype", "model.remat", "model.remat_policy", "model_axis", "data.data_dir", "data.corrupt_images",
               "flyp.loss_block")


# jax.checkpoint_policies that take no arguments (model.remat_policy).
REMAT_POLICIES = ("nothing_saveable", "everything_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


class ConfigError(errors.UserError, ValueError):
  """A setting that cannot work, or a re-run that would change a workdir's training; one paragraph, nothing run."""


# --------------------------------------------------------------------------------------------- validation
def _number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate(config, warn: bool = True) -> None:
  """Raise ConfigError naming every impossible value (with a valid example), before anything is built or read.

  warn: also say when a setting is adjusted (a warmup longer than the run); the training loop's own call does.
  """
  problems = []

  def need(key: str, ok, what: str, example: str) -> None:
    value = _get(config, key)
    if value is _MISSING:
      return
    if not ok(value):
      problems.append(f"config.{key} is {value!r} but must be {what} (e.g. --config.{key}={example})")

  positive_int = lambda v: _integer(v) and v > 0
  for key, example in (("steps", "300"), ("batch_size", "128"), ("eval.batch_size", "256"), ("log_every", "25"),
                       ("keep_checkpoints", "2"), ("grad_accum_steps", "1"), ("model_axis", "1"), ("seeds", "5"),
                       ("compare.seeds", "5"), ("few_shot.k", "16"), ("few_shot.repetitions", "50")):
    need(key, positive_int, "a positive whole number", example)
  for key, example in (("checkpoint_every", "100"), ("eval.every_steps", "0"), ("optimizer.warmup_steps", "500"),
                       ("total_epochs", "10")):
    need(key, lambda v: _integer(v) and v >= 0, "a whole number, 0 or more", example)
  need("optimizer.lr", lambda v: _number(v) and math.isfinite(v) and v > 0, "a finite number above 0", "1e-5")
  need("optimizer.eps", lambda v: _number(v) and math.isfinite(v) and v > 0, "a finite number above 0", "1e-8")
  for key, example in (("optimizer.weight_decay", "0.1"), ("optimizer.grad_clip", "0")):
    need(key, lambda v: _number(v) and math.isfinite(v) and v >= 0, "a finite number, 0 or more", example)
  for key, example in (("optimizer.b1", "0.9"), ("optimizer.b2", "0.999"), ("optimizer.ema_decay", "0.9999")):
    need(key, lambda v: _number(v) and 0 <= v < 1, "a number from 0 up to (not including) 1", example)
  need("optimizer.layer_decay", lambda v: _number(v) and 0 < v <= 1, "a number above 0, at most 1 (1: none)", "0.75")
  need("optimizer.min_lr", lambda v: _number(v) and math.isfinite(v) and v >= 0, "a finite number, 0 or more", "0")
  need("at.drop_path", lambda v: _number(v) and 0 <= v < 1, "a number from 0 up to (not including) 1", "0.2")
  need("data.crop_scale", lambda v: len(v) == 2 and all(_number(x) for x in v) and 0 < v[0] <= v[1] <= 1,
       "two numbers 0 < low <= high <= 1", "'(0.9,1.0)'")
  need("data.eval_crop_fraction", lambda v: _number(v) and 0 < v <= 1, "a number above 0, at most 1 (1: CLIP's)",
       "0.875")
  need("data.random_erasing", lambda v: _number(v) and 0 <= v <= 1, "a probability from 0 to 1", "0.25")
  for key, example in (("mixup.mixup_alpha", "0.8"), ("mixup.cutmix_alpha", "1.0")):
    need(key, lambda v: _number(v) and math.isfinite(v) and v >= 0, "a finite number, 0 or more (0: off)", example)
  for key, example in (("mixup.prob", "1.0"), ("mixup.switch_prob", "0.5")):
    need(key, lambda v: _number(v) and 0 <= v <= 1, "a probability from 0 to 1", example)
  spec = _get(config, "data.rand_augment")
  if spec not in (_MISSING, ""):
    from flyp_jax.data import rand_augment  # TensorFlow's import, only when asked for
    try:
      rand_augment.parse(spec)
    except errors.BadValue as e:
      problems.append(f"config.data.rand_augment is {spec!r}: {e} (e.g. --config.data.rand_augment="
                      f"{rand_augment.REFERENCE_SPEC})")
  regularized = [k for k in ("data.random_erasing", "mixup.mixup_alpha", "mixup.cutmix_alpha")
                 if _get(config, k) not in (_MISSING, 0, 0.0)]
  if regularized and _get(config, "method") not in REGULARIZED_METHODS:
    problems.append(f"config.{regularized[0]} is set but method {_get(config, 'method')!r} does not apply random "
                    f"erasing or mixup/CutMix (its loss is not a classification over labels; they are for "
                    f"{' and '.join(REGULARIZED_METHODS)})")
  if _get(config, "eval.select_ema") is True and _get(config, "optimizer.ema_decay") in (_MISSING, 0, 0.0):
    problems.append("config.eval.select_ema is True but there is no weight EMA to select (optimizer.ema_decay is 0; "
                    "e.g. --config.optimizer.ema_decay=0.9999)")
  policy = _get(config, "model.remat_policy")
  if policy not in (_MISSING, "") and policy not in REMAT_POLICIES:
    problems.append(f"config.model.remat_policy is {policy!r} but must be one of jax.checkpoint_policies' "
                    f"{', '.join(REMAT_POLICIES)} or '' (e.g. --config.model.remat_policy=dots_saveable)")
  elif policy not in (_MISSING, "") and not _get(config, "model.remat"):
    problems.append(f"config.model.remat_policy is {policy!r} but config.model.remat is off: the policy chooses "
                    f"what a rematerialised block keeps (e.g. --config.model.remat=True)")
  if _get(config, "model.scan_layers") is True:
    if _get(config, "method") == "attention_transfer":
      problems.append("config.model.scan_layers is True but attention transfer reads and replaces each layer's "
                      "attention map, which a scanned stack of blocks cannot (--config.model.scan_layers=False)")
    elif _get(config, "optimizer.layer_decay") not in (_MISSING, 1, 1.0):
      problems.append("config.model.scan_layers is True but optimizer.layer_decay scales each block's rate by its "
                      "index, which the scanned blocks do not carry (--config.model.scan_layers=False)")
  if problems:
    raise ConfigError("; ".join(problems) + ". Nothing was run: correct the setting (in the config file or on the "
                      "command line) and run again.")
  steps, warmup = _get(config, "steps"), _get(config, "optimizer.warmup_steps")
  epochs_pending = _get(config, "total_epochs") not in (_MISSING, 0)  # steps not known yet: checked once they are
  if warn and not epochs_pending and _integer(steps) and _integer(warmup) and warmup >= steps:
    # A short trial of a recipe keeps working: the schedule warms up over all but the last step.
    # (at steps=1 there is no room for a warmup: the one step takes the peak rate, as optax needs a decay step)
    print(f"warning: optimizer.warmup_steps={warmup} is not below steps={steps}: the learning rate warms up over "
          f"{steps - 1} steps instead.", flush=True)
  if warn and _get(config, "model.scan_layers") is True and not _get(config, "model.remat"):
    # Measured with flyp_jax.tpu_plan (benchmarks/RESULTS.md): FLYP ViT-L/14, batch 512, bfloat16, v5e-8.
    print("warning: model.scan_layers without model.remat keeps every block's activations for the backward pass "
          "(XLA cannot recompute them across the loop): FLYP on ViT-L/14 needs 47.7 GiB per v5e chip at batch 512, "
          "against 14.9 GiB unscanned and 11.0 GiB scanned with --config.model.remat=True.", flush=True)


_MISSING = object()


def _get(config, key: str) -> Any:
  for part in key.split("."):
    if part not in config:
      return _MISSING
    config = config[part]
  return config


# ----------------------------------------------------------------------------------- resuming a workdir
def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def resolved(config) -> dict:
  # Through JSON, so that a tuple from the config file and the list it is stored as compare equal.
  return json.loads(json.dumps(config.to_dict(), default=str))


def _safe(key: str) -> bool:
  return any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE)


def _has_checkpoints(workdir: str) -> bool:
  ckpts = os.path.join(workdir, "checkpoints")
  saved = files.exists(ckpts) and any(n.isdigit() for n in files.listdir(ckpts))
  return saved or files.exists(os.path.join(workdir, "final"))


def _latest_step(workdir: str):
  ckpts = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in files.listdir(ckpts) if n.isdigit()] if files.exists(ckpts) else []
  return max(steps, default=None)


def _overrides() -> list[str]:
  """The `--config...` arguments of the command line (the file, its preset and each override)."""
  return [a for a in sys.argv[1:] if a.startswith("--config")]


def _show(value) -> str:
  return "(not set)" if value is _MISSING else json.dumps(value)


def variant_workdir(workdir: str, changed: dict[str, Any]) -> str:
  """A workdir beside `workdir` named after the settings that differ: workdirs/flyp_demo_batch_size-7."""
  parts = [f"{k.rpartition('.')[2]}-{os.path.basename(str(v).rstrip('/')) if isinstance(v, str) else v}"
           for k, v in changed.items()]
  slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", "_".join(parts)).strip("_")
  if len(slug) > 60:
    slug = slug[:40].rstrip("_") + "_" + hashlib.sha256(slug.encode()).hexdigest()[:8]
  return f"{workdir.rstrip('/')}_{slug}"


def check_inputs(config) -> None:
  """Raise naming an input that cannot be read: the pretrained checkpoint, the training split, class names that do
  not match the dataset's labels. Checked before the workdir (`check_resume`), so the real problem is said first."""
  # Imported here: the dataset's pipeline pulls in TensorFlow, which `validate` and the command line's checks do not.
  from flyp_jax.data import pipeline
  m, d = config.model, config.data
  if m.init == "pretrained" and m.path and not pretrained.is_named(m.path):
    if not files.is_remote(m.path) and not os.path.exists(m.path):
      raise errors.NotFound(pretrained.missing_checkpoint_message(m.path))
  builder = pipeline.get_builder(d.dataset, d.data_dir or None)
  pipeline.num_examples(builder, d.train_split)
  label = pipeline.label_feature(builder)
  n = len(classnames.of_data(d))
  if not d.label_map and getattr(label, "num_classes", None) and label.num_classes != n:
    own = list(getattr(label, "names", None) or [])
    shown = f": {', '.join(own[:5])}{', ...' if len(own) > 5 else ''}" if own else ""
    raise ConfigError(
        f"data.classnames={d.classnames!r} names {n} classes, but TFDS dataset {builder.name!r} has "
        f"{label.num_classes} labels: give one name per label, in label order (data.classnames=tfds uses the "
        f"dataset's own label names{shown})")


def check_resume(config, workdir: str) -> None:
  """Store the resolved config at the first start; refuse a re-run that changes what the checkpoints hold.

  WORKDIR/config.json: {'config': the first start's resolved config, 'overrides': its --config arguments,
  'started': UTC time, 'resumed': [{'step', 'time', 'overrides', 'changed': {key: [before, now]}}, ...]}.
  Only process 0 writes it; every process reads it and so reaches the same decision.
  """
  import jax
  path = os.path.join(workdir, CONFIG_FILE)
  now = resolved(config)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
  record = files.read_json(path) if _has_checkpoints(workdir) else None
  if not record:  # first start (or nothing saved yet: the new settings apply from the beginning)
    if jax.process_index() == 0:
      files.write_json(path, {"config": now, "overrides": _overrides(), "started": stamp, "resumed": []})
    return
  first, current = _flat(record["config"]), _flat(now)
  effective = dict(first)  # the settings the last start used: the first start's, with the safe changes since
  for entry in record.get("resumed", []):
    effective.update({k: v[1] for k, v in entry.get("changed", {}).items()})
  keys = sorted(set(first) | set(current))
  # A field the first start's code did not have is accepted (and recorded below as changed): a new option's
  # default is the behaviour from before it existed, so older workdirs resume after an upgrade.
  refused = [k for k in keys if not _safe(k) and k in first and first[k] != current.get(k, _MISSING)]
  if refused:
    listed = ", ".join(f"{k}: {_show(first.get(k, _MISSING))} before, {_show(current.get(k, _MISSING))} now"
                       for k in refused)
    raise ConfigError(
        f"the workdir {workdir} holds checkpoints of a run with other settings ({listed}), and these change what "
        f"the checkpoints hold or how they were trained: nothing was run. Run again with the settings stored in "
        f"{path} (its 'overrides' are the command line of the first start), or give the new settings a workdir of "
        f"their own: add --workdir={variant_workdir(workdir, {k: current.get(k) for k in refused})}")
  changed = {k: [effective.get(k), current.get(k)] for k in keys
             if effective.get(k, _MISSING) != current.get(k, _MISSING)}
  if changed:
    logging.info("Resuming with changed settings: %s", changed)
    print("resuming with changed settings: " + ", ".join(f"{k} {_show(effective.get(k, _MISSING))} -> "
                                                         f"{_show(current.get(k, _MISSING))}" for k in changed),
          flush=True)
    if jax.process_index() == 0:
      record.setdefault("resumed", []).append({"step": _latest_step(workdir), "time": stamp,
                                               "overrides": _overrides(), "changed": changed})
      files.write_json(path, record)
