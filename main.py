"""Train and evaluate a method: python main.py --config=configs/flyp.py[:preset] [--workdir=DIR] [--config.x=y]."""

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "method config file, optionally :preset", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (default: workdirs/<config.name>)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "one of several processes (a TPU pod slice: one per host)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, outside Cloud TPU")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes of the job, with --coordinator_address")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's id, with --coordinator_address")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from flyp_jax import parallel, train
  parallel.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from flyp_jax import checkpoint_guard, config_checks, workdir_lock
  try:
    train.main(_CONFIG.value, _WORKDIR.value)
  except (config_checks.ConfigError, workdir_lock.WorkdirLocked, checkpoint_guard.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)  # one paragraph that says what to do: a traceback would bury it
    sys.exit(2)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  from flyp_jax import configs_lib
  problem = configs_lib.unknown_override(sys.argv[1:])  # ml_collections' own message names neither key nor fix
  if problem:
    sys.exit(f"error: {problem}")
  app.run(main)
