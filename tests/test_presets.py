"""Every preset trains with its reference's optimiser; the demos differ from the reproduction presets in scale only.

configs/common.py's defaults are FLYP's and WiSE-FT's optimiser, and tests/test_trajectory.py steps the
reproduction presets that use them against torch steps written from those repositories. Here every preset of
every config file is held to those defaults except in its scale (learning rate, warmup, weight decay, epoch
length) and in the departures listed below, each of which its preset states on a line with its reason.
"""

import pytest

from configs import common
from flyp_jax import configs_lib

SCALE = {"lr", "warmup_steps", "weight_decay", "epoch_steps"}
ANY = object()  # a field the preset sets from its own recipe (attention transfer's per-mode table)

# {method: {field: value}}: how its presets depart from configs/common.py's optimiser
DEPARTURES = {
    "ft": {"grad_clip": 1.0},  # WiSE-FT's finetune.py: clip_grad_norm_(params, 1.0)
    "pretrain": {"decay": "matrices", "clamp_logit_scale": True, "schedule": "warmup_cosine", "b2": 0.98,
                 "eps": 1e-6},  # open_clip's pretraining; the shipped demo CLIP's schedule
    "attention_transfer": {"decay": "matrices", "schedule": "warmup_cosine", "b2": ANY, "min_lr": ANY,
                           "layer_decay": ANY, "ema_decay": ANY},  # MAE's main_finetune.py
}
LPFT_REFERENCE = {"name": "sgd", "schedule": "epoch_cosine"}  # transfer_learning's baseline_train.py


def expected(spec: str, method: str) -> dict:
  file, preset = spec.split(":")
  if file == "configs/lpft.py" and preset != "demo":
    return LPFT_REFERENCE
  if file == "configs/soup.py" and preset != "demo":  # the ViT-B/32 sweep is its ingredient's (finetune.py)
    return DEPARTURES["ft"]
  return DEPARTURES.get(method, {})


SPECS = [f"{f}:{p}" for f, _, presets in configs_lib.catalogue() for p in presets]


@pytest.mark.parametrize("spec", SPECS)
def test_each_preset_departs_from_the_reference_optimiser_only_where_it_says(spec):
  defaults = common.base("defaults").optimizer.to_dict()
  config = configs_lib.load(spec)
  departs = {k: v for k, v in config.optimizer.to_dict().items() if k not in SCALE and v != defaults[k]}
  want = expected(spec, config.method)
  assert set(departs) <= set(want), f"{spec} departs in {sorted(set(departs) - set(want))}"
  for field, value in want.items():
    if value is not ANY:
      assert config.optimizer[field] == value, (spec, field)


def test_the_defaults_are_flyp_s_and_wise_ft_s_optimiser():
  o = common.base("defaults").optimizer
  assert (o.name, o.b1, o.b2, o.eps, o.grad_clip) == ("adamw", 0.9, 0.999, 1e-8, 0.0)  # torch.optim.AdamW's
  assert (o.schedule, o.min_lr, o.decay, o.clamp_logit_scale) == ("reference_cosine", 0.0, "all", False)
  assert (o.layer_decay, o.ema_decay) == (1.0, 0.0)


@pytest.mark.parametrize("method", ["flyp", "ft", "ce_ablation"])
def test_the_demo_and_the_imagenet_preset_differ_in_scale_only(method):
  demo, reference = (configs_lib.load(f"configs/{method}.py:{p}").optimizer.to_dict() for p in ("demo", "imagenet_b16"))
  assert {k: v for k, v in demo.items() if k not in SCALE} == {k: v for k, v in reference.items() if k not in SCALE}
