"""Shared pieces of the builders that read a manually downloaded archive: WILDS iWildCam, WILDS FMoW, ObjectNet,
Rendered SST2.

None of these datasets can be fetched by TFDS (the WILDS archives are tens of GB behind CodaLab, ObjectNet sits
behind a licence page, Rendered SST2 is no TFDS dataset), so each builder reads the official layout from
`manual_dir` and fails early, with one readable paragraph, when that folder or a file in it is missing. `how_to_prepare(name)` gives the command that
prepares a dataset, for loaders to print when `tfds.load` finds it unprepared.

Paths are `etils.epath.Path`s, so `manual_dir` may be a local folder or a bucket (gs://...) on a TPU VM.
"""

from __future__ import annotations

import csv
import io
from typing import Dict, Iterable, List, Optional, Sequence

from etils import epath

from flyp_jax import errors

# TFDS name -> module that defines (and, when imported, registers) its builder.
MANUAL_DATASETS: Dict[str, str] = {
  "wilds_iwildcam": "flyp_jax.data.builders.wilds_iwildcam",
  "wilds_fmow": "flyp_jax.data.builders.wilds_fmow",
  "objectnet": "flyp_jax.data.builders.objectnet",
  "rendered_sst2": "flyp_jax.data.builders.rendered_sst2",
}

_DEFAULT_MANUAL_DIR = "/path/to/manual_dir"
_DEFAULT_DATA_DIR = "~/tensorflow_datasets"


class ManualDataError(errors.UserError, FileNotFoundError):
  """The manual directory, or a file the builder needs in it, is missing or malformed.

  A FileNotFoundError so that callers catching the usual "not there" error also catch this one; the message is a
  single paragraph naming the path and what the folder must contain.
  """


def one_paragraph(text: str) -> str:
  """Collapses all whitespace (newlines, indentation) to single spaces, so a message stays one paragraph."""
  return " ".join(text.split())


def _check_name(name: str) -> None:
  if name not in MANUAL_DATASETS:
    raise KeyError(f"no manual-download builder named {name!r}; known: {sorted(MANUAL_DATASETS)}")


