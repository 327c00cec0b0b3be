"""The FLYP training step: examples/s after compilation, compile time and MFU, JAX against PyTorch.

  python -m benchmarks.train_step --model=ViT-B/32 --batch=32 --steps=10 --json               # JAX only
  python -m benchmarks.train_step --model=ViT-B/32 --batch=32 --steps=10 --framework=both     # + PyTorch, ratio
  python -m benchmarks.train_step --model=ViT-B/16 --batch=256 --dtype=bfloat16 --framework=both   # GPU
  python -m benchmarks.train_step --model=ViT-B/32 --batch=32 --captions=prompts --framework=both    # FLYP's captions

The JAX step is the training loop's own (`flyp_jax.train.make_train_step`, state from `train.init_state`) with
the contrastive loss of `flyp_jax.methods.pretrain` (FLYP's loss once the step has gathered each example's
prompt): both towers, L2-normalised features, `losses.sharded_clip_loss` over the mesh's data axis, the loop's
AdamW (`optim.make_optimizer`, FLYP's ImageNet rates), the logit-scale clamp, the state donated and sharded. The batch is synthetic and stays on the device (images [B, S, S, 3] and captions [B, L]); the
real step gathers each caption from a table of tokenised prompts, a gather that costs nothing next to the towers.

Captions (`--captions`): `synthetic` (default) gives both frameworks the same random 77-token rows, so the
ratio compares the frameworks on the same work. `prompts` uses FLYP's ImageNet captions as each code runs
them: JAX's rows cut to the longest of the 80,000 prompts (22 tokens) as `flyp_jax.methods.flyp` does,
PyTorch's padded to 77 as FLYP's code (`clip.tokenize`) feeds them; the text tower's cost follows the length,
so this ratio includes that difference of method (`text_length` in the JSON), not only of framework.

The PyTorch step is what FLYP's own code runs: `transformers.CLIPModel` of the same shape (SDPA attention),
the same symmetric contrastive loss, `torch.optim.AdamW` with the same hyperparameters, the same clamp; on GPU
with bfloat16 autocast when --dtype=bfloat16, on CPU in float32.

Timing: one untimed step (JAX: compilation; its time is `compile_s`, measured as lower + compile), then
`--repeats` windows of `--steps` steps each, each after one untimed step, synchronised only at the end of a
window; examples/s is the median over windows. With --framework=both the JAX and PyTorch windows alternate, so
both see the same machine load (`common.alternate`), and PyTorch runs in a child process (`common.InChildProcess`).
MFU = analytic training FLOPs per step (see benchmarks/common.py for the formula) x steps/s / (peak x devices).
"""

from __future__ import annotations

import argparse
import math
import time

from benchmarks import common
from flyp_jax.flops import forward_flops, train_flops, xla_flops

# FLYP's ImageNet recipe (configs/flyp.py:imagenet_b16); the values do not change the step's cost.
OPTIMIZER = dict(lr=1e-5, warmup_steps=500, weight_decay=0.1, b1=0.9, b2=0.999, eps=1e-8, grad_clip=0.0)
TOTAL_STEPS = 25_000


def loop_config(batch: int, seed: int = 0):
  """The training loop's config for this step: configs/common.py's fields, the optimiser above with the PyTorch
  side's parameter groups (no decay on biases, norms, embeddings, scale) and logit-scale clamp, one micro-batch."""
  from configs import common as configs_common
  config = configs_common.base("benchmark_train_step")
  config.update(method="pretrain", seed=seed, batch_size=batch, steps=TOTAL_STEPS, grad_accum_steps=1)
  config.optimizer.update(**OPTIMIZER, schedule="warmup_cosine", decay="matrices", clamp_logit_scale=True)
  return config


