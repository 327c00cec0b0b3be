"""What the benchmarks share: device peaks, timing, the PyTorch reference model, JSON output.

Importing this module does not import JAX or PyTorch (each is imported where used), so scripts can still
set XLA_FLAGS first and the PyTorch side stays optional.

FLOP convention and formulas: `flyp_jax.flops` (the analytic counts `flyp_jax.tpu_plan` also reports);
`cost_analysis()` of the compiled XLA program, which counts everything, is reported next to them as the
cross-check.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Optional

# Dense peak FLOP/s per device by (device kind substring, compute dtype), from the vendors' data sheets
# (no structured sparsity). float32 on NVIDIA GPUs means the TF32 tensor-core rate, which XLA uses for
# float32 matmuls by default. The first matching substring wins, so longer names come first.
PEAK_FLOPS = {
    ("H200", "bfloat16"): 989.4e12, ("H200", "float32"): 494.7e12,
    ("H100 PCIe", "bfloat16"): 756.5e12, ("H100 PCIe", "float32"): 378.0e12,
    ("H100", "bfloat16"): 989.4e12, ("H100", "float32"): 494.7e12,  # SXM
    ("A100", "bfloat16"): 312e12, ("A100", "float32"): 156e12,
    ("L4", "bfloat16"): 121e12, ("L4", "float32"): 60e12,
    ("TPU v6", "bfloat16"): 918e12, ("TPU v6", "float32"): 918e12,
    ("TPU v5p", "bfloat16"): 459e12, ("TPU v5p", "float32"): 459e12,
    ("TPU v5 lite", "bfloat16"): 197e12, ("TPU v5 lite", "float32"): 197e12,
    ("TPU v5e", "bfloat16"): 197e12, ("TPU v5e", "float32"): 197e12,
    ("TPU v5", "bfloat16"): 459e12, ("TPU v5", "float32"): 459e12,  # v5p's device kind is "TPU v5"
    ("TPU v4", "bfloat16"): 275e12, ("TPU v4", "float32"): 275e12,
}


# ------------------------------------------------------------------------------------------------- peaks
def peak_flops_per_device(device_kind: str, platform_name: str, dtype: str, override: float = 0.0) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the number comes from). `override` > 0 wins.

  CPU has no data-sheet number: the peak is measured as the best float32 matmul rate of this process
  (`measure_matmul_peak`), so CPU MFU reads as "fraction of what a large matmul reaches here".
  """
  if override > 0:
    return override, "--peak_flops"
  if platform_name == "cpu":
    return measure_matmul_peak(), "measured: float32 2048x2048 matmul, best of 5, all threads"
  for (kind, dt), value in PEAK_FLOPS.items():
    if kind.lower() in device_kind.lower() and dt == dtype:
      return value, f"data sheet: {kind} {dt} dense"
  return float("nan"), f"unknown device kind {device_kind!r}: pass --peak_flops"


_MATMUL_PEAK: dict = {}


def measure_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  """Best FLOP/s of a jit-compiled float32 [n, n] @ [n, n] on the default JAX device (cached per process)."""
  if n in _MATMUL_PEAK:
    return _MATMUL_PEAK[n]
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
  _MATMUL_PEAK[n] = 2 * n ** 3 / best
  return _MATMUL_PEAK[n]


# ------------------------------------------------------------------------------------------------ timing
def _timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def alternate(runners: dict, steps: int, repeats: int) -> dict:
  """{name: [seconds per window]}: `repeats` rounds, each timing one window of `steps` steps per runner in turn
  (so all see the same machine load), every window after one untimed step of the same runner.

  The untimed step: on the 2-core CPU the JAX step right after a PyTorch step ran up to 1.4x slower than
  in a run of JAX steps (ViT-B/16 batch 8: 6.4-6.6 s alone, 7.8-9.2 s after a PyTorch step, PyTorch in its
  own process), whatever the cause; a training run never alternates, so each window measures the steady state.
  """
  times = {name: [] for name in runners}
  for _ in range(repeats):
    for name, runner in runners.items():
      runner.run(1)
      times[name].append(runner.run(steps))
  return times


