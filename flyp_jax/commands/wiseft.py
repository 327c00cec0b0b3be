"""WiSE-FT (Wortsman et al., 2022): interpolate zero-shot and fine-tuned weights, theta = (1 - a) z + a f.

`sweep` evaluates the interpolation at several alphas, `pick` chooses alpha on ID data (the suite's held-out ID
validation set where it has one, else ID accuracy as WiSE-FT does; OOD data never informs the choice), and `write` leaves wiseft.json, wiseft.md and wiseft.png in a workdir.
Results are dicts {'alpha': a, **evaluate_fn(params)} with the evaluator's keys ('avg_id/top1',
'avg_ood/top1', fractions in [0, 1]).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import (config_checks, configs_lib, errors, evaluate, files, parallel, run_paths, runs,
                      train)
from flyp_jax.models import converted
from flyp_jax.data import classnames, templates

ID_KEY, OOD_KEY = "avg_id/top1", "avg_ood/top1"
DEFAULT_ALPHAS = tuple(i / 10 for i in range(11))


def _path_str(path) -> str:
  """'visual/proj' from a key path of dict keys, sequence indices or attribute names."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _dtype(x) -> np.dtype:
  # The leaf's own dtype: jnp.result_type would turn a numpy float64 into float32 when x64 is off.
  return np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)


def _mismatches(zeroshot, finetuned) -> list[str]:
  """Human-readable differences in keys ('a/b' paths), shapes and dtypes between two params pytrees."""
  z = {_path_str(p): v for p, v in jax.tree.flatten_with_path(zeroshot)[0]}
  f = {_path_str(p): v for p, v in jax.tree.flatten_with_path(finetuned)[0]}
  out = [f"{p}: missing from finetuned" for p in sorted(z.keys() - f.keys())]
  out += [f"{p}: only in finetuned" for p in sorted(f.keys() - z.keys())]
  for p in sorted(z.keys() & f.keys()):
    if np.shape(z[p]) != np.shape(f[p]):
      out.append(f"{p}: {np.shape(z[p])} vs {np.shape(f[p])}")
    elif _dtype(z[p]) != _dtype(f[p]):
      out.append(f"{p}: {_dtype(z[p])} vs {_dtype(f[p])}")
  if not out and jax.tree.structure(zeroshot) != jax.tree.structure(finetuned):
    out.append(f"containers differ: {jax.tree.structure(zeroshot)} vs "
               f"{jax.tree.structure(finetuned)}")
  return out


def interpolate(zeroshot, finetuned, alpha):
  """(1 - alpha) * zeroshot + alpha * finetuned, leaf by leaf; each leaf keeps its dtype.

  zeroshot, finetuned: params pytrees with the same structure, shapes and dtypes (else ValueError naming the
  paths, e.g. 'visual/proj: (768, 512) vs (768, 256)'); leaves numpy or jax arrays. alpha: scalar in [0, 1],
  checked when concrete; a traced alpha (under `jax.jit`) is not checked. Numpy leaves stay numpy for a
  concrete alpha, so host copies of big models are not moved to the device.
  """
  problems = _mismatches(zeroshot, finetuned)
  if problems:
    raise errors.BadValue("zeroshot and finetuned params differ:\n  " + "\n  ".join(problems))
  try:
    a = float(alpha)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    a = None  # traced
  if a is not None and not 0.0 <= a <= 1.0:  # also rejects NaN
    raise errors.BadValue(f"alpha must be in [0, 1], got {alpha}")

  w = a if a is not None else alpha

  def mix(z, f):
    xp = np if a is not None and isinstance(z, np.ndarray) and isinstance(f, np.ndarray) else jnp
    dtype = _dtype(z)
    # Low-precision leaves (bfloat16) are mixed in float32 and rounded once, back to their own dtype.
    compute = jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else jnp.float32
    z, f = xp.asarray(z, compute), xp.asarray(f, compute)
    # (1 - w) z + w f rather than z + w (f - z): exact endpoints, alpha = 1 returns f bit for bit.
    return ((1 - w) * z + w * f).astype(dtype)

  return jax.tree.map(mix, zeroshot, finetuned)


