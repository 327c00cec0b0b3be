"""Scalars of a run to TensorBoard event files (WORKDIR/tensorboard) and a JSON-lines file (WORKDIR/metrics.jsonl).

Written by process 0 only. Both go through `tf.io.gfile`, so a `gs://` workdir works as a local one.
"""

from __future__ import annotations

import json
import os

import jax


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
      if tf.io.gfile.exists(self.path):
        with tf.io.gfile.GFile(self.path) as f:
          kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
        with tf.io.gfile.GFile(self.path, "w") as f:
          f.write("".join(kept))
      self._summary = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled or not scalars:
      return
    values = {k: float(v) for k, v in scalars.items()}
    with self._tf.io.gfile.GFile(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")
    with self._summary.as_default(step=int(step)):
      for name, value in values.items():
        self._tf.summary.scalar(name, value)
    self._summary.flush()

  def close(self) -> None:
    if self._summary is not None:
      self._summary.close()
