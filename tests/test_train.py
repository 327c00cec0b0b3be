"""The training loop end to end on 8 simulated devices: FLYP, FT and pretraining steps, checkpoints, resume."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config as shared_tiny_config, use_small_suites

from flyp_jax import configs_lib, models, runs, train


@pytest.fixture(autouse=True)
def small_suite(monkeypatch):
  use_small_suites(monkeypatch, names=("domain_shapes", "domain_shapes_heldout"))


def tiny_config(spec, data_dir, **updates):
  """conftest's tiny config without the step-0 evaluation (the tests here read the trained steps')."""
  return shared_tiny_config(spec, data_dir, {"eval": {"at_start": False}}, **updates)


@pytest.mark.slow
def test_flyp_trains_evaluates_saves_resumes_and_reports_a_finished_run(tmp_path, data_dir, capsys):
  """One FLYP run, with parameters split over a model axis of 2 so that sharded checkpoints are saved and
  restored: 2 steps, final/ removed, resumed to 4 steps, then run again once finished."""
  train.run(tiny_config("configs/flyp.py:demo", data_dir, steps=2, model_axis=2), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  import shutil
  shutil.rmtree(tmp_path / "final")
  capsys.readouterr()
  config = tiny_config("configs/flyp.py:demo", data_dir, steps=4, model_axis=2)
  results = train.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "step 4/4" in out and "step 2/4" not in out  # steps 1-2 were not run again
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train_lines = [l for l in lines if "train/loss" in l]
  assert [l["step"] for l in train_lines] == [2, 4] and all(np.isfinite(l["train/loss"]) for l in train_lines)
  # The headline is the mean of the four OOD domains' top-1, each a count of the 100 test images of its split.
  ood = [results[f"domain_shapes_{d}/top1"] for d in ("sketch", "cartoon", "painting", "clutter")]
  assert results["avg_ood/top1"] == pytest.approx(sum(ood) / 4, abs=1e-6)
  assert all(abs(v * 100 - round(v * 100)) < 1e-4 for v in ood) and results["train_seconds"] > 0
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
  model, params = models.load_pretrained(tmp_path / "final")
  assert model.config.context_length == 16 and float(params["logit_scale"]) <= np.log(100) + 1e-6

  # A finished run is reported as it is: no training, no evaluation, no second final row in metrics.jsonl.
  metrics = (tmp_path / "metrics.jsonl").read_text()
  again = train.run(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "step " not in out and "evaluation" not in out and "holds a finished run" in out
  assert again == json.loads((tmp_path / "results.json").read_text()) and "train_seconds" not in again
  assert again["avg_ood/top1"] == results["avg_ood/top1"]
  assert (tmp_path / "metrics.jsonl").read_text() == metrics


@pytest.mark.slow
def test_ft_trains_head_and_image_tower_only_and_rewrites_a_half_written_final(tmp_path, data_dir):
  config = tiny_config("configs/ft.py:demo", data_dir)
  model, init = train.load_clip(config, str(tmp_path))
  train.run(config, str(tmp_path))
  _, final = models.load_pretrained(tmp_path / "final")
  head = dict(np.load(tmp_path / "final" / "head.npz"))
  assert head["kernel"].shape == (64, 10) and head["bias"].shape == (10,)
  same = lambda a, b: jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, a, b))
  assert same(final["text"], jax.device_get(init["text"]))
  assert not same(final["visual"], jax.device_get(init["visual"]))
  # A run stopped while saving final/: the parameters are there, the marker (written last) and head are not.
  (tmp_path / "final" / "flyp_clip.json").unlink()
  (tmp_path / "final" / "head.npz").unlink()
  train.run(config, str(tmp_path))
  assert (tmp_path / "final" / "flyp_clip.json").exists()
  jax.tree_util.tree_map(np.testing.assert_array_equal, dict(np.load(tmp_path / "final" / "head.npz")), head)


@pytest.mark.slow
def test_ce_ablation_trains_both_towers_without_a_head_and_wiseft_interpolates_it(tmp_path, data_dir):
  """FLYP's cross-entropy ablation through the loop (its step is tests/test_trajectory.py's), then WiSE-FT of it:
  alpha 0 is the zero-shot model and alpha 1 the run's own final model, scored as the run scored it."""
  run_dir = tmp_path / "ce_ablation_demo"
  config = tiny_config("configs/ce_ablation.py:demo", data_dir, steps=2)
  _, init = train.load_clip(config, str(run_dir))
  results = train.run(config, str(run_dir))
  _, final = models.load_pretrained(run_dir / "final")
  moved = lambda a, b: not jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, a, b))
  assert moved(final["text"], jax.device_get(init["text"])) and moved(final["visual"], jax.device_get(init["visual"]))
  assert not (run_dir / "final" / "head.npz").exists()  # the text tower is the head, as FLYP's

  wise = tiny_config("configs/wiseft.py:ce_ablation", data_dir, wiseft={"alphas": [0.0, 1.0], "finetuned_config": ""})
  train.dispatch(wise, str(tmp_path / "wiseft_ce_ablation"))
  swept = json.loads((tmp_path / "wiseft_ce_ablation" / "wiseft.json").read_text())["results"]
  assert [r["alpha"] for r in swept] == [0.0, 1.0]
  for key in ("avg_id/top1", "avg_ood/top1"):
    assert swept[1][key] == pytest.approx(results[key], abs=1e-6), key


