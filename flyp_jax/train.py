"""The one training loop: state, optimiser, checkpoints, logging and evaluation hooks.

A method (`flyp_jax.methods.<name>`) supplies what differs: extra parameters (a classification head), the
training batches and the loss. Which parameters train, and at which learning rate, is config (regex ->
group), implemented with optax masks, so FT, LP-FT and FLYP differ in config rather than in copied code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from flyp_jax import (checkpoint_guard, commands, config_checks, errors, evaluate, files, losses, methods,
                      metric_writer, models, optim, parallel, profiling, run_paths, runs, seeds, workdir_lock)
from flyp_jax.data import pipeline, suites
from flyp_jax.models import converted


def load_clip(config: ml_collections.ConfigDict, workdir: str, mesh=None):
  """(model, params) from `config.model`: a pretrained checkpoint, a previous run's workdir, or random init.

  A checkpoint's parameters are host arrays; random ones are computed on the devices, born sharded over `mesh`
  (`parallel.param_sharding`) when it is given, else on the default device.
  """
  m = config.model
  if m.init == "random":
    model = clip_model(config)
    init = lambda: models.init_params(model, jax.random.key(config.seed))  # the key made where it is used
    return model, (parallel.init_sharded(init, mesh=mesh) if mesh is not None else jax.jit(init)())
  if m.init == "run":  # the final parameters of another run of this loop (e.g. the demo's pretraining)
    run_dir = run_paths.resolve(workdir, m.path)
    if not runs.ensure_trained(run_dir, m.config, run, what="model.path's run"):
      raise errors.NotFound(f"{run_dir} holds no finished run (final/{converted.MARKER}): run one there, or set "
                            f"model.config to the config that makes it")
    return models.load_pretrained(runs.final_dir(run_dir), **models.build_options(m))
  return pretrained_clip(config)


def starting_model(config: ml_collections.ConfigDict, method: methods.Method, workdir: str, mesh=None):
  """(model, params['clip']) a run starts from: the method's own (attention transfer's ViT teacher), else the CLIP
  of config.model (`load_clip`)."""
  loaded = method.load_model(config, workdir) if method.load_model else None
  return loaded or load_clip(config, workdir, mesh)


def pretrained_clip(config: ml_collections.ConfigDict):
  """(CLIP, params) of `model.path`'s pretrained checkpoint (OpenAI, open_clip, Hugging Face or converted)."""
  m = config.model
  return models.load_pretrained(m.path, activation=m.activation or None, **models.build_options(m))


def clip_model(config: ml_collections.ConfigDict) -> models.CLIP:
  """The CLIP of `config.model.variant` (with its overrides, dtype and remat): random init's, and the shape a plan
  compiles for (`flyp_jax.tpu_plan`) when no checkpoint is read."""
  m = config.model
  overrides = dict(m.overrides)
  return models.create_model(models.get_config(m.variant, **overrides), **models.build_options(m))


def main(config: ml_collections.ConfigDict, workdir: Optional[str] = None) -> dict:
  """The command line's entry: run `config` in `workdir` (default workdirs/<config.name>), print the results."""
  workdir = workdir or os.path.join("workdirs", config.name)
  results = dispatch(config, workdir)
  # the reported (selected) metrics; results.json also has the last step's under last/ and the example counts
  shown = {k: v for k, v in results.items() if not k.endswith("/count") and not k.startswith("last/")}
  print(json.dumps(shown, indent=1, sort_keys=True))
  print(f"results in {files.absolute(workdir)}")
  return results


