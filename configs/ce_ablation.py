"""FLYP's cross-entropy ablation: both towers fine-tuned with cross-entropy over the class prompts.

  python main.py --config=configs/ce_ablation.py                 # demo: offline benchmark on CPU, minutes
  python main.py --config=configs/ce_ablation.py:imagenet_b16 --workdir=workdirs/ce_ablation_in \\
      --config.data.data_dir=gs://BUCKET/tfds --config.model.path=ViT-B-16.pt

Each step draws one template per class, encodes the C prompts with the text tower and applies cross-entropy to
logit_scale x image x text^T (locuslab/FLYP src/models/ce_ablation.py; flyp_jax/methods/ce_ablation.py). It is
FLYP with the contrastive loss replaced, so each preset is configs/flyp.py's with `method` changed:
demo: the FLYP demo's settings (the shipped tiny CLIP on domain_shapes, 200 steps of 64, lr 1e-4).
imagenet_b16: FLYP README's "Cross Entropy Ablation on ImageNet" command (its ImageNet command plus
--ce_ablation: OpenAI's ViT-B/16 in float32, batch 512, lr 1e-5, weight decay 0.1 on every parameter, 10 epochs,
AdamW, `cosine_lr` with the default 500 warmup steps, the logit scale trained and never clamped). Not run here.
"""

from configs import flyp

from flyp_jax import errors

PRESETS = ("demo", "imagenet_b16")  # the first is the default


def get_config(arg: str = "demo"):
  if arg not in PRESETS:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  c = flyp.get_config(arg)
  c.name = f"ce_ablation_{arg}"
  c.method = "ce_ablation"
  return c
