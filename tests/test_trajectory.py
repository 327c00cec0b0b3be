"""Training parity: the reference implementations' training steps and ours, from the same random tiny CLIP and
the same batches, compared parameter by parameter after several optimiser steps (float32, CPU).

Our side runs the product's code paths: a reproduction preset's config (configs/<method>.py:imagenet_b16, with
a shorter schedule and a larger learning rate so that a few steps move the parameters), the method's
`make_loss`, `flyp_jax.optim.make_optimizer` and `flyp_jax.train.make_train_step`. The PyTorch side is written
from reading the reference code, cited in each test:
  FLYP    locuslab/FLYP src/models/flyp_loss.py (`flyp_loss`), src/models/utils.py (`cosine_lr`), clip/loss.py
  FT      mlfoundations/wise-ft src/models/finetune.py, src/models/modeling.py, src/models/zeroshot.py
  WiSE-FT mlfoundations/wise-ft src/wise_ft.py (`_merge`)
  LP-FT   AnanyaKumar/transfer_learning configs/adaptation/resnet50_transfer.yaml (SGD), imagenet.yaml
          (CosineAnnealingLR, T_max = epochs), unlabeled_extrapolation/baseline_train.py (scheduler.step() per epoch)
  LP      AnanyaKumar/transfer_learning unlabeled_extrapolation/log_reg_sk.py (`test_log_reg_warm_starting`)

Tolerance: per parameter tensor, ||ours - reference|| <= 1e-2 * ||reference - initial|| (L2 norms over the
tensor), i.e. 1% of how far the reference moved it. Both sides compute in float32 but sum in different orders
(XLA vs ATen), so gradients agree to ~1e-6 relative; Adam divides each gradient element by its running RMS,
which turns that into update errors of ~1e-3 of the movement where a gradient element is small compared with
its own rounding error (measured here: at most 3e-3 over all tensors of the four training tests). Each
mutation the tests were checked against (weight decay on all parameters vs open_clip's mask, warmup
lr * step / warmup instead of lr * (step + 1) / warmup, no gradient clipping in FT, a logit-scale clamp, SGD
without momentum, cosine stepped per step instead of per epoch, l2 = 1 / C without N, alpha reversed) makes
the test fail.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch

from flyp_jax import configs_lib, models, optim, parallel, train  # noqa: E402
from flyp_jax.models import from_torch  # noqa: E402
from flyp_jax.data import classnames as classnames_lib  # noqa: E402
from flyp_jax.data import templates as templates_lib  # noqa: E402
from flyp_jax.commands import lp, wiseft  # noqa: E402
from flyp_jax.methods import ce_ablation, flyp, ft  # noqa: E402
from flyp_jax.tokenizer import tokenize  # noqa: E402
from tests.references import load_open_clip_loss_module, load_openai_clip_module  # noqa: E402

BATCH, STEPS, IMAGE = 8, 4, 32
# One device: the sharded paths have their own tests (test_train_step, test_losses); here they would only add
# compilation time on the CPU's simulated devices.
MESH = lambda: parallel.make_mesh(devices=jax.devices()[:1])
TOL = 1e-2  # of each tensor's movement; see the module docstring


# ------------------------------------------------------------------------------------------------ helpers
def torch_clip(seed: int = 0, log_scale: float = math.log(100.0)):
  """A random tiny OpenAI-layout CLIP (clip/model.py), float32, every tensor perturbed so all of them matter.

  The logit scale starts at `log_scale` (OpenAI's released CLIPs: ln 100).
  """
  clip_model = load_openai_clip_module("model")
  torch.manual_seed(seed)
  # embed, image size, vision layers, vision width, patch, context, vocab, text width, text heads, text layers
  m = clip_model.CLIP(48, IMAGE, 2, 128, 8, 77, 49408, 128, 2, 2).float()
  with torch.no_grad():
    for p in m.parameters():
      p.add_(0.02 * torch.randn_like(p))
    m.logit_scale.fill_(log_scale)
  return m


def to_ours(state_dict) -> tuple[models.CLIPConfig, dict]:
  sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state_dict.items()}
  cfg = from_torch.infer_config(sd, {"activation": "quick_gelu"})
  return cfg, from_torch.openai_to_params(sd, cfg)


def preset(spec: str, **optimizer):
  """A reproduction preset with a short schedule: 2 warmup steps then cosine, so both parts are exercised."""
  config = configs_lib.load(spec)
  config.unlock()
  config.data.update(classnames="domain_shapes", templates="domain_shapes")
  config.update(batch_size=BATCH, steps=STEPS)
  config.optimizer.update({"warmup_steps": 2, **optimizer})
  config.lock()
  return config


def batches(num_classes: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(BATCH, IMAGE, IMAGE, 3)).astype(np.float32),
           rng.integers(0, num_classes, BATCH).astype(np.int32)) for _ in range(STEPS)]


def run_ours(config, method, model, params, data, mesh):
  tx = optim.make_optimizer(config, params, config.steps)
  state = train.init_state(params, tx, mesh)
  step = train.make_train_step(config, method.make_loss(config, model, mesh), tx, mesh, state)
  for images, labels in data:
    state, _ = step(state, parallel.global_batch({"image": images, "label": labels}, mesh))
  return jax.device_get(state["params"])


def nchw(images):
  return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def reference_cosine_lr(base_lr, warmup_length, steps, min_lr=0.0):
  """FLYP src/models/utils.py `cosine_lr` (WiSE-FT's is the same without min_lr), as a function of the step."""
  def lr(step):
    if step < warmup_length:
      return base_lr * (step + 1) / warmup_length
    e, es = step - warmup_length, steps - warmup_length
    return 0.5 * (1 + np.cos(np.pi * e / es)) * base_lr + min_lr
  return lr


def assert_same_trajectory(ours, ref, initial, prefix=""):
  """Every leaf of `ours` within TOL of `ref`, relative to how far `ref` moved from `initial`."""
  moved = []
  for (path, o), r, i in zip(jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree_util.tree_leaves(ref),
                             jax.tree_util.tree_leaves(initial)):
    o, r, i = (np.asarray(x, np.float64) for x in (o, r, i))
    movement = np.abs(r - i).max()
    name = prefix + jax.tree_util.keystr(path)
    if name.endswith("['key']['bias']"):
      # Adding b to every key adds q.b to a whole row of attention logits, which softmax ignores: the exact
      # gradient is 0, both sides compute rounding noise (~1e-10), and Adam scales noise to full-size steps of
      # its sign. Nothing downstream depends on these values.
      continue
    if movement == 0:  # never trained on either side (frozen, or unused token rows)
      assert np.array_equal(o, r), f"{name}: moved here but not in the reference"
      continue
    # L2 norms over the tensor: a few elements whose gradient is near its own rounding error (cancellation)
    # get relative errors of several percent from Adam's division by the RMS, and must not decide alone.
    err, movement = np.linalg.norm(o - r), np.linalg.norm(r - i)
    if os.environ.get("TRAJECTORY_DEBUG"):
      print(f"{name} {err / movement:.2e}")
    assert err <= TOL * movement, f"{name}: error {err:.3e} > {TOL} x movement {movement:.3e} (L2 norms)"
    moved.append(name)
  assert moved, "nothing trained: the comparison would be between initial parameters"
  return moved


# ----------------------------------------------------------------------------------------------------- FLYP
def flyp_forward(clip, images, text):
  """FLYP's clip/model.py `CLIP.forward`: normalised image and text features and exp(logit_scale)."""
  img, txt = clip.encode_image(images), clip.encode_text(text)
  return img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True), clip.logit_scale.exp()


def test_trajectory_flyp_matches_flyp_loss_py():
  """FLYP's step (src/models/flyp_loss.py): both towers, ClipLoss on normalised features with the trained
  logit scale (clip/model.py `forward` returns logit_scale.exp()), torch.optim.AdamW over all parameters,
  `cosine_lr` called with the step before `optimizer.step()`, no clamp, no clipping."""
  config = preset("configs/flyp.py:imagenet_b16", lr=1e-4)
  mesh = MESH()
  ref = torch_clip(log_scale=math.log(100.0) + 0.05)  # above where a clamp would pull it back to ln(100)
  cfg, params = to_ours(ref.state_dict())
  model = models.create_model(cfg, dtype="float32")
  initial = {"clip": params}
  names = classnames_lib.get(config.data.classnames)
  templates = templates_lib.get(config.data.templates)
  data = batches(len(names))
  ours = run_ours(config, flyp, model, {"clip": jax.tree_util.tree_map(np.copy, params)}, data, mesh)

  # The template of each example is the one our loss draws (fold_in(PRNGKey(seed), step), one per example), so
  # both sides see the same captions; FLYP's CSV has one row per (image, template) pair instead.
  clip_loss = load_open_clip_loss_module().ClipLoss(local_loss=False, gather_with_grad=False, cache_labels=True,
                                                    rank=0, world_size=1)
  params_t = [p for p in ref.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params_t, lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay)
  lr_at = reference_cosine_lr(config.optimizer.lr, config.optimizer.warmup_steps, config.steps)
  # One compiled draw rather than op-by-op dispatch (seconds of compilation per op on a loaded CPU).
  draw = jax.jit(lambda s: jax.random.randint(jax.random.fold_in(jax.random.PRNGKey(config.seed), s), (BATCH,), 0,
                                              len(templates)))
  for step, (images, labels) in enumerate(data):
    for group in opt.param_groups:
      group["lr"] = lr_at(step)
    template = np.asarray(draw(jnp.int32(step)))
    text = tokenize([templates[t].format(names[y]) for y, t in zip(labels, template)], 77)
    opt.zero_grad()
    img, txt, scale = flyp_forward(ref, nchw(images), torch.from_numpy(text.astype(np.int64)))
    clip_loss(img, txt, scale).backward()
    opt.step()
  _, ref_params = to_ours(ref.state_dict())
  moved = assert_same_trajectory(ours, {"clip": ref_params}, initial)
  assert any("text" in m for m in moved) and any("visual" in m for m in moved) and any("logit_scale" in m for m in moved)
  assert float(ours["clip"]["logit_scale"]) > math.log(100.0)  # never clamped


# ---------------------------------------------------------------------------------- FLYP's cross-entropy ablation
@pytest.mark.parametrize("devices", [1, 4])
def test_trajectory_ce_ablation_matches_ce_ablation_py(devices):
  """FLYP's cross-entropy ablation (src/models/ce_ablation.py): all_texts [C, T, 77] tokenised once; per step
  one template per class (`s = torch.randint(0, T, (C,))`), the C prompts encoded, both feature sets
  normalised, `F.cross_entropy(logit_scale.exp() * img @ txt.T, labels)`, torch.optim.AdamW(lr, wd) over every
  parameter, `cosine_lr` before each step, no clamp, no clipping. On 4 devices the C = 10 prompts are padded to
  12 and split over the data axis: the same trajectory."""
  config = preset("configs/ce_ablation.py:imagenet_b16", lr=1e-4)
  mesh = parallel.make_mesh(devices=jax.devices()[:devices])
  ref = torch_clip(seed=5, log_scale=math.log(100.0) + 0.05)
  cfg, params = to_ours(ref.state_dict())
  model = models.create_model(cfg, dtype="float32")
  initial = {"clip": params}
  names = classnames_lib.get(config.data.classnames)
  templates = templates_lib.get(config.data.templates)
  data = batches(len(names), seed=5)
  ours = run_ours(config, ce_ablation, model, {"clip": jax.tree.map(np.copy, params)}, data, mesh)

  all_texts = torch.stack([torch.from_numpy(tokenize([t.format(n) for t in templates], 77).astype(np.int64))
                           for n in names])  # [C, T, 77]
  opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=config.optimizer.lr,
                          weight_decay=config.optimizer.weight_decay)
  lr_at = reference_cosine_lr(config.optimizer.lr, config.optimizer.warmup_steps, config.steps)
  # Each class's template is the one our loss draws (fold_in(key(seed), step), one per class).
  draw = jax.jit(lambda s: jax.random.randint(jax.random.fold_in(jax.random.key(config.seed), s), (len(names),),
                                              0, len(templates)))
  for step, (images, labels) in enumerate(data):
    for group in opt.param_groups:
      group["lr"] = lr_at(step)
    s = torch.from_numpy(np.asarray(draw(jnp.int32(step))).astype(np.int64))
    opt.zero_grad()
    img, txt, scale = flyp_forward(ref, nchw(images), all_texts[torch.arange(len(names)), s, :])
    torch.nn.functional.cross_entropy(scale * img @ txt.T, torch.from_numpy(labels.astype(np.int64))).backward()
    opt.step()
  _, ref_params = to_ours(ref.state_dict())
  moved = assert_same_trajectory(ours, {"clip": ref_params}, initial)
  assert any("text" in m for m in moved) and any("visual" in m for m in moved) and any("logit_scale" in m for m in moved)


