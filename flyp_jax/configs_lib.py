"""Config files by spec ("configs/flyp.py:demo"), for runs that start other runs (the demo's pretraining)."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Optional

import ml_collections

from flyp_jax import errors

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_files() -> list[str]:
  """The repository's method config files, 'configs/<name>.py', sorted."""
  folder = os.path.join(REPO_ROOT, "configs")
  names = sorted(n for n in os.listdir(folder) if n.endswith(".py") and n not in ("__init__.py", "common.py"))
  return [f"configs/{n}" for n in names]


def resolve(spec: str) -> str:
  """"path.py[:arg]" with the path made absolute: found from the working directory, else from the repository's."""
  path, colon, arg = spec.partition(":")
  for candidate in (path, os.path.join(REPO_ROOT, path)):
    if os.path.isfile(candidate):
      return os.path.abspath(candidate) + colon + arg
  looked = " and ".join(dict.fromkeys((os.getcwd(), REPO_ROOT)))
  raise errors.NotFound(f"config file {path!r} not found (looked in {looked}); the config "
                          f"files are {', '.join(config_files())} (python main.py --help lists their presets)")


def resolve_args(argv: list[str]) -> list[str]:
  """A command line with each `--config=SPEC` made absolute (`resolve`), for absl's config flag."""
  return ["--config=" + resolve(a.split("=", 1)[1]) if a.startswith("--config=") else a for a in argv]


def module(path: str):
  """The config file at `path` as a module (get_config, PRESETS, its docstring)."""
  if REPO_ROOT not in sys.path:  # config files import `configs.common`
    sys.path.insert(0, REPO_ROOT)
  module_spec = importlib.util.spec_from_file_location(f"_config_{os.path.basename(path)[:-3]}", path)
  mod = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(mod)
  return mod


def load(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file in "path.py[:arg]" (relative to the working or repository directory), locked."""
  path, _, arg = resolve(spec).partition(":")
  mod = module(path)
  presets = getattr(mod, "PRESETS", ())
  if arg and presets and arg not in presets:
    name = os.path.relpath(path, REPO_ROOT) if path.startswith(REPO_ROOT) else path
    raise errors.BadValue(f"{name} has no preset {arg!r}; its presets are {', '.join(presets)} (give one as "
                     f"--config={name}:PRESET; python main.py --help lists every config file's presets)")
  config = mod.get_config(arg) if arg else mod.get_config()
  config.lock()
  return config


# What a run that another run starts (the comparison's methods, WiSE-FT's fine-tuning) takes from it: the model,
# the data's location and the seed that make their results comparable; so `--config.data.data_dir=...` given to
# the comparison reaches every method it runs.
SHARED = ("seed", "model_axis", "model", "data.data_dir", "data.shards", "data.corrupt_images", "eval.batch_size")


def load_sub_run(spec: str, parent: ml_collections.ConfigDict, keys=SHARED,
                 updates: Optional[dict] = None) -> ml_collections.ConfigDict:
  """`load(spec)` with `parent`'s values of `keys` (dotted field names; whole sub-configs such as 'model'), then
  `updates` ({'a.b': value}: the sub-run's own settings, e.g. a swept learning rate)."""
  config = load(spec)
  config.unlock()
  for key in keys:
    *path, name = key.split(".")
    source, target = parent, config
    for part in path:
      source, target = source.get(part), target.get(part)
    if source is None or target is None or name not in source or name not in target:
      continue  # a field one of the two configs does not have
    value = source[name]
    target[name] = ml_collections.ConfigDict(value.to_dict()) if isinstance(value, ml_collections.ConfigDict) else value
  for key, value in (updates or {}).items():
    *path, name = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[name] = value
  config.lock()
  return config


def catalogue() -> list[tuple[str, str, tuple]]:
  """(config file, the first line of its docstring, its presets) for every method config file."""
  out = []
  for name in config_files():
    mod = module(os.path.join(REPO_ROOT, name))
    first_paragraph = " ".join((mod.__doc__ or "").strip().split("\n\n")[0].split())
    out.append((name, first_paragraph.split(". ")[0].rstrip("."), tuple(getattr(mod, "PRESETS", ()))))
  return out


def unknown_override(argv) -> str:
  """A message naming the first `--config.a.b=...` override that is not a field of the --config file, with
  the fields valid at that level; '' when all are known (or there is no --config to check)."""
  specs = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  spec = specs[-1] if specs else None  # absl keeps the last value of a flag given twice
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