# --------------------------------------------------------------------------------------------------- JAX
class JaxStep:
  """The FLYP step, compiled, with its state and a device-resident synthetic batch. `run(n)` -> seconds."""

  def __init__(self, variant: str, batch: int, dtype: str = "float32", remat: bool = False, seed: int = 0,
               captions: str = "synthetic"):
    import jax
    import optax
    import numpy as np

    from flyp_jax import models, optim, parallel, train
    from flyp_jax.methods import pretrain

    self.config = models.get_config(variant)
    self.batch = batch
    model = models.create_model(self.config, dtype=dtype, remat=remat)
    mesh = parallel.make_mesh()
    parallel.local_batch_size(batch, mesh)
    params = {"clip": parallel.init_sharded(lambda: models.init_params(model, jax.random.key(seed)), mesh=mesh)}
    config = loop_config(batch, seed)
    tx = optim.make_optimizer(config, params, TOTAL_STEPS)
    state = train.init_state(params, tx, mesh)  # the loop's own state, born on the devices
    # The loop's step (train.make_train_step) with the contrastive loss of given captions (methods.pretrain: FLYP's
    # loss once its step has gathered each example's prompt).
    loss_fn = pretrain.make_loss(config, model, mesh)
    data_rng = np.random.default_rng(seed)
    c = self.config
    host = {"image": data_rng.normal(size=(batch, c.image_size, c.image_size, 3)).astype(np.float32),
            "tokens": common.caption_tokens(captions, data_rng, batch, c, trimmed=True)}
    self.text_length = host["tokens"].shape[1]
    self.data = parallel.global_batch(host, mesh)
    jitted = train.make_train_step(config, loss_fn, tx, mesh, state)
    start = time.perf_counter()
    self.compiled = jitted.lower(state, self.data).compile()
    self.compile_s = time.perf_counter() - start
    self.state = state
    self.metrics = None
    self.devices = mesh.size
    self.platform = jax.devices()[0].platform
    self.device_kind = jax.devices()[0].device_kind
    self._jax = jax
    # The forward pass alone, for the FLOP cross-check: the lowered program's cost analysis needs no compile
    # (it counts the whole, unpartitioned program; backends without it give None).
    self.xla_forward_flops = xla_flops(jax.jit(lambda p, b: loss_fn(p, b, None)[0]).lower(params, self.data))
    self.xla_step_flops = xla_flops(self.compiled)
    # The optimiser's update alone (AdamW on every parameter, replicated: each device computes all of it), which
    # the matmul formula leaves out: the step's count less this is the gradient's, comparable with the formula.
    update = lambda g, o, p: optax.apply_updates(p, tx.update(g, o, p)[0])
    self.xla_update_flops = xla_flops(jax.jit(update).lower(params, state["opt_state"], params))
    # The first execution pays for allocation and warm-up, not compilation; keep it out of the windows.
    self.run(1)

  def run(self, steps: int) -> float:
    """Seconds for `steps` steps, dispatched back to back and synchronised once at the end."""
    start = time.perf_counter()
    state, metrics = self.state, None
    for _ in range(steps):
      state, metrics = self.compiled(state, self.data)
    self._jax.block_until_ready(metrics)
    self.state, self.metrics = state, metrics
    return time.perf_counter() - start

  def loss(self) -> float:
    return float(self.metrics["loss"])


