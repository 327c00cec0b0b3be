"""Pretrained CLIPs by name, as `clip.load("ViT-B/16")` finds them: `model.path=openai:ViT-B/16`.

The first use downloads OpenAI's released file into a cache directory (FLYP_JAX_CACHE, default
~/.cache/flyp_jax) and checks its SHA-256 before anything reads it; later uses find it there. The published
checksum of each file is the hex string in its download URL's path (OpenAI's clip/clip.py checks the same).
The file is then read by `flyp_jax.checkpoint_files`, which executes nothing in it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import uuid

from flyp_jax import errors

PREFIX = "openai:"
OPENAI_URL = "https://openaipublic.azureedge.net/clip/models"
# name -> (SHA-256 of the released file, its file name). ResNet towers are left out: the loader reads ViTs only.
OPENAI = {
    "ViT-B/32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
    "ViT-B/16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
    "ViT-L/14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
    "ViT-L/14@336px": ("3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px.pt"),
}


def cache_dir() -> str:
  return os.environ.get("FLYP_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flyp_jax")


def base_url() -> str:
  """Where the files are downloaded from: OpenAI's server, or a mirror given in FLYP_JAX_OPENAI_URL."""
  return os.environ.get("FLYP_JAX_OPENAI_URL", OPENAI_URL).rstrip("/")


def url(name: str) -> str:
  sha256, filename = OPENAI[name]
  return f"{base_url()}/{sha256}/{filename}"


def is_named(path) -> bool:
  return isinstance(path, str) and path.startswith(PREFIX)


def resolve(path):
  """A local file for `openai:NAME` (downloaded and checked on first use); any other path unchanged."""
  return fetch(path[len(PREFIX):]) if is_named(path) else path


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fetch(name: str) -> str:
  """The path of OpenAI's released checkpoint `name` (e.g. 'ViT-B/16') in the cache, downloading it if needed."""
  if name not in OPENAI:
    raise errors.BadValue(f"unknown OpenAI CLIP {name!r}: the names are {', '.join(PREFIX + n for n in OPENAI)} "
                     f"(or give a checkpoint file's path)")
  sha256, filename = OPENAI[name]
  target = os.path.join(cache_dir(), filename)
  # A file already there is used only if it is the released one (a partial or other file is fetched again).
  if os.path.isfile(target) and _sha256(target) == sha256:
    return target
  os.makedirs(cache_dir(), exist_ok=True)
  partial = f"{target}.{uuid.uuid4().hex}.part"  # renamed once complete and checked: never a half file at target
  source = url(name)
  print(f"downloading {PREFIX}{name} from {source} to {target}", flush=True)
  digest = hashlib.sha256()
  try:
    with urllib.request.urlopen(source, timeout=60) as response, open(partial, "wb") as out:
      for block in iter(lambda: response.read(1 << 20), b""):
        digest.update(block)
        out.write(block)
  except (urllib.error.URLError, OSError) as e:
    if os.path.exists(partial):
      os.remove(partial)
    raise errors.NotFound(
        f"{PREFIX}{name} is not in the cache and could not be downloaded from {source} "
        f"({getattr(e, 'reason', e)}). Without internet access, download that file elsewhere and copy it to "
        f"{target} (it is checked against its SHA-256, {sha256}), or pass the file's path as "
        f"--config.model.path=PATH.") from None
  if digest.hexdigest() != sha256:
    os.remove(partial)
    raise errors.BadValue(f"the file downloaded from {source} has SHA-256 {digest.hexdigest()}, not the published "
                     f"{sha256}: it was not kept. Try again; if this repeats, the server (FLYP_JAX_OPENAI_URL) serves "
                     f"another file.")
  os.replace(partial, target)
  return target


def missing_checkpoint_message(path: str) -> str:
  """Where to get a CLIP checkpoint, for a model path that names no existing file."""
  names = ", ".join(PREFIX + n for n in OPENAI if n != "ViT-B/16")
  where = f" (a relative path is read from {os.getcwd()})" if not os.path.isabs(path) else ""
  return (f"checkpoint {path!r} not found{where}. Name one of OpenAI's released CLIPs instead to download it once "
          f"into {cache_dir()}: --config.model.path={PREFIX}ViT-B/16 (or {names}); or download the file yourself "
          f"(the URLs are in OpenAI CLIP's clip/clip.py, e.g. {OPENAI_URL}/{OPENAI['ViT-B/16'][0]}/ViT-B-16.pt) "
          f"and give its path; open_clip and Hugging Face CLIP checkpoints work too (see docs/checkpoints.md).")
