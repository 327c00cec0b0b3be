"""The optimiser of the training loop: AdamW, warmup + cosine, parameter groups chosen by regex.

Kept apart from `flyp_jax.train` so that benchmarks and notebooks can build the same optimiser without
importing the data pipeline (TensorFlow).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import optax


def path_names(tree) -> Any:
  """A pytree of the '/'-joined key paths of `tree`'s leaves ('clip/visual/proj', 'head/kernel', ...)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: "/".join(str(getattr(k, "key", k)) for k in p), tree)


def make_optimizer(config, params, total_steps: int) -> optax.GradientTransformation:
  """AdamW with linear warmup and cosine decay on the parameters whose path matches `config.trainable`.

  `config.frozen` (regex) wins over `trainable`; frozen parameters get no update and no optimiser state use.
  Weight decay skips biases, norms, embeddings' positional tables and the logit scale, as CLIP trains.
  """
  opt = config.optimizer
  schedule = optax.warmup_cosine_decay_schedule(0.0, opt.lr, min(opt.warmup_steps, max(total_steps - 1, 0)),
                                                max(total_steps, 1), end_value=0.0)
  names = path_names(params)
  trainable = lambda n: bool(re.search(config.trainable, n)) and not (config.frozen and re.search(config.frozen, n))
  if not any(trainable(n) for n in jax.tree_util.tree_leaves(names)):
    raise ValueError(f"no parameter matches trainable={config.trainable!r} (frozen={config.frozen!r})")
  decays = lambda n: not re.search(r"(bias|scale|positional_embedding|class_embedding|logit_scale)$", n)
  adamw = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                      mask=jax.tree_util.tree_map(decays, names))
  chain = optax.chain(optax.clip_by_global_norm(opt.grad_clip), adamw) if opt.grad_clip else adamw
  labels = jax.tree_util.tree_map(lambda n: "train" if trainable(n) else "freeze", names)
  return optax.multi_transform({"train": chain, "freeze": optax.set_to_zero()}, labels)