# ------------------------------------------------------------------------------------------------------- FT
class _WiseFTClassifier(torch.nn.Module):
  """WiSE-FT's ImageClassifier (src/models/modeling.py): ImageEncoder (CLIP without `transformer`, so the
  text tower's other tensors get no gradient) and ClassificationHead(normalize=True, zero-shot weights)."""

  def __init__(self, clip, weight, normalize=True):
    super().__init__()
    del clip.transformer  # ImageEncoder(keep_lang=False)
    self.clip, self.normalize = clip, normalize
    self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
      self.head.weight.copy_(weight)
      self.head.bias.zero_()

  def forward(self, images):
    features = self.clip.encode_image(images)
    return self.head(features / features.norm(dim=-1, keepdim=True) if self.normalize else features)


def zeroshot_weights(clip, names, templates):
  """src/models/zeroshot.py `get_zeroshot_classifier`: [classes, embed] normalised mean of normalised prompt
  embeddings, times exp(logit_scale)."""
  rows = []
  with torch.no_grad():
    for name in names:
      e = clip.encode_text(torch.from_numpy(tokenize([t.format(name) for t in templates], 77).astype(np.int64)))
      e = e / e.norm(dim=-1, keepdim=True)
      e = e.mean(dim=0)
      rows.append(e / e.norm())
    return torch.stack(rows) * clip.logit_scale.exp()


