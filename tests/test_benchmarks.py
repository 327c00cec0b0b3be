"""Smoke runs of every benchmark (one tiny step each), so the scripts cannot rot; not timings.

They check the output's structure and sanity, and that the analytic FLOP count that MFU rests on agrees
with XLA's cost analysis of the compiled step.
"""

import json
import math

import pytest

import torch  # noqa: F401  (the benchmarks time the PyTorch side too)
import transformers  # noqa: F401  (the reference models)

from benchmarks import common, eval_step, loss_memory, main_job, run_all, train_step  # noqa: E402
from flyp_jax.flops import forward_flops, train_flops  # noqa: E402

TINY = "ViT-T/8"


def positive(x):
  return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def train_result():
  # One measurement shared by the tests below: with ImageNet's prompts as captions, so that the cut to the
  # longest prompt (JAX only) is measured too.
  return train_step.measure(TINY, batch=8, steps=1, repeats=1, framework="both", captions="prompts")


@pytest.mark.slow
def test_train_step_contract(train_result):
  r = train_result
  for key in ("examples_per_s", "compile_s", "mfu", "speedup_vs_torch"):
    assert positive(r[key]), (key, r[key])
  assert r["mfu"] < 1.5  # a tiny model on a loaded CPU: well under the measured peak, never far above it
  # The derived numbers from the measured ones, as the RESULTS tables read them.
  j, t = r["jax"], r["torch"]
  assert r["speedup_vs_torch"] == pytest.approx(j["examples_per_s"] / t["examples_per_s"], rel=1e-9)
  assert j["mfu"] == pytest.approx(j["analytic_flops_per_step"] * j["examples_per_s"] / 8
                                   / (r["peak_flops_per_device"] * r["devices"]), rel=1e-9)
  assert j["step_s"] == pytest.approx(8 / j["examples_per_s"], rel=1e-9) and r["mfu"] == j["mfu"]
  for side in ("jax", "torch"):
    assert positive(r[side]["examples_per_s"]) and math.isfinite(r[side]["final_loss"])
  assert r["torch"]["threads"] >= 1
  json.dumps(r)  # machine-readable as is


@pytest.mark.slow
def test_analytic_flops_match_xla(train_result):
  # The formula counts matmuls only; XLA counts every op (norms, softmax, AdamW), so it may be a little higher.
  r = train_result
  assert 0.95 < r["xla_over_analytic_forward"] < 1.1, r["xla_over_analytic_forward"]
  # Per device the compiled step also holds the AdamW update of every (replicated) parameter, which the formula
  # leaves out: on 8 simulated devices (one example each) and a tiny model it is most of the count (measured 3.2
  # with prompts cut to 22 tokens). Less the update, compiled alone, the gradient's count is the formula's plus the
  # elementwise work of the towers and the loss (measured 1.37 here, 1.17 with 77-token captions); a step that ran
  # a tower twice would be near 2.
  assert r["xla_over_analytic_step"] > r["xla_gradient_over_analytic_step"]
  assert 1.0 < r["xla_gradient_over_analytic_step"] < 1.5, r["xla_gradient_over_analytic_step"]


@pytest.mark.slow
def test_prompt_captions_are_cut_for_jax_only(train_result):
  import numpy as np
  from flyp_jax import models
  c = models.get_config(TINY)
  full = common.caption_tokens("prompts", np.random.default_rng(0), 8, c, trimmed=False)
  cut = common.caption_tokens("prompts", np.random.default_rng(0), 8, c, trimmed=True)
  assert full.shape == (8, 77) and cut.shape == (8, 22)  # the longest of the 80,000 ImageNet prompts
  np.testing.assert_array_equal(full[:, :22], cut)
  assert not full[:, 22:].any()
  r = train_result
  assert r["text_length"] == {"jax": 22, "torch": 77}
  assert r["jax"]["analytic_flops_per_step"] < r["torch"]["analytic_flops_per_step"]
  assert 0.95 < r["xla_over_analytic_forward"] < 1.1, r["xla_over_analytic_forward"]  # counted at 22 tokens
  with pytest.raises(ValueError, match="captions must be one of"):
    common.caption_tokens("captions", np.random.default_rng(0), 8, c, trimmed=True)


