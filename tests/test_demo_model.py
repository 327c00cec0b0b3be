"""The demo's shipped pretrained CLIP and the .npz parameter format it is stored in."""

import json

import jax
import numpy as np
import pytest

from flyp_jax import demo_model, models
from flyp_jax.models import converted
from flyp_jax.checkpoint_files import CheckpointError
from flyp_jax.data import classnames, templates
from flyp_jax.tokenizer import tokenize


@pytest.mark.slow
def test_npz_round_trip_is_exact(tmp_path):
  config = models.get_config("ViT-T/8", context_length=16)
  params = jax.device_get(models.init_params(models.create_model(config), jax.random.PRNGKey(1)))
  converted.save_npz(str(tmp_path / "m.npz"), config, params)
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
  converted.save_npz(str(tmp_path / "bad.npz"), config, params)
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


def test_curve_follows_a_run_back_to_the_run_it_started_from(tmp_path):
  # Two cycles: the second starts from the first's end (model.init='run', a path beside it, as the demo preset).
  def make_run(name, steps, model, evals):
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"steps": steps, "model": model}}))
    for step, acc in evals.items():
      (run / f"eval_{step}.json").write_text(json.dumps({"domain_shapes_validation/top1": acc, **{
          f"domain_shapes_pretrain_val/group{g}_top1": acc / (g + 1) for g in range(5)}}))
    return run
  make_run("cycle1", 8, {"init": "random", "path": ""}, {4: 0.1, 8: 0.2})
  second = make_run("cycle2", 6, {"init": "run", "path": "cycle1"}, {3: 0.3, 6: 0.4})
  points, starts = demo_model.held_out_curve(str(second))
  assert [(s, m["domain_shapes_validation/top1"]) for s, m in points] == [(4, 0.1), (8, 0.2), (11, 0.3), (14, 0.4)]
  assert starts == [8]
  third = make_run("cycle3", 2, {"init": "run", "path": str(second)}, {2: 0.5})
  points, starts = demo_model.held_out_curve(str(third))
  assert [s for s, _ in points] == [4, 8, 11, 14, 16] and starts == [8, 14]
  path = demo_model.plot_curve(str(third), str(tmp_path / "curve.png"))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