def run_classifier_reference(ref_clip, head_weight, data, make_opt, lr_at, clip_norm, normalize=True):
  """finetune.py's loop: lr set before each step, zero_grad, cross-entropy, backward, clip_grad_norm_, step."""
  model = _WiseFTClassifier(ref_clip, head_weight, normalize)
  params_t = [p for p in model.parameters() if p.requires_grad]
  opt = make_opt(params_t)
  for step, (images, labels) in enumerate(data):
    for group in opt.param_groups:
      group["lr"] = lr_at(step)
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(nchw(images)), torch.from_numpy(labels.astype(np.int64)))
    loss.backward()
    if clip_norm:
      torch.nn.utils.clip_grad_norm_(params_t, clip_norm)
    opt.step()
  return model


def test_trajectory_ft_matches_wise_ft_finetune_py():
  """WiSE-FT's end-to-end fine-tuning (src/models/finetune.py): zero-shot-initialised normalised head,
  cross-entropy, clip_grad_norm_(params, 1.0), torch.optim.AdamW over the trainable parameters, `cosine_lr`."""
  config = preset("configs/ft.py:imagenet_b16", lr=1e-4)
  mesh = MESH()
  ref = torch_clip(seed=1)
  cfg, clip_params = to_ours(ref.state_dict())
  model = models.create_model(cfg, dtype="float32")
  names = classnames_lib.get(config.data.classnames)
  head = ft.extra_params(config, model, jax.device_put(clip_params, parallel.replicated(mesh)), mesh, None)["head"]
  weight = zeroshot_weights(ref, names, templates_lib.get(config.data.templates))
  np.testing.assert_allclose(np.asarray(head["kernel"]), weight.numpy().T, rtol=1e-4, atol=1e-4)
  weight = torch.from_numpy(np.asarray(head["kernel"]).T.copy())  # the same start, to the last bit
  initial = {"clip": clip_params, "head": jax.device_get(head)}
  data = batches(len(names), seed=1)
  ours = run_ours(config, ft, model, jax.tree_util.tree_map(np.copy, initial), data, mesh)

  o = config.optimizer
  trained = run_classifier_reference(
      ref, weight, data, lambda p: torch.optim.AdamW(p, lr=o.lr, weight_decay=o.weight_decay),
      reference_cosine_lr(o.lr, o.warmup_steps, config.steps), clip_norm=1.0)
  sd = {k[len("clip."):]: v for k, v in trained.state_dict().items() if k.startswith("clip.")}
  sd.update({k: v for k, v in torch_clip(seed=1).state_dict().items() if k.startswith("transformer.")})
  _, ref_clip = to_ours(sd)
  ref_params = {"clip": ref_clip, "head": {"kernel": trained.head.weight.detach().numpy().T,
                                           "bias": trained.head.bias.detach().numpy()}}
  moved = assert_same_trajectory(ours, ref_params, initial)
  assert all(m.startswith(("['clip']['visual']", "['head']")) for m in moved), moved  # the text tower stays


