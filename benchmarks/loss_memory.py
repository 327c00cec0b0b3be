"""Compiled peak memory of the sharded contrastive loss (value and gradient) as the global batch grows.

  python -m benchmarks.loss_memory                      # 8 simulated CPU devices, global batch 256 .. 32768
  python -m benchmarks.loss_memory --devices=8 --batches=256,1024,4096 --embed_dim=512
  python -m benchmarks.loss_memory --block=256          # the blockwise loss (flyp.loss_block): linear in B
  python -m benchmarks.loss_memory --batches=4096 --block=512 --time   # also: seconds, blocks vs none

For each global batch B, `jax.value_and_grad` of `losses.sharded_clip_loss` over (image features, text
features, scale), features [B, E] float32 sharded over the data axis of a mesh of --devices devices, is lowered
and compiled (never executed), and XLA's `memory_analysis()` gives the per-device temporary buffer size: the
loss's working memory on top of its inputs and outputs. Each device holds logits for its B_local = B / devices
rows against all B columns, in both directions, so the prediction is temp ~ c * B_local * B_global * 4 bytes
with a constant c (how many [B_local, B] float32 arrays are live at the peak) plus the gathered features
(2 * B * E * 4 bytes). The output lists temp / (B_local * B_global * 4 bytes), which should settle to c.

At a fixed device count this is quadratic in B (linear in B_global at fixed B_local, i.e. when the device count
grows with the batch, as in CLIP pretraining); see RESULTS.md. With --block=K the columns are scored K at a time
(`sharded_clip_loss(..., block=K)`), and the temporary memory is linear in B at a fixed device count.

Device count: simulated CPU devices are made with XLA_FLAGS before JAX is imported; when JAX was imported
earlier (tests), the devices that exist are used, as many as --devices.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks import common

DEFAULT_BATCHES = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def _simulate_devices(n: int) -> None:
  if "jax" in sys.modules:
    return
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
  os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def measure(batches=DEFAULT_BATCHES, devices: int = 8, embed_dim: int = 512, block: int = 0) -> dict:
  _simulate_devices(devices)
  import jax
  import jax.numpy as jnp

  from flyp_jax import losses, parallel
  available = jax.devices()
  if len(available) < devices:
    raise RuntimeError(f"need {devices} devices, have {len(available)}: set "
                       f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before JAX is imported")
  mesh = parallel.make_mesh(devices=available[:devices])
  shard, rep = parallel.data_sharding(mesh), parallel.replicated(mesh)
  fn = jax.jit(jax.value_and_grad(lambda i, t, s: losses.sharded_clip_loss(i, t, s, mesh, block=block), argnums=(0, 1, 2)))
  rows = []
  for b in batches:
    feats = jax.ShapeDtypeStruct((b, embed_dim), jnp.float32, sharding=shard)
    scale = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)
    mem = fn.lower(feats, feats, scale).compile().memory_analysis()
    b_local = b // devices
    unit = b_local * b * 4  # one [B_local, B] float32 array
    rows.append({"global_batch": b, "local_batch": b_local, "temp_bytes": int(mem.temp_size_in_bytes),
                 "argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
                 "logits_block_bytes": unit, "temp_over_logits_block": mem.temp_size_in_bytes / unit,
                 "gathered_features_bytes": 2 * b * embed_dim * 4})
  # Growth exponent in B between consecutive sizes: 2 means quadratic (B_local x B_global at fixed devices).
  for prev, row in zip(rows, rows[1:]):
    import math
    row["growth_exponent"] = math.log(row["temp_bytes"] / prev["temp_bytes"]) / math.log(
        row["global_batch"] / prev["global_batch"])
  return {"benchmark": "loss_memory", "devices": devices, "embed_dim": embed_dim, "block": block, "rows": rows,
          "environment": common.environment()}


def time_blocks(batch: int, block: int, devices: int = 8, embed_dim: int = 512, repeats: int = 5) -> dict:
  """Seconds per value_and_grad of the loss, columns `block` at a time vs all at once: medians of `repeats`
  alternating calls in this process, so both see the same machine load."""
  _simulate_devices(devices)
  import time

  import jax
  import numpy as np

  from flyp_jax import losses, parallel
  mesh = parallel.make_mesh(devices=jax.devices()[:devices])
  feats = np.random.default_rng(0).standard_normal((batch, embed_dim)).astype(np.float32) / np.sqrt(embed_dim)
  feats = jax.device_put(feats, parallel.data_sharding(mesh))
  fns = {b: jax.jit(jax.value_and_grad(lambda i, t, s, b=b: losses.sharded_clip_loss(i, t, s, mesh, block=b),
                                       argnums=(0, 1, 2))) for b in (0, block)}
  seconds = {b: [] for b in fns}
  for b, fn in fns.items():
    jax.block_until_ready(fn(feats, feats, 50.0))  # compile
  for _ in range(repeats):
    for b, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(feats, feats, 50.0))
      seconds[b].append(time.perf_counter() - start)
  none_s, block_s = (float(np.median(seconds[b])) for b in (0, block))
  return {"global_batch": batch, "block": block, "seconds_no_blocks": none_s, "seconds_blocks": block_s,
          "blocks_over_no_blocks": block_s / none_s}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--devices", type=int, default=8, help="simulated devices (data axis)")
  p.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="comma-separated global batches")
  p.add_argument("--embed_dim", type=int, default=512, help="feature width (ViT-B: 512)")
  p.add_argument("--block", type=int, default=0, help="columns scored at a time (0: all)")
  p.add_argument("--time", action="store_true", help="also time the loss with --block against no blocks, at "
                 "the largest of --batches")
  p.add_argument("--json", action="store_true", help="print one JSON object on one line")
  a = p.parse_args(argv)
  batches = tuple(int(b) for b in a.batches.split(","))
  result = measure(batches, a.devices, a.embed_dim, a.block)
  if a.time:
    if not a.block:
      p.error("--time compares --block=K with no blocks: give --block")
    result["timing"] = time_blocks(max(batches), a.block, a.devices, a.embed_dim)
  common.dump(result, a.json)
  return result


if __name__ == "__main__":
  main()
