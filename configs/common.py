"""The fields every method's config has, with their defaults. Method files override what they need."""

import ml_collections

from flyp_jax import demo_model
from flyp_jax.data import suites


def base(name: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = name  # default workdir: workdirs/<name>
  c.method = ""
  c.seed = 0
  c.seeds = 1  # N > 1: run N times (seeds seed, seed + 1, ...) and report each metric's mean and 95% interval
  c.batch_size = 128  # global, over all devices and hosts
  c.steps = 1000
  c.total_epochs = 0  # >0: instead of steps, that many passes over the training split (ceil(N / batch) steps each)
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2  # the last N; the best on ID validation is kept apart in WORKDIR/best
  c.grad_accum_steps = 1  # micro-batches per optimiser step (batch_size is the whole step's batch)
  c.model_axis = 1  # devices per model replica (parameter sharding); the rest is the data axis
  c.profile_steps = 0  # >0: a profiler trace of that many steps after the first into WORKDIR/tensorboard
  # Where the CLIP comes from: "pretrained" (path: OpenAI/open_clip/HF checkpoint or convert output),
  # "run" (path: the workdir of another run, made first with `config` if it has not finished), "random".
  c.model = ml_collections.ConfigDict(dict(init="pretrained", path="", config="", variant="ViT-B/16",
                                           overrides=ml_collections.ConfigDict(), activation="",
                                           dtype="float32", remat=False,
                                           # with remat: what a block keeps for the backward pass, a name in
                                           # jax.checkpoint_policies ("": nothing, every block recomputed whole)
                                           remat_policy="",
                                           # the blocks under nn.scan: XLA compiles one block per tower instead
                                           # of every one (checkpoints stay per layer; not attention transfer)
                                           scan_layers=False))
  # dataset: a TFDS name, or the path of your own (a TFDS dataset directory or an image folder SPLIT/CLASS/IMAGE:
  # flyp_jax/data/image_folder.py). classnames: a list of flyp_jax/data/classnames.py, "tfds" (the dataset's own
  # label names), a text file (one per line) or "a,b,c"; templates: a set of flyp_jax/data/templates.py ("photo":
  # "a photo of a {}."), one template with {}, or a text file (one per line).
  c.data = ml_collections.ConfigDict(dict(dataset="imagenet2012", train_split="train", data_dir="",
                                          image_size=0, classnames="imagenet", templates="imagenet",
                                          crop_scale=(0.9, 1.0), flip=False,
                                          # training only: timm's RandAugment string ("rand-m9-mstd0.5-inc1"; "":
                                          # none) after the crop and flip, on the host (flyp_jax/data/
                                          # rand_augment.py); random erasing's probability (timm's, one box of
                                          # per-pixel normal noise), on the device (flyp_jax/augment.py)
                                          rand_augment="", random_erasing=0.0,
                                          # evaluation: the short side resized to image_size / eval_crop_fraction,
                                          # the centre image_size square kept (1: CLIP's; 224/256: MAE's)
                                          eval_crop_fraction=1.0,
                                          # parts the training split is read as (0: one per process); keep it
                                          # fixed to resume a run on a slice with another number of hosts
                                          shards=0,
                                          # an image that cannot be decoded: stop with an error naming its
                                          # record ("error"), or leave it out and count it ("skip": never
                                          # trained on, not counted in the metrics)
                                          corrupt_images="error",
                                          # key of flyp_jax.data.label_maps.class_table where the TFDS labels are
                                          # not the classes one to one (Caltech101's background: not trained on)
                                          label_map=""))
  # suite: a name of flyp_jax.data.suites.SUITES, or "data": built from data.dataset (your own), ID test its
  # test_split, ID validation its val_split (default 'validation'), OOD each of ood ('SPLIT' or 'DATASET:SPLIT',
  # comma-separated; datasets with the same classes).
  # select_on: the ID validation metric that picks the reported checkpoint ("": the suite's headline metric,
  # flyp_jax.data.suites.select_on; 'id_val/xent' is minimised). val_split: the validation set's split instead of
  # the suite's (a k-shot sample). select_from_start: step 0 is a candidate too. test_selected_only: the suite is
  # evaluated on the selected parameters only, each evaluation along the run being ID validation alone.
  # select_ema: with optimizer.ema_decay > 0, the weight EMA is the reported model (results' plain keys, the selected
  # checkpoint; the raw parameters' metrics under raw/); otherwise the raw parameters are, the EMA's under ema/.
  c.eval = ml_collections.ConfigDict(dict(suite="imagenet", batch_size=1024, every_steps=0, at_start=False,
                                          select_on="", val_split="", select_from_start=False,
                                          test_selected_only=False, test_split="test", ood="", select_ema=False))
  # flyp_jax/optim.py says what each field does. The defaults are the optimiser of FLYP's src/models/flyp_loss.py
  # and WiSE-FT's src/models/finetune.py: torch.optim.AdamW (its betas and eps) over every trainable parameter,
  # `cosine_lr` from their src/models/utils.py (warmup lr (step + 1) / warmup, stepped before each update), the
  # logit scale trained and never clamped (docs/reproduction.md cites each line). A preset that departs from them
  # says so on its own line (open_clip's pretraining, attention transfer's MAE recipe, LP-FT's SGD).
  c.optimizer = ml_collections.ConfigDict(dict(name="adamw", lr=1e-5, warmup_steps=500, weight_decay=0.1, b1=0.9,
                                               b2=0.999, eps=1e-8, grad_clip=0.0, schedule="reference_cosine",
                                               min_lr=0.0, decay="all", momentum=0.9, epoch_steps=0,
                                               clamp_logit_scale=False, layer_decay=1.0, ema_decay=0.0))
  # timm's Mixup in 'batch' mode, on the device, one lambda per device's share of the batch; on when an alpha is
  # above 0; classification losses (ft, attention_transfer) only; the label smoothing is the method's own
  c.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5))
  c.trainable = ".*"  # regex over parameter paths ('clip/visual/...', 'clip/text/...', 'head')
  c.frozen = ""  # regex; wins over trainable
  # loss_block: score the gathered batch that many columns at a time (0: all at once), so the contrastive loss's
  # memory per device grows linearly with the global batch (see flyp_jax.losses.sharded_clip_loss)
  c.flyp = ml_collections.ConfigDict(dict(mask_same_class=False, loss_block=0))
  # head_input: the features the head reads, "normalized" (L2, WiSE-FT's) or "raw" (encode_image's, LP-FT's code)
  c.ft = ml_collections.ConfigDict(dict(head_init="zeroshot", lp_workdir="", label_smoothing=0.0,
                                        head_input="normalized"))
  return c