# ----------------------------------------------------------------------------------------------- PyTorch
class TorchStep:
  """The same step in PyTorch: transformers.CLIPModel, symmetric contrastive loss, AdamW, clamp."""

  def __init__(self, variant: str, batch: int, dtype: str = "float32", threads: int = 0, seed: int = 0,
               compile_model: bool = False, captions: str = "synthetic"):
    import numpy as np

    from flyp_jax import models
    torch, device = common.torch_setup(threads)
    self.torch, self.device, self.batch = torch, device, batch
    self.config = models.get_config(variant)
    c = self.config
    self.model = common.torch_clip(c, device, seed).train()
    # Parameter groups as optim.make_optimizer: no weight decay on biases, norms, embeddings' tables, scale.
    decay, no_decay = [], []
    for name, p in self.model.named_parameters():
      (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(p)
    o = OPTIMIZER
    self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=o["lr"], betas=(o["b1"], o["b2"]), eps=o["eps"])
    data_rng = np.random.default_rng(seed)
    images = data_rng.normal(size=(batch, 3, c.image_size, c.image_size)).astype(np.float32)
    tokens = common.caption_tokens(captions, data_rng, batch, c, trimmed=False)
    self.text_length = tokens.shape[1]
    self.images = torch.from_numpy(images).to(device)
    self.tokens = torch.from_numpy(tokens.astype(np.int64)).to(device)
    self.labels = torch.arange(batch, device=device)
    self.autocast = dtype == "bfloat16"
    self.max_log_scale = math.log(100.0)
    self.forward = torch.compile(self._forward) if compile_model else self._forward
    start = time.perf_counter()
    self.run(1)
    self.compile_s = time.perf_counter() - start  # first step: allocation (and torch.compile if asked)
    self.threads = torch.get_num_threads()

  def _forward(self):
    torch = self.torch
    F = torch.nn.functional
    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
      img = common.torch_features(self.model.get_image_features(pixel_values=self.images))
      txt = common.torch_features(self.model.get_text_features(input_ids=self.tokens))
    img = F.normalize(img.float(), dim=-1)
    txt = F.normalize(txt.float(), dim=-1)
    logits = self.model.logit_scale.exp() * img @ txt.T
    return (F.cross_entropy(logits, self.labels) + F.cross_entropy(logits.T, self.labels)) / 2

  def run(self, steps: int) -> float:
    torch = self.torch
    start = time.perf_counter()
    for _ in range(steps):
      loss = self.forward()
      self.opt.zero_grad(set_to_none=True)
      loss.backward()
      self.opt.step()
      with torch.no_grad():
        self.model.logit_scale.clamp_(0, self.max_log_scale)
    self._loss = loss.detach()
    if self.device.type == "cuda":
      torch.cuda.synchronize()
    else:
      self._loss.item()
    return time.perf_counter() - start

  def loss(self) -> float:
    return float(self._loss)


