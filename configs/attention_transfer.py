"""Attention transfer (Li et al., 2024): a randomly initialised ViT student guided by a pretrained teacher's
attention maps (flyp_jax/methods/attention_transfer.py; docs/reproduction.md's "Attention transfer" section has the
table
of every reference setting and its source).

  python main.py --config=configs/attention_transfer.py:demo                     # distillation, offline, CPU
  python main.py --config=configs/attention_transfer.py:demo_copy                # attention copy
  python main.py --config=configs/attention_transfer.py:demo_none                # from scratch, no guidance
  python main.py --config=configs/attention_transfer.py:imagenet_l16_mae_distill \
      --config.at.teacher.path=mae_pretrain_vit_large.pth --config.data.data_dir=...

imagenet_l16_mae_{distill,copy}: the paper's setting as the authors' code runs it (alexlioralexli/attention-transfer
README commands, main_finetune.py defaults, models_dual_vit.py): an MAE ViT-L/16 teacher (facebookresearch/mae's
mae_pretrain_vit_large.pth), a ViT-L/16 student of its shape with global average pooling, batch 2048 (8 nodes x
8 GPUs x 32), AdamW, per-step cosine after a linear warmup, label smoothing 0.1, the first 24 - 3 = 21 layers
transferred (the code's end_layer=-3; the README's --end_layer -6 is parsed but never passed to the model).
  distill: 200 epochs, lr 1e-4 x 2048 / 256, beta2 0.95, weight decay 0.3, 20 warmup epochs, min_lr 1e-6, no
           layer decay, drop path 0.2 (masks shared with the teacher), weight 3 on the attention loss.
  copy:    100 epochs, lr 1e-3 x 2048 / 256, beta2 0.999, weight decay 0.05, 5 warmup epochs, min_lr 2e-3
           (25% of the peak), layer decay 0.75, no drop path.
  Both: RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, mixup 0.8 / CutMix 1.0 (smoothing inside the
  targets), a weight EMA of decay 0.9999 evaluated beside the raw weights (`regularize`, optimizer.ema_decay).
  Evaluation after every epoch, images resized to 256 (bicubic) and centre-cropped to 224 (util/datasets.py), on the
  held-out ID validation set, the whole suite on the selected epoch (the raw and the EMA weights).
Not reproduced: the reported maximum over epochs (the loop selects on a held-out 2% of train instead); the
regularisers' random draws are stateless JAX/TensorFlow ones (the same distributions, other samples).

imagenet_b16_{distill,copy}: this project's extension, the same recipe with the pretrained CLIP ViT-B/16 image
tower as teacher and a ViT-B/16 student: the first 12 - 3 = 9 layers transferred (the same layer rule).

demo_regularized: :demo with the reference's regularisers (claim (j) of docs/demo_claims.md): RandAugment, erasing,
mixup/CutMix and smoothing unchanged, the EMA's decay 0.98 (its time constant 8% of the 600 steps, as 10 000 steps
are of the reference's 125 000), the EMA reported (eval.select_ema). At this scale they cost the student 10 points
of ID accuracy (claim (j) not held: docs/demo_results.md, attention transfer).

demo*: teacher = the shipped tiny CLIP (ViT-T/4, 32 px: 2 layers of 65 tokens); the student is a fresh timm-style
ViT of its shape with global average pooling and a linear head, 600 steps of batch 128 on domain_shapes photos
(about 15 epochs), AdamW with 60 warmup steps and cosine decay to 0, no drop path, no layer decay. Both layers
are transferred (end_layer=0): the reference's -3 would leave none of two. The three presets differ only in the
mode and the learning rate, each the best of its mode's sweep on seed 0 with the previous method and the
previous demo CLIP (ViT-T/8; not swept again):
  none 1e-3, distill 5e-3, copy 3e-3 (docs/demo_results.md lists the sweep).
results.json holds the student (the usual keys), the fine-tuned teacher alone ('teacher/...') and the ensemble
of both ('ensemble/...', averaged probabilities); the teacher is the configs/ft.py:demo run in workdirs/ft_demo,
made first if it is not there (`--config.at.ensemble.path=` ensembles with the zero-shot teacher instead).
Measured numbers, seeds 0 / 1 / 2 and times: docs/demo_results.md, "Attention transfer".
"""

