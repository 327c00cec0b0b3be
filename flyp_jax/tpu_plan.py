"""Will this run fit on that TPU slice? Its programs compiled for the slice's chips, on a host without TPUs.

  python -m flyp_jax.tpu_plan --config=configs/flyp.py:imagenet_b16 --topology=v5litepod-8
  python -m flyp_jax.tpu_plan --config=configs/flyp.py:imagenet_b16 --topology=v4:4x4x4 \\
      --config.model.variant=ViT-L/14 --config.batch_size=32768 --config.flyp.loss_block=4096 --json

Nothing runs: libtpu (the `tpu` extra) compiles, for the topology's devices, the
programs the training loop runs for the config, built by the loop's own builders at the run's shapes:
  init: parameters   random initialisation born sharded (`model.init=random` only: a checkpoint goes from the
                     host to the chips shard by shard, no program)
  init: optimiser    the optimiser state, born sharded (`parallel.sharded_initializer` of the optimiser's init)
  train step         `train.make_train_step` with the method's loss: gradient accumulation, model axis, donation,
                     the config's dtype and remat, the global batch and the prompts' length after trimming
  zero-shot head     the text tower over one batch of the prompts (methods evaluated with zero-shot heads)
  evaluation step    `evaluate`'s step on the suite's first dataset at `eval.batch_size`
The model's shape is that of `model.path`'s checkpoint where it is on this host, else `model.variant`'s (with
`model.overrides`; an attention-transfer 'vit' teacher's is `at.teacher.variant`): planning before the checkpoint
is copied to the slice, name the variant it is.

Per chip and program: XLA's memory analysis (arguments, outputs, aliased = donated inputs reused as outputs,
temporaries, generated code), their sum (arguments + outputs - aliased + temporaries + code: every buffer live at
once, an upper bound) and XLA's own peak, the one held against the chip's HBM (`needs`); FLOPs from XLA's cost
analysis beside the analytic count (`flyp_jax.flops`, both towers' matmuls; none for attention transfer); the train
step's collectives (from the compiled program's text) with their bytes; the compile time on this host. XLA's time
estimate is not reported: compiled for, not run on, a TPU there is no time.
With --json the last line printed is one JSON object (`plan`'s).
"""

from __future__ import annotations

import os

# Before JAX starts: this host's own devices are its CPU (libtpu would look for TPUs), and libtpu needs no cloud
# metadata server or worker list to describe a topology (it asks for them otherwise, with warnings).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no TPU to own: plans may run side by side

import collections  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Optional  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from flyp_jax import configs_lib, errors, evaluate, flops, methods, models, optim, parallel, train  # noqa: E402
from flyp_jax.data import classnames as classnames_lib  # noqa: E402
from flyp_jax.data import suites  # noqa: E402
from flyp_jax.data import templates as templates_lib  # noqa: E402
from flyp_jax.tokenizer import prompt_tokens  # noqa: E402

GiB = 2 ** 30
# HBM per chip by device kind (Cloud TPU's system architecture pages); v5p's device kind is "TPU v5".
HBM_BYTES = {"TPU v4": 32 * GiB, "TPU v5 lite": 16 * GiB, "TPU v5": 95 * GiB, "TPU v6 lite": 32 * GiB}
# Above this share of the HBM, XLA fits a larger train step by rematerialising by itself: the compiled peak stops
# growing with the batch (FLYP ViT-B/16 in bfloat16 on v4-8, summed: 29.0 GiB at batch 1140, 28.9 at 2416, 29.7 at
# 2716).
SQUEEZED = 0.9
# Slice (accelerator type) names -> topology: v5e / v6e count chips, v4 / v5p TensorCores (two per chip).
_CHIP_GRID = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_CUBE = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8", 512: "8x8x8"}
SLICES = {**{f"{g}-{n}": f"{t}:{grid}" for n, grid in _CHIP_GRID.items()
             for g, t in (("v5litepod", "v5e"), ("v5e", "v5e"), ("v6e", "v6e"))},
          **{f"{g}-{2 * n}": f"{g}:{cube}" for n, cube in _CUBE.items() for g in ("v4", "v5p")}}
