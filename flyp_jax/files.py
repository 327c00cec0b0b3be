"""Files of a run, in a local directory or a bucket (`gs://...`): what the loop and the methods read and write.

A pod's hosts share no disk, so their workdir is a bucket; local paths keep plain `os` calls, and paths with a
scheme go through `tf.io.gfile` (imported only then). Orbax reads and writes buckets itself.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import uuid
from typing import Any

import numpy as np

from flyp_jax import errors


def is_remote(path: str) -> bool:
  return "://" in os.fspath(path)


def absolute(path: str) -> str:
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def join(workdir: str, path: str) -> str:
  """`path` if it is absolute (or a bucket path), else `path` inside `workdir`."""
  return path if is_remote(path) or os.path.isabs(path) else os.path.join(os.fspath(workdir), path)


def _gfile():
  import tensorflow as tf
  return tf.io.gfile


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def makedirs(path: str) -> None:
  _gfile().makedirs(path) if is_remote(path) else os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  return [p.rstrip("/") for p in _gfile().listdir(path)] if is_remote(path) else os.listdir(path)


def rmtree(path: str) -> None:
  if is_remote(path):
    _gfile().rmtree(path)
  else:
    import shutil
    shutil.rmtree(path)


def remove(path: str) -> None:
  _gfile().remove(path) if is_remote(path) else os.remove(path)


def move(src: str, dst: str) -> None:
  """Rename a file or directory; in a bucket, which cannot rename directories, copy each file then delete."""
  if not is_remote(src):
    os.rename(src, dst)
    return
  gfile = _gfile()
  if not gfile.isdir(src):
    gfile.rename(src, dst)
    return
  copied = []
  for root, _, names in gfile.walk(src):
    target = dst + root[len(src):]
    gfile.makedirs(target)
    for name in names:
      gfile.copy(f"{root.rstrip('/')}/{name}", f"{target.rstrip('/')}/{name}")
      copied.append(f"{root.rstrip('/')}/{name}")
  for path in copied:  # only once every file has its copy
    gfile.remove(path)
  try:  # folder placeholders some stores keep; the files themselves are gone already
    gfile.rmtree(src)
  except Exception:
    pass


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` says the storage is full, as the OS does (ENOSPC) or as a library words it."""
  return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


@contextlib.contextmanager
def writing(path: str):
  """A `with` block that writes `path` (a file or a folder, by any library): if the storage is full, however the
  error is worded (OSError, tensorstore, tf.errors), it is `errors.StorageFull` naming `path`."""
  try:
    yield
  except errors.StorageFull:
    raise
  except Exception as e:
    if is_disk_full(e):
      raise errors.StorageFull(path) from e
    raise


@contextlib.contextmanager
def open_file(path: str, mode: str = "r"):
  """The file, for a `with` block; writes (`w`, `a` modes) are `writing(path)`, closing included."""
  with writing(path) if mode[0] in "wa" else contextlib.nullcontext(), _open(path, mode) as f:
    yield f


def _open(path: str, mode: str):
  return _gfile().GFile(path, mode) if is_remote(path) else open(path, mode)


def write_atomically(path: str, data) -> None:
  """`data` (str or bytes) as the file `path`, whole or not at all: written beside it, then renamed over it,
  so a reader (a resumed run) never finds half a file, whatever stopped the write."""
  partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
  try:
    with writing(path), _open(partial, "wb" if isinstance(data, bytes) else "w") as f:
      f.write(data)
    if is_remote(path):
      _gfile().rename(partial, path, overwrite=True)
    else:
      os.replace(partial, path)
  except BaseException:
    with contextlib.suppress(Exception):
      remove(partial)
    raise


def write_json(path: str, obj: Any) -> None:
  write_atomically(path, json.dumps(obj, indent=2, sort_keys=True))


def read_json(path: str, default: Any = None) -> Any:
  if not exists(path):
    return default
  with open_file(path) as f:
    return json.load(f)


def save_npz(path: str, arrays: dict) -> None:
  buffer = io.BytesIO()  # np.savez seeks, which bucket files cannot
  np.savez(buffer, **arrays)
  write_atomically(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
  with open_file(path, "rb") as f:
    return dict(np.load(io.BytesIO(f.read())))


def check_writable(workdir: str) -> None:
  """Create `workdir` and write a file there, or raise one clear error before any work is done."""
  probe = os.path.join(os.fspath(workdir), f".write_test_{uuid.uuid4().hex}")
  try:
    makedirs(workdir)
    with open_file(probe, "w") as f:
      f.write("ok")
    remove(probe)
  except Exception as e:  # OSError locally; tf.errors.* for buckets
    raise errors.NotPermitted(
        f"the workdir {workdir} cannot be written ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}): "
        f"nothing was run. Choose another --workdir, or give this user write access to it.") from None