def dispatch(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Run `config.method` in `workdir`: the training loop, or the LP / WiSE-FT / comparison commands."""
  known = methods.NAMES + commands.NAMES
  if config.method not in known:
    raise errors.BadValue(f"unknown method {config.method!r}; known: {known}")
  config_checks.validate(config, warn=False)  # `run` checks again, and warns, for the training methods
  files.check_writable(workdir)
  if config.seeds > 1:
    return seeds.run(config, workdir, dispatch)
  if config.method in methods.NAMES:
    return run(config, workdir)
  with workdir_lock.hold(workdir):
    return commands.get(config.method)(config, workdir)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train `config.method` in `workdir` (resuming from its checkpoints), evaluate, write results.json."""
  method = methods.get(config.method)
  config_checks.validate(config)  # before any work, as each of the steps below
  config = steps_of_epochs(config)
  config_checks.check_inputs(config)  # what a command line can get wrong, said before the workdir's own checks
  files.makedirs(workdir)
  config = run_paths.absolute(config, workdir, method.run_paths)  # other runs' paths, for the methods
  with workdir_lock.hold(workdir):
    config_checks.check_resume(config, workdir)
    if runs.finished(workdir, config.steps):  # training and its final evaluation are not done again
      print(f"{files.absolute(workdir)} holds a finished run of {config.steps} steps: its results.json is reported as "
            f"it is (another --workdir trains anew).", flush=True)
      return files.read_json(os.path.join(workdir, runs.RESULTS))
    for path_field, config_field in method.prerequisites:  # the runs this one builds on, finished first
      if _field(config, path_field):
        runs.ensure_trained(_field(config, path_field), _field(config, config_field), run, what=path_field)
    try:
      return _Run(config, method, workdir).train()
    except errors.StorageFull as e:  # a results, metrics or final/ file: the paragraph names the checkpoint kept
      checkpoints = checkpoint_guard.newest(os.path.join(workdir, "checkpoints"))
      raise errors.StorageFull(e.path, f" (the newest complete checkpoint: {checkpoints})") from e


def steps_of_epochs(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """With `total_epochs` > 0 (big_vision's alternative to a step count), the config with `steps` set to
  total_epochs * ceil(N / batch_size) for the N examples of the training split (and `optimizer.epoch_steps`,
  if unset, to one epoch); otherwise `config` itself."""
  epochs = config.total_epochs
  if not epochs:
    return config
  builder = pipeline.get_builder(config.data.dataset, config.data.data_dir or None)
  n = builder.info.splits[config.data.train_split].num_examples
  epoch_steps = -(-n // config.batch_size)
  config = config.copy_and_resolve_references()
  config.unlock()
  config.steps = epochs * epoch_steps
  if not config.optimizer.epoch_steps:
    config.optimizer.epoch_steps = epoch_steps
  config.total_epochs = 0  # resolved: the steps are the run's length from here on
  config.lock()
  print(f"total_epochs={epochs}: {n} training examples, {epoch_steps} steps of {config.batch_size} per epoch, "
        f"{config.steps} steps", flush=True)
  config_checks.validate(config)  # the warmup against the run's real length
  return config


def time_left(done: int, total: int, step_seconds: float, eval_every: int, final_eval: bool,
              eval_seconds: float) -> float:
  """Seconds until the run ends after step `done`: the steps left, and the evaluations left at `eval_seconds` each,
  those every `eval_every` steps from `done` on (the one at `done` follows its log line) and the final one."""
  along = (total - 1) // eval_every - (done - 1) // eval_every if eval_every else 0
  return (total - done) * step_seconds + (along + final_eval) * eval_seconds


def check_batch(config: ml_collections.ConfigDict, mesh) -> None:
  """Fail early on a global batch the mesh's data axis and `grad_accum_steps` do not divide."""
  accum = config.grad_accum_steps
  parallel.local_batch_size(config.batch_size, mesh)
  if accum < 1 or config.batch_size % (accum * mesh.shape[parallel.DATA]):
    raise errors.BadValue(f"batch_size {config.batch_size} must split into grad_accum_steps={accum} micro-batches "
                          f"divisible by the {mesh.shape[parallel.DATA]} devices of the data axis")


class _Run:
  """One training run, with its workdir held and its config checked: built (model, evaluation, optimiser), restored
  from its checkpoints or initialised, trained step by step (logging, time left, preemption), then finished
  (final/, the selected checkpoint, results.json)."""

  def __init__(self, config: ml_collections.ConfigDict, method: methods.Method, workdir: str):
    self.config, self.method, self.workdir = config, method, workdir
    self.mesh = parallel.make_mesh(config.model_axis)
    check_batch(config, self.mesh)
    self.model, clip_params = starting_model(config, method, workdir, self.mesh)
    # What is evaluated and saved as final/ is params['clip'] with params['head'], unless the method says
    # otherwise (its eval_model, eval_params, final_params; e.g. an attention-transfer student).
    eval_model = method.eval_model(config, self.model)
    self.evaluator = evaluate.from_config(eval_model, config, self.mesh) if config.eval.suite else None
    self.validator = make_validator(config, eval_model, self.mesh)
    clip_params = parallel.shard_state(clip_params, self.mesh)  # on the devices before a method computes with them
    params = {"clip": clip_params, **method.extra_params(config, self.model, clip_params, self.mesh, self.evaluator)}
    self.tx, self.lr = optim.make_optimizer(config, params, config.steps), optim.make_schedule(config.optimizer,
                                                                                                config.steps)
    self.state = init_state(params, self.tx, self.mesh, ema_of=ema_mask(config, params))
    # eval.select_from_start: the starting point (step 0) is a candidate too, as in FLYP's few-shot loop (its epoch
    # -1, the zero-shot model); eval.test_selected_only: the suite is evaluated once, on the selected parameters,
    # and every other evaluation is ID validation alone (FLYP's few-shot loop tests only the model it keeps).
    self.first_candidate = 0 if config.eval.select_from_start else 1
    self.test_every = self.evaluator is not None and not config.eval.test_selected_only
    self.evaluates = bool(self.test_every or self.validator)
    # With a weight EMA both it and the raw parameters are evaluated; the reported one (the EMA with
    # eval.select_ema) has the plain keys and is the candidate for selection, the other is under "ema/" or "raw/".
    self.ema = "ema" in self.state
    self.other_prefix = ("raw/" if config.eval.select_ema else "ema/") if self.ema else ""
    self.select_on = selection_key(config)
    self.ckpt, self.best = self._restore()
    self.writer = metric_writer.MetricWriter(workdir, resume_step=int(self.state["step"]))
    self.eval_seconds = self.last_eval = 0.0  # evaluation time, kept out of the steps' rate and in the ETA

  def _restore(self):
    """The managers of the last checkpoints (resuming reads them) and of the best one on ID validation (the later
    step on ties; None without a validation set), the state restored from the newest readable step if any."""
    config = self.config
    ckpt = ocp.CheckpointManager(files.absolute(os.path.join(self.workdir, "checkpoints")),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True))
    best = ocp.CheckpointManager(files.absolute(os.path.join(self.workdir, "best")), options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, best_fn=lambda m: m[self.select_on],
        best_mode="max" if suites.higher_is_better(self.select_on) else "min")) if self.validator else None
    if ckpt.latest_step() is not None:
      # The newest readable step; damaged ones are moved aside. best/ is checked too, so a damaged one is replaced.
      self.state = checkpoint_guard.restore_latest(ckpt, self.state)
      if best and best.latest_step() is not None:
        checkpoint_guard.restore_latest(best, self._candidate(), "best checkpoint", required=False)
      logging.info("Resumed from step %d.", int(self.state["step"]))
    return checkpoint_guard.Saving(ckpt), best and checkpoint_guard.Saving(best)  # failed saves stop clearly

  def train(self) -> dict:
    """The steps from the restored one to `config.steps`, then `finish`; the run's results."""
    start, started = int(self.state["step"]), time.time()
    if self.config.eval.at_start and start == 0 and self.evaluates:
      self.evaluate_at(0)
    metrics = self._steps(start)
    results = self._finish(metrics)
    self.writer.close()
    if start < self.config.steps:  # only for training this call did
      results["train_seconds"] = time.time() - started
    return results

  def _steps(self, start: int):
    """The step loop: a log line and metrics every `log_every` steps, checkpoints, evaluations, and a stop after the
    step where a preemption (SIGTERM, Ctrl-C) was noticed. The last step's metrics (None if no step ran)."""
    config, total = self.config, self.config.steps
    step_fn = make_train_step(config, self.method.make_loss(config, self.model, self.mesh), self.tx, self.mesh,
                              self.state)
    # one batch ahead: the next one on its way to the devices while the current step runs
    batches = parallel.ahead(self.method.batches(config, self.model, self.mesh, start_step=start))
    window, metrics = metric_writer.RunningMean(), None
    trace = profiling.StepTrace(self.workdir, config.profile_steps, start, total)
    preemption = _TermSignal()
    self.t0, self.timed_steps = time.time(), 0
    try:
      for step in range(start, total):
        trace.before_step(step)
        self.state, metrics = step_fn(self.state, next(batches))
        trace.after_step(step, metrics)
        window.add(metrics)
        if step == start:  # throughput counts from here: compilation excluded
          jax.block_until_ready(metrics)
          self.t0, self.eval_seconds = time.time(), 0.0
        else:
          self.timed_steps += 1
        done = step + 1
        if done % config.log_every == 0 or done == total:
          metrics = self._log(done, window.read())  # means since the last log
        self._save_evaluate_or_stop(done, metrics, preemption)
    finally:
      trace.close()
      preemption.restore()
    return metrics

  def _log(self, done: int, metrics: dict) -> dict:
    """The progress line and the train/ metrics at step `done`, with throughput, lr and the time left."""
    config, total = self.config, self.config.steps
    _check_finite(metrics, done, self.ckpt.latest_step())
    elapsed = time.time() - self.t0 - self.eval_seconds  # training alone
    rate = self.timed_steps * config.batch_size / max(elapsed, 1e-9)
    metrics.update(examples_per_s=rate, examples_per_s_per_device=rate / jax.device_count(),
                   lr=float(self.lr(done - 1)))  # the rate of this step's update
    eta = time_left(done, total, elapsed / max(self.timed_steps, 1), config.eval.every_steps if self.evaluates else 0,
                    self.evaluates, self.last_eval)
    print(f"step {done}/{total}: loss {metrics['loss']:.4f}, {rate:.0f} examples/s, ~{eta:.0f}s left", flush=True)
    self.writer.write(done, {f"train/{k}": v for k, v in metrics.items()})
    return metrics

  def _save_evaluate_or_stop(self, done: int, metrics, preemption: "_TermSignal") -> None:
    """After step `done`: the periodic checkpoint and evaluation, and the stop of a preempted run (saved, exit 75).
    A diverged state is never saved or reported."""
    config, ckpt = self.config, self.ckpt
    if config.checkpoint_every and done % config.checkpoint_every == 0:
      _check_finite(metrics, done, ckpt.latest_step())
      ckpt.save(done, args=ocp.args.StandardSave(self.state))
    if config.eval.every_steps and done % config.eval.every_steps == 0 and done != config.steps:
      _check_finite(metrics, done, ckpt.latest_step())
      self.evaluate_at(done)
    if preemption.reached(ckpt, done):
      _check_finite(metrics, done, ckpt.latest_step())
      if ckpt.latest_step() != done:
        ckpt.save(done, args=ocp.args.StandardSave(self.state), force=True)
      ckpt.wait_until_finished()
      self.writer.close()
      print(f"Preempted ({preemption.name or 'SIGTERM'}) at step {done}/{config.steps}: checkpoint saved. Run the "
            f"same command again to resume.", flush=True)
      raise Preempted(PREEMPTED_EXIT_CODE)

  def _candidate(self):
    """What a step offers for selection (saved in best/): the parameters the run reports (the weight EMA's with
    `eval.select_ema`, else the state's), and with an EMA {'reported': those, 'other': the other ones}, so that the
    selected step's other parameters can be tested too."""
    params = self.state["params"]
    if not self.ema:
      return params
    averaged = optim.ema_params(self.state["ema"], params)
    if self.config.eval.select_ema:
      return {"reported": averaged, "other": params}
    return {"reported": params, "other": averaged}

  def _split(self, candidate):
    """(reported parameters, the other ones or None) of a `_candidate`."""
    return (candidate["reported"], candidate["other"]) if self.ema else (candidate, None)

  def _of_other(self, evaluate, params) -> dict:
    """`evaluate(params, label)`'s metrics of the other parameters of a `_candidate`, under `other_prefix`."""
    return {self.other_prefix + k: v for k, v in evaluate(params, f" ({self.other_prefix[:-1]})").items()}

  def evaluate_at(self, step: int) -> dict:
    """The suite and ID validation at `step` (of the EMA too, the other parameters under `other_prefix`), written
    to eval_<step>.json; a candidate for selection from `first_candidate` on."""
    started = time.time()
    candidate = self._candidate()
    reported, other = self._split(candidate)
    results = self._evaluate(reported)
    if other is not None:
      results.update(self._of_other(self._evaluate, other))
    if self.validator and step >= self.first_candidate:  # step 0: the start (zero-shot), unless select_from_start
      self.best.save(step, args=ocp.args.StandardSave(candidate), metrics={self.select_on: results[self.select_on]})
    if jax.process_index() == 0:
      files.write_json(os.path.join(self.workdir, f"eval_{step}.json"), results)
    self.writer.write(step, {f"eval/{k}": v for k, v in results.items() if not k.endswith("/count")})
    self.last_eval = time.time() - started
    self.eval_seconds += self.last_eval
    return results

  def _evaluate(self, params, label: str = "") -> dict:
    """The suite (unless `eval.test_selected_only`) and ID validation of `params` (the training state's tree)."""
    results = self._test(params, label) if self.test_every else {}
    if self.validator:
      results.update(self.validator(*self.method.eval_params(self.config, params), label=label))
    return results

  def _test(self, params, label: str = "") -> dict:
    """The suite on `params` (the training state's tree), with its line."""
    start = time.time()
    clip_params, head = self.method.eval_params(self.config, params)
    results = self.evaluator(clip_params, head=head)
    summary = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if k.startswith("avg_") or k.endswith("/top1"))
    print(f"evaluation{label} ({time.time() - start:.0f}s): {summary}", flush=True)
    return results

  def _finish(self, metrics) -> dict:
    """The last checkpoint, final/, the last evaluation and the selected step's results (results.json)."""
    total, ckpt = self.config.steps, self.ckpt
    if metrics is not None:
      _check_finite(metrics, total, ckpt.latest_step())
    if ckpt.latest_step() != total:
      ckpt.save(total, args=ocp.args.StandardSave(self.state), force=True)
    ckpt.wait_until_finished()
    checkpoint_guard.set_aside_if_damaged(runs.final_dir(self.workdir))  # then written again below
    self._save(self.state["params"], "final")
    if self.ema:
      checkpoint_guard.set_aside_if_damaged(os.path.join(self.workdir, "final_ema"))
      self._save(optim.ema_params(self.state["ema"], self.state["params"]), "final_ema")
    if not (self.evaluator or self.validator):
      return {}
    results = self._select(self.evaluate_at(total))
    start_results = files.read_json(os.path.join(self.workdir, "eval_0.json"), default={})
    if start_results:
      print(comparison_table(start_results, results, _start_label(self.config, self.method),
                             f"{self.config.method} (step {results['selected_step']})"))
    return results

  def _select(self, last: dict) -> dict:
    """results.json: the metrics of the checkpoint selected on ID validation at top level, with `selected_step`
    and `selected_on`, and the last step's metrics under `last/<metric>`.

    As FLYP reports the epoch picked on ID validation: every evaluation from `first_candidate` on is a candidate;
    without a validation set (or no candidate) the last step is reported. A selected step before the last is also
    saved as `selected/` (loadable like `final/`, which keeps the last parameters). With `eval.select_ema` the
    candidates are the weight EMA's parameters (`_candidate`).
    """
    config, total = self.config, self.config.steps
    selected, candidate = total, self._candidate()
    if self.best is not None:
      self.best.wait_until_finished()
      selected = self.best.best_step() if self.best.best_step() is not None else total
    if selected != total:
      candidate = self.best.restore(selected, args=ocp.args.StandardRestore(candidate))
    params, other = self._split(candidate)
    if selected != total:
      self._save(params, "selected")
    results = last if selected == total else files.read_json(os.path.join(self.workdir, f"eval_{selected}.json"))
    if self.evaluator is not None and config.eval.test_selected_only:
      results = {**results, **self._test(params)}
      if other is not None:
        results.update(self._of_other(self._test, other))
    results = self.method.finish(config, self.evaluator, params, self.workdir, results)  # its own rows (an ensemble)
    results = {**results, "selected_step": selected,
               "selected_on": self.select_on if self.best else "last step",
               **{f"last/{k}": v for k, v in last.items()}}
    if jax.process_index() == 0:
      files.write_json(os.path.join(self.workdir, runs.RESULTS), results)
    return results

  def _save(self, params, folder: str) -> None:
    """`params` (the training state's tree) as what the method saves (its final_params, else what it evaluates) in
    `workdir/folder`: a converted CLIP directory (loadable by load_pretrained) with head.npz if there is a head, or
    what the method's save_final writes instead (it too writes the marker last). A folder with its marker is kept;
    one without (a run stopped while writing it) is written again.

    Every process takes part (orbax coordinates the write); the parameters are host copies, the same on each.
    """
    clip_params, head = (self.method.final_params or self.method.eval_params)(self.config, parallel.to_host(params))
    path = os.path.join(self.workdir, folder)
    parallel.sync(f"{folder}:check")  # no process may see a directory that another has begun to write
    if converted.is_converted(path):
      return
    if files.exists(path):  # half-written by a run stopped while saving it (no marker yet): write it again
      if jax.process_index() == 0:
        files.rmtree(path)
      parallel.sync(f"{folder}:cleared")
    if self.method.save_final is not None:
      self.method.save_final(self.config, path, clip_params, head)
    else:
      converted.save(path, self.model.config, clip_params, source=self.workdir,
                     arrays=None if head is None else {"head.npz": head})