PROGRAMS = ("init: parameters", "init: optimiser", "train step", "zero-shot head", "evaluation step")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8}


def topology_devices(name: str) -> tuple[str, list]:
  """(topology name, its compile-only devices) for a topology ('v5e:2x4', 'v4:4x4x4') or slice ('v5litepod-8',
  'v4-8') name. v4 and v5p chips are one device each (megacore), as JAX runs them."""
  topology = SLICES.get(name, name)
  generation, _, shape = topology.partition(":")
  if not shape:
    raise errors.BadValue(f"unknown TPU topology {name!r}: give a topology such as v5e:2x4, v4:2x2x1, v5p:2x2x1, "
                          f"v6e:2x4 or a slice name such as v5litepod-8, v4-8, v5p-8, v6e-8")
  accelerator = {t: s for s, t in SLICES.items() if not s.startswith("v5e-")}.get(topology)
  if accelerator:  # what libtpu would read from a TPU VM's metadata (it warns without)
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator)
  try:
    from jax.experimental import topologies
    kwargs = {"chip_config_name": "megacore"} if generation in ("v4", "v5p") else {}
    devices = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs).devices
  except (RuntimeError, ValueError) as e:  # libtpu missing, or a topology it does not know
    raise errors.BadValue(f"cannot describe TPU topology {topology!r} here ({str(e).splitlines()[0]}); planning "
                          f"needs libtpu (pip install -e '.[tpu]') and a topology it knows, e.g. v5e:2x4") from None
  return topology, list(devices)


def bytes_per_chip(tree) -> int:
  """Bytes of the largest share of `tree` (shapes with shardings) that one device holds."""
  per_device: dict = collections.Counter()
  for x in jax.tree.leaves(tree):
    for device, index in x.sharding.devices_indices_map(x.shape).items():
      shape = [len(range(*s.indices(n))) for s, n in zip(index, x.shape)]
      per_device[device] += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
  return max(per_device.values(), default=0)


def memory(compiled) -> dict[str, Optional[int]]:
  """XLA's memory analysis of a compiled program (bytes per device): its buffers by kind, their sum ('peak': every
  buffer live at once) and XLA's own peak ('xla_peak', None where this JAX does not report it)."""
  m = compiled.memory_analysis()
  out = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes, "aliased": m.alias_size_in_bytes,
         "temporaries": m.temp_size_in_bytes, "code": m.generated_code_size_in_bytes}
  out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"] + out["code"]
  out["xla_peak"] = getattr(m, "peak_memory_in_bytes", 0) or None
  return out


def needs(programs: dict, param_bytes: Optional[int]) -> Optional[int]:
  """What the most demanding compiled program holds in a chip at once: XLA's own peak of each where reported, else
  the summed one; the optimiser's initialisation with the parameters it is made beside. libtpu holds XLA's peak,
  not the sum, to the chip's usable HBM (a little under the nominal: 15.75 GiB of a v5e chip's 16, 30.75 of a v4
  chip's 32, by its refusals): near the HBM the sum runs over it for steps libtpu compiles (FLYP ViT-B/16 at batch
  2664 on a v5litepod-8: sum 16.56 GiB, XLA's peak 14.34)."""
  held = [(q.get("xla_peak") or q["peak"]) + (param_bytes or 0) * (name == "init: optimiser")
          for name, q in programs.items() if "out_of_memory" not in q and q.get("peak") is not None]
  return max(held, default=None)