import ml_collections

from configs import common

from flyp_jax import errors

# The demo presets' learning rates: the best of each mode's sweep on seed 0 (600 steps; docstring).
DEMO_LR = {"demo": 5e-3, "demo_copy": 3e-3, "demo_none": 1e-3}


PRESETS = ("demo", "demo_copy", "demo_none", "demo_regularized", "imagenet_l16_mae_distill", "imagenet_l16_mae_copy",
           "imagenet_b16_distill", "imagenet_b16_copy")  # the first is the default

# The reference's ImageNet recipes (attention-transfer README commands; main_finetune.py defaults where a command
# does not set a flag): {mode: (epochs, base lr, beta2, weight decay, warmup epochs, min_lr, layer decay, drop path)}.
REFERENCE = {"distill": (200, 1e-4, 0.95, 0.3, 20, 1e-6, 1.0, 0.2),
             "copy": (100, 1e-3, 0.999, 0.05, 5, 2e-3, 0.75, 0.0)}


def regularize(c: ml_collections.ConfigDict) -> None:
  """The reference's regularisers (main_finetune.py's defaults and README commands): timm's create_transform with
  --aa rand-m9-mstd0.5-inc1, --reprob 0.25 (mode pixel, one box); Mixup(mixup 0.8, cutmix 1.0, prob 1, switch 0.5,
  mode 'batch', label_smoothing=--smoothing 0.1) with SoftTargetCrossEntropy."""
  c.data.update(rand_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25)
  c.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
  c.at.label_smoothing = 0.1