@pytest.mark.slow
def test_pretrain_step_on_captions(tmp_path, data_dir):
  config = tiny_config("configs/pretrain.py:demo", data_dir, steps=2)
  results = train.run(config, str(tmp_path))
  # judged on held-out data only: photo validation and each domain of the held-out image-caption split
  assert "domain_shapes_validation/top1" in results and "domain_shapes_photo/top1" not in results
  assert all(f"domain_shapes_pretrain_val/group{g}_top1" in results for g in range(5))


# configs/pretrain.py's presets, made tiny: the cosine cycles keep their chain (model.path, model.config), seeds and
# learning rates; each earlier cycle's config is read from this file too.
TINY_PRETRAIN = """
from flyp_jax import configs_lib

def get_config(arg):
  c = configs_lib.load("configs/pretrain.py:" + arg)
  c.unlock()
  c.model.update(variant="ViT-T/8", config=c.model.config.replace("configs/pretrain.py", __file__))
  c.data.update(dataset="domain_shapes/small", data_dir=DATA_DIR)
  c.update(batch_size=16, steps=2, log_every=1, checkpoint_every=0)
  c.eval.suite = ""
  return c
"""


@pytest.mark.slow
def test_demo_pretraining_runs_its_earlier_cycles_first_and_once(tmp_path, data_dir):
  from configs import pretrain
  spec = tmp_path / "tiny_pretrain.py"
  spec.write_text(TINY_PRETRAIN.replace("DATA_DIR", repr(data_dir)))
  train.run(configs_lib.load(f"{spec}:demo"), str(tmp_path / "pretrain_demo"))
  # every cycle ran in the workdir beside it that the next names, with its own seed and learning rate, and each
  # later one started from the one before (its parameters are the earlier final's after two steps, not random)
  for i, (_, lr, _) in enumerate(pretrain.CYCLES):
    name = "pretrain_demo" if i == len(pretrain.CYCLES) - 1 else f"pretrain_demo_cycle{i + 1}"
    config = json.loads((tmp_path / name / "config.json").read_text())["config"]
    assert (config["seed"], config["optimizer"]["lr"]) == (i, lr), name
    assert config["model"]["init"] == ("random" if i == 0 else "run"), name
    if i:
      _, start = models.load_pretrained(tmp_path / config["model"]["path"] / "final")
      _, end = models.load_pretrained(tmp_path / name / "final")
      gap = np.abs(end["visual"]["proj"] - start["visual"]["proj"]).max()
      assert 0 < gap < 0.1 * np.abs(start["visual"]["proj"]).max(), name
  # another final run of the last cycle finds the earlier ones finished and leaves them as they are
  earlier = [tmp_path / f"pretrain_demo_cycle{i}" / "metrics.jsonl" for i in range(1, len(pretrain.CYCLES))]
  before = [path.read_text() for path in earlier]
  train.run(configs_lib.load(f"{spec}:demo"), str(tmp_path / "pretrain_demo_again"))
  assert [path.read_text() for path in earlier] == before