def test_trajectory_lpft_matches_transfer_learning_sgd():
  """LP-FT's fine-tuning stage (AnanyaKumar/transfer_learning): torch.optim.SGD(momentum=0.9, weight_decay=0),
  CosineAnnealingLR(T_max=epochs) stepped once per epoch, no warmup and no clipping, from a given head applied to
  raw `encode_image` features (unlabeled_extrapolation/models/clip_model.py `ClipModel.forward`)."""
  config = preset("configs/lpft.py:imagenet_b16", lr=0.3, warmup_steps=0, epoch_steps=2)
  mesh = MESH()
  ref = torch_clip(seed=2)
  cfg, clip_params = to_ours(ref.state_dict())
  model = models.create_model(cfg, dtype="float32")
  n = len(classnames_lib.get(config.data.classnames))
  rng = np.random.default_rng(2)
  head = {"kernel": rng.normal(0, 0.1, (cfg.embed_dim, n)).astype(np.float32), "bias": np.zeros(n, np.float32)}
  initial = {"clip": clip_params, "head": head}
  data = batches(n, seed=2)
  ours = run_ours(config, ft, model, jax.tree_util.tree_map(np.copy, initial), data, mesh)

  epochs = config.steps // config.optimizer.epoch_steps
  holder = {}

  def make_opt(p):
    holder["opt"] = torch.optim.SGD(p, lr=config.optimizer.lr, momentum=0.9, weight_decay=0.0)
    holder["sched"] = torch.optim.lr_scheduler.CosineAnnealingLR(holder["opt"], T_max=epochs)
    return holder["opt"]

  def lr_at(step):  # baseline_train.py calls scheduler.step() after each epoch's batches
    if step and step % config.optimizer.epoch_steps == 0:
      holder["sched"].step()
    return holder["opt"].param_groups[0]["lr"]

  assert config.ft.head_input == "raw"
  trained = run_classifier_reference(ref, torch.from_numpy(head["kernel"].T.copy()), data, make_opt,
                                     lr_at, clip_norm=0.0, normalize=False)
  sd = {k[len("clip."):]: v for k, v in trained.state_dict().items() if k.startswith("clip.")}
  sd.update({k: v for k, v in torch_clip(seed=2).state_dict().items() if k.startswith("transformer.")})
  _, ref_clip = to_ours(sd)
  ref_params = {"clip": ref_clip, "head": {"kernel": trained.head.weight.detach().numpy().T,
                                           "bias": trained.head.bias.detach().numpy()}}
  assert_same_trajectory(ours, ref_params, initial)


