"""Wall time of the whole main job on the offline benchmark: `python main.py --config=configs/flyp.py`.

  python -m benchmarks.main_job                  # a fresh workdir: FLYP from the shipped demo CLIP + evaluation
  python -m benchmarks.main_job --dry_run        # print the command only

The job runs as a subprocess in a fresh temporary directory (so nothing is resumed), exactly as a user would
start it; the wall time covers start-up, compilation, data preparation,
training and evaluation. The job's own JSON results (printed at its end) are parsed when present, for the
accuracies and its `train_seconds`. This needs the full installation (TensorFlow Datasets); it is not part of
the smoke tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from benchmarks import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/flyp.py"


def command(workdir: str, config: str = CONFIG, overrides=()) -> list[str]:
  return [sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}", *overrides]


def _results(stdout: str) -> dict:
  """The indented JSON object main.py prints before 'results in ...' (empty if absent)."""
  match = re.search(r"^\{\n.*?^\}$", stdout, re.S | re.M)
  if not match:
    return {}
  try:
    return json.loads(match.group(0))
  except json.JSONDecodeError:
    return {}


def measure(config: str = CONFIG, overrides=(), timeout_s: float = 3600, keep: bool = False) -> dict:
  root = tempfile.mkdtemp(prefix="flyp_main_job_")
  workdir = os.path.join(root, "flyp_demo")
  cmd = command(workdir, config, overrides)
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # the job as a user runs it: one CPU device, no simulated ones
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
  wall = time.perf_counter() - start
  results = _results(proc.stdout)
  rates = [float(r) for r in re.findall(r"([\d.]+) examples/s", proc.stdout)]
  job = " ".join(["python"] + cmd[1:]).replace(root, "$TMP")
  out = {"benchmark": "main_job", "command": job, "job_command": job,
         "wall_s": wall, "returncode": proc.returncode, "results": results,
         "train_seconds": results.get("train_seconds"),
         "last_logged_examples_per_s": rates[-1] if rates else None,
         "environment": common.environment()}
  if proc.returncode:
    out["stderr_tail"] = proc.stderr[-3000:]
  if not keep:
    import shutil
    shutil.rmtree(root, ignore_errors=True)
  else:
    out["workdir"] = workdir
  return out


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default=CONFIG)
  p.add_argument("--timeout_s", type=float, default=3600)
  p.add_argument("--keep", action="store_true", help="keep the temporary workdir")
  p.add_argument("--dry_run", action="store_true", help="print the command and exit")
  p.add_argument("--json", action="store_true", help="print one JSON object on one line")
  a, overrides = p.parse_known_args(argv)
  if a.dry_run:
    result = {"benchmark": "main_job", "command": " ".join(["python"] + command("$TMP/flyp_demo", a.config, overrides)[1:])}
  else:
    result = measure(a.config, overrides, a.timeout_s, a.keep)
  common.dump(result, a.json)
  return result


if __name__ == "__main__":
  main()
