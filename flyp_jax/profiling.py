"""A profiler trace of a few training steps (`config.profile_steps`), for TensorBoard's profile tab.

The trace starts after the first step of the run (or of a resumed run), which compiles, so it shows steady
steps; it is written to WORKDIR/tensorboard/plugins/profile/<time>/, where `tensorboard --logdir WORKDIR` finds it.
"""

from __future__ import annotations

import os

import jax


class StepTrace:
  """Traces steps `first + 1` .. `first + steps` (0-based step indices; none if `steps` is 0)."""

  def __init__(self, workdir: str, steps: int, first: int, total: int):
    self.logdir = os.path.join(workdir, "tensorboard")
    self.start, self.stop = first + 1, min(first + 1 + steps, total)
    self.enabled, self.active = steps > 0 and self.start < total, False

  def before_step(self, step: int) -> None:
    if self.enabled and step == self.start:
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after_step(self, step: int, outputs) -> None:
    """After step `step` (0-based) has been dispatched; `outputs` are waited for so the trace holds its work."""
    if self.active and step + 1 == self.stop:
      jax.block_until_ready(outputs)
      self.close()
      print(f"profile of steps {self.start + 1}-{self.stop}: {self.logdir} (TensorBoard's profile tab)", flush=True)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
