"""FLYP: fine-tune CLIP with its contrastive loss, class names turned into prompts.

  python main.py --config=configs/flyp.py                       # demo: offline benchmark on CPU, minutes
  python main.py --config=configs/flyp.py:imagenet_b16 --workdir=workdirs/flyp_in --config.data.data_dir=gs://BUCKET/tfds \\
      --config.model.path=ViT-B-16.pt

demo: the tiny CLIP shipped with the package (pretrained on domain_shapes' captions by configs/pretrain.py:demo),
fine-tuned with FLYP on the photo domain, evaluated on photos (ID) and sketches, cartoons, paintings, clutter (OOD);
FLYP's optimiser (configs/common.py's defaults), differing from the reference in scale only (200 steps of 64, lr
1e-4, 20 warmup steps).
imagenet_b16: FLYP's ImageNet command (locuslab/FLYP README, src/models/flyp_loss.py): OpenAI's ViT-B/16 in
float32, batch 512, lr 1e-5, weight decay 0.1 on every parameter, 10 epochs, AdamW, `cosine_lr` with 500 warmup
steps, the logit scale trained and never clamped. Not run here. FLYP's ObjectNet numbers came from an incomplete
ObjectNet download (locuslab/FLYP issue 7), so average OOD accuracy over the suite with the full ObjectNet is not
comparable with the paper's.
iwildcam_b16 / fmow_b16: FLYP's WILDS commands (batch 256, 20 epochs, weight decay 0.2, otherwise the same); the
paper reports iWildCam macro-F1 and FMoW worst-region accuracy, ID and OOD, over repeated runs.
caltech101_b16 / stanfordcars_b16 / flowers102_b16: FLYP's transfer-learning commands (batch 256, 100 epochs, lr
1e-5, weight decay 0.0, 500 warmup steps; Flowers102 has no command there and takes the same), the epoch selected
on the validation split, test reported; configs/few_shot.py has the few-shot experiments. Not run here.
docs/reproduction.md's table cites the reference line of each setting (the few-shot and transfer
ones: its "Few-shot and transfer-learning presets" table).
"""

from configs import common

from flyp_jax import errors


PRESETS = ("demo", "imagenet_b16", "iwildcam_b16", "fmow_b16", "caltech101_b16", "stanfordcars_b16",
           "flowers102_b16")  # the first is the default


def get_config(arg: str = "demo"):
  c = common.base(f"flyp_{arg}")
  c.method = "flyp"
  if arg == "demo":
    common.demo(c)
    c.steps, c.batch_size = 200, 64  # 2.5 epochs of the 5,000 training photos
    c.optimizer.update(lr=1e-4, warmup_steps=20, weight_decay=0.1)
  elif arg == "imagenet_b16":
    common.imagenet_b16(c, lr=1e-5)
  elif arg in ("iwildcam_b16", "fmow_b16"):
    common.wilds_b16(c, arg.split("_")[0], lr=1e-5)
  elif arg in ("caltech101_b16", "stanfordcars_b16", "flowers102_b16"):
    common.transfer_b16(c, arg.split("_")[0])
  else:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return c
