"""Contrastive pretraining of a small CLIP on image-caption data (the FLYP loss and loop).

  python main.py --config=configs/pretrain.py:demo --workdir=workdirs/pretrain_demo

demo: a tiny CLIP (ViT-T/8, 32 px, context 16) on domain_shapes' `pretrain` split (20,000 captioned images
over 5 visual domains); the pretrained model of the offline demo, made automatically by the other demo configs.
"""

from configs import common


PRESETS = ("demo",)  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"pretrain_{arg}")
  c.method = "pretrain"
  if arg != "demo":
    raise ValueError(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  c.model.init = "random"
  c.model.variant = "ViT-T/8"
  c.model.overrides = {"context_length": 16}  # captions are at most 15 tokens
  c.data.dataset = "domain_shapes"
  c.data.train_split = "pretrain"
  c.data.classnames = c.data.templates = "domain_shapes"
  c.data.crop_scale = (0.8, 1.0)
  c.eval.suite = "domain_shapes"
  c.eval.batch_size = 256
  c.batch_size = 128
  c.steps = 1200
  c.log_every = 50
  c.checkpoint_every = 250
  c.optimizer.update(lr=1e-3, warmup_steps=100, weight_decay=0.1, b2=0.98, eps=1e-6)
  return c
