"""One run per workdir: a lock file naming its holder, taken before any work and given back at the end.

Two runs writing one workdir interleave their metrics and overwrite each other's checkpoints and results, so a
second run is refused while the first lives. A lock whose holder is gone (killed, its machine lost) is taken over
with a warning, so a crash never needs a hand to clean up:
  * local disks: the file is held with `flock`, which the kernel releases when the holder dies, however it dies;
  * buckets (`gs://`), which have no locks: the holder rewrites the file every HEARTBEAT_S seconds; a lock is
    stale when its process is gone (same host) or its heartbeat is older than STALE_AFTER_S (another host).
    Acquiring writes the file, waits SETTLE_S and reads it back: of two runs starting together, the last writer
    keeps it and the other sees a live holder.
With several processes (a pod), process 0 takes the lock for the whole job and tells the others the outcome.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Iterator, Optional

import jax
import numpy as np

from flyp_jax import errors, files, parallel

LOCK_FILE = "run.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0  # ten missed heartbeats: longer than any pause of a live run's writes
SETTLE_S = 2.0  # far longer than the gap between another run's check and its write


class WorkdirLocked(errors.UserError, RuntimeError):
  """Another live run holds the workdir; the message names it and says how to proceed."""


def _process_start(pid: int) -> Optional[str]:
  """The kernel's start time of `pid` (clock ticks since boot), which tells a process from a later one with its id."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(pid: int, start: Optional[str]) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process: it exists
    pass
  now = _process_start(pid)
  return start is None or now is None or now == start


def _holder_record(token: str) -> dict:
  now = time.time()
  return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
          "started": now, "heartbeat": now, "token": token}


def _when(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _refusal(workdir: str, path: str, holder: dict) -> WorkdirLocked:
  where = f"process {holder.get('pid')} on host {holder.get('host')}"
  return WorkdirLocked(
      f"the workdir {workdir} is in use by another run ({where}, started {_when(holder.get('started', 0))}, "
      f"last seen {_when(holder.get('heartbeat', 0))}): nothing was run, since two runs in one workdir overwrite "
      f"each other's checkpoints and results. Wait for that run to finish (or stop it: kill {holder.get('pid')} on "
      f"{holder.get('host')}; it saves and exits), or choose another --workdir. If that run is certainly gone, "
      f"delete {path} and run again.")


def _takeover_warning(path: str, holder: dict, why: str) -> None:
  logging.warning("Taking over the lock %s left by process %s on host %s (started %s), %s.", path, holder.get("pid"),
                  holder.get("host"), _when(holder.get("started", 0)), why)
  print(f"warning: the workdir lock {path} was left by a run that is gone (process {holder.get('pid')} on host "
        f"{holder.get('host')}, started {_when(holder.get('started', 0))}; {why}): taken over.", flush=True)


def _stale_reason(holder: dict) -> Optional[str]:
  """Why `holder` is no longer running, or None if it may still be."""
  if holder.get("host") == socket.gethostname():
    if not _alive(int(holder.get("pid", -1)), holder.get("process_start")):
      return "its process no longer runs"
    return None
  age = time.time() - float(holder.get("heartbeat", 0))
  if age > STALE_AFTER_S:
    return f"no heartbeat for {age:.0f}s"
  return None


def _read(path: str) -> Optional[dict]:
  try:
    with files.open_file(path) as f:
      text = f.read()
    return json.loads(text) if text.strip() else None
  except (json.JSONDecodeError, UnicodeDecodeError):
    return {}  # half-written by a holder killed while writing it: unknown holder
  except Exception:  # vanished between the check and the read
    return None


class _LocalLock:
  """`flock` on WORKDIR/run.lock; the JSON inside names the holder for the message and the warning."""

  def __init__(self, workdir: str):
    self.workdir, self.path, self.fd = workdir, os.path.join(workdir, LOCK_FILE), None

  def acquire(self) -> None:
    import fcntl
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        os.close(fd)
        holder = _read(self.path) or {}
        raise _refusal(self.workdir, self.path, holder) from None
      # A holder that released and removed the file while this one opened it: lock the new file instead.
      try:
        if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
          break
      except FileNotFoundError:
        pass
      os.close(fd)
    previous = _read(self.path)
    if previous:  # locked by nobody yet naming a holder: that holder died without giving it back
      _takeover_warning(self.path, previous, "its lock was free")
    record = json.dumps(_holder_record(uuid.uuid4().hex)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    os.fsync(fd)
    self.fd = fd

  def release(self) -> None:
    if self.fd is not None:
      # Empty it first: a reader that opened the file before the unlink then finds no stale holder to warn about.
      os.ftruncate(self.fd, 0)
      with contextlib.suppress(FileNotFoundError):  # removed by hand meanwhile
        os.remove(self.path)
      os.close(self.fd)  # closing drops the flock
      self.fd = None


class _ObjectLock:
  """WORKDIR/run.lock in a bucket: written, settled and read back to acquire; a heartbeat thread keeps it fresh."""

  def __init__(self, workdir: str):
    self.workdir, self.path = workdir, files.join(workdir, LOCK_FILE)
    self.record, self._stop, self._thread = None, threading.Event(), None

  def acquire(self) -> None:
    holder = _read(self.path) if files.exists(self.path) else None
    if holder is not None:
      why = _stale_reason(holder) if holder else "its lock file was unreadable"
      if why is None:
        raise _refusal(self.workdir, self.path, holder)
      _takeover_warning(self.path, holder, why)
    self.record = _holder_record(uuid.uuid4().hex)
    self._write()
    time.sleep(SETTLE_S)
    now = _read(self.path) or {}
    if now.get("token") != self.record["token"]:
      self.record = None
      raise _refusal(self.workdir, self.path, now)
    self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def _write(self) -> None:
    with files.open_file(self.path, "w") as f:
      f.write(json.dumps(self.record))

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self.record["heartbeat"] = time.time()
        self._write()
      except Exception as e:  # a missed beat is harmless unless it lasts STALE_AFTER_S; keep training
        logging.warning("Could not refresh the workdir lock %s: %s", self.path, e)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self.record is not None:
      with contextlib.suppress(Exception):
        if (_read(self.path) or {}).get("token") == self.record["token"]:
          files.remove(self.path)
      self.record = None


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Hold `workdir` for the duration of the block, or raise WorkdirLocked (on every process) before any work."""
  files.makedirs(workdir)
  lock = (_ObjectLock if files.is_remote(workdir) else _LocalLock)(files.absolute(workdir))
  refusal = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except WorkdirLocked as e:
      refusal = e
  # Every process must learn the outcome, or the others would start work that process 0 refused.
  if parallel.across_processes([refusal is not None], reduce=np.max)[0]:
    raise refusal or WorkdirLocked(f"the workdir {workdir} is in use by another run: nothing was run (process 0 "
                                   f"names the holder and says how to proceed).")
  try:
    yield
  finally:
    if jax.process_index() == 0:
      lock.release()
