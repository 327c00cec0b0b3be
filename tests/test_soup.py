"""Model soups (flyp_jax/commands/soup.py) against mlfoundations/model-soups `main.py`: the uniform soup's average,
the greedy soup's order, strict-improvement rule and running average; the hyperparameter draws; the command end to
end on tiny fine-tuning runs, checked against soups recomputed here from the ingredients' own parameters."""

import json
import math

import jax
import numpy as np
import pytest

from conftest import tiny_config, use_small_suites

from flyp_jax import configs_lib, evaluate, parallel, runs, train
from flyp_jax.commands import soup


def reference_greedy(params: list, held_out: list, validate) -> tuple[dict, list, float]:
  """model-soups main.py step 4, transcribed: sort by held-out accuracy (ascending, then reversed), start from the
  first, `potential = soup * (n / (n + 1.)) + new * (1. / (n + 1))`, kept if `held_out_val_accuracy > best`."""
  accs = sorted(enumerate(held_out), key=lambda kv: kv[1])
  accs.reverse()
  order = [i for i, _ in accs]
  ingredients, soup_params, best = [order[0]], params[order[0]], accs[0][1]
  for i in range(1, len(order)):
    new = params[order[i]]
    n = len(ingredients)
    potential = jax.tree.map(lambda s, x: s * (n / (n + 1.)) + x * (1. / (n + 1)), soup_params, new)  # every tensor
    acc = validate(potential)
    if acc > best:
      ingredients.append(order[i])
      best, soup_params = acc, potential
  return soup_params, ingredients, best


def test_greedy_soup_adds_only_what_strictly_improves_held_out_accuracy():
  w = [0.0, 1.0, 2.0, 3.0, 10.0, 1.5]
  params = [{"w": np.array([x], np.float32), "b": np.array([[2 * x]], np.float32)} for x in w]
  held_out = [0.5, 0.9, 0.7, 0.6, 0.1, 0.2]
  validate = lambda p: 1 - abs(float(p["w"][0]) - 1.5) / 10
  soup_params, kept, best = soup.greedy_soup(lambda i: params[i], held_out, validate)
  # By hand: order 1, 2, 3, 0, 5, 4. 1 + 2 -> 1.5 scores 1.0 > 0.9 (added); with 3 the mean is 2.0 (0.95), with 0
  # 1.0 (0.95): left out; with 5 (w 1.5) the mean stays 1.5, equal, not strictly better: left out; with 4, 4.33.
  assert kept == [1, 2] and best == pytest.approx(1.0)
  np.testing.assert_allclose(soup_params["w"], [1.5])
  np.testing.assert_allclose(soup_params["b"], [[3.0]])
  ref_params, ref_kept, ref_best = reference_greedy(params, held_out, validate)
  assert kept == ref_kept and best == ref_best
  jax.tree.map(np.testing.assert_array_equal, soup_params, ref_params)


def test_the_uniform_soup_is_the_mean_of_every_ingredient():
  rng = np.random.default_rng(0)
  params = [{"a": rng.normal(size=(3, 4)).astype(np.float32), "b": {"c": rng.normal(size=5).astype(np.float32)}}
            for _ in range(7)]
  mean = soup.uniform_soup(lambda i: params[i], 7)
  # main.py step 3: sum of v / NUM_MODELS
  expected = jax.tree.map(lambda *xs: sum(x * (1. / 7) for x in xs), *params)
  jax.tree.map(lambda m, e: np.testing.assert_allclose(m, e, rtol=1e-6, atol=1e-6), mean, expected)
  assert mean["a"].dtype == np.float32


