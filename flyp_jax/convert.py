"""`python -m flyp_jax.convert SRC DST`: a pretrained CLIP checkpoint as a converted directory.

The sources are those `flyp_jax.models.load_pretrained` reads (`flyp_jax.models.from_torch`: OpenAI, open_clip,
Hugging Face); the output is `flyp_jax.models.converted`'s format, which `--config.model.path` and
`load_pretrained` read without PyTorch's layouts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from flyp_jax import errors, models
from flyp_jax.models import converted
from flyp_jax.models.variants import ACTIVATIONS, describe


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m flyp_jax.convert", description=(
      "Convert a pretrained CLIP (OpenAI .pt, open_clip .pt/.bin/.safetensors, a Hugging Face CLIPModel "
      "directory) into an orbax checkpoint directory, which --config.model.path and load_pretrained read. Files are "
      "read as data: nothing in them is executed."))
  parser.add_argument("src", help="checkpoint file or Hugging Face CLIPModel directory")
  parser.add_argument("dst", help="new directory for the orbax checkpoint")
  parser.add_argument("--activation", choices=ACTIVATIONS, default=None,
                      help="when the source does not say (plain open_clip state dicts); LAION models use gelu")
  args = parser.parse_args(argv)
  start = time.time()
  try:
    model, params = models.load_pretrained(args.src, activation=args.activation)
    converted.save(args.dst, model.config, params, source=os.path.abspath(args.src))
  except errors.UserError as e:  # a bug keeps its traceback
    print(f"error: {e}", file=sys.stderr)
    return 2
  n = sum(np.size(x) for x in jax.tree.leaves(params))
  print(f"{describe(model.config)}: {n / 1e6:.1f}M parameters written to {os.path.abspath(args.dst)} "
        f"in {time.time() - start:.1f}s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
