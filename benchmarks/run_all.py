"""Run every benchmark of a suite, write the machine-readable results and render benchmarks/RESULTS.md.

  python -m benchmarks.run_all --suite=cpu        # the development machine: ViT-B/32 and B/16 in float32, main job
  python -m benchmarks.run_all --suite=gpu        # an accelerator: ViT-B/16 and B/32 in bfloat16 (no main job:
                                                  # it needs TensorFlow)
  python -m benchmarks.run_all --suite=smoke --results_dir=/tmp/bench   # one tiny step each (what CI runs)
  python -m benchmarks.run_all --suite=tpu --resume --jobs=2   # presets compiled for TPU slices on this CPU host,
                                                      # not run (flyp_jax.tpu_plan; --resume keeps the finished rows,
                                                      # --jobs compiles that many at a time)
  python -m benchmarks.run_all --render_only      # rebuild RESULTS.md from benchmarks/results/*.json

Each benchmark runs in its own process (`python -m benchmarks.<name> ... --json`, or the named module), so XLA
flags, simulated devices and memory do not leak between them, and one failure is recorded instead of stopping
the rest.
Results go to <results_dir>/<suite>.json; RESULTS.md is rendered from every suite file in the directory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import threading
import time

from benchmarks import common

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")

PLAN = "flyp_jax.tpu_plan"  # a module outside benchmarks/: named in full
SLICES_8 = ("v5litepod-8", "v4-8", "v5p-8", "v6e-8")  # each chip generation's smallest 8-chip slice
# (preset, slices): the ImageNet reproduction presets on every generation; ViT-L attention transfer on v5e and
# v4; the small datasets' FLYP presets (the ImageNet preset's model with fewer classes) on v5e only.
TPU_PRESETS = [("configs/flyp.py:imagenet_b16", SLICES_8), ("configs/ft.py:imagenet_b16", SLICES_8),
               ("configs/lpft.py:imagenet_b16", SLICES_8), ("configs/wiseft.py:ft_imagenet_b16", SLICES_8),
               ("configs/attention_transfer.py:imagenet_l16_mae_distill", SLICES_8[:2]),
               ("configs/attention_transfer.py:imagenet_l16_mae_copy", SLICES_8[:2])]
# (gradient accumulation on v5e only: v4's 32 GiB chips hold the remat step)
POD_MEMORY = ("", " --config.model.remat=True --config.flyp.loss_block=4096",
              " --config.model.remat=True --config.flyp.loss_block=4096 --config.grad_accum_steps=4")
# The train step alone under each memory setting (remat policies, scanned blocks), FLYP in bfloat16 on a v5e-8:
# what each costs in compiled memory and compile time on the large towers.
MEMORY_SETTINGS = ("", " --config.model.remat=True", " --config.model.remat=True --config.model.remat_policy=dots_saveable",
                   " --config.model.remat=True --config.model.remat_policy=dots_with_no_batch_dims_saveable")
LARGE_TOWERS = (("ViT-L/14", 512), ("ViT-H/14", 256))
# The largest global batch that fits each chip generation's 8-chip slice: FLYP (bfloat16) plain and with the
# settings that trade speed for memory (loss_block 512 keeps the search's step at 512 examples); ViT-L/14's
# remat rows with scanned blocks, which compile its step in half the time and need less memory with remat (and far
# more without it: the rows above). The plain ViT-L/14 rows last: their compiles are the longest.
REMAT_BLOCKS = " --config.model.remat=True --config.flyp.loss_block=512"
MAX_BATCH_ROWS = (("ViT-B/16", ""), ("ViT-B/16", REMAT_BLOCKS),
                  ("ViT-L/14", REMAT_BLOCKS + " --config.model.scan_layers=True"), ("ViT-L/14", ""))
# The attention-transfer ViT-L/16 presets (batch 2048) on the 64 chips of the reference's 64 GPUs (8 nodes x 8 x 32
# examples, its README), and on 8-chip slices with the settings that make them fit (the train step alone).
AT_SLICES_64 = ("v5e:8x8", "v4:4x4x4")
AT_FIT_8 = {"imagenet_l16_mae_distill": {"v5litepod-8": 8, "v4-8": 8}, "imagenet_l16_mae_copy": {"v5litepod-8": 4,
                                                                                                  "v4-8": 8}}
TPU_SMALL = ("configs/flyp.py:caltech101_b16", "configs/flyp.py:stanfordcars_b16", "configs/flyp.py:flowers102_b16")

# (benchmark module, arguments). Batch sizes: what fits the machine in minutes, several per model.
SUITES = {
    "smoke": [
        ("train_step", "--model=ViT-T/8 --batch=8 --steps=1 --repeats=1 --framework=both"),
        ("train_step", "--model=ViT-T/8 --batch=8 --steps=1 --repeats=1 --framework=both --captions=prompts"),
        ("eval_step", "--model=ViT-T/8 --batch=8 --steps=1 --repeats=1 --framework=both"),
        ("loss_memory", "--devices=8 --batches=256,512 --embed_dim=64"),
        ("loss_memory", "--devices=8 --batches=256,512 --embed_dim=64 --block=128"),
        ("main_job", "--dry_run"),
    ],
    "cpu": [
        ("train_step", "--model=ViT-B/32 --batch=32 --steps=2 --repeats=5 --framework=both"),
        ("train_step", "--model=ViT-B/32 --batch=32 --steps=2 --repeats=5 --framework=both --captions=prompts"),
        ("train_step", "--model=ViT-B/32 --batch=16 --steps=2 --repeats=3 --framework=both"),
        ("train_step", "--model=ViT-B/16 --batch=8 --steps=1 --repeats=3 --framework=both"),
        ("eval_step", "--model=ViT-B/32 --batch=64 --steps=2 --repeats=5 --framework=both"),
        ("eval_step", "--model=ViT-B/16 --batch=32 --steps=1 --repeats=3 --framework=both"),
        ("loss_memory", ""),
        ("loss_memory", "--block=256"),
        ("main_job", ""),
    ],
    # About 3 minutes per entry on an H100 (most of it JAX start-up and compilation, see RESULTS.md).
    "gpu": [
        ("train_step", "--model=ViT-B/16 --batch=256 --dtype=bfloat16 --steps=10 --repeats=5 --framework=both"),
        ("train_step", "--model=ViT-B/16 --batch=256 --dtype=bfloat16 --steps=10 --repeats=5 --framework=both "
                       "--captions=prompts"),
        ("eval_step", "--model=ViT-B/16 --batch=1024 --dtype=bfloat16 --steps=10 --repeats=5 --framework=both"),
        ("train_step", "--model=ViT-B/32 --batch=512 --dtype=bfloat16 --steps=10 --repeats=3 --framework=both"),
        ("train_step", "--model=ViT-B/16 --batch=128 --dtype=bfloat16 --steps=10 --repeats=3 --framework=both"),
    ],
    # Compiled for the slice's chips by libtpu on this host (the `tpu` extra), nothing run: about 2-7 minutes
    # each on 2 CPU cores for ViT-B/16, more for ViT-L.
    # Pods: FLYP on ViT-L/14 at CLIP's pretraining batch, plain and with the settings that trade speed for memory.
    "tpu": [(PLAN, f"--config={spec} --topology={slice_}") for spec, slices in TPU_PRESETS[:4] for slice_ in slices]
           + [(PLAN, f"--config=configs/flyp.py:imagenet_b16 --topology={t} --config.model.variant=ViT-L/14 "
                     f"--config.batch_size=32768 --config.model.dtype=bfloat16{extra}")
              for t in ("v5e:16x16", "v4:4x4x4") for extra in POD_MEMORY[:3 if t.startswith("v5e") else 2]]
           + [(PLAN, f"--config={spec} --topology={slice_}") for spec, slices in TPU_PRESETS[4:] for slice_ in slices]
           + [(PLAN, f"--config={spec} --topology=v5litepod-8") for spec in TPU_SMALL]
           + [(PLAN, f"--config={spec} --topology={t}") for spec, _ in TPU_PRESETS[4:] for t in AT_SLICES_64]
           + [(PLAN, f"--config=configs/attention_transfer.py:{preset} --topology={slice_} --config.model.remat=True "
                     f"--config.grad_accum_steps={accum} --step_only")
              for preset, slices in AT_FIT_8.items() for slice_, accum in slices.items()]
           + [(PLAN, f"--config=configs/flyp.py:imagenet_b16 --topology=v5litepod-8 --config.model.variant={variant} "
                     f"--config.batch_size={batch} --config.model.dtype=bfloat16{memory}{scan} --step_only")
              for variant, batch in LARGE_TOWERS for scan in ("", " --config.model.scan_layers=True")
              for memory in MEMORY_SETTINGS]
           + [(PLAN, f"--config=configs/flyp.py:imagenet_b16 --topology={slice_} --config.model.variant={variant} "
                     f"--config.model.dtype=bfloat16{memory} --step_only --max_batch")
              for variant, memory in MAX_BATCH_ROWS for slice_ in SLICES_8],
}


def _target(module: str) -> str:
  return module if "." in module else f"benchmarks.{module}"


def _shown(module: str, args: str) -> str:
  return f"python -m {_target(module)} {args} --json".replace("  ", " ")


def run_one(module: str, args: str, timeout_s: float) -> dict:
  cmd = [sys.executable, "-m", _target(module), *args.split(), "--json"]
  shown = _shown(module, args)
  print(f"$ {shown}", flush=True)
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return {"benchmark": module, "command": shown, "error": f"timed out after {timeout_s:.0f}s"}
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    return {"benchmark": module, "command": shown, "error": f"exit {proc.returncode}",
            "stderr_tail": proc.stderr[-3000:]}
  result = json.loads(lines[-1])
  result.setdefault("benchmark", module.rsplit(".", 1)[-1])
  if module == PLAN:  # compiled by libtpu on this host: the host's versions (the plan names only the chips)
    result["environment"] = common.environment(devices=False)
  result["command"] = shown
  result["process_s"] = time.perf_counter() - start
  return result


def run_suite(suite: str, results_dir: str, timeout_s: float, only=None, resume: bool = False, jobs: int = 1) -> dict:
  """Run the suite's entries (those of the modules in `only`, if given) in order, `jobs` processes at a time (for
  compile-only entries; timed ones share the machine then). With `only`, the results of the other entries already
  in the suite's file are kept, so one benchmark can be re-run alone; with `resume`, every entry with a result
  (not an error) in the file is kept and not run again."""
  path = os.path.join(results_dir, f"{suite}.json")
  kept = {}
  if (only or resume) and os.path.exists(path):
    with open(path) as f:
      kept = {r["command"]: r for r in json.load(f)["results"]
              if (resume and "error" not in r) or (only and r.get("benchmark") not in only)}
  entries = [e for e in SUITES[suite] if (not only or e[0] in only) and not (resume and _shown(*e) in kept)]
  # Suite order; None for entries not run (yet) and without a kept result.
  slots = [None if (module, args) in entries else kept.get(_shown(module, args)) for module, args in SUITES[suite]]
  out = {"suite": suite, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "results": [r for r in slots if r is not None]}
  os.makedirs(results_dir, exist_ok=True)
  lock = threading.Lock()

  def run_slot(i: int) -> None:
    result = run_one(*SUITES[suite][i], timeout_s)
    with lock:
      slots[i] = result
      print(f"  -> {_shown(*SUITES[suite][i])}: {_headline(result)}" if jobs > 1 else f"  -> {_headline(result)}",
            flush=True)
      # Written after every benchmark, so an outer time limit still leaves what finished.
      out["results"] = [r for r in slots if r is not None]
      with open(path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)

  pending = [i for i, entry in enumerate(SUITES[suite]) if entry in entries]
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
    for future in [pool.submit(run_slot, i) for i in pending]:
      future.result()
  return out


def _headline(r: dict) -> str:
  if "error" in r:
    return "ERROR " + r["error"]
  b = r["benchmark"]
  if b == "train_step":
    s = f"{r['examples_per_s']:.2f} examples/s, MFU {r['mfu']:.1%}, compile {r['compile_s']:.1f}s"
    return s + (f", {r['speedup_vs_torch']:.2f}x PyTorch" if "speedup_vs_torch" in r else "")
  if b == "eval_step":
    s = f"{r['images_per_s']:.1f} images/s"
    return s + (f", {r['speedup_vs_torch']:.2f}x PyTorch" if "speedup_vs_torch" in r else "")
  if b == "loss_memory":
    last = r["rows"][-1]
    return f"B={last['global_batch']}: {last['temp_bytes'] / 2**20:.0f} MiB temp per device"
  if b == "tpu_plan":
    peak = r.get("needs_bytes") or max(r[k] or 0 for k in ("peak_bytes", "init_peak_bytes", "eval_peak_bytes"))
    return f"peak {peak / 2**30:.2f} GiB per chip, fits {r['fits']}, compile {r['compile_s']:.0f}s"
  if b == "main_job":
    return f"{r.get('wall_s', 0):.0f}s wall" if "wall_s" in r else r.get("command", "")
  return ""


# ---------------------------------------------------------------------------------------------- rendering
def _fmt(x, spec=".2f"):
  return "n/a" if x is None else format(x, spec)


def _machine(results) -> str:
  env = next((r["environment"] for r in results if "environment" in r), {})
  torch_env = next((r["environment"] for r in results if "torch" in r.get("environment", {})), env)
  if not env:
    return "not recorded"
  parts = [f"{env['device_kind']} x{env['devices']} ({env['jax_backend']})" if "device_kind" in env
           else "compiling host, no accelerator",
           f"CPU {env.get('cpu', '?')}, {env.get('cpu_threads', '?')} threads",
           f"jax {env.get('jax')}, flax {env.get('flax')}, optax {env.get('optax')}"
           + (f", libtpu {env['libtpu']}" if "libtpu" in env else "")]
  if "torch" in torch_env:
    parts += [f"torch {torch_env.get('torch')} ({torch_env.get('torch_threads')} threads"
              + (f", {torch_env['torch_device']}" if torch_env.get("torch_device") else "") + ")",
              f"transformers {torch_env.get('transformers')}"]
  return "; ".join(parts + [f"python {env.get('python')}"])


def render(results_dir: str, path: str, notes_path: str) -> str:
  suites = []
  for name in ("cpu", "gpu", "tpu", "smoke"):
    p = os.path.join(results_dir, f"{name}.json")
    if os.path.exists(p):
      with open(p) as f:
        suites.append(json.load(f))
  lines = ["# Benchmarks", "",
           "Generated by `python -m benchmarks.run_all` from `benchmarks/results/*.json`; the notes at the end come "
           "from `benchmarks/NOTES.md`. Random weights, synthetic on-device batches (see each script's docstring). "
           "Rates are medians over timed windows (min-max in brackets); `x torch` is JAX / PyTorch measured in the "
           "same run, windows alternating, PyTorch in a child process. MFU: analytic matmul FLOPs "
           "(benchmarks/common.py) of each framework's own work over the peak named in the peak column.", ""]
  for s in suites:
    res = s["results"]
    lines += [f"## Suite `{s['suite']}` ({s['date']})", "", f"Machine: {_machine(res)}", ""]
    train = [r for r in res if r.get("benchmark") == "train_step" and "error" not in r]
    if train:
      lines += ["### FLYP training step (both towers, contrastive loss, AdamW)", "",
                "Text tokens: caption length JAX / PyTorch (`--captions`: 77/77 the same synthetic rows; 22/77 "
                "FLYP's ImageNet prompts as each code runs them, see benchmarks/train_step.py).", "",
                "| model | batch | dtype | text tokens | JAX examples/s | PyTorch examples/s | x torch | JAX MFU | "
                "PyTorch MFU | JAX compile s | XLA/analytic FLOPs | peak |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
      for r in train:
        j, t = r.get("jax", {}), r.get("torch", {})
        rng = lambda d: (f"{_fmt(d['examples_per_s'])} [{_fmt(d['examples_per_s_spread']['min'])}-"
                         f"{_fmt(d['examples_per_s_spread']['max'])}]") if d else "n/a"
        tl = r.get("text_length", {})
        lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {tl.get('jax', 'n/a')}/{tl.get('torch', 'n/a')} "
                     f"| {rng(j)} | {rng(t)} | "
                     f"{_fmt(r.get('speedup_vs_torch'))} | {_fmt(j.get('mfu'), '.1%')} | {_fmt(t.get('mfu'), '.1%')} | "
                     f"{_fmt(j.get('compile_s'), '.1f')} | {_fmt(r.get('xla_over_analytic_step'), '.3f')} | "
                     f"{r['peak_flops_per_device'] / 1e12:.3g} TFLOP/s ({r['peak_source']}) |")
      lines.append("")
    ev = [r for r in res if r.get("benchmark") == "eval_step" and "error" not in r]
    if ev:
      lines += ["### Zero-shot evaluation (image tower + head + top-1)", "",
                "| model | batch | dtype | JAX images/s | PyTorch images/s (inference mode) | x torch | JAX MFU |",
                "|---|---|---|---|---|---|---|"]
      for r in ev:
        j, t = r.get("jax", {}), r.get("torch", {})
        lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {_fmt(j.get('images_per_s'), '.1f')} | "
                     f"{_fmt(t.get('images_per_s'), '.1f')} | {_fmt(r.get('speedup_vs_torch'))} | "
                     f"{_fmt(j.get('mfu'), '.1%')} |")
      lines.append("")
    for r in res:
      if r.get("benchmark") == "loss_memory" and "error" not in r:
        lines += [f"### Sharded contrastive loss: compiled temp memory per device ({r['devices']} simulated devices, "
                  f"E={r['embed_dim']}, value_and_grad"
                  + (f", columns {r['block']} at a time" if r.get("block") else "") + ")", "",
                  "| global batch | local batch | temp MiB / device | temp / (B_local x B_global x 4 B) | growth exponent |",
                  "|---|---|---|---|---|"]
        for row in r["rows"]:
          lines.append(f"| {row['global_batch']} | {row['local_batch']} | {row['temp_bytes'] / 2**20:.1f} | "
                       f"{row['temp_over_logits_block']:.2f} | {_fmt(row.get('growth_exponent'))} |")
        lines.append("")
      if r.get("benchmark") == "main_job" and "error" not in r and "wall_s" in r:
        acc = {k: v for k, v in r.get("results", {}).items() if k.startswith("avg_") or k.endswith("/top1")}
        lines += ["### Main job", "", f"`{r.get('job_command', r['command'])}` (fresh workdir, the shipped demo CLIP; "
                  f"run by `{r['command']}`): "
                  f"**{r['wall_s']:.0f} s** wall, exit code {r['returncode']}; its own train_seconds "
                  f"{_fmt(r.get('train_seconds'), '.0f')}; last logged rate {_fmt(r.get('last_logged_examples_per_s'), '.0f')} "
                  f"examples/s.", ""]
        if acc:
          lines += ["Results: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(acc.items())), ""]
    lines += _tpu_rows([r for r in res if r.get("benchmark") == "tpu_plan" and "error" not in r])
    errors = [r for r in res if "error" in r]
    for r in errors:
      lines += [f"Failed: `{r['command']}`: {r['error']}", ""]
    lines += ["Commands:", "", "```"] + [r["command"] for r in res] + ["```", ""]
  if os.path.exists(notes_path):
    with open(notes_path) as f:
      lines += [f.read().rstrip(), ""]
  text = "\n".join(lines)
  with open(path, "w") as f:
    f.write(text)
  return text


def _memory_settings(r: dict) -> str:
  """The plan's settings that trade speed for memory, where not the default."""
  shown = [f"remat {r['remat']}" if r.get("remat") else "", "scanned blocks" if r.get("scan_layers") else "",
           f"loss block {r['loss_block']}" if r.get("loss_block") else "",
           f"accum {r['grad_accum_steps']}" if r.get("grad_accum_steps", 1) > 1 else "",
           f"model axis {r['model_axis']}" if r.get("model_axis", 1) > 1 else ""]
  return ", ".join(s for s in shown if s) or "-"


