"""The jitted training step on a fixed batch: each method lowers its loss; gradient accumulation is exact."""

import jax
import numpy as np
import pytest

from flyp_jax import configs_lib, optim, parallel, train
from flyp_jax.methods import flyp, ft, pretrain
from flyp_jax.tokenizer import tokenize

BATCH = 32


# Adam with eps = 1 makes an update close to lr * gradient, for comparisons of parameters after training: with
# the usual eps a gradient near zero becomes a full-size step of its sign, and float noise would decide.
LINEAR_ADAM = {"optimizer": {"lr": 0.1, "eps": 1.0}}


def setup(spec, model_axis=1, optimizer=None, **updates):
  config = configs_lib.load(spec)
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.update(batch_size=BATCH, steps=100, seed=0, **updates)  # the same random CLIP whatever the preset's seed
  config.optimizer.update({"lr": 1e-3, "warmup_steps": 1, "weight_decay": 0.0, **(optimizer or {})})
  config.lock()
  model, clip = train.load_clip(config, "unused")
  mesh = parallel.make_mesh(model_axis)
  rng = np.random.default_rng(0)
  params = {"clip": clip}
  if config.method == "ft":  # a random head: the zero-shot head needs the dataset's prompts only
    params["head"] = {"kernel": rng.normal(0, 0.1, (model.config.embed_dim, 10)).astype(np.float32),
                      "bias": np.zeros(10, np.float32)}
  labels = np.arange(BATCH) % 10
  batch = {"image": rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32), "label": labels.astype(np.int32)}
  if config.method == "pretrain":
    batch = {"image": batch["image"], "tokens": tokenize([f"picture number {i}" for i in range(BATCH)], 16)}
  return config, model, mesh, params, parallel.global_batch(batch, mesh)


def step_fn(config, method, model, mesh, params):
  tx = optim.make_optimizer(config, params, config.steps)
  state = train.init_state(params, tx, mesh)
  return train.make_train_step(config, method.make_loss(config, model, mesh), tx, mesh, state), state


