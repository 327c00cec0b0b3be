"""Attention transfer (Li et al., 2024, "On the surprising effectiveness of attention transfer for vision
transformers"): a randomly initialised ViT student, trained with cross-entropy and a linear head, guided only by
a frozen pretrained teacher's attention maps. As the authors' code (alexlioralexli/attention-transfer,
`models_dual_vit.py`, `main_finetune.py`), which docs/reproduction.md's table cites line by line.

Modes (`config.at.mode`):
  copy     each transferred layer of the student mixes its values with the teacher's post-softmax map (per
           head) instead of its own; the teacher runs at evaluation too (`StudentClassifier`).
  distill  the student computes its own attention; the loss adds `config.at.weight` times the cross-entropy
           of the teacher's map against log_softmax of the student's pre-softmax scores
           (`losses.attention_distillation`), summed over the transferred layers.
  none     the same student, head and schedule without any guidance: the from-scratch baseline.
  copy_q, copy_k, copy_v   the reference's variants: each transferred layer of the student uses the teacher's
           queries (with its own keys), keys (with its own queries) or values (with its own map) instead of its
           own; the teacher runs at evaluation too.
  distill_q, distill_k, distill_v   the loss adds `config.at.weight` times the mean squared error between the
           teacher's and the student's queries, keys or values (the raw projections, bias included), summed over
           the transferred layers (`models_dual_vit.py` `DualVisionTransformer.forward`).

Transferred layers: the first L + `config.at.end_layer` (the reference's `end_layer`, -3 by default in
`DualVisionTransformer`, which `main_finetune.py` never overrides: 21 of ViT-L's 24 layers, in both modes).

Teacher (`config.at.teacher.kind`): 'clip', the image tower of the loop's CLIP (`config.model`; this project's
extension), or 'vit', a timm / MAE ViT checkpoint at `config.at.teacher.path` (`flyp_jax.models.vit`: MAE's
released `.pth` files). The student is a timm-style ViT (`flyp_jax.models.vit.ViT`) of the teacher's shape, with
the reference's initialisation, pooling `config.at.pool` ('gap': mean of the patch tokens then fc_norm, the
reference's default `global_pool`) and a linear head (normal(0.02) kernel, zero bias) on the un-normalised
pooled features. Stochastic depth (`config.at.drop_path`, linearly over the layers) draws one set of masks
per step that the teacher and the student share, as the reference's `get_drop_path_mask`.

Parameters: {'clip': the teacher (a CLIP tree, or {'visual': ViT tree}; frozen by the config, its maps under
stop_gradient), 'student': the student ViT, 'head': {'kernel' [W, C], 'bias' [C]}}. The teacher and the student
share the mesh and the jitted step.

The final evaluation also reports the teacher alone ('teacher/...') and the ensemble of the student with it
('ensemble/...': averaged softmax probabilities; the reference code evaluates no ensemble, its
`engine_finetune.evaluate` scores one model, so this rule is the project's). The teacher there is the fine-tuned model of the run in
`config.at.ensemble.path` (its final/ and final/head.npz; made first with `config.at.ensemble.config` if it
has not finished), or, with an empty path and a CLIP teacher, the pretrained CLIP with its zero-shot head (a
ViT teacher without a run has no classifier: no ensemble).

final/ holds the student ViT and head.npz (`flyp_jax.models.vit.load`). A copy-mode student cannot run alone:
evaluate it with `StudentClassifier` and the teacher.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flyp_jax import errors, evaluate, files, losses, methods, models, run_paths, runs
from flyp_jax.data import classnames as classnames_lib
from flyp_jax.data import pipeline
from flyp_jax.methods import common
from flyp_jax.models import converted, vit as vit_lib
from flyp_jax.models.clip import VisionTransformer
from flyp_jax.models.transformer import drop_path_masks

MODES = ("copy", "distill", "none", "copy_q", "copy_k", "copy_v", "distill_q", "distill_k", "distill_v")


# The reference's `--train_qkv` (main_finetune.py: only parameters whose names hold 'qkv', 'head' or 'fc_norm'
# train) in this layout, as a `trainable` pattern: --config.trainable='<this>'.
TRAIN_QKV = r"^(student/transformer/resblocks_\d+/attn/(query|key|value)|student/fc_norm|head)/"


def transferred(mode: str) -> str:
  """What a mode takes from the teacher: 'probs' (the attention map) or the projection 'q', 'k' or 'v'."""
  return mode.rpartition("_")[2] if "_" in mode else "probs"
TEACHERS = ("clip", "vit")
IMAGE_NORMS = ("clip", "imagenet")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # MAE's (timm's IMAGENET_DEFAULT_*)


def transfer_layers(config, n_layers: int) -> tuple[int, ...]:
  """Indices of the layers whose attention is copied or distilled: the first n_layers + end_layer."""
  end = config.at.end_layer
  if not -n_layers < end <= 0:
    raise errors.BadValue(f"at.end_layer must be in ({-n_layers}, 0] for a {n_layers}-layer tower (the first "
                     f"n_layers + end_layer layers are transferred; the reference's default is -3), got {end}")
  return tuple(range(n_layers + end))


def _check(config) -> str:
  at = config.at
  for key, value, known in (("mode", at.mode, MODES), ("teacher.kind", at.teacher.kind, TEACHERS),
                            ("teacher.image_norm", at.teacher.image_norm, IMAGE_NORMS), ("pool", at.pool, vit_lib.POOLS)):
    if value not in known:
      raise errors.BadValue(f"at.{key} must be one of {known}, got {value!r}")
  if not 0.0 <= at.drop_path < 1.0:
    raise errors.BadValue(f"at.drop_path must be in [0, 1) (the deepest layer's drop probability), got {at.drop_path}")
  if at.teacher.kind == "vit" and not at.teacher.path:
    raise errors.BadValue("at.teacher.kind='vit' needs at.teacher.path: an MAE .pth (e.g. mae_pretrain_vit_large.pth "
                     "of facebookresearch/mae) or a timm-layout state dict")
  return at.mode


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


def student_config(teacher_config, pool: str) -> vit_lib.ViTConfig:
  """The student's shape: the teacher's (the reference builds both from one set of kwargs)."""
  if isinstance(teacher_config, vit_lib.ViTConfig):
    return dataclasses.replace(teacher_config, pool=pool)
  c = teacher_config
  return vit_lib.ViTConfig(image_size=c.image_size, patch_size=c.patch_size, width=c.vision_width,
                           layers=c.vision_layers, heads=c.vision_heads, mlp_ratio=c.mlp_ratio, pool=pool)


def teacher_tower(teacher_config, dtype=jnp.float32, remat: bool | str = False) -> nn.Module:
  """The module whose maps guide the student: a CLIP image tower or a timm / MAE ViT."""
  if isinstance(teacher_config, vit_lib.ViTConfig):
    return vit_lib.ViT(teacher_config, dtype, remat)
  return VisionTransformer(teacher_config, dtype, remat)


def to_imagenet_norm(images: jax.Array) -> jax.Array:
  """Images normalised with CLIP's mean and std (the pipeline's) -> with ImageNet's (MAE's training input)."""
  clip_mean, clip_std = jnp.asarray(pipeline.CLIP_MEAN), jnp.asarray(pipeline.CLIP_STD)
  return ((images * clip_std + clip_mean) - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class StudentClassifier(nn.Module):
  """The student as the evaluator sees it: `encode_image` gives its pooled features (with `layers`, the copied
  ones, computed with the teacher's maps, the teacher running beside it), read by the linear head
  un-normalised. Parameters: {'visual': student, 'teacher': the teacher's tower (copy mode only)} (see
  `eval_params`)."""
  config: vit_lib.ViTConfig  # the student's
  teacher_config: Any = None  # CLIPConfig or ViTConfig
  layers: tuple[int, ...] = ()  # copied layers (copy modes); empty: the student runs alone
  given: str = "probs"  # what is copied: the teacher's maps, or its "q", "k" or "v" (`transferred`)
  imagenet_norm: bool = False
  dtype: Any = jnp.float32
  remat: bool | str = False
  normalize_features = False  # the evaluator applies the head to raw features (`evaluate._features`)

  def setup(self):
    self.visual = vit_lib.ViT(self.config, self.dtype, self.remat)
    if self.layers:
      self.teacher = teacher_tower(self.teacher_config, self.dtype, self.remat)

  def encode_image(self, images: jax.Array) -> jax.Array:
    if self.imagenet_norm:
      images = to_imagenet_norm(images)
    maps = None
    if self.layers:
      _, aux = self.teacher(images, return_attention=self.given if self.given != "probs" else True)
      maps = copied_maps(aux["attention"], self.layers)
    return self.visual(images, attention_maps=maps, given=self.given)[0]


# --------------------------------------------------------------------------------- the training loop's hooks
def load_model(config, workdir: str):
  """(model, params['clip']): the loop's CLIP (teacher 'clip'), or (ViT, {'visual': params}) from
  `at.teacher.path` (teacher 'vit')."""
  _check(config)
  if config.at.teacher.kind == "clip":
    return None  # the loop's CLIP
  model, params = vit_lib.load(config.at.teacher.path, heads=config.at.teacher.heads or None,
                               dtype=config.model.dtype, remat=models.remat_setting(config.model))
  variant = config.at.teacher.variant
  if variant and dataclasses.replace(vit_lib.get_config(variant), pool=model.config.pool) != model.config:
    raise errors.BadValue(f"the teacher at {config.at.teacher.path} is {model.config}, not at.teacher.variant="
                          f"{variant!r}: set the variant it is (or '' to take the checkpoint's)")
  return model, {"visual": params}


def abstract_model(config):
  """(model, shapes of load_model's params) without reading a checkpoint: a 'vit' teacher of
  `at.teacher.variant`; a 'clip' teacher is the loop's CLIP (None: the loop's default)."""
  if config.at.teacher.kind == "clip":
    return None
  if not config.at.teacher.variant:
    raise errors.BadValue("planning an attention-transfer run with a 'vit' teacher needs its shape without its "
                          "checkpoint: set --config.at.teacher.variant (e.g. ViT-L/16)")
  model = vit_lib.ViT(vit_lib.get_config(config.at.teacher.variant), jnp.dtype(config.model.dtype),
                      models.remat_setting(config.model))
  return model, {"visual": jax.eval_shape(lambda: vit_lib.init_params(model, jax.random.key(0)))}


def extra_params(config, model, clip_params, mesh, evaluator) -> dict:
  _check(config)
  cfg = student_config(model.config, config.at.pool)
  transfer_layers(config, cfg.layers)
  rng = jax.random.fold_in(jax.random.key(config.seed), 1)  # not the teacher's seed (random teachers in tests)
  student = jax.jit(lambda r: vit_lib.init_params(vit_lib.ViT(cfg), r))(rng)
  n_classes = len(classnames_lib.of_data(config.data))
  head = vit_lib.classifier_head(jax.random.fold_in(rng, 2), cfg.width, n_classes)
  return {"student": student, "head": head}


def extra_param_shapes(config, model) -> dict:
  cfg = student_config(model.config, config.at.pool)
  n_classes = len(classnames_lib.of_data(config.data))
  student = jax.eval_shape(lambda: vit_lib.init_params(vit_lib.ViT(cfg), jax.random.key(0)))
  return {"student": student, "head": {"kernel": jax.ShapeDtypeStruct((cfg.width, n_classes), jnp.float32),
                                       "bias": jax.ShapeDtypeStruct((n_classes,), jnp.float32)}}


def batches(config, model, mesh, start_step: int):
  return common.labelled_batches(config, model, mesh, start_step)


def batch_shapes(config, model) -> dict:
  return common.labelled_batch_shapes(config, model)


def make_loss(config, model, mesh):
  mode = _check(config)
  cfg = student_config(model.config, config.at.pool)
  student_tower = vit_lib.ViT(cfg, model.dtype, model.remat)
  teacher = teacher_tower(model.config, model.dtype, model.remat)
  layers = transfer_layers(config, cfg.layers)
  imagenet_norm = config.at.teacher.image_norm == "imagenet"
  rate = float(config.at.drop_path)

  def loss_fn(params, batch, rng):
    images, metrics = batch["image"], {}
    if imagenet_norm:
      images = to_imagenet_norm(images)
    # erasing's noise in the space the model reads, as the reference erases after its normalisation
    images, targets = common.regularize(config, images, batch["label"], rng, mesh, params["head"]["bias"].shape[-1],
                                        config.at.label_smoothing)
    # One set of stochastic-depth masks per step, shared by the teacher and the student (the reference's).
    masks = drop_path_masks(rng, rate, cfg.layers, images.shape[0]) if rate > 0 else None
    student = lambda **kw: student_tower.apply({"params": params["student"]}, images, drop_masks=masks, **kw)
    if mode == "none":
      # Without return_attention: asking for the maps would swap JAX's fused attention for the explicit one,
      # which changes the baseline's numbers slightly, so the baseline logs no attention entropy.
      features, _ = student()
      attention, used_maps = jnp.zeros((), jnp.float32), None
    else:
      what = transferred(mode)
      _, t_aux = teacher.apply({"params": params["clip"]["visual"]}, images, drop_masks=masks,
                               return_attention=True if what == "probs" else what)
      teacher_maps = [jax.lax.stop_gradient(m) for m in t_aux["attention"]]
      if mode.startswith("copy"):
        features, s_aux = student(attention_maps=copied_maps(teacher_maps, layers), return_attention=True, given=what)
        attention, used_maps = jnp.zeros((), jnp.float32), s_aux["attention"]
      elif what != "probs":  # distill_q/k/v: the mean squared error of the projections, summed over layers
        features, s_aux = student(return_attention=what)
        attention = sum(jnp.mean(jnp.square(s_aux["attention"][i].astype(jnp.float32) - teacher_maps[i]))
                        for i in layers)
        used_maps = None
      else:
        features, s_aux = student(return_attention="logits")
        t = [teacher_maps[i] for i in layers]
        z = [s_aux["attention"][i] for i in layers]
        attention = losses.attention_distillation(t, z)
        # The divergence itself (0 when the maps agree), per transferred layer: what distillation drives down.
        metrics["attention_kl"] = jax.lax.stop_gradient(losses.attention_distillation(t, z, kind="kl")) / len(t)
        used_maps = [jax.nn.softmax(s.astype(jnp.float32), axis=-1) for s in s_aux["attention"]]
    if used_maps is not None:
      # Of the maps the student uses (its own, or the teacher's where copied): shows attention collapse.
      metrics["attention_entropy"] = jax.lax.stop_gradient(attention_entropy(used_maps))
    logits = evaluate.apply_head(features, params["head"])  # un-normalised pooled features, as the reference
    ce = losses.cross_entropy(logits, targets, config.at.label_smoothing)
    metrics.update(cross_entropy=ce, attention_loss=attention)
    return ce + config.at.weight * attention, metrics

  return loss_fn


def eval_model(config, model):
  """The module evaluation runs: `StudentClassifier` (with the teacher beside the student in copy mode)."""
  mode = _check(config)
  cfg = student_config(model.config, config.at.pool)
  copy = mode.startswith("copy")
  return StudentClassifier(cfg, model.config, transfer_layers(config, cfg.layers) if copy else (),
                           transferred(mode), config.at.teacher.image_norm == "imagenet", model.dtype, model.remat)


def eval_params(config, params) -> tuple[dict, Any]:
  """(params of `eval_model`, head): the student, and in copy mode the teacher's tower beside it."""
  out = {"visual": params["student"]}
  if _check(config).startswith("copy"):
    out["teacher"] = params["clip"]["visual"]
  return out, params["head"]


def final_params(config, params) -> tuple[dict, Any]:
  """(student ViT params, head), saved as final/ by `save_final`."""
  return params["student"], params["head"]


def save_final(config, dst: str, student_params, head) -> None:
  """final/ (or selected/): the student ViT and head.npz, loadable with `flyp_jax.models.vit.load`."""
  vit_lib.save(dst, vit_lib.config_from_params(student_params, config.at.pool), student_params,
               source=f"attention transfer ({config.at.mode}, {config.at.teacher.kind} teacher)",
               arrays=None if head is None else {"head.npz": head})


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
    final = os.path.join(path, "final")
    head_file = os.path.join(final, "head.npz")
    teacher_head = files.load_npz(head_file) if files.exists(head_file) else None
    if files.read_json(os.path.join(final, vit_lib.MARKER)).get("kind") == vit_lib.KIND:  # a ViT classifier
      vit_model, vit_params = vit_lib.load(final, dtype=config.model.dtype)
      teacher_model = StudentClassifier(vit_model.config, imagenet_norm=student_model.imagenet_norm,
                                        dtype=vit_model.dtype)
      teacher_params = {"visual": vit_params}
    else:
      teacher_model, teacher_params = models.load_pretrained(final, dtype=config.model.dtype)
  elif config.at.teacher.kind == "clip":
    c = student_model
    teacher_model, teacher_params, teacher_head = models.CLIP(c.teacher_config, c.dtype, c.remat), params["clip"], None
  else:
    print("no ensemble: a ViT teacher has no classifier of its own; set at.ensemble.path to a run with one",
          flush=True)
    return results
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
  """The fine-tuned teacher's run directory ('' for the zero-shot teacher), or None if it has not finished (the
  loop runs `at.ensemble.config` there first when one is given: the method's `prerequisites`).

  A relative path is relative to the workdir's parent (`flyp_jax.run_paths`), as every path to another run is.
  """
  e = config.at.ensemble
  if not e.path:
    return ""
  path = run_paths.resolve(workdir, e.path)
  return path if converted.is_converted(runs.final_dir(path)) else None


METHOD = methods.Method(extra_params=extra_params, extra_param_shapes=extra_param_shapes, batches=batches,
                        batch_shapes=batch_shapes, make_loss=make_loss, load_model=load_model,
                        abstract_model=abstract_model, eval_model=eval_model, eval_params=eval_params,
                        final_params=final_params, save_final=save_final, finish=finish,
                        run_paths=("at.ensemble.path",), prerequisites=(("at.ensemble.path", "at.ensemble.config"),))
