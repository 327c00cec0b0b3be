"""WiSE-FT: interpolate zero-shot and fine-tuned weights over a grid of alphas, evaluate, pick on ID.

  python main.py --config=configs/wiseft.py             # demo: the pretrained tiny CLIP and configs/ft.py:demo
  python main.py --config=configs/wiseft.py:flyp        # the same curve for the FLYP run
  python main.py --config=configs/wiseft.py:ft_imagenet_b16 --config.data.data_dir=...   # WiSE-FT's ImageNet curve

Presets `<source>_<suite>`: source ft (WiSE-FT's end-to-end fine-tuning, image tower and head interpolated as
src/wise_ft.py `_merge` does) or flyp (both towers interpolated, the model scored zero-shot with its own text
tower); suite demo, imagenet_b16, iwildcam_b16 or fmow_b16. The fine-tuned run is configs/<source>.py:<suite>
in <source>_<suite> beside this run's workdir, made first if unfinished. Alphas 0, 0.1, ..., 1 (WiSE-FT's README command).
Writes wiseft.json, wiseft.md (table) and wiseft.png (ID vs average OOD accuracy, one point per alpha).
"""

from configs import common

from flyp_jax import errors

SUITES = ("demo", "imagenet_b16", "iwildcam_b16", "fmow_b16")
PRESETS = ("demo", "flyp") + tuple(f"{s}_{x}" for s in ("ft", "flyp") for x in SUITES if x != "demo")  # first: default


def get_config(arg: str = "demo"):
  aliases = {"demo": "ft_demo", "flyp": "flyp_demo"}
  preset = aliases.get(arg, arg)
  source, _, suite = preset.partition("_")
  if source not in ("ft", "flyp") or suite not in SUITES:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  c = common.base(f"wiseft_{arg}")
  c.method = "wiseft"
  if suite == "demo":
    common.demo(c)
  elif suite == "imagenet_b16":
    common.imagenet_b16(c, lr=0.0)
  else:
    common.wilds_b16(c, suite.split("_")[0], lr=0.0)
  c.wiseft = common.ml_collections.ConfigDict(dict(
      # the fine-tuned run: beside this run's workdir (flyp_jax/run_paths.py), made with finetuned_config if unfinished
      finetuned=f"{source}_{suite}", finetuned_config=f"configs/{source}.py:{suite}",
      alphas=[i / 10 for i in range(11)]))
  return c
