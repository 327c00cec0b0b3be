"""The weight EMA (`optimizer.ema_decay`): timm's ModelEmaV2 formula step by step, kept in the checkpoint so that a
resumed run ends bit for bit where an uninterrupted one does, evaluated beside the raw parameters, selectable
(`eval.select_ema`) and saved as final_ema/."""

import json

import jax
import numpy as np
import optax
import pytest

from conftest import tiny_config
from flyp_jax import config_checks, models, optim, parallel, train
from flyp_jax.methods import ft


def test_the_ema_is_decay_times_itself_plus_the_rest_times_the_new_parameters_after_every_step(data_dir):
  """ema_0 = params_0, ema_t = d ema_(t-1) + (1 - d) params_t (util/model_ema.py's update after each optimiser
  step), computed here in numpy from the parameters each step returns; frozen parameters are not stored twice."""
  decay = 0.7
  config = tiny_config("configs/ft.py:demo", data_dir, optimizer={"ema_decay": decay, "warmup_steps": 0, "lr": 1e-2},
                       frozen="^clip/text/")
  model, clip = train.load_clip(config, "unused")
  mesh = parallel.make_mesh(1)
  rng = np.random.default_rng(0)
  params = {"clip": clip, "head": {"kernel": rng.normal(0, 0.1, (model.config.embed_dim, 10)).astype(np.float32),
                                   "bias": np.zeros(10, np.float32)}}
  tx = optim.make_optimizer(config, params, config.steps)
  state = train.init_state(params, tx, mesh, ema_of=train.ema_mask(config, params))
  step = train.make_train_step(config, ft.METHOD.make_loss(config, model, mesh), tx, mesh, state)
  masked = jax.tree.map(lambda e: isinstance(e, optax.MaskedNode), state["ema"],
                        is_leaf=lambda e: isinstance(e, optax.MaskedNode))
  assert all(jax.tree.leaves(masked["clip"]["text"]))
  assert not any(jax.tree.leaves(masked["clip"]["visual"])) and not any(jax.tree.leaves(masked["head"]))
  expected = jax.device_get(optim.ema_params(state["ema"], state["params"]))
  jax.tree.map(np.testing.assert_array_equal, expected, jax.device_get(state["params"]))  # it starts at params_0
  batch = parallel.global_batch({"image": rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
                                 "label": (np.arange(16) % 10).astype(np.int32)}, mesh)
  for _ in range(4):
    state, _ = step(state, batch)
    new = jax.device_get(state["params"])
    expected = jax.tree.map(lambda e, p: np.float32(decay) * e + np.float32(1 - decay) * p, expected, new)
    got = jax.device_get(optim.ema_params(state["ema"], state["params"]))
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7), got, expected)
  moved = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert moved(got["clip"]["visual"], new["clip"]["visual"]) > 1e-4  # the average lags the parameters
  jax.tree.map(np.testing.assert_array_equal, got["clip"]["text"], new["clip"]["text"])  # frozen: the parameters


@pytest.mark.slow
def test_an_ema_run_resumes_bitwise_reports_both_selects_either_and_saves_final_ema(tmp_path, data_dir, capsys):
  """FT with ema_decay 0.5, evaluated at steps 2 and 4: run through; preempted after step 2 and resumed; and with
  eval.select_ema. The resumed run's final/ and final_ema/ equal the uninterrupted run's bit for bit; each
  evaluation has the EMA's metrics under ema/ (select_ema: the raw ones under raw/, the EMA's as the plain keys,
  and with test_selected_only both are tested at the selected step)."""
  make = lambda steps, **eval_: tiny_config("configs/ft.py:demo", data_dir, steps=steps, checkpoint_every=0,
                                            optimizer={"ema_decay": 0.5}, eval={"every_steps": 2, **eval_})
  through, resumed, selecting = tmp_path / "through", tmp_path / "resumed", tmp_path / "select_ema"
  train.run(make(4), str(through))
  with pytest.MonkeyPatch.context() as patch:  # preempted after step 2 (as SIGTERM would), then run again
    patch.setattr(train._TermSignal, "reached", lambda self, ckpt, step: step == 2)
    with pytest.raises(train.Preempted):
      train.run(make(4), str(resumed))
  train.run(make(4), str(resumed))
  out = capsys.readouterr().out
  assert "validation (ema)" in out
  for folder in ("final", "final_ema"):
    _, a = models.load_pretrained(through / folder)
    _, b = models.load_pretrained(resumed / folder)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    np.testing.assert_array_equal(np.load(through / folder / "head.npz")["kernel"],
                                  np.load(resumed / folder / "head.npz")["kernel"])
  _, raw = models.load_pretrained(through / "final")
  _, ema = models.load_pretrained(through / "final_ema")
  assert not np.array_equal(raw["visual"]["proj"], ema["visual"]["proj"])
  evaluated = json.loads((through / "eval_4.json").read_text())
  assert {"id_val/top1", "ema/id_val/top1", "avg_ood/top1", "ema/avg_ood/top1"} <= set(evaluated)
  logged = [json.loads(l) for l in (through / "metrics.jsonl").read_text().splitlines()]
  assert any("eval/ema/id_val/top1" in l for l in logged)

  # select_ema, the suite tested on the selected step only: both parameters of that step are tested.
  train.run(make(4, select_ema=True, test_selected_only=True), str(selecting))
  results = json.loads((selecting / "results.json").read_text())
  at_selected = json.loads((through / f"eval_{results['selected_step']}.json").read_text())
  for key in ("id_val/top1", "avg_ood/top1"):  # the same EMA and raw parameters as the run through
    assert results[key] == at_selected[f"ema/{key}"] and results[f"raw/{key}"] == at_selected[key], key
  assert results["selected_on"] == "id_val/top1"
  assert (selecting / "selected").exists() == (results["selected_step"] != 4)


def test_select_ema_without_an_ema_is_a_clear_error(data_dir):
  config = tiny_config("configs/ft.py:demo", data_dir, eval={"select_ema": True})
  with pytest.raises(config_checks.ConfigError, match="no weight EMA to select"):
    config_checks.validate(config)
  config = tiny_config("configs/ft.py:demo", data_dir, optimizer={"ema_decay": 1.0})
  with pytest.raises(config_checks.ConfigError, match="ema_decay"):
    config_checks.validate(config)