def init_state(params, tx: optax.GradientTransformation, mesh, ema_of=None) -> dict:
  """The training state, born sharded: replicated over the data axis, split over the model axis when it has more
  than one device (`parallel.param_sharding`). Host parameters go to the devices shard by shard, the optimiser
  state is computed where it lives: no device ever holds the whole of either. With `ema_of` (the trainable mask,
  when `optimizer.ema_decay` > 0) the state has 'ema' too, the weight EMA's start (`optim.ema_init`)."""
  params = parallel.shard_state(params, mesh)
  state = {"params": params, "opt_state": parallel.init_sharded(tx.init, params, mesh=mesh),
           "step": jax.device_put(jnp.zeros((), jnp.int32), parallel.replicated(mesh))}
  if ema_of is not None:
    state["ema"] = parallel.init_sharded(lambda p: optim.ema_init(p, ema_of), params, mesh=mesh)
  return state


def ema_mask(config, params):
  """The parameters the weight EMA averages (`optim.trainable_mask`) when `optimizer.ema_decay` > 0, else None."""
  return optim.trainable_mask(config, params) if optim.ema_decay(config) else None


def selection_key(config) -> str:
  """The ID validation metric that selects the reported checkpoint: `eval.select_on`, else the suite's headline."""
  return config.eval.select_on or suites.select_on(config.eval.suite)