# --------------------------------------------------------------------------------------------------- WiSE-FT
def wise_ft_merge(alpha, theta_0, theta_1):
  """src/wise_ft.py `_merge` without Fisher weights: every tensor of the state dicts interpolated."""
  return {key: (1 - alpha) * theta_0[key] + alpha * theta_1[key] for key in theta_0.keys()}


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_trajectory_wiseft_interpolation_matches_wise_ft_merge(alpha):
  """Whole CLIPs (both towers, as for FLYP) plus a head (as for FT): our `interpolate` on params equals
  `_merge` on the PyTorch state dicts, converted."""
  zero, tuned = torch_clip(seed=3), torch_clip(seed=4)
  head0, head1 = torch.nn.Linear(48, 5), torch.nn.Linear(48, 5)
  theta_0 = {**zero.state_dict(), **{f"head.{k}": v for k, v in head0.state_dict().items()}}
  theta_1 = {**tuned.state_dict(), **{f"head.{k}": v for k, v in head1.state_dict().items()}}
  merged = wise_ft_merge(alpha, theta_0, theta_1)

  def ours_of(sd):
    _, clip = to_ours({k: v for k, v in sd.items() if not k.startswith("head.")})
    return {"clip": clip, "head": {"kernel": sd["head.weight"].numpy().T, "bias": sd["head.bias"].numpy()}}

  got = wiseft.interpolate(ours_of(theta_0), ours_of(theta_1), alpha)
  expected = ours_of(merged)
  for (path, g), e in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree_util.tree_leaves(expected)):
    # The same two products and one sum per element; float32 rounding of alpha * x alone may differ by 1 ulp.
    np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))
  if 0 < alpha < 1:  # the two ends differ, so the comparison is not between copies of one model
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(got),
                                                     jax.tree_util.tree_leaves(ours_of(theta_0))))