def sweep(evaluate_fn: Callable[[Any], dict], zeroshot, finetuned, alphas: Sequence[float] = DEFAULT_ALPHAS,
          keys: Sequence[str] = (ID_KEY, OOD_KEY)) -> list[dict]:
  """[{'alpha': a, **evaluate_fn(interpolate(zeroshot, finetuned, a))} for a in alphas]; a line per alpha with its
  `keys` and the time left."""
  results, start = [], time.time()
  for i, alpha in enumerate(alphas):
    metrics = evaluate_fn(interpolate(zeroshot, finetuned, alpha))
    results.append({"alpha": float(alpha), **metrics})
    elapsed = time.time() - start
    shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in dict.fromkeys(keys) if k in metrics)
    print(f"alpha {alpha:.2f} ({i + 1}/{len(alphas)}): {shown}; ~{elapsed / (i + 1) * (len(alphas) - i - 1):.0f}s left",
          flush=True)
  return results


def pick(results: Sequence[dict], key: str = ID_KEY) -> dict:
  """The result with the highest `key` (ID accuracy by default, as WiSE-FT chooses); ties -> smaller alpha."""
  if not results:
    raise errors.BadValue("no results to pick from")
  missing = [r["alpha"] for r in results if key not in r]
  if missing:
    raise KeyError(f"{key!r} missing from the results at alpha {missing}; keys: {sorted(results[0])}")
  return max(results, key=lambda r: (r[key], -r["alpha"]))


