"""Attention transfer (Li et al., 2024): a randomly initialised student image tower guided by the pretrained
CLIP image tower's attention maps (flyp_jax/methods/attention_transfer.py).

  python main.py --config=configs/attention_transfer.py:demo                     # distillation, offline, CPU
  python main.py --config=configs/attention_transfer.py:demo --config.at.mode=none \\
      --workdir=workdirs/attention_transfer_demo_none                            # the from-scratch baseline
  python main.py --config=configs/attention_transfer.py:demo_copy                # attention copy
  python main.py --config=configs/attention_transfer.py:imagenet_b16_distill --config.model.path=ViT-B-16.pt \\
      --config.data.data_dir=...

demo: teacher = the shipped tiny CLIP (ViT-T/8, 32 px); the student is a fresh ViT-T/8 image tower with a
linear head, 600 steps of batch 128 on domain_shapes. results.json holds the student (the usual keys), the
fine-tuned teacher alone ('teacher/...') and the ensemble of both ('ensemble/...', averaged probabilities);
the teacher is the configs/ft.py:demo run in workdirs/ft_demo, made first if it is not there
(`--config.at.ensemble.path=` ensembles with the zero-shot teacher instead).
Measured on a 2-core CPU (tiny synthetic benchmark; `--config.at.mode=none` is the same run without the
teacher's attention; the fine-tuned teacher alone: avg_id/top1 0.515, avg_ood/top1 0.157), seeds 0 / 1:
  distill  student avg_id/top1 0.544 / 0.538, avg_ood/top1 0.123 / 0.123; ensemble 0.542 / 0.533, 0.148 / 0.150
  none     student avg_id/top1 0.521 / 0.517, avg_ood/top1 0.117 / 0.112; ensemble 0.551 / 0.544, 0.147 / 0.144
  copy (demo_copy, seed 0): student 0.533, 0.131; ensemble 0.541, 0.148
About 3 minutes a run once workdirs/ft_demo exists. The teacher has only 2 layers of 17 tokens, so its
attention has little to give: the guided student gains about 2 points ID over the baseline, and, as the paper
reports, stays below the fine-tuned teacher out of distribution.

imagenet_b16_*: the paper's ImageNet recipe as far as this loop has it (its teacher is MAE ViT-L; here the
pretrained CLIP ViT-B/16 image tower teaches a ViT-B/16 student): AdamW, batch 2048, cosine decay with
warmup, label smoothing 0.1. Distillation: 200 epochs, lr 1e-4 x 2048 / 256, beta2 0.95, weight decay 0.3,
20 warmup epochs, weight 3 on the attention loss, the last 3 of 12 layers not distilled (the reference code's
default for ViT-B). Copy: 100 epochs, lr 1e-3 x 2048 / 256, weight decay 0.05, 5 warmup epochs, all layers
copied. Not reproduced: RandAugment, mixup/cutmix, random erasing, drop path, layer-wise lr decay, EMA and
global average pooling (the student here pools its class token, as CLIP does).
"""

import ml_collections

from configs import common


def get_config(arg: str = "demo"):
  c = common.base(f"attention_transfer_{arg}")
  c.method = "attention_transfer"
  # The teacher (params 'clip') never trains; the student's image tower and its head do.
  c.trainable = r"^(student|head)/"
  c.frozen = r"^clip/"
  c.at = ml_collections.ConfigDict(dict(
      mode="distill",  # copy | distill | none (no guidance: the from-scratch baseline)
      weight=3.0,  # of the attention loss in distill mode (the paper's 3)
      skip_last=0,  # transfer the first L - skip_last layers
      label_smoothing=0.0,
      # The ensemble's teacher: a fine-tuned run's workdir (relative to this run's workdir) and the config that
      # makes it if it has not finished; an empty path ensembles with the pretrained teacher's zero-shot head.
      ensemble=ml_collections.ConfigDict(dict(path="", config="")),
  ))
  if arg in ("demo", "demo_copy"):
    common.demo(c)
    c.eval.at_start = False  # step 0 is a random student
    c.steps = 600
    c.log_every = 50
    c.checkpoint_every = 300
    c.at.mode = "copy" if arg == "demo_copy" else "distill"
    c.optimizer.update(lr=1e-3, warmup_steps=60, weight_decay=0.05, b2=0.98)
    c.at.ensemble.update(path="../ft_demo", config="configs/ft.py:demo")
  elif arg in ("imagenet_b16_distill", "imagenet_b16_copy"):
    common.imagenet_b16(c, lr=0.0)
    epoch = common.IMAGENET_TRAIN // 2048
    c.batch_size = 2048
    c.eval.every_steps = 10 * epoch
    c.at.label_smoothing = 0.1
    if arg == "imagenet_b16_distill":
      c.steps = 200 * epoch
      c.at.update(mode="distill", weight=3.0, skip_last=3)
      c.optimizer.update(lr=1e-4 * 2048 / 256, warmup_steps=20 * epoch, weight_decay=0.3, b2=0.95)
    else:
      c.steps = 100 * epoch
      c.at.update(mode="copy", skip_last=0)
      c.optimizer.update(lr=1e-3 * 2048 / 256, warmup_steps=5 * epoch, weight_decay=0.05, b2=0.999)
    c.at.ensemble.update(path="../ft_imagenet_b16", config="")
  else:
    raise ValueError(f"unknown preset {arg!r}; known: demo, demo_copy, imagenet_b16_distill, imagenet_b16_copy")
  return c
