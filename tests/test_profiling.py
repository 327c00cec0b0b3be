"""`config.profile_steps`: a profiler trace of the steps after the first (compiling) one, for TensorBoard."""

import glob
import os

import jax
import jax.numpy as jnp

from flyp_jax import profiling


def test_traces_the_steps_after_the_first_into_the_workdir(tmp_path, capsys):
  step_fn = jax.jit(lambda x: x @ x.T)
  x = jnp.ones((64, 64))
  trace = profiling.StepTrace(str(tmp_path), steps=2, first=0, total=5)
  started = []
  for step in range(5):
    trace.before_step(step)
    started.append(trace.active)
    out = step_fn(x)
    trace.after_step(step, out)
  assert started == [False, True, True, False, False]  # steps 2 and 3 (1-based): after the compiling one
  assert glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert "profile of steps 2-3" in capsys.readouterr().out


def test_no_trace_by_default_or_past_the_end(tmp_path):
  for steps, first, total in ((0, 0, 5), (3, 4, 5)):  # off; a resumed run with no step left after the first
    trace = profiling.StepTrace(str(tmp_path), steps=steps, first=first, total=total)
    for step in range(first, total):
      trace.before_step(step)
      assert not trace.active
  assert not os.path.exists(tmp_path / "tensorboard")