def python_command(name: str, manual_dir: Optional[str] = _DEFAULT_MANUAL_DIR,
                   data_dir: str = _DEFAULT_DATA_DIR) -> str:
  """The one-line `python -c` command that prepares TFDS dataset `name` (from `manual_dir`) into `data_dir`.

  Works for any TFDS dataset (manual_dir=None for those TFDS downloads itself). Importing the project's builders
  registers them with TFDS; flyp_jax must be importable (`pip install -e .`). This works with the project's
  dependencies alone, unlike the `tfds` CLI (see cli_command).
  """
  config = ("" if manual_dir is None else
            f"download_config=tfds.download.DownloadConfig(manual_dir='{manual_dir}')")
  code = (f"import {MANUAL_DATASETS.get(name, 'flyp_jax.data.builders')}, tensorflow_datasets as tfds; "
          f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare({config})")
  return f'python -c "{code}"'


def cli_command(name: str, manual_dir: str = _DEFAULT_MANUAL_DIR, data_dir: str = _DEFAULT_DATA_DIR) -> str:
  """The `tfds build` command that prepares `name` (the builder is registered through `--imports`).

  TFDS 4.9.10's `tfds` script imports apache_beam and mlcroissant when it starts, whatever the subcommand, so it
  only runs where those are installed; they are no dependency of this project. The dataset is named, with its
  module in `--imports`, rather than given as a script path: both work, but the name does not depend on the
  current directory.
  """
  _check_name(name)
  return (f"tfds build {name} --imports={MANUAL_DATASETS[name]} --manual_dir={manual_dir} "
          f"--data_dir={data_dir}")


def how_to_prepare(name: str, manual_dir: str = _DEFAULT_MANUAL_DIR, data_dir: str = _DEFAULT_DATA_DIR) -> str:
  """How to prepare TFDS dataset `name` from its manual download, for loaders to print.

  Args:
    name: 'wilds_iwildcam', 'wilds_fmow' or 'objectnet'.
    manual_dir: the folder holding the extracted archive (see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS).
    data_dir: the TFDS data directory the prepared dataset goes to (what `tfds.load(..., data_dir=)` reads).

  Returns:
    Two lines, either of which prepares the dataset: the `python -c` command (works with this project's
    dependencies), then the equivalent `tfds build` command with a shell comment on what its CLI needs.
  """
  return (f"{python_command(name, manual_dir, data_dir)}\n"
          f"{cli_command(name, manual_dir, data_dir)}"
          "  # the tfds CLI also needs: pip install apache-beam mlcroissant")


def error(name: str, path, problem: str, instructions: str) -> ManualDataError:
  """A ManualDataError for dataset `name`: `path` `problem`, then the instructions and the command, one paragraph."""
  return ManualDataError(one_paragraph(
      f"Cannot prepare the TFDS dataset '{name}': {path} {problem}. {instructions} "
      f"Then prepare it with: {python_command(name)}"))


def manual_dir_of(dl_manager, name: str, instructions: str) -> epath.Path:
  """`dl_manager.manual_dir`, with TFDS's AssertionError (folder absent or empty) turned into a ManualDataError.

  TFDS raises a bare AssertionError with the instructions on separate lines; the project's loaders expect the
  FileNotFoundError family and a message that names the folder first.
  """
  try:
    return epath.Path(dl_manager.manual_dir)
  except AssertionError:
    # `_manual_dir` is where TFDS looked (the DownloadConfig value, or <data_dir>/downloads/manual by default).
    path = getattr(dl_manager, "_manual_dir", None) or "the manual directory (DownloadConfig(manual_dir=...))"
    raise error(name, path, "does not exist or is empty", instructions) from None


def find_root(manual_dir: epath.Path, folder: str, required: Sequence[str], *, name: str,
              instructions: str) -> epath.Path:
  """The archive's root folder: `manual_dir/folder` if it exists, else `manual_dir` itself.

  Users either extract the archive into `manual_dir` (giving `manual_dir/folder/...`) or point `manual_dir` at the
  extracted folder; both are accepted. Every path in `required` (relative to the root; a trailing '/' marks a
  folder) must exist, otherwise the error names the first missing one.
  """
  root = manual_dir / folder if (manual_dir / folder).is_dir() else manual_dir
  for rel in required:
    path = root / rel.rstrip("/")
    present = path.is_dir() if rel.endswith("/") else path.is_file()
    if not present:
      kind = "folder" if rel.endswith("/") else "file"
      raise error(name, path, f"is missing (the {kind} '{rel}' of the '{folder}' archive; looked in {root})",
                  instructions)
  return root


def read_csv(path: epath.Path, required_columns: Iterable[str], *, name: str,
             instructions: str) -> List[Dict[str, str]]:
  """Rows of CSV file `path` as dicts (values stay strings), after checking its header has `required_columns`.

  csv.DictReader rather than pandas: pandas is no dependency of the project, and it would turn empty strings and
  codes such as 'NA' into NaN, which the builders' split and region rules must not see. 'utf-8-sig' drops a
  byte-order mark, which would otherwise become part of the first column's name.
  """
  reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
  header = reader.fieldnames or []
  missing = [c for c in required_columns if c not in header]
  if missing:
    raise error(name, path, f"lacks the column(s) {missing} (its header is {header})", instructions)
  return list(reader)


def parse_int(value: Optional[str], *, name: str, path, row: int, column: str, instructions: str) -> int:
  """int(value), or a ManualDataError naming the file, the data row (0-based) and the column."""
  try:
    return int(str(value).strip())
  except ValueError:
    raise error(name, path, f"has {value!r} in column '{column}' of data row {row}, not an integer",
                instructions) from None


def read_image(path: epath.Path, *, name: str, instructions: str) -> bytes:
  """The file's bytes, or a ManualDataError naming it when it does not exist (e.g. a partly extracted archive)."""
  try:
    return path.read_bytes()
  except Exception:  # local paths raise FileNotFoundError, gs:// paths TensorFlow's NotFoundError
    if not path.exists():
      raise error(name, path, "is missing (an image listed in the metadata)", instructions) from None
    raise
