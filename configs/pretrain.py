"""Contrastive pretraining of a small CLIP on image-caption data (the FLYP loss and loop).

  python main.py --config=configs/pretrain.py:demo --workdir=workdirs/pretrain_demo

demo: a tiny CLIP (ViT-T/4: 32 px images in 4 px patches, 2 layers of width 128 per tower, context 16) on the
200,000 captioned images over 5 visual domains of `domain_shapes/pretrain_200k`, in three cosine cycles (`CYCLES`):
`demo_cycle1`, 7200 steps of 128 from random weights at lr 1e-3; `demo_cycle2`, 2400 steps at lr 5e-4 from its
end; `demo`, 2400 steps at lr 2.5e-4 from that. Each later cycle starts from the previous one's final parameters
(beside its workdir, made first if it has not run), with a fresh optimiser and another data order (seed = cycle
number - 1). Zero-shot accuracy judged on held-out data only (`domain_shapes_heldout`: photo validation and the
held-out image-caption split `pretrain_val`, per domain), never on the test splits. The shipped demo CLIP
(flyp_jax/demo_model.py).
"""

from configs import common

from flyp_jax import errors

# (steps, peak lr, warmup steps) of each cosine cycle; the demo preset is the last cycle
CYCLES = ((7200, 1e-3, 200), (2400, 5e-4, 100), (2400, 2.5e-4, 100))
PRESETS = ("demo",) + tuple(f"demo_cycle{i}" for i in range(1, len(CYCLES)))  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"pretrain_{arg}")
  c.method = "pretrain"
  if arg not in PRESETS:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  cycle = len(CYCLES) if arg == "demo" else int(arg[len("demo_cycle"):])
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
  c.log_every = 100
  c.checkpoint_every = 200
  c.steps, lr, warmup = CYCLES[cycle - 1]
  c.seed = cycle - 1
  c.optimizer.update(lr=lr, warmup_steps=warmup, weight_decay=0.1, b2=0.98, eps=1e-6)
  # open_clip's training/main.py: no weight decay on gains, biases and the logit scale; training/train.py clamps the
  # logit scale to ln 100 after each step
  c.optimizer.update(decay="matrices", clamp_logit_scale=True)
  # optax's warmup from lr 0 at step 0 (open_clip's `cosine_lr` is configs/common.py's 'reference_cosine'): the
  # schedule the shipped demo CLIP was pretrained with, kept so that this preset remakes it
  c.optimizer.schedule = "warmup_cosine"
  if cycle > 1:  # from the previous cycle's final parameters (its workdir is beside this one)
    previous = f"demo_cycle{cycle - 1}"
    c.model.update(init="run", path=f"pretrain_{previous}", config=f"configs/pretrain.py:{previous}")
  return c