def _shape_bytes(text: str) -> int:
  return sum(_DTYPE_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
             for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text))


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{op: {'count', 'bytes'}} of the collectives in a compiled program's text, per device. An asynchronous
  op's start ('all-gather-start') is counted with the bytes of its result without its operands (the last
  element of its tuple); the done op is not counted again."""
  found: dict = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
  pattern = re.compile(r"=\s+(\(.*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
  for line in hlo_text.splitlines():
    match = pattern.search(line)
    if not match:
      continue
    shape, op, start = match.groups()
    if start and shape.startswith("("):
      shape = shape[1:-1].rsplit(", ", 1)[-1]  # (operand, result[, context...]): the result is the operand's peer
    found[op]["count"] += 1
    found[op]["bytes"] += _shape_bytes(shape)
  return dict(found)


def _compiled(jitted, *args, **kwargs) -> tuple[Any, float]:
  """(compiled program, seconds), or (XLA's out-of-memory message, seconds) where the program does not fit a
  chip: libtpu refuses to compile it, which is the plan's answer, not a failure."""
  start = time.perf_counter()
  try:
    compiled = jitted.lower(*args, **kwargs).compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    compiled = str(e).split("RESOURCE_EXHAUSTED:", 1)[1].strip().splitlines()[0]
  return compiled, time.perf_counter() - start


_UNITS = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def required_bytes(message: str) -> Optional[int]:
  """The memory an out-of-memory message of XLA:TPU says the program needs per chip: 'the total memory required
  for HLO temporaries (55.66G) ...' or 'Used 20.50G of 15.75G hbm'; None where it names no amount."""
  m = (re.search(r"required for HLO temporaries \(([\d.]+)([KMGT])\)", message)
       or re.search(r"Used ([\d.]+)([KMGT]) of", message))
  return None if m is None else int(float(m.group(1)) * _UNITS[m.group(2)])


def _program(compiled, seconds: float) -> dict:
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  return {**memory(compiled), "flops": flops.xla_flops(compiled), "bytes_accessed": cost.get("bytes accessed"),
          "compile_s": seconds}


def _clip(config):
  """(CLIP, its parameters' shapes, its name): `model.path`'s checkpoint when it is a file or folder here (a
  pretrained one), else `model.variant`'s shape."""
  m = config.model
  if m.init == "pretrained" and m.path and os.path.exists(m.path):
    model, params = train.pretrained_clip(config)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)
    return model, shapes, os.path.basename(m.path.rstrip("/"))
  model = train.clip_model(config)
  return model, jax.eval_shape(lambda: models.init_params(model, jax.random.key(config.seed))), m.variant


def _model(config, method):
  """(model, shapes of its parameters, name): the method's own without its checkpoint (an attention-transfer
  'vit' teacher), else the config's CLIP."""
  made = method.abstract_model(config) if method is not None and method.abstract_model else None
  return (*made, config.at.teacher.variant) if made is not None else _clip(config)


def _eval_dataset(config) -> Optional[suites.EvalDataset]:
  return suites.of_config(config)[0] if config.eval.suite else None


