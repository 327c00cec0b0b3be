"""WiSE-FT: interpolate zero-shot and fine-tuned weights over a grid of alphas, evaluate, pick on ID.

  python main.py --config=configs/wiseft.py             # demo: the pretrained tiny CLIP and configs/ft.py:demo
  python main.py --config=configs/wiseft.py:flyp        # the same curve for the FLYP run

Writes wiseft.json, wiseft.md (table) and wiseft.png (ID vs average OOD accuracy, one point per alpha).
"""

from configs import common


PRESETS = ("demo", "flyp")  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"wiseft_{arg}")
  c.method = "wiseft"
  common.demo(c)
  if arg not in ("demo", "flyp"):
    raise ValueError(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  source = "ft" if arg == "demo" else "flyp"
  c.wiseft = common.ml_collections.ConfigDict(dict(
      # the fine-tuned run: beside this run's workdir (flyp_jax/run_paths.py), made with finetuned_config if unfinished
      finetuned=f"{source}_demo", finetuned_config=f"configs/{source}.py:demo",
      alphas=[i / 10 for i in range(11)]))
  return c
