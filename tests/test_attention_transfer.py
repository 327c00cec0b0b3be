"""Attention transfer on 8 simulated devices: the distillation loss by hand, attention copy (the student uses
exactly the teacher's maps, the teacher never changes), distillation (the attention divergence falls), the
ensemble evaluation."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config as shared_tiny_config, use_small_suites

from flyp_jax import checkpoint_files, configs_lib, evaluate, losses, models, parallel, train
from flyp_jax.data import suites
from flyp_jax.methods import attention_transfer as at
from flyp_jax.models import transformer as tfm
from flyp_jax.models import vit


@pytest.fixture(autouse=True)
def small_suite(monkeypatch):
  use_small_suites(monkeypatch, first=2)  # one ID and one OOD dataset keep evaluation short


def tiny_config(data_dir, **updates):
  """conftest's tiny attention-transfer demo: 2 warmup steps, the zero-shot teacher (no fine-tuning run)."""
  return shared_tiny_config("configs/attention_transfer.py:demo", data_dir,
                            {"optimizer": {"warmup_steps": 2}, "at": {"ensemble": {"path": "", "config": ""}}},
                            **updates)


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------------------------ the loss
def test_attention_distillation_by_hand():
  # One batch, one head, two queries over two keys; two layers. The student side is pre-softmax scores: the
  # log of a distribution is a valid set of scores for it.
  t1 = np.array([[[[0.5, 0.5], [1.0, 0.0]]]], np.float32)
  s1 = np.array([[[[0.25, 0.75], [0.5, 0.5]]]], np.float32)
  t2 = np.array([[[[0.9, 0.1], [0.2, 0.8]]]], np.float32)
  ce1 = (-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) - math.log(0.5)) / 2  # mean over the two queries
  ce2 = (-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) - (0.2 * math.log(0.2) + 0.8 * math.log(0.8))) / 2
  got = losses.attention_distillation([t1, t2], [np.log(s1), np.log(t2) + 3.0])  # scores shift-invariant
  np.testing.assert_allclose(float(got), ce1 + ce2, rtol=1e-6)
  # KL subtracts the teacher's entropy: zero for identical maps, log 2 / 2 less for the first layer.
  kl1 = ce1 - math.log(2) / 2
  np.testing.assert_allclose(float(losses.attention_distillation([t1, t2], [np.log(s1), np.log(t2)], kind="kl")),
                             kl1, rtol=1e-5)
  assert float(losses.attention_distillation([t2], [np.log(t2)], kind="kl")) == pytest.approx(0.0, abs=1e-6)


def test_attention_distillation_gradient_is_student_minus_teacher():
  # d(CE)/dz = (softmax(z) - t) / rows per layer, the softmax cross-entropy gradient.
  rng = np.random.default_rng(0)
  t = softmax(rng.normal(size=(2, 3, 5, 5))).astype(np.float32)
  z = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
  grad = jax.grad(lambda z: losses.attention_distillation([t], [z]))(z)
  np.testing.assert_allclose(grad, (softmax(z) - t) / (2 * 3 * 5), atol=1e-6)


@pytest.mark.parametrize("underflow", [False, True])
def test_attention_distillation_equals_the_reference_formula_and_gradient(underflow):
  # The reference: attention-transfer models_dual_vit.py, -(teacher.softmax(-1) * log_softmax(student, -1))
  # .sum(-1).mean() per layer, summed (tests/references.py). With underflow, some of the student's scores are
  # ~200 below their row's maximum: its softmax is exactly 0 in float32 where the teacher puts mass, so a loss
  # computed from post-softmax maps could not see them.
  torch = pytest.importorskip("torch")
  from tests import references
  rng = np.random.default_rng(1)
  teacher = [rng.normal(size=(2, 3, 6, 6)).astype(np.float32) for _ in range(2)]
  student = [rng.normal(size=(2, 3, 6, 6)).astype(np.float32) for _ in range(2)]
  if underflow:
    student[0][:, :, :, 1:4] -= 200.0
    student[1][0, 0, 0, 0] += 150.0
    assert (softmax(student[0].astype(np.float32))[..., 1:4] == 0).any()
  t_torch = [torch.tensor(x) for x in teacher]
  s_torch = [torch.tensor(x, requires_grad=True) for x in student]
  ref = references.attention_distillation_reference(t_torch, s_torch)
  ref.backward()
  maps = [jax.nn.softmax(jnp.asarray(x), axis=-1) for x in teacher]  # the teacher's post-softmax maps
  value, grads = jax.value_and_grad(lambda z: losses.attention_distillation(maps, z))([jnp.asarray(x) for x in student])
  ref = ref.detach()
  scale = abs(float(ref))
  assert abs(float(value) - float(ref)) <= 1e-5 * scale, (float(value), float(ref))
  for g, s in zip(grads, s_torch):
    np.testing.assert_allclose(np.asarray(g), s.grad.numpy(), atol=1e-6 + 1e-5 * float(s.grad.abs().max()))
  if underflow:
    assert float(ref) > 100  # the underflowed keys carry most of the loss: 200 nats times the teacher's mass there


