"""What runs need from each other: whether a run has finished, the parameters it reports, running it when not.

One rule says whether a run has finished (`finished`). `results_of` reuses a finished run's results or runs it (the
seeds of a sweep, the comparison's and few-shot's runs), and `ensure_trained` makes sure a training run another
one builds on (a pretraining cycle, WiSE-FT's fine-tuned run, attention transfer's teacher) has written its
final/. Whatever starts a run is passed in (`train.run`, `train.dispatch`), so methods and commands use this module
without importing the loop.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from flyp_jax import checkpoint_guard, commands, configs_lib, files, methods, models
from flyp_jax.models import converted

RESULTS = "results.json"  # what every training run and command writes last (atomically), its results


def final_dir(run_dir: str) -> str:
  return os.path.join(run_dir, "final")


def selected_dir(run_dir: str) -> str:
  """The loadable parameters a finished run reports: `selected/` when selection picked an earlier step, else
  `final/`."""
  selected = os.path.join(run_dir, "selected")
  return selected if converted.is_converted(selected) else final_dir(run_dir)


def reported_params(run_dir: str, model_config=None) -> tuple[object, dict]:
  """(model, {'clip': params, 'head': head}) of the checkpoint a finished run reports (`selected_dir`); no 'head'
  for a run without one (FLYP, its ablation). `model_config`: a config's `model`, whose dtype, remat and layout
  (`models.build_options`) the model is built with; None: float32, per layer."""
  reported = selected_dir(run_dir)
  model, clip = models.load_pretrained(reported, **(models.build_options(model_config) if model_config else {}))
  head = os.path.join(reported, "head.npz")
  return model, {"clip": clip, **({"head": files.load_npz(head)} if files.exists(head) else {})}


def result_file(method: str) -> str:
  """The file whose presence says that a run of `method` has finished: results.json, or a command's own."""
  return commands.RESULT_FILES.get(method, RESULTS)


def finished(run_dir: str, steps: Optional[int] = None, result: str = RESULTS) -> bool:
  """Whether the run in `run_dir` has finished: its `result` file is there (written last, whole or absent) and,
  for a training run of `steps` steps, its final/ is complete (the marker written last) and its newest complete
  checkpoint is step `steps` (a run given more steps than it trained resumes)."""
  if not files.exists(os.path.join(run_dir, result)):
    return False
  if steps is None:
    return True
  newest = checkpoint_guard.complete_steps(os.path.join(run_dir, "checkpoints"))
  return converted.is_converted(final_dir(run_dir)) and bool(newest) and newest[-1] == steps


def results_of(config, run_dir: str, runner: Callable[[object, str], dict]) -> dict:
  """The results of `config`'s run in `run_dir`: read back when it has finished, else `runner(config, run_dir)`
  (which resumes what it had begun). A training run's length counts (`finished`); one whose length is given in
  epochs is left to the loop, which knows its steps and reports a finished run without training again."""
  training = config.method in methods.NAMES
  if training and config.total_epochs:
    return runner(config, run_dir)
  result = os.path.join(run_dir, result_file(config.method))
  if not finished(run_dir, config.steps if training else None, result_file(config.method)):
    returned = runner(config, run_dir)
    return files.read_json(result) if files.exists(result) else returned
  return files.read_json(result)


def ensure_trained(run_dir: str, spec: str, runner: Callable[[object, str], dict], what: str,
                   load: Callable[[str], object] = configs_lib.load) -> bool:
  """Whether the training run in `run_dir` (`what`: the field that names it) has a complete final/, run first with
  the config `spec` (loaded by `load`) when it has not ('': not run). A final/ that does not load is set aside
  first, so that its run writes it again from its checkpoints."""
  checkpoint_guard.set_aside_if_damaged(final_dir(run_dir))
  if converted.is_converted(final_dir(run_dir)):
    return True
  if not spec:
    return False
  print(f"{what} {run_dir} has not finished: running {spec} there first", flush=True)
  runner(load(spec), run_dir)
  return True
