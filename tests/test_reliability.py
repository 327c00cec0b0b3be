"""Reliability of a workdir: one run at a time, damaged checkpoints survived, a changed config refused, Ctrl-C saves,
impossible settings caught before any work, and a failed save that keeps the previous checkpoint.

The numbers in the section titles are the cases of the issue these tests reproduce. Runs train a tiny FT model
(ViT-T/8, random init) on domain_shapes/small for a few steps, in this process unless a signal or the command
line's exit status is what is tested.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from flyp_jax import checkpoint_guard, config_checks, configs_lib, files, optim, train, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = """
from flyp_jax import configs_lib
def tiny(data_dir, **changes):
  config = configs_lib.load("configs/ft.py:demo")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.update(dataset="domain_shapes/small", data_dir=data_dir)
  config.update(batch_size=16, steps=4, log_every=1, checkpoint_every=2, keep_checkpoints=3)
  config.optimizer.warmup_steps = 1
  config.eval.suite = ""
  for key, value in changes.items():
    node = config
    *parents, last = key.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  config.lock()
  return config
"""
exec(CONFIG)  # tiny(data_dir, **{"steps": 6, "model.variant": ...}): the config every run here uses


def steps_trained(output: str) -> list[int]:
  return [int(line.split()[1].split("/")[0]) for line in output.splitlines() if line.startswith("step ")]


def main_py(workdir, *args, timeout=120):
  """`python main.py --config=configs/ft.py:demo --workdir=... ARGS`: (exit status, stdout + stderr)."""
  proc = subprocess.run([sys.executable, "main.py", "--config=configs/ft.py:demo", f"--workdir={workdir}", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
  return proc.returncode, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------- 1. one run per workdir
HOLDER = """
import sys, time
from flyp_jax import workdir_lock
with workdir_lock.hold(sys.argv[1]):
  print("held", flush=True)
  time.sleep(120)
"""


@pytest.mark.slow
def test_a_second_run_on_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    code, out = main_py(tmp_path, "--config.steps=2")
  finally:
    holder.kill()
    holder.wait()
  assert code == 2 and "Traceback" not in out, out
  message = out.split("error: ")[1]
  assert f"process {holder.pid} on host {socket.gethostname()}" in message and "started 20" in message
  assert "another --workdir" in message and "\n" not in message.strip()
  assert sorted(os.listdir(tmp_path)) == ["run.lock"]  # nothing was run: no config.json, checkpoints or metrics


def test_the_same_process_cannot_hold_a_workdir_twice_and_gives_it_back(tmp_path, data_dir):
  with workdir_lock.hold(str(tmp_path)):
    with pytest.raises(workdir_lock.WorkdirLocked, match=f"process {os.getpid()} on host"):
      train.run(tiny(data_dir), str(tmp_path))
  assert not (tmp_path / "run.lock").exists()
  with workdir_lock.hold(str(tmp_path)):  # given back: taken again without a warning
    pass


def dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def write_lock(workdir, **fields):
  record = {"host": socket.gethostname(), "pid": dead_pid(), "started": time.time() - 100,
            "heartbeat": time.time() - 50, "token": "old"}
  record.update(fields)
  files.makedirs(str(workdir))
  with files.open_file(os.path.join(str(workdir), "run.lock"), "w") as f:
    f.write(json.dumps(record))
  return record


def read_lock(workdir):
  with files.open_file(os.path.join(str(workdir), "run.lock")) as f:
    return json.loads(f.read())


@pytest.fixture
def bucket(monkeypatch):
  """A ram:// folder (a scheme like gs://, served by tf.io.gfile from memory) whose writes replace a file, as a
  bucket's do (tf's ram:// file system appends instead)."""
  monkeypatch.setattr(workdir_lock, "SETTLE_S", 0.0)
  open_file = files.open_file

  def replacing(path, mode="r"):
    if mode.startswith("w") and files.is_remote(path) and files.exists(path):
      files.remove(path)
    return open_file(path, mode)

  monkeypatch.setattr(files, "open_file", replacing)
  return f"ram://reliability/{uuid.uuid4().hex}"


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_warning(tmp_path, capsys):
  record = write_lock(tmp_path)
  with workdir_lock.hold(str(tmp_path)):
    assert read_lock(tmp_path)["pid"] == os.getpid()
  warning = capsys.readouterr().out
  assert f"process {record['pid']} on host {socket.gethostname()}" in warning and "taken over" in warning


