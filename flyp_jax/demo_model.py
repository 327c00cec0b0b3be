"""The offline benchmark's pretrained CLIP, shipped with the package so the demo needs no pretraining.

A tiny CLIP (ViT-T/4: 32 px images in 4 px patches, 2 layers of width 128 per tower, context 16) pretrained with
`configs/pretrain.py:demo` on the 200,000 image-caption pairs of `domain_shapes/pretrain_200k` in three cosine
cycles (`configs/pretrain.py` `CYCLES`): 7200 steps of 128 from random weights (`:demo_cycle1`, 4.6 epochs, lr
1e-3), then 2400 steps from its end (`:demo_cycle2`, lr 5e-4), then 2400 from that (`:demo`, lr 2.5e-4), each later
cycle with a fresh optimiser and another data order. The shipped file's recipe is

  python main.py --config=configs/pretrain.py:demo --workdir=workdirs/pretrain_demo
  python -m flyp_jax.demo_model workdirs/pretrain_demo --curve=docs/demo_pretraining.png

(the first command runs the earlier cycles in workdirs/pretrain_demo_cycle1 and _cycle2 if they have not run; the
curve follows the last run back to the first); that these commands remake the file bit for bit has not been
checked. docs/demo_results.md has the model's held-out and zero-shot numbers.

Most of a CLIP's parameters are its token embedding (49,408 x 128 here), and pretraining on domain_shapes'
captions only uses a few hundred of those tokens: the other rows never receive a gradient and keep their
random initialisation (shrunk by weight decay). The export sets those rows to zero, so the file compresses
from 29 MB to a few MB; text made of the pretraining captions' tokens (every demo prompt) encodes exactly
as before.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

# The project's modules are imported where they are used: every config file imports this module for PATH alone
# (configs/common.py), before a command needs JAX, orbax or TensorFlow.
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "demo_clip.npz")


def caption_tokens(data_dir: str | None = None) -> np.ndarray:
  """Sorted ids of every token in domain_shapes' pretraining captions and demo prompts (with SOT/EOT/pad)."""
  import tensorflow_datasets as tfds

  from flyp_jax.data import classnames, pipeline, templates
  from flyp_jax.tokenizer import tokenize
  builder = pipeline.get_builder("domain_shapes/pretrain_200k", data_dir)
  captions = [c.decode("utf-8") for c in
              tfds.as_numpy(builder.as_dataset(split="pretrain").map(lambda e: e["caption"]))]
  prompts = [t.format(c) for c in classnames.get("domain_shapes") for t in templates.get("domain_shapes")]
  return np.unique(tokenize(captions + prompts, context_length=77))


def export(run_dir: str, dst: str = PATH, data_dir: str | None = None) -> dict:
  """Write the finished pretraining run in `run_dir` (its `final/`) to `dst`, unused embedding rows zeroed."""
  from flyp_jax import models
  from flyp_jax.models import converted
  model, params = models.load_pretrained(os.path.join(run_dir, "final"))
  used = caption_tokens(data_dir)
  table = params["text"]["token_embedding"]["embedding"]
  pruned = np.zeros_like(table)
  pruned[used] = table[used]
  params["text"]["token_embedding"]["embedding"] = pruned
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  converted.save_npz(dst, model.config, params)
  return {"kept_tokens": int(len(used)), "vocab_size": int(table.shape[0]), "bytes": os.path.getsize(dst)}


def held_out_curve(run_dir: str) -> tuple[list[tuple[int, dict]], list[int]]:
  """A pretraining run's evaluations as [(step, metrics of eval_<step>.json)], preceded by those of the run it
  started from (`model.init='run'`, followed back to the first), steps counted from the first run's start; and
  the steps at which each later run started."""
  from flyp_jax import files, run_paths
  config_of = lambda workdir: files.read_json(os.path.join(workdir, "config.json"))["config"]
  chain = [(run_dir, config_of(run_dir))]  # each run, then the one it started from
  while chain[-1][1]["model"]["init"] == "run":
    earlier = run_paths.resolve(chain[-1][0], chain[-1][1]["model"]["path"])
    chain.append((earlier, config_of(earlier)))
  points, starts, offset = [], [], 0
  for i, (workdir, config) in enumerate(reversed(chain)):
    if i:
      starts.append(offset)
    steps = sorted(int(n[5:-5]) for n in files.listdir(workdir) if n.startswith("eval_") and n.endswith(".json"))
    points += [(offset + s, files.read_json(os.path.join(workdir, f"eval_{s}.json"))) for s in steps]
    offset += config["steps"]
  return points, starts


def plot_curve(run_dir: str, path: str) -> str:
  """A PNG of a pretraining run's zero-shot top-1 (%) on held-out data at each evaluation (`eval_<step>.json`
  of the `domain_shapes_heldout` suite), the runs it started from included: photo validation and each domain of
  `pretrain_val`. Returns `path`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from flyp_jax.data.builders import domain_shapes
  points, starts = held_out_curve(run_dir)
  steps = [s for s, _ in points]
  runs = [r for _, r in points]
  fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
  ax.plot(steps, [100 * r["domain_shapes_validation/top1"] for r in runs], "-o", color="black",
          label="photo validation (ID)")
  for g, domain in enumerate(domain_shapes.DOMAINS):
    ax.plot(steps, [100 * r[f"domain_shapes_pretrain_val/group{g}_top1"] for r in runs], "--.",
            label=f"pretrain_val: {domain}")
  ax.axhline(10, color="gray", linewidth=0.8, linestyle=":", label="chance")
  for i, start in enumerate(starts):
    ax.axvline(start, color="gray", linewidth=0.8, linestyle="-.", label="a new cycle starts" if i == 0 else None)
  ax.set_xlabel("pretraining step (batch 128)")
  ax.set_ylabel("zero-shot top-1 (%)")
  ax.set_title("Demo CLIP pretraining: zero-shot accuracy on held-out data")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m flyp_jax.demo_model", description=__doc__.split("\n\n")[0])
  parser.add_argument("run_dir", help="workdir of a finished configs/pretrain.py:demo run")
  parser.add_argument("--dst", default=PATH, help="output .npz (default: the file shipped with the package)")
  parser.add_argument("--data_dir", default=None, help="TFDS data directory holding domain_shapes")
  parser.add_argument("--curve", default=None,
                      help="also plot the held-out zero-shot curve (the run's and its earlier cycles') to this PNG")
  args = parser.parse_args(argv)
  if args.curve:
    print(f"wrote {plot_curve(args.run_dir, args.curve)}")
  info = export(args.run_dir, args.dst, args.data_dir)
  print(f"kept {info['kept_tokens']} of {info['vocab_size']} token embeddings; wrote {args.dst} "
        f"({info['bytes'] / 1e6:.1f} MB)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
