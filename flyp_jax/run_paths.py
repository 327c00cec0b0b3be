"""Where a run finds the other runs it builds on: one rule for every such path.

`ft.lp_workdir` (LP-FT's linear probe), `wiseft.finetuned` (WiSE-FT's fine-tuned run), `model.path` with
`model.init='run'`, `at.ensemble.path` (attention transfer's teacher) and the comparison's sub-runs name other
runs' workdirs. A relative one is relative to the parent of this run's workdir, i.e. beside it: every
command's default workdir is workdirs/<config name>, so the default names (`lp_demo`, `ft_demo`) are the runs
the single-method commands make, and runs given a custom --workdir keep their companions beside it. Absolute
and gs:// paths are used as they are. Paths that are not runs (a checkpoint file in `model.path`,
`data.data_dir`) are relative to the working directory, as any command-line path.
"""

from __future__ import annotations

import os

import ml_collections

from flyp_jax import files


def base(workdir: str) -> str:
  """The directory relative run paths start from: the parent of `workdir`."""
  return os.path.dirname(files.absolute(os.fspath(workdir)).rstrip("/"))


def resolve(workdir: str, path: str) -> str:
  """`path` of another run, for the run in `workdir` ('' stays '': no run)."""
  return files.join(base(workdir), path) if path else path


def absolute(config: ml_collections.ConfigDict, workdir: str, fields=()) -> ml_collections.ConfigDict:
  """A copy of `config` whose paths to other runs are absolute, for code that is not given the workdir: `fields`
  (dotted names, those a method names: `methods.Method.run_paths`) and `model.path` with `model.init='run'`."""
  config = config.copy_and_resolve_references()
  config.unlock()
  for field in (*fields, *(("model.path",) if config.model.init == "run" else ())):
    *parents, name = field.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = resolve(workdir, node[name])
  config.lock()
  return config