# ---------------------------------------------------------------------------------------- MAE / timm teachers
def write_mae_checkpoint(path, layout="mae", pool="gap", width=32, depth=2, heads=4, patch=8, size=32, seed=0):
  """A reference torch ViT with random weights (LayerNorms too) saved as facebookresearch/mae releases it
  ({'model': state dict}) or as a plain timm state dict; returns the torch model."""
  torch = pytest.importorskip("torch")
  from tests import references
  torch.manual_seed(seed)
  model = references.mae_vit_class()(size, patch, width, depth, heads, global_pool=(pool == "gap"))
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(torch.randn_like(p) * (0.5 if p.ndim > 1 else 0.2) + (1.0 if name.endswith("norm1.weight") else 0.0))
  sd = model.state_dict()
  if pool == "gap":  # MAE's pretraining encoder also saves the final norm that global pooling does not use
    sd = {**sd, "norm.weight": torch.ones(width), "norm.bias": torch.zeros(width)}
  torch.save({"model": sd} if layout == "mae" else sd, str(path))
  return model.eval()


@pytest.mark.parametrize("layout,pool", [("mae", "gap"), ("timm", "cls")])
def test_mae_checkpoint_loads_as_a_teacher_with_the_reference_attention(tmp_path, layout, pool):
  torch = pytest.importorskip("torch")
  path = tmp_path / "mae_pretrain_vit_tiny.pth"
  ref = write_mae_checkpoint(path, layout, pool)
  model, params = vit.load(path, heads=4, pool=pool)  # 8-channel heads: not inferable from the width
  assert model.config == vit.ViTConfig(image_size=32, patch_size=8, width=32, layers=2, heads=4, pool=pool)
  images = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref_pooled, ref_scores = ref(torch.tensor(images).permute(0, 3, 1, 2))
  pooled, aux = model.apply({"params": params}, images, return_attention=True)
  _, aux_logits = model.apply({"params": params}, images, return_attention="logits")
  scale = lambda x: float(np.abs(x).max())
  assert np.abs(np.asarray(pooled) - ref_pooled.numpy()).max() <= 1e-4 * scale(ref_pooled.numpy())
  for maps, logits, r in zip(aux["attention"], aux_logits["attention"], ref_scores):
    r_maps = r.softmax(-1).numpy()
    assert maps.shape == r_maps.shape == (3, 4, 17, 17)
    assert np.abs(np.asarray(maps) - r_maps).max() <= 1e-4 * scale(r_maps)
    assert np.abs(np.asarray(logits) - r.numpy()).max() <= 1e-4 * scale(r.numpy())


def test_mae_checkpoint_of_another_layout_is_a_clear_error(tmp_path):
  torch = pytest.importorskip("torch")
  from flyp_jax.checkpoint_files import CheckpointError
  path = tmp_path / "not_a_vit.pth"
  torch.save({"model": {"conv.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}}, str(path))
  with pytest.raises(CheckpointError, match=r"not a timm / MAE ViT: it has no cls_token"):
    vit.load(path)
  path = tmp_path / "mae_layer_scale.pth"
  write_mae_checkpoint(path)
  sd = {k: torch.tensor(v.copy()) for k, v in checkpoint_files.read_state_dict(path).items()}
  torch.save({"model": {**sd, "blocks.0.ls1.gamma": torch.ones(32)}}, str(path))
  with pytest.raises(CheckpointError, match=r"unexpected \['blocks.0.ls1.gamma'\]"):
    vit.load(path)


# ------------------------------------------------------------------------------------------------- training
def restore_params(workdir, step):
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore((workdir / "checkpoints" / str(step) / "default").absolute())["params"]


def same(a, b):
  return jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)),
                                                       a, b))


