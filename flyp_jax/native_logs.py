"""TensorFlow's C++ start-up log lines held to `TF_CPP_MIN_LOG_LEVEL`, whichever TensorFlow is installed.

TensorFlow 2.21 logs through absl's C++ logging before it reads `TF_CPP_MIN_LOG_LEVEL`, so even with the level at
2 every `import tensorflow` writes, straight to file descriptor 2 and from two of its libraries,
"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR" and
"I0000 ... port.cc:153] oneDNN custom operations are on ...". No setting turns those off before the import
(`TF_ENABLE_ONEDNN_OPTS=0` would silence the second by changing TensorFlow's kernels), so `install()` wraps the
first import of `tensorflow`: while it runs, descriptor 2 goes into a pipe, and afterwards every line is written
back except the C++ log lines below the level (I = 0, W = 1, E = 2, F = 3) and absl's notice about them. Python's
own output during the import (warnings, a traceback) is kept, in order. Without the variable nothing is wrapped.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import threading

# absl / glog: severity letter, MMDD, time (absl before InitializeLog: 00:00:<epoch seconds>), thread, file:line]
CPP_LOG_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\s:\]]+:\d+\] ")
ABSL_NOTICES = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                b"WARNING: Logging before InitGoogle() is written to STDERR")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def min_level() -> int:
  """TF_CPP_MIN_LOG_LEVEL as a number (0: show everything, as TensorFlow reads it)."""
  try:
    return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
  except ValueError:
    return 0


def kept(text: bytes, level: int) -> bytes:
  """`text` without its C++ log lines below `level` and absl's notices (kept when nothing is dropped)."""
  out = []
  lines = text.splitlines(keepends=True)
  for line in lines:
    match = CPP_LOG_LINE.match(line)
    if match and _SEVERITY[match.group(1)] < level:
      continue
    if level > 0 and line.rstrip() in ABSL_NOTICES:
      continue
    out.append(line)
  return b"".join(out)


@contextlib.contextmanager
def filtered_stderr(level: int):
  """Within the block, file descriptor 2's output is held and written back through `kept` at the end."""
  sys.stderr.flush()
  saved = os.dup(2)
  read_end, write_end = os.pipe()
  chunks = []
  reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b"")),
                            daemon=True)  # drains the pipe, so a long write never blocks the import
  reader.start()
  os.dup2(write_end, 2)
  os.close(write_end)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees its end
    reader.join()
    os.close(read_end)
    os.write(saved, kept(b"".join(chunks), level))
    os.close(saved)


class _QuietLoader(importlib.abc.Loader):
  def __init__(self, loader, level):
    self._loader, self._level = loader, level

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with filtered_stderr(self._level):
      self._loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` as the other finders do and runs its import under `filtered_stderr`, once."""

  def find_spec(self, fullname, path, target=None):
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(fullname, path)
    if spec is not None and spec.loader is not None and min_level() > 0:  # the level when TensorFlow loads
      spec.loader = _QuietLoader(spec.loader, min_level())
    return spec


def install() -> None:
  """Wrap the first `import tensorflow` of this process, if TensorFlow is not imported yet."""
  if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietFinder())
