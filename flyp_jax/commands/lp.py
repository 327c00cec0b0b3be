"""Linear probe (CLIP, WiSE-FT, LP-FT): multinomial logistic regression on frozen image features.

Two kinds of features (`lp.features`): 'normalized', L2-normalised as WiSE-FT's head reads them (the head FT,
LP-FT and WiSE-FT share); or 'raw', as LP-FT's code (AnanyaKumar/transfer_learning
`unlabeled_extrapolation/log_reg_sk.py`) fits its probe: `encode_image`'s features standardised by one scalar mean
and standard deviation of the whole training matrix (`normalize_features`), fitted on the classes present in
training, then mapped back to raw features (`inv_normalize_weights`) with zero rows for absent classes
(`pad_head`). The fit is full batch: L-BFGS with a zoom line search (`optax.lbfgs`) inside one `jax.jit`, so a
sweep over the regularisation strength reuses one compilation per feature shape; with `lp.warm_start` each fit of
the sweep (ascending C, i.e. descending l2) starts from the previous one's solution, as the reference's
`LogisticRegression(warm_start=True)` does (`test_log_reg_warm_starting`).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from flyp_jax import errors, evaluate, files, parallel, train
from flyp_jax.data import classnames, label_maps, pipeline
from flyp_jax.methods import ft


def objective(kernel, bias, x, y, l2):
  """Mean cross-entropy (nats) over the N examples + (l2 / 2) * ||kernel||_F^2; the bias is not penalised.

  kernel [D, C], bias [C], x [N, D] float, y [N] int in [0, C), l2 >= 0 scalar.
  """
  logits = x @ kernel + bias
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.mean(ce) + 0.5 * l2 * jnp.sum(kernel ** 2)


FEATURES = ("normalized", "raw")  # lp.features


# num_classes fixes the parameter shapes, so it is static; l2, max_iter, tol and the starting point are traced so
# that a sweep over any of them runs the compiled fit again instead of compiling a new one.
@functools.partial(jax.jit, static_argnames="num_classes")
def _fit(x, y, l2, max_iter, tol, kernel, bias, *, num_classes):
  params = {"kernel": kernel, "bias": bias}
  fun = lambda p: objective(p["kernel"], p["bias"], x, y, l2)
  opt = optax.lbfgs()  # default line search: scale_by_zoom_linesearch (strong Wolfe conditions)
  # Reuses the value and gradient the line search already computed at the accepted point.
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(params, updates), state

  def not_done(carry):
    _, state = carry
    count = otu.tree_get(state, "count")
    grad_norm = otu.tree_norm(otu.tree_get(state, "grad"))
    return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

  params, state = jax.lax.while_loop(not_done, step, (params, opt.init(params)))
  info = {"iterations": otu.tree_get(state, "count"), "loss": otu.tree_get(state, "value"),
          "grad_norm": otu.tree_norm(otu.tree_get(state, "grad"))}
  return params["kernel"], params["bias"], info


def fit_logistic_regression(train_x, train_y, num_classes: int, *, l2: float, max_iter: int = 1000,
                            tol: float = 1e-6, init=None):
  """Fits logits = x @ kernel + bias by minimising `objective` (mean cross-entropy + (l2 / 2) ||kernel||^2).

  train_x [N, D] float (cast to float32), L2-normalised or standardised by the caller (l2 values are then
  comparable across models); train_y [N] int class ids in [0, num_classes). Starts from `init` (kernel, bias), or
  zero, and stops after `max_iter` L-BFGS iterations or when the gradient's global L2 norm drops below `tol`.
  Returns (kernel [D, num_classes] float32, bias [num_classes] float32).
  """
  d = np.shape(train_x)[1]
  kernel, bias = init if init is not None else (np.zeros((d, num_classes), np.float32), np.zeros(num_classes, np.float32))
  kernel, bias, info = _fit(jnp.asarray(train_x, jnp.float32), jnp.asarray(train_y, jnp.int32),
                            jnp.float32(l2), jnp.int32(max_iter), jnp.float32(tol), jnp.asarray(kernel, jnp.float32),
                            jnp.asarray(bias, jnp.float32), num_classes=num_classes)
  info = jax.device_get(info)
  if info["iterations"] >= max_iter:
    logging.info("Logistic regression (l2=%g) stopped at max_iter=%d with gradient norm %.2e > tol=%.0e.",
                 l2, max_iter, info["grad_norm"], tol)
  return kernel, bias


def top1(kernel, bias, x, y) -> float:
  """Fraction of the N examples x [N, D] whose argmax logit is the label y [N]."""
  logits = jnp.asarray(x, jnp.float32) @ kernel + bias
  return float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y)))


def fit_with_validation(train_x, train_y, val_x, val_y, num_classes: int,
                        l2_grid: Sequence[float] = tuple(np.logspace(-6, 2, 9)), warm_start: bool = False,
                        **fit_kwargs) -> dict:
  """Picks l2 from `l2_grid` by top-1 on held-out ID data (val_x [M, D], val_y [M]) and returns that fit.

  Ties go to the larger l2 (the simpler model). As in WiSE-FT, the returned head is the fit on the training
  split only; CLIP's paper instead refits on train + val with the chosen strength, which would change the
  effective regularisation (the mean loss is over more examples) and leave nothing to check the choice on.
  Features are expected L2-normalised or standardised, as for `fit_logistic_regression` (which gets
  `fit_kwargs`). With `warm_start` the fits run from the largest l2 down, each starting from the one before.
  Returns {'kernel' [D, C] float32, 'bias' [C] float32, 'l2', 'val_top1', 'grid': [(l2, val_top1), ...]}.
  """
  grid, best, previous = [], None, None
  for l2 in sorted((float(v) for v in l2_grid), reverse=True):  # C ascending, as the reference's sweep
    kernel, bias = fit_logistic_regression(train_x, train_y, num_classes, l2=l2, init=previous, **fit_kwargs)
    previous = (kernel, bias) if warm_start else None
    acc = top1(kernel, bias, val_x, val_y)
    logging.info("Linear probe l2=%.0e: val top-1 %.4f", l2, acc)
    grid.append((l2, acc))
    if best is None or acc > best["val_top1"]:  # descending l2, so > keeps the larger l2 on ties
      best = {"kernel": kernel, "bias": bias, "l2": l2, "val_top1": acc}
  return {**best, "grid": grid[::-1]}


def fit_raw_probe(train_x, train_y, val_x, val_y, num_classes: int, **fit_kwargs) -> dict:
  """LP-FT's probe on raw features (log_reg_sk.py `main`): standardise by the training matrix's one mean and
  standard deviation, fit on the classes present in training (`fit_with_validation` gets `fit_kwargs`), map the
  head back to raw features (`inv_normalize_weights`: kernel / std, bias - mean / std * the kernel's column sums),
  and give absent classes zero columns (`pad_head`). Returns `fit_with_validation`'s dict with the raw-feature
  head, plus 'mean', 'std' and 'classes' (those present)."""
  train_x, val_x = np.asarray(train_x, np.float64), np.asarray(val_x, np.float64)
  mean, std = float(np.mean(train_x)), float(np.std(train_x))
  present = np.unique(train_y)
  index = lambda y: np.where(np.isin(y, present), np.searchsorted(present, y), -1)  # -1: a class never predicted
  fit = fit_with_validation((train_x - mean) / std, index(train_y), (val_x - mean) / std, index(val_y),
                            len(present), **fit_kwargs)
  kernel, bias = np.asarray(fit["kernel"], np.float64), np.asarray(fit["bias"], np.float64)
  full_kernel, full_bias = np.zeros((kernel.shape[0], num_classes)), np.zeros(num_classes)
  full_kernel[:, present] = kernel / std
  full_bias[present] = bias - mean / std * kernel.sum(axis=0)
  return {**fit, "kernel": full_kernel.astype(np.float32), "bias": full_bias.astype(np.float32), "mean": mean,
          "std": std, "classes": present}


def l2_from_C(C, num_train: int) -> np.ndarray:
  """scikit-learn's inverse regularisation strengths C -> this module's l2 = 1 / (C * N).

  LogisticRegression minimises 0.5 ||W||^2 + C * sum of the N cross-entropies (intercept not penalised);
  divided by C * N that is `objective` with l2 = 1 / (C * N), so both have the same minimiser.
  """
  return 1.0 / (np.asarray(C, np.float64) * num_train)


# ---------------------------------------------------------------------------------------- the LP command
def extract_features(model, params, dataset: str, split: str, mesh, *, batch_size: int, data_dir=None,
                     image_size=None, corrupt_images: str = "error", label_map: str = "",
                     crop_fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """(image features [N, E] float32, labels [N] int32) of a split, without augmentation: the features a head of
  `model` reads (L2-normalised, or raw when `model.normalize_features` is False).

  Runs the jitted image tower over the evaluation pipeline's padded batches; padding rows (and skipped
  undecodable images, and examples of no class under `label_map`) are dropped. Every process gets all of them.
  """
  encode = jax.jit(functools.partial(evaluate.head_features, model))
  feats, labels = [], []
  for batch in pipeline.eval_batches(dataset, split, image_size=image_size or model.config.image_size,
                                     global_batch_size=batch_size, mesh=mesh, data_dir=data_dir,
                                     corrupt_images=corrupt_images, label_table=label_maps.class_table(label_map),
                                     crop_fraction=crop_fraction):
    f, label, mask = parallel.to_host((encode(params, batch["image"]), batch["label"], batch["mask"]))
    feats.append(f[mask == 1])
    labels.append(label[mask == 1])
  return np.concatenate(feats), np.concatenate(labels)


def run(config, workdir: str) -> dict:
  """Linear probe: features of `data.train_split` and `lp.val_split`, l2 picked on the latter, then the suite.

  Writes lp_head.npz ({'kernel', 'bias'}, the head LP-FT starts from, and the features it reads) and results.json
  to `workdir`.
  """
  if config.lp.features not in FEATURES:
    raise errors.BadValue(f"lp.features must be one of {FEATURES}, got {config.lp.features!r}")
  files.makedirs(workdir)
  mesh = parallel.make_mesh(config.model_axis)
  model, params = train.load_clip(config, workdir)
  model = model.clone(normalize_features=config.lp.features == "normalized")
  params = jax.device_put(params, parallel.replicated(mesh))
  d = config.data
  extract = lambda split: extract_features(model, params, d.dataset, split, mesh, batch_size=config.eval.batch_size,
                                           data_dir=d.data_dir or None, image_size=d.image_size or None,
                                           corrupt_images=d.corrupt_images, label_map=d.label_map,
                                           crop_fraction=d.eval_crop_fraction)
  (train_x, train_y), (val_x, val_y) = extract(d.train_split), extract(config.lp.val_split)
  n_classes = len(classnames.of_data(d))
  for split, y in ((d.train_split, train_y), (config.lp.val_split, val_y)):
    pipeline.check_labels(y, d.dataset, split, n_classes, d.classnames)
  c_grid = list(config.lp.C_grid)
  fit = (fit_raw_probe if config.lp.features == "raw" else fit_with_validation)(
      train_x, train_y, val_x, val_y, n_classes, warm_start=config.lp.warm_start, max_iter=config.lp.max_iter,
      l2_grid=l2_from_C(c_grid, len(train_y)) if c_grid else np.asarray(config.lp.l2_grid))
  logging.info("linear probe: l2 %.1e picked, validation top-1 %.4f", fit["l2"], fit["val_top1"])
  head = {"kernel": np.asarray(fit["kernel"]), "bias": np.asarray(fit["bias"])}
  if jax.process_index() == 0:  # with the features it reads, which LP-FT's fine-tuning checks
    files.save_npz(os.path.join(workdir, ft.PROBE_HEAD), {**head, ft.PROBE_INPUT: np.asarray(config.lp.features)})
  evaluator = evaluate.from_config(model, config, mesh)
  results = evaluator(params, head=jax.device_put(head, parallel.replicated(mesh)))
  results.update(lp_l2=float(fit["l2"]), lp_val_top1=float(fit["val_top1"]), lp_features=config.lp.features)
  if c_grid:
    results["lp_C"] = 1.0 / (float(fit["l2"]) * len(train_y))
  if jax.process_index() == 0:  # the picked strength and its validation accuracy beside the suite's metrics
    files.write_json(os.path.join(workdir, "results.json"), results)
  return results