def test_the_draws_follow_their_distributions_and_the_seed():
  config = configs_lib.load("configs/soup.py")
  config.unlock()
  config.soup.ingredients = 4000
  draws = soup.draw(config)
  s = config.soup
  lr = np.log10([d["optimizer.lr"] for d in draws])
  lo, hi = np.log10(s.lr)
  assert lo <= lr.min() and lr.max() <= hi and abs(lr.mean() - (lo + hi) / 2) < 0.05  # log-uniform: mean mid-way
  assert abs(np.mean(lr < lo + (hi - lo) / 4) - 0.25) < 0.03  # a quarter of the log range holds a quarter
  wd = np.log10([d["optimizer.weight_decay"] for d in draws])
  assert abs(wd.mean() - np.log10(s.weight_decay).mean()) < 0.05
  epochs = [d["total_epochs"] for d in draws]
  assert set(epochs) == set(range(s.epochs[0], s.epochs[1] + 1))  # both ends included
  smoothing = np.array([d["ft.label_smoothing"] for d in draws])
  assert abs(np.mean(smoothing == 0) - s.no_smoothing) < 0.03 and smoothing.max() <= s.max_smoothing
  assert abs(smoothing[smoothing > 0].mean() - s.max_smoothing / 2) < 0.01
  crop = np.array([d["data.crop_scale"][0] for d in draws])
  assert s.crop_scale[0] <= crop.min() and crop.max() <= s.crop_scale[1]
  assert [d["seed"] for d in draws[:3]] == [0, 1, 2]
  assert soup.draw(config) == draws  # the same seed, the same sweep


# One ingredient: configs/ft.py:demo made tiny (the soup's `model` and data location are shared with it).
TINY_FT = """
from flyp_jax import configs_lib

def get_config(arg):
  c = configs_lib.load("configs/ft.py:demo")
  c.unlock()
  c.data.dataset = "domain_shapes/small"
  c.update(batch_size=16, log_every=4, checkpoint_every=0)
  c.eval.update(every_steps=3, at_start=False)
  c.optimizer.warmup_steps = 2
  return c
"""


@pytest.mark.slow
def test_the_soup_command_end_to_end(tmp_path, data_dir, monkeypatch, capsys):
  use_small_suites(monkeypatch)
  spec = tmp_path / "tiny_ft.py"
  spec.write_text(TINY_FT)
  config = tiny_config("configs/soup.py", data_dir, soup={"ingredient": f"{spec}:demo", "ingredients": 3,
                                                          "epochs": (1, 1), "lr": (1e-4, 1e-2)})
  workdir = tmp_path / "soup"
  out = train.dispatch(config, str(workdir))
  record = json.loads((workdir / "soup.json").read_text())
  assert (workdir / "soup.png").stat().st_size > 0 and "greedy soup" in (workdir / "soup.md").read_text()
  key = record["select_on"]
  ingredients = [str(workdir / "ingredients" / str(i)) for i in range(3)]
  for d, r, h in zip(ingredients, record["ingredients"], soup.draw(config)):
    run_config = json.loads(open(f"{d}/config.json").read())["config"]
    assert run_config["optimizer"]["lr"] == pytest.approx(h["optimizer.lr"]) and run_config["seed"] == h["seed"]
    assert r[key] == json.loads(open(f"{d}/results.json").read())[key]

  # The soups again, from the ingredients' reported parameters, evaluated here.
  model, _ = runs.reported_params(ingredients[0])
  params = [runs.reported_params(d)[1] for d in ingredients]
  mesh = parallel.make_mesh()
  evaluator = evaluate.from_config(model, config, mesh)
  validator = train.make_validator(config, model, mesh, quiet=True)
  score = lambda p: {**evaluator(p["clip"], head=p["head"]), **validator(p["clip"], p["head"])}
  uniform = jax.tree.map(lambda *xs: sum(x / 3 for x in xs), *params)
  for k in ("avg_id/top1", "avg_ood/top1", key):
    assert record["uniform"][k] == pytest.approx(score(uniform)[k], abs=1e-6), k
  ref_params, kept, _ = reference_greedy(params, [r[key] for r in record["ingredients"]],
                                         lambda p: validator(p["clip"], p["head"])[key])
  assert record["greedy_ingredients"] == kept
  assert record["greedy"]["avg_ood/top1"] == pytest.approx(score(ref_params)["avg_ood/top1"], abs=1e-6)
  best = int(np.argmax([r[key] for r in record["ingredients"]]))
  assert record["best_single"] == best and out["greedy_ingredients"] == kept
  assert math.isclose(out["uniform"]["avg_id/top1"], record["uniform"]["avg_id/top1"])

  # A finished soup is reported as it is: no run, no evaluation.
  capsys.readouterr()
  train.dispatch(config, str(workdir))
  printed = capsys.readouterr().out
  assert "holds a finished soup" in printed and "ingredient 1/3" not in printed and "greedy soup" in printed
