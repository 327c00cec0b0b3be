"""WiSE-FT: interpolate zero-shot and fine-tuned weights over a grid of alphas, evaluate, pick on ID.

  python main.py --config=configs/wiseft.py             # demo: the pretrained tiny CLIP and configs/ft.py:demo
  python main.py --config=configs/wiseft.py:flyp        # the same curve for the FLYP run
  python main.py --config=configs/wiseft.py:ft_imagenet_b16 --config.data.data_dir=...   # WiSE-FT's ImageNet curve

Presets `<source>_<suite>`: source ft or lpft (end-to-end fine-tuning, from the zero-shot or a linear probe's head:
image tower and head interpolated as src/wise_ft.py `_merge` does, the zero-shot side with the zero-shot head), flyp
or ce_ablation (FLYP and its cross-entropy ablation: both towers interpolated, the model scored zero-shot with its
own text tower); suite demo, imagenet_b16, iwildcam_b16 or fmow_b16 (ce_ablation: demo and imagenet_b16; lpft: demo,
as LP-FT's reproduction presets put their head on raw features, which WiSE-FT refuses to average). The FLYP
paper weight-ensembles every baseline this way. The fine-tuned run is configs/<source>.py:<suite> in
<source>_<suite> beside this run's workdir, made first if unfinished (LP-FT's linear probe, lp_<suite>, is run
first by hand, as configs/lpft.py says). Alphas 0, 0.1, ..., 1 (WiSE-FT's README command).
Writes wiseft.json, wiseft.md (table) and wiseft.png (ID vs average OOD accuracy, one point per alpha).
"""

from configs import common

from flyp_jax import errors

SUITES = ("demo", "imagenet_b16", "iwildcam_b16", "fmow_b16")
# The suites of each fine-tuning method's presets (configs/<source>.py).
# LP-FT's reproduction presets fine-tune a head on raw features, which WiSE-FT cannot average with the zero-shot
# head (flyp_jax/commands/wiseft.py refuses it): its demo only, whose head reads normalised features.
SOURCES = {"ft": SUITES, "flyp": SUITES, "lpft": ("demo",), "ce_ablation": ("demo", "imagenet_b16")}
# first: the default; a source's name alone is its demo
PRESETS = ("demo", "flyp", "lpft", "ce_ablation") + tuple(f"{s}_{x}" for s in SOURCES for x in SOURCES[s] if x != "demo")


def get_config(arg: str = "demo"):
  preset = "ft_demo" if arg == "demo" else f"{arg}_demo" if arg in SOURCES else arg
  source = next((s for s in SOURCES if preset.startswith(s + "_")), "")
  suite = preset[len(source) + 1:]
  if suite not in SOURCES.get(source, ()):
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
