"""FLYP: fine-tune CLIP with its contrastive loss, class names turned into prompts.

  python main.py --config=configs/flyp.py                       # demo: offline benchmark on CPU, minutes
  python main.py --config=configs/flyp.py:imagenet_b16 --workdir=workdirs/flyp_in --config.data.data_dir=gs://BUCKET/tfds \\
      --config.model.path=ViT-B-16.pt

demo: pretrains a tiny CLIP on domain_shapes (configs/pretrain.py:demo, reused once done), then fine-tunes it
with FLYP on the photo domain and evaluates on photos (ID) and sketches, cartoons, paintings, clutter (OOD).
imagenet_b16: the FLYP paper's ImageNet recipe for OpenAI's ViT-B/16 (batch 512, lr 1e-5, weight decay 0.1,
10 epochs, 500 warmup steps, AdamW, cosine), meant to reproduce the paper's ViT-B/16 ImageNet top-1 and average
OOD accuracy over ImageNet-V2/R/Sketch/A and ObjectNet.
iwildcam_b16 / fmow_b16: the same with FLYP's WILDS settings (batch 256, 20 epochs, weight decay 0.2); the paper
reports its results on iWildCam (macro-F1) and FMoW (worst-region accuracy), ID and OOD.
"""

from configs import common


PRESETS = ("demo", "imagenet_b16", "iwildcam_b16", "fmow_b16")  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"flyp_{arg}")
  c.method = "flyp"
  if arg == "demo":
    common.demo(c)
    c.steps = 300
    c.optimizer.update(lr=1e-4, warmup_steps=30, weight_decay=0.1)
  elif arg == "imagenet_b16":
    common.imagenet_b16(c, lr=1e-5)
  elif arg in ("iwildcam_b16", "fmow_b16"):
    common.wilds_b16(c, arg.split("_")[0], lr=1e-5)
  else:
    raise ValueError(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return c
