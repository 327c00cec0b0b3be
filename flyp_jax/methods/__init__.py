"""Training methods: what each trains and its loss, over the one training loop in `flyp_jax.train`.

A training method is a `Method`: the hooks below, each a function of the run's `config` (its ConfigDict), the
loop's `model` (a CLIP, or what `load_model` gives) and the device `mesh`. Its module (flyp, ft, pretrain,
attention_transfer) defines `METHOD = Method(...)`, and `get(name)` finds it by `config.method`. `train._Run`
calls the hooks, and `flyp_jax.tpu_plan` the shape-only ones, to compile the same programs for a TPU slice without
data or weights. Commands that run or combine training runs (lp, wiseft, compare, few_shot) are in
`flyp_jax.commands`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional

from flyp_jax import errors


def _clip_and_head(config, params) -> tuple[Any, Optional[Any]]:
  return params["clip"], params.get("head")


@dataclasses.dataclass(frozen=True)
class Method:
  """The hooks of a training method; the defaulted ones are the loop's default behaviour."""
  # extra_params(config, model, clip_params, mesh, evaluator) -> dict: the trained parameters beside params['clip']
  # (FT's zero-shot 'head', attention transfer's 'student'); {} for none. `evaluator` builds zero-shot heads
  # (None when the run has no evaluation).
  extra_params: Callable[..., dict]
  # extra_param_shapes(config, model) -> dict: the same tree as jax.ShapeDtypeStructs, without computing it.
  extra_param_shapes: Callable[..., dict]
  # batches(config, model, mesh, start_step) -> iterator of dict: the global batches from `start_step` on (exact
  # on resume).
  batches: Callable[..., Any]
  # batch_shapes(config, model) -> dict: one batch as jax.ShapeDtypeStructs (global shapes).
  batch_shapes: Callable[..., dict]
  # make_loss(config, model, mesh) -> loss_fn(params, batch, rng) -> (loss, metrics): what
  # `train.make_train_step` differentiates (with gradient accumulation, clipping, donation).
  make_loss: Callable[..., Callable]
  # load_model(config, workdir) -> (model, clip_params), or None for the config's CLIP (`train.load_clip`, also
  # what a None hook means).
  load_model: Optional[Callable[..., tuple]] = None
  # abstract_model(config) -> (model, shapes of clip_params) or None; None: `train.clip_model` of model.variant.
  abstract_model: Optional[Callable[..., Optional[tuple]]] = None
  # eval_model(config, model) -> the module evaluated.
  eval_model: Callable[..., Any] = lambda config, model: model
  # eval_params(config, params) -> (params of eval_model, head).
  eval_params: Callable[..., tuple] = _clip_and_head
  # final_params(config, host params) -> (params, head) saved as final/; None: as eval_params.
  final_params: Optional[Callable[..., tuple]] = None
  # save_final(config, dst, params, head) writes final/ (or selected/); None: a CLIP checkpoint with head.npz.
  save_final: Optional[Callable[..., None]] = None
  # finish(config, evaluator, params, workdir, results) -> results: the method's own rows added to the selected
  # step's evaluation (attention transfer's teacher and ensemble).
  finish: Callable[..., dict] = lambda config, evaluator, params, workdir, results: results
  # starts_zero_shot(config) -> bool: whether step 0 is the zero-shot model (its label in the final table).
  starts_zero_shot: Callable[..., bool] = lambda config: False
  # The config fields that name other runs' workdirs, relative to the parent of this run's (flyp_jax.run_paths).
  run_paths: tuple[str, ...] = ()
  # (path field, config field) of each training run this one builds on: the loop finishes it first, running the
  # config there when one is given and the run has not finished (`flyp_jax.runs.ensure_trained`); an empty path
  # field is no such run.
  prerequisites: tuple[tuple[str, str], ...] = ()


NAMES = ("flyp", "ft", "ce_ablation", "pretrain", "attention_transfer")  # each a module here defining METHOD


def get(name: str) -> Method:
  """The training method `name` (`config.method`)."""
  if name not in NAMES:
    raise errors.BadValue(f"unknown training method {name!r}; known: {NAMES}")
  return importlib.import_module(f"{__name__}.{name}").METHOD
