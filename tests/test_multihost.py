"""Two processes on one machine train exactly as one process with the same devices, and resume after a kill.

Each process is `python -c RUNNER` with its own simulated CPU devices; two of them form one JAX job through
`jax.distributed` (CPU collectives over gloo), 4 devices each, and are compared with one process of 8 devices
(the test's own) reading the training split in the same 2 shards. A tiny random CLIP trains FLYP and FT on
domain_shapes/small, evaluates on the (small) demo suite, keeps its best checkpoint and saves final/ from both
processes together.

On CPU, FLYP's two-process step is slow (about 25 s here, against well under a second for one process). The
time comes with the gradient of the text tower's token-embedding table: with that gradient stopped the step
is fast, and a lone 25 MB all-reduce over gloo takes 0.3 s, so it is the CPU backend's handling of that
gradient across processes, not something TPU or GPU collectives go through. So FLYP's runs here freeze that
table (the rest of both towers trains) and are a few steps long.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import xla_flags

from flyp_jax import models
from flyp_jax.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
# The run's config, built the same way in the job's processes and here (for the initial parameters). No
# warmup, so every step moves the parameters. FLYP's token-embedding table is frozen: its gradient is what
# makes the CPU backend's two-process step slow (see above), and the rest of the text tower still trains.
CONFIG = """
def make_config(method, data_dir, steps=%d):
  from flyp_jax import configs_lib
  config = configs_lib.load(f"configs/{method}.py:demo")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.update(dataset="domain_shapes/small", data_dir=data_dir, shards=2)
  config.update(batch_size=32, steps=steps, log_every=1, checkpoint_every=2, keep_checkpoints=1)
  config.frozen = "^clip/text/token_embedding/" if method == "flyp" else ""
  # Adam with eps = 1 updates by about lr * gradient: with the usual eps a gradient near zero becomes a full
  # step of its sign, which reduction-order noise decides, and Adam's normalisation would hide a gradient of
  # the wrong scale. No warmup, so that every step moves the parameters.
  config.optimizer.update(lr=1e-2, eps=1.0, warmup_steps=0)
  config.eval.update(at_start=False, every_steps=steps, batch_size=64)  # one evaluation, at the end
  return config


def use_small_suites(setitem):
  # The demo suite and its validation set on domain_shapes/small; setitem(mapping, key, value).
  import dataclasses
  from flyp_jax.data import suites
  setitem(suites.SUITES, "domain_shapes", tuple(dataclasses.replace(d, tfds_name="domain_shapes/small")
                                                for d in suites.SUITES["domain_shapes"]))
  setitem(suites.VALIDATION, "domain_shapes",
          dataclasses.replace(suites.VALIDATION["domain_shapes"], tfds_name="domain_shapes/small"))