def test_total_epochs_sets_the_steps_from_the_training_split(data_dir):
  config = tiny_config("configs/lpft.py:demo", data_dir, total_epochs=3, batch_size=16)
  resolved = train.steps_of_epochs(config)
  # domain_shapes/small's train split has 100 examples: ceil(100 / 16) = 7 steps per epoch, as the references'
  # DataLoaders count an epoch (the last batch partial).
  assert resolved.steps == 21 and resolved.optimizer.epoch_steps == 7 and resolved.total_epochs == 0
  assert train.steps_of_epochs(tiny_config("configs/flyp.py:demo", data_dir)).steps == 4  # steps when not set


def test_no_trainable_parameter_is_an_error(tmp_path, data_dir):
  with pytest.raises(ValueError, match="no parameter matches"):
    train.run(tiny_config("configs/flyp.py:demo", data_dir, trainable="^nothing"), str(tmp_path))


def _per_dataset_top1(results):
  """The test datasets' top-1 (not the averages, nor the validation set that only training runs evaluate)."""
  return {k: v for k, v in results.items()
          if k.endswith("/top1") and "/" not in k[:-5] and not k.startswith(("avg", "id_val"))}


def assert_same_accuracies(a, b):
  """Per-dataset top-1 equal up to one example (argmax ties may break differently between two code paths)."""
  a, b = _per_dataset_top1(a), _per_dataset_top1(b)
  assert a and sorted(a) == sorted(b)
  for k in a:
    assert abs(a[k] - b[k]) <= 1 / 100 + 1e-9, (k, a[k], b[k])  # 100 test images per small split


@pytest.mark.slow
def test_lp_then_lpft_then_wiseft(tmp_path, data_dir, capsys):
  """LP-FT starts from the probe's head; WiSE-FT's alpha 0 is the zero-shot model and alpha 1 the LP-FT run; WiSE-FT
  prints a line per alpha, its table and its files, and run again reports its result without recomputing it."""
  from flyp_jax import evaluate, parallel
  from flyp_jax.commands import lp, wiseft
  lp_dir, ft_dir = tmp_path / "lp", tmp_path / "lpft"
  lp_results = lp.run(tiny_config("configs/lp.py:demo", data_dir), str(lp_dir))
  probe = np.load(lp_dir / "lp_head.npz")
  config = tiny_config("configs/lpft.py:demo", data_dir, steps=2)
  config.unlock()
  config.ft.lp_workdir = str(lp_dir)
  config.eval.at_start = True
  ft_results = train.run(config, str(ft_dir))
  # Step 0 of LP-FT, before any update, is the probe: same frozen CLIP, same head, same evaluation.
  assert_same_accuracies(json.loads((ft_dir / "eval_0.json").read_text()), lp_results)
  assert np.load(ft_dir / "final" / "head.npz")["kernel"].shape == probe["kernel"].shape

  config = tiny_config("configs/wiseft.py:demo", data_dir)
  config.unlock()
  config.wiseft.update(finetuned=str(ft_dir), finetuned_config="", alphas=[0.0, 0.5, 1.0])
  capsys.readouterr()
  picked = wiseft.run(config, str(tmp_path / "wiseft"))
  out = capsys.readouterr().out
  rows = json.loads((tmp_path / "wiseft" / "wiseft.json").read_text())["results"]
  key = picked["picked_on"]
  for i, r in enumerate(rows):  # the line of each alpha, with the value it was picked on
    assert f"alpha {r['alpha']:.2f} ({i + 1}/3): {key} {r[key]:.4f}" in out
  assert "validation (" not in out  # the validator's own line is not repeated per alpha
  assert wiseft.table(rows, wiseft.table_keys(key), key) in out
  assert "written: " + ", ".join(str(tmp_path / "wiseft" / n) for n in wiseft.OUTPUTS) in out
  assert wiseft.run(config, str(tmp_path / "wiseft")) == picked
  out = capsys.readouterr().out
  assert "holds a finished WiSE-FT" in out and "alpha 0.00 (1/3)" not in out and wiseft.table(rows, wiseft.table_keys(key), key) in out
  config.wiseft.alphas = [1.0]  # other settings: computed anew
  assert wiseft.run(config, str(tmp_path / "wiseft"))["picked_alpha"] == 1.0
  assert "alpha 1.00 (1/1)" in capsys.readouterr().out
  config.wiseft.alphas = [0.0, 0.5, 1.0]
  assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0] and (tmp_path / "wiseft" / "wiseft.png").stat().st_size > 0
  assert picked["picked_alpha"] == max(rows, key=lambda r: r[picked["picked_on"]])["alpha"]
  # Alpha 0: the zero-shot model scored with its prompts, evaluated here directly.
  model, zeroshot = train.load_clip(config, str(tmp_path / "wiseft"))
  mesh = parallel.make_mesh()
  zero_shot = evaluate.from_config(model, config, mesh)(jax.device_put(zeroshot, parallel.replicated(mesh)))
  assert_same_accuracies(rows[0], zero_shot)
  # Alpha 1: the fine-tuned run's own reported (selected) evaluation.
  assert_same_accuracies(rows[2], ft_results)
  assert _per_dataset_top1(zero_shot) != _per_dataset_top1(lp_results)  # the three references differ


