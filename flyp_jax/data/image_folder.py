"""Datasets of one's own, named by a path in `data.dataset`: a TFDS dataset directory, or a folder of images.

A TFDS dataset directory (one holding `dataset_info.json`, as `tfds build` or `tfds.dataset_builders
.store_as_tfds_dataset` write it, or its parent with version folders) is read as it is. An image folder is
laid out as TFDS's `ImageFolder` reads one, a folder per split and in it a folder per class:

    my_images/train/cat/0001.jpg   my_images/train/dog/0002.png   my_images/test/cat/0003.jpg ...

The class folders' sorted names are the labels (label i is the i-th name; `data.classnames=tfds` prompts with
them). It is converted once into TFDS's record format (the image files' bytes as they are, no re-encoding), under
`<data_dir or TFDS's data directory>/image_folders/<folder name>_<fingerprint>/`, so that it reads as every other
TFDS dataset here (slices such as 'train[:90%]', a part per process, damaged files named). The fingerprint is
of the files' paths, sizes and modification times: a changed folder is converted again, into a new directory.

    python -m flyp_jax.data.image_folder PATH [--data_dir=DIR]

converts ahead (a run on several processes needs that: each would otherwise convert it) and prints the path.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import sys
from typing import Optional

import jax
import tensorflow_datasets as tfds

from flyp_jax import errors, files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
INFO_FILE = "dataset_info.json"
_CONVERTED = "converted by flyp_jax.data.image_folder."


def is_path(name: str) -> bool:
  """Whether `data.dataset` names a directory (absolute, relative with a separator, ~, a bucket) rather than a
  registered TFDS name ("imagenet_v2/matched-frequency" is a name: it is not a directory here)."""
  if files.is_remote(name) or name.startswith(("/", "~", "./", "../")):
    return True
  return os.path.isdir(name)


@contextlib.contextmanager
def quietly():
  """TFDS's progress bars and its "Downloading and preparing" / "prepared" lines held back while a dataset is built
  here (the project says what it builds in one line of its own)."""
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    yield


def _tfds_dir(path: str) -> Optional[str]:
  """The dataset directory of `path` (itself, or its newest version folder), if it is a TFDS dataset."""
  if files.exists(os.path.join(path, INFO_FILE)):
    return path
  versions = sorted((n for n in files.listdir(path) if re.fullmatch(r"\d+\.\d+\.\d+", n)
                     and files.exists(os.path.join(path, n, INFO_FILE))), key=lambda v: tuple(map(int, v.split("."))))
  return os.path.join(path, versions[-1]) if versions else None


def _images(path: str) -> dict[str, dict[str, list[str]]]:
  """{split: {class: [image paths, sorted]}} of an image folder; empty where the layout is not one."""
  out: dict[str, dict[str, list[str]]] = {}
  for split in sorted(files.listdir(path)):
    split_dir = os.path.join(path, split)
    if not files.isdir(split_dir):
      continue
    classes = {}
    for name in sorted(files.listdir(split_dir)):
      class_dir = os.path.join(split_dir, name)
      if files.isdir(class_dir):
        classes[name] = sorted(os.path.join(class_dir, f) for f in files.listdir(class_dir)
                               if f.lower().endswith(IMAGE_SUFFIXES))
    if any(classes.values()):
      out[split] = classes
  return out


def _fingerprint(images: dict[str, dict[str, list[str]]], root: str) -> str:
  digest = hashlib.sha256()
  for split, classes in images.items():
    for name, paths in classes.items():
      for p in paths:
        st = os.stat(p) if not files.is_remote(p) else None
        digest.update(f"{os.path.relpath(p, root)}\0{st.st_size if st else ''}\0{st.st_mtime_ns if st else ''}\n"
                      .encode())
  return digest.hexdigest()[:12]


def _dataset_name(path: str) -> str:
  name = re.sub(r"[^a-z0-9]+", "_", os.path.basename(os.path.normpath(path)).lower()).strip("_")
  return name if name and name[0].isalpha() else f"images_{name}"


def _default_data_dir() -> str:
  return str(tfds.core.constants.DATA_DIR)


def _not_a_dataset(path: str, why: str) -> errors.NotFound:
  return errors.NotFound(
      f"data.dataset={path!r} is a path, but {why}. A path must be a TFDS dataset directory (holding {INFO_FILE}) "
      f"or an image folder: a folder per split (train, validation, test) holding a folder per class of "
      f"{'/'.join(IMAGE_SUFFIXES)} files, e.g. {os.path.join(path, 'train', 'cat', '0001.jpg')}.")


def builder(path: str, data_dir: Optional[str] = None, convert: Optional[bool] = None):
  """The TFDS builder of the dataset at `path` (an image folder converted first, when it has not been).

  convert: whether an image folder not converted yet may be converted here (default: on one process only).
  """
  path = os.path.expanduser(path)
  if not files.exists(path) or not files.isdir(path):
    raise _not_a_dataset(path, "there is no such directory")
  found = _tfds_dir(path)
  if found:
    return tfds.builder_from_directory(found)
  images = _images(path)
  if not images:
    raise _not_a_dataset(path, "it holds neither")
  name = _dataset_name(path)
  target_root = os.path.join(data_dir or _default_data_dir(), "image_folders", f"{name}_{_fingerprint(images, path)}")
  target = os.path.join(target_root, name, "1.0.0")
  if files.exists(os.path.join(target, INFO_FILE)):
    return tfds.builder_from_directory(target)
  if convert is None:
    convert = jax.process_count() == 1
  if not convert:
    raise errors.NotFound(
        f"the image folder {path} is not converted to TFDS's format yet, and a run on several processes cannot do "
        f"it (each would): convert it first, once, on one machine with the same data_dir: "
        f"python -m flyp_jax.data.image_folder {path}" + (f" --data_dir={data_dir}" if data_dir else ""))
  return _convert(path, images, name, target_root)


def _convert(path: str, images: dict[str, dict[str, list[str]]], name: str, target_root: str):
  classes = sorted({c for split in images.values() for c in split})
  count = sum(len(p) for split in images.values() for p in split.values())
  print(f"converting the image folder {path} ({count} images, {len(images)} splits: {', '.join(images)}; "
        f"{len(classes)} classes) to TFDS's format in {target_root}", flush=True)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(), "label": tfds.features.ClassLabel(names=classes),
      "image/filename": tfds.features.Text()})

  def examples(split: str):
    for label, paths in images[split].items():
      for p in paths:
        relative = os.path.relpath(p, path)
        yield relative, {"image": p, "label": label, "image/filename": relative}

  with quietly():
    built = tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", features=features, data_dir=target_root,
        split_datasets={split: examples(split) for split in images},
        description=f"The image folder {path}, {_CONVERTED}")
  return tfds.builder_from_directory(str(built.data_dir))


def is_converted(built) -> bool:
  """Whether a TFDS builder is an image folder's conversion (made again from the folder if deleted)."""
  return str(built.info.description).endswith(_CONVERTED)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m flyp_jax.data.image_folder",
      description="Convert an image folder (SPLIT/CLASS/IMAGE) to TFDS's format once, for data.dataset=PATH.")
  parser.add_argument("path", help="the image folder")
  parser.add_argument("--data_dir", default="", help="where converted datasets go (default: TFDS's data directory)")
  args = parser.parse_args(argv)
  try:
    built = builder(args.path, args.data_dir or None, convert=True)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  splits = ", ".join(f"{k} ({v.num_examples})" for k, v in built.info.splits.items())
  print(f"{built.data_dir}: splits {splits}; classes {built.info.features['label'].names}")
  print(f"train on it with --config.data.dataset={args.path}" +
        (f" --config.data.data_dir={args.data_dir}" if args.data_dir else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
