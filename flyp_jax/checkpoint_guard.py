"""Checkpoints read and written safely: damaged ones set aside (never deleted) on resume, failed saves made clear.

Orbax writes a step into a temporary folder and renames it when complete, so a crash leaves the previous
checkpoint intact; what it does not cover is a complete checkpoint damaged afterwards (a bad disk, a partial copy
from a bucket) or a save that fails (a full disk). On resume, a step that cannot be read is moved to
`<step>.corrupt-<UTC time>` beside it and the next older one is tried; a save that fails stops the run naming the
newest complete step. A checkpoint of another model (different parameter names or shapes) is not damage: it is
refused with one paragraph and left where it is.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from flyp_jax import errors, files, models, parallel
from flyp_jax.models import converted


class WorkdirCheckpointError(errors.UserError, RuntimeError):
  """The workdir's checkpoints cannot be used or written; one paragraph naming them and what to do."""


def first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = text if len(text) <= 300 else text[:300] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def complete_steps(directory: str) -> list[int]:
  """The steps saved completely in an orbax folder (orbax gives a step its plain number only once it is whole)."""
  return sorted(int(n) for n in files.listdir(directory) if n.isdigit()) if files.exists(directory) else []


def set_aside(path: str, error: BaseException, what: str = "checkpoint") -> str:
  """Move `path` to `path.corrupt-<UTC time>` (process 0) and warn; every process calls this, after reading it."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  dst = f"{path.rstrip('/')}.corrupt-{stamp}"
  parallel.sync(f"set_aside:{path}")  # every process has finished reading it
  if jax.process_index() == 0:
    files.move(path, dst)
  parallel.sync(f"set_aside_done:{path}")
  logging.warning("%s %s cannot be read (%s): moved to %s", what, path, first_line(error), dst)
  print(f"warning: {what} {path} cannot be read ({first_line(error)}): moved aside to {dst} (kept, not deleted).",
        flush=True)
  return dst


def set_aside_if_damaged(final: str) -> None:
  """A finished run's final/ that does not load is set aside, so that it is written again from the checkpoints."""
  if converted.is_converted(final):  # else absent or half-written: written again
    final_readable(final)


def final_readable(final: str) -> bool:
  """Whether a finished run's final/ loads; if it does not, it is set aside (so that it can be written again)."""
  try:
    models.load_pretrained(final)
    failed = None
  except Exception as e:
    failed = e
  if not parallel.across_processes([failed is not None], reduce=np.max)[0]:
    return True
  set_aside(final, failed or RuntimeError("unreadable on another process"), "final parameters")
  return False


def _shapes(tree) -> collections.Counter:
  """(shape, dtype) of each array of `tree` (target arrays or orbax metadata), counted, ignoring containers."""
  leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape")]
  return collections.Counter((tuple(x.shape), str(np.dtype(x.dtype))) for x in leaves)


def _names(tree, prefix: str = "") -> dict[str, tuple]:
  """{'a/b/c': shape} of a tree of nested dicts (Flax parameters, or their orbax metadata)."""
  out = {}
  for key, value in (tree or {}).items():
    if isinstance(value, dict):
      out.update(_names(value, f"{prefix}{key}/"))
    elif hasattr(value, "shape"):
      out[f"{prefix}{key}"] = tuple(value.shape)
  return out


def _mismatch(metadata, target) -> Optional[str]:
  """What differs between a checkpoint's arrays and `target`'s (a few names), or None if they agree."""
  stored, wanted = _names(metadata.get("params")), _names(target.get("params"))
  if stored and stored != wanted:
    differ = sorted(set(stored) ^ set(wanted)) + sorted(k for k in set(stored) & set(wanted) if stored[k] != wanted[k])
    shown = ", ".join(f"{k} ({stored.get(k, 'absent')} saved, {wanted.get(k, 'absent')} now)" for k in differ[:4])
    return f"{len(differ)} parameters differ, e.g. {shown}"
  if _shapes(metadata) != _shapes(target):
    return "the optimiser state's arrays differ (other trainable or frozen parameters, or another optimiser)"
  return None