# ------------------------------------------------------------------------------------------------ driver
def measure(variant: str = "ViT-B/32", batch: int = 32, steps: int = 10, repeats: int = 3,
            framework: str = "jax", dtype: str = "float32", remat: bool = False, peak_flops: float = 0.0,
            threads: int = 0, torch_compile: bool = False, captions: str = "synthetic") -> dict:
  """Build the step(s), time `repeats` windows of `steps` steps (alternating frameworks), summarise."""
  if framework not in ("jax", "torch", "both"):
    raise ValueError(f"framework must be jax, torch or both, got {framework!r}")
  runners = {}
  if framework in ("jax", "both"):
    runners["jax"] = JaxStep(variant, batch, dtype, remat, captions=captions)
  if framework in ("torch", "both"):
    runners["torch"] = common.InChildProcess(TorchStep, variant, batch, dtype, threads, compile_model=torch_compile,
                                             captions=captions)
  times = common.alternate(runners, steps, repeats)

  from flyp_jax import models
  config = models.get_config(variant)
  # Each framework's own work: the text tower's cost follows its caption length, and flyp_jax computes the
  # towers' last block at the pooled token only.
  flops = {name: train_flops(config, batch, runner.text_length, pooled_last_block=name == "jax")
           for name, runner in runners.items()}
  result = {"benchmark": "train_step", "model": variant, "batch": batch, "steps": steps, "repeats": repeats,
            "dtype": dtype, "remat": remat, "captions": captions,
            "text_length": {name: runner.text_length for name, runner in runners.items()},
            "analytic_flops_per_step": flops.get("jax", flops.get("torch")),
            "environment": common.environment(torch_too="torch" in runners)}
  jax_runner = runners.get("jax")
  if jax_runner is not None:
    platform_name, kind, devices = jax_runner.platform, jax_runner.device_kind, jax_runner.devices
  else:
    import jax
    platform_name, kind, devices = jax.devices()[0].platform, jax.devices()[0].device_kind, 1
  peak, peak_source = common.peak_flops_per_device(kind, platform_name, dtype, peak_flops)
  result.update(peak_flops_per_device=peak, peak_source=peak_source, devices=devices)

  def summary(name, runner):
    rates = [steps * batch / t for t in times[name]]
    rate = common.median(rates)
    out = {"examples_per_s": rate, "examples_per_s_per_device": rate / devices, "step_s": batch / rate,
           "examples_per_s_spread": common.spread(rates), "compile_s": runner.compile_s,
           "mfu": flops[name] * rate / batch / (peak * devices), "analytic_flops_per_step": flops[name],
           "final_loss": runner.loss()}
    if not math.isfinite(out["final_loss"]):
      raise FloatingPointError(f"{name} step produced loss {out['final_loss']}")
    return out

  for name, runner in runners.items():
    result[name] = summary(name, runner)
  if jax_runner is not None:
    j = result["jax"]
    # Contract keys at the top level: the JAX step's numbers.
    result.update(examples_per_s=j["examples_per_s"], compile_s=j["compile_s"], mfu=j["mfu"])
    result["xla_flops_per_step_per_device"] = jax_runner.xla_step_flops
    # The forward pass is costed before partitioning (lowered, not compiled): a global count.
    result["xla_forward_flops"] = jax_runner.xla_forward_flops
    if jax_runner.xla_forward_flops:
      result["xla_over_analytic_forward"] = (jax_runner.xla_forward_flops /
                                             forward_flops(config, batch, jax_runner.text_length,
                                                                  pooled_last_block=True)["total"])
    if jax_runner.xla_step_flops:
      result["xla_over_analytic_step"] = jax_runner.xla_step_flops / (flops["jax"] / devices)
      result["xla_update_flops"] = jax_runner.xla_update_flops
      if jax_runner.xla_update_flops:  # the step without the optimiser's elementwise update
        result["xla_gradient_over_analytic_step"] = ((jax_runner.xla_step_flops - jax_runner.xla_update_flops)
                                                     / (flops["jax"] / devices))
  else:
    t = result["torch"]
    result.update(examples_per_s=t["examples_per_s"], compile_s=t["compile_s"], mfu=t["mfu"])
  if "torch" in runners:
    result["torch"]["threads"] = runners["torch"].threads
    result["torch"]["device"] = runners["torch"].device
    result["torch"]["autocast_bf16"] = runners["torch"].autocast
    if jax_runner is not None:
      result["speedup_vs_torch"] = result["jax"]["examples_per_s"] / result["torch"]["examples_per_s"]
      # Per-window ratios of adjacent windows: less sensitive to slow drifts in machine load.
      pairs = [tt / tj for tj, tt in zip(times["jax"], times["torch"])]
      result["speedup_vs_torch_paired"] = common.spread(pairs)
    runners["torch"].close()
  return result


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="ViT-B/32", help="CLIP variant, e.g. ViT-B/32, ViT-B/16, ViT-T/8")
  p.add_argument("--batch", type=int, default=32, help="global batch size")
  p.add_argument("--steps", type=int, default=10, help="timed steps per window")
  p.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported")
  p.add_argument("--framework", default="jax", choices=("jax", "torch", "both"))
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype (JAX model dtype; PyTorch bfloat16 autocast)")
  p.add_argument("--remat", action="store_true", help="rematerialise each residual block in the backward pass")
  p.add_argument("--peak_flops", type=float, default=0.0, help="peak FLOP/s per device for MFU (default: table/measured)")
  p.add_argument("--threads", type=int, default=0, help="PyTorch intra-op threads (default: the cores XLA uses)")
  p.add_argument("--torch_compile", action="store_true", help="torch.compile the PyTorch forward pass")
  p.add_argument("--captions", default="synthetic", choices=common.CAPTIONS,
                 help="synthetic: the same 77-token rows for both; prompts: FLYP's ImageNet prompts as each code "
                      "runs them (JAX cut to the longest prompt, PyTorch padded to 77)")
  p.add_argument("--json", action="store_true", help="print one JSON object on one line")
  a = p.parse_args(argv)
  result = measure(a.model, a.batch, a.steps, a.repeats, a.framework, a.dtype, a.remat, a.peak_flops, a.threads,
                   a.torch_compile, a.captions)
  common.dump(result, a.json)
  return result


if __name__ == "__main__":
  main()