def test_flop_formula_by_hand():
  from flyp_jax import models
  c = models.get_config(TINY)  # 32x32 images, patch 8 -> 17 tokens, width 128, 2 layers; text 77 tokens, 128
  per_layer = lambda t, w: 2 * t * 4 * w * w + 2 * t * 8 * w * w + 4 * t * t * w
  image = 2 * 16 * 3 * 64 * 128 + 2 * per_layer(17, 128) + 2 * 128 * 64
  text = 2 * per_layer(77, 128) + 2 * 128 * 64
  f = forward_flops(c, 4)
  assert f["image"] == 4 * image and f["text"] == 4 * text and f["loss"] == 4 * 4 * 4 * 64
  assert train_flops(c, 4) == 3 * f["total"]
  # The last block at the pooled token only: k and v at every token; q, out, MLP and attention at one.
  last = lambda t, w: 2 * t * 2 * w * w + 2 * (2 * w * w + 8 * w * w) + 4 * t * w
  pooled = forward_flops(c, 4, text_length=22, pooled_last_block=True)
  assert pooled["image"] == 4 * (image - per_layer(17, 128) + last(17, 128))
  assert pooled["text"] == 4 * (per_layer(22, 128) + last(22, 128) + 2 * 128 * 64)


@pytest.mark.slow
def test_eval_step_smoke():
  r = eval_step.measure(TINY, batch=8, steps=1, repeats=1, framework="both")
  for key in ("images_per_s", "compile_s", "mfu", "speedup_vs_torch"):
    assert positive(r[key]), (key, r[key])
  assert positive(r["torch"]["images_per_s"])


def test_loss_memory_grows_with_local_times_global_batch():
  r = loss_memory.measure(batches=(2048, 4096), devices=8, embed_dim=16)
  small, large = r["rows"]
  assert 0 < small["temp_bytes"] < large["temp_bytes"]
  # With narrow features the [B_local, B] logits dominate: doubling B about quadruples the memory.
  assert 1.7 < large["growth_exponent"] < 2.2, large["growth_exponent"]


def test_blockwise_loss_memory_is_linear_and_its_timing_runs():
  r = loss_memory.measure(batches=(2048, 4096), devices=8, embed_dim=16, block=256)
  assert 0.8 < r["rows"][1]["growth_exponent"] < 1.2, r["rows"][1]["growth_exponent"]
  t = loss_memory.time_blocks(256, 64, devices=8, embed_dim=16, repeats=1)
  assert positive(t["seconds_blocks"]) and positive(t["seconds_no_blocks"]) and t["block"] == 64


def test_main_job_command():
  r = main_job.main(["--dry_run", "--json"])
  assert "main.py --config=configs/flyp.py" in r["command"]


@pytest.mark.slow
def test_results_render(tmp_path, train_result):
  suite = {"suite": "smoke", "date": "today", "results": [
      dict(train_result, command="python -m benchmarks.train_step ..."),
      {"benchmark": "main_job", "command": "python main.py", "error": "exit 1"}]}
  (tmp_path / "smoke.json").write_text(json.dumps(suite))
  text = run_all.render(str(tmp_path), str(tmp_path / "RESULTS.md"), str(tmp_path / "no_notes.md"))
  assert TINY in text and "x torch" in text and "Failed: `python main.py`" in text


def test_only_reruns_the_named_benchmarks_and_keeps_the_rest(tmp_path, monkeypatch):
  entries = run_all.SUITES["smoke"]
  old = [{"benchmark": m, "command": run_all._shown(m, a), "old": True} for m, a in entries]
  (tmp_path / "smoke.json").write_text(json.dumps({"suite": "smoke", "date": "before", "results": old}))
  monkeypatch.setattr(run_all, "run_one", lambda m, a, t: {"benchmark": m, "command": run_all._shown(m, a),
                                                             "error": "not run"})
  out = run_all.run_suite("smoke", str(tmp_path), 60, only=["eval_step"])
  assert [r["command"] for r in out["results"]] == [r["command"] for r in old]  # suite order, nothing lost
  assert all(bool(r.get("old")) == (r["benchmark"] != "eval_step") for r in out["results"])
  assert json.loads((tmp_path / "smoke.json").read_text()) == out


def test_jobs_run_entries_side_by_side_and_keep_the_suites_order(tmp_path, monkeypatch):
  import threading
  import time
  entries = run_all.SUITES["smoke"]
  running, most = set(), []

  def run_one(module, args, timeout_s):
    running.add(args)
    most.append(len(running))
    time.sleep(0.2 if args == entries[0][1] else 0.05)  # the first ends last
    running.discard(args)
    return {"benchmark": "stand_in", "command": run_all._shown(module, args), "thread": threading.get_ident()}

  monkeypatch.setattr(run_all, "run_one", run_one)
  out = run_all.run_suite("smoke", str(tmp_path), 60, jobs=2)
  assert max(most) == 2  # two at a time, never more
  assert [r["command"] for r in out["results"]] == [run_all._shown(m, a) for m, a in entries]
  assert json.loads((tmp_path / "smoke.json").read_text()) == out