@pytest.mark.slow
def test_lp_ft_on_raw_features_as_the_reference_and_wiseft_refuses_it(tmp_path, data_dir):
  """LP-FT as AnanyaKumar/transfer_learning runs it: the probe on raw features (standardised, mapped back), the
  fine-tuning head on raw `encode_image` features. Step 0 of LP-FT is the probe (the same head on the same raw
  features); a normalised LP-FT refuses the raw probe; WiSE-FT refuses the raw head in one paragraph."""
  from flyp_jax import errors
  from flyp_jax.commands import lp, wiseft
  lp_dir, ft_dir = tmp_path / "lp_raw", tmp_path / "lpft_raw"
  lp_results = lp.run(tiny_config("configs/lp.py:demo", data_dir, lp={"features": "raw", "warm_start": True,
                                                                      "max_iter": 200}), str(lp_dir))
  assert lp_results["lp_features"] == "raw" and str(np.load(lp_dir / "lp_head.npz")["input"]) == "raw"
  updates = dict(steps=2, eval={"at_start": True}, ft={"lp_workdir": str(lp_dir), "head_input": "raw"})
  train.run(tiny_config("configs/lpft.py:demo", data_dir, **updates), str(ft_dir))
  assert_same_accuracies(json.loads((ft_dir / "eval_0.json").read_text()), lp_results)
  updates["ft"]["head_input"] = "normalized"
  with pytest.raises(errors.BadValue, match="fitted on raw features and this run's head reads normalized ones"):
    train.run(tiny_config("configs/lpft.py:demo", data_dir, **updates), str(tmp_path / "lpft_mixed"))

  config = tiny_config("configs/wiseft.py:lpft", data_dir, wiseft={"finetuned": str(ft_dir), "finetuned_config": ""})
  with pytest.raises(errors.BadValue, match="raw image features") as refused:
    wiseft.run(config, str(tmp_path / "wiseft"))
  assert "\n" not in str(refused.value)


