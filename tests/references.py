"""Reference implementations (open_clip, OpenAI CLIP) loaded file by file.

Both packages are installed without their full dependencies: `import open_clip` and `import clip` fail
because their `__init__` pulls in torchvision. The single files the tests compare against only need
torch/ftfy/regex, so they are loaded by path instead. A missing package raises ModuleNotFoundError, which
fails the test that needs it: the references are part of the test extra, so a missing one is an install
error, never a reason to skip.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load_file(package: str, filename: str) -> ModuleType:
  # find_spec on a top-level name locates the package without executing its __init__.
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(f"reference package {package!r} is not installed; the tests need it: "
                              "pip install -e '.[test]' && pip install --no-deps open_clip_torch==3.3.0")
  path = Path(list(spec.submodule_search_locations)[0]) / filename
  if not path.is_file():
    raise ModuleNotFoundError(f"reference file {path} is missing")
  # A private module name keeps these copies from shadowing a real `open_clip`/`clip` import.
  name = f"_reference_{package}_{path.stem}"
  file_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(file_spec)
  sys.modules[name] = module  # dataclasses and pickling look modules up by name
  try:
    file_spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[name]
    raise
  return module


@functools.lru_cache(maxsize=None)
def load_open_clip_tokenizer_module() -> ModuleType:
  """open_clip's `tokenizer.py` (SimpleTokenizer, module-level `tokenize` returning torch.LongTensor)."""
  return _load_file("open_clip", "tokenizer.py")


@functools.lru_cache(maxsize=None)
def load_open_clip_zero_shot_metadata() -> ModuleType:
  """open_clip's `zero_shot_metadata.py`: IMAGENET_CLASSNAMES (1000) and OPENAI_IMAGENET_TEMPLATES (80)."""
  return _load_file("open_clip", "zero_shot_metadata.py")


@functools.lru_cache(maxsize=None)
def load_openai_clip_module(name: str) -> ModuleType:
  """OpenAI CLIP's `clip/<name>.py`, where name is 'simple_tokenizer' or 'model'."""
  if name not in ("simple_tokenizer", "model"):
    raise ValueError(f"name must be 'simple_tokenizer' or 'model', got {name!r}")
  return _load_file("clip", f"{name}.py")


@functools.lru_cache(maxsize=None)
def load_open_clip_loss_module() -> ModuleType:
  """open_clip's `loss.py` (ClipLoss, ...); it needs only torch (distributed/horovod are optional)."""
  return _load_file("open_clip", "loss.py")
