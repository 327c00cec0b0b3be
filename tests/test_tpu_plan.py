"""flyp_jax.tpu_plan: the loop's programs compiled for a TPU topology on this CPU host (libtpu, the `tpu` extra).

The compilations run in a child process (libtpu describes the topology there; this process's JAX stays on its CPU
devices), on the demo's tiny CLIP: init, FLYP step and evaluation for v5e:2x2 (with model axis 2: the step), and
the cross-entropy ablation's step, at a global batch of 96 (not the CLIP's embedding width, 64, so a [batch, batch]
buffer is not mistaken for a [batch, width] one).
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from flyp_jax import parallel, tpu_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu (pip install -e '.[tpu]') compiles for TPUs")

CHILD = """
import json, sys
from flyp_jax import configs_lib, tpu_plan
hlo = sys.argv[1]
tpu_plan.main(["tpu_plan", "--config=configs/flyp.py", "--topology=v5e:2x2", "--config.batch_size=96", "--json",
               f"--hlo_dir={hlo}/axis1"])
assert sys.argv[1] == hlo  # main leaves the command line as it found it
# Model axis 2: the train step alone (what the axis changes is the state each chip holds).
config = configs_lib.load("configs/flyp.py")
config.unlock()
config.update(model_axis=2, batch_size=96)
print(json.dumps(tpu_plan.plan(config, "v5e:2x2", progress=lambda _: None, step_only=True), sort_keys=True))
# A batch whose step needs more than a chip's 16 GiB (its [N/4, N] logits alone are 150 GB per chip).
tpu_plan.main(["tpu_plan", "--config=configs/flyp.py", "--topology=v5e:2x2", "--config.batch_size=393216", "--json"])
# FLYP's cross-entropy ablation: the step alone.
config = configs_lib.load("configs/ce_ablation.py")
config.unlock()
config.batch_size = 96
print(json.dumps(tpu_plan.plan(config, "v5e:2x2", progress=lambda _: None, step_only=True), sort_keys=True))
"""


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
  hlo = str(tmp_path_factory.mktemp("hlo"))
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "JAX_COMPILATION_CACHE_DIR")}
  proc = subprocess.run([sys.executable, "-c", CHILD, hlo], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  plans = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  assert len(plans) == 4, proc.stdout
  return {1: plans[0], 2: plans[1], "too big": plans[2], "ce_ablation": plans[3]}, hlo, proc.stdout


@pytest.mark.slow
@needs_libtpu
def test_the_plan_describes_the_compiled_tpu_programs(plans):
  p, hlo, stdout = plans[0][1], plans[1], plans[2]
  assert (p["topology"], p["chips"], p["device_kind"], p["hbm_bytes"]) == ("v5e:2x2", 4, "TPU v5 lite", 16 * 2 ** 30)
  assert set(p["programs"]) == {"init: optimiser", "train step", "zero-shot head", "evaluation step"}
  for name, program in p["programs"].items():
    assert 0 < program["peak"] < p["hbm_bytes"], name
    assert program["peak"] >= program["arguments"] + program["temporaries"], name
    assert 0 < program["xla_peak"] < p["hbm_bytes"], name  # XLA's own, read from the program
  # What the verdict reads: the largest XLA's peak, the optimiser's init counted with the parameters beside it.
  xla = {name: q["xla_peak"] for name, q in p["programs"].items()}
  xla["init: optimiser"] += p["param_bytes"]
  assert p["needs_bytes"] == max(xla.values()) == xla["train step"]
  # The donated state: the step's outputs reuse its inputs.
  step = p["programs"]["train step"]
  assert step["aliased"] > 0.9 * step["outputs"]
  assert p["peak_bytes"] == step["peak"] and p["fits"] is True
  assert p["eval_peak_bytes"] == max(p["programs"][n]["peak"] for n in ("zero-shot head", "evaluation step"))
  # XLA's count of the step against the matmul formula (elementwise work is the rest).
  assert 1.0 < p["step_flops"] / p["analytic_flops"] < 1.2
  text = open(os.path.join(hlo, "axis1", "train_step.hlo.txt")).read()
  assert set(p["collectives"]) >= {"all-gather", "all-reduce"}
  # The sharded loss gathers the features, never the [N, N] logits: local rows [24, 96] of the global batch of 96.
  n, local = p["batch_size"], p["batch_size"] // 4
  assert not re.search(rf"f32\[{n},{n}\]", text)
  assert re.search(rf"f32\[{local},{n}\]", text)
  assert stdout.count("does NOT fit") == 1 and "fits: at most" in stdout  # the batch too big below


@pytest.mark.slow
@needs_libtpu
def test_a_step_too_big_for_a_chip_is_a_no_with_what_it_needs(plans):
  p, stdout = plans[0]["too big"], plans[2]
  step = p["programs"]["train step"]
  # libtpu refuses to compile it: the plan says so, with XLA's amount, and still plans the other programs.
  assert p["fits"] is False and "HLO temporaries" in step["out_of_memory"]
  n = p["batch_size"]
  assert p["peak_bytes"] == step["peak"] >= (n // 4) * n * 4  # at least the per-chip logits, float32
  assert all("out_of_memory" not in p["programs"][k] and p["programs"][k]["peak"] < p["hbm_bytes"]
             for k in ("init: optimiser", "zero-shot head", "evaluation step"))
  assert p["collectives"] == {} and p["step_flops"] is None
  assert "does NOT fit: XLA cannot fit the train step" in stdout and "to fit: --config.model.remat=True" in stdout


@pytest.mark.slow
@needs_libtpu
def test_a_model_axis_of_two_halves_the_state_each_chip_holds(plans):
  p1, p2 = plans[0][1], plans[0][2]
  assert p2["model_axis"] == 2
  ratio = p2["programs"]["train step"]["arguments"] / p1["programs"]["train step"]["arguments"]
  assert 0.5 <= ratio < 0.6, ratio
  assert 0.5 <= p2["param_bytes"] / p1["param_bytes"] < 0.6


@pytest.mark.slow
@needs_libtpu
def test_the_cross_entropy_ablation_splits_its_class_prompts_over_the_chips(plans):
  """Its C = 10 prompts padded to 12, 3 encoded per chip, the features all-gathered for the [24, 10] logits. Encoded
  on every chip instead, XLA counts 1.13 x the formula (measured); split, 1.07."""
  p = plans[0]["ce_ablation"]
  assert p["fits"] is True and "all-gather" in p["collectives"]
  assert 1.0 < p["step_flops"] / p["analytic_flops"] < 1.1


def test_collectives_are_counted_with_the_bytes_of_their_results():
  text = """
  %all-gather.1 = f32[64,32]{1,0} all-gather(f32[16,32]{1,0} %x), replica_groups={{0,1,2,3}}, dimensions={0}
  %ags = (f32[16,32]{1,0}, f32[64,32]{1,0}) all-gather-start(f32[16,32]{1,0} %y), dimensions={0}
  %agd = f32[64,32]{1,0} all-gather-done((f32[16,32]{1,0}, f32[64,32]{1,0}) %ags)
  %all-reduce.2 = (f32[10]{0}, bf16[4,4]{1,0}) all-reduce(f32[10]{0} %a, bf16[4,4]{1,0} %b), to_apply=%add
  %not = f32[3]{0} add(f32[3]{0} %p, f32[3]{0} %q)
  """
  assert tpu_plan.collectives(text) == {"all-gather": {"count": 2, "bytes": 2 * 64 * 32 * 4},
                                        "all-reduce": {"count": 1, "bytes": 10 * 4 + 16 * 2}}


def test_bytes_per_chip_counts_the_largest_share():
  mesh = parallel.make_mesh(2)  # 4 x 2 of the 8 simulated devices
  tree = {"w": np.zeros((6, 4), np.float32), "b": np.zeros((3,), np.float32)}
  shapes = parallel.abstract(tree, parallel.state_shardings(tree, mesh))
  assert tpu_plan.bytes_per_chip(shapes) == (3 * 4 + 3) * 4  # w split in two over its first axis, b replicated
  assert tpu_plan.bytes_per_chip(parallel.abstract(tree, parallel.replicated(mesh))) == (24 + 3) * 4


def test_slice_names_map_to_topologies():
  assert tpu_plan.SLICES["v5litepod-8"] == "v5e:2x4" and tpu_plan.SLICES["v4-8"] == "v4:2x2x1"
  assert tpu_plan.SLICES["v5p-8"] == "v5p:2x2x1" and tpu_plan.SLICES["v6e-256"] == "v6e:16x16"
  with pytest.raises(ValueError, match="unknown TPU topology"):
    tpu_plan.topology_devices("v9-8")


def test_the_verdict_holds_xla_s_peak_of_each_program_to_the_hbm():
  """XLA's peak where reported, else the summed one; the optimiser's init with the parameters beside it; a refused
  program is not counted (the plan is a no by itself then)."""
  step = {"peak": 17, "xla_peak": 14}  # near the HBM the sum runs over what libtpu compiles
  init = {"peak": 3, "xla_peak": None}
  assert tpu_plan.needs({"train step": step}, param_bytes=5) == 14
  assert tpu_plan.needs({"train step": step, "init: optimiser": init}, param_bytes=12) == 15
  assert tpu_plan.needs({"train step": {"out_of_memory": "...", "peak": 40}, "evaluation step": init}, 5) == 3
  assert tpu_plan.needs({}, 5) is None


def test_the_memory_an_out_of_memory_message_names():
  assert tpu_plan.required_bytes("Ran out of memory on HBM, the total memory required for HLO temporaries (55.66G) "
                                 "exceeds available HBM (15.75G).") == int(55.66 * 2 ** 30)
  assert tpu_plan.required_bytes("Ran out of memory in memory space hbm. Used 20.50G of 15.75G hbm. Exceeded hbm "
                                 "capacity by 4.75G.") == int(20.5 * 2 ** 30)
  assert tpu_plan.required_bytes("Ran out of memory") is None


@pytest.mark.parametrize("start, limit", [(96, 1000), (4096, 1000), (96, 95), (512, 20000)])
def test_the_largest_batch_search_brackets_the_limit(monkeypatch, start, limit):
  """The search against a stand-in compiler whose step fits up to `limit` examples (4 chips: steps of 4)."""
  import ml_collections
  monkeypatch.setattr(tpu_plan, "topology_devices", lambda name: (name, [object()] * 4))
  compiled = []
  def plan(config, topology, progress, step_only):
    compiled.append(config.batch_size)
    assert step_only and config.batch_size % 4 == 0
    step = {} if config.batch_size <= limit else {"out_of_memory": "Ran out of memory"}
    return {"programs": {"train step": step}, "peak_bytes": config.batch_size}
  monkeypatch.setattr(tpu_plan, "plan", plan)
  config = ml_collections.ConfigDict({"method": "flyp", "batch_size": start, "model_axis": 1, "grad_accum_steps": 1,
                                      "flyp": {"loss_block": 0}})
  found = tpu_plan.largest_batch(config, "v5e:2x2", progress=lambda _: None)
  good, bad = found["largest_batch"], found["refused_batch"]
  assert config.batch_size == start and [t[0] for t in found["tried"]] == compiled
  assert bad > limit and (good is None if limit < 4 else good <= limit and bad - good <= max(4, good // 16))
  assert len(compiled) < 16


@pytest.mark.parametrize("start, summed_over", [(512, 1.0), (4096, 1.0), (512, 1.4), (4096, 1.4)])
def test_the_largest_batch_search_follows_the_peaks_line(monkeypatch, start, summed_over):
  """A stand-in chip of 16 GiB whose step needs 2 GiB plus 5 MiB per example, 1.5 GiB of it its arguments (XLA
  refuses past the HBM): the lines through the peaks find the limit (2867 examples) in fewer compiles than
  doubling and bisection. They follow XLA's peak where it is reported, not the sum of the buffers (here
  `summed_over` times it, as with scanned blocks)."""
  import types
  import ml_collections
  chip = types.SimpleNamespace(device_kind="TPU v5 lite")
  monkeypatch.setattr(tpu_plan, "topology_devices", lambda name: (name, [chip] * 4))
  need = lambda batch: 2 * 2 ** 30 + batch * 5 * 2 ** 20
  compiled = []
  def plan(config, topology, progress, step_only):
    compiled.append(config.batch_size)
    fits = need(config.batch_size) <= tpu_plan.HBM_BYTES["TPU v5 lite"]
    step = {"arguments": 3 * 2 ** 29} if fits else {"out_of_memory": "..."}
    # A refused step's peak: what libtpu said it needs (no sum: no program).
    summed = int(summed_over * need(config.batch_size)) if fits else need(config.batch_size)
    xla = need(config.batch_size) if fits and summed_over != 1 else None
    return {"programs": {"train step": step}, "peak_bytes": summed, "xla_peak_bytes": xla}
  monkeypatch.setattr(tpu_plan, "plan", plan)
  config = ml_collections.ConfigDict({"method": "flyp", "batch_size": start, "model_axis": 1, "grad_accum_steps": 1,
                                      "flyp": {"loss_block": 0}})
  found = tpu_plan.largest_batch(config, "v5e:2x2", progress=lambda _: None)
  good, bad = found["largest_batch"], found["refused_batch"]
  limit = (14 * 2 ** 30) // (5 * 2 ** 20)
  assert good <= limit < bad and bad - good <= max(4, good // 16)
  assert len(compiled) <= 4, compiled  # doubling and bisection from these starts: 8 and 6 compiles


@pytest.mark.parametrize("start", [512, 4096])
def test_the_largest_batch_search_bisects_where_xla_squeezes(monkeypatch, start):
  """Near the HBM XLA rematerialises by itself: a stand-in step whose peak follows 2 GiB + 5 MiB per example up to
  92% of a 16 GiB chip, then stays there up to 5000 examples (refused beyond). The lines would creep up 1/16 at a
  time; the search doubles and bisects instead."""
  import types
  import ml_collections
  chip = types.SimpleNamespace(device_kind="TPU v5 lite")
  monkeypatch.setattr(tpu_plan, "topology_devices", lambda name: (name, [chip] * 4))
  hbm, need = tpu_plan.HBM_BYTES["TPU v5 lite"], lambda batch: 2 * 2 ** 30 + batch * 5 * 2 ** 20
  compiled = []
  def plan(config, topology, progress, step_only):
    batch = config.batch_size
    compiled.append(batch)
    fits = batch <= 5000
    step = {"arguments": 3 * 2 ** 29} if fits else {"out_of_memory": "..."}
    return {"programs": {"train step": step}, "peak_bytes": min(need(batch), int(0.92 * hbm)) if fits else need(batch)}
  monkeypatch.setattr(tpu_plan, "plan", plan)
  config = ml_collections.ConfigDict({"method": "flyp", "batch_size": start, "model_axis": 1, "grad_accum_steps": 1,
                                      "flyp": {"loss_block": 0}})
  found = tpu_plan.largest_batch(config, "v5e:2x2", progress=lambda _: None)
  good, bad = found["largest_batch"], found["refused_batch"]
  assert good <= 5000 < bad and bad - good <= max(4, good // 16)
  assert len(compiled) <= 9, compiled  # creeping up 1/16 at a time from the line's 2864: 14
