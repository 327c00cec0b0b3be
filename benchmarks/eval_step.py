"""Zero-shot evaluation throughput: image encoding + zero-shot head + top-1 count, JAX against PyTorch.

  python -m benchmarks.eval_step --model=ViT-B/32 --batch=64 --framework=both
  python -m benchmarks.eval_step --model=ViT-B/16 --batch=512 --dtype=bfloat16 --framework=both   # GPU

JAX: what the evaluator's compiled step does per batch (`flyp_jax.evaluate._eval_step`): encode the batch
sharded over the data axis, L2-normalise, multiply by the zero-shot head [E, classes] (normalised class
embeddings times exp(logit_scale)), count top-1 hits. The batch is synthetic and already on the device, as
the evaluator's prefetched batches are; building the head from the text tower happens once per evaluation
and is not timed. PyTorch: the same computation under `torch.inference_mode()` (bfloat16 autocast on GPU
when --dtype=bfloat16). Timing as in benchmarks.train_step: windows of --steps batches, median of --repeats.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import common
from flyp_jax.flops import forward_flops, xla_flops

CLASSES = 1000  # ImageNet's zero-shot head


class JaxEval:
  def __init__(self, variant: str, batch: int, dtype: str = "float32", seed: int = 0):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from flyp_jax import models, parallel
    self.config = c = models.get_config(variant)
    model = models.create_model(c, dtype=dtype)
    mesh = parallel.make_mesh()
    parallel.local_batch_size(batch, mesh)
    rep = parallel.replicated(mesh)
    self.params = jax.jit(models.init_params, static_argnums=0, out_shardings=rep)(model, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    head = rng.normal(size=(c.embed_dim, CLASSES)).astype(np.float32)
    self.head = jax.device_put(head / np.linalg.norm(head, axis=0, keepdims=True) * 100.0, rep)
    self.data = parallel.global_batch({
        "image": rng.normal(size=(batch, c.image_size, c.image_size, 3)).astype(np.float32),
        "label": rng.integers(0, CLASSES, size=batch).astype(np.int32)}, mesh)

    def step(params, head, batch):
      features = models.normalize(model.apply({"params": params}, batch["image"], method=model.encode_image))
      logits = features @ head
      return jnp.sum(jnp.argmax(logits, axis=-1) == batch["label"])

    start = time.perf_counter()
    self.compiled = jax.jit(step, out_shardings=rep).lower(self.params, self.head, self.data).compile()
    self.compile_s = time.perf_counter() - start
    self.xla_flops = xla_flops(self.compiled)
    self.devices, self.platform, self.device_kind = mesh.size, jax.devices()[0].platform, jax.devices()[0].device_kind
    self._jax = jax
    self.run(1)

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    out = [self.compiled(self.params, self.head, self.data) for _ in range(steps)]
    self._jax.block_until_ready(out)
    return time.perf_counter() - start


class TorchEval:
  def __init__(self, variant: str, batch: int, dtype: str = "float32", threads: int = 0, seed: int = 0):
    import numpy as np

    from flyp_jax import models
    torch, device = common.torch_setup(threads)
    self.torch, self.device = torch, device
    c = models.get_config(variant)
    self.model = common.torch_clip(c, device, seed).eval()
    rng = np.random.default_rng(seed)
    head = rng.normal(size=(c.embed_dim, CLASSES)).astype(np.float32)
    self.head = torch.from_numpy(head / np.linalg.norm(head, axis=0, keepdims=True) * 100.0).to(device)
    self.images = torch.from_numpy(rng.normal(size=(batch, 3, c.image_size, c.image_size)).astype(np.float32)).to(device)
    self.labels = torch.from_numpy(rng.integers(0, CLASSES, size=batch)).to(device)
    self.autocast = dtype == "bfloat16"
    self.threads = torch.get_num_threads()
    start = time.perf_counter()
    self.run(1)
    self.compile_s = time.perf_counter() - start

  def run(self, steps: int) -> float:
    torch = self.torch
    start = time.perf_counter()
    hits = []
    with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
      for _ in range(steps):
        features = common.torch_features(self.model.get_image_features(pixel_values=self.images)).float()
        logits = torch.nn.functional.normalize(features, dim=-1) @ self.head
        hits.append((logits.argmax(-1) == self.labels).sum())
    torch.stack(hits).sum().item()  # synchronises (CUDA) and forces the work (CPU)
    return time.perf_counter() - start


def measure(variant: str = "ViT-B/32", batch: int = 64, steps: int = 5, repeats: int = 3, framework: str = "jax",
            dtype: str = "float32", peak_flops: float = 0.0, threads: int = 0) -> dict:
  if framework not in ("jax", "torch", "both"):
    raise ValueError(f"framework must be jax, torch or both, got {framework!r}")
  runners = {}
  if framework in ("jax", "both"):
    runners["jax"] = JaxEval(variant, batch, dtype)
  if framework in ("torch", "both"):
    runners["torch"] = common.InChildProcess(TorchEval, variant, batch, dtype, threads)
  times = common.alternate(runners, steps, repeats)

  from flyp_jax import models
  config = models.get_config(variant)
  # flyp_jax computes the last block at the class token only (see benchmarks/common.py); PyTorch at every token.
  flops = {name: forward_flops(config, batch, towers="image", pooled_last_block=name == "jax")["total"]
           + 2 * batch * config.embed_dim * CLASSES for name in runners}
  import jax
  devices = runners["jax"].devices if "jax" in runners else 1
  peak, source = common.peak_flops_per_device(jax.devices()[0].device_kind, jax.devices()[0].platform, dtype, peak_flops)
  result = {"benchmark": "eval_step", "model": variant, "batch": batch, "steps": steps, "repeats": repeats,
            "dtype": dtype, "classes": CLASSES, "analytic_flops_per_batch": flops.get("jax", flops.get("torch")),
            "peak_flops_per_device": peak,
            "peak_source": source, "devices": devices, "environment": common.environment(torch_too="torch" in runners)}
  for name, runner in runners.items():
    rates = [steps * batch / t for t in times[name]]
    rate = common.median(rates)
    result[name] = {"images_per_s": rate, "images_per_s_spread": common.spread(rates), "compile_s": runner.compile_s,
                    "mfu": flops[name] * rate / batch / (peak * devices), "analytic_flops_per_batch": flops[name]}
  if "jax" in runners:
    result.update(images_per_s=result["jax"]["images_per_s"], compile_s=result["jax"]["compile_s"],
                  mfu=result["jax"]["mfu"], xla_flops_per_batch_per_device=runners["jax"].xla_flops)
  if "torch" in runners:
    result["torch"].update(threads=runners["torch"].threads, device=runners["torch"].device,
                           autocast_bf16=runners["torch"].autocast)
    if "jax" in runners:
      result["speedup_vs_torch"] = result["jax"]["images_per_s"] / result["torch"]["images_per_s"]
      result["speedup_vs_torch_paired"] = common.spread([tt / tj for tj, tt in zip(times["jax"], times["torch"])])
    runners["torch"].close()
  return result


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default="ViT-B/32")
  p.add_argument("--batch", type=int, default=64, help="global evaluation batch")
  p.add_argument("--steps", type=int, default=5, help="timed batches per window")
  p.add_argument("--repeats", type=int, default=3, help="timed windows; the median is reported")
  p.add_argument("--framework", default="jax", choices=("jax", "torch", "both"))
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--peak_flops", type=float, default=0.0, help="peak FLOP/s per device (default: table/measured)")
  p.add_argument("--threads", type=int, default=0, help="PyTorch intra-op threads (default: the cores XLA uses)")
  p.add_argument("--json", action="store_true", help="print one JSON object on one line")
  a = p.parse_args(argv)
  result = measure(a.model, a.batch, a.steps, a.repeats, a.framework, a.dtype, a.peak_flops, a.threads)
  common.dump(result, a.json)
  return result


if __name__ == "__main__":
  main()
