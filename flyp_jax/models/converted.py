"""The converted checkpoint format: a directory of orbax-saved parameters and a marker file, or one `.npz` file.

A directory (`python -m flyp_jax.convert`'s output, a run's `final/` and `selected/`) holds `params/` (orbax) and
`flyp_clip.json` ({'config': ..., 'source': ..., 'kind' for a model other than a CLIP}), written last: a directory
with the marker is complete, one without it half-written. `.npz` files hold small models (the demo's).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from flyp_jax import errors, files, parallel
from flyp_jax.checkpoint_files import CheckpointError
from flyp_jax.models.clip import CLIP, check_params, init_params
from flyp_jax.models.transformer import unstack_blocks
from flyp_jax.models.variants import CLIPConfig

MARKER = "flyp_clip.json"


def is_converted(path: str) -> bool:
  """Whether `path` is a complete converted directory (its marker written)."""
  return files.exists(os.path.join(path, MARKER))


def read_marker(path: str) -> dict:
  return files.read_json(os.path.join(files.absolute(path), MARKER))


def restore_params(path: str, abstract: Any) -> Any:
  """The parameters under `path`/params, of the shapes of `abstract`, as host numpy arrays."""
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(files.absolute(path), "params"), abstract)
  return jax.tree.map(np.asarray, params)


def save(dst: str, config: CLIPConfig, params: dict, source: str = "",
                   arrays: Optional[dict[str, dict]] = None, kind: str = "") -> None:
  """Write params as an orbax checkpoint under dst/params and the architecture to dst/flyp_clip.json; params in
  the scanned layout (`model.scan_layers`) are written per layer, as every loader reads them.

  `kind`: written into the marker for a model other than a CLIP (`flyp_jax.models.vit` saves its ViTs here,
  config any object with `to_dict`).
  `arrays`: more files to write beside them, {'head.npz': {'kernel': ..., 'bias': ...}}. With several processes,
  all of them call this with the same (host) values. The marker is written last, by process 0, so a directory
  with the marker is complete.
  """
  dst = files.absolute(dst)
  if files.exists(dst) and files.listdir(dst):
    raise errors.AlreadyExists(f"{dst} exists and is not empty; choose a new directory")
  parallel.sync("save_converted:checked")
  files.makedirs(dst)
  with files.writing(dst), ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(dst, "params"), unstack_blocks(params))  # per layer, whatever the model's scan
  if jax.process_index() == 0:
    for name, tree in (arrays or {}).items():
      files.save_npz(os.path.join(dst, name), jax.tree.map(np.asarray, tree))
    files.write_json(os.path.join(dst, MARKER),
                     {**({"kind": kind} if kind else {}), "config": config.to_dict(), "source": source})
  parallel.sync("save_converted:done")


def load(path: str) -> tuple[CLIPConfig, dict]:
  """(config, host params) of a converted CLIP directory."""
  record = read_marker(path)
  if record.get("kind") == "vit":  # an attention-transfer student (flyp_jax.models.vit.save)
    raise errors.BadValue(f"{path} holds a timm-style ViT classifier, not a CLIP: load it with flyp_jax.models.vit.load")
  config = CLIPConfig.from_dict(record["config"])
  return config, restore_params(path, jax.eval_shape(lambda: init_params(CLIP(config), jax.random.key(0))))


NPZ_CONFIG_KEY = "__flyp_clip_config__"


def save_npz(path: str, config: CLIPConfig, params: dict) -> None:
  """One compressed `.npz` file: every parameter under its '/'-joined path, the architecture as JSON.

  For small models (the demo's); read back with `load_npz` (or `load_pretrained`), without pickle.
  """
  flat = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
          for p, v in jax.tree.leaves_with_path(unstack_blocks(params))}
  flat[NPZ_CONFIG_KEY] = np.array(json.dumps(config.to_dict()))
  with open(path, "wb") as f:  # a file object: np.savez would append '.npz' to a name without it
    np.savez_compressed(f, **flat)


def load_npz(path: str) -> tuple[CLIPConfig, dict]:
  """(config, params) from a file written by `save_npz`; a shape or name mismatch names the parameters."""
  try:
    with np.load(path, allow_pickle=False) as z:
      flat = {k: z[k] for k in z.files}
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise CheckpointError(f"{path}: not a readable .npz file ({e})") from None
  if NPZ_CONFIG_KEY not in flat:
    raise CheckpointError(f"{path}: an .npz file without {NPZ_CONFIG_KEY!r}; only files written by "
                          "flyp_jax.models.converted.save_npz are read")
  config = CLIPConfig.from_dict(json.loads(str(flat.pop(NPZ_CONFIG_KEY))))
  params: dict = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = params
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  check_params(params, config)
  return config, params