@pytest.mark.parametrize("host, pid, heartbeat_age, taken_over", [
    ("self", "dead", 50, True),  # same host, process gone
    ("self", "self", 50, False),  # same host, alive
    ("other-host", 1, 50, False),  # another host, recent heartbeat
    ("other-host", 1, workdir_lock.STALE_AFTER_S + 10, True),  # another host, heartbeat too old
])
def test_bucket_lock_staleness(bucket, capsys, host, pid, heartbeat_age, taken_over):
  workdir = bucket  # the lock for buckets (no flock there)
  record = write_lock(workdir, host=socket.gethostname() if host == "self" else host,
                      pid={"dead": dead_pid(), "self": os.getpid()}.get(pid, pid),
                      heartbeat=time.time() - heartbeat_age)
  if not taken_over:
    with pytest.raises(workdir_lock.WorkdirLocked, match=f"process {record['pid']} on host {record['host']}"):
      with workdir_lock.hold(workdir):
        pass
    assert read_lock(workdir)["token"] == "old"  # left to its holder
    return
  with workdir_lock.hold(workdir):
    assert read_lock(workdir)["pid"] == os.getpid()
  assert "taken over" in capsys.readouterr().out and not files.exists(f"{workdir}/run.lock")


def test_bucket_lock_of_two_runs_starting_together_goes_to_one(bucket, monkeypatch):
  # Both found no lock and wrote theirs; the one whose write landed last keeps it, the other is refused.
  workdir = bucket
  first, second = workdir_lock._ObjectLock(workdir), workdir_lock._ObjectLock(workdir)
  write = second._write

  def overtaken():  # the second run writes right after the first
    write_lock(workdir, pid=12345, token="second", host="other-host", heartbeat=time.time())

  first_write = first._write
  monkeypatch.setattr(first, "_write", lambda: (first_write(), overtaken()))
  with pytest.raises(workdir_lock.WorkdirLocked, match="process 12345 on host other-host"):
    first.acquire()
  assert read_lock(workdir)["token"] == "second" and write


def test_moving_a_directory_in_a_bucket(bucket):
  src, dst = f"{bucket}/7", f"{bucket}/7.corrupt-x"
  files.makedirs(f"{src}/default/d")
  files.write_json(f"{src}/default/d/a.json", {"a": 1})
  files.write_json(f"{src}/top.json", {"b": 2})
  files.move(src, dst)
  # (ram:// finds a folder by prefix, so `src` itself still "exists" beside 7.corrupt-x: ask for its files)
  assert not files.exists(f"{src}/top.json") and not files.exists(f"{src}/default/d/a.json")
  assert files.read_json(f"{dst}/default/d/a.json") == {"a": 1}
  assert files.read_json(f"{dst}/top.json") == {"b": 2}


