"""The one rule of a finished run (`flyp_jax.runs`), reuse or run, and running a run another one builds on first."""

import json
import os

import jax
import pytest

from flyp_jax import configs_lib, models, runs
from flyp_jax.models import converted


def write(path, text="{}"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, "w").write(text)


def test_a_training_run_has_finished_with_results_final_and_its_last_checkpoint(tmp_path):
  run = str(tmp_path)
  write(os.path.join(run, "results.json"), '{"top1": 0.5}')
  assert runs.finished(run) and not runs.finished(run, steps=10)  # a command's rule; a training run's needs more
  write(os.path.join(run, "final", "params", "x"))  # final/ half-written: no marker
  os.makedirs(os.path.join(run, "checkpoints", "10"))
  assert not runs.finished(run, steps=10)
  write(os.path.join(run, "final", "flyp_clip.json"))
  assert runs.finished(run, steps=10)
  assert not runs.finished(run, steps=20)  # given more steps than it trained: it resumes
  os.makedirs(os.path.join(run, "checkpoints", "20.orbax-checkpoint-tmp-1"))  # a half-written save is no step
  assert not runs.finished(run, steps=20)
  os.remove(os.path.join(run, "results.json"))
  assert not runs.finished(run, steps=10)


def test_results_of_reuses_a_finished_run_and_runs_an_unfinished_one(tmp_path):
  calls = []

  def runner(config, path):
    calls.append(path)
    write(os.path.join(path, runs.result_file(config.method)), json.dumps({"ran": len(calls)}))
    return {"returned": True}

  lp = configs_lib.load("configs/lp.py:demo")
  assert runs.results_of(lp, str(tmp_path / "lp"), runner) == {"ran": 1}  # the file written, not the return value
  assert runs.results_of(lp, str(tmp_path / "lp"), runner) == {"ran": 1} and len(calls) == 1
  wiseft = configs_lib.load("configs/wiseft.py:demo")
  assert runs.result_file("wiseft") == "wiseft.json"
  write(str(tmp_path / "w" / "results.json"))  # not WiSE-FT's own file: not finished
  assert runs.results_of(wiseft, str(tmp_path / "w"), runner) == {"ran": 2}
  ft = configs_lib.load("configs/ft.py:demo")
  write(str(tmp_path / "ft" / "results.json"))  # results without final/ and the last checkpoint: trained again
  assert runs.results_of(ft, str(tmp_path / "ft"), runner) == {"ran": 3}


def test_ensure_trained_runs_the_config_once_and_says_so(tmp_path, capsys):
  run_dir = str(tmp_path / "teacher")
  loaded = []

  def runner(config, path):  # a final/ as the loop writes it (a tiny random CLIP)
    model = models.create_model(models.get_config("ViT-T/8", context_length=8))
    params = jax.device_get(models.init_params(model, jax.random.key(0)))
    converted.save(os.path.join(path, "final"), model.config, params)

  def load(spec):
    loaded.append(spec)
    return configs_lib.load(spec)

  assert not runs.ensure_trained(run_dir, "", runner, what="at.ensemble.path")  # no config: not run
  assert runs.ensure_trained(run_dir, "configs/ft.py:demo", runner, what="at.ensemble.path", load=load)
  assert f"at.ensemble.path {run_dir} has not finished: running configs/ft.py:demo there first" in capsys.readouterr().out
  assert runs.ensure_trained(run_dir, "configs/ft.py:demo", lambda *a: pytest.fail("ran again"), what="x", load=load)
  assert loaded == ["configs/ft.py:demo"]
  # A final/ that does not load (a bad copy) is set aside and made again.
  write(os.path.join(run_dir, "final", "flyp_clip.json"), "{not json")
  assert runs.ensure_trained(run_dir, "configs/ft.py:demo", runner, what="x", load=load) and len(loaded) == 2
  assert any(n.startswith("final.corrupt-") for n in os.listdir(run_dir))