def demo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The offline benchmark on CPU: the tiny CLIP pretrained by configs/pretrain.py:demo, domain_shapes."""
  # Shipped with the package (flyp_jax/demo_model.py says how it was made). To use your own pretraining:
  # --config.model.init=run --config.model.path=pretrain_demo --config.model.config=configs/pretrain.py:demo
  # (paths to other runs are relative to the parent of the workdir: flyp_jax/run_paths.py)
  c.model.init = "pretrained"
  c.model.path = demo_model.PATH
  c.data.dataset = "domain_shapes"
  c.data.classnames = c.data.templates = "domain_shapes"
  c.eval.suite = "domain_shapes"
  c.eval.batch_size = 256
  c.eval.at_start = True  # step 0 is the zero-shot model: the table at the end compares it with the result
  c.eval.every_steps = 100  # the candidates the reported checkpoint is selected from, on ID validation
  c.batch_size = 128
  c.log_every = 25
  c.checkpoint_every = 100
  return c


IMAGENET_TRAIN = 1_281_167  # examples in imagenet2012's train split
WILDS_TRAIN = {"iwildcam": 129_809, "fmow": 76_863}  # examples in WILDS' train splits

def epochs_of(c: ml_collections.ConfigDict, train_examples: int, epochs: int) -> ml_collections.ConfigDict:
  """`epochs` passes over `train_examples` at `c.batch_size`, counted as the references' DataLoaders do.

  Their loaders keep the last partial batch (drop_last=False), so an epoch is ceil(N / B) steps and the
  cosine schedule spans epochs * ceil(N / B) steps; here every step is a full batch (static shapes), so each
  epoch sees ceil(N / B) * B - N (< B) more examples than the reference's, on the same schedule. Evaluation
  every epoch.
  """
  epoch_steps = -(-train_examples // c.batch_size)
  c.steps = epochs * epoch_steps
  c.eval.every_steps = epoch_steps
  c.optimizer.epoch_steps = epoch_steps
  return c


def imagenet_b16(c: ml_collections.ConfigDict, lr: float, weight_decay: float = 0.1) -> ml_collections.ConfigDict:
  """OpenAI's ViT-B/16 fine-tuned on ImageNet with FLYP's and WiSE-FT's command-line settings: float32, batch
  512, 10 epochs, 500 warmup steps, AdamW on all parameters with FLYP's `cosine_lr`, no logit-scale clamp,
  evaluation on the ImageNet suite every epoch."""
  c.model.update(path="ViT-B-16.pt", dtype="float32")
  # 2% of train is held out as the ID validation set that selects the reported epoch (suites.VALIDATION); the
  # schedule keeps the reference's length (10 epochs of the whole train split), so the number of updates is its.
  c.data.train_split = suites.IMAGENET_TRAIN_SPLIT
  c.batch_size = 512
  c.optimizer.update(lr=lr, warmup_steps=500, weight_decay=weight_decay)
  return epochs_of(c, IMAGENET_TRAIN, 10)


def wilds_b16(c: ml_collections.ConfigDict, dataset: str, lr: float) -> ml_collections.ConfigDict:
  """OpenAI's ViT-B/16 on a WILDS dataset with FLYP's README settings: float32, batch 256, 20 epochs, weight
  decay 0.2, 500 warmup steps, AdamW on all parameters with FLYP's `cosine_lr`, no logit-scale clamp; WILDS'
  ID and OOD test splits evaluated every epoch."""
  c.model.update(path="ViT-B-16.pt", dtype="float32")
  c.data.update(dataset=f"wilds_{dataset}", classnames=dataset, templates=dataset)
  c.eval.suite = dataset
  c.batch_size = 256
  c.optimizer.update(lr=lr, warmup_steps=500, weight_decay=0.2)
  return epochs_of(c, WILDS_TRAIN[dataset], 20)


def _dataset(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Train on, select on and evaluate FLYP's dataset `name` (flyp_jax.data.suites.TRANSFER_DATASETS)."""
  tfds_name, label_map = suites.TRANSFER_DATASETS[name]
  c.data.update(dataset=tfds_name, train_split=suites.TRANSFER_SPLITS[name]["train"], classnames=name,
                templates=name, label_map=label_map)
  c.eval.suite = name
  return c


