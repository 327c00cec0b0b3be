"""LP-FT: a linear probe first (configs/lp.py, in lp.lp_workdir), then full fine-tuning from its head.

  python main.py --config=configs/lp.py --workdir=workdirs/lp_demo      # 1. the probe
  python main.py --config=configs/lpft.py                                # 2. fine-tune from it
"""

from configs import ft

PRESETS = ft.PRESETS  # the first is the default


def get_config(arg: str = "demo"):
  c = ft.get_config(arg)
  c.name = f"lpft_{arg}"
  c.ft.head_init = "lp"
  c.ft.lp_workdir = f"workdirs/lp_{arg}"
  if arg == "demo":
    c.optimizer.lr = 3e-5  # LP-FT fine-tunes gently from a good head (Kumar et al., 2022)
  return c
