"""Linear probe: logistic regression on frozen image features, l2 picked on held-out ID data.

  python main.py --config=configs/lp.py                 # demo: offline benchmark on CPU
  python main.py --config=configs/lp.py:imagenet_b16 --config.model.path=ViT-B-16.pt --config.data.data_dir=...
"""

from configs import common


PRESETS = ("demo", "imagenet_b16", "iwildcam_b16", "fmow_b16")  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"lp_{arg}")
  c.method = "lp"
  c.lp = common.ml_collections.ConfigDict(dict(val_split="validation", l2_grid=[10.0 ** e for e in range(-6, 3)]))
  if arg == "demo":
    common.demo(c)
  elif arg == "imagenet_b16":
    # ImageNet has no held-out training split in TFDS: hold out 2% of train for picking l2, as WiSE-FT does.
    c.model.update(path="ViT-B-16.pt", dtype="bfloat16")
    c.data.train_split = "train[:98%]"
    c.lp.val_split = "train[98%:]"
  elif arg in ("iwildcam_b16", "fmow_b16"):
    common.wilds_b16(c, arg.split("_")[0], lr=0.0)
    c.lp.val_split = "id_val"  # WILDS' held-out ID split
  else:
    raise ValueError(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return c