def make_validator(config, model, mesh, quiet: bool = False):
  """`fn(clip_params, head=None, label="") -> {'id_val/top1': ...}` on the suite's ID validation set (its printed line
  says `label`), or None if the suite has none.

  The set is `flyp_jax.data.suites.validation_of(config)` (its split replaced by `eval.val_split` if set);
  its `selection_key(config)` metric selects the reported checkpoint and WiSE-FT's mixing coefficient.
  """
  dataset = suites.validation_of(config) if config.eval.suite else None
  if dataset is None:
    return None
  key = selection_key(config)
  if config.eval.val_split:  # e.g. a k-shot sample of the validation split (flyp_jax.commands.few_shot)
    dataset = dataclasses.replace(dataset, split=config.eval.val_split)
  metric = key.partition("/")[2]
  if key.partition("/")[0] == dataset.name and metric in suites.METRICS and metric not in dataset.metrics:
    dataset = dataclasses.replace(dataset, metrics=dataset.metrics + (metric,))  # what selection asks for
  if key.partition("/")[::2] not in {(dataset.name, m) for m in dataset.metrics}:
    raise errors.BadValue(f"eval.select_on={key!r} is not a metric of the {config.eval.suite!r} suite's validation set; "
                     f"choose one of {[f'{dataset.name}/{m}' for m in dataset.metrics]}")
  evaluator = evaluate.from_config(model, config, mesh, datasets=(dataset,))

  def validate(clip_params, head=None, label: str = "") -> dict:
    start = time.time()
    results = evaluator(clip_params, head=head)
    results = {k: v for k, v in results.items() if k.startswith(f"{dataset.name}/")}  # not its avg_id
    if not quiet:
      print(f"validation{label} ({time.time() - start:.0f}s): {key} {results[key]:.4f}", flush=True)
    return results

  return validate


