"""The optimiser of the training loop: AdamW or SGD, a learning-rate schedule, parameter groups chosen by regex.

Kept apart from `flyp_jax.train` so that benchmarks and notebooks can build the same optimiser without
importing the data pipeline (TensorFlow).

Config fields (`config.optimizer`; fields missing from an older config take the defaults in brackets):
  name ['adamw']: 'adamw' (FLYP, WiSE-FT) or 'sgd' (heavy-ball momentum `momentum`, LP-FT's code).
  schedule ['warmup_cosine']: 'warmup_cosine' (optax: linear warmup from 0 at step 0, cosine to 0 at
    `total_steps`), 'reference_cosine' (FLYP's and WiSE-FT's `cosine_lr`: warmup lr * (step + 1) / warmup,
    then 0.5 (1 + cos(pi (step - warmup) / (total - warmup))) lr + min_lr), 'epoch_cosine' (PyTorch's
    CosineAnnealingLR stepped once per epoch of `epoch_steps` steps, as LP-FT's code does), or 'constant'.
  decay ['matrices']: which parameters weight decay applies to: 'matrices' (not biases, norms, positional and
    class embeddings or the logit scale, as open_clip pretrains) or 'all' (torch.optim.AdamW(all params) in
    FLYP and WiSE-FT).
  min_lr [0.0]: added to the cosine part of 'reference_cosine' (FLYP's --min_lr); for 'warmup_cosine' the value
    the cosine ends at: min_lr + (lr - min_lr) 0.5 (1 + cos(...)) after the warmup, as MAE's and attention
    transfer's `util/lr_sched.py` (`--min_lr`).
  layer_decay [1.0]: layer-wise learning-rate decay of one trainable ViT (BEiT's, as attention transfer's
    `util/lr_decay.py` with its DualVisionTransformer): with L the number of trainable blocks ('resblocks_i'), a
    block i parameter's rate is scaled by layer_decay ** (L - i - 1), the embeddings' (patch, class token,
    positional) by layer_decay ** L, everything else (final norm, head) by 1. The scale multiplies the whole
    update (weight decay included), as torch's per-group lr does.
  momentum [0.9], epoch_steps [0]: for 'sgd' and 'epoch_cosine'.
  ema_decay [0.0]: with d > 0 the loop keeps an exponential moving average of the trainable parameters, started at
    the initial ones and updated after every optimiser step, ema = d ema + (1 - d) params (timm's ModelEmaV2, as
    attention transfer's `util/model_ema.py` and `engine_finetune.py` use it); 0: none.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from flyp_jax import errors

SCHEDULES = ("warmup_cosine", "reference_cosine", "epoch_cosine", "constant")
DECAY_RULES = ("matrices", "all")
OPTIMIZERS = ("adamw", "sgd")

# Parameters open_clip's pretraining exempts from weight decay (gains, biases, tables added to activations), and
# their timm names (MAE's and attention transfer's `no_weight_decay`: cls_token, pos_embed).
_NO_DECAY = r"(bias|scale|positional_embedding|class_embedding|logit_scale|cls_token|pos_embed)$"


def path_names(tree) -> Any:
  """A pytree of the '/'-joined key paths of `tree`'s leaves ('clip/visual/proj', 'head/kernel', ...)."""
  return jax.tree.map_with_path(lambda p, _: "/".join(str(getattr(k, "key", k)) for k in p), tree)


def trainable_mask(config, params) -> Any:
  """A pytree of bools: the leaves matching `config.trainable` and not `config.frozen` (regexes over the
  '/'-joined paths); at least one must."""
  match = lambda n: bool(re.search(config.trainable, n)) and not (config.frozen and re.search(config.frozen, n))
  mask = jax.tree.map(match, path_names(params))
  if not any(jax.tree.leaves(mask)):
    raise errors.BadValue(f"no parameter matches trainable={config.trainable!r} (frozen={config.frozen!r})")
  return mask


def _get(opt, name: str, default):
  # getattr, not ConfigDict.get: benchmarks pass a SimpleNamespace holding only the fields they set.
  return getattr(opt, name, default)


def make_schedule(opt, total_steps: int) -> Callable[[jax.Array], jax.Array]:
  """The learning rate (float32 scalar) as a function of the optimiser step, 0 for the first update."""
  kind = _get(opt, "schedule", "warmup_cosine")
  lr, warmup = opt.lr, int(opt.warmup_steps)
  if kind == "warmup_cosine":
    # warmup below the run's length leaves optax a decay step (a one-step run has no warmup)
    return optax.warmup_cosine_decay_schedule(0.0, lr, min(warmup, max(total_steps - 1, 0)), max(total_steps, 1),
                                              end_value=float(_get(opt, "min_lr", 0.0)))
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind == "reference_cosine":
    min_lr = float(_get(opt, "min_lr", 0.0))
    decay_steps = max(total_steps - warmup, 1)

    def reference_cosine(step):
      step = jnp.asarray(step, jnp.float32)
      # The reference's first step already has lr / warmup, not 0; min_lr is added after warmup only.
      ramp = lr * (step + 1) / max(warmup, 1)
      cosine = 0.5 * (1 + jnp.cos(math.pi * (step - warmup) / decay_steps)) * lr + min_lr
      return jnp.where(step < warmup, ramp, cosine)

    return reference_cosine
  if kind == "epoch_cosine":
    epoch_steps = int(_get(opt, "epoch_steps", 0))
    if epoch_steps <= 0:
      raise errors.BadValue(f"optimizer.schedule='epoch_cosine' needs optimizer.epoch_steps > 0 (steps per epoch), "
                       f"got {epoch_steps}")
    epochs = max(math.ceil(total_steps / epoch_steps), 1)

    def epoch_cosine(step):
      epoch = jnp.floor(jnp.asarray(step, jnp.float32) / epoch_steps)
      return 0.5 * (1 + jnp.cos(math.pi * epoch / epochs)) * lr

    return epoch_cosine
  raise errors.BadValue(f"unknown optimizer.schedule {kind!r}; known: {SCHEDULES}")