def test_time_left_counts_the_evaluations_still_to_come():
  # 10 steps, 1 s each, evaluations of 5 s at steps 4 and 8 and at the end (12 s in all at step 10).
  assert train.time_left(3, 10, 1.0, 4, True, 5.0) == 7 + 3 * 5
  assert train.time_left(4, 10, 1.0, 4, True, 5.0) == 6 + 3 * 5  # step 4's evaluation follows its log line
  assert train.time_left(5, 10, 1.0, 4, True, 5.0) == 5 + 2 * 5
  assert train.time_left(10, 10, 1.0, 4, True, 5.0) == 5  # the final evaluation
  assert train.time_left(10, 10, 1.0, 0, False, 5.0) == 0 and train.time_left(2, 12, 0.5, 0, True, 2.0) == 7


def test_config_typo_is_a_clear_error(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "main.py", "--config=configs/flyp.py", "--config.optimizer.learning_rate=1",
                        f"--workdir={tmp_path}"], capture_output=True, text=True, cwd=root)
  assert run.returncode != 0
  assert "learning_rate" in run.stderr and "lr" in run.stderr  # names the typo and the valid keys


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_error(tmp_path, data_dir):
  config = tiny_config("configs/ft.py:demo", data_dir)
  config.unlock()
  config.optimizer.lr = 1e38  # finite, so that it passes the config checks, and diverges at once
  with pytest.raises(FloatingPointError, match="last good checkpoint"):
    train.run(config, str(tmp_path))
  assert not (tmp_path / "checkpoints" / "4").exists() and not (tmp_path / "final").exists()


@pytest.mark.slow
def test_start_evaluation_selected_checkpoint_and_comparison_table(tmp_path, data_dir, capsys, monkeypatch):
  """Evaluations at steps 2 and 4 are the candidates; the validator is made to prefer step 2, so results.json
  must report step 2's evaluation at top level, step 4's under last/, and save step 2's parameters."""
  scores = iter([0.5, 0.9, 0.1])  # steps 0 (not a candidate), 2, 4
  make_validator = train.make_validator

  def scripted_validator(config, model, mesh):
    validate = make_validator(config, model, mesh)
    return lambda clip, head=None, label="": {**validate(clip, head, label), "id_val/top1": next(scores)}

  monkeypatch.setattr(train, "make_validator", scripted_validator)
  config = tiny_config("configs/flyp.py:demo", data_dir)
  config.unlock()
  config.eval.update(at_start=True, every_steps=2)
  results = train.run(config, str(tmp_path))
  out = capsys.readouterr().out
  start, at2, at4 = (json.loads((tmp_path / f"eval_{s}.json").read_text()) for s in (0, 2, 4))
  assert "| zero-shot (step 0) | flyp (step 2) |" in out
  assert f"| avg_ood | {100 * start['avg_ood/top1']:.2f} | {100 * at2['avg_ood/top1']:.2f} |" in out
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["selected_step"] == results["selected_step"] == 2 and saved["selected_on"] == "id_val/top1"
  assert {k: saved[k] for k in at2} == at2 and {k: saved[f"last/{k}"] for k in at4} == at4
  # the check above means something only if the two evaluations differ on the test splits (a random tiny CLIP can
  # sit at chance top-1 at both steps: its top-5 still moves)
  tested = lambda r: {k: v for k, v in r.items() if not k.startswith("id_val/")}
  assert tested(at2) != tested(at4)
  assert os.listdir(tmp_path / "best") == ["2"]
  # selected/ holds step 2's parameters (loadable like final/, which keeps the last step's).
  _, selected = models.load_pretrained(tmp_path / "selected")
  _, final = models.load_pretrained(tmp_path / "final")
  assert runs.selected_dir(str(tmp_path)).endswith("selected")
  differ = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), selected, final))
  assert any(differ)


def test_select_on_must_be_a_validation_metric(tmp_path, data_dir):
  config = tiny_config("configs/ft.py:demo", data_dir)
  config.unlock()
  config.eval.select_on = "id_val/no_such_metric"  # a known metric (top5, macro_f1, xent) is computed for it
  with pytest.raises(ValueError, match="not a metric of the 'domain_shapes' suite's validation set"):
    train.run(config, str(tmp_path))