# --------------------------------------------------------------------------- 2. damaged checkpoints
def damage(step_dir) -> None:
  """Overwrite the middle of the largest array data file, as a bad disk or a partial copy does."""
  data = [os.path.join(root, name) for root, _, names in os.walk(step_dir) for name in names]
  path = max(data, key=os.path.getsize)
  blob = bytearray(open(path, "rb").read())
  blob[len(blob) // 4: len(blob) // 2] = b"\x55" * (len(blob) // 2 - len(blob) // 4)
  open(path, "wb").write(bytes(blob))


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_resumed(tmp_path, data_dir, capsys):
  train.run(tiny(data_dir), str(tmp_path))
  damage(tmp_path / "checkpoints" / "4")
  capsys.readouterr()
  train.run(tiny(data_dir, steps=6), str(tmp_path))
  out = capsys.readouterr().out
  assert steps_trained(out) == [3, 4, 5, 6]  # resumed from step 2
  aside = [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith("4.corrupt-")]
  assert len(aside) == 1 and f"checkpoints/4 cannot be read (" in out and aside[0] in out
  assert "Traceback" not in out and len(out) < 5000


@pytest.mark.slow
def test_no_readable_checkpoint_stops_with_one_paragraph(tmp_path, data_dir):
  train.run(tiny(data_dir, steps=2), str(tmp_path))
  damage(tmp_path / "checkpoints" / "2")
  with pytest.raises(checkpoint_guard.WorkdirCheckpointError, match="no checkpoint in .* can be read") as e:
    train.run(tiny(data_dir, steps=4), str(tmp_path))
  assert "\n" not in str(e.value) and "2.corrupt-" in str(e.value)
  assert [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith("2.corrupt-")]  # kept


@pytest.mark.slow
def test_damaged_final_parameters_are_set_aside_and_written_again(tmp_path, data_dir, capsys):
  train.run(tiny(data_dir, steps=2), str(tmp_path))
  damage(tmp_path / "final" / "params")
  train.run(tiny(data_dir, steps=2), str(tmp_path))
  assert "final parameters" in capsys.readouterr().out
  assert [n for n in os.listdir(tmp_path) if n.startswith("final.corrupt-")]
  assert checkpoint_guard.final_readable(str(tmp_path / "final"))


# ----------------------------------------------------------------------------- 3. a changed config
def test_a_rerun_with_another_model_is_refused_listing_the_fields(tmp_path, data_dir):
  train.run(tiny(data_dir, steps=2), str(tmp_path))
  with pytest.raises(config_checks.ConfigError) as e:
    train.run(tiny(data_dir, steps=2, **{"model.variant": "ViT-T/16", "optimizer.lr": 3e-4}), str(tmp_path))
  message = str(e.value)
  assert 'model.variant: "ViT-T/8" before, "ViT-T/16" now' in message and "optimizer.lr" in message
  assert "steps" not in message.split("(")[1].split(")")[0]  # a safe change is not listed
  assert "\n" not in message and len(message) < 1000


@pytest.mark.slow
def test_a_checkpoint_of_another_model_without_config_json_is_refused_briefly(tmp_path, data_dir):
  # A workdir made before config.json existed: orbax's own message for this is megabytes of arrays.
  train.run(tiny(data_dir), str(tmp_path))
  os.remove(tmp_path / "config.json")
  with pytest.raises(checkpoint_guard.WorkdirCheckpointError, match="does not fit the model") as e:
    train.run(tiny(data_dir, steps=6, **{"model.overrides": {"context_length": 16, "vision_layers": 1}}),
              str(tmp_path))
  assert "\n" not in str(e.value) and len(str(e.value)) < 1500
  assert sorted(n for n in os.listdir(tmp_path / "checkpoints")) == ["2", "4"]  # not mistaken for damage


@pytest.mark.slow
def test_safe_changes_on_resume_are_allowed_and_recorded(tmp_path, data_dir):
  train.run(tiny(data_dir, steps=2), str(tmp_path))
  first = json.loads((tmp_path / "config.json").read_text())
  assert first["config"]["model"]["variant"] == "ViT-T/8" and first["resumed"] == []
  # A workdir of an older version, which had no `grad_accum_steps` option: the field is new, not a change.
  del first["config"]["grad_accum_steps"]
  (tmp_path / "config.json").write_text(json.dumps(first))
  train.run(tiny(data_dir, steps=4, log_every=2, **{"eval.batch_size": 64}), str(tmp_path))
  record = json.loads((tmp_path / "config.json").read_text())
  assert record["config"] == first["config"]  # the first start's settings stay
  assert record["resumed"][0]["step"] == 2
  assert record["resumed"][0]["changed"] == {"steps": [2, 4], "log_every": [1, 2], "eval.batch_size": [256, 64],
                                             "grad_accum_steps": [None, 1]}


# ------------------------------------------------------------------------------------------ 4. Ctrl-C
def tiny_flags(data_dir, steps):
  """tiny()'s settings as command-line overrides of configs/ft.py:demo."""
  return [f"--config.data.data_dir={data_dir}", "--config.data.dataset=domain_shapes/small",
          "--config.model.init=random", "--config.model.variant=ViT-T/8",
          f"--config.steps={steps}", "--config.batch_size=16", "--config.log_every=1", "--config.checkpoint_every=0",
          "--config.optimizer.warmup_steps=1", "--config.eval.suite=", "--config.eval.at_start=False"]


@pytest.mark.slow
def test_ctrl_c_finishes_the_step_saves_and_exits_with_the_preemption_status(tmp_path, data_dir):
  proc = subprocess.Popen([sys.executable, "main.py", "--config=configs/ft.py:demo", f"--workdir={tmp_path}",
                           *tiny_flags(data_dir, 400)], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=os.environ.copy())
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith("step "):
      proc.send_signal(signal.SIGINT)
      break
  out = "".join(out) + proc.communicate(timeout=120)[0]
  assert proc.returncode == train.PREEMPTED_EXIT_CODE, out
  stopped = int(out.split("Preempted (SIGINT) at step ")[1].split("/")[0])
  assert os.listdir(tmp_path / "checkpoints") == [str(stopped)] and "Traceback" not in out
  assert not (tmp_path / "run.lock").exists()
  # The first start's resolved config is kept with the command line that gave it.
  record = json.loads((tmp_path / "config.json").read_text())
  assert "--config.steps=400" in record["overrides"] and record["config"]["steps"] == 400


SIGNALS = """
import time
from flyp_jax import train
preemption = train._TermSignal()
print("ready", flush=True)
while not preemption.received:
  time.sleep(0.01)
print("noted", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_at_once():
  proc = subprocess.Popen([sys.executable, "-c", SIGNALS], cwd=ROOT, text=True, stdout=subprocess.PIPE)
  assert proc.stdout.readline().strip() == "ready"
  proc.send_signal(signal.SIGINT)
  assert "noted" in "".join(proc.stdout.readline() for _ in range(3))  # the first one is only noted
  start = time.time()
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=30) == -signal.SIGINT and time.time() - start < 10


# ----------------------------------------------------------------------------- 5. impossible settings
@pytest.mark.parametrize("key, value", [("steps", 0), ("batch_size", 0), ("optimizer.lr", float("nan")),
                                        ("optimizer.lr", -1e-4), ("optimizer.warmup_steps", -1),
                                        ("eval.batch_size", 0), ("log_every", 0), ("optimizer.b2", 1.0), ("seeds", 0),
                                        ("model.remat_policy", "dots")])
def test_impossible_settings_are_refused_before_any_work(tmp_path, data_dir, key, value):
  with pytest.raises(config_checks.ConfigError, match=f"config.{key} is {value!r} but must be") as e:
    train.dispatch(tiny(data_dir, **{key: value}), str(tmp_path / "workdir"))
  assert "\n" not in str(e.value) and f"--config.{key}=" in str(e.value)
  assert not (tmp_path / "workdir").exists()


def test_a_remat_policy_without_remat_is_refused(data_dir):
  with pytest.raises(config_checks.ConfigError, match="remat_policy is 'dots_saveable' but config.model.remat is off"):
    config_checks.validate(tiny(data_dir, **{"model.remat_policy": "dots_saveable"}))


def test_a_warmup_longer_than_the_run_is_shortened_with_a_warning(data_dir, capsys):
  config_checks.validate(tiny(data_dir, **{"optimizer.warmup_steps": 500}))
  assert "warmup_steps=500 is not below steps=4" in capsys.readouterr().out
  # A one-step trial too (optax's cosine needs a decay step, so that step takes the peak rate).
  config = tiny(data_dir, steps=1)
  config_checks.validate(config)
  params = {"head": {"kernel": jnp.ones(3)}}
  tx = optim.make_optimizer(config, params, 1)
  updates, _ = tx.update({"head": {"kernel": jnp.ones(3)}}, tx.init(params), params)
  assert np.all(np.asarray(updates["head"]["kernel"]) < 0)


@pytest.mark.slow
def test_impossible_settings_on_the_command_line_exit_2_without_traceback(tmp_path):
  code, out = main_py(tmp_path, "--config.steps=0", "--config.optimizer.lr=nan")
  assert code == 2 and "Traceback" not in out, out
  assert "error: config.steps is 0" in out and "config.optimizer.lr is nan" in out


# ------------------------------------------------------------------------------------------ disk full
def test_a_failed_save_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path, data_dir, monkeypatch):
  from orbax.checkpoint._src.serialization import serialization
  write = serialization.async_serialize_from_host

  async def full_disk(rslices, tspec, *args, **kwargs):  # the array writer, failing inside step 4's folder
    if "4.orbax-checkpoint-tmp" in json.dumps(tspec, default=str):
      raise OSError(errno.ENOSPC, "No space left on device")
    return await write(rslices, tspec, *args, **kwargs)

  monkeypatch.setattr(serialization, "async_serialize_from_host", full_disk)
  with pytest.raises(checkpoint_guard.WorkdirCheckpointError) as e:
    train.run(tiny(data_dir, steps=6), str(tmp_path))
  message = str(e.value)
  assert "saving step 4" in message and "No space left on device" in message and "newest: step 2" in message
  assert "\n" not in message
  monkeypatch.setattr(serialization, "async_serialize_from_host", write)  # room again: the run resumes at step 2
  manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
  assert manager.latest_step() == 2
  restored = manager.restore(2)
  assert int(restored["step"]) == 2 and np.isfinite(restored["params"]["head"]["kernel"]).all()
