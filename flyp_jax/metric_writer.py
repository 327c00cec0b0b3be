"""Scalars of a run to TensorBoard event files (WORKDIR/tensorboard) and a JSON-lines file (WORKDIR/metrics.jsonl).

Written by process 0 only. Both go through `tf.io.gfile` for a `gs://` workdir. A full disk stops the run with
`errors.StorageFull`; the line it cut short is dropped when the run resumes (its step runs again).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from flyp_jax import files


class MetricWriter:
  """`write(step, {'train/loss': 0.3, ...})` appends one JSON line and one TensorBoard scalar per value."""

  def __init__(self, workdir: str, jsonl: str = "metrics.jsonl", resume_step: int = 0):
    """`resume_step`: the step a resumed run restarts from; JSON lines written after it are dropped, since
    those steps run again (TensorBoard shows the latest value written for a step)."""
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, jsonl)
    self._summary = None
    if self.enabled:
      import tensorflow as tf
      self._tf = tf
      if files.exists(self.path):
        with files.open_file(self.path) as f:
          kept = [line for line in f if _step(line) is not None and _step(line) <= resume_step]
        files.write_atomically(self.path, "".join(kept))
      self._summary = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled or not scalars:
      return
    values = {k: float(v) for k, v in scalars.items()}
    with files.open_file(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")
    with self._summary.as_default(step=int(step)):
      for name, value in values.items():
        self._tf.summary.scalar(name, value)
    self._summary.flush()

  def close(self) -> None:
    if self._summary is not None:
      self._summary.close()


def _step(line: str):
  """The step of a JSON line, or None for a line a full disk cut short (or an empty one)."""
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return None


class RunningMean:
  """The mean of each training metric over the steps since it was last read, summed on the devices.

  A logged loss is then the mean since the last log rather than one step's value, which on small batches says
  little; summing jax arrays adds no host sync to the steps in between.
  """

  def __init__(self):
    self._sum, self._count = None, 0

  def add(self, metrics: dict) -> None:
    self._sum = metrics if self._sum is None else jax.tree.map(jnp.add, self._sum, metrics)
    self._count += 1

  def read(self) -> dict:
    """{name: float mean} since the last read (empty if no step was added), and starts a new window."""
    if self._sum is None:
      return {}
    means = {k: float(v) / self._count for k, v in jax.device_get(self._sum).items()}
    self._sum, self._count = None, 0
    return means
