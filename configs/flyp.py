"""FLYP: fine-tune CLIP with its contrastive loss, class names turned into prompts.

  python main.py --config=configs/flyp.py                       # demo: offline benchmark on CPU, minutes
  python main.py --config=configs/flyp.py:imagenet_b16 --workdir=gs://BUCKET/flyp_in --config.data.data_dir=gs://BUCKET/tfds \\
      --config.model.path=ViT-B-16.pt

demo: pretrains a tiny CLIP on domain_shapes (configs/pretrain.py:demo, reused once done), then fine-tunes it
with FLYP on the photo domain and evaluates on photos (ID) and sketches, cartoons, paintings, clutter (OOD).
imagenet_b16: the FLYP paper's ImageNet recipe for OpenAI's ViT-B/16 (batch 512, lr 1e-5, weight decay 0.1,
10 epochs, 500 warmup steps, AdamW, cosine); the paper reports 82.6% ImageNet top-1 and 60.2% average OOD.
"""

from configs import common


def get_config(arg: str = "demo"):
  c = common.base(f"flyp_{arg}")
  c.method = "flyp"
  if arg == "demo":
    common.demo(c)
    c.steps = 300
    c.optimizer.update(lr=1e-4, warmup_steps=30, weight_decay=0.1)
  elif arg == "imagenet_b16":
    common.imagenet_b16(c, lr=1e-5)
  else:
    raise ValueError(f"unknown preset {arg!r}; known: demo, imagenet_b16")
  return c