""" % STEPS
RUNNER = CONFIG + """
import sys
from flyp_jax import parallel
workdir, data_dir, method, coordinator, processes, process = sys.argv[1:]
parallel.initialize(coordinator_address=coordinator or None, num_processes=int(processes), process_id=int(process))
from flyp_jax import train
use_small_suites(lambda mapping, key, value: mapping.__setitem__(key, value))
train.run(make_config(method, data_dir), workdir)
"""
exec(CONFIG)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, data_dir, method, processes):
  """Start the job's processes; (list of Popen, their output files)."""
  devices = 8 // processes
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices))
  coordinator = f"127.0.0.1:{free_port()}" if processes > 1 else ""
  procs = []
  for i in range(processes):
    log = open(workdir / f"process_{i}.log", "a")
    procs.append(subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(workdir), data_dir, method, coordinator, str(processes), str(i)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
  return procs


def log_of(workdir, i=0):
  return (workdir / f"process_{i}.log").read_text()


def run(workdir, data_dir, method, processes):
  procs = launch(workdir, data_dir, method, processes)
  for i, p in enumerate(procs):
    assert p.wait(timeout=400) == 0, log_of(workdir, i)[-3000:]
  return outcome(workdir)


def outcome(workdir):
  """(final CLIP params, head or None, {step: (loss, grad_norm)}, results.json)."""
  _, params = models.load_pretrained(workdir / "final")
  head_file = workdir / "final" / "head.npz"
  head = dict(np.load(head_file)) if head_file.exists() else None
  losses = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if "train/loss" in record:
      losses[record["step"]] = (record["train/loss"], record["train/grad_norm"])
  return params, head, losses, json.loads((workdir / "results.json").read_text())


def assert_close(a, b, initial, exact=False):
  """The runs agree: losses and gradient norms to float rounding, and every parameter leaf far closer to the
  other run than to where it started (1% of its movement), or bit for bit with `exact`. `initial`: (the
  initial CLIP parameters, which of them train); every trained leaf must have moved, every frozen one not."""
  initial, trains = initial
  (params_a, head_a, losses_a, results_a), (params_b, head_b, losses_b, results_b) = a, b
  leaves = lambda p: jax.tree_util.tree_leaves_with_path(p)
  for (path, x), (_, y), (_, start), (_, train) in zip(leaves(params_a), leaves(params_b), leaves(initial),
                                                       leaves(trains)):
    name = jax.tree_util.keystr(path)
    moved = float(np.max(np.abs(np.asarray(y) - start)))
    # Attention is invariant to the key bias, so its gradient is zero up to rounding: those leaves hold only
    # reduction-order noise, and are compared only when the runs must be bitwise equal.
    noise = "['key']['bias']" in name
    assert noise or (moved > 0) == train, (name, moved)
    if exact or not train:
      np.testing.assert_array_equal(x, y, err_msg=name)
    elif not noise:
      assert float(np.max(np.abs(np.asarray(x) - y))) <= 1e-2 * moved, (name, moved)
  assert (head_a is None) == (head_b is None)
  if head_a is not None:
    compare = np.testing.assert_array_equal if exact else (lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4,
                                                                                                      atol=1e-6))
    jax.tree_util.tree_map(compare, head_a, head_b)
  assert sorted(losses_a) == sorted(losses_b) == list(range(1, len(losses_b) + 1))
  # Loss and gradient norm per step: a gradient summed instead of averaged over processes, or one process's
  # shard counted twice, shows here even where Adam's normalisation hides it in the parameters.
  np.testing.assert_allclose([losses_a[s] for s in sorted(losses_a)], [losses_b[s] for s in sorted(losses_b)],
                             rtol=0 if exact else 1e-5)
  counts = [k for k in results_a if k.endswith("/count")]
  assert counts and all(results_a[k] == results_b[k] for k in counts)  # every test example counted once
  for k in results_a:
    if k.endswith("/top1") and "avg_" not in k:  # per dataset, reported and last/ alike
      assert abs(results_a[k] - results_b[k]) <= 1 / results_a[k.replace("/top1", "/count")] + 1e-9, k


def initial_params(method, data_dir):
  """The run's initial CLIP parameters and which of them train."""
  from flyp_jax import optim, train
  config = make_config(method, data_dir)
  clip = jax.device_get(train.load_clip(config, "unused")[1])
  return clip, optim.trainable_mask(config, {"clip": clip})["clip"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_dir):
  """The one-process runs, in this process: it has the same 8 simulated devices (conftest.py)."""
  from flyp_jax import train
  assert jax.device_count() == 8 and jax.process_count() == 1
  runs = {}
  with pytest.MonkeyPatch.context() as patch:
    use_small_suites(patch.setitem)
    for method in ("flyp", "ft"):
      workdir = tmp_path_factory.mktemp(f"{method}_1")
      train.run(make_config(method, data_dir), str(workdir))
      runs[method] = outcome(workdir)
  return runs


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path, data_dir, one_process):
  """FLYP (the sharded contrastive loss across processes); FT's two-process run is the kill case's below."""
  two = run(tmp_path, data_dir, "flyp", 2)
  assert_close(two, one_process["flyp"], initial_params("flyp", data_dir))
  assert (tmp_path / "best").exists() and (tmp_path / "final" / "flyp_clip.json").exists()


