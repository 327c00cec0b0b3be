"""Zero-shot, LP, FT, LP-FT, FLYP, its cross-entropy ablation, WiSE-FT and model soups on the offline benchmark,
several seeds: table, plot, claims.

  python main.py --config=configs/compare.py

Runs configs/{lp,ft,lpft,flyp,ce_ablation,wiseft,soup}.py:demo (and LP-FT as its reference code runs it,
configs/{lp,lpft}.py:demo_reference) under workdirs/compare_demo/runs: each method's learning rate picked from
`lr_grid` with seed 0 on ID validation, then `seeds` seeds at that rate; WiSE-FT of every seed of the methods in
`wiseft_of`; a soup of FT runs with random hyperparameters per seed of the first `soup_seeds`; effective
robustness against models trained on photos only (`baseline`). Writes comparison.md,
comparison.png and claims.md (the claims of docs/demo_claims.md, tested). See flyp_jax/commands/compare.py.
"""

from configs import common

from flyp_jax import errors


PRESETS = ("demo",)  # the first is the default


def get_config(arg: str = "demo"):
  if arg != "demo":
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  c = common.demo(common.base(f"compare_{arg}"))
  c.method = "compare"
  c.compare = common.ml_collections.ConfigDict(dict(
      methods={"LP": "configs/lp.py:demo", "FT": "configs/ft.py:demo", "LP-FT": "configs/lpft.py:demo",
               "FLYP": "configs/flyp.py:demo", "CE ablation": "configs/ce_ablation.py:demo",
               "LP (reference)": "configs/lp.py:demo_reference",
               "LP-FT (reference)": "configs/lpft.py:demo_reference"},
      # the probe each LP-FT starts from (a label of `methods`)
      probe_of={"LP-FT": "LP", "LP-FT (reference)": "LP (reference)"},
      # the same three-point grid around each preset's own rate; LP-FT starts from a trained head, so lower; the
      # reference's LP-FT (SGD) three points of its code's grid (3e-7 ... 1e-2) around its demo's rate
      lr_grid={"FT": [3e-5, 1e-4, 3e-4], "FLYP": [3e-5, 1e-4, 3e-4], "CE ablation": [3e-5, 1e-4, 3e-4],
               "LP-FT": [1e-5, 3e-5, 1e-4], "LP-FT (reference)": [3e-4, 1e-3, 3e-3]},
      seeds=5,  # enough for a 95% Student-t interval (t = 2.78 at 4 degrees of freedom)
      wiseft_of=["FT", "FLYP", "LP-FT", "CE ablation"],
      alphas=[0.0, 0.25, 0.5, 0.75, 1.0],
      # model soups: `soup` run once per seed of the first `soup_seeds` (each draws its own `soup_ingredients`
      # ingredients), its greedy soup, uniform soup and best single ingredient reported; "": none
      soup="configs/soup.py:demo", soup_seeds=3, soup_ingredients=4,
      # trained on ID data only (a ViT from scratch on photos): the effective-robustness baseline
      baseline="configs/attention_transfer.py:demo_none", baseline_steps=300))
  return c