def make_optimizer(config, params, total_steps: int) -> optax.GradientTransformation:
  """The optimiser (`config.optimizer`, see the module docstring) on the parameters matching `config.trainable`.

  `config.frozen` (regex) wins over `trainable`; frozen parameters get no update and no optimiser state use.
  Gradient clipping (`grad_clip` > 0: global L2 norm over the trainable parameters) comes first, as
  `torch.nn.utils.clip_grad_norm_` before `optimizer.step()`.
  """
  opt = config.optimizer
  schedule = make_schedule(opt, total_steps)
  names = path_names(params)
  trainable = trainable_mask(config, params)
  rule = _get(opt, "decay", "matrices")
  if rule not in DECAY_RULES:
    raise errors.BadValue(f"unknown optimizer.decay {rule!r}; known: {DECAY_RULES}")
  decays = jax.tree.map(lambda n: rule == "all" or not re.search(_NO_DECAY, n), names)
  name = _get(opt, "name", "adamw")
  if name == "adamw":
    base = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=decays)
  elif name == "sgd":
    # torch.optim.SGD: weight decay is added to the gradient before momentum (coupled L2), dampening 0.
    base = optax.chain(optax.add_decayed_weights(opt.weight_decay, mask=decays),
                       optax.sgd(schedule, momentum=_get(opt, "momentum", 0.9) or None))
  else:
    raise errors.BadValue(f"unknown optimizer.name {name!r}; known: {OPTIMIZERS}")
  chain = optax.chain(optax.clip_by_global_norm(opt.grad_clip), base) if opt.grad_clip else base
  labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
  tx = optax.multi_transform({"train": chain, "freeze": optax.set_to_zero()}, labels)
  decay = float(_get(opt, "layer_decay", 1.0))
  if decay == 1.0:
    return tx
  scales = layer_scales(names, trainable, decay)
  scale = optax.stateless(lambda updates, params=None: jax.tree.map(lambda u, s: u * s, updates, scales))
  return optax.chain(tx, scale)


_EMBEDDINGS = r"(^|/)(patch_embed|cls_token|pos_embed|conv1|class_embedding|positional_embedding|ln_pre)(/|$)"


def layer_scales(names, trainable, decay: float):
  """The per-parameter learning-rate factors of `layer_decay` (module docstring), a pytree like `names`;
  `trainable`: the pytree of bools of `trainable_mask`."""
  block = lambda n: re.search(r"(?:^|/)resblocks_(\d+)/", n)
  trained = [n for n, t in zip(jax.tree.leaves(names), jax.tree.leaves(trainable)) if t]
  layers = 1 + max((int(block(n).group(1)) for n in trained if block(n)), default=-1)
  if layers == 0:
    raise errors.BadValue("optimizer.layer_decay needs trainable transformer blocks ('resblocks_i'); none is trainable")

  def layer_id(n: str) -> int:
    if re.search(_EMBEDDINGS, n):
      return 0
    return int(block(n).group(1)) + 1 if block(n) else layers

  return jax.tree.map(lambda n: decay ** (layers - layer_id(n)), names)


def ema_decay(config) -> float:
  """`config.optimizer.ema_decay` (0 when the config predates it): the weight EMA's decay, 0 = no EMA."""
  return float(_get(config.optimizer, "ema_decay", 0.0))


def ema_init(params, trainable):
  """The EMA's start: a copy of each trainable parameter, `optax.MaskedNode()` in place of each frozen one (a frozen
  parameter's average is itself, so it is not stored twice). `trainable`: `trainable_mask`'s pytree. A copy, not the
  same buffer, as the training step donates both."""
  return jax.tree.map(lambda p, t: jnp.copy(p) if t else optax.MaskedNode(), params, trainable)


def _masked(x) -> bool:
  return isinstance(x, optax.MaskedNode)


def ema_update(ema, params, decay: float):
  """The EMA after an optimiser step that produced `params`: decay ema + (1 - decay) params, leaf by leaf."""
  return jax.tree.map(lambda e, p: e if _masked(e) else decay * e + (1.0 - decay) * p, ema, params,
                      is_leaf=_masked)


def ema_params(ema, params):
  """The parameters the EMA stands for: the average where it keeps one, `params` (frozen) elsewhere."""
  return jax.tree.map(lambda e, p: p if _masked(e) else e, ema, params, is_leaf=_masked)
