"""Standard fine-tuning (cross-entropy, image tower + linear head initialised from the zero-shot head).

  python main.py --config=configs/ft.py                 # demo: offline benchmark on CPU
  python main.py --config=configs/ft.py:imagenet_b16 --config.model.path=ViT-B-16.pt --config.data.data_dir=...

The text tower is frozen (only the image tower and the head train), as in WiSE-FT's end-to-end fine-tuning, and
every preset trains as WiSE-FT's src/models/finetune.py does (configs/common.py's optimiser defaults, gradient norm
clipped to 1.0); the demo differs in scale only (200 steps of 64, lr 1e-4, 20 warmup steps).
imagenet_b16: WiSE-FT's src/models/finetune.py with its README's ImageNet command (batch 512, lr 3e-5, weight
decay 0.1, 10 epochs, 500 warmup steps, AdamW on all trainable parameters, `cosine_lr`, gradient norm clipped
to 1.0, float32). iwildcam_b16 / fmow_b16: the same loop with FLYP's WILDS batch, epochs and weight decay
(neither repository has a WILDS fine-tuning command; docs/reproduction.md's table says so).
"""

from configs import common

from flyp_jax import errors


PRESETS = ("demo", "imagenet_b16", "iwildcam_b16", "fmow_b16")  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"ft_{arg}")
  c.method = "ft"
  c.trainable = r"^(clip/visual/|head)"
  c.optimizer.grad_clip = 1.0  # finetune.py: clip_grad_norm_(params, 1.0) before every step
  if arg == "demo":
    common.demo(c)
    c.steps, c.batch_size = 200, 64  # 2.5 epochs of the 5,000 training photos
    c.optimizer.update(lr=1e-4, warmup_steps=20, weight_decay=0.1)
  elif arg == "imagenet_b16":
    common.imagenet_b16(c, lr=3e-5)
  elif arg in ("iwildcam_b16", "fmow_b16"):
    common.wilds_b16(c, arg.split("_")[0], lr=3e-5)
  else:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return c