# -------------------------------------------------------------------------------------------------------- LP
def _softmax_regression_geometry(theta, x, y, l2):
  """Gradient and Hessian (float64) of `lp.objective` at theta = [kernel; bias] [D + 1, C], written from the
  formula (mean softmax cross-entropy + l2 / 2 ||kernel||^2, bias unpenalised), flattened row-major."""
  xt = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float64)
  logits = xt @ theta
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  onehot = np.eye(theta.shape[1])[y]
  penalty = np.ones_like(theta)
  penalty[-1] = 0.0
  grad = xt.T @ (p - onehot) / len(x) + l2 * penalty * theta
  s = np.einsum("ic,cd->icd", p, np.eye(theta.shape[1])) - np.einsum("ic,id->icd", p, p)
  hess = np.einsum("ia,ib,icd->acbd", xt, xt, s) / len(x)
  hess = hess.reshape(theta.size, theta.size) + np.diag(l2 * penalty.ravel())
  return grad.ravel(), hess


def test_trajectory_lp_selects_the_same_C_as_scikit_learn():
  """LP-FT's probe sweep (log_reg_sk.py `test_log_reg_warm_starting`): LogisticRegression per C (ascending),
  the first C with the best validation accuracy kept. Ours with l2 = 1 / (C N) picks the same C, the grid's
  held-out accuracies agree and so does the decision function on held-out points.

  The tolerances come from how far each solver stopped from the optimum, not from a fixed number of digits: the
  objective is strongly convex once the bias's shared constant (softmax) is fixed (both fits centre it), with
  modulus mu (the Hessian's smallest eigenvalue on that subspace, halved as a margin for its change between the
  two points), so each fit lies within ||grad|| / mu of the optimum (its stopping rule bounds ||grad||: ours the
  2-norm below `tol` up to float32 rounding, scikit-learn's largest component below its `tol`; both measured here
  in float64), and a held-out logit within ||[x, 1]|| times the sum of the two. A prediction may then differ only
  where scikit-learn's top-two logit margin is below twice that.
  """
  from sklearn import linear_model
  rng = np.random.default_rng(0)
  n_train, n_val, dim, classes = 240, 200, 12, 4
  centres = rng.normal(0, 0.6, (classes, dim))

  def sample(n):
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int32)

  (train_x, train_y), (val_x, val_y) = sample(n_train), sample(n_val)
  val_xt = np.concatenate([val_x, np.ones((n_val, 1))], 1).astype(np.float64)
  grid = np.logspace(-4, 2, 13)
  l2_grid = lp.l2_from_C(grid, n_train)
  sk_accs, our_accs, slack, logit_gap, gnorms = [], [], [], [], []
  for c, l2 in zip(grid, l2_grid):
    # float64 inputs: scikit-learn >= 1.9 fits float32 inputs in float32 (and stops far above tol there)
    clf = linear_model.LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(train_x.astype(np.float64), train_y)
    sk = np.concatenate([clf.coef_.T, (clf.intercept_ - clf.intercept_.mean())[None]]).astype(np.float64)
    kernel, bias = lp.fit_logistic_regression(train_x, train_y, classes, l2=l2, max_iter=5000, tol=1e-7)
    ours = np.concatenate([np.asarray(kernel), np.asarray(bias)[None]]).astype(np.float64)
    reference_l2 = 1.0 / (c * n_train)  # scikit-learn's objective divided by C N
    g_sk, hess = _softmax_regression_geometry(sk, train_x, train_y, reference_l2)
    g_ours, _ = _softmax_regression_geometry(ours, train_x, train_y, reference_l2)
    flat = np.zeros(sk.shape)
    flat[-1] = 1 / np.sqrt(classes)  # the bias's shared constant
    basis = np.linalg.svd(np.eye(sk.size) - np.outer(flat.ravel(), flat.ravel()))[0][:, :sk.size - 1]
    # Each stopped near the optimum of scikit-learn's objective: ours where its rule says (2-norm < 1e-7 in
    # float32; its float32 parameters and arithmetic add about eps32 times the Hessian's scale times ||theta||);
    # scikit-learn's L-BFGS-B stops on its gradient (tol) or, first here, on a relative decrease of the objective
    # below scipy's ftol (64 eps), which leaves largest gradient components of ~1e-7 (checked at 1e-6).
    rounding = np.finfo(np.float32).eps * np.linalg.norm(hess, 2) * np.linalg.norm(ours) * 10
    gnorms.append((np.linalg.norm(g_ours), 1e-7 + rounding, np.abs(g_sk).max()))
    mu = 0.5 * np.linalg.eigvalsh(basis.T @ hess @ basis).min()
    radius = (np.linalg.norm(g_sk) + np.linalg.norm(g_ours)) / mu  # bound on ||ours - sklearn||
    tol = np.linalg.norm(val_xt, axis=1) * radius  # per held-out point
    sk_logits, our_logits = val_xt @ sk, val_xt @ ours
    logit_gap.append(np.max(np.abs(our_logits - sk_logits) / tol[:, None]))
    top2 = np.sort(sk_logits, 1)[:, -2:]
    slack.append(int(np.sum(top2[:, 1] - top2[:, 0] <= 2 * tol)))
    sk_accs.append(float(np.mean(sk_logits.argmax(1) == val_y)))
    our_accs.append(float(np.mean(our_logits.argmax(1) == val_y)))
  assert len(set(sk_accs)) > 2, sk_accs  # the choice of C matters on this data
  assert all(g <= bound and g_sk <= 1e-6 for g, bound, g_sk in gnorms), gnorms
  assert max(logit_gap) <= 1.0, logit_gap  # every held-out logit, every C: within the two solvers' distance
  for sk_acc, our_acc, ambiguous in zip(sk_accs, our_accs, slack):
    assert abs(sk_acc - our_acc) <= ambiguous / n_val + 1e-9, (sk_accs, our_accs, slack)

  fit = lp.fit_with_validation(train_x, train_y, val_x, val_y, classes, l2_grid=l2_grid, max_iter=5000, tol=1e-7)
  assert [a for _, a in sorted(fit["grid"], reverse=True)] == pytest.approx(our_accs, abs=1e-6)
  ours = 1.0 / (fit["l2"] * n_train)
  assert ours == pytest.approx(grid[int(np.argmax(our_accs))], rel=1e-9)  # the first best, as the reference's `>`
  best = int(np.argmax(sk_accs))
  decided = all(sk_accs[best] - slack[best] / n_val > a + k / n_val
                for i, (a, k) in enumerate(zip(sk_accs, slack)) if i != best)
  if decided:
    assert ours == pytest.approx(grid[best], rel=1e-9)
  else:  # a near tie the two solvers' distance can flip: ours must be one of the tied
    mine = int(np.argmin(np.abs(grid - ours)))
    assert sk_accs[mine] + (slack[mine] + slack[best]) / n_val >= sk_accs[best], (sk_accs, slack, mine)