@pytest.mark.slow
def test_logged_loss_is_the_mean_since_the_last_log_and_lr_is_recorded(tmp_path, data_dir):
  def train_lines(workdir, log_every):
    config = tiny_config("configs/flyp.py:demo", data_dir, log_every=log_every, checkpoint_every=0)
    config.eval.unlock().suite = ""  # training metrics only: no evaluation
    train.run(config, str(workdir))
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {l["step"]: l for l in lines if "train/loss" in l}

  every_step = train_lines(tmp_path / "a", 1)
  every_two = train_lines(tmp_path / "b", 2)  # the same run, logged every second step
  assert sorted(every_two) == [2, 4]
  for step in (2, 4):
    mean = (every_step[step - 1]["train/loss"] + every_step[step]["train/loss"]) / 2
    assert every_two[step]["train/loss"] == pytest.approx(mean, rel=1e-6)
  assert every_step[1]["train/loss"] != every_step[2]["train/loss"]  # so the mean differs from the last step's
  from flyp_jax import optim
  schedule = optim.make_schedule(tiny_config("configs/flyp.py:demo", data_dir).optimizer, 4)
  lrs = [every_step[s]["train/lr"] for s in (1, 2, 3, 4)]
  assert lrs == pytest.approx([float(schedule(s - 1)) for s in (1, 2, 3, 4)]) and len(set(lrs)) == 4


@pytest.mark.parametrize("spec", ["configs/flyp.py:demo", "configs/ft.py:demo", "configs/pretrain.py:demo",
                                  "configs/attention_transfer.py:demo"])
def test_a_methods_shapes_for_planning_are_those_it_makes(spec, data_dir, tmp_path):
  """`extra_param_shapes` and `batch_shapes` (what flyp_jax.tpu_plan compiles for, without data or devices' work)
  against what the method's `extra_params` and `batches` give the loop."""
  from flyp_jax import evaluate, methods, parallel
  config = tiny_config(spec, data_dir)
  method = methods.get(config.method)
  mesh = parallel.make_mesh()
  model, clip_params = train.starting_model(config, method, str(tmp_path), mesh)
  evaluator = evaluate.from_config(model, config, mesh)
  shape = lambda tree: jax.tree_util.tree_map(lambda x: (tuple(x.shape), np.dtype(x.dtype)), tree)
  extra = method.extra_params(config, model, parallel.shard_state(clip_params, mesh), mesh, evaluator)
  assert shape(method.extra_param_shapes(config, model)) == shape(extra)
  assert shape(method.batch_shapes(config, model)) == shape(next(method.batches(config, model, mesh, 0)))


@pytest.mark.slow
def test_ft_trains_with_the_attention_transfer_regularisers_on_eight_devices(tmp_path, data_dir):
  """RandAugment, random erasing and mixup/CutMix (one lambda per device: 8 groups of 2 images) in the loop: the
  losses are finite and differ from the same run's without them from the first step on (same parameters, same
  crops), and the smoothing goes into mixup's targets (the first step's loss is not that of the plain labels)."""
  from flyp_jax.data import rand_augment

  def losses(workdir, **regularisers):
    config = tiny_config("configs/ft.py:demo", data_dir, steps=2, log_every=1, checkpoint_every=0,
                         eval={"suite": ""}, ft={"label_smoothing": 0.1}, **regularisers)
    train.run(config, str(workdir))
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [l["train/loss"] for l in lines if "train/loss" in l]

  plain = losses(tmp_path / "plain")
  each = {"rand_augment": losses(tmp_path / "ra", data={"rand_augment": rand_augment.REFERENCE_SPEC}),
          "mixup": losses(tmp_path / "mix", data={"random_erasing": 0.25},
                          mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})}
  for name, got in each.items():
    assert len(got) == 2 and all(np.isfinite(got)) and got[0] != plain[0], (name, got, plain)
