"""LP-FT: a linear probe first (configs/lp.py, in ft.lp_workdir), then full fine-tuning from its head.

  python main.py --config=configs/lp.py                                  # 1. the probe, in workdirs/lp_demo
  python main.py --config=configs/lpft.py                                # 2. fine-tune from it

demo: configs/ft.py:demo (WiSE-FT's finetune.py recipe, gradient norm clipped to 1.0) started from the demo probe's
head on normalised features, at lr 3e-5: LP-FT as the FLYP paper runs its baselines, in WiSE-FT's code.
demo_reference: the reference's LP-FT (below) at the demo's scale: from configs/lp.py:demo_reference's probe on raw
features, 3 epochs of the 5,000 training photos at batch 64 (237 steps; the cosine stepped per epoch), evaluated
after each epoch, lr 1e-3 (configs/compare.py sweeps it).
imagenet_b16 / iwildcam_b16 / fmow_b16: the fine-tuning stage of LP-FT's code (AnanyaKumar/transfer_learning:
configs/adaptation/resnet50_transfer.yaml and imagenet.yaml, unlabeled_extrapolation/baseline_train.py):
torch.optim.SGD with momentum 0.9 and no weight decay, CosineAnnealingLR stepped once per epoch (T_max = epochs),
no warmup, no gradient clipping, the head on raw `encode_image` features from the probe of configs/lp.py's preset
of the same name (fitted on raw features); ImageNet at batch 128 for 10 epochs, WILDS with FLYP's batch and epochs. The
reference sweeps lr over {3e-7, 1e-6, ..., 1e-2} (scripts/run_adaptation_experiments.py SWEEP_LRS) and keeps
the run best on ID validation: run this preset once per lr (--config.optimizer.lr=...) and compare their
`id_val/top1` (each results.json reports its checkpoint selected on ID validation); the preset's lr is one point
of that grid.

ft.lp_workdir (lp_<preset>) is relative to the parent of this run's workdir, like every path to another run:
with a custom --workdir, run the probe beside it (or give an absolute --config.ft.lp_workdir).
"""

from configs import common
from configs import ft

PRESETS = ("demo", "demo_reference") + ft.PRESETS[1:]  # the first is the default
DEMO_TRAIN = 5_000  # domain_shapes' training photos


def get_config(arg: str = "demo"):
  c = ft.get_config("demo" if arg == "demo_reference" else arg)
  c.name = f"lpft_{arg}"
  c.ft.head_init = "lp"
  c.ft.lp_workdir = f"lp_{arg}"  # beside this run's workdir: the default workdir of configs/lp.py:<arg>
  if arg == "demo":
    c.optimizer.lr = 3e-5  # LP-FT fine-tunes gently from a good head (Kumar et al., 2022)
    return c
  if arg == "imagenet_b16":
    c.batch_size = 128  # configs/adaptation/imagenet.yaml
    common.epochs_of(c, common.IMAGENET_TRAIN, 10)
  elif arg == "demo_reference":
    common.epochs_of(c, DEMO_TRAIN, 3)
  # SGD, not FT's AdamW: baseline_train.py's optimiser and per-epoch schedule, no gradient clipping
  c.optimizer.update(name="sgd", momentum=0.9, weight_decay=0.0, lr=1e-3 if arg == "demo_reference" else 1e-5,
                     warmup_steps=0, schedule="epoch_cosine", grad_clip=0.0)
  c.ft.head_input = "raw"  # clip_model.py `ClipModel.forward`: the head on encode_image's features (lp.py: 'raw')
  return c