def test_attention_entropy_by_hand():
  t = 5
  uniform = np.full((2, 3, t, t), 1 / t, np.float32)
  one_hot = np.broadcast_to(np.eye(t, dtype=np.float32), (2, 3, t, t))
  np.testing.assert_allclose(at.attention_entropy([uniform]), math.log(t), rtol=1e-6)
  assert float(at.attention_entropy([one_hot])) == 0.0
  np.testing.assert_allclose(at.attention_entropy([uniform, one_hot]), math.log(t) / 2, rtol=1e-6)
  maps = softmax(np.random.default_rng(0).normal(size=(2, 3, t, t)))
  np.testing.assert_allclose(at.attention_entropy([maps]), np.mean(-np.sum(maps * np.log(maps), -1)), rtol=1e-5)


def test_demo_presets_differ_only_in_mode_and_learning_rate():
  # The guided and unguided demos are compared as they are: same steps, data, seed, schedule and optimiser.
  configs = {arg: configs_lib.load(f"configs/attention_transfer.py:{arg}").to_dict()
             for arg in ("demo", "demo_copy", "demo_none")}
  assert {a: (c["at"]["mode"], c["optimizer"]["lr"]) for a, c in configs.items()} == {
      "demo": ("distill", 5e-3), "demo_copy": ("copy", 3e-3), "demo_none": ("none", 1e-3)}
  for c in configs.values():
    del c["name"], c["at"]["mode"], c["optimizer"]["lr"]
  assert configs["demo"] == configs["demo_copy"] == configs["demo_none"]


@pytest.mark.slow
def test_copy_uses_the_teachers_maps_and_never_changes_the_teacher(tmp_path, data_dir):
  config = tiny_config(data_dir, at={"mode": "copy"})
  model, teacher_init = train.load_clip(config, str(tmp_path))
  results = train.run(config, str(tmp_path))
  params = restore_params(tmp_path, 4)
  assert same(params["clip"], jax.device_get(teacher_init))
  assert not same(params["student"], restore_params(tmp_path, 2)["student"])  # the student trains

  images = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
  teacher = models.VisionTransformer(model.config)
  student = vit.ViT(at.student_config(model.config, "gap"))
  assert student.config == vit.ViTConfig(image_size=32, patch_size=8, width=128, layers=2, heads=2)
  _, t_aux = teacher.apply({"params": params["clip"]["visual"]}, images, return_attention=True)
  layers = at.transfer_layers(config, model.config.vision_layers)
  assert layers == (0, 1)
  features, s_aux = student.apply({"params": params["student"]}, images,
                                  attention_maps=at.copied_maps(t_aux["attention"], layers), return_attention=True)
  for t, s in zip(t_aux["attention"], s_aux["attention"]):
    np.testing.assert_array_equal(np.asarray(t), np.asarray(s))
  # The student's own queries and keys play no part: scrambling them leaves the evaluated features unchanged.
  eval_model = at.eval_model(config, model)
  clip, head = at.eval_params(config, params)
  encode = lambda p: eval_model.apply({"params": p}, images, method=eval_model.encode_image)
  np.testing.assert_array_equal(np.asarray(encode(clip)), np.asarray(features))
  scrambled = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 1.0 if any(getattr(k, "key", None) in ("query", "key") for k in path) else x,
      clip["visual"])
  np.testing.assert_array_equal(np.asarray(encode({**clip, "visual": scrambled})), np.asarray(features))
  own, _ = student.apply({"params": params["student"]}, images)
  assert not np.allclose(own, features)

  # Evaluation: the student under the usual keys, the teacher (zero-shot here) and the ensemble beside it.
  saved = json.loads((tmp_path / "results.json").read_text())
  for key in ("avg_id/top1", "teacher/avg_id/top1", "ensemble/avg_id/top1", "ensemble/avg_ood/top1"):
    assert 0 <= saved[key] <= 1 and saved[key] == results[key]
  final_model, final = vit.load(tmp_path / "final")
  assert final_model.config == student.config and same(final, params["student"])
  with pytest.raises(ValueError, match="not a CLIP"):
    models.load_pretrained(tmp_path / "final")


