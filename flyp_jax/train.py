"""The one training loop: state, optimiser, checkpoints, logging and evaluation hooks.

A method (`flyp_jax.methods.<name>`) supplies what differs: extra parameters (a classification head), the
training batches and the loss. Which parameters train, and at which learning rate, is config (regex ->
group), implemented with optax masks, so FT, LP-FT and FLYP differ in config rather than in copied code.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from flyp_jax import configs_lib, evaluate, losses, models, optim, parallel

TRAINING_METHODS = ("flyp", "ft", "pretrain")
OTHER_METHODS = ("lp", "wiseft", "compare")


def load_clip(config: ml_collections.ConfigDict, workdir: str):
  """(model, params) from `config.model`: a pretrained checkpoint, a previous run's workdir, or random init."""
  m = config.model
  if m.init == "random":
    overrides = dict(m.overrides) if m.get("overrides") else {}
    model = models.create_model(models.get_config(m.variant, **overrides), dtype=m.dtype, remat=m.remat)
    return model, jax.jit(models.init_params, static_argnums=0)(model, jax.random.PRNGKey(config.seed))
  if m.init == "run":  # the final parameters of another run of this loop (e.g. the demo's pretraining)
    from flyp_jax import convert
    run_dir = m.path if os.path.isabs(m.path) else os.path.join(workdir, m.path)
    if not os.path.exists(os.path.join(run_dir, "final", convert.CONVERTED_MARKER)):
      if not m.get("config"):
        raise FileNotFoundError(f"{run_dir} holds no finished run (final/{convert.CONVERTED_MARKER})")
      logging.info("No finished run in %s: running %s there first.", run_dir, m.config)
      run(configs_lib.load(m.config), run_dir)
    model, params = models.load_pretrained(os.path.join(run_dir, "final"), dtype=m.dtype, remat=m.remat)
    return model, params
  return models.load_pretrained(m.path, dtype=m.dtype, remat=m.remat, activation=m.get("activation") or None)


def main(config: ml_collections.ConfigDict, workdir: Optional[str] = None) -> dict:
  """The command line's entry: run `config` in `workdir` (default workdirs/<config.name>), print the results."""
  workdir = workdir or os.path.join("workdirs", config.name)
  results = dispatch(config, workdir)
  print(json.dumps({k: v for k, v in results.items() if not k.endswith("/count")}, indent=1, sort_keys=True))
  print(f"results in {os.path.abspath(workdir)}")
  return results


