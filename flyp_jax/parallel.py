"""Device mesh, shardings and global batches.

One mesh with a `data` axis (batch) and a `model` axis (parameter sharding for large models; size 1 by
default). Axes are `Auto`: with jax's default explicit axes, `img @ txt.T` on batch-sharded arrays fails
with a ShardingTypeError, and we want XLA to place the collectives.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"


def make_mesh(model: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A (data, model) mesh over all devices (or `devices`): data = n_devices // model."""
  devices = list(devices if devices is not None else jax.devices())
  if model < 1 or len(devices) % model:
    raise ValueError(f"model axis of size {model} does not divide the {len(devices)} devices")
  return jax.make_mesh((len(devices) // model, model), (DATA, MODEL), axis_types=(AxisType.Auto,) * 2,
                       devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_sharding(x, mesh: Mesh) -> NamedSharding:
  """Where a parameter (or an optimiser moment of its shape) lives: split over the `model` axis.

  The largest dimension that the model axis divides is split (ZeRO-3 / FSDP style: each device stores
  1/model of the array, XLA gathers it where a layer needs it); arrays with no such dimension, scalars
  and a model axis of size 1 stay replicated.
  """
  n, shape = mesh.shape[MODEL], np.shape(x)
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if n > 1 and shape[dim] % n == 0:
      return NamedSharding(mesh, P(*(MODEL if d == dim else None for d in range(len(shape)))))
  return replicated(mesh)


def shard_state(tree, mesh: Mesh):
  """`tree` (parameters, optimiser state, step) put on the mesh with `param_sharding` for every leaf."""
  return jax.device_put(tree, jax.tree_util.tree_map(lambda x: param_sharding(x, mesh), tree))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch; the batch must split evenly over the data axis."""
  n_data = mesh.shape[DATA]
  if global_batch_size % n_data:
    raise ValueError(f"batch size {global_batch_size} is not divisible by the {n_data} devices of the data axis; "
                     f"use a multiple of {n_data}")
  return global_batch_size // jax.process_count()


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local numpy arrays (leading axis = local batch) -> global jax.Arrays sharded over `data`."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
