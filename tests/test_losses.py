"""Contrastive loss against open_clip and hand computations; the sharded loss against the single-device one
(values and gradients, eager and jitted, with class-collision masking) on 8 simulated CPU devices; its
per-device memory; the temperature clamp and cross-entropy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flyp_jax import losses, parallel
from tests import references


def normalised(rng, n, e=16):
  x = rng.normal(size=(n, e)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def lse(*xs):
  m = max(xs)
  return m + math.log(sum(math.exp(x - m) for x in xs))


# ---------------------------------------------------------------- single-device reference

@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_clip_loss_matches_open_clip(scale):
  import torch
  clip_loss_ref = references.load_open_clip_loss_module().ClipLoss()
  rng = np.random.default_rng(0)
  img, txt = normalised(rng, 24, 32), normalised(rng, 24, 32)
  t_img, t_txt = torch.tensor(img, requires_grad=True), torch.tensor(txt, requires_grad=True)
  t_scale = torch.tensor(scale, dtype=torch.float32, requires_grad=True)
  expected = clip_loss_ref(t_img, t_txt, t_scale)
  expected.backward()

  loss, grads = jax.value_and_grad(losses.clip_loss, argnums=(0, 1, 2))(img, txt, jnp.float32(scale))
  assert float(loss) == pytest.approx(expected.item(), rel=1e-6)
  for got, want in zip(grads, (t_img.grad, t_txt.grad, t_scale.grad)):
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-4, atol=1e-6)


def test_clip_loss_by_hand_n2():
  s = 10.0
  img = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  txt = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
  # logits_per_image = s * [[1, .6], [0, .8]]; logits_per_text = its transpose = s * [[1, 0], [.6, .8]].
  per_image = (lse(s, 0.6 * s) - s) + (lse(0.0, 0.8 * s) - 0.8 * s)
  per_text = (lse(s, 0.0) - s) + (lse(0.6 * s, 0.8 * s) - 0.8 * s)
  assert float(losses.clip_loss(img, txt, s)) == pytest.approx((per_image + per_text) / 4, abs=1e-6)


def test_masked_loss_by_hand():
  # Rows 0 and 1 share class 7: each one's softmax then ranges over itself and row 2 only.
  s = 5.0
  img = normalised(np.random.default_rng(1), 3, 4)
  txt = normalised(np.random.default_rng(2), 3, 4)
  labels = np.array([7, 7, 3])
  sim = img.astype(np.float64) @ txt.T.astype(np.float64)
  total = 0.0
  for logits in (s * sim, s * sim.T):
    for i in range(3):
      kept = [logits[i, j] for j in range(3) if j == i or labels[j] != labels[i]]
      total += lse(*kept) - logits[i, i]
  expected = total / 6
  got = losses.clip_loss(img, txt, s, labels=labels, mask_same_class=True)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  assert abs(float(losses.clip_loss(img, txt, s)) - expected) > 1e-3  # the masking did change something


def test_masked_loss_with_one_class_is_zero_and_has_finite_gradients():
  # Every other pair collides, so each softmax is over its positive alone: -log 1 = 0, gradient 0.
  rng = np.random.default_rng(3)
  img, txt = normalised(rng, 4), normalised(rng, 4)
  loss, grads = jax.value_and_grad(losses.clip_loss, argnums=(0, 1, 2))(
      img, txt, 20.0, labels=np.zeros(4, np.int32), mask_same_class=True)
  assert float(loss) == 0.0
  for g in grads:
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_distinct_labels_mask_nothing():
  rng = np.random.default_rng(4)
  img, txt = normalised(rng, 16), normalised(rng, 16)
  labels = rng.permutation(16)
  plain = losses.clip_loss(img, txt, 30.0)
  assert float(losses.clip_loss(img, txt, 30.0, labels=labels, mask_same_class=True)) == float(plain)
  # Labels without mask_same_class are ignored.
  assert float(losses.clip_loss(img, txt, 30.0, labels=np.zeros(16, np.int32))) == float(plain)


def test_bad_arguments_raise():
  img = np.ones((8, 4), np.float32) / 2
  with pytest.raises(ValueError, match="labels"):
    losses.clip_loss(img, img, 1.0, mask_same_class=True)
  with pytest.raises(ValueError, match="divisible"):
    losses.sharded_clip_loss(img[:6], img[:6], 1.0, parallel.make_mesh())
  with pytest.raises(ValueError, match="same shape"):
    losses.clip_loss(img, img[:4], 1.0)


# ---------------------------------------------------------------- sharded == reference

def _value_and_grads(fn, img, txt, scale, labels, mask, jit):
  f = lambda i, t, s: fn(i, t, s, labels=labels, mask_same_class=mask)
  f = jax.value_and_grad(f, argnums=(0, 1, 2))
  return (jax.jit(f) if jit else f)(img, txt, scale)


@pytest.mark.parametrize("batch,jit,mask,model",
                         [(b, j, m, 1) for b in (8, 32, 64) for j in (False, True) for m in (False, True)]
                         + [(32, j, m, 2) for j in (False, True) for m in (False, True)])
def test_sharded_loss_and_gradients_equal_reference(batch, jit, mask, model):
  assert jax.device_count() == 8
  mesh = parallel.make_mesh(model=model)
  sharding = parallel.data_sharding(mesh)
  rng = np.random.default_rng(batch)
  img, txt = normalised(rng, batch), normalised(rng, batch)
  labels = rng.integers(0, max(batch // 4, 2), batch).astype(np.int32)  # repeated classes within and across shards
  if mask:
    assert len(np.unique(labels)) < batch
  scale = jnp.float32(1 / 0.07)

  want, want_grads = _value_and_grads(losses.clip_loss, img, txt, scale, labels, mask, jit=True)
  sharded = lambda i, t, s, **kw: losses.sharded_clip_loss(i, t, s, mesh, **kw)
  got, got_grads = _value_and_grads(sharded, jax.device_put(img, sharding), jax.device_put(txt, sharding), scale,
                                    jax.device_put(labels, sharding), mask, jit)
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
  # Feature gradients stay batch-sharded: the all-gather's transpose is a reduce-scatter, not a gather.
  assert got_grads[0].sharding.is_equivalent_to(sharding, 2)
  if mask:  # masking has to matter for this comparison to mean anything
    assert abs(float(got) - float(losses.clip_loss(img, txt, scale))) > 1e-4


def test_sharded_masked_with_distinct_labels_equals_unmasked():
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(5)
  img, txt = normalised(rng, 32), normalised(rng, 32)
  masked = losses.sharded_clip_loss(img, txt, 50.0, mesh, labels=rng.permutation(32), mask_same_class=True)
  assert float(masked) == pytest.approx(float(losses.sharded_clip_loss(img, txt, 50.0, mesh)), rel=1e-6)


# ---------------------------------------------------------------- memory per device

E = 768  # CLIP ViT-L embedding width; differs from every batch size below so HLO shapes are unambiguous


def _compiled(fn, batch, sharding):
  feats = jax.ShapeDtypeStruct((batch, E), jnp.float32, sharding=sharding)
  return jax.jit(fn).lower(feats, feats, jax.ShapeDtypeStruct((), jnp.float32)).compile()


def _temp_bytes(compiled):
  stats = compiled.memory_analysis()  # the CPU backend, which the tests run on, implements it
  assert stats is not None and stats.temp_size_in_bytes > 0, stats
  return stats.temp_size_in_bytes


@pytest.mark.parametrize("grad", [False, True])
def test_sharded_memory_is_linear_in_global_batch_for_fixed_local_batch(grad):
  """Same 8 devices, local batch 512, data axis 2..8 (model axis 4..1): global batch 1024..4096.

  Per-device logits are [512, B]: linear in B. (With the data axis fixed, N_local grows with B too and the
  [B/8, B] logits grow quadratically, 8x below the reference; see the next test.)
  """
  local, temps = 512, []
  for data in (2, 4, 8):
    mesh = parallel.make_mesh(model=8 // data)
    fn = lambda i, t, s: losses.sharded_clip_loss(i, t, s, mesh)
    compiled = _compiled(jax.grad(fn, argnums=(0, 1, 2)) if grad else fn, local * data,
                         parallel.data_sharding(mesh))
    hlo = compiled.as_text()
    assert f"f32[{local},{local * data}]" in hlo  # the local logits
    assert f"f32[{local * data},{local * data}]" not in hlo  # never the global ones
    temps.append(_temp_bytes(compiled))
  print(f"sharded temp bytes/device, local batch {local}, global 1024/2048/4096, grad={grad}: {temps}")
  for small, big in zip(temps, temps[1:]):
    assert big <= 2.5 * small


def test_sharded_memory_vs_reference_on_fixed_mesh():
  """Global batch 256..4096 on the 8-device data axis versus `clip_loss` on one device."""
  mesh = parallel.make_mesh()
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  sharded = lambda i, t, s: losses.sharded_clip_loss(i, t, s, mesh)
  rows = []
  for batch in (256, 512, 1024, 2048, 4096):
    compiled = _compiled(sharded, batch, parallel.data_sharding(mesh))
    assert f"f32[{batch},{batch}]" not in compiled.as_text()
    reference = _compiled(losses.clip_loss, batch, one_device)
    assert f"f32[{batch},{batch}]" in reference.as_text()
    rows.append((batch, _temp_bytes(compiled), _temp_bytes(reference)))
  print("global batch, sharded temp bytes/device, reference temp bytes:", rows)
  (_, _, r_1k), (_, s_4k, r_4k) = rows[2], rows[4]
  assert r_4k >= 10 * r_1k  # the reference is quadratic (16x for 4x the batch) ...
  assert s_4k <= r_4k / 4  # ... and the sharded loss holds ~1/8 of its logits per device


# ---------------------------------------------------------------- temperature and cross-entropy

def test_clamp_logit_scale():
  log_100 = math.log(100.0)
  got = losses.clamp_logit_scale(jnp.array([-1.0, 0.0, math.log(1 / 0.07), log_100, 10.0], jnp.float32))
  np.testing.assert_allclose(np.asarray(got), [0.0, 0.0, math.log(1 / 0.07), log_100, log_100], rtol=1e-7)
  assert got.dtype == jnp.float32
  assert float(losses.clamp_logit_scale(jnp.float32(6.0), max_scale=50.0)) == pytest.approx(math.log(50.0))
  assert math.exp(float(losses.clamp_logit_scale(jnp.float32(7.0)))) == pytest.approx(100.0, rel=1e-6)


def test_cross_entropy_by_hand_and_against_optax():
  # softmax([0, ln 3]) = [1/4, 3/4].
  logits = jnp.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
  assert float(losses.cross_entropy(logits, jnp.array([1, 0]))) == pytest.approx(
      (-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)
  rng = np.random.default_rng(6)
  logits, labels = rng.normal(size=(10, 7)).astype(np.float32), rng.integers(0, 7, 10)
  want = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  assert float(losses.cross_entropy(logits.astype(jnp.bfloat16), labels)) == pytest.approx(float(want), rel=1e-2)
  assert float(losses.cross_entropy(logits, labels)) == pytest.approx(float(want), rel=1e-6)


def test_cross_entropy_label_smoothing_matches_torch():
  import torch
  rng = np.random.default_rng(7)
  logits, labels = rng.normal(size=(12, 5)).astype(np.float32), rng.integers(0, 5, 12)
  want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels), label_smoothing=0.1)
  got = losses.cross_entropy(logits, labels, label_smoothing=0.1)
  assert float(got) == pytest.approx(want.item(), rel=1e-6)
  assert abs(float(got) - float(losses.cross_entropy(logits, labels))) > 1e-3


# ---------------------------------------------------------------- blockwise

@pytest.mark.parametrize("mask,block", [(False, 8), (True, 8), (True, 16), (False, 64)])
def test_blockwise_loss_and_gradients_equal_reference(mask, block):
  mesh = parallel.make_mesh()
  sharding = parallel.data_sharding(mesh)
  rng = np.random.default_rng(block)
  img, txt = normalised(rng, 64), normalised(rng, 64)
  labels = rng.integers(0, 6, 64).astype(np.int32)  # classes repeat, so whole blocks can be masked for a row
  scale = jnp.float32(1 / 0.07)
  want, want_grads = _value_and_grads(losses.clip_loss, img, txt, scale, labels, mask, jit=True)
  blockwise = lambda i, t, s, **kw: losses.sharded_clip_loss(i, t, s, mesh, block=block, **kw)
  got, got_grads = _value_and_grads(blockwise, jax.device_put(img, sharding), jax.device_put(txt, sharding), scale,
                                    jax.device_put(labels, sharding), mask, jit=True)
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="loss block 24 must be 0"):
    losses.sharded_clip_loss(img, txt, scale, mesh, block=24)


@pytest.mark.slow
def test_blockwise_memory_is_linear_in_global_batch_on_a_fixed_mesh():
  """8-device data axis, global batch 1024..8192, blocks of 256 columns: logits [B/8, 256], never [B/8, B]."""
  mesh = parallel.make_mesh()
  fn = jax.value_and_grad(lambda i, t, s: losses.sharded_clip_loss(i, t, s, mesh, block=256), argnums=(0, 1, 2))
  temps = []
  for batch in (1024, 2048, 4096, 8192):
    compiled = _compiled(fn, batch, parallel.data_sharding(mesh))
    hlo = compiled.as_text()
    assert f"f32[{batch // 8},256]" in hlo and f"f32[{batch // 8},{batch}]" not in hlo
    temps.append(_temp_bytes(compiled))
  print("blockwise temp bytes/device, global 1024..8192:", temps)
  for small, big in zip(temps, temps[1:]):
    assert big <= 2.5 * small  # doubling the batch at most ~doubles the memory (quadratic would be 4x)