def _stored_tree(step_dir: str):
  """The saved tree of arrays' metadata (shapes, dtypes), read without the arrays."""
  # The manager's own item_metadata needs a handler registered by an earlier save, which a resumed run lacks.
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(os.path.join(step_dir, "default"))
  metadata = getattr(metadata, "item_metadata", metadata)
  return getattr(metadata, "tree", metadata)


def restore_latest(manager: ocp.CheckpointManager, target, what: str = "checkpoint", required: bool = True):
  """The newest readable step of `manager` restored into `target`'s structure and shardings, or `target` if none.

  Unreadable steps are set aside (warning with the error's first line); a checkpoint of another model raises
  WorkdirCheckpointError, as does a folder whose every step is unreadable when `required`. Every process calls this.
  """
  directory = os.fspath(manager.directory)
  set_aside_to = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      tree = _stored_tree(os.path.join(directory, str(step)))
    except Exception as e:  # its metadata is damaged: so is the checkpoint
      error = e
    else:
      problem = _mismatch(tree, target) if isinstance(tree, dict) else None
      if problem:
        raise WorkdirCheckpointError(
            f"the {what} step {step} in {directory} does not fit the model and optimiser configured now ({problem}): "
            f"nothing was run. Run with the settings the checkpoints were made with (see config.json in the "
            f"workdir), or choose a new --workdir.")
      error = None
      try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:
        error = e
    # All processes must agree: one that cannot read its part makes the step unusable for all.
    if not parallel.across_processes([error is not None], reduce=np.max)[0]:
      return restored
    set_aside_to.append(set_aside(os.path.join(directory, str(step)),
                                  error or RuntimeError("unreadable on another process"), f"{what} step {step}"))
    manager.reload()
  if set_aside_to and required:
    raise WorkdirCheckpointError(
        f"no {what} in {directory} can be read: each was moved aside ({', '.join(set_aside_to)}), nothing was run. "
        f"Restore a good copy of the checkpoints there (renamed back to their step number) to resume, or choose a "
        f"new --workdir to start again.")
  return target


def _size(path: str) -> int:
  """Bytes of the files under `path` (a local folder; 0 where it cannot be listed, e.g. a bucket)."""
  try:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, names in os.walk(path) for f in names)
  except OSError:
    return 0


def _complete_or_none(directory: str) -> list[int]:
  try:
    return complete_steps(directory)
  except Exception:  # not there yet, or unreadable: no complete step to name
    return []


def newest(directory: str) -> str:
  """The newest complete checkpoint in `directory`, in words for an error's paragraph."""
  complete = _complete_or_none(directory)
  return f"step {complete[-1]}, which running the same command again resumes from" if complete else "none yet"


class Saving:
  """A CheckpointManager whose failed saves (also those found later, as saves are asynchronous) stop the run
  with one paragraph naming the step, the error and the newest complete checkpoint. Other calls pass through."""

  def __init__(self, manager: ocp.CheckpointManager):
    self._manager, self._pending = manager, None

  def __getattr__(self, name: str) -> Any:
    return getattr(self._manager, name)

  def _failed(self, step: int, error: BaseException) -> WorkdirCheckpointError:
    directory = os.fspath(self._manager.directory)
    complete = _complete_or_none(directory)
    size = _size(os.path.join(directory, str(complete[-1]))) if complete else 0
    needs = f" Each checkpoint takes about {size / 2**20:.1f} MiB (step {complete[-1]}'s)." if size else ""
    # A full disk, however deep in orbax's or tensorstore's message it is said, in the paragraph's own words.
    reason = ("No space left on device: the workdir's storage is full" if files.is_disk_full(error)
              else first_line(error))
    return WorkdirCheckpointError(
        f"saving step {step} to {directory} failed ({reason}): training stopped. The complete checkpoints "
        f"are kept (the newest: {newest(directory)}) and the half-written step is ignored on resume.{needs} Make "
        f"room or fix access to the workdir's storage, then run again.")

  def save(self, step: int, *args, **kwargs):
    try:
      saved = self._manager.save(step, *args, **kwargs)
    except Exception as e:  # this step's or an earlier, still asynchronous save's error
      raise self._failed(self._pending if self._pending is not None else step, e) from e
    self._pending = step
    return saved

  def wait_until_finished(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._failed(self._pending, e) from e
