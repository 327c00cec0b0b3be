"""Train and evaluate a method: python main.py --config=configs/flyp.py[:preset] [--workdir=DIR] [--config.x=y]."""

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "method config file, optionally :preset", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (default: workdirs/<config.name>)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from flyp_jax import train
  train.main(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  from flyp_jax import configs_lib
  problem = configs_lib.unknown_override(sys.argv[1:])  # ml_collections' own message names neither key nor fix
  if problem:
    sys.exit(f"error: {problem}")
  app.run(main)