def plan(config, topology: str, progress=print, hlo_dir: str = "", step_only: bool = False) -> dict:
  """Compile the config's programs for `topology` (module docstring) and return what they need per chip; with
  `hlo_dir`, each compiled program's text is written there (`<program>.hlo.txt`); `step_only`: the train step
  alone (what a batch size changes)."""
  method_name = config.method
  if method_name not in methods.NAMES + ("lp", "wiseft"):
    raise errors.BadValue(f"method {method_name!r} runs other configs' runs: plan each of them (their config files "
                          f"and presets are in this config's fields)")
  topology, devices = topology_devices(topology)
  kind = devices[0].device_kind
  hbm = HBM_BYTES.get(kind)
  mesh = parallel.make_mesh(config.model_axis, devices=devices)
  chips = len(devices)
  training = method_name in methods.NAMES
  method = methods.get(method_name) if training else None
  model, clip_shapes, model_name = _model(config, method)
  state_sharding = lambda tree: parallel.abstract(tree, parallel.state_shardings(tree, mesh))
  programs: dict[str, dict] = {}
  out: dict[str, Any] = {"config": config.name, "method": method_name, "topology": topology, "chips": chips,
                         "hosts": len({d.process_index for d in devices}), "device_kind": kind, "hbm_bytes": hbm,
                         "model_axis": mesh.shape[parallel.MODEL], "batch_size": config.batch_size,
                         "dtype": config.model.dtype, "remat": models.remat_setting(config.model),
                         "scan_layers": config.model.scan_layers,
                         "loss_block": config.flyp.loss_block, "grad_accum_steps": config.grad_accum_steps,
                         "model": model_name}

  def compile_program(name, jitted, *args, **kwargs):
    progress(f"compiling {name} ...")
    compiled, seconds = _compiled(jitted, *args, **kwargs)
    if isinstance(compiled, str):  # too big for a chip: what XLA needs (at least), no program
      programs[name] = {"out_of_memory": compiled, "peak": required_bytes(compiled), "compile_s": seconds}
      return None
    programs[name] = _program(compiled, seconds)
    if hlo_dir:
      os.makedirs(hlo_dir, exist_ok=True)
      with open(os.path.join(hlo_dir, re.sub(r"\W+", "_", name).strip("_") + ".hlo.txt"), "w") as f:
        f.write(compiled.as_text())
    return compiled

  if training:
    train.check_batch(config, mesh)  # the loop's checks of the batch, before compiling
    if config.model.init == "random" and not method.abstract_model and not step_only:
      init = lambda: models.init_params(model, jax.random.key(config.seed))
      compile_program("init: parameters", parallel.sharded_initializer(init, mesh=mesh))
    params = state_sharding({"clip": clip_shapes, **method.extra_param_shapes(config, model)})
    out["param_bytes"] = bytes_per_chip(params)  # on the chips from initialisation on
    tx = optim.make_optimizer(config, params, config.steps)
    if not step_only:
      compile_program("init: optimiser", parallel.sharded_initializer(tx.init, params, mesh=mesh), params)
    state = {"params": params, "opt_state": state_sharding(jax.eval_shape(tx.init, params)),
             "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=parallel.replicated(mesh))}
    ema_of = train.ema_mask(config, params)
    if ema_of is not None:  # the weight EMA: a copy of the trainable parameters
      state["ema"] = state_sharding(jax.eval_shape(lambda p: optim.ema_init(p, ema_of), params))
    batch = parallel.abstract(method.batch_shapes(config, model), parallel.data_sharding(mesh))
    step = train.make_train_step(config, method.make_loss(config, model, mesh), tx, mesh, state)
    compiled = compile_program("train step", step, state, batch)
    out["collectives"] = {} if compiled is None else collectives(compiled.as_text())
    out["analytic_flops"] = _analytic_step_flops(config, method_name, model, batch)
    eval_model = method.eval_model(config, model)
    eval_params, head = method.eval_params(config, params)
  else:
    out["collectives"], out["analytic_flops"] = {}, None
    eval_model, eval_params, head = model, state_sharding(clip_shapes), None
  dataset = None if step_only else _eval_dataset(config)
  if dataset is not None:
    head = _plan_head(config, eval_model, eval_params, head, dataset, mesh, compile_program)
    _plan_eval_step(config, eval_model, eval_params, head, dataset, mesh, compile_program)
  out["programs"] = programs
  peak = lambda names: max([programs[n]["peak"] for n in names if programs.get(n, {}).get("peak") is not None],
                           default=None)
  out["peak_bytes"] = peak(["train step"])
  # The optimiser's state is made beside the parameters (its program reads only their shapes).
  init = [programs[n]["peak"] for n in ("init: parameters",) if n in programs]
  init += [peak(["init: optimiser"]) + out["param_bytes"]] if peak(["init: optimiser"]) is not None else []
  out["init_peak_bytes"] = max(init, default=None)
  out["eval_peak_bytes"] = peak(["zero-shot head", "evaluation step"])
  out["xla_peak_bytes"] = programs.get("train step", {}).get("xla_peak")
  out["needs_bytes"] = needs(programs, out.get("param_bytes"))
  refused = any("out_of_memory" in p for p in programs.values())
  out["fits"] = False if refused else None if hbm is None else (out["needs_bytes"] or 0) <= hbm
  out["step_flops"] = programs.get("train step", {}).get("flops")
  if out["analytic_flops"] is not None:
    out["analytic_flops"] /= chips  # per chip, as XLA's count
  out["compile_s"] = sum(p["compile_s"] for p in programs.values())
  return out


def _plan_head(config, model, params, head, dataset, mesh, compile_program):
  """The evaluation's head as a shape; a zero-shot one (head None) also compiles its text encoder."""
  rep = parallel.replicated(mesh)
  if head is not None:
    return parallel.abstract(head, rep)
  classnames = classnames_lib.get(dataset.classnames, dataset.tfds_name, config.data.data_dir or None)
  templates = templates_lib.get(dataset.templates)
  tokens = prompt_tokens(classnames, templates, model.config.context_length)
  batch = evaluate.head_batch_size(len(tokens), mesh, evaluate.HEAD_BATCH_SIZE)  # the Evaluator's
  compile_program("zero-shot head", evaluate._text_encoder(model, mesh), params,
                  jax.ShapeDtypeStruct((batch, tokens.shape[1]), jnp.int32, sharding=parallel.data_sharding(mesh)))
  return jax.ShapeDtypeStruct((model.config.embed_dim, len(classnames)), jnp.float32, sharding=rep)


def _plan_eval_step(config, model, params, head, dataset, mesh, compile_program):
  rep, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  indices, label_table = projection = evaluate.projection(dataset)
  kernel = head["kernel"] if isinstance(head, dict) else head
  n_classes = kernel.shape[1] if indices is None else indices.shape[0]
  as_abstract = lambda x: None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep)
  indices, label_table = (as_abstract(x) for x in projection)
  stats = parallel.abstract(evaluate._zero_stats(n_classes, dataset.num_groups), rep)
  n, size = config.eval.batch_size, model.config.image_size
  batch = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32, sharding=data),
           **{k: jax.ShapeDtypeStruct((n,), jnp.int32, sharding=data) for k in ("label", "mask", "group")}}
  compile_program("evaluation step", evaluate._eval_step, params, head, indices, label_table, stats, batch,
                  model=model, n_groups=dataset.num_groups)


