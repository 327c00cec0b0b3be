"""Linear probe: logistic regression on frozen image features, l2 picked on held-out ID data.

  python main.py --config=configs/lp.py                 # demo: offline benchmark on CPU
  python main.py --config=configs/lp.py:imagenet_b16 --config.model.path=ViT-B-16.pt --config.data.data_dir=...

demo: L2-normalised features (`lp.features='normalized'`, the head FT and WiSE-FT use), l2 in 1e-6 ... 1e2.
demo_reference: the demo with LP-FT's probe below (configs/lpft.py:demo_reference fine-tunes from it).
imagenet_b16 / iwildcam_b16 / fmow_b16: LP-FT's probe (AnanyaKumar/transfer_learning
unlabeled_extrapolation/log_reg_sk.py, with scripts/run_adaptation_experiments.py's num_reg_values=50): raw
`encode_image` features standardised by one scalar mean and std of the training matrix (`lp.features='raw'`),
C in logspace(-7, 2, 50) swept in ascending order, each fit warm-started from the previous one with at most 200
L-BFGS iterations (`LogisticRegression(warm_start=True, max_iter=200)`), picked on held-out ID data, the head
mapped back to raw features with zero rows for classes absent from training. configs/lpft.py's presets of the same
name fine-tune from it on raw features.
"""

import numpy as np

from configs import common
from flyp_jax import errors
from flyp_jax.data import suites


PRESETS = ("demo", "demo_reference", "imagenet_b16", "iwildcam_b16", "fmow_b16")  # the first is the default
# log_reg_sk.py: normalize_features (one scalar mean and std), LogisticRegression(warm_start=True, max_iter=200)
REFERENCE_PROBE = dict(features="raw", warm_start=True, max_iter=200)


def get_config(arg: str = "demo"):
  c = common.base(f"lp_{arg}")
  c.method = "lp"
  # C_grid (scikit-learn's C, l2 = 1 / (C * N_train)) replaces l2_grid when not empty. features: 'normalized' or
  # 'raw' (flyp_jax/commands/lp.py); warm_start: each fit of the sweep starts from the previous one's solution;
  # max_iter: L-BFGS iterations per fit at most.
  c.lp = common.ml_collections.ConfigDict(dict(val_split="validation", l2_grid=[10.0 ** e for e in range(-6, 3)],
                                               C_grid=[], features="normalized", warm_start=False, max_iter=1000))
  reference_grid = [float(v) for v in np.logspace(-7, 2, 50)]
  if arg in ("demo", "demo_reference"):
    common.demo(c)
    if arg == "demo_reference":
      c.lp.update(C_grid=reference_grid, **REFERENCE_PROBE)
  elif arg == "imagenet_b16":
    # ImageNet has no held-out training split in TFDS: the suite's ID validation set, 2% held out of train.
    c.model.update(path="ViT-B-16.pt", dtype="float32")
    c.data.train_split = suites.IMAGENET_TRAIN_SPLIT
    c.lp.val_split = suites.IMAGENET_VAL_SPLIT
    c.lp.update(C_grid=reference_grid, **REFERENCE_PROBE)
  elif arg in ("iwildcam_b16", "fmow_b16"):
    common.wilds_b16(c, arg.split("_")[0], lr=0.0)
    c.lp.val_split = "id_val"  # WILDS' held-out ID split
    c.lp.update(C_grid=reference_grid, **REFERENCE_PROBE)
  else:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return c