def table(results: Sequence[dict], keys: Sequence[str] = (ID_KEY, OOD_KEY), pick_key: Optional[str] = ID_KEY) -> str:
  """A markdown table, one row per alpha, values as in the results (fractions); the picked alpha in bold."""
  best = pick(results, pick_key)["alpha"] if pick_key and all(pick_key in r for r in results) else None
  lines = ["| alpha | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
  for r in results:
    alpha = f"**{r['alpha']:.2f}**" if r["alpha"] == best else f"{r['alpha']:.2f}"
    cells = [f"{r[k]:.4f}" if isinstance(r.get(k), (int, float, np.number)) else str(r.get(k, "")) for k in keys]
    lines.append(f"| {alpha} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(results: Sequence[dict], path: str, title: str = "WiSE-FT", extra: Optional[dict] = None,
         pick_key: str = ID_KEY) -> str:
  """Writes a PNG of average OOD vs ID top-1 (in %), one point per alpha along the interpolation path.

  Zero-shot (alpha = 0) and fine-tuned (alpha = 1) are highlighted when swept, the picked alpha is circled, and
  `extra` {'label': (id_top1, ood_top1)} (fractions, like the results) adds labelled reference points.
  Returns `path`.
  """
  import matplotlib
  matplotlib.use("Agg")  # files only; no display on TPU hosts or in CI
  import matplotlib.pyplot as plt

  alphas = [r["alpha"] for r in results]
  x = [100 * r[ID_KEY] for r in results]
  y = [100 * r[OOD_KEY] for r in results]
  fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=150)
  ax.plot(x, y, "-o", color="tab:blue", markersize=4, zorder=2, label="WiSE-FT (1 - α) zero-shot + α fine-tuned")
  for a, xi, yi in zip(alphas, x, y):
    ax.annotate(f"{a:g}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7, color="tab:blue")
  for a, marker, color, label in ((0.0, "s", "tab:green", "zero-shot (α=0)"),
                                  (1.0, "D", "tab:red", "fine-tuned (α=1)")):
    if a in alphas:
      i = alphas.index(a)
      ax.scatter([x[i]], [y[i]], marker=marker, s=70, color=color, zorder=3, label=label)
  best = pick(results, pick_key)
  ax.scatter([100 * best[ID_KEY]], [100 * best[OOD_KEY]], s=220, facecolors="none", edgecolors="black",
             linewidths=1.5, zorder=4, label=f"picked α={best['alpha']:g} (best {pick_key})")
  styles = itertools.cycle(zip("*P^vX", ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")))
  for (label, (xi, yi)), (marker, color) in zip((extra or {}).items(), styles):
    ax.scatter([100 * xi], [100 * yi], marker=marker, s=140, color=color, zorder=3, label=label)
    ax.annotate(label, (100 * xi, 100 * yi), textcoords="offset points", xytext=(6, 6), fontsize=8, color=color)
  ax.margins(0.08)  # room for the alpha labels and markers at the ends of the path
  return save_accuracy_plot(fig, ax, path, title)


def save_accuracy_plot(fig, ax, path: str, title: str, legend_size: int = 8) -> str:
  """Labels an average-OOD-vs-ID top-1 (%) plot, writes it as a PNG to `path` (local or gs://), closes it."""
  import matplotlib.pyplot as plt
  ax.set_xlabel("ID top-1 accuracy (%)")
  ax.set_ylabel("average OOD top-1 accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=legend_size, loc="best")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  plt.close(fig)
  files.makedirs(os.path.dirname(files.absolute(path)))
  files.write_atomically(path, buffer.getvalue())
  return path


def _json_default(v):
  if isinstance(v, (np.generic, jax.Array)):
    return np.asarray(v).tolist()
  raise TypeError(f"{type(v).__name__} is not JSON serialisable")


OUTPUTS = ("wiseft.json", "wiseft.md", "wiseft.png")


def write(results: Sequence[dict], workdir: str, title: str = "WiSE-FT", extra: Optional[dict] = None,
          pick_key: str = ID_KEY, config: Optional[dict] = None) -> dict:
  """Writes wiseft.json (results, picked alpha and `config`, the settings that made them), wiseft.md (table) and
  wiseft.png (plot) into workdir."""
  best = pick(results, pick_key)
  if jax.process_index() != 0:
    return best
  files.makedirs(workdir)
  plot(results, os.path.join(workdir, "wiseft.png"), title=title, extra=extra, pick_key=pick_key)
  with files.open_file(os.path.join(workdir, "wiseft.md"), "w") as f:
    f.write(f"# {title}\n\nalpha picked on {pick_key}: {best['alpha']:g}\n\n" + table(results, table_keys(pick_key),
                                                                                       pick_key))
  files.write_atomically(os.path.join(workdir, "wiseft.json"), json.dumps(  # last: its presence means finished
      {"results": list(results), "picked_alpha": best["alpha"], "picked_on": pick_key, "config": config},
      indent=2, default=_json_default))
  return best


def table_keys(pick_key: str) -> tuple[str, ...]:
  return tuple(dict.fromkeys((pick_key, ID_KEY, OOD_KEY)))


# ----------------------------------------------------------------------------------- the WiSE-FT command
def run(config, workdir: str) -> dict:
  """Interpolate the zero-shot model (`config.model`) with a fine-tuned run (`config.wiseft.finetuned`, a
  workdir, made first with `config.wiseft.finetuned_config` if unfinished), evaluate every alpha on the
  suite, pick alpha on ID accuracy, and write wiseft.json / .md / .png to `workdir`.

  A fine-tuned run with a linear head (FT, LP-FT) is interpolated head included, the zero-shot side using
  the zero-shot head (bias 0), as WiSE-FT does; a FLYP run has no head and is scored zero-shot throughout.
  """
  ft_dir = run_paths.resolve(workdir, config.wiseft.finetuned)
  # What the results depend on: these settings, and the fine-tuned run's reported results (a run trained again
  # reports others).
  ft_results = os.path.join(ft_dir, "results.json")
  settings = {**config_checks.resolved(config), "finetuned_results": files.read_json(ft_results)}
  done = files.read_json(os.path.join(workdir, "wiseft.json"))
  if done and done.get("config") == settings:
    print(f"{files.absolute(workdir)} holds a finished WiSE-FT of these settings and this fine-tuned run: reported as "
          f"it is (another --workdir computes it anew)", flush=True)
    return _report(done["results"], done["picked_on"], workdir)
  files.makedirs(workdir)
  mesh = parallel.make_mesh(config.model_axis)
  model, zeroshot = train.load_clip(config, workdir)
  # As the loop reads a finished run: a final/ that does not load is moved aside (its run's command writes it again
  # from the checkpoints), and one without its marker is half-written. Said, not silent: with a custom --workdir
  # the fine-tuning run is made beside it, not in workdirs/.
  if not runs.ensure_trained(ft_dir, config.wiseft.finetuned_config, train.run, what="WiSE-FT's fine-tuned run",
                             load=lambda spec: configs_lib.load_sub_run(spec, config)):
    raise errors.NotFound(f"{ft_dir} holds no finished fine-tuning run (final/{converted.MARKER}); run one "
                          f"there (its own command writes a damaged or half-written final/ again from its "
                          f"checkpoints), or point --config.wiseft.finetuned at one (a relative path is relative "
                          f"to the workdir's parent)")
  print(f"WiSE-FT's fine-tuned run: {ft_dir}", flush=True)
  tuned = files.read_json(os.path.join(ft_dir, "config.json")) or {"config": {}}
  if tuned["config"].get("ft", {}).get("head_input") == "raw":
    raise errors.BadValue(f"{ft_dir} fine-tuned a head on raw image features (ft.head_input='raw', as LP-FT's code "
                          f"does), and WiSE-FT would average it with the zero-shot head, which reads L2-normalised "
                          f"features: the two heads' logits are on different scales, so their average has no "
                          f"meaning. Interpolate a run whose head reads normalised features (--config.ft.head_input="
                          f"normalized, from a probe with --config.lp.features=normalized, as configs/lpft.py:demo)")
  # the checkpoint selected on ID validation, in the zero-shot model's layout
  _, finetuned = runs.reported_params(ft_dir, config.model)
  zeroshot = {"clip": zeroshot}
  if "head" in finetuned:
    kernel = np.asarray(evaluate.zeroshot_head(model, jax.device_put(zeroshot["clip"], parallel.replicated(mesh)),
                                               classnames.of_data(config.data),
                                               templates.get(config.data.templates), mesh))
    zeroshot["head"] = {"kernel": kernel, "bias": np.zeros(kernel.shape[1], np.float32)}
  evaluate_fn, _, pick_key = scorer(config, model, mesh)
  results = sweep(evaluate_fn, zeroshot, finetuned, alphas=tuple(config.wiseft.alphas), keys=table_keys(pick_key))
  settings["finetuned_results"] = files.read_json(ft_results)  # if the run was made just now
  write(results, workdir, title=f"WiSE-FT: {config.name}", pick_key=pick_key, config=settings)
  return _report(results, pick_key, workdir)


def scorer(config, model, mesh) -> tuple[Callable[[dict], dict], Optional[Callable[[dict], dict]], str]:
  """(evaluate, validate, key) for weights combined from runs ({'clip': ..., 'head': ...}, host or device arrays):
  `evaluate` gives the suite's results plus ID validation's, `validate` ID validation's alone (None where the suite
  has no validation set), and `key` the metric that picks on ID data: the held-out validation set's selection
  metric where there is one, else ID accuracy. Both print nothing (their callers print a line per model)."""
  evaluator = evaluate.from_config(model, config, mesh)
  validator = train.make_validator(config, model, mesh, quiet=True)

  def validate(params):
    params = jax.device_put(params, parallel.replicated(mesh))
    return validator(params["clip"], params.get("head"))

  def evaluate_fn(params):
    params = jax.device_put(params, parallel.replicated(mesh))
    return {**evaluator(params["clip"], head=params.get("head")), **(validate(params) if validator else {})}

  return evaluate_fn, validate if validator else None, train.selection_key(config) if validator else ID_KEY


def _report(results: Sequence[dict], pick_key: str, workdir: str) -> dict:
  """Prints the table and the files written; the picked alpha's results."""
  picked = pick(results, pick_key)
  rows = table(results, table_keys(pick_key), pick_key)
  written = ", ".join(os.path.join(files.absolute(workdir), n) for n in OUTPUTS)
  print(f"\nWiSE-FT, alpha picked on {pick_key}: {picked['alpha']:g}\n\n{rows}\nwritten: {written}", flush=True)
  return {"picked_alpha": picked["alpha"], "picked_on": pick_key, **{k: v for k, v in picked.items() if k != "alpha"}}