def median(values) -> float:
  return float(statistics.median(values))


def spread(values) -> dict:
  """min / median / max, and the relative half-range (a plain noise figure for few repeats)."""
  values = [float(v) for v in values]
  mid = median(values)
  return {"min": min(values), "median": mid, "max": max(values),
          "rel_half_range": (max(values) - min(values)) / 2 / mid if mid else float("nan")}


# ------------------------------------------------------------------------------------------- environment
def cpu_threads() -> int:
  """The cores this process may run on: what XLA's CPU thread pool uses, and what PyTorch is set to."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment(torch_too: bool = False, devices: bool = True) -> dict:
  """Machine and versions, for the results file. `devices=False`: the host and versions only, without starting a
  JAX backend (a TPU compile's host, whose libtpu compiled for chips it does not have)."""
  import jax
  import jaxlib
  info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_model(),
          "cpu_threads": cpu_threads(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}
  if devices:
    info.update(jax_backend=jax.default_backend(), devices=len(jax.devices()),
                device_kind=jax.devices()[0].device_kind)
  for name in ("flax", "optax"):
    info[name] = _version(name)
  try:
    info["libtpu"] = importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    pass
  if torch_too:
    info["torch"] = _version("torch")
    info["transformers"] = _version("transformers")
    try:
      import torch
      info["torch_threads"] = torch.get_num_threads()
      if torch.cuda.is_available():
        info["torch_device"] = torch.cuda.get_device_name(0)
    except ImportError:
      pass
  return info


def _version(name: str) -> Optional[str]:
  try:
    return __import__(name).__version__
  except ImportError:
    return None


def dump(result: dict, as_json: bool) -> None:
  """Print the result: one JSON object (machine-readable) or indented for reading."""
  print(json.dumps(result, sort_keys=True) if as_json else json.dumps(result, indent=1, sort_keys=True), flush=True)


# --------------------------------------------------------------------------------------- PyTorch reference
class InChildProcess:
  """`cls(*args, **kwargs)` built and run in a child process; `run(steps)` and `loss()` are forwarded, and its
  plain attributes (numbers, strings; `device` as a string) are copied here once it is built.

  The PyTorch reference runs beside the JAX step, windows alternating (`alternate`), but in its own
  interpreter: no shared thread pools or allocator, and JAX is never imported there. The calling script needs
  the `if __name__ == "__main__":` guard, as for any spawned process (the benchmark modules have it).
  """

  def __init__(self, cls, *args, **kwargs):
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no JAX, no forked thread pools
    self._conn, child = ctx.Pipe()
    self._process = ctx.Process(target=_serve, args=(child, cls, args, kwargs), daemon=True)
    self._process.start()
    child.close()
    try:
      self.__dict__.update(self._call("attributes"))
    except RuntimeError:
      self.close()
      raise

  def _call(self, command: str, *args):
    try:
      self._conn.send((command, args))
      ok, value = self._conn.recv()
    except (EOFError, BrokenPipeError, ConnectionResetError) as e:
      raise RuntimeError(f"the benchmark's child process died (exit code {self._process.exitcode})") from e
    if not ok:
      raise RuntimeError(f"in the benchmark's child process:\n{value}")
    return value

  def run(self, steps: int) -> float:
    return self._call("run", steps)

  def loss(self) -> float:
    return self._call("loss")

  def close(self) -> None:
    if self._process.is_alive():
      self._conn.send(("close", ()))
      self._process.join(timeout=60)


def _serve(conn, cls, args, kwargs) -> None:
  import traceback
  error = None
  try:
    obj = cls(*args, **kwargs)
  except Exception:  # reported to the parent when it asks for the attributes
    obj, error = None, traceback.format_exc()
  while True:
    command, call_args = conn.recv()
    if command == "close":
      return
    try:
      if obj is None:
        raise RuntimeError(error)
      if command == "attributes":
        value = {k: v for k, v in vars(obj).items() if isinstance(v, (bool, int, float, str))}
        value["device"] = str(getattr(obj, "device", "cpu"))
      else:
        value = getattr(obj, command)(*call_args)
      conn.send((True, value))
    except Exception:
      conn.send((False, traceback.format_exc()))


def torch_setup(threads: int = 0):
  """Import torch with its intra-op threads set (default: the cores XLA uses) and return (torch, device)."""
  import torch
  torch.set_num_threads(threads or cpu_threads())
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if device.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True  # as XLA does for float32 matmuls on NVIDIA GPUs
    torch.backends.cudnn.allow_tf32 = True
  return torch, device


def torch_clip(config, device, seed: int = 0):
  """A randomly initialised `transformers.CLIPModel` of the same shape as a flyp_jax CLIPConfig.

  Attention is PyTorch's scaled_dot_product_attention (transformers' default 'sdpa'), its fastest built-in path.
  """
  import torch
  import transformers
  c = config
  act = "quick_gelu" if c.activation == "quick_gelu" else "gelu"
  hf = transformers.CLIPConfig(
      text_config=dict(hidden_size=c.text_width, intermediate_size=int(c.text_width * c.mlp_ratio),
                       num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads,
                       max_position_embeddings=c.context_length, vocab_size=c.vocab_size, hidden_act=act,
                       layer_norm_eps=c.layer_norm_eps),
      vision_config=dict(hidden_size=c.vision_width, intermediate_size=int(c.vision_width * c.mlp_ratio),
                         num_hidden_layers=c.vision_layers, num_attention_heads=c.vision_heads,
                         image_size=c.image_size, patch_size=c.patch_size, hidden_act=act,
                         layer_norm_eps=c.layer_norm_eps),
      projection_dim=c.embed_dim)
  torch.manual_seed(seed)
  try:
    model = transformers.CLIPModel._from_config(hf, attn_implementation="sdpa")
  except (TypeError, ValueError, AttributeError):
    model = transformers.CLIPModel(hf)
  return model.to(device)


def torch_features(out):
  """transformers 5 returns an output object from get_*_features (projection in pooler_output); 4.x a tensor."""
  return out if not hasattr(out, "pooler_output") else out.pooler_output


def synthetic_tokens(rng, batch: int, length: int, vocab: int):
  """Token ids [batch, length] int32: start token, random words, end token (the largest id) at a random place."""
  import numpy as np
  tokens = np.zeros((batch, length), np.int32)
  ends = rng.integers(length // 4, length, size=batch)
  for i, end in enumerate(ends):
    tokens[i, 0] = vocab - 2
    tokens[i, 1:end] = rng.integers(1, vocab - 2, size=end - 1)
    tokens[i, end] = vocab - 1
  return tokens


CAPTIONS = ("synthetic", "prompts")


def caption_tokens(kind: str, rng, batch: int, config, trimmed: bool):
  """Token ids [batch, L] int32 for a benchmark's captions.

  synthetic: `synthetic_tokens` over the full context (the same work for every framework).
  prompts: FLYP's ImageNet captions, OpenAI's 1000 class names x 80 templates, one random row per example;
    with `trimmed` cut to the longest row of the whole table as `flyp_jax.methods.flyp` does (22 tokens),
    otherwise padded to the full context as FLYP's PyTorch code feeds them (`clip.tokenize`, 77 tokens).
  """
  if kind == "synthetic":
    return synthetic_tokens(rng, batch, config.context_length, config.vocab_size)
  if kind != "prompts":
    raise ValueError(f"captions must be one of {CAPTIONS}, got {kind!r}")
  from flyp_jax.tokenizer import trim_padding
  table = _imagenet_prompts(config.context_length)
  if trimmed:
    table = trim_padding(table)
  return table[rng.integers(0, len(table), size=batch)]


@functools.lru_cache(maxsize=None)
def _imagenet_prompts(context_length: int):
  from flyp_jax.data import classnames, templates
  from flyp_jax.tokenizer import tokenize
  return tokenize([t.format(c) for c in classnames.get("imagenet") for t in templates.get("imagenet")],
                  context_length)
