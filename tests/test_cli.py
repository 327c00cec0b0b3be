"""The command line as a user meets it: quiet output, errors as one paragraph with exit status 2, --help.

Each test runs `main.py` in a child process, as a user would. The demo's evaluation suite is pointed at the
small domain_shapes variant (`domain_shapes/small`) by a few lines that run before main.py in the child.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import xla_flags


ROOT = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")  # absl's log prefix, e.g. 'I1125 18:01:12.135657'

SMALL_SUITE = """
import dataclasses, runpy, sys
from flyp_jax.data import suites
suites.SUITES["domain_shapes"] = tuple(dataclasses.replace(d, tfds_name="domain_shapes/small")
                                       for d in suites.SUITES["domain_shapes"])
suites.VALIDATION["domain_shapes"] = dataclasses.replace(suites.VALIDATION["domain_shapes"],
                                                         tfds_name="domain_shapes/small")
sys.argv = ["main.py", *sys.argv[1:]]
runpy.run_path("main.py", run_name="__main__")
"""


RUN_MAIN = 'import runpy, sys; sys.argv[0] = "main.py"; runpy.run_path("main.py", run_name="__main__")\n'


def child_env(**extra):
  """The environment of a child run from this checkout: one CPU device, as a user's CPU run (compiled as every
  test is: conftest.py)."""
  return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
          "XLA_FLAGS": xla_flags(), **extra}


def main_py(*args, small_suite=False, timeout=300):
  """(exit status, stdout, stderr) of `python main.py args` in this checkout."""
  command = [sys.executable, "-c", SMALL_SUITE] if small_suite else [sys.executable, "main.py"]
  proc = subprocess.run(command + list(args), capture_output=True, text=True, cwd=ROOT, env=child_env(),
                        timeout=timeout)
  return proc.returncode, proc.stdout, proc.stderr


def demo_args(data_dir, workdir, *more):
  # Fields after the preset (big_vision's form) and --config.KEY flags: both set the config.
  return ("--config=configs/flyp.py:demo,steps=4,log_every=1", f"--workdir={workdir}", "--config.batch_size=32",
          "--config.data.dataset=domain_shapes/small", f"--config.data.data_dir={data_dir}",
          "--config.eval.batch_size=64", *more)


@pytest.mark.slow
def test_the_demo_prints_progress_evaluations_and_the_table_only(data_dir, tmp_path):
  code, out, err = main_py(*demo_args(data_dir, tmp_path / "run"), small_suite=True)
  assert code == 0, err
  lines = (out + err).splitlines()
  assert not [l for l in lines if LOG_LINE.match(l)], "library log lines in the default output"
  for step in range(1, 5):  # each progress line once, not through both logging and print
    assert sum(l.startswith(f"step {step}/4:") for l in lines) == 1, f"step {step}"
  assert sum(l.startswith("evaluation (") for l in lines) == 2 and "| top-1 (%) |" in out
  # The 200-step demo adds 4 progress lines (log_every 25) and the evaluation at step 100 (2 lines) to these.
  assert len(lines) <= 45, "\n".join(lines)


@pytest.mark.parametrize("args,fragments", [
    ((), ["--config is required", "configs/flyp.py", "--help"]),
    (("--config=configs/flyp.py:bogus",), ["no preset 'bogus'", "imagenet_b16", "--help"]),
    (("--config=configs/flypp.py",), ["config file 'configs/flypp.py' not found", "configs/flyp.py"]),
    # a space instead of '=': absl accepts it; the unknown-key check must see the file too
    (("--config", "configs/flyp.py", "--config.data.bogus=1"), ["unknown config key 'config.data.bogus'"]),
    (("--config=configs/flyp.py:demo,data.bogus=1",), ["unknown config key 'config.data.bogus'"]),
    (("--config=configs/flyp.py:demo,steps",), ["config field 'steps'", "has no value", "KEY=VALUE"]),
])
def test_config_errors_are_one_paragraph_without_traceback(args, fragments):
  code, out, err = main_py(*args)
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
  assert "Traceback" not in err and all(f in err for f in fragments), err


@pytest.mark.slow
@pytest.mark.parametrize("case", ["checkpoint", "dataset", "lpft_before_lp"])
def test_run_errors_are_one_paragraph_without_traceback_unless_verbose(case, data_dir, tmp_path):
  args, fragments = {
      "checkpoint": (("--config=configs/flyp.py", f"--config.model.path={tmp_path}/ViT-B-16.pt"),
                     ["ViT-B-16.pt' not found", "openai:ViT-B/16"]),
      "dataset": (("--config=configs/lp.py", "--config.data.dataset=imagenet2012",
                   f"--config.data.data_dir={tmp_path}"),
                  ["'imagenet2012'", "not available", "download_and_prepare"]),
      # with one of JAX's own flags, which main.py accepts through absl
      "lpft_before_lp": (("--config=configs/lpft.py", "--jax_debug_nans", f"--config.data.data_dir={data_dir}",
                          "--config.data.dataset=domain_shapes/small", "--config.eval.suite="),
                         ["LP-FT needs a linear probe first", "configs/lp.py",
                          f"{tmp_path}/lp_demo/lp_head.npz"]),  # beside the workdir, tmp_path/run
  }[case]
  args = (*args, f"--workdir={tmp_path}/run")
  if case == "dataset":  # -v: the libraries' logs come back, the error stays one paragraph
    code, out, err = main_py(*args, "-v")
    assert any(LOG_LINE.match(l) for l in err.splitlines()), err
    err = err.splitlines()[-1] + "\n"
  else:
    code, out, err = main_py(*args)
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
  assert "Traceback" not in err and all(f in err for f in fragments), err
  if case == "checkpoint":  # --verbose: the traceback too
    code, out, err = main_py(*args, "--verbose")
    assert code != 0 and "Traceback" in err and "flyp_jax.errors.NotFound" in err  # a FileNotFoundError


def test_help_lists_methods_and_presets():
  code, out, err = main_py("--help")
  assert code == 0
  for name in ("flyp", "ft", "ce_ablation", "lp", "lpft", "wiseft", "soup", "compare", "pretrain", "attention_transfer"):
    assert f"configs/{name}.py: " in out, name
  assert "presets: demo, imagenet_b16, iwildcam_b16, fmow_b16" in out and "presets: demo, flyp" in out
  assert "--verbose" in out
  code, out, err = main_py("--helpfull")
  assert code == 0 and "--[no]jax_debug_nans" in out  # JAX's own options are flags of main.py


def test_native_log_lines_below_tensorflows_level_are_dropped_and_every_other_line_kept():
  from flyp_jax import native_logs
  text = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
          b"I0000 00:00:1796191495.258488    3248 port.cc:153] oneDNN custom operations are on.\n"
          b"W1202 06:01:02.000001   12 cpu_client.cc:7] a warning\n"
          b"E1202 06:01:02.000002   12 x.cc:9] an error\n"
          b"Traceback (most recent call last):\n"
          b"I0000 is not a log line\n")
  lines = text.splitlines(keepends=True)
  assert native_logs.kept(text, 0) == text  # TF_CPP_MIN_LOG_LEVEL unset or 0: TensorFlow's own default
  assert native_logs.kept(text, 2) == b"".join(lines[3:])
  assert native_logs.kept(text, 1) == b"".join(lines[2:])
  assert native_logs.kept(text, 3) == b"".join(lines[4:])


# Run before main.py in the child: every write to sys.stdout / sys.stderr is attributed to the first frame outside
# the stream, logging and warnings machinery; the text written from this checkout's code (main.py, flyp_jax/) is
# saved at exit. A line of the child's real output that is not among those came from a library or from native code
# writing to the file descriptors directly (TensorFlow's C++ logs).
RECORD_WRITES = """
import atexit, json, os, sys
_root, _record = os.getcwd(), os.environ.pop("FLYP_TEST_RECORD_WRITES")
_machinery = ("/logging/", "/warnings.py", "/absl/logging/", "<frozen")
_project = {"out": [], "err": []}

