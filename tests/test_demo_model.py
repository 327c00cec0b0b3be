"""The demo's shipped pretrained CLIP and the .npz parameter format it is stored in."""

import jax
import numpy as np
import pytest

from flyp_jax import convert, demo_model, models
from flyp_jax.checkpoint_files import CheckpointError
from flyp_jax.data import classnames, templates
from flyp_jax.tokenizer import tokenize


def test_npz_round_trip_is_exact(tmp_path):
  config = models.get_config("ViT-T/8", context_length=16)
  params = jax.device_get(models.init_params(models.create_model(config), jax.random.PRNGKey(1)))
  convert.save_npz(str(tmp_path / "m.npz"), config, params)
  model, loaded = models.load_pretrained(tmp_path / "m.npz")
  assert model.config == config
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)


def test_npz_errors_name_the_problem(tmp_path):
  np.savez(tmp_path / "plain.npz", w=np.zeros(3))
  with pytest.raises(CheckpointError, match="__flyp_clip_config__"):
    models.load_pretrained(tmp_path / "plain.npz")
  config = models.get_config("ViT-T/8", context_length=16)
  params = jax.device_get(models.init_params(models.create_model(config), jax.random.PRNGKey(1)))
  params["visual"]["proj"] = params["visual"]["proj"][:, :3]
  convert.save_npz(str(tmp_path / "bad.npz"), config, params)
  with pytest.raises(CheckpointError, match="visual/proj"):
    models.load_pretrained(tmp_path / "bad.npz")


def test_shipped_demo_model_encodes_every_demo_prompt_with_trained_embeddings():
  model, params = models.load_pretrained(demo_model.PATH)
  assert (model.config.image_size, model.config.patch_size, model.config.context_length) == (32, 4, 16)  # ViT-T/4
  table = params["text"]["token_embedding"]["embedding"]
  kept = np.flatnonzero(np.any(table != 0, axis=1))
  assert 50 < len(kept) < 1000  # pruned to the pretraining captions' tokens
  prompts = tokenize([t.format(c) for c in classnames.get("domain_shapes") for t in templates.get("domain_shapes")],
                     model.config.context_length)
  assert set(np.unique(prompts)) <= set(kept)
