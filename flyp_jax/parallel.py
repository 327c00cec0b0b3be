"""Device mesh, shardings and global batches.

One mesh with a `data` axis (batch) and a `model` axis (parameter sharding for large models; size 1 by
default). Axes are `Auto`: with jax's default explicit axes, `img @ txt.T` on batch-sharded arrays fails
with a ShardingTypeError, and we want XLA to place the collectives.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
from typing import Iterator, Optional, Sequence

import jax
import numpy as np
from jax._src import distributed as _distributed  # the job's coordination client (as multihost_utils uses it)
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from flyp_jax import errors

DATA, MODEL = "data", "model"


def initialize(distributed: bool = False, coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None) -> None:
  """Start JAX's multi-controller runtime when this is one of several processes of a job.

  On a Cloud TPU pod slice (one process per host) `distributed=True` is enough: JAX finds the other hosts. Elsewhere
  give the coordinator's host:port, the number of processes and this one's id (or the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). Without any of these nothing happens: one process.
  Must run before anything touches a device.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not (distributed or coordinator_address):
    return
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  # CPU devices of different processes talk over gloo (the default CPU backend has no cross-process collectives);
  # the setting does not affect TPU or GPU devices.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info("Process %d of %d, %d of %d devices local.", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def shutdown() -> None:
  """Leave JAX's multi-controller runtime once every process calls this (nothing to do with one process)."""
  if jax.process_count() > 1:
    jax.distributed.shutdown()


_INPUT_ERROR_KEY = "flyp_jax/input_error"
_told: list = []  # this process's own input error, once told


def tell_input_error(error: BaseException) -> None:
  """Publish, for every process of the job, that this one's input failed with `error` (a user error whose
  paragraph the others print too): through the coordination service, which every process reaches."""
  _told.append(error)
  try:
    _distributed.global_state.client.key_value_set(_INPUT_ERROR_KEY, str(error))
  except Exception:  # another process told its own first
    pass


def told_input_error():
  """The input error a process of the job told (this one's own, else another's as an `errors.BadValue`), or
  None. Only meaningful with several processes."""
  if _told:
    return _told[0]
  if jax.process_count() == 1:
    return None
  try:
    message = _distributed.global_state.client.key_value_try_get(_INPUT_ERROR_KEY)
  except Exception:  # not set
    return None
  return errors.BadValue(message)


def across_processes(values, reduce=np.sum) -> np.ndarray:
  """`reduce` over processes of each of `values` (int64); every process must call this at the same point."""
  values = np.asarray(values, np.int64)
  if jax.process_count() == 1:
    return values
  return reduce(multihost_utils.process_allgather(values), axis=0)