def dispatch(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Run `config.method` in `workdir`: the training loop, or the LP / WiSE-FT / comparison commands."""
  if config.method in TRAINING_METHODS:
    return run(config, workdir)
  if config.method in OTHER_METHODS:
    return importlib.import_module(f"flyp_jax.methods.{config.method}").run(config, workdir)
  raise ValueError(f"unknown method {config.method!r}; known: {TRAINING_METHODS + OTHER_METHODS}")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Train `config.method` in `workdir` (resuming from its checkpoints), evaluate, write results.json."""
  if config.method not in TRAINING_METHODS:
    raise ValueError(f"unknown training method {config.method!r}; known: {TRAINING_METHODS}")
  os.makedirs(workdir, exist_ok=True)
  method = importlib.import_module(f"flyp_jax.methods.{config.method}")
  mesh = parallel.make_mesh(config.get("model_axis", 1))
  parallel.local_batch_size(config.batch_size, mesh)  # fail early on an indivisible batch
  model, clip_params = load_clip(config, workdir)
  evaluator = evaluate.Evaluator(model, config.eval.suite, mesh, batch_size=config.eval.batch_size,
                                 data_dir=config.data.data_dir or None) if config.eval.suite else None
  params = {"clip": clip_params, **method.extra_params(config, model, clip_params, mesh, evaluator)}
  total = config.steps
  tx = optim.make_optimizer(config, params, total)
  # Replicated over the mesh (parameter sharding over the `model` axis is not used yet).
  state = jax.device_put({"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)},
                         parallel.replicated(mesh))

  ckpt = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  if ckpt.latest_step() is not None:
    state = ckpt.restore(ckpt.latest_step(), args=ocp.args.StandardRestore(state))
    logging.info("Resumed from step %d.", int(state["step"]))
  start = int(state["step"])

  loss_fn = method.make_loss(config, model, mesh)
  rng = jax.random.PRNGKey(config.seed)

  def train_step(state, batch):
    step_rng = jax.random.fold_in(rng, state["step"])
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, step_rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    new_params["clip"]["logit_scale"] = losses.clamp_logit_scale(new_params["clip"]["logit_scale"])
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **metrics}
    return {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

  state_sharding = jax.tree_util.tree_map(lambda x: x.sharding, state)
  step_fn = jax.jit(train_step, donate_argnums=0, out_shardings=(state_sharding, parallel.replicated(mesh)))
  batches = method.batches(config, model, mesh, start_step=start)
  results, metrics = {}, None
  log_path = os.path.join(workdir, "metrics.jsonl")
  t0, timed_steps, t_start = time.time(), 0, time.time()
  for step in range(start, total):
    batch = next(batches)
    state, metrics = step_fn(state, batch)
    if step == start:  # throughput counts from here: compilation excluded
      jax.block_until_ready(metrics)
      t0 = time.time()
    else:
      timed_steps += 1
    done = step + 1
    if done % config.log_every == 0 or done == total:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      _check_finite(metrics, done, ckpt.latest_step())
      elapsed = time.time() - t0
      rate = timed_steps * config.batch_size / max(elapsed, 1e-9)
      metrics.update(step=done, examples_per_s=rate, examples_per_s_per_device=rate / jax.device_count())
      eta = (total - done) * elapsed / max(timed_steps, 1)
      logging.info("step %d/%d loss %.4f, %.1f examples/s, %.0fs left", done, total, metrics["loss"], rate, eta)
      print(f"step {done}/{total}: loss {metrics['loss']:.4f}, {rate:.0f} examples/s, ~{eta:.0f}s left", flush=True)
      if jax.process_index() == 0:
        with open(log_path, "a") as f:
          f.write(json.dumps(metrics) + "\n")
    if config.checkpoint_every and done % config.checkpoint_every == 0:
      _check_finite(metrics, done, ckpt.latest_step())  # never save a diverged state
      ckpt.save(done, args=ocp.args.StandardSave(state))
    if evaluator and config.eval.every_steps and done % config.eval.every_steps == 0 and done != total:
      _evaluate(evaluator, state["params"], workdir, f"eval_{done}.json")
  if metrics is not None:
    _check_finite(metrics, total, ckpt.latest_step())
  if ckpt.latest_step() != total:
    ckpt.save(total, args=ocp.args.StandardSave(state), force=True)
  ckpt.wait_until_finished()
  final = jax.device_get(state["params"])
  _save_final(workdir, model, final["clip"], final.get("head"))
  if evaluator:
    results = _evaluate(evaluator, state["params"], workdir, "results.json")
  results["train_seconds"] = time.time() - t_start
  return results


def _check_finite(metrics, step: int, last_checkpoint: Optional[int]) -> None:
  loss = float(jax.device_get(metrics["loss"]))
  if not np.isfinite(loss):
    raise FloatingPointError(
        f"the training loss is {loss} at step {step}: training stopped. The last good checkpoint is step "
        f"{last_checkpoint} (re-running the command resumes from it); lower the learning rate or check the data.")


def _evaluate(evaluator, params, workdir, filename) -> dict:
  start = time.time()
  results = evaluator(params["clip"], head=params.get("head"), workdir=workdir, filename=filename)
  summary = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if k.startswith("avg_") or k.endswith("/top1"))
  print(f"evaluation ({time.time() - start:.0f}s): {summary}", flush=True)
  return results


def _save_final(workdir: str, model: models.CLIP, clip_params, head: Optional[Any]) -> None:
  """The trained CLIP as a `flyp_jax.convert` directory (loadable by load_pretrained), and the head if any."""
  from flyp_jax import convert
  final = os.path.join(workdir, "final")
  if os.path.exists(os.path.join(final, convert.CONVERTED_MARKER)):
    return
  if jax.process_index() == 0:
    convert.save_converted(final, model.config, jax.tree_util.tree_map(np.asarray, clip_params), source=workdir)
    if head is not None:
      np.savez(os.path.join(final, "head.npz"), **jax.tree_util.tree_map(np.asarray, head))