# --------------------------------------------------------------------------------------------------- schedules
def test_trajectory_schedules_equal_the_references_learning_rates():
  """'reference_cosine' is FLYP's `cosine_lr` (min_lr included) and 'epoch_cosine' PyTorch's CosineAnnealingLR
  stepped per epoch, at every step; the learning rate the first update uses is lr / warmup, not 0."""
  from types import SimpleNamespace
  opt = SimpleNamespace(lr=1e-3, warmup_steps=5, schedule="reference_cosine", min_lr=1e-5)
  ours = optim.make_schedule(opt, 40)
  ref = reference_cosine_lr(1e-3, 5, 40, min_lr=1e-5)
  np.testing.assert_allclose([float(ours(s)) for s in range(40)], [ref(s) for s in range(40)], rtol=1e-6)

  opt = SimpleNamespace(lr=0.1, warmup_steps=0, schedule="epoch_cosine", epoch_steps=7)
  ours = optim.make_schedule(opt, 70)
  sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=10)
  expected = []
  for s in range(70):
    if s and s % 7 == 0:
      sgd.step()  # no gradient: nothing moves; only keeps PyTorch's step-order check quiet
      sched.step()
    expected.append(sgd.param_groups[0]["lr"])
  np.testing.assert_allclose([float(ours(s)) for s in range(70)], expected, rtol=1e-6, atol=1e-12)