def sync(name: str) -> None:
  """Wait until every process gets here (nothing to wait for with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def to_host(tree):
  """Numpy copies of a tree of (global) arrays, on every process, however the arrays are split over processes."""
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)


def make_mesh(model: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A (data, model) mesh over all devices (or `devices`): data = n_devices // model."""
  devices = list(devices if devices is not None else jax.devices())
  if model < 1 or len(devices) % model:
    raise errors.BadValue(f"model axis of size {model} does not divide the {len(devices)} devices")
  return jax.make_mesh((len(devices) // model, model), (DATA, MODEL), axis_types=(AxisType.Auto,) * 2,
                       devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


# The key under which a transformer keeps its blocks stacked for `nn.scan` (`model.scan_layers`; used by
# flyp_jax.models.transformer, named here so that the sharding rule reads it without importing a model).
SCANNED = "resblocks_scanned"


def param_sharding(x, mesh: Mesh, stacked: bool = False) -> NamedSharding:
  """Where a parameter (or an optimiser moment of its shape) lives: split over the `model` axis.

  The largest dimension that the model axis divides is split (ZeRO-3 / FSDP style: each device stores
  1/model of the array, XLA gathers it where a layer needs it); arrays with no such dimension, scalars
  and a model axis of size 1 stay replicated. `stacked`: the leading axis indexes scanned blocks
  (`model.scan_layers`), which the loop slices one at a time: never split.
  """
  n, shape = mesh.shape[MODEL], np.shape(x)
  for dim in sorted(range(int(stacked), len(shape)), key=lambda d: -shape[d]):
    if n > 1 and shape[dim] % n == 0:
      return NamedSharding(mesh, P(*(MODEL if d == dim else None for d in range(len(shape)))))
  return replicated(mesh)


def state_shardings(tree, mesh: Mesh):
  """`param_sharding` of every leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s); leaves under a scanned stack of
  blocks (`models.transformer.SCANNED`, also inside optimiser states) keep their layer axis whole."""
  stacked = lambda path: any(getattr(k, "key", None) == SCANNED for k in path)
  return jax.tree.map_with_path(lambda p, x: param_sharding(x, mesh, stacked(p)), tree)


def shard_state(tree, mesh: Mesh):
  """`tree` (parameters, optimiser state, step) put on the mesh with `param_sharding` for every leaf. From host
  memory (a loaded checkpoint) each device receives only its shard; the whole tree is never on one device."""
  return jax.device_put(tree, state_shardings(tree, mesh))


def sharded_initializer(init_fn, *args, mesh: Mesh):
  """`init_fn` (a pure initialiser: random parameters, an optimiser's state) jitted with `param_sharding` outputs
  for `args` (arrays or `abstract` ones), so each device computes and holds only its share of the result."""
  return jax.jit(init_fn, out_shardings=state_shardings(jax.eval_shape(init_fn, *args), mesh))


def init_sharded(init_fn, *args, mesh: Mesh):
  """`init_fn(*args)` born sharded (`sharded_initializer`)."""
  return sharded_initializer(init_fn, *args, mesh=mesh)(*args)


def abstract(tree, shardings):
  """`jax.ShapeDtypeStruct`s of `tree`'s leaves (arrays or shapes) placed by `shardings` (a tree of them, or one
  for every leaf): what `jit(...).lower` takes to compile for devices that hold no data (`compile_only`)."""
  if not isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=shardings), tree)


def compile_only(mesh: Mesh) -> bool:
  """Whether `mesh` is made of devices that programs can be compiled for but not run on (a TPU topology's, as
  `flyp_jax.tpu_plan` uses on a host without TPUs)."""
  device = mesh.devices.flat[0]
  try:
    return device not in jax.devices(device.platform)
  except RuntimeError:  # no runtime for that platform here
    return True


def constant(x: np.ndarray, mesh: Mesh):
  """A host array a jitted function closes over, replicated on the mesh's devices; on a `compile_only` mesh the
  array itself (a constant of the compiled program, as it cannot be put on those devices)."""
  return np.asarray(x) if compile_only(mesh) else jax.device_put(x, replicated(mesh))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch; the batch must split evenly over the data axis."""
  n_data = mesh.shape[DATA]
  if global_batch_size % n_data:
    raise errors.BadValue(f"batch size {global_batch_size} is not divisible by the {n_data} devices of the data axis; "
                     f"use a multiple of {n_data}")
  return global_batch_size // jax.process_count()


def ahead(batches: Iterator, n: int = 1) -> Iterator:
  """`batches` with `n` more already made when one is handed out: the next global batch is read and its copy to the
  devices issued (`global_batch` is asynchronous) before the step on the current one is dispatched, so the copy
  overlaps that step and whatever the loop blocks on after it (a log line, a checkpoint). The order is unchanged; a
  stream that stops early leaves its made-ahead batches unused (a resumed run makes its stream again from its step)."""
  made = collections.deque(itertools.islice(batches, n))
  for batch in batches:
    made.append(batch)
    yield made.popleft()
  yield from made


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local numpy arrays (leading axis = local batch) -> global jax.Arrays sharded over `data`."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