def get_config(arg: str = "demo"):
  c = common.base(f"attention_transfer_{arg}")
  c.method = "attention_transfer"
  # The teacher (params 'clip') never trains; the student and its head do.
  c.trainable = r"^(student|head)/"
  c.frozen = r"^clip/"
  # MAE's recipe, not FLYP's (configs/common.py's defaults): main_finetune.py's AdamW exempts biases, norms, cls_token
  # and pos_embed from weight decay (util/lr_decay.py param_groups_lrd), and util/lr_sched.py warms up from lr 0
  # and decays to min_lr by a half-cycle cosine
  c.optimizer.update(decay="matrices", schedule="warmup_cosine")
  c.at = ml_collections.ConfigDict(dict(
      # copy | distill | none (no guidance: the from-scratch baseline) | copy_q, copy_k, copy_v, distill_q,
      # distill_k, distill_v (the teacher's queries, keys or values instead of its maps)
      mode="distill",
      weight=3.0,  # of the attention loss in distill mode (--atd_weight 3)
      end_layer=-3,  # transfer the first L + end_layer layers (models_dual_vit.py's default, used by both modes)
      drop_path=0.0,  # stochastic depth of the deepest layer (linear from 0), masks shared by teacher and student
      pool="gap",  # the student's pooling: gap (mean of patch tokens + fc_norm; --global_pool, the default) | cls
      label_smoothing=0.0,
      # clip: the image tower of config.model's CLIP; vit: a timm / MAE ViT checkpoint at path (heads: 0 infers
      # them from the width). image_norm: the mean/std the teacher was trained with (imagenet: MAE's). variant:
      # the vit teacher's shape ('ViT-L/16'), which the checkpoint must have, for planning a run without it
      # (flyp_jax.tpu_plan); '' takes the checkpoint's.
      teacher=ml_collections.ConfigDict(dict(kind="clip", path="", heads=0, image_norm="clip", variant="")),
      # The ensemble's teacher: a fine-tuned run's workdir (relative to the parent of this run's workdir) and the
      # config that makes it if it has not finished; an empty path ensembles with the pretrained CLIP teacher's
      # zero-shot head.
      ensemble=ml_collections.ConfigDict(dict(path="", config="")),
  ))
  if arg in DEMO_LR or arg == "demo_regularized":
    common.demo(c)
    c.eval.at_start = False  # step 0 is a random student
    c.steps = 600
    c.log_every = 50
    c.checkpoint_every = 300
    c.at.mode = {"demo": "distill", "demo_copy": "copy", "demo_none": "none", "demo_regularized": "distill"}[arg]
    c.at.end_layer = 0  # two layers: the reference's -3 would transfer none
    # Only the mode and the learning rate differ between the three demos: each has the best lr of a sweep
    # on seed 0 (see the docstring), so the comparison is at equal steps, data and tuning effort.
    c.optimizer.update(lr=DEMO_LR.get(arg, DEMO_LR["demo"]), warmup_steps=60, weight_decay=0.05, b2=0.98)
    c.at.ensemble.update(path="ft_demo", config="configs/ft.py:demo")
    if arg == "demo_regularized":  # claim (j) of docs/demo_claims.md: :demo with the reference's regularisers
      regularize(c)  # unchanged at 32 px: their magnitudes are fractions of the image or of the label mass
      # the EMA's time constant 8% of the run, as 1 / (1 - 0.9999) = 10 000 of the reference's 125 000 steps
      c.optimizer.ema_decay = 0.98
      c.eval.select_ema = True  # the recipe's model is the averaged one
  elif arg.startswith("imagenet_"):
    mode = arg.rsplit("_", 1)[1]
    if arg not in PRESETS:
      raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
    epochs, blr, b2, wd, warmup, min_lr, layer_decay, drop_path = REFERENCE[mode]
    common.imagenet_b16(c, lr=0.0)
    if "mae" in arg:
      c.at.teacher.update(kind="vit", path="mae_pretrain_vit_large.pth", image_norm="imagenet", variant="ViT-L/16")
      c.model.path = ""  # no CLIP: the teacher comes from at.teacher.path
    c.batch_size = 2048
    epoch = common.IMAGENET_TRAIN // 2048  # the reference's loader drops the last partial batch
    c.steps = epochs * epoch
    # main_finetune.py evaluates after every epoch; here on the held-out ID validation set, the suite on the
    # selected checkpoint at the end
    c.eval.update(every_steps=epoch, test_selected_only=True)
    c.data.update(crop_scale=(0.08, 1.0), flip=True)  # timm create_transform's RandomResizedCrop and hflip
    # util/datasets.py build_transform(is_train=False): Resize(int(224 / (224 / 256))) bicubic, CenterCrop(224)
    c.data.eval_crop_fraction = 224 / 256
    c.at.update(mode=mode, weight=3.0, end_layer=-3, drop_path=drop_path, label_smoothing=0.1)
    c.optimizer.update(lr=blr * 2048 / 256, min_lr=min_lr, b1=0.9, b2=b2, eps=1e-8, weight_decay=wd,
                       warmup_steps=warmup * epoch, layer_decay=layer_decay)
    # --ema 0.9999 (README commands): util/model_ema.py's ModelEmaV2 updated after every optimiser step, evaluated
    # beside the raw weights after each epoch (main_finetune.py); both are tested on the selected epoch, the raw
    # weights reported (eval.select_ema=True reports the EMA), the EMA under ema/ and saved as final_ema/
    c.optimizer.ema_decay = 0.9999
    if arg == "imagenet_l16_mae_distill":
      # Not a setting of the reference (memory only; the values are the same): on the 64 chips of its 64 GPUs, libtpu
      # (0.0.42.1) overflows its stack compiling this step without rematerialisation (v5e:8x8 and v4:4x4x4, compiled
      # by flyp_jax.tpu_plan); with it the step peaks at 9.76 GiB per v5e chip (tpu/README.md, "Will it fit?").
      c.model.remat = True
    regularize(c)
    # The paper ensembles with a fine-tuned teacher; give its run with --config.at.ensemble.path.
    c.at.ensemble.update(path="ft_imagenet_b16" if "b16" in arg else "", config="")
  else:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return c
