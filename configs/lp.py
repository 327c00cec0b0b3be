"""Linear probe: logistic regression on frozen image features, l2 picked on held-out ID data.

  python main.py --config=configs/lp.py                 # demo: offline benchmark on CPU
  python main.py --config=configs/lp.py:imagenet_b16 --config.model.path=ViT-B-16.pt --config.data.data_dir=...

imagenet_b16 / iwildcam_b16 / fmow_b16: LP-FT's sweep (AnanyaKumar/transfer_learning,
unlabeled_extrapolation/log_reg_sk.py with scripts/run_adaptation_experiments.py's num_reg_values=50):
C in logspace(-7, 2, 50), picked on held-out ID data, float32 features. Features stay L2-normalised, because
this project's heads (FT, LP-FT, WiSE-FT) act on normalised features; LP-FT's code instead standardises raw
features by one scalar mean and std, so the same C is not the same regularisation there and here.
"""

import numpy as np

from configs import common
from flyp_jax import errors
from flyp_jax.data import suites


PRESETS = ("demo", "imagenet_b16", "iwildcam_b16", "fmow_b16")  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"lp_{arg}")
  c.method = "lp"
  # C_grid (scikit-learn's C, l2 = 1 / (C * N_train)) replaces l2_grid when not empty.
  c.lp = common.ml_collections.ConfigDict(dict(val_split="validation", l2_grid=[10.0 ** e for e in range(-6, 3)],
                                               C_grid=[]))
  reference_grid = [float(v) for v in np.logspace(-7, 2, 50)]
  if arg == "demo":
    common.demo(c)
  elif arg == "imagenet_b16":
    # ImageNet has no held-out training split in TFDS: the suite's ID validation set, 2% held out of train.
    c.model.update(path="ViT-B-16.pt", dtype="float32")
    c.data.train_split = suites.IMAGENET_TRAIN_SPLIT
    c.lp.val_split = suites.IMAGENET_VAL_SPLIT
    c.lp.C_grid = reference_grid
  elif arg in ("iwildcam_b16", "fmow_b16"):
    common.wilds_b16(c, arg.split("_")[0], lr=0.0)
    c.lp.val_split = "id_val"  # WILDS' held-out ID split
    c.lp.C_grid = reference_grid
  else:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return c
