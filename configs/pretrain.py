"""Contrastive pretraining of a small CLIP on image-caption data (the FLYP loss and loop).

  python main.py --config=configs/pretrain.py:demo --workdir=workdirs/pretrain_demo

demo: a tiny CLIP (ViT-T/4: 32 px images in 4 px patches, 2 layers of width 128 per tower, context 16) on the
200,000 captioned images over 5 visual domains of `domain_shapes/pretrain_200k`, in two cosine cycles:
`demo_cycle1`, 7200 steps of 128 from random weights at lr 1e-3 (made first, beside the workdir, if it has not
run), then 2400 steps at lr 5e-4 from its end, with a fresh optimiser and another data order (seed 1). Zero-shot
accuracy judged on held-out data only (`domain_shapes_heldout`: photo validation and the held-out image-caption
split `pretrain_val`, per domain), never on the test splits. The shipped demo CLIP (flyp_jax/demo_model.py).
"""

from configs import common


PRESETS = ("demo", "demo_cycle1")  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"pretrain_{arg}")
  c.method = "pretrain"
  if arg not in PRESETS:
    raise ValueError(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  c.model.init = "random"
  c.model.variant = "ViT-T/4"
  c.model.overrides = {"context_length": 16}  # captions are at most 15 tokens
  c.data.dataset = "domain_shapes/pretrain_200k"
  c.data.train_split = "pretrain"
  c.data.classnames = c.data.templates = "domain_shapes"
  c.data.crop_scale = (0.8, 1.0)
  c.eval.suite = "domain_shapes_heldout"
  c.eval.every_steps = 400
  c.eval.batch_size = 256
  c.batch_size = 128
  c.steps = 7200
  c.log_every = 100
  c.checkpoint_every = 200
  c.optimizer.update(lr=1e-3, warmup_steps=200, weight_decay=0.1, b2=0.98, eps=1e-6)
  if arg == "demo":  # the second cycle: from the first's final parameters (the path is beside this workdir)
    c.model.update(init="run", path="pretrain_demo_cycle1", config="configs/pretrain.py:demo_cycle1")
    c.seed = 1
    c.steps = 2400
    c.optimizer.update(lr=5e-4, warmup_steps=100)
  return c
