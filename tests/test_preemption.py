"""Preemption and exact resume, with real processes: SIGTERM stops cleanly, SIGKILL at any moment loses nothing.

Each stopped run is `python -c RUNNER` in a fresh process (8 simulated devices, as the tests), training a tiny
FT model on domain_shapes/small; the uninterrupted run and the final re-runs run in this process, with the
same code and devices. A run that is stopped and re-run with the same command must end with the same
parameters, bit for bit, and the same training losses as one that ran through, and every re-run must start
right after the newest complete checkpoint.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from flyp_jax import models, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30
CONFIG = """
def make_config(data_dir):
  from flyp_jax import configs_lib
  config = configs_lib.load("configs/ft.py:demo")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.update(dataset="domain_shapes/small", data_dir=data_dir)
  config.update(batch_size=64, steps=%d, log_every=1, checkpoint_every=4, keep_checkpoints=1)
  config.optimizer.warmup_steps = 5
  config.eval.suite = ""
  return config
""" % STEPS
# SLOW_SAVE=<step>: the array writer of that step's checkpoint writes, says so, then stalls, so that the test
# can kill the process while the save is half done (orbax's '<step>.orbax-checkpoint-tmp' folder exists).
RUNNER = CONFIG + """
import asyncio, os, sys
slow = os.environ.get("SLOW_SAVE")
if slow:
  from orbax.checkpoint._src.serialization import serialization
  write = serialization.async_serialize_from_host
  async def stalling(rslices, tspec, *args, **kwargs):
    out = await write(rslices, tspec, *args, **kwargs)
    if f"{slow}.orbax-checkpoint-tmp" in str(tspec):
      print("saving", slow, flush=True)
      await asyncio.sleep(600)
    return out
  serialization.async_serialize_from_host = stalling
from flyp_jax import train
train.run(make_config(sys.argv[2]), sys.argv[1])
"""
exec(CONFIG)


def start(workdir, data_dir, **env):
  return subprocess.Popen([sys.executable, "-c", RUNNER, str(workdir), data_dir], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **env})


def stop_when(workdir, data_dir, sig, seen, **env):
  """Start a run, send `sig` at the first output line for which `seen(line)` holds; (exit code, output)."""
  proc = start(workdir, data_dir, **env)
  out = []
  for line in proc.stdout:
    out.append(line)
    if seen(line):
      proc.send_signal(sig)
      break
  rest, _ = proc.communicate(timeout=300)
  return proc.returncode, "".join(out) + rest


def at_step(step):
  return lambda line: line.startswith("step ") and first_step(line) >= step


def first_step(output):
  """The first step an output reports (log_every is 1), or None."""
  for line in output.splitlines():
    if line.startswith("step "):
      return int(line.split()[1].split("/")[0])
  return None


def newest_checkpoint(workdir):
  """The newest complete checkpoint (a half-written save is a '<step>.orbax-checkpoint-tmp' folder), or 0."""
  saved = os.listdir(workdir / "checkpoints") if (workdir / "checkpoints").exists() else []
  return max([int(d) for d in saved if d.isdigit()] or [0])


def finish(workdir, data_dir, capsys):
  """Run to the end here, in this process; its output."""
  capsys.readouterr()
  train.run(make_config(data_dir), str(workdir))
  return capsys.readouterr().out


def final_state(workdir):
  _, params = models.load_pretrained(workdir / "final")
  head = dict(np.load(workdir / "final" / "head.npz"))
  losses = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    losses[record["step"]] = record["train/loss"]
  return params, head, losses


def assert_same_run(a, b):
  (params_a, head_a, losses_a), (params_b, head_b, losses_b) = a, b
  import jax
  jax.tree_util.tree_map(np.testing.assert_array_equal, params_a, params_b)
  jax.tree_util.tree_map(np.testing.assert_array_equal, head_a, head_b)
  assert losses_a == losses_b and sorted(losses_a) == list(range(1, STEPS + 1))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  train.run(make_config(data_dir), str(workdir))
  return final_state(workdir)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_75_and_resumes_exactly(tmp_path, data_dir, uninterrupted, capsys):
  code, out = stop_when(tmp_path, data_dir, signal.SIGTERM, at_step(6))
  assert code == train.PREEMPTED_EXIT_CODE, out
  stopped = int(out.split("Preempted (SIGTERM) at step ")[1].split("/")[0])
  assert stopped >= 6 and os.listdir(tmp_path / "checkpoints") == [str(stopped)]  # saved where it stopped
  assert first_step(finish(tmp_path, data_dir, capsys)) == stopped + 1  # nothing trained twice, nothing skipped
  assert_same_run(final_state(tmp_path), uninterrupted)


@pytest.mark.slow
def test_sigkills_at_a_random_step_and_inside_a_save_reach_the_uninterrupted_result(tmp_path, data_dir, uninterrupted,
                                                                                       capsys):
  rng = random.Random(0)
  resumed_from = []
  for kill in range(2):
    newest = newest_checkpoint(tmp_path)
    if kill == 1:  # inside the save of the next checkpoint, after its first array is written
      target = (newest // 4 + 1) * 4
      code, out = stop_when(tmp_path, data_dir, signal.SIGKILL, lambda line: line.startswith("saving"),
                            SLOW_SAVE=str(target))
      assert (tmp_path / "checkpoints" / f"{target}.orbax-checkpoint-tmp").exists(), out
    else:
      # At a random step, once this run has completed a checkpoint of its own (saves are asynchronous), so that
      # every re-run has something new to resume from.
      target = newest + rng.randint(2, 8)
      code, out = stop_when(tmp_path, data_dir, signal.SIGKILL,
                            lambda line: at_step(target)(line) and newest_checkpoint(tmp_path) > newest)
    assert code == -signal.SIGKILL, out
    resumed_from.append((first_step(out), newest))
    time.sleep(rng.random() * 0.2)
  newest = newest_checkpoint(tmp_path)
  resumed_from.append((first_step(finish(tmp_path, data_dir, capsys)), newest))
  # Every run started right after the newest complete checkpoint (the half-written one ignored).
  assert all(first == newest + 1 for first, newest in resumed_from), resumed_from
  # The first kill came after a checkpoint; the second left its save half-written, so the last run resumed from
  # the same checkpoint as the second (not from the unfinished one).
  assert 0 < resumed_from[1][1] == resumed_from[2][1], resumed_from
  assert_same_run(final_state(tmp_path), uninterrupted)