def _analytic_step_flops(config, method_name: str, model, batch) -> Optional[float]:
  """The step's matmul FLOPs (global) by `flyp_jax.flops`: both towers and the loss (FLYP, pretraining, the
  cross-entropy ablation's C prompts), the image tower (FT); None where the formula does not apply (attention transfer's ViTs)."""
  c = getattr(model, "config", None)
  if not isinstance(c, models.CLIPConfig):
    return None
  n = config.batch_size
  if method_name == "ft":
    return 3 * flops.forward_flops(c, n, towers="image", pooled_last_block=True)["total"]
  if method_name in ("flyp", "ce_ablation"):
    names = classnames_lib.of_data(config.data)
    length = prompt_tokens(names, templates_lib.get(config.data.templates), c.context_length).shape[1]
    if method_name == "ce_ablation":  # B images against the C class prompts
      image = flops.forward_flops(c, n, towers="image", pooled_last_block=True)["total"]
      text = flops.forward_flops(c, len(names), length, towers="text", pooled_last_block=True)["total"]
      return 3 * (image + text + 2 * n * len(names) * c.embed_dim)
  elif method_name == "pretrain":
    length = batch["tokens"].shape[1]
  else:
    return None
  return flops.train_flops(c, n, length, pooled_last_block=True)


def largest_batch(config, topology: str, progress=print) -> dict:
  """The largest global batch whose train step XLA fits in a chip, found by compiling the step alone, to within
  1/16 (in steps the data axis, gradient accumulation and `flyp.loss_block` divide). Far from the chip's HBM the
  peak grows about linearly with the batch, so a probe goes where a line of peaks meets the HBM: from
  `config.batch_size` up, the line through the two largest fitting peaks (after the first, through that peak and
  the step's resident arguments at batch 0); inside the bracket of a batch that fits and one that does not, the
  line through their two peaks, a probe that lands followed by one 1/16 beyond it on the open side. Near the HBM
  (a fitting peak above `SQUEEZED` of it) XLA may rematerialise by itself and the peak stop following the batch, so
  after one step 1/16 beyond the first such peak the search doubles up and bisects the bracket instead; it also
  doubles where the chip's HBM is unknown, and halves down from a start that does not fit. A refused step compiles
  in seconds, a fitting one in minutes.

  Returns {'largest_batch' (None: not even one step of the smallest batch fits), 'refused_batch', 'tried':
  [[batch, fits, summed peak bytes, XLA's peak bytes or None], ...]}; `config` is left as it was. The peaks
  followed are XLA's where reported (`needs`; for a refused step, what libtpu said it needs), the verdicts libtpu's."""
  if config.method not in methods.NAMES:
    raise errors.BadValue(f"--max_batch searches a training method's batch; {config.method!r} does not train")
  devices = topology_devices(topology)[1]
  n_data = len(devices) // config.model_axis
  unit = math.lcm(n_data * config.grad_accum_steps, config.flyp.loss_block or 1)
  tried, original, hbm = [], config.batch_size, HBM_BYTES.get(getattr(devices[0], "device_kind", ""))
  resident = {}  # batch -> the fitting step's argument bytes (parameters, optimiser state, the batch's share)
  on_line = lambda *peaks: bool(hbm) and all(p is not None and p < SQUEEZED * hbm for p in peaks)
  tolerance = lambda good: max(unit, good // 16 // unit * unit)

  def fits(batch: int) -> bool:
    config.batch_size = batch
    progress(f"batch {batch}: compiling the train step ...")
    step = plan(config, topology, progress=lambda _: None, step_only=True)
    program = step["programs"]["train step"]
    ok = "out_of_memory" not in program  # libtpu compiled it: XLA fits it in a chip
    # For a refused step, the peak XLA said it needs at least; XLA's own peak of a fitting one.
    tried.append([batch, ok, step["peak_bytes"], step.get("xla_peak_bytes")])
    if ok and program.get("arguments") is not None:
      resident[batch] = program["arguments"]
    progress(f"batch {batch}: {'fits' if ok else 'does not fit'} "
             f"({_size(step.get('xla_peak_bytes') or step['peak_bytes'])} per chip)")
    return ok

  def held() -> list:
    """[batch, fits, the peak libtpu holds to the HBM: XLA's where reported, else the summed one]."""
    return [[b, ok, xla or summed] for b, ok, summed, xla in tried]

  def beyond(good: int) -> int:
    """The next batch above the largest that fits while none has been refused (docstring)."""
    fitting = sorted((b, peak) for b, ok, peak in held() if ok and peak)
    (b0, p0), (b1, p1) = ([(0, resident.get(good))] + fitting)[-2:]
    if on_line(p0) and not on_line(p1):  # the first peak near the HBM: one step, then doubling
      return good + tolerance(good)
    if not on_line(p0, p1) or p1 <= p0:
      return 2 * good
    guess = int(b1 + (hbm - p1) * (b1 - b0) / (p1 - p0)) // unit * unit
    return max(guess, good + tolerance(good))

  def inside(good: int, bad: int, closing: Optional[str]) -> tuple[int, bool]:
    """The next batch strictly between good and bad, and whether it is on the line (docstring)."""
    peaks = {b: peak for b, _, peak in held()}
    guess = {"up": good + tolerance(good), "down": bad - tolerance(good)}.get(closing)
    if guess is None and on_line(peaks.get(good)) and (peaks.get(bad) or 0) > peaks[good]:
      guess = good + (hbm - peaks[good]) * (bad - good) / (peaks[bad] - peaks[good])
    guess = int(guess) // unit * unit if guess is not None else 0
    return (guess, closing is None) if good < guess < bad else ((good + bad) // 2 // unit * unit, False)

  try:
    batch = max(unit, original // unit * unit)
    good, bad = (batch, None) if fits(batch) else (None, batch)
    while bad is None:
      batch = beyond(good)
      good, bad = (batch, None) if fits(batch) else (good, batch)
    while good is None and bad > unit:
      batch = max(unit, bad // 2 // unit * unit)
      good, bad = (batch, bad) if fits(batch) else (None, batch)
    closing = None  # after a probe on the line: one step beyond it, towards the bracket's other end
    while good is not None and bad - good > max(unit, good // 16):
      batch, lined = inside(good, bad, closing)
      landed = fits(batch)
      good, bad = (batch, bad) if landed else (good, batch)
      closing = ("up" if landed else "down") if lined else None
  finally:
    config.batch_size = original
  return {"largest_batch": good, "refused_batch": bad, "tried": tried}


# -------------------------------------------------------------------------------------------------- report
def _size(n: Optional[int]) -> str:
  if n is None:
    return "-"
  return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2 ** 20:.1f} MiB"


def report(p: dict) -> str:
  """The plan as a person reads it: one row per program, then the verdict."""
  hbm = p["hbm_bytes"]
  lines = [f"{p['config']} on {p['topology']}: {p['chips']} chips of {p['device_kind']} ({_size(hbm)} HBM each) "
           f"on {p['hosts']} host(s); compiled for TPU on this CPU host, not run",
           f"{p['model']}, global batch {p['batch_size']}, model axis {p['model_axis']}, {p['dtype']}, remat "
           f"{p['remat']}, scan_layers {p.get('scan_layers', False)}, loss block {p['loss_block']}, "
           f"grad_accum_steps {p['grad_accum_steps']}",
           "", "| program (per chip) | arguments | outputs | aliased | temporaries | summed peak | XLA's peak | "
           "compile (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
  order = list(PROGRAMS)  # the loop's order, also for a plan read back from a file with sorted keys
  for name, q in sorted(p["programs"].items(), key=lambda kv: order.index(kv[0])):
    if "out_of_memory" in q:  # the peak XLA names is at least what the program needs
      lines.append(f"| {name} | - | - | - | - | >= {_size(q['peak'])} | - | {q['compile_s']:.1f} |")
      continue
    lines.append(f"| {name} | {_size(q['arguments'])} | {_size(q['outputs'])} | {_size(q['aliased'])} | "
                 f"{_size(q['temporaries'])} | {_size(q['peak'])} | {_size(q.get('xla_peak'))} | "
                 f"{q['compile_s']:.1f} |")
  highest = p["needs_bytes"]  # read only where every program compiled on a known chip
  refused = [n for n, q in p["programs"].items() if "out_of_memory" in q]
  verdict = ("unknown chip: no HBM size to compare with" if p["fits"] is None else
             f"does NOT fit: XLA cannot fit the {' and the '.join(refused)} in a chip's {_size(hbm)}" if refused else
             f"{'fits' if p['fits'] else 'does NOT fit'}: at most {_size(highest)} held at once of {_size(hbm)} per "
             f"chip ({100 * highest / hbm:.0f}%; XLA's peak of each program where reported, else the summed one)")
  if p.get("param_bytes") is not None and p.get("init_peak_bytes") is not None:
    lines.append(f"parameters and extras resident per chip: {_size(p['param_bytes'])}; initialisation's peak "
                 f"{_size(p['init_peak_bytes'])} (the optimiser's state made beside them)")
  lines += [f"{n}: XLA: {p['programs'][n]['out_of_memory']}" for n in refused]
  lines += ["", verdict]
  if not p["fits"] and p["fits"] is not None:
    lines.append("  to fit: --config.model.remat=True, --config.flyp.loss_block=N (FLYP), "
                 "--config.grad_accum_steps=K, --config.model_axis=M (parameters split over M chips), or more chips")
  if p["step_flops"] is not None:
    analytic = p["analytic_flops"]
    ratio = f" (analytic {analytic:.3g}, XLA / analytic {p['step_flops'] / analytic:.2f})" if analytic else ""
    lines.append(f"train step: {p['step_flops']:.3g} FLOPs per chip by XLA's count{ratio}")
  if p["collectives"]:
    lines.append("collectives in the train step (per chip): " + ", ".join(
        f"{op} x{c['count']} ({c['bytes'] / 2 ** 20:.1f} MiB)" for op, c in sorted(p["collectives"].items())))
  lines.append(f"compiled in {p['compile_s']:.0f} s")
  return "\n".join(lines)


def main(argv=None) -> dict:
  from absl import flags
  from ml_collections import config_flags
  argv = [a for a in (sys.argv if argv is None else argv) if a != "--verbose"]  # read by run_reporting_errors
  argv = configs_lib.resolve_args(argv)  # the config file found from the working directory, else the repository's
  unknown = configs_lib.unknown_override(argv[1:])
  if unknown:
    raise errors.BadValue(unknown)
  # config_flags finds the --config.x=y overrides in sys.argv; the caller's command line is put back after.
  saved, sys.argv = sys.argv, argv
  fv = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file("config", None, "method config file, optionally :preset",
                                                flag_values=fv, lock_config=True)
  topology = flags.DEFINE_string("topology", "v5litepod-8", "TPU topology (v5e:2x4, v4:4x4x4) or slice (v4-8)",
                                 flag_values=fv)
  as_json = flags.DEFINE_bool("json", False, "print the plan as one JSON object on the last line", flag_values=fv)
  hlo_dir = flags.DEFINE_string("hlo_dir", "", "write each compiled program's text there", flag_values=fv)
  step_only = flags.DEFINE_bool("step_only", False, "compile the train step alone (what the batch and the memory "
                                "settings change), not initialisation or evaluation", flag_values=fv)
  max_batch = flags.DEFINE_bool("max_batch", False, "also find the largest global batch whose train step fits a "
                                "chip (by compiling the step at doubling, then bisected, batches)", flag_values=fv)
  try:
    rest = fv(argv)
    config = config_flag.value
  except flags.Error as e:
    raise errors.BadValue(f"{e} (python -m flyp_jax.tpu_plan --help)") from None
  finally:
    sys.argv = saved
  if len(rest) > 1:
    raise errors.BadValue(f"unexpected arguments {rest[1:]}")
  if config is None:
    raise errors.BadValue("--config is required, e.g. --config=configs/flyp.py:imagenet_b16")
  result = plan(config, topology.value, progress=lambda m: print(m, file=sys.stderr, flush=True),
                hlo_dir=hlo_dir.value, step_only=step_only.value)
  print(report(result), flush=True)
  if max_batch.value:
    result.update(largest_batch(config, topology.value,
                                progress=lambda m: print(m, file=sys.stderr, flush=True)))
    print(f"largest global batch that fits: {result['largest_batch']} (batch {result['refused_batch']} does not; "
          f"{len(result['tried'])} train steps compiled)", flush=True)
  if as_json.value:
    print(json.dumps(result, sort_keys=True), flush=True)
  return result


if __name__ == "__main__":
  if any(a in ("--help", "-h", "--helpfull") for a in sys.argv[1:]):
    print(__doc__)
    sys.exit(0)
  errors.run_reporting_errors(main, verbose="--verbose" in sys.argv)