@pytest.mark.slow
def test_two_processes_killed_and_rerun_resume(tmp_path, data_dir, one_process):
  procs = launch(tmp_path, data_dir, "ft", 2)
  # Kill both once the step-2 checkpoint is complete (orbax renames it into place) and step 3 has trained.
  while procs[0].poll() is None and not ((tmp_path / "checkpoints" / "2").exists() and "step 3/" in log_of(tmp_path)):
    time.sleep(0.05)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert not (tmp_path / "final").exists(), log_of(tmp_path)[-3000:]
  resumed = run(tmp_path, data_dir, "ft", 2)
  for i in (0, 1):
    assert log_of(tmp_path, i).count(f"step 2/{STEPS}:") == 1  # resumed from the checkpoint, not from scratch
    assert log_of(tmp_path, i).count(f"step {STEPS}/{STEPS}:") == 1
  assert_close(resumed, one_process["ft"], initial_params("ft", data_dir))


# A job as a pod runs it: main.py in each process (`--coordinator_address`, `--num_processes`, `--process_id`),
# with the config above written to a file.
POD_STEPS = 24
MAIN = CONFIG + """
import os, runpy, sys, time
use_small_suites(lambda mapping, key, value: mapping.__setitem__(key, value))
if float(os.environ.get("STEP_PAUSE_S", 0)):  # paced steps: a signal sent after step k lands well before the end
  from flyp_jax import train
  reached = train._TermSignal.reached
  def paced(self, ckpt, step):
    time.sleep(float(os.environ["STEP_PAUSE_S"]))
    return reached(self, ckpt, step)
  train._TermSignal.reached = paced
sys.argv = ["main.py", *sys.argv[1:]]
runpy.run_path("main.py", run_name="__main__")
"""


