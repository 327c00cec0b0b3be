"""Commands: methods that run or combine training runs instead of training one (`config.method`).

Each is a module here with `run(config, workdir) -> dict` (the results `main.py` prints): lp (the linear probe),
wiseft (WiSE-FT's interpolation of a fine-tuned run), compare (every method on the offline benchmark), few_shot
(k-shot runs repeated) and soup (model soups of fine-tuning runs). A command that starts another run calls
`train.dispatch` (or `train.run`) for it.
"""

from __future__ import annotations

import importlib
from typing import Callable

from flyp_jax import errors

NAMES = ("lp", "wiseft", "compare", "few_shot", "soup")
# The file each writes last, whose presence says it has finished (`flyp_jax.runs`); results.json for the others.
RESULT_FILES = {"wiseft": "wiseft.json", "compare": "comparison.json", "few_shot": "few_shot.json", "soup": "soup.json"}


def get(name: str) -> Callable[..., dict]:
  """The `run(config, workdir)` of command `name`."""
  if name not in NAMES:
    raise errors.BadValue(f"unknown command {name!r}; known: {NAMES}")
  return importlib.import_module(f"{__name__}.{name}").run
