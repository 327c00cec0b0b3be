"""Preemption and exact resume, with real processes: SIGTERM stops cleanly, SIGKILL at random moments loses nothing.

Each run is `python -c RUNNER` in a fresh process (8 simulated devices, as the tests), training a tiny FT model
on domain_shapes/small. A run that is stopped and re-run with the same command must end with the same
parameters, bit for bit, and the same training losses as one that ran through.
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
from flyp_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30
RUNNER = """
import sys
from flyp_jax import configs_lib, train
config = configs_lib.load("configs/ft.py:demo")
config.unlock()
config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
config.data.update(dataset="domain_shapes/small", data_dir=sys.argv[2])
config.update(batch_size=64, steps=%d, log_every=1, checkpoint_every=4, keep_checkpoints=1)
config.optimizer.warmup_steps = 5
config.eval.suite = ""
train.run(config, sys.argv[1])
""" % STEPS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  pipeline.get_builder("domain_shapes/small", path)
  return path


def start(workdir, data_dir):
  return subprocess.Popen([sys.executable, "-c", RUNNER, str(workdir), data_dir], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=os.environ.copy())


def run_until_step(workdir, data_dir, step, sig):
  """Start a run, send `sig` once it reports `step` (or later), return (exit code, output)."""
  proc = start(workdir, data_dir)
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= step:
      proc.send_signal(sig)
      break
  rest, _ = proc.communicate(timeout=300)
  return proc.returncode, "".join(out) + rest


def finish(workdir, data_dir):
  proc = start(workdir, data_dir)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  return out


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
  finish(workdir, data_dir)
  return final_state(workdir)


def test_sigterm_saves_a_checkpoint_exits_75_and_resumes_exactly(tmp_path, data_dir, uninterrupted):
  code, out = run_until_step(tmp_path, data_dir, 6, signal.SIGTERM)
  assert code == train.PREEMPTED_EXIT_CODE, out
  stopped = int(out.split("Preempted (SIGTERM) at step ")[1].split("/")[0])
  assert stopped >= 6 and os.listdir(tmp_path / "checkpoints") == [str(stopped)]  # saved where it stopped
  resumed = finish(tmp_path, data_dir)
  assert f"step {stopped}/" not in resumed and f"step {stopped + 1}/" in resumed  # nothing trained twice
  assert_same_run(final_state(tmp_path), uninterrupted)


def test_random_sigkills_and_reruns_reach_the_uninterrupted_result(tmp_path, data_dir, uninterrupted):
  rng = random.Random(0)
  kills = 0
  for _ in range(3):
    # A kill during a save leaves orbax's '<step>.orbax-checkpoint-tmp' folder, which resuming must ignore.
    saved = os.listdir(tmp_path / "checkpoints") if (tmp_path / "checkpoints").exists() else []
    done = [int(d) for d in saved if d.isdigit()] or [0]
    target = max(done) + rng.randint(2, 8)
    if target >= STEPS:
      break
    code, _ = run_until_step(tmp_path, data_dir, target, signal.SIGKILL)
    kills += code == -signal.SIGKILL
    time.sleep(rng.random() * 0.2)
  assert kills >= 2
  finish(tmp_path, data_dir)
  assert_same_run(final_state(tmp_path), uninterrupted)
