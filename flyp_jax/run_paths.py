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


def absolute(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """A copy of `config` whose paths to other runs are absolute, for code that is not given the workdir."""
  config = config.copy_and_resolve_references()
  config.unlock()
  if config.get("ft") and config.ft.get("lp_workdir"):
    config.ft.lp_workdir = resolve(workdir, config.ft.lp_workdir)
  if config.model.get("init") == "run":
    config.model.path = resolve(workdir, config.model.path)
  if config.get("at") and config.at.get("ensemble") and config.at.ensemble.get("path"):
    config.at.ensemble.path = resolve(workdir, config.at.ensemble.path)
  if config.get("wiseft") and config.wiseft.get("finetuned"):
    config.wiseft.finetuned = resolve(workdir, config.wiseft.finetuned)
  config.lock()
  return config
