"""Config files by spec ("configs/flyp.py:demo"), for runs that start other runs (the demo's pretraining)."""

from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file in "path.py[:arg]" (relative to the working or repository directory), locked."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    path = os.path.join(REPO_ROOT, path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {spec.partition(':')[0]!r} not found (looked in . and {REPO_ROOT})")
  if REPO_ROOT not in sys.path:  # config files import `configs.common`
    sys.path.insert(0, REPO_ROOT)
  module_spec = importlib.util.spec_from_file_location(f"_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  config.lock()
  return config


def unknown_override(argv) -> str:
  """A message naming the first `--config.a.b=...` override that is not a field of the --config file, with
  the fields valid at that level; '' when all are known (or there is no --config to check)."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return ""
  config = load(spec)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node, seen = config, []
    for key in arg[len("--config."):].split("=", 1)[0].split("."):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        where = ".".join(["config"] + seen)
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        return f"unknown config key {arg.split('=', 1)[0][2:]!r}: {where} has no field {key!r}; valid: {valid}"
      node, seen = node[key], seen + [key]
  return ""