def few_shot_b16(c: ml_collections.ConfigDict, name: str, lr: float, weight_decay: float) -> ml_collections.ConfigDict:
  """FLYP's few-shot command for `name` (locuslab/FLYP README "Few shot on ..."; src/few_shot.py,
  src/models/flyp_loss_few_shot.py): OpenAI's ViT-B/16 in float32, k = 16 (4 and 32 are the paper's others), 50
  repetitions, 20 epochs of one full-batch step on the 2k examples, no warmup (--warmup_length 0), AdamW on all
  parameters with `cosine_lr`, no logit-scale clamp; the step kept by the k-shot validation batch's cross-entropy,
  the zero-shot model (epoch -1) among the candidates; evaluation batch 256 (--batch-size=256)."""
  _dataset(c, name)
  c.model.update(path="ViT-B-16.pt", dtype="float32")
  c.few_shot.update(k=16, repetitions=50)
  c.steps = 20
  c.optimizer.update(lr=lr, warmup_steps=0, weight_decay=weight_decay)
  c.eval.batch_size = 256
  return c


def few_shot_protocol(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """How every few-shot run selects and reports (flyp_loss_few_shot.py): validation after each step and at step 0,
  the step of least validation cross-entropy (step 0 a candidate), the test split once, on the kept parameters."""
  c.eval.update(every_steps=1, at_start=True, select_on="id_val/xent", select_from_start=True,
                test_selected_only=True)
  c.checkpoint_every = 0  # runs of a few steps: the last step and the best one are saved, nothing between
  c.log_every = 5
  return c


# Examples of FLYP's transfer-learning training sets, which set the length of the schedule (`epochs_of`).
# StanfordCars: cars196's train less its held-out 20% (8,144 - 1,629); Flowers102: the official 1,020.
# Caltech101: 60% of its 8,677 images of the 101 classes; FLYP's unseeded split gives about as many.
TRANSFER_TRAIN = {"caltech101": 5_206, "stanfordcars": 6_515, "flowers102": 1_020}


def transfer_b16(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """FLYP's transfer-learning command (locuslab/FLYP README "Transfer Learning on Caltech" / "... StanfordCars"):
  OpenAI's ViT-B/16 in float32, batch 256, 100 epochs, lr 1e-5, weight decay 0.0, 500 warmup steps, AdamW on all
  parameters with `cosine_lr`, no logit-scale clamp; evaluated every epoch, the epoch selected on the validation
  split (the reference's <Name>Val), reported on test (<Name>Test). Flowers102 has no command in FLYP's README:
  the same settings (its 1,020 images make 400 steps, so the 500-step warmup never ends)."""
  _dataset(c, name)
  c.model.update(path="ViT-B-16.pt", dtype="float32")
  c.batch_size = 256
  c.optimizer.update(lr=1e-5, warmup_steps=500, weight_decay=0.0)
  return epochs_of(c, TRANSFER_TRAIN[name], 100)