class _Recording:
  def __init__(self, stream, name):
    self._stream, self._name = stream, name
  def write(self, text):
    frame = sys._getframe(1)
    while frame is not None and any(m in frame.f_code.co_filename for m in _machinery):
      frame = frame.f_back
    path = os.path.abspath(frame.f_code.co_filename) if frame is not None else ""
    if path == os.path.join(_root, "main.py") or path.startswith(os.path.join(_root, "flyp_jax") + os.sep):
      _project[self._name].append(text)
    return self._stream.write(text)
  def __getattr__(self, name):
    return getattr(self._stream, name)

sys.stdout, sys.stderr = _Recording(sys.stdout, "out"), _Recording(sys.stderr, "err")
atexit.register(lambda: json.dump({k: "".join(v) for k, v in _project.items()}, open(_record, "w")))
"""


def foreign_lines(proc, record) -> list[str]:
  """The lines of a RECORD_WRITES child's stdout and stderr that its project code did not write."""
  project = json.loads(record.read_text())
  return [f"std{name}: {line}" for name, real in (("out", proc.stdout), ("err", proc.stderr))
          for line in real.splitlines() if line not in set(project[name].splitlines())]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["main_job", "checkpoint", "lpft_before_lp"])
def test_every_output_line_is_printed_by_the_project(case, data_dir, tmp_path):
  """The main job and two error paths: no line from a library or native code (absl's notice, TensorFlow's
  oneDNN line, a TFDS download message) reaches the default output, whatever the installed versions print."""
  args = {"main_job": demo_args(data_dir, tmp_path / "run"),
          "checkpoint": ("--config=configs/flyp.py", f"--config.model.path={tmp_path}/ViT-B-16.pt",
                         f"--workdir={tmp_path}/run"),
          "lpft_before_lp": ("--config=configs/lpft.py", f"--config.data.data_dir={data_dir}",
                             "--config.data.dataset=domain_shapes/small", "--config.eval.suite=",
                             f"--workdir={tmp_path}/run")}[case]
  record = tmp_path / "writes.json"
  # main.py as a user's shell starts it (main.py sets TF_CPP_MIN_LOG_LEVEL before it imports the package); the
  # small-suite patch imports the package first, so for the main job the level is set as main.py would set it.
  run_main = SMALL_SUITE if case == "main_job" else RUN_MAIN
  command = [sys.executable, "-c", RECORD_WRITES + run_main, *args]
  env = child_env(FLYP_TEST_RECORD_WRITES=str(record))
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  if case == "main_job":
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert proc.returncode == (0 if case == "main_job" else 2), proc.stderr
  foreign = foreign_lines(proc, record)
  assert not foreign, "lines the project did not print:\n" + "\n".join(foreign)
  assert proc.stdout.strip() if case == "main_job" else proc.stderr.startswith("error: ")  # the recorder saw them