def test_student_is_initialised_as_the_reference_and_its_head_reads_raw_features(data_dir):
  config = tiny_config(data_dir)
  model, clip_params = train.load_clip(config, "unused")
  extra = at.extra_params(config, model, clip_params, None, None)
  kernel, bias = np.asarray(extra["head"]["kernel"]), np.asarray(extra["head"]["bias"])
  assert kernel.shape == (128, 10) and not bias.any() and abs(kernel.std() - 0.02) < 0.003
  block = extra["student"]["transformer"]["resblocks_0"]
  assert abs(float(np.std(block["attn"]["query"]["kernel"])) - 0.02) < 0.002 and not np.any(block["mlp"]["c_fc"]["bias"])
  assert at.eval_model(config, model).normalize_features is False  # the evaluator applies the head to raw features
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  features = at.eval_model(config, model).apply({"params": {"visual": extra["student"]}}, images,
                                                method=at.StudentClassifier.encode_image)
  assert float(jnp.linalg.norm(features, axis=-1).min()) > 2.0  # fc_norm's output, not L2-normalised


@pytest.mark.slow
def test_mae_teacher_distills_into_a_student_with_shared_drop_path(tmp_path, data_dir):
  write_mae_checkpoint(tmp_path / "mae.pth", width=64, heads=4)
  config = tiny_config(data_dir, steps=2, log_every=1, checkpoint_every=2, eval={"suite": ""},
                       at={"teacher": {"kind": "vit", "path": str(tmp_path / "mae.pth"), "heads": 4,
                                       "image_norm": "imagenet"}, "drop_path": 0.5, "end_layer": -1})
  model, teacher = at.load_model(config, str(tmp_path))
  assert isinstance(model, vit.ViT) and model.config.width == 64
  results = train.run(config, str(tmp_path / "run"))
  params = restore_params(tmp_path / "run", 2)
  assert same(params["clip"], teacher)
  assert np.isfinite(results.get("train_seconds", 0.0))
  lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert all(np.isfinite(l["train/attention_kl"]) for l in lines if "train/attention_kl" in l)
  final_model, final = vit.load(tmp_path / "run" / "final")
  assert final_model.config.width == 64 and same(final, params["student"])


@pytest.mark.slow
def test_teacher_and_student_share_the_drop_path_masks_in_the_loss(data_dir):
  # attention-transfer models_dual_vit.py: one get_drop_path_mask per step, passed to the teacher and the student.
  # Three layers: a layer's map depends on the masks of the layers below it, and the first layer never drops.
  config = tiny_config(data_dir, at={"drop_path": 0.6},
                       model={"overrides": {"context_length": 16, "vision_layers": 3}})
  model, clip = train.load_clip(config, "unused")
  params = {"clip": clip, **at.extra_params(config, model, clip, None, None)}
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  rng = jax.random.PRNGKey(3)
  _, metrics = at.make_loss(config, model, None)(params, {"image": images, "label": jnp.zeros(4, jnp.int32)}, rng)
  masks = tfm.drop_path_masks(rng, 0.6, 3, 4)
  assert 0 < float(jnp.mean(masks[1] == 0)) < 1  # this draw drops some branches and keeps others
  teacher = lambda m: models.VisionTransformer(model.config).apply(
      {"params": clip["visual"]}, images, return_attention=True, drop_masks=m)[1]["attention"]
  _, s_aux = vit.ViT(at.student_config(model.config, "gap")).apply(
      {"params": params["student"]}, images, return_attention="logits", drop_masks=masks)
  shared = float(losses.attention_distillation(teacher(masks), s_aux["attention"]))
  assert float(metrics["attention_loss"]) == pytest.approx(shared, rel=1e-5)
  # ... and the masks change the teacher's maps (its third layer's), so an unmasked teacher would give another loss.
  assert float(jnp.abs(teacher(masks)[2] - teacher(None)[2]).max()) > 1e-2


