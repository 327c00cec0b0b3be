"""Attention transfer (Li et al., 2024, "On the surprising effectiveness of attention transfer for vision
transformers"): a randomly initialised student image tower, trained with cross-entropy and a linear head,
guided only by a frozen pretrained teacher's attention maps.

Modes (`config.at.mode`):
  copy     every transferred layer of the student mixes its values with the teacher's post-softmax map
           (per head) instead of its own; the teacher runs at evaluation too (`TransferCLIP`).
  distill  the student computes its own attention; the loss adds `config.at.weight` times the attention
           cross-entropy over keys (`losses.attention_distillation`), summed over the transferred layers.
  none     the same student, head and schedule without any guidance: the from-scratch baseline.

Transferred layers are the first L - `config.at.skip_last` (the reference implementation's `end_layer`,
e.g. -6 of ViT-L's 24 layers when distilling; all layers when copying).

Parameters: {'clip': the pretrained CLIP (teacher; frozen by the config, its maps under stop_gradient),
'student': the student's image tower (the tree of a CLIP's 'visual'), 'head': {'kernel' [E, C], 'bias' [C]}}
on L2-normalised student features, as the other methods' heads. The teacher and the student share the
mesh and the jitted step.

The final evaluation also reports the teacher alone ('teacher/...') and the ensemble of the student with it
('ensemble/...': averaged softmax probabilities). The teacher there is the fine-tuned CLIP of the run in
`config.at.ensemble.path` (its final/ and final/head.npz; made first with `config.at.ensemble.config` if it
has not finished), or, with an empty path, the pretrained teacher with its zero-shot head.

final/ holds a CLIP whose image tower is the student (text tower and logit scale from the teacher) and
head.npz. A copy-mode student cannot run alone: evaluate it with `TransferCLIP` and the teacher's image
tower.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flyp_jax import evaluate, files, losses, models
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.methods import common
from flyp_jax.models.clip import TextTransformer, VisionTransformer

MODES = ("copy", "distill", "none")


def transfer_layers(config, n_layers: int) -> tuple[int, ...]:
  """Indices of the layers whose attention is copied or distilled: the first n_layers - skip_last."""
  skip = config.at.skip_last
  if not 0 <= skip < n_layers:
    raise ValueError(f"at.skip_last must be in [0, {n_layers}) for a {n_layers}-layer tower, got {skip}")
  return tuple(range(n_layers - skip))


def _check_mode(config) -> str:
  if config.at.mode not in MODES:
    raise ValueError(f"at.mode must be one of {MODES}, got {config.at.mode!r}")
  return config.at.mode


def attention_entropy(maps: Sequence[jax.Array]) -> jax.Array:
  """Mean entropy (nats) over layers, batch, heads and queries of post-softmax maps [B, H, T_q, T_k]: ln T_k
  for uniform attention, 0 for one-hot. A from-scratch ViT trained at too high a learning rate collapses its
  attention towards one-hot rows (low entropy) and loses accuracy; distillation holds it at the teacher's."""
  per_layer = [jnp.mean(-jnp.sum(jax.scipy.special.xlogy(m, m), axis=-1)) for m in
               (jnp.asarray(m, jnp.float32) for m in maps)]
  return sum(per_layer) / len(per_layer)


def copied_maps(teacher_maps: Sequence[jax.Array], layers: Sequence[int]) -> list[Optional[jax.Array]]:
  """The student's `attention_maps` argument: the teacher's map (without gradient) where copied, else None."""
  return [jax.lax.stop_gradient(m) if i in layers else None for i, m in enumerate(teacher_maps)]


class TransferCLIP(nn.Module):
  """A CLIP whose image features are an attention-copy student's: `encode_image` runs the teacher's image
  tower for its maps and the student with them. Parameters: {'visual': student, 'teacher': teacher's image
  tower, 'text', 'logit_scale'} (see `eval_params`), so evaluators and zero-shot heads use it as a CLIP."""
  config: models.CLIPConfig
  layers: tuple[int, ...]
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    self.visual = VisionTransformer(self.config, self.dtype, self.remat)
    self.teacher = VisionTransformer(self.config, self.dtype, self.remat)
    self.text = TextTransformer(self.config, self.dtype, self.remat)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), (), jnp.float32)

  def encode_image(self, images: jax.Array) -> jax.Array:
    _, aux = self.teacher(images, return_attention=True)
    return self.visual(images, copied_maps(aux["attention"], self.layers))[0]

  def encode_text(self, tokens: jax.Array) -> jax.Array:
    return self.text(tokens)[0]


# --------------------------------------------------------------------------------- the training loop's hooks
def extra_params(config, model, clip_params, mesh, evaluator) -> dict:
  _check_mode(config)
  transfer_layers(config, model.config.vision_layers)
  tower = VisionTransformer(model.config, model.dtype, model.remat)
  images = jnp.zeros((1, model.config.image_size, model.config.image_size, 3), jnp.float32)
  # A seed of its own: with a randomly initialised teacher (tests), the student must not start as its copy.
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  student = jax.jit(lambda r: tower.init(r, images)["params"])(rng)
  n_classes = len(classnames_lib.get(config.data.classnames))
  # A zero head: the student's random features carry no class information to start from.
  head = {"kernel": np.zeros((model.config.embed_dim, n_classes), np.float32),
          "bias": np.zeros((n_classes,), np.float32)}
  return {"student": student, "head": head}


def batches(config, model, mesh, start_step: int):
  return common.labelled_batches(config, model, mesh, start_step)