@pytest.mark.slow
def test_a_bug_is_reported_as_internal_with_its_traceback_not_as_a_user_error(tmp_path):
  """A ValueError raised by a library (here: made to come from inside the training loop) is not the user's
  mistake: one line saying it is internal and where to report it, then the traceback, exit status 1."""
  bug = ('import flyp_jax.train as t\n'
         'def broken(*a, **k):\n'
         '  raise ValueError("a library failed")\n'
         't.main = broken\n')
  code = bug + RUN_MAIN
  proc = subprocess.run([sys.executable, "-c", code, "--config=configs/flyp.py", f"--workdir={tmp_path}/run"],
                        capture_output=True, text=True, cwd=ROOT, env=child_env(), timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.startswith("internal error") and "issue tracker" in proc.stderr.splitlines()[0]
  assert "Traceback" in proc.stderr and proc.stderr.rstrip().endswith("ValueError: a library failed")
  assert "error: a library failed" not in proc.stderr


@pytest.mark.slow
def test_a_preempted_run_exits_at_once_whatever_threads_a_library_left_running(data_dir, tmp_path):
  """After 'Preempted ... checkpoint saved' the process leaves with status 75 even while a library's non-daemon
  thread still waits (as a TFDS reader of a large split was seen to, keeping the interpreter from exiting)."""
  from flyp_jax import train
  stuck = ('import threading\n'
           'threading.Thread(target=threading.Event().wait, name="input-reader", daemon=False).start()\n')
  args = ("--config=configs/flyp.py:demo,steps=200,log_every=1", f"--workdir={tmp_path}/run",
          "--config.batch_size=32", "--config.data.dataset=domain_shapes/small", f"--config.data.data_dir={data_dir}",
          "--config.eval.at_start=False", "--config.eval.every_steps=0")
  proc = subprocess.Popen([sys.executable, "-c", stuck + SMALL_SUITE, *args], cwd=ROOT, env=child_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  for line in proc.stdout:
    if line.startswith("step 2/"):
      proc.send_signal(signal.SIGTERM)
      break
  try:
    rest, _ = proc.communicate(timeout=120)
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail("the preempted run did not exit: " + proc.communicate()[0][-2000:])
  assert proc.returncode == train.PREEMPTED_EXIT_CODE, rest
  assert "checkpoint saved" in rest and (tmp_path / "run" / "checkpoints").exists()


def mount_tmpfs(path: Path, size: str) -> Path:
  """A tmpfs of `size` at `path` (skips the test with the reason where mounting is refused)."""
  path.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                        text=True)
  if made.returncode:
    pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip() or made.returncode}): needs root")
  return path