def test_the_training_state_is_born_sharded_never_whole_on_one_device():
  """Model axis 2 of the 8 devices: a random CLIP is initialised where it lives, a checkpoint's host parameters go
  to the devices shard by shard, and the AdamW state is computed sharded. Gathering a whole tree on one device
  first and then splitting it (as `jax.device_put(tx.init(params))` would) needs a device-to-device transfer,
  which the guard turns into an error; and each device holds half of every leaf the model axis splits."""
  config = configs_lib.load("configs/flyp.py:demo")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.model_axis = 2
  mesh = parallel.make_mesh(2)
  with jax.transfer_guard_device_to_device("disallow"):
    _, clip = train.load_clip(config, "unused", mesh)
    tx = optim.make_optimizer(config, {"clip": clip}, config.steps)
    born = train.init_state({"clip": clip}, tx, mesh)
    loaded = train.init_state({"clip": jax.device_get(clip)}, tx, mesh)  # a checkpoint's host arrays
  for state in (born, loaded):
    split = 0
    for leaf in jax.tree_util.tree_leaves(state):
      whole = leaf.sharding.shard_shape(leaf.shape) == leaf.shape
      split += not whole
      assert whole == (parallel.param_sharding(leaf, mesh) == parallel.replicated(mesh)), leaf.shape
      assert all(s.data.size == (leaf.size if whole else leaf.size // 2) for s in leaf.addressable_shards)
    assert split > 20  # the parameters and both AdamW moments of every matrix
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(born), jax.device_get(loaded))


@pytest.mark.slow
@pytest.mark.parametrize("spec,method", [("configs/flyp.py:demo", flyp), ("configs/ft.py:demo", ft),
                                         ("configs/pretrain.py:demo", pretrain)])
def test_each_method_lowers_its_loss_on_a_fixed_batch(spec, method):
  config, model, mesh, params, batch = setup(spec)
  step, state = step_fn(config, method, model, mesh, params)
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


@pytest.mark.slow
def test_gradient_accumulation_equals_the_whole_batch():
  """Cross-entropy is a mean over the batch, so two half-batches' averaged gradients are the whole batch's.

  No warmup, so every step moves the parameters and steps 2 and 3 compare losses and gradients at trained
  parameters; each leaf's difference between runs is judged against how far that leaf moved.
  """
  results = []
  for accum in (1, 2, 4):
    config, model, mesh, params, batch = setup("configs/ft.py:demo", grad_accum_steps=accum,
                                               optimizer={"warmup_steps": 0, **LINEAR_ADAM["optimizer"]})
    step, state = step_fn(config, ft, model, mesh, params)
    losses, norms = [], []
    for _ in range(3):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
      norms.append(float(metrics["grad_norm"]))
    results.append((jax.device_get(state["params"]), losses, norms))
  (whole, losses, norms), rest = results[0], results[1:]
  assert abs(losses[2] - losses[0]) > 1e-3 * abs(losses[0]), losses  # the later losses are at moved parameters
  initial = jax.device_get(setup("configs/ft.py:demo")[3])
  moved = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), whole, initial)
  for params, accumulated_losses, accumulated_norms in rest:
    np.testing.assert_allclose(accumulated_losses, losses, rtol=1e-5)
    np.testing.assert_allclose(accumulated_norms, norms, rtol=1e-4)
    for (path, a), b, m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(whole),
                               jax.tree_util.tree_leaves(moved)):
      # Leaves FT does not train (the text tower, the logit scale) must stay equal; the rest within 1% of their
      # move. Attention is invariant to the key bias, whose gradient is zero up to rounding (it moves ~1e-10).
      assert float(np.max(np.abs(a - b))) <= max(1e-2 * m, 1e-9), jax.tree_util.keystr(path)
  trained = [m for p, m in jax.tree_util.tree_leaves_with_path({"visual": moved["clip"]["visual"],
                                                                "head": moved["head"]})
             if "['key']['bias']" not in jax.tree_util.keystr(p)]
  assert min(trained) > 1e-6  # every other image-tower and head leaf trained


def test_indivisible_accumulation_is_a_clear_error(tmp_path):
  config = configs_lib.load("configs/ft.py:demo")
  config.unlock()
  config.update(batch_size=24, grad_accum_steps=2)  # 12 per micro-batch: not divisible by 8 devices
  with pytest.raises(ValueError, match="grad_accum_steps=2"):
    train.run(config, str(tmp_path))


@pytest.mark.slow
def test_parameters_split_over_the_model_axis_train_as_replicated_ones():
  """FLYP on 8 devices as 8 x 1 (replicated), 4 x 2 and 2 x 4 (data x model): the same losses and parameters."""
  runs = []
  for model_axis in (1, 2, 4):
    config, model, mesh, params, batch = setup("configs/flyp.py:demo", model_axis=model_axis, **LINEAR_ADAM)
    step, state = step_fn(config, flyp, model, mesh, params)
    kernel = state["params"]["clip"]["visual"]["conv1"]["kernel"]
    assert len({s.data.shape for s in kernel.addressable_shards}) == 1
    assert kernel.addressable_shards[0].data.size == kernel.size // model_axis  # stored split, not replicated
    losses = []
    for _ in range(3):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
    runs.append((losses, jax.device_get(state["params"])))
  for losses, params in runs[1:]:
    np.testing.assert_allclose(losses, runs[0][0], rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), params, runs[0][1])


def test_batches_are_made_one_ahead_of_the_step_in_their_order():
  made = []

  def stream():
    for i in range(4):
      made.append(i)
      yield i

  handed = []
  for batch in parallel.ahead(stream()):
    handed.append(batch)
    assert made == list(range(min(batch + 2, 4)))  # the next batch already made (its copy issued) when one is used
  assert handed == [0, 1, 2, 3]
  assert list(parallel.ahead(iter([]))) == [] and list(parallel.ahead(iter([7]))) == [7]
