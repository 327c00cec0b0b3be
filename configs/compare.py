"""Zero-shot, LP, FT, LP-FT, FLYP and WiSE-FT on the offline benchmark: one table and one plot.

  python main.py --config=configs/compare.py

Runs (or reuses, when finished) configs/{lp,ft,lpft,flyp,wiseft}.py:demo in workdirs/<name>, and writes
workdirs/compare_demo/comparison.md and comparison.png (the README's table and plot).
"""

from configs import common


PRESETS = ("demo",)  # the first is the default


def get_config(arg: str = "demo"):
  if arg != "demo":
    raise ValueError(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  c = common.demo(common.base(f"compare_{arg}"))
  c.method = "compare"
  c.compare = common.ml_collections.ConfigDict(dict(
      methods={"LP": "configs/lp.py:demo", "FT": "configs/ft.py:demo", "LP-FT": "configs/lpft.py:demo",
               "FLYP": "configs/flyp.py:demo"},
      wiseft="configs/wiseft.py:demo"))
  return c
