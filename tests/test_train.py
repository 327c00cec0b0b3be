"""The training loop end to end on 8 simulated devices: FLYP, FT and pretraining steps, checkpoints, resume."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from flyp_jax import configs_lib, models, train
from flyp_jax.data import pipeline, suites


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  pipeline.get_builder("domain_shapes/small", path)
  return path


@pytest.fixture(autouse=True)
def small_suite(monkeypatch):
  small = tuple(dataclasses.replace(d, tfds_name="domain_shapes/small") for d in suites.SUITES["domain_shapes"])
  monkeypatch.setitem(suites.SUITES, "domain_shapes", small)
  monkeypatch.setitem(suites.VALIDATION, "domain_shapes",
                      dataclasses.replace(suites.VALIDATION["domain_shapes"], tfds_name="domain_shapes/small"))


def tiny_config(spec, data_dir, **updates):
  config = configs_lib.load(spec)
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.update(dataset="domain_shapes/small", data_dir=data_dir)
  config.update(batch_size=16, steps=4, log_every=2, checkpoint_every=2)
  config.eval.update(batch_size=64, at_start=False)
  config.update(updates)
  config.lock()
  return config


def test_flyp_trains_evaluates_and_saves(tmp_path, data_dir):
  results = train.run(tiny_config("configs/flyp.py:demo", data_dir), str(tmp_path))
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train_lines = [l for l in lines if "train/loss" in l]
  assert [l["step"] for l in train_lines] == [2, 4] and all(np.isfinite(l["train/loss"]) for l in train_lines)
  assert 0 <= results["avg_ood/top1"] <= 1 and (tmp_path / "results.json").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  model, params = models.load_pretrained(tmp_path / "final")
  assert model.config.context_length == 16 and float(params["logit_scale"]) <= np.log(100) + 1e-6


def test_resume_continues_from_the_last_checkpoint(tmp_path, data_dir, capsys):
  """With parameters split over a model axis of 2, so that sharded checkpoints are saved and restored."""
  train.run(tiny_config("configs/flyp.py:demo", data_dir, steps=2, model_axis=2), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  import shutil
  shutil.rmtree(tmp_path / "final")
  capsys.readouterr()
  train.run(tiny_config("configs/flyp.py:demo", data_dir, steps=4, model_axis=2), str(tmp_path))
  out = capsys.readouterr().out
  assert "step 4/4" in out and "step 2/4" not in out  # steps 1-2 were not run again
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_ft_trains_head_and_image_tower_only(tmp_path, data_dir):
  config = tiny_config("configs/ft.py:demo", data_dir)
  model, init = train.load_clip(config, str(tmp_path))
  train.run(config, str(tmp_path))
  _, final = models.load_pretrained(tmp_path / "final")
  head = np.load(tmp_path / "final" / "head.npz")
  assert head["kernel"].shape == (64, 10) and head["bias"].shape == (10,)
  same = lambda a, b: jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, a, b))
  assert same(final["text"], jax.device_get(init["text"]))
  assert not same(final["visual"], jax.device_get(init["visual"]))


def test_pretrain_step_on_captions(tmp_path, data_dir):
  config = tiny_config("configs/pretrain.py:demo", data_dir, steps=2)
  results = train.run(config, str(tmp_path))
  assert "domain_shapes_photo/top1" in results


def test_no_trainable_parameter_is_an_error(tmp_path, data_dir):
  with pytest.raises(ValueError, match="no parameter matches"):
    train.run(tiny_config("configs/flyp.py:demo", data_dir, trainable="^nothing"), str(tmp_path))


def test_lp_then_lpft_then_wiseft(tmp_path, data_dir):
  from flyp_jax.methods import lp, wiseft
  lp_dir, ft_dir = tmp_path / "lp", tmp_path / "lpft"
  lp_results = lp.run(tiny_config("configs/lp.py:demo", data_dir), str(lp_dir))
  assert (lp_dir / "lp_head.npz").exists() and 0 <= lp_results["avg_id/top1"] <= 1
  probe = np.load(lp_dir / "lp_head.npz")
  config = tiny_config("configs/lpft.py:demo", data_dir, steps=2)
  config.unlock()
  config.ft.lp_workdir = str(lp_dir)
  train.run(config, str(ft_dir))
  config = tiny_config("configs/wiseft.py:demo", data_dir)
  config.unlock()
  config.wiseft.update(finetuned=str(ft_dir), finetuned_config="", alphas=[0.0, 0.5, 1.0])
  picked = wiseft.run(config, str(tmp_path / "wiseft"))
  rows = json.loads((tmp_path / "wiseft" / "wiseft.json").read_text())
  assert picked["picked_alpha"] in (0.0, 0.5, 1.0) and (tmp_path / "wiseft" / "wiseft.png").stat().st_size > 0
  assert [r["alpha"] for r in rows["results"]] == [0.0, 0.5, 1.0]
  assert np.load(ft_dir / "final" / "head.npz")["kernel"].shape == probe["kernel"].shape


def test_config_typo_is_a_clear_error(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "main.py", "--config=configs/flyp.py", "--config.optimizer.learning_rate=1",
                        f"--workdir={tmp_path}"], capture_output=True, text=True, cwd=root)
  assert run.returncode != 0
  assert "learning_rate" in run.stderr and "lr" in run.stderr  # names the typo and the valid keys


def test_rerunning_a_finished_run_only_evaluates(tmp_path, data_dir, capsys):
  config = tiny_config("configs/flyp.py:demo", data_dir, steps=2)
  first = train.run(config, str(tmp_path))
  capsys.readouterr()
  again = train.run(config, str(tmp_path))
  assert "step " not in capsys.readouterr().out
  assert again["avg_ood/top1"] == first["avg_ood/top1"]


def test_a_final_directory_left_half_written_is_written_again(tmp_path, data_dir):
  config = tiny_config("configs/ft.py:demo", data_dir, steps=2)
  train.run(config, str(tmp_path))
  head = dict(np.load(tmp_path / "final" / "head.npz"))
  # A run stopped while saving final/: the parameters are there, the marker (written last) and head are not.
  (tmp_path / "final" / "flyp_clip.json").unlink()
  (tmp_path / "final" / "head.npz").unlink()
  train.run(config, str(tmp_path))
  assert (tmp_path / "final" / "flyp_clip.json").exists()
  jax.tree_util.tree_map(np.testing.assert_array_equal, dict(np.load(tmp_path / "final" / "head.npz")), head)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, data_dir):
  config = tiny_config("configs/ft.py:demo", data_dir)
  config.unlock()
  config.optimizer.lr = 1e38  # finite, so that it passes the config checks, and diverges at once
  with pytest.raises(FloatingPointError, match="last good checkpoint"):
    train.run(config, str(tmp_path))
  assert not (tmp_path / "checkpoints" / "4").exists() and not (tmp_path / "final").exists()


def test_start_evaluation_best_checkpoint_and_comparison_table(tmp_path, data_dir, capsys):
  config = tiny_config("configs/flyp.py:demo", data_dir)
  config.unlock()
  config.eval.update(at_start=True, every_steps=2)
  results = train.run(config, str(tmp_path))
  out = capsys.readouterr().out
  start = json.loads((tmp_path / "eval_0.json").read_text())
  assert "| zero-shot (step 0) | flyp (step 4) |" in out
  assert f"| avg_ood | {100 * start['avg_ood/top1']:.2f} | {100 * results['avg_ood/top1']:.2f} |" in out
  # The best of the validation accuracies at steps 0, 2 and 4 is kept apart from the last checkpoints.
  scores = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines() if "eval/id_val/top1" in l]
  assert [s["step"] for s in scores] == [0, 2, 4]
  best = max(scores, key=lambda s: (s["eval/id_val/top1"], s["step"]))  # ties: the later step
  assert results["best_step"] == best["step"] and os.listdir(tmp_path / "best") == [str(best["step"])]
