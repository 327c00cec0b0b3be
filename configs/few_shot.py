"""Few-shot: FLYP, FT and LP on k examples per class, repeated on fresh k-shot samples; mean and deviation.

  python main.py --config=configs/few_shot.py                  # demo: 4-shot domain_shapes photos, ~17 min on 2 CPUs
  python main.py --config=configs/few_shot.py:patchcamelyon_b16 --config.few_shot.k=16 \\
      --config.model.path=ViT-B-16.pt --config.data.data_dir=gs://BUCKET/tfds

Each repetition draws k training and k validation examples of each class with its seed (config.seed + r) and
runs every method of `few_shot.methods` on that sample: all k * C examples in each step, the step kept by the
validation sample's cross-entropy (the zero-shot model at step 0 a candidate), its test accuracy on the whole test
split. few_shot.md reports mean ± standard deviation of validation and test top-1 (flyp_jax/commands/few_shot.py).
patchcamelyon_b16 / sst2_b16: FLYP's commands (locuslab/FLYP README "Few shot on PatchCamelyon" / "... SST2",
src/few_shot.py, src/models/flyp_loss_few_shot.py): k = 16 (the paper also has 4 and 32: --config.few_shot.k),
50 repetitions, 20 full-batch steps, lr 1e-6 / 1e-5, weight decay 0.0 / 0.2, no warmup. FLYP's README runs FLYP
only; FT and LP run here with the same sample, steps and optimiser for comparison. Not run here (no download).
demo: 4-shot on the offline benchmark's photos with the shipped tiny CLIP, 3 repetitions; docs/demo_results.md gives
its numbers. docs/reproduction.md's "Few-shot and transfer-learning presets" table cites the reference line of each
setting.
"""

from configs import common

from flyp_jax import errors

PRESETS = ("demo", "patchcamelyon_b16", "sst2_b16")  # the first is the default

METHODS = {"FLYP": "configs/flyp.py", "FT": "configs/ft.py", "LP": "configs/lp.py"}


def get_config(arg: str = "demo"):
  c = common.base(f"few_shot_{arg}")
  c.method = "few_shot"
  # k examples per class, drawn afresh for each of `repetitions` runs of each method of `methods` (label -> config)
  c.few_shot = common.ml_collections.ConfigDict(dict(k=16, repetitions=50, methods=dict(METHODS)))
  if arg == "demo":
    common.demo(c)
    c.few_shot.update(k=4, repetitions=3)
    c.steps = 20
    c.optimizer.update(lr=1e-4, warmup_steps=0, weight_decay=0.1)
  elif arg == "patchcamelyon_b16":
    common.few_shot_b16(c, "patchcamelyon", lr=1e-6, weight_decay=0.0)
  elif arg == "sst2_b16":
    common.few_shot_b16(c, "sst2", lr=1e-5, weight_decay=0.2)
  else:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  return common.few_shot_protocol(c)