def make_loss(config, model, mesh):
  mode = _check_mode(config)
  tower = VisionTransformer(model.config, model.dtype, model.remat)
  layers = transfer_layers(config, model.config.vision_layers)

  def loss_fn(params, batch, rng):
    images, metrics = batch["image"], {}
    if mode == "none":
      # Without return_attention: asking for the maps would swap JAX's fused attention for the explicit one,
      # which changes the baseline's numbers slightly, so the baseline logs no attention entropy.
      features, student = tower.apply({"params": params["student"]}, images)
      attention = jnp.zeros((), jnp.float32)
    else:
      _, teacher = tower.apply({"params": params["clip"]["visual"]}, images, return_attention=True)
      if mode == "copy":
        features, student = tower.apply({"params": params["student"]}, images, return_attention=True,
                                        attention_maps=copied_maps(teacher["attention"], layers))
        attention = jnp.zeros((), jnp.float32)
      else:
        features, student = tower.apply({"params": params["student"]}, images, return_attention=True)
        t = [jax.lax.stop_gradient(teacher["attention"][i]) for i in layers]
        s = [student["attention"][i] for i in layers]
        attention = losses.attention_distillation(t, s)
        # The divergence itself (0 when the maps agree), per transferred layer: what distillation drives down.
        metrics["attention_kl"] = jax.lax.stop_gradient(losses.attention_distillation(t, s, kind="kl")) / len(t)
    if student["attention"] is not None:
      # Of the maps the student uses (its own, or the teacher's where copied): shows attention collapse.
      metrics["attention_entropy"] = jax.lax.stop_gradient(attention_entropy(student["attention"]))
    logits = evaluate.apply_head(models.normalize(features), params["head"])
    ce = losses.cross_entropy(logits, batch["label"], config.at.label_smoothing)
    metrics.update(cross_entropy=ce, attention_loss=attention)
    return ce + config.at.weight * attention, metrics

  return loss_fn


def eval_model(config, model):
  """The module evaluation runs: the CLIP itself, or `TransferCLIP` when the student copies attention."""
  if _check_mode(config) != "copy":
    return model
  return TransferCLIP(model.config, transfer_layers(config, model.config.vision_layers), model.dtype, model.remat)


def eval_params(config, params) -> tuple[dict, Any]:
  """(params of `eval_model`, head): the CLIP with the student as its image tower, and for `TransferCLIP`
  the teacher's image tower beside it."""
  clip, head = final_params(config, params)
  if _check_mode(config) == "copy":
    clip["teacher"] = params["clip"]["visual"]
  return clip, head


def final_params(config, params) -> tuple[dict, Any]:
  """(CLIP params, head) saved as final/: the CLIP with the student as its image tower."""
  return {**params["clip"], "visual": params["student"]}, params["head"]


def finish(config, evaluator, params, workdir: str, results: dict) -> dict:
  """Adds the teacher alone ('teacher/...') and its ensemble with the student ('ensemble/...') to the reported
  results (`params`: the selected step's); the student's own numbers keep the usual keys."""
  if evaluator is None:
    return results
  path = _ensemble_teacher_dir(config, workdir)
  if path is None:  # after a long run, a missing teacher should not lose the student's results
    print(f"no ensemble: {config.at.ensemble.path} (from {workdir}) holds no finished run and "
          f"at.ensemble.config is empty; evaluate it later by re-running this command", flush=True)
    return results
  student_model = evaluator.model  # made with `eval_model` by the loop
  student_params, head = eval_params(config, params)
  if path:
    teacher_model, teacher_params = models.load_pretrained(os.path.join(path, "final"), dtype=config.model.dtype)
    head_file = os.path.join(path, "final", "head.npz")
    teacher_head = files.load_npz(head_file) if files.exists(head_file) else None
  else:
    c = student_model
    teacher_model, teacher_params, teacher_head = models.CLIP(c.config, c.dtype, c.remat), params["clip"], None
  out = evaluator.ensemble([(student_model, student_params, head), (teacher_model, teacher_params, teacher_head)],
                           names=("student", "teacher"))
  results = dict(results)
  for name in ("teacher", "ensemble"):
    results.update({f"{name}/{k}": v for k, v in out[name].items()})
  print(f"ensemble teacher: {path or 'the pretrained teacher with its zero-shot head'}")
  print(f"{'student':>9} / {'teacher':>9} / {'ensemble':>9}: "
        f"avg_id/top1 {_get(out['student'], 'avg_id/top1')} / {_get(out['teacher'], 'avg_id/top1')} / "
        f"{_get(out['ensemble'], 'avg_id/top1')}, avg_ood/top1 {_get(out['student'], 'avg_ood/top1')} / "
        f"{_get(out['teacher'], 'avg_ood/top1')} / {_get(out['ensemble'], 'avg_ood/top1')}", flush=True)
  return results


def _get(results: dict, key: str) -> str:
  return f"{results[key]:.4f}" if key in results else "-"


def _ensemble_teacher_dir(config, workdir: str) -> Optional[str]:
  """The fine-tuned teacher's run directory ('' for the zero-shot teacher), made first if it has not finished
  and a config says how; None if it has not finished and none does.

  A relative path is relative to the workdir's parent (`flyp_jax.run_paths`), as every path to another run is.
  """
  from flyp_jax import configs_lib, convert, run_paths, train  # train imports the methods: import it when called
  e = config.at.ensemble
  if not e.path:
    return ""
  path = run_paths.resolve(workdir, e.path)
  if not files.exists(os.path.join(path, "final", convert.CONVERTED_MARKER)):
    if not e.config:
      return None
    logging.info("No finished run in %s: running %s there first (the ensemble's teacher).", path, e.config)
    train.run(configs_lib.load(e.config), path)
  return path