@pytest.fixture
def small_disk(tmp_path):
  """A 12 MiB file system (tmpfs): room for one checkpoint of the demo CLIP (about 9 MiB), not two."""
  yield mount_tmpfs(tmp_path / "disk", "12m")
  subprocess.run(["umount", "-l", str(tmp_path / "disk")], check=False)


@pytest.fixture
def disk(tmp_path):
  """A 64 MiB file system (tmpfs): room for a whole demo run, until a test fills it."""
  yield mount_tmpfs(tmp_path / "disk", "64m")
  subprocess.run(["umount", "-l", str(tmp_path / "disk")], check=False)


@pytest.mark.slow
def test_a_disk_that_really_fills_is_one_paragraph_and_the_run_resumes_after_room_is_made(data_dir, tmp_path,
                                                                                         small_disk):
  """The workdir on a real small file system: the second checkpoint does not fit. The output is the progress
  lines and one paragraph (which step, where, the newest complete checkpoint, the size a checkpoint needs),
  none of orbax's, tensorstore's or asyncio's hundreds of lines; with room made the same command resumes."""
  workdir = small_disk / "run"
  args = ("--config=configs/flyp.py:demo,steps=30,log_every=10,checkpoint_every=10", f"--workdir={workdir}",
          "--config.batch_size=32", "--config.data.dataset=domain_shapes/small", f"--config.data.data_dir={data_dir}",
          "--config.eval.at_start=False", "--config.eval.every_steps=0", "--config.eval.batch_size=64")
  record = tmp_path / "writes.json"
  proc = subprocess.run([sys.executable, "-c", RECORD_WRITES + SMALL_SUITE, *args], capture_output=True, text=True,
                        cwd=ROOT, env=child_env(FLYP_TEST_RECORD_WRITES=str(record)), timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  foreign = foreign_lines(proc, record)
  assert not foreign, "\n".join(foreign[:20])
  (error,) = proc.stderr.splitlines()
  assert error.startswith("error: saving step 20 to ") and "No space left on device" in error
  assert "the newest: step 10" in error and "MiB" in error and "Traceback" not in proc.stdout + proc.stderr
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["10"]
  subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
  code, out, err = main_py(*args, small_suite=True)
  assert code == 0, err[-3000:]
  assert [l.split("/")[0] for l in out.splitlines() if l.startswith("step ")] == ["step 20", "step 30"]


FILL_DISK_AT = """
import os, time
from flyp_jax import files, metric_writer
from flyp_jax.models import converted
_at, _disk = os.environ.pop("FLYP_TEST_FILL_AT"), os.environ.pop("FLYP_TEST_DISK")

def _fill():  # every free byte of the file system taken, as another program writing there would
  time.sleep(1)  # the checkpoints saved before, asynchronously, complete first
  fd = os.open(os.path.join(_disk, "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
  for chunk in (1 << 20, 4096):
    try:
      while True:
        os.write(fd, bytes(chunk))
    except OSError:
      pass
  os.close(fd)

def _before(module, name, when):
  original = getattr(module, name)
  def filled_first(*args, **kwargs):
    if when(*args):
      _fill()
    return original(*args, **kwargs)
  setattr(module, name, filled_first)

if _at == "metrics.jsonl":  # its first line (step 10's), which needs a new block of the file system
  _before(metric_writer.MetricWriter, "write", lambda self, step, scalars: step == 10)
elif _at == "final":
  _before(converted, "save", lambda dst, *rest: os.path.basename(dst) == "final")
elif _at == "best":  # the final evaluation's save of best/ (orbax, asynchronous)
  from flyp_jax import checkpoint_guard
  _before(checkpoint_guard.Saving, "save", lambda self, *a: os.path.basename(str(self.directory)) == "best")
elif _at == "results.json":
  _before(files, "write_json", lambda path, obj: os.path.basename(path) == "results.json")
"""


@pytest.mark.slow
def test_a_disk_that_fills_while_a_run_writes_its_metrics_final_or_results_is_one_paragraph_and_loses_nothing(
    data_dir, tmp_path, disk):
  """The workdir on a real file system that fills up (another program takes every free byte) just before the
  run writes metrics.jsonl (its first line: an append within a block already held would still fit), then
  final/, then best/, then results.json: each time the output is the progress lines and one
  paragraph naming the file and the newest complete checkpoint, nothing half-written is left to be read, and
  after room is made the same command goes on from where it stopped to a finished run."""
  workdir = disk / "run"
  args = ("--config=configs/flyp.py:demo,steps=20,log_every=10,checkpoint_every=10", f"--workdir={workdir}",
          "--config.batch_size=32", "--config.data.dataset=domain_shapes/small", f"--config.data.data_dir={data_dir}",
          "--config.eval.at_start=False", "--config.eval.every_steps=0", "--config.eval.batch_size=64")
  record = tmp_path / "writes.json"
  for at, file, newest in (("metrics.jsonl", workdir / "metrics.jsonl", "none yet"),
                           ("final", workdir / "final", "step 20,"), ("best", workdir / "best", None),
                           ("results.json", workdir / "results.json", "step 20,")):
    proc = subprocess.run([sys.executable, "-c", RECORD_WRITES + FILL_DISK_AT + SMALL_SUITE, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=child_env(FLYP_TEST_RECORD_WRITES=str(record), FLYP_TEST_FILL_AT=at,
                                        FLYP_TEST_DISK=str(disk)))
    assert proc.returncode == 2, (at, proc.stderr[-3000:])
    foreign = foreign_lines(proc, record)
    assert not foreign, (at, "\n".join(foreign[:20]))
    (error,) = proc.stderr.splitlines()
    if at == "best":  # orbax saves it asynchronously: the evaluation's JSON written next may be the first to fail
      assert (error.startswith(f"error: saving step 20 to {file} failed (No space left on device") or
              error.startswith(f"error: writing {workdir / 'eval_20.json'} failed: no space left on device")), error
    else:
      assert error.startswith(f"error: writing {file}") and "no space left on device" in error, error
      assert f"the newest complete checkpoint: {newest}" in error, error
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(workdir.rglob("*.partial-*")), "a half-written file was left to be read"
    (disk / "filler").unlink()  # room made
  assert not (workdir / "results.json").exists()
  code, out, err = main_py(*args, small_suite=True)
  assert code == 0, err[-3000:]
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines if "train/loss" in l] == [10, 20]  # each logged step once, none torn
  results = json.loads((workdir / "results.json").read_text())
  assert results["selected_step"] == 20 and (workdir / "final" / "flyp_clip.json").exists()
  assert sorted(p.name for p in (workdir / "best").iterdir() if p.name.isdigit()) == ["20"]