def test_drop_path_masks_and_a_fully_dropped_stack_is_the_identity():
  masks = np.asarray(tfm.drop_path_masks(jax.random.PRNGKey(0), 0.5, 3, 4000))
  assert masks.shape == (3, 2, 4000) and (masks[0] == 1).all()  # linspace(0, rate): the first layer keeps all
  assert set(np.unique(masks[2])) == {0.0, 2.0} and abs(masks[2].mean() - 1.0) < 0.05
  np.testing.assert_allclose(np.unique(masks[1]), [0.0, 1 / 0.75], rtol=1e-6)
  # Every branch dropped: each block adds nothing, the tokens come out as they went in.
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 32))
  stack = tfm.Transformer(2, 4, activation="gelu", eps=1e-6)
  p = stack.init(jax.random.PRNGKey(2), x)
  out, _ = stack.apply(p, x, drop_masks=jnp.zeros((2, 2, 3)))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
  # Attention branches dropped, MLP branches kept: each block adds only its MLP, so each mask reaches its branch.
  mlp_only, _ = stack.apply(p, x, drop_masks=jnp.ones((2, 2, 3)).at[:, 0].set(0.0))
  h = x
  for i in range(2):
    block = p["params"][f"resblocks_{i}"]
    h = h + tfm.MLP(128, "gelu").apply({"params": block["mlp"]},
                                       tfm.LayerNorm(1e-6).apply({"params": block["ln_2"]}, h))
  np.testing.assert_allclose(np.asarray(mlp_only), np.asarray(h), atol=1e-5)
  half = jnp.ones((2, 2, 3)).at[:, :, 0].set(0.0)  # only the first example dropped
  out, _ = stack.apply(p, x, drop_masks=half)
  np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(x[0]))
  np.testing.assert_allclose(np.asarray(out[1:]), np.asarray(stack.apply(p, x[1:])[0]), atol=1e-6)


@pytest.mark.slow
def test_distillation_lowers_the_attention_divergence(tmp_path, data_dir):
  config = tiny_config(data_dir, steps=24, log_every=4, checkpoint_every=24, eval={"suite": ""})
  train.run(config, str(tmp_path))
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  kl = [l["train/attention_kl"] for l in lines if "train/attention_kl" in l]
  assert len(kl) == 6 and all(np.isfinite(kl))
  assert kl[-1] < 0.5 * kl[0], kl
  entropy = [l["train/attention_entropy"] for l in lines if "train/attention_entropy" in l]
  assert len(entropy) == 6 and all(0 < e < math.log(17) for e in entropy), entropy
  params = restore_params(tmp_path, 24)
  _, teacher_init = train.load_clip(config, str(tmp_path))
  assert same(params["clip"], jax.device_get(teacher_init))


def test_ensemble_averages_the_members_probabilities_by_hand(data_dir):
  """Two different CLIPs: the ensemble's top-1 equals the argmax of their averaged softmax probabilities,
  computed here from each member's zero-shot logits; and each member's own row equals its evaluation alone."""
  model = models.create_model(models.get_config("ViT-T/8", context_length=16))
  init = jax.jit(models.init_params, static_argnums=0)
  members = [init(model, jax.random.PRNGKey(0)), init(model, jax.random.PRNGKey(2))]
  mesh = parallel.make_mesh()
  dataset = suites.get("domain_shapes")[0]
  evaluator = evaluate.Evaluator(model, [dataset], mesh, batch_size=64, data_dir=data_dir)
  out = evaluator.ensemble([(model, p, None) for p in members], names=("a", "b"))
  heads = [np.asarray(evaluator.head(p, dataset)) for p in members]
  encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  hits, count = {(name, k): 0 for name in ("a", "b", "ensemble") for k in (1, 5)}, 0
  for batch in evaluator._batches(dataset):
    keep = np.asarray(batch["mask"], bool)
    labels = np.asarray(batch["label"])[keep]
    probs = []
    for params, head in zip(members, heads):
      features = np.asarray(encode(params, batch["image"]), np.float64)[keep]
      logits = features / np.linalg.norm(features, axis=-1, keepdims=True) @ head
      probs.append(softmax(logits))
    for name, p in (("a", probs[0]), ("b", probs[1]), ("ensemble", (probs[0] + probs[1]) / 2)):
      ranked = np.argsort(-p, axis=-1)
      for k in (1, 5):
        hits[name, k] += int((ranked[:, :k] == labels[:, None]).any(-1).sum())
    count += len(labels)
  for (name, k), n in hits.items():  # a tie may break differently: one example
    assert out[name][f"{dataset.name}/top{k}"] == pytest.approx(n / count, abs=1 / count + 1e-9), (name, k)
  assert out["a"][f"{dataset.name}/top1"] == pytest.approx(evaluator(members[0])[f"{dataset.name}/top1"])
  # The check discriminates: an ensemble that returned either member would be off by more than a tie.
  for member in ("a", "b"):
    assert max(abs(hits[member, k] - hits["ensemble", k]) for k in (1, 5)) > 1, member
  with pytest.raises(ValueError, match="distinct name"):
    evaluator.ensemble([(model, members[0], None)], names=("ensemble",))


