"""`model.scan_layers`: the blocks under `nn.scan`, the same model in another parameter layout.

The scanned CLIP against the per-layer one on the same parameters (values and gradients, with and without remat),
the layout converter both ways (`transformer.stack_blocks` / `unstack_blocks`), checkpoints written per layer and
read into either layout, the model axis never splitting the layer axis, and a training run equal to the per-layer
run from the same seed.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from flyp_jax import config_checks, models, parallel, runs, train
from flyp_jax.models import converted
from flyp_jax.models.transformer import SCANNED, stack_blocks, unstack_blocks

# Four image blocks and three text blocks: a scan of more than one block in each tower.
CONFIG = models.get_config("ViT-T/8", vision_layers=4, text_layers=3, context_length=16)


def _inputs(n=3):
  images, tokens = models.dummy_inputs(CONFIG, n)
  return (jax.random.normal(jax.random.key(1), images.shape),
          jax.random.randint(jax.random.key(2), tokens.shape, 1, 1000))


def _equal_trees(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stack_and_unstack_are_inverse_and_give_the_scanned_models_layout():
  per_layer = models.init_params(models.create_model(CONFIG), jax.random.key(0))
  stacked = stack_blocks(per_layer)
  blocks = stacked["visual"]["transformer"]
  assert sorted(blocks) == sorted([SCANNED, "resblocks_3"])  # the first three stacked, the last (pooled) block alone
  assert blocks[SCANNED]["mlp"]["c_fc"]["kernel"].shape == (3,) + per_layer["visual"]["transformer"][
      "resblocks_0"]["mlp"]["c_fc"]["kernel"].shape
  np.testing.assert_array_equal(blocks[SCANNED]["attn"]["query"]["kernel"][1],
                                per_layer["visual"]["transformer"]["resblocks_1"]["attn"]["query"]["kernel"])
  # the scanned model's own parameters have exactly this structure and these shapes, and the same values
  scanned_model = models.create_model(CONFIG, scan=True)
  _equal_trees(models.init_params(scanned_model, jax.random.key(0)), stacked)
  _equal_trees(unstack_blocks(stacked), per_layer)
  _equal_trees(unstack_blocks(per_layer), per_layer)  # a per-layer tree is left as it is
  _equal_trees(stack_blocks(stacked), stacked)  # and a stacked one
  assert jax.tree.map(lambda x: x.shape, jax.eval_shape(stack_blocks, per_layer)) == jax.tree.map(
      lambda x: x.shape, stacked)


@pytest.mark.parametrize("remat", [False, True, "dots_saveable"])
def test_the_scanned_clip_computes_the_per_layer_clips_values_and_gradients(remat):
  per_layer_model = models.create_model(CONFIG, remat=remat)
  scanned_model = models.create_model(CONFIG, remat=remat, scan=True)
  params = models.init_params(per_layer_model, jax.random.key(0))
  images, tokens = _inputs()

  def loss(model, p):
    logits, aux = model.apply({"params": p}, images, tokens)
    return jnp.sum(jax.nn.log_softmax(logits) * jnp.eye(len(tokens))) + jnp.sum(aux["image_features"] ** 2)

  value, grads = jax.value_and_grad(lambda p: loss(per_layer_model, p))(params)
  scanned_value, scanned_grads = jax.value_and_grad(lambda p: loss(scanned_model, p))(stack_blocks(params))
  np.testing.assert_allclose(scanned_value, value, rtol=1e-5)
  scanned_grads = unstack_blocks(scanned_grads)
  assert jax.tree.structure(scanned_grads) == jax.tree.structure(grads)
  for g, s in zip(jax.tree.leaves(grads), jax.tree.leaves(scanned_grads)):  # float32 sums in another order
    np.testing.assert_allclose(s, g, rtol=1e-4, atol=1e-5 * np.abs(g).max() + 1e-6)


def test_checkpoints_are_written_per_layer_and_read_into_either_layout(tmp_path):
  params = models.init_params(models.create_model(CONFIG), jax.random.key(0))
  converted.save(str(tmp_path / "ckpt"), CONFIG, stack_blocks(params))  # a scanned run's final/
  _, on_disk = converted.load(str(tmp_path / "ckpt"))
  _equal_trees(on_disk, params)
  model, loaded = models.load_pretrained(str(tmp_path / "ckpt"), scan=True)
  assert model.scan
  _equal_trees(loaded, stack_blocks(params))
  model, loaded = models.load_pretrained(str(tmp_path / "ckpt"))
  assert not model.scan
  _equal_trees(loaded, params)


def test_the_model_axis_never_splits_the_layer_axis():
  mesh = parallel.make_mesh(model=2)
  # [3, 4, 6]: the largest dimension that 2 divides would be the scanned one's neighbour only if axis 0 is skipped
  tree = {"visual": {SCANNED: {"w": jax.ShapeDtypeStruct((4, 2, 6), jnp.float32)}, "w": jax.ShapeDtypeStruct(
      (4, 2, 6), jnp.float32)}}
  specs = jax.tree.map(lambda s: s.spec, parallel.state_shardings(tree, mesh))
  assert specs["visual"]["w"] == jax.sharding.PartitionSpec(None, None, parallel.MODEL)
  assert specs["visual"][SCANNED]["w"] == jax.sharding.PartitionSpec(None, None, parallel.MODEL)
  tree = {SCANNED: {"w": jax.ShapeDtypeStruct((4, 3, 3), jnp.float32)}, "w": jax.ShapeDtypeStruct((4, 3, 3),
                                                                                                   jnp.float32)}
  specs = jax.tree.map(lambda s: s.spec, parallel.state_shardings(tree, mesh))
  assert specs["w"] == jax.sharding.PartitionSpec(parallel.MODEL, None, None)  # per layer: split where it divides
  assert specs[SCANNED]["w"] == jax.sharding.PartitionSpec()  # the layer axis whole: nothing else divides


@pytest.mark.slow
def test_a_scanned_flyp_run_trains_as_the_per_layer_run_and_saves_per_layer(tmp_path, data_dir):
  results, model = {}, {"overrides": {"context_length": 16, "vision_layers": 3}}
  for scan in (False, True):
    config = tiny_config("configs/flyp.py:demo", data_dir, {"eval": {"at_start": False}}, steps=2, model_axis=2,
                         model={**model, "scan_layers": scan})
    results[scan] = train.run(config, str(tmp_path / str(scan) / "flyp_demo"))
  metrics = [k for k in results[False] if "/top" in k]
  assert metrics and {k: results[True][k] for k in metrics} == {k: results[False][k] for k in metrics}
  _, per_layer = models.load_pretrained(runs.final_dir(str(tmp_path / "False" / "flyp_demo")))
  _, from_scanned = models.load_pretrained(runs.final_dir(str(tmp_path / "True" / "flyp_demo")))
  assert "resblocks_1" in from_scanned["visual"]["transformer"]  # final/ per layer, as every loader reads it
  for a, b in zip(jax.tree.leaves(per_layer), jax.tree.leaves(from_scanned)):
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
  # WiSE-FT in the scanned layout: the zero-shot model scanned, the run's selected checkpoint read into that layout
  wise = tiny_config("configs/wiseft.py:flyp", data_dir, wiseft={"alphas": [1.0], "finetuned_config": ""},
                     model={**model, "scan_layers": True})
  train.dispatch(wise, str(tmp_path / "True" / "wiseft"))
  swept = json.loads((tmp_path / "True" / "wiseft" / "wiseft.json").read_text())["results"]
  assert swept[0]["avg_id/top1"] == pytest.approx(results[True]["avg_id/top1"], abs=1e-6)


@pytest.mark.parametrize("spec,updates", [("configs/attention_transfer.py:demo", {}),
                                          ("configs/ft.py:demo", {"optimizer": {"layer_decay": 0.75}})])
def test_scan_layers_is_refused_where_each_layer_is_addressed(data_dir, spec, updates):
  config = tiny_config(spec, data_dir, updates, model={"scan_layers": True})
  with pytest.raises(config_checks.ConfigError, match="scan_layers"):
    config_checks.validate(config)