def make_train_step(config, loss_fn, tx, mesh, state):
  """The jitted step (state, global batch) -> (state, metrics), donating the state.

  With `config.grad_accum_steps` = k > 1, the batch is cut into k micro-batches (each still sharded over the
  data axis) whose gradients are averaged before one optimiser update. A contrastive loss then sees
  batch_size / k examples per row's negatives, as in PyTorch implementations that accumulate gradients.
  With `config.optimizer.clamp_logit_scale` (open_clip's pretraining; FLYP's loop does not) the logit scale is
  clipped to [0, ln 100] after each update; a state with 'ema' (`init_state`) has its weight EMA updated from the parameters after that. Frozen parameters (not `config.trainable`, or `config.frozen`) enter the loss as constants, so
  no gradient is computed or reduced for them; `grad_norm` is the norm over the trainable ones (what
  gradient clipping sees).
  """
  rng = jax.random.key(config.seed)
  accum = config.grad_accum_steps
  clamp = config.optimizer.clamp_logit_scale
  ema_decay = optim.ema_decay(config)
  trainable = optim.trainable_mask(config, state["params"])

  def constant_frozen(params, batch, step_rng):
    params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)
    return loss_fn(params, batch, step_rng)

  grad_fn = jax.value_and_grad(constant_frozen, has_aux=True)

  def gradients(params, batch, step_rng):
    if accum == 1:
      return grad_fn(params, batch, step_rng)
    # Row j * k + i goes to micro-batch i: each device keeps its own rows, so no data moves between devices.
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1),
                                   batch)

    def body(total, i):
      mb = jax.tree.map(
          lambda x: jax.lax.with_sharding_constraint(x[i], parallel.data_sharding(mesh)), micro)
      out = grad_fn(params, mb, jax.random.fold_in(step_rng, i))
      return jax.tree.map(lambda a, b: a + b / accum, total, out), None

    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype),
        jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), step_rng))
    return jax.lax.scan(body, zeros, jnp.arange(accum))[0]

  def train_step(state, batch):
    step_rng = jax.random.fold_in(rng, state["step"])
    (loss, metrics), grads = gradients(state["params"], batch, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    if clamp and "logit_scale" in new_params["clip"]:  # open_clip's pretraining loop does this; FLYP's does not
      new_params["clip"]["logit_scale"] = losses.clamp_logit_scale(new_params["clip"]["logit_scale"])
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
    new_state = {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}
    if "ema" in state:  # after the update, of the parameters as the step leaves them (timm's ModelEmaV2.update)
      new_state["ema"] = optim.ema_update(state["ema"], new_params, ema_decay)
    return new_state, metrics

  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  return jax.jit(train_step, donate_argnums=0, out_shardings=(state_sharding, parallel.replicated(mesh)))


def _start_label(config, method: methods.Method) -> str:
  """What step 0 evaluates: the zero-shot model, or another start (LP-FT's probe, a random student)."""
  return "zero-shot (step 0)" if method.starts_zero_shot(config) else "step 0"


def comparison_table(before: dict, after: dict, before_label: str, after_label: str) -> str:
  """Markdown table of top-1 accuracy (%) per split and the ID / OOD averages, before and after training."""
  keys = [k for k in after if k.endswith("/top1") and k in before]
  keys = [k for k in keys if not k.startswith("avg_")] + [k for k in keys if k.startswith("avg_")]
  lines = [f"| top-1 (%) | {before_label} | {after_label} |", "|---|---:|---:|"]
  lines += [f"| {k[:-len('/top1')]} | {100 * before[k]:.2f} | {100 * after[k]:.2f} |" for k in keys]
  return "\n".join(lines)


PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL ("try again"): the run stopped on SIGTERM and resumes when re-run


class Preempted(SystemExit):
  """Training stopped on SIGTERM after saving a checkpoint; the same command resumes it."""


class _TermSignal:
  """Notes SIGTERM (how Cloud TPU announces a preemption) and a first Ctrl-C (SIGINT) so the loop can stop
  between steps, save and exit with PREEMPTED_EXIT_CODE; a second Ctrl-C aborts at once.

  One process: Python handlers note both. Several processes (a pod: SIGTERM reaches every host, or only one first):
  JAX's preemption sync manager owns SIGTERM (`jax.distributed.initialize` installs its handler outside Python,
  which a Python handler would replace) and tells every process, through the coordination service, the one step
  to stop after (orbax's `reached_preemption`); a first Ctrl-C on any process is passed to it as a SIGTERM to
  that process, so it stops the others at that same step too.
  """

  def __init__(self):
    self.received, self.name, self._previous = False, "", {}
    self._several = jax.process_count() > 1
    if self._several and not jax.config.jax_enable_preemption_service:
      raise errors.BadValue("a job of several processes needs JAX's preemption service to stop all of them at one "
                            "step on SIGTERM or Ctrl-C, and it is off: remove --jax_enable_preemption_service=false "
                            "(or JAX_ENABLE_PREEMPTION_SERVICE=0) from the command")
    if threading.current_thread() is threading.main_thread():  # signals can only be handled there
      if not self._several:
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
      self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.received:  # the second Ctrl-C: the default action, now
      signal.signal(signal.SIGINT, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGINT)
      return
    self.received, self.name = True, signal.Signals(signum).name
    if signum == signal.SIGINT:
      print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving).",
            flush=True)
      if self._several:
        os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notice, which reaches every process

  def reached(self, ckpt: ocp.CheckpointManager, step: int) -> bool:
    return ckpt.reached_preemption(step) if self._several else self.received

  def restore(self) -> None:
    for signum, previous in self._previous.items():
      if previous is not None:  # None: installed outside Python, cannot be put back
        signal.signal(signum, previous)


def _check_finite(metrics, step: int, last_checkpoint: Optional[int]) -> None:
  """A non-finite loss stops the run (on every process at the same step): as the input error a process told
  (`data.pipeline`'s batches), else as a divergence."""
  loss = float(jax.device_get(metrics["loss"]))
  if not np.isfinite(loss):
    told = parallel.told_input_error()
    if told is not None:
      raise told
    raise errors.Diverged(
        f"the training loss is {loss} at step {step}: training stopped. The last good checkpoint is step "
        f"{last_checkpoint} (re-running the command resumes from it); lower the learning rate or check the data.")


def _field(config, dotted: str):
  """`config`'s value of a dotted field name ('at.ensemble.path')."""
  for part in dotted.split("."):
    config = config[part]
  return config
