"""Train and evaluate a method: python main.py --config=configs/flyp.py[:preset] [--workdir=DIR] [--config.x=y]."""

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
  app.run(main)
