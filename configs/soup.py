"""Model soups: fine-tune one start with random hyperparameters, average the weights (uniform and greedy soup).

  python main.py --config=configs/soup.py                      # demo: 6 FT runs of the offline benchmark, CPU
  python main.py --config=configs/soup.py:imagenet_b32 --config.data.data_dir=gs://BUCKET/tfds \\
      --config.model.path=ViT-B-32.pt --workdir=gs://BUCKET/runs/soup_in

flyp_jax/commands/soup.py says what the uniform and the greedy soup are (mlfoundations/model-soups `main.py`), both
judged on held-out ID validation only. Each ingredient is a run of `soup.ingredient` in <workdir>/ingredients/<i>
with the hyperparameters `soup.*` draws (learning rate and weight decay log-uniform, epochs a uniform integer, label
smoothing 0 or uniform, the random crop's smallest area uniform), and seed `seed + i`.
demo: 6 ingredients of configs/ft.py:demo. The sweep's ranges scaled to the demo: learning rate over two decades
around the demo's 1e-4 (model-soups: two decades, 1e-6 to 1e-4, around its fine-tuning lr 2e-5), epochs 1-4 of
the 5,000 training photos (the demo trains 2.5; model-soups 4-16 of ImageNet), weight decay and label smoothing as
model-soups draws them, the crop's smallest area in [0.5, 1] in place of RandAugment's strength.
imagenet_b32: the paper's CLIP ViT-B/32 sweep, as its repository records it (hparam_info.json: 71 fine-tuned
models; lr in [1e-6, 1e-4] and weight decay in [8e-5, 0.53], both spread over their log range; epochs 4-16; label
smoothing 0 for 39 of them, else up to 0.23), each ingredient model-soups' `finetune.py`: OpenAI's ViT-B/32 in
float32, the zero-shot head on normalised features, AdamW on the trainable parameters, `cosine_lr` with 500 warmup
steps, gradient norm clipped to 1.0, batch 256, trained on 98% of ImageNet's train split and selected on the
other 2%. Differs: the repository's models also drew RandAugment and mixup and started from a linear probe's head
(its README: `finetune.py` "does not contain rand-aug, mixup, or LP-FT"); neither is drawn here. Not run here.
"""

import ml_collections

from configs import common, ft

from flyp_jax import errors

PRESETS = ("demo", "imagenet_b32", "ingredient_b32")  # the first is the default; ingredient_b32: one ingredient


def ingredient_b32() -> ml_collections.ConfigDict:
  """model-soups `finetune.py` (its defaults and `cosine_lr`): one ingredient of the ViT-B/32 sweep before the draw."""
  c = ft.get_config("imagenet_b16")
  c.name = "soup_ingredient_b32"
  c.model.update(variant="ViT-B/32", path="ViT-B-32.pt")
  c.batch_size = 256  # finetune.py --batch-size
  c.optimizer.update(lr=2e-5, weight_decay=0.1)  # finetune.py --lr, --wd (drawn per ingredient)
  return common.epochs_of(c, common.IMAGENET_TRAIN, 8)  # finetune.py --epochs (drawn per ingredient)


def get_config(arg: str = "demo"):
  if arg == "ingredient_b32":
    return ingredient_b32()
  if arg not in PRESETS:
    raise errors.BadValue(f"unknown preset {arg!r}; known: {', '.join(PRESETS)}")
  c = common.base(f"soup_{arg}")
  c.method = "soup"
  if arg == "demo":
    common.demo(c)
    c.soup = ml_collections.ConfigDict(dict(
        ingredient="configs/ft.py:demo", ingredients=6, lr=(1e-5, 1e-3), weight_decay=(1e-4, 0.5), epochs=(1, 4),
        no_smoothing=0.5, max_smoothing=0.25, crop_scale=(0.5, 1.0)))
  else:
    c.update(ingredient_b32().to_dict())
    c.name, c.method = f"soup_{arg}", "soup"
    c.soup = ml_collections.ConfigDict(dict(
        ingredient="configs/soup.py:ingredient_b32", ingredients=71, lr=(1e-6, 1e-4), weight_decay=(8e-5, 0.53),
        epochs=(4, 16), no_smoothing=39 / 71, max_smoothing=0.23, crop_scale=(0.9, 0.9)))  # the preset's crop
  return c