def test_a_missing_ensemble_teacher_keeps_the_students_results(tmp_path, capsys):
  config = configs_lib.load("configs/attention_transfer.py:demo")
  config.unlock()
  config.at.ensemble.update(path="../no_such_run", config="")
  results = {"avg_id/top1": 0.5}
  assert at.finish(config, object(), {}, str(tmp_path), results) == results
  assert "no ensemble" in capsys.readouterr().out
  with pytest.raises(ValueError, match="end_layer"):
    config.at.end_layer = -2
    at.transfer_layers(config, 2)


# ------------------------------------------------------------------------------- the reference's optimiser
def reference_layer_scale(name: str, num_layers: int, decay: float) -> float:
  """attention-transfer util/lr_decay.py: `get_layer_id_for_vit` and `param_groups_lrd`'s scale for a
  DualVisionTransformer (num_layers = the student's depth)."""
  if "cls_token" in name or "pos_embed" in name or "patch_embed" in name:
    layer = 0
  elif "blocks" in name:
    layer = int(name.split(".")[2]) + 1
  else:
    layer = num_layers
  return decay ** (num_layers - layer)


def test_layer_decay_and_cosine_floor_follow_the_reference():
  from types import SimpleNamespace
  from flyp_jax import optim
  torch_names = {"student/patch_embed/kernel": "student.patch_embed.proj.weight",
                 "student/cls_token": "student.cls_token", "student/pos_embed": "student.pos_embed",
                 "student/transformer/resblocks_0/attn/query/kernel": "student.blocks.0.attn.qkv.weight",
                 "student/transformer/resblocks_1/mlp/c_fc/bias": "student.blocks.1.mlp.fc1.bias",
                 "student/transformer/resblocks_2/ln_1/scale": "student.blocks.2.norm1.weight",
                 "student/fc_norm/scale": "student.fc_norm.weight", "head/kernel": "student.head.weight"}
  params = {}
  for name in list(torch_names) + ["clip/visual/transformer/resblocks_5/attn/out/kernel"]:
    node = params
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.ones((3,), jnp.float32)
  config = SimpleNamespace(trainable=r"^(student|head)/", frozen=r"^clip/", optimizer=SimpleNamespace(
      name="adamw", lr=1e-2, warmup_steps=0, schedule="constant", b1=0.9, b2=0.999, eps=1e-12, weight_decay=0.0,
      grad_clip=0.0, decay="matrices", layer_decay=0.75))
  tx = optim.make_optimizer(config, params, 10)
  grads = jax.tree_util.tree_map(lambda x: -jnp.ones_like(x), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is lr * sign(gradient) per parameter: what is left is the layer's scale.
  got = {n: float(u[0]) / 1e-2 for n, u in zip(jax.tree_util.tree_leaves(optim.path_names(params)),
                                                 jax.tree_util.tree_leaves(updates))}
  for name, torch_name in torch_names.items():
    assert got[name] == pytest.approx(reference_layer_scale(torch_name, 3, 0.75), rel=1e-5), name
  assert got["clip/visual/transformer/resblocks_5/attn/out/kernel"] == 0.0  # the teacher never moves

  # MAE's / attention transfer's util/lr_sched.py: linear warmup from 0, then min_lr + (lr - min_lr) cosine.
  lr, min_lr, warmup, total = 8e-3, 2e-3, 5, 40
  schedule = optim.make_schedule(SimpleNamespace(lr=lr, warmup_steps=warmup, schedule="warmup_cosine", min_lr=min_lr),
                                 total)
  for step in range(total):
    want = lr * step / warmup if step < warmup else min_lr + (lr - min_lr) * 0.5 * (
        1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
    assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-9), step
  from flyp_jax import config_checks
  config = configs_lib.load("configs/attention_transfer.py:imagenet_l16_mae_copy")
  assert (config.optimizer.layer_decay, config.optimizer.min_lr, config.optimizer.lr) == (0.75, 2e-3, 8e-3)
  config.unlock()
  config.optimizer.layer_decay, config.at.drop_path = 0.0, 1.0
  with pytest.raises(config_checks.ConfigError, match=r"optimizer.layer_decay is 0.0 .*at.drop_path is 1.0"):
    config_checks.validate(config)


# ------------------------------------------------------------------------- the q/k/v variants (models_dual_vit.py)
def reference_attention(x, w_qkv, b_qkv, w_proj, b_proj, heads, mode=None, teacher_act=None, return_act=None):
  """alexlioralexli/attention-transfer `models_dual_vit.py` `Attention.forward`, transcribed in torch: qkv =
  Linear(x) as [3, B, H, N, D]; copy_q uses the teacher's q with the student's k, copy_k the reverse, copy_v the
  student's map with the teacher's v; `return_act` 'q', 'k' or 'v' gives the layer's own."""
  import torch
  B, N, C = x.shape
  qkv = (x @ w_qkv.T + b_qkv).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
  q, k, v = qkv[0], qkv[1], qkv[2]
  scale = (C // heads) ** -0.5
  if mode == "copy_q":
    attn = ((teacher_act @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
  elif mode == "copy_k":
    attn = ((q @ teacher_act.transpose(-2, -1)) * scale).softmax(dim=-1)
  else:
    attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
  values = teacher_act if mode == "copy_v" else v
  out = (attn @ values).transpose(1, 2).reshape(B, N, C) @ w_proj.T + b_proj
  return out, {"q": q, "k": k, "v": v}.get(return_act)


@pytest.mark.parametrize("mode", ["copy_q", "copy_k", "copy_v", "distill_q", "distill_k", "distill_v"])
def test_the_qkv_variants_equal_the_reference_attention_in_value_and_gradient(mode):
  import torch
  b, t, w, h = 2, 5, 16, 4
  d = w // h
  attn = tfm.Attention(h)
  x = jax.random.normal(jax.random.key(0), (b, t, w))
  params = attn.init(jax.random.key(1), x)["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)  # biases too
  teacher = jax.random.normal(jax.random.key(3), (b, t, h, d))  # ours [B, T, H, D]; the reference's [B, H, T, D]
  cotangent = jax.random.normal(jax.random.key(4), (b, t, w))
  what = mode[-1]
  copy = mode.startswith("copy")

  def ours(params, x, teacher):
    out, act = attn.apply({"params": params}, x, teacher if copy else None, False if copy else what, None, what)
    return jnp.sum(out * cotangent) + (0.0 if copy else jnp.sum(act ** 2)), (out, act)

  (_, (out, act)), grads = jax.value_and_grad(ours, argnums=(0, 1, 2), has_aux=True)(params, x, teacher)

  tt = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)
  qkv = [params[n] for n in ("query", "key", "value")]
  w_qkv = tt(np.concatenate([np.asarray(p["kernel"]).reshape(w, w).T for p in qkv]))
  b_qkv = tt(np.concatenate([np.asarray(p["bias"]).reshape(w) for p in qkv]))
  w_proj, b_proj = tt(np.asarray(params["out"]["kernel"]).reshape(w, w).T), tt(params["out"]["bias"])
  x_t, teacher_t = tt(x), tt(np.asarray(teacher).transpose(0, 2, 1, 3))
  ref_out, ref_act = reference_attention(x_t, w_qkv, b_qkv, w_proj, b_proj, h, mode if copy else None,
                                         teacher_t if copy else None, None if copy else what)
  loss = (ref_out * torch.tensor(np.asarray(cotangent), dtype=torch.float64)).sum()
  if not copy:
    loss = loss + (ref_act ** 2).sum()
  loss.backward()
  np.testing.assert_allclose(out, ref_out.detach().numpy(), rtol=1e-4, atol=1e-5)
  if not copy:  # the projection the distillation compares, as the reference returns it
    np.testing.assert_allclose(np.asarray(act).transpose(0, 2, 1, 3), ref_act.detach().numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads[1], x_t.grad.numpy(), rtol=1e-4, atol=1e-4)
  if copy:
    np.testing.assert_allclose(np.asarray(grads[2]).transpose(0, 2, 1, 3), teacher_t.grad.numpy(), rtol=1e-4,
                               atol=1e-4)
  ours_w_qkv = np.concatenate([np.asarray(grads[0][n]["kernel"]).reshape(w, w).T for n in ("query", "key", "value")])
  np.testing.assert_allclose(ours_w_qkv, w_qkv.grad.numpy(), rtol=1e-4, atol=1e-4)
  if mode == "copy_v":  # the student's values play no part
    assert not np.asarray(grads[0]["value"]["kernel"]).any()


@pytest.mark.parametrize("mode", ["copy_q", "distill_v"])
def test_a_qkv_variant_trains_and_evaluates_through_the_loop(tmp_path, data_dir, mode):
  """One step each: the distillation term is the sum over the transferred layers of the mean squared error
  between the teacher's and the student's projections (computed here from each tower alone), and a copy_q
  student evaluates with the teacher's queries beside it."""
  config = tiny_config(data_dir, at={"mode": mode}, steps=2, checkpoint_every=2, eval={"suite": ""})
  model, clip_params = train.load_clip(config, str(tmp_path))
  mesh = parallel.make_mesh()
  extra = at.extra_params(config, model, clip_params, mesh, None)
  params = {"clip": jax.device_get(clip_params), **jax.device_get(extra)}
  images = jax.random.normal(jax.random.key(5), (4, 32, 32, 3))
  batch = {"image": images, "label": jnp.arange(4) % 10}
  loss, metrics = at.make_loss(config, model, mesh)(params, batch, jax.random.key(0))
  teacher = models.VisionTransformer(model.config)
  student = vit.ViT(at.student_config(model.config, config.at.pool))
  what = mode[-1]
  _, t_aux = teacher.apply({"params": params["clip"]["visual"]}, images, return_attention=what)
  if mode == "distill_v":
    _, s_aux = student.apply({"params": params["student"]}, images, return_attention=what)
    expected = sum(np.mean((np.asarray(t) - np.asarray(s)) ** 2) for t, s in zip(t_aux["attention"], s_aux["attention"]))
    assert float(metrics["attention_loss"]) == pytest.approx(expected, rel=1e-5) and expected > 0
  else:
    features, _ = student.apply({"params": params["student"]}, images, given="q",
                                attention_maps=at.copied_maps(t_aux["attention"], (0, 1)))
    eval_model = at.eval_model(config, model)
    clip, _ = at.eval_params(config, params)
    np.testing.assert_allclose(eval_model.apply({"params": clip}, images, method=eval_model.encode_image), features,
                               rtol=1e-5, atol=1e-6)
    own, _ = student.apply({"params": params["student"]}, images)
    assert not np.allclose(own, features)
  train.run(config, str(tmp_path))  # the loop's step and checkpoints in this mode
  assert (tmp_path / "final").exists()


def test_the_reference_s_train_qkv_is_a_trainable_pattern():
  """`--train_qkv` (main_finetune.py: only parameters whose names hold 'qkv', 'head' or 'fc_norm' train) is, in
  this layout, the pattern docs/reproduction.md gives for `trainable`: the student's query, key and value
  projections, its fc_norm and the head."""
  from flyp_jax import optim
  from types import SimpleNamespace
  config = configs_lib.load("configs/attention_transfer.py:demo")
  student = vit.ViT(vit.ViTConfig(image_size=32, patch_size=8, width=128, layers=2, heads=2))
  params = {"clip": {"visual": {"x": jnp.zeros(1)}}, "student": vit.init_params(student, jax.random.key(0)),
            "head": {"kernel": jnp.zeros((128, 10)), "bias": jnp.zeros(10)}}
  mask = optim.trainable_mask(SimpleNamespace(trainable=at.TRAIN_QKV, frozen=config.frozen), params)
  names = jax.tree.leaves(optim.path_names(params))
  chosen = {n for n, m in zip(names, jax.tree.leaves(mask)) if m}
  # The reference's rule on its own names: timm's 'blocks.i.attn.qkv.*', 'fc_norm.*', 'head.*'.
  expected = {n for n in names if n.startswith("head/") or "/fc_norm/" in n or "/attn/query/" in n
              or "/attn/key/" in n or "/attn/value/" in n}
  assert chosen == expected and len(chosen) == 2 * 3 * 2 + 2 + 2
