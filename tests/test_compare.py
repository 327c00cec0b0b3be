"""The comparison command: learning rate picked on seed 0's ID validation, several seeds, WiSE-FT per seed,
effective robustness from the baseline's fit, the claims tested, and a finished comparison reused."""

import dataclasses
import json
import os

import pytest

from conftest import write_finished_run

from flyp_jax import configs_lib, files, train
from flyp_jax.data import suites
from flyp_jax.commands import compare


def fake_result(config) -> dict:
  """Deterministic stand-in metrics: FT-like runs peak at lr 1e-4 on validation; seed moves everything a bit."""
  names = [d.name for d in suites.SUITES["domain_shapes"]]
  lr, seed = config.optimizer.lr, config.seed
  val = {3e-5: 0.6, 1e-4: 0.8, 3e-4: 0.7, 1e-5: 0.65, 1e-3: 0.75}.get(lr, 0.5)
  bonus = {"flyp": 0.05, "lp": -0.02}.get(config.method, 0.0) + (0.03 if config.ft.head_init == "lp" else 0)
  idacc, ood = 0.8 + 0.01 * seed, 0.3 + bonus + 0.005 * seed
  return {**{f"{n}/top1": idacc if "photo" in n else ood for n in names}, "avg_id/top1": idacc,
          "avg_ood/top1": ood, "id_val/top1": val + 0.001 * seed, "lr": lr, "seed": seed}


@pytest.mark.slow
def test_compare_protocol_end_to_end_with_stand_in_runs(tmp_path, data_dir, monkeypatch):
  for name in ("SUITES", "VALIDATION"):
    table = getattr(suites, name)
    small = (tuple(dataclasses.replace(d, tfds_name="domain_shapes/small") for d in table["domain_shapes"])
             if name == "SUITES" else dataclasses.replace(table["domain_shapes"], tfds_name="domain_shapes/small"))
    monkeypatch.setitem(table, "domain_shapes", small)
  config = configs_lib.load("configs/compare.py")
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.data_dir = data_dir
  config.eval.batch_size = 64
  config.compare.seeds = 3
  config.compare.soup_seeds = 2
  calls = []

  def dispatch(c, path):
    calls.append((c.name, c.method, c.optimizer.lr, c.seed, path))
    assert c.data.data_dir == data_dir and c.model.init == "random"  # the comparison's settings reach runs
    files.makedirs(path)
    if c.method == "wiseft":
      assert c.wiseft.alphas == list(config.compare.alphas)
      base = fake_result(configs_lib.load("configs/ft.py:demo"))
      results = [{**base, "alpha": a, "avg_id/top1": 0.5 + 0.3 * a, "avg_ood/top1": 0.4 - 0.1 * a + 0.1 * a * (1 - a),
                  "id_val/top1": 0.5 + 0.3 * a} for a in c.wiseft.alphas]
      files.write_json(os.path.join(path, "wiseft.json"), {"results": results})
      return
    if c.name.startswith("lpft"):  # each LP-FT from its own probe
      probe = "LP_reference" if c.name.endswith("reference") else "LP"
      assert c.ft.lp_workdir.endswith(os.path.join("runs", probe))
    if c.method == "soup":  # seed s: its ingredients score 0.7 + s / 100 ID; the greedy soup 1 point above them
      assert c.soup.ingredients == config.compare.soup_ingredients
      ingredient = {**fake_result(configs_lib.load("configs/ft.py:demo")), "avg_id/top1": 0.7 + c.seed / 100}
      greedy = {**ingredient, "avg_id/top1": 0.71 + c.seed / 100, "avg_ood/top1": 0.35}
      files.write_json(os.path.join(path, "soup.json"), {
          "ingredients": [{**ingredient, "hparams": {"optimizer.lr": 1e-4}}] * 2, "best_single": 1,
          "greedy": greedy, "uniform": ingredient, "greedy_ingredients": [1, 0]})
      return
    if c.method == "attention_transfer":  # the baseline: evaluations on a line through logit space
      for step, acc in ((100, 0.3), (200, 0.5), (300, 0.7)):
        files.write_json(os.path.join(path, f"eval_{step}.json"), {"avg_id/top1": acc, "avg_ood/top1": acc / 2})
    if c.method == "lp":
      files.write_json(os.path.join(path, "results.json"), fake_result(c))
    else:
      write_finished_run(path, c.steps, fake_result(c))

  monkeypatch.setattr(train, "dispatch", dispatch)
  workdir = str(tmp_path / "compare")
  summary = compare.run(config, workdir)
  # Seed 0 of each grid point, then seeds 1 and 2 of the picked rate (1e-4 for FT and FLYP, by validation).
  ft = [(lr, seed) for name, method, lr, seed, _ in calls if name == "ft_demo"]
  assert ft == [(3e-5, 0), (1e-4, 0), (3e-4, 0), (1e-4, 1), (1e-4, 2)]
  # two probes; WiSE-FT of FT, FLYP, LP-FT and the CE ablation per seed; a soup per seed of the first two
  assert sum(1 for c in calls if c[1] == "lp") == 2 and sum(1 for c in calls if c[1] == "wiseft") == 12
  assert [c[3] for c in calls if c[1] == "soup"] == [0, 1]
  assert summary["FT"]["values"]["avg_id/top1"] == pytest.approx([0.8, 0.81, 0.82])
  table = (tmp_path / "compare" / "comparison.md").read_text()
  # photo top-1 of seeds 0-2: 80, 81, 82 -> mean 81.0, half-width 4.303 * 1.0 / sqrt(3) = 2.5
  assert "| FT (lr 0.0001) | 3 | 81.0 ± 2.5 |" in table
  claims = (tmp_path / "compare" / "claims.md").read_text()
  assert "(b) LP-FT's OOD accuracy is at least FT's" in claims and "**held**" in claims
  saved = json.loads((tmp_path / "compare" / "comparison.json").read_text())
  assert saved["picked_lr"] == {"FT": 1e-4, "FLYP": 1e-4, "LP-FT": 1e-4, "CE ablation": 1e-4,
                                "LP-FT (reference)": 1e-3} and saved["baseline_fit"]["points"] == 3
  assert saved["claims"]["b"]["outcome"] == "held" and saved["claims"]["d"]["outcome"] == "held"
  # (g) on the soups' two seeds: greedy - best ingredient = +1 point ID and +5 OOD at both
  g = saved["claims"]["g"]["parts"]
  assert g["greedy soup ID - best ingredient ID"]["mean"] == pytest.approx(0.01)
  assert g["greedy soup OOD - best ingredient OOD"]["mean"] == pytest.approx(0.05)
  assert g["greedy soup OOD - best ingredient OOD"]["n"] == 2 and saved["claims"]["g"]["outcome"] == "held"
  # (h): the fake FLYP has 5 points more OOD than the ablation (method ce_ablation: no bonus), the same ID
  assert saved["claims"]["h"]["parts"]["FLYP OOD - CE ablation OOD"]["mean"] == pytest.approx(0.05)
  assert saved["claims"]["i"]["outcome"] == "held"
  assert "| greedy soup | 2 |" in table and "| LP-FT (reference) (lr 0.001) | 3 |" in table
  assert (tmp_path / "compare" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
  # Everything finished is reused.
  monkeypatch.setattr(train, "dispatch", lambda *a: pytest.fail("a finished run was run again"))
  compare.run(config, workdir)