def _tpu_rows(plans) -> list[str]:
  if not plans:
    return []
  searches = [r for r in plans if "largest_batch" in r]
  steps = [r for r in plans if "largest_batch" not in r and set(r["programs"]) == {"train step"}]
  whole = [r for r in plans if r not in searches and r not in steps]
  return _plan_rows(whole) + _step_rows(steps) + _search_rows(searches)


def _gib(n) -> str:
  return "-" if n is None else f"{n / 2**30:.2f}"


# What the TPU tables' two peaks are (flyp_jax/tpu_plan.py `needs`).
_PEAKS = ("Summed peak: arguments + outputs - donated + temporaries + code, every buffer live at once (an upper "
          "bound); XLA's peak: its own (memory_analysis().peak_memory_in_bytes), the one libtpu holds to the chip's "
          "usable HBM and the plan's verdict reads ('-': recorded before the plan read it).")


def _step_rows(plans) -> list[str]:
  """The train step alone under each memory setting (`--step_only`)."""
  if not plans:
    return []
  lines = ["#### The train step under each memory setting (`--step_only`)", "",
           "Per chip. Temporaries: the activations kept for the backward pass and the step's scratch; '>=': libtpu "
           "refused the step, which needs at least that much. remat True recomputes each block whole; a policy names "
           "what a block keeps (jax.checkpoint_policies). Scanned blocks: `model.scan_layers`, one block compiled per "
           "tower; XLA's FLOPs then count the loop's body once (as for gradient accumulation), not the step. "
           f"{_PEAKS}", "",
           "| model | slice | batch | dtype | memory settings | temporaries GiB | summed peak GiB | XLA's peak GiB | "
           "fits | XLA TFLOPs per chip | compile s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in plans:
    step = r["programs"]["train step"]
    refused = "out_of_memory" in step
    lines.append(f"| {r.get('model', '?')} | {r['topology']} | {r['batch_size']} | {r['dtype']} | {_memory_settings(r)} | "
                 f"{'-' if refused else _gib(step.get('temporaries'))} | {'>= ' * refused}{_gib(r['peak_bytes'])} | "
                 f"{_gib(step.get('xla_peak'))} | {'yes' if r['fits'] else 'NO'} | "
                 f"{_fmt(r['step_flops'] and r['step_flops'] / 1e12, '.1f')} | {r['compile_s']:.0f} |")
  return lines + [""]


def _search_rows(plans) -> list[str]:
  """The largest global batch whose train step fits (`--max_batch`)."""
  if not plans:
    return []
  lines = ["#### The largest global batch that fits (`--max_batch`)", "",
           "Found by compiling the train step alone where a line through the peaks compiled so far meets the chip's "
           "HBM, and by doubling and bisection once a peak nears the HBM, where XLA rematerialises by itself "
           "(flyp_jax/tpu_plan.py `largest_batch`), to within 1/16; 'refused' is the smallest batch seen not to "
           "fit (libtpu refused its step); search s: the whole search's time. " f"{_PEAKS}", "",
           "| model | slice | dtype | memory settings | largest batch | per chip | its summed peak GiB | "
           "its XLA's peak GiB | refused | steps compiled | search s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in plans:
    # [batch, fits, summed peak, XLA's peak]; searches from before XLA's peak was read have three fields.
    best = next((t for t in r["tried"] if t[0] == r["largest_batch"] and t[1]), [None] * 4)
    peak, xla_peak = (best + [None])[2:4]
    lines.append(f"| {r.get('model', '?')} | {r['topology']} | {r['dtype']} | {_memory_settings(r)} | "
                 f"{r['largest_batch'] or 'none'} | {r['largest_batch'] // r['chips'] if r['largest_batch'] else '-'} | "
                 f"{_gib(peak)} | {_gib(xla_peak)} | {r['refused_batch']} | {len(r['tried'])} | "
                 f"{r.get('process_s', 0):.0f} |")
  return lines + [""]


def _plan_rows(plans) -> list[str]:
  if not plans:
    return []
  gib = _gib
  lines = ["### Compiled for TPU on a CPU host, not run (`python -m flyp_jax.tpu_plan`)", "",
           "Per chip, from XLA's memory and cost analysis of the programs the loop runs (flyp_jax/tpu_plan.py): each "
           "program's summed peak; fits: libtpu compiled every program and XLA's peak of each is within the HBM. "
           f"{_PEAKS} FLOPs: XLA's count of the train step / the analytic "
           "matmul count (flyp_jax/flops.py); with gradient accumulation XLA counts the accumulation loop's body once "
           "(a quarter of the step at accum 4). '>=': libtpu refused to compile the step, which needs at least that "
           "much. Collectives: the train step's, bytes per chip.", "",
           "| config | slice | chips | model | batch | dtype | memory settings | train step GiB | init GiB | "
           "eval GiB | HBM GiB | fits | step TFLOPs per chip | XLA / analytic | collectives (MiB) | compile s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in plans:
    analytic = r.get("analytic_flops")
    ratio = _fmt(r["step_flops"] / analytic) if analytic and r.get("step_flops") else "n/a"
    refused = any("out_of_memory" in q for q in r["programs"].values())  # its peak: at least what XLA said
    coll = ", ".join(f"{op} {c['bytes'] / 2**20:.0f}" for op, c in sorted(r.get("collectives", {}).items()))
    lines.append(f"| {r['config']} | {r['topology']} | {r['chips']} | {r.get('model', '?')} | {r['batch_size']} | "
                 f"{r['dtype']} | {_memory_settings(r)} | {'>= ' * refused}{gib(r['peak_bytes'])} | "
                 f"{gib(r['init_peak_bytes'])} | {gib(r['eval_peak_bytes'])} | {gib(r['hbm_bytes'])} | "
                 f"{'yes' if r['fits'] else 'NO'} | {_fmt(r['step_flops'] and r['step_flops'] / 1e12, '.1f')} | "
                 f"{ratio} | {coll or '-'} | {r['compile_s']:.0f} |")
  return lines + [""]


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--suite", default="cpu", choices=sorted(SUITES))
  p.add_argument("--results_dir", default=RESULTS_DIR)
  p.add_argument("--markdown", default=None, help="where to write the report (default: RESULTS.md next to the "
                                                   "results for the default directory, else <results_dir>/RESULTS.md)")
  p.add_argument("--only", default="", help="comma-separated benchmark names to run (default: all of the suite)")
  p.add_argument("--timeout_s", type=float, default=3600, help="per benchmark process")
  p.add_argument("--render_only", action="store_true")
  p.add_argument("--resume", action="store_true", help="keep the entries the suite's file has a result for")
  p.add_argument("--jobs", type=int, default=1, help="entries run at a time (the tpu suite's compiles: up to the "
                                                    "host's cores; timed suites: 1)")
  a = p.parse_args(argv)
  markdown = a.markdown or (os.path.join(HERE, "RESULTS.md") if os.path.abspath(a.results_dir) == RESULTS_DIR
                            else os.path.join(a.results_dir, "RESULTS.md"))
  if not a.render_only:
    run_suite(a.suite, a.results_dir, a.timeout_s, [o for o in a.only.split(",") if o], a.resume, a.jobs)
  render(a.results_dir, markdown, os.path.join(HERE, "NOTES.md"))
  print(f"wrote {markdown}")


if __name__ == "__main__":
  main()