def test_tpu_plans_render_as_whole_plans_steps_and_batch_searches(tmp_path):
  program = {"arguments": 2**30, "outputs": 2**30, "aliased": 2**30, "temporaries": 3 * 2**30, "peak": 4 * 2**30,
             "compile_s": 10.0, "flops": 1e12}
  base = {"benchmark": "tpu_plan", "config": "flyp_imagenet_b16", "topology": "v5e:2x4", "chips": 8,
          "device_kind": "TPU v5 lite", "hbm_bytes": 16 * 2**30, "batch_size": 512, "dtype": "bfloat16",
          "model": "ViT-L/14", "remat": False, "loss_block": 0, "grad_accum_steps": 1, "model_axis": 1,
          "peak_bytes": 4 * 2**30, "init_peak_bytes": None, "eval_peak_bytes": None, "fits": True,
          "step_flops": 1e12, "analytic_flops": 1e12, "collectives": {}, "compile_s": 10.0, "process_s": 99.0}
  host = {"python": "3.11.7", "cpu": "AMD EPYC", "cpu_threads": 2, "jax": "0.10.2", "flax": "0.12.8",
          "optax": "0.2.8", "libtpu": "0.0.42.1"}  # common.environment(devices=False): the compiling host
  whole = dict(base, command="whole", init_peak_bytes=2**30, eval_peak_bytes=2**30, environment=host,
               programs={"train step": program, "evaluation step": program})
  step = dict(base, command="step", remat="dots_saveable", scan_layers=True,
              programs={"train step": dict(program, xla_peak=3.5 * 2**30)})
  search = dict(step, command="search", largest_batch=2048, refused_batch=2304,
                tried=[[512, True, 2**30, 2**30], [2048, True, 13 * 2**30, 12 * 2**30],
                       [2304, False, 17 * 2**30, None]])
  # A search recorded before XLA's peak was read: three fields per compile.
  old_search = dict(search, command="old search", model="ViT-B/16",
                    tried=[[512, True, 2**30], [2048, True, 13 * 2**30], [2304, False, 17 * 2**30]])
  suite = {"suite": "tpu", "date": "today", "results": [whole, step, search, old_search]}
  (tmp_path / "tpu.json").write_text(json.dumps(suite))
  text = run_all.render(str(tmp_path), str(tmp_path / "RESULTS.md"), str(tmp_path / "no_notes.md"))
  settings = "remat dots_saveable, scanned blocks"
  assert f"| ViT-L/14 | v5e:2x4 | 512 | bfloat16 | {settings} | 3.00 | 4.00 | 3.50 | yes |" in text
  assert f"| ViT-L/14 | v5e:2x4 | bfloat16 | {settings} | 2048 | 256 | 13.00 | 12.00 | 2304 | 3 | 99 |" in text
  assert f"| ViT-B/16 | v5e:2x4 | bfloat16 | {settings} | 2048 | 256 | 13.00 | - | 2304 | 3 | 99 |" in text
  assert text.count("| flyp_imagenet_b16 | v5e:2x4 |") == 1  # the whole plan alone in the plans' table
  assert ("Machine: compiling host, no accelerator; CPU AMD EPYC, 2 threads; jax 0.10.2, flax 0.12.8, optax 0.2.8, "
          "libtpu 0.0.42.1; python 3.11.7\n") in text
  assert run_all._machine([step, search]) == "not recorded"


def test_a_tpu_plan_records_the_compiling_host_s_versions(monkeypatch):
  import subprocess
  plan = {"benchmark": "tpu_plan", "device_kind": "TPU v5 lite"}
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
      a[0], 0, stdout="progress\n" + json.dumps(plan) + "\n", stderr=""))
  r = run_all.run_one(run_all.PLAN, "--topology=v5e:2x2", 60)
  assert r["device_kind"] == "TPU v5 lite" and r["environment"]["jax"] == common.environment(devices=False)["jax"]
  assert "device_kind" not in r["environment"]  # the host's, not a backend's: libtpu runs nothing here


class Counter:
  """A stand-in for a PyTorch runner, built in the child process (importable by reference)."""

  def __init__(self, fail: bool = False):
    if fail:
      raise ValueError("bad settings")
    self.steps, self.name, self.device = 0, "counter", "cpu"

  def run(self, steps: int) -> float:
    self.steps += steps
    return float(self.steps)

  def loss(self) -> float:
    return 1.5


def test_runner_in_child_process_forwards_calls_and_errors():
  import os
  r = common.InChildProcess(Counter)
  assert (r.name, r.device, r.steps) == ("counter", "cpu", 0)
  assert r.run(2) == 2.0 and r.run(3) == 5.0 and r.loss() == 1.5  # state kept in the child between calls
  assert r._process.pid != os.getpid()
  r.close()
  assert not r._process.is_alive()
  with pytest.raises(RuntimeError, match="bad settings"):
    common.InChildProcess(Counter, fail=True)
