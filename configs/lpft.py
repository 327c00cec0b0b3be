"""LP-FT: a linear probe first (configs/lp.py, found in ft.lp_workdir), then full fine-tuning from its head.

  python main.py --config=configs/lp.py                                  # 1. the probe, in workdirs/lp_demo
  python main.py --config=configs/lpft.py                                # 2. fine-tune from it

ft.lp_workdir (lp_<preset>) is relative to the parent of this run's workdir, like every path to another run:
with a custom --workdir, run the probe beside it (or give an absolute --config.ft.lp_workdir).
"""

from configs import ft

PRESETS = ft.PRESETS  # the first is the default


def get_config(arg: str = "demo"):
  c = ft.get_config(arg)
  c.name = f"lpft_{arg}"
  c.ft.head_init = "lp"
  c.ft.lp_workdir = f"lp_{arg}"  # beside this run's workdir: the default workdir of configs/lp.py:<arg>
  if arg == "demo":
    c.optimizer.lr = 3e-5  # LP-FT fine-tunes gently from a good head (Kumar et al., 2022)
  return c