def launch_main(workdir, config_file, processes=2, step_pause_s=0.0):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(8 // processes), STEP_PAUSE_S=str(step_pause_s))
  coordinator = f"127.0.0.1:{free_port()}"
  return [subprocess.Popen([sys.executable, "-c", MAIN, f"--config={config_file}", f"--workdir={workdir}",
                            f"--coordinator_address={coordinator}", f"--num_processes={processes}",
                            f"--process_id={i}"],
                           cwd=ROOT, env=env, stdout=open(workdir / f"process_{i}.log", "a"),
                           stderr=subprocess.STDOUT, text=True) for i in range(processes)]


def logged_steps(workdir, i=0):
  if not (workdir / f"process_{i}.log").exists():
    return []
  return [int(line.split("/")[0][5:]) for line in log_of(workdir, i).splitlines() if line.startswith("step ")]


@pytest.mark.slow
def test_pod_preemption_stops_every_process_at_one_step_saved_and_resumes_exactly(tmp_path, data_dir):
  """SIGTERM on one process only (a pod's notice reaches one host first), Ctrl-C on process 0, SIGTERM on
  every process: each time both processes stop after the same step, that step is saved, both exit 75, and the
  next run resumes from it; the run interrupted three times ends where an uninterrupted one does."""
  from flyp_jax import train
  config_file = tmp_path / "pod_ft.py"
  config_file.write_text(CONFIG + f"""
def get_config():
  config = make_config("ft", {data_dir!r}, steps={POD_STEPS})
  config.checkpoint_every = 0  # no periodic checkpoint: every one saved is the stop's
  return config
""")
  workdir = tmp_path / "run"
  workdir.mkdir()
  stopped = 0
  for signals in ({1: signal.SIGTERM}, {0: signal.SIGINT}, {0: signal.SIGTERM, 1: signal.SIGTERM}):
    before = [len(logged_steps(workdir, i)) for i in (0, 1)]
    procs = launch_main(workdir, config_file, step_pause_s=0.3)  # under load a notice took 20 steps to land
    while procs[0].poll() is None and len(logged_steps(workdir, 0)) < before[0] + 3:
      time.sleep(0.05)
    for i, sig in signals.items():
      procs[i].send_signal(sig)
    codes = [p.wait(timeout=300) for p in procs]
    logs = [log_of(workdir, i) for i in (0, 1)]
    assert codes == [train.PREEMPTED_EXIT_CODE] * 2, (signals, codes, logs[0][-2000:], logs[1][-2000:])
    at = [int(log.rsplit("Preempted (", 1)[1].split(" at step ")[1].split("/")[0]) for log in logs]
    assert at[0] == at[1] and stopped < at[0] < POD_STEPS, (signals, at)
    names = [log.rsplit("Preempted (", 1)[1].split(")")[0] for log in logs]
    assert names[0] == ("SIGINT" if signals.get(0) == signal.SIGINT else "SIGTERM"), names
    assert sorted(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit()) == [at[0]]
    for i in (0, 1):  # resumed where the previous stop saved, trained to where this one stopped
      segment = logged_steps(workdir, i)[before[i]:]
      assert segment == list(range(stopped + 1, at[0] + 1)), (i, segment)
    stopped = at[0]
  for p in launch_main(workdir, config_file):
    assert p.wait(timeout=300) == 0, log_of(workdir)[-3000:]
  with pytest.MonkeyPatch.context() as patch:  # the same run, uninterrupted, in this process's 8 devices
    use_small_suites(patch.setitem)
    uninterrupted = tmp_path / "uninterrupted"
    config = make_config("ft", data_dir, steps=POD_STEPS)
    config.checkpoint_every = 0
    train.run(config, str(uninterrupted))
  assert_close(outcome(workdir), outcome(uninterrupted), initial_params("ft", data_dir))


@pytest.mark.parametrize("split", ["train", "test_photo"])
@pytest.mark.slow
def test_a_damaged_dataset_file_read_by_one_process_stops_every_process_with_its_paragraph(tmp_path, data_dir,
                                                                                            split):
  """The last quarter of the split's file cut off, so that only process 1's half of the examples reaches the
  damage (process 0 reads the first half and would go on). Training: every process stops at the same step
  with the paragraph naming the file, none waits for the other at a collective, no checkpoint is saved of the
  steps after it; evaluation: the same after the last batch, no metric written."""
  import pathlib
  import shutil
  damaged_dir = tmp_path / "tfds"
  shutil.copytree(data_dir, damaged_dir)
  builder = pipeline.get_builder("domain_shapes/small", str(damaged_dir))
  path = pathlib.Path(builder.info.splits[split].filepaths[0])
  path.write_bytes(path.read_bytes()[:path.stat().st_size * 3 // 4])
  config_file = tmp_path / "damaged.py"
  config_file.write_text(CONFIG + f"""
def get_config():
  return make_config("ft", {str(damaged_dir)!r})
""")
  workdir = tmp_path / "run"
  workdir.mkdir()
  procs = launch_main(workdir, config_file)
  codes = [p.wait(timeout=200) for p in procs]
  logs = [log_of(workdir, i) for i in (0, 1)]
  assert codes == [2, 2], (codes, logs[0][-2000:], logs[1][-2000:])
  for log in logs:
    error = log.strip().splitlines()[-1]
    assert error.startswith(f"error: TFDS dataset 'domain_shapes', split '{split}': file {path} is damaged"), error
  if split == "train":
    assert not [d for d in (workdir / "checkpoints").iterdir() if d.name.isdigit()]
    assert "step 1/" not in logs[0]  # the first logged step's loss is the poisoned one: stopped there
  else:
    assert f"step {STEPS}/{STEPS}:" in logs[0] and not (workdir / "results.json").exists()
    assert not list(workdir.glob("eval_*.json"))
