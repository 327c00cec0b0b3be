"""Test setup: 8 simulated CPU devices, so every sharded code path runs without accelerators."""

import dataclasses
import json
import os

import pytest

# Compiling dominates the suite (hundreds of tiny programs, each compiled once per process): XLA's CPU backend
# without LLVM's optimisation passes compiles them faster, and running tiny models unoptimised costs little (the
# whole suite, 2 cores, empty cache: 1097-1171 s against 1591 s). Tolerances and bitwise comparisons are
# between programs compiled the same way (subprocesses get the same flags through `xla_flags`).
TEST_XLA_FLAGS = ["--xla_backend_optimization_level=0"]


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a process of this test run: the caller's flags, the test flags, `devices` simulated CPUs."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if "host_platform_device_count" not in f and f not in TEST_XLA_FLAGS]
  return " ".join(kept + TEST_XLA_FLAGS + ([f"--xla_force_host_platform_device_count={devices}"] if devices else []))


# Must happen before jax is imported anywhere (pytest imports conftest first).
os.environ["XLA_FLAGS"] = xla_flags(8)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# One XLA compilation cache for the run, shared by pytest-xdist's workers and by the subprocesses tests start (they
# inherit the environment): many tests compile the same tiny-model train and evaluation programs. Entries are keyed
# by the program, the compile options and the JAX version, so a stale entry cannot be used; the directory is capped.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")  # small eager ops: writing costs more
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))

# The longest files first: with `pytest -n 2 --dist loadfile` a file runs on one worker, and a long file started
# last would leave the other worker idle until it ends. The rest keep their order.
LONGEST_FIRST = ("test_multihost.py", "test_preemption.py", "test_train.py", "test_tpu_plan.py", "test_attention_transfer.py",
                 "test_train_step.py", "test_reliability.py", "test_models.py", "test_cli.py", "test_parity.py",
                 "test_few_shot_transfer.py", "test_benchmarks.py", "test_notebook.py")


def pytest_configure(config):
  # The tests over about 20 s each (a training run, several processes, a TPU compile): `pytest -m "not slow"` leaves
  # them out for day-to-day work; CI and the README's command run every test.
  config.addinivalue_line("markers", "slow: over about 20 s (pytest -m 'not slow' skips them)")
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist would order the files by their number of tests
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data dir with domain_shapes/small, generated once per test process (each pytest-xdist worker): the
  tests that change its files copy it first. A test file with other datasets defines its own `data_dir`."""
  from flyp_jax.data import pipeline
  path = str(tmp_path_factory.mktemp("tfds"))
  pipeline.get_builder("domain_shapes/small", path)  # before any subprocess of a test could race to make it
  return path


def tiny_config(spec, data_dir, *layers, **updates):
  """A method's config made small for the tests: a random ViT-T/8 CLIP (context 16) on domain_shapes/small,
  batches of 16, 4 steps, logs and checkpoints every 2 steps, evaluation batches of 64; then each dict of `layers`
  and `updates`, in turn (a dict value updates that sub-config's fields, the others are kept)."""
  from flyp_jax import configs_lib
  config = configs_lib.load(spec)
  config.unlock()
  config.model.update(init="random", variant="ViT-T/8", overrides={"context_length": 16})
  config.data.update(dataset="domain_shapes/small", data_dir=data_dir)
  config.update(batch_size=16, steps=4, log_every=2, checkpoint_every=2)
  config.eval.batch_size = 64

  def merge(node, changes):
    for key, value in changes.items():
      if isinstance(value, dict) and key in node and hasattr(node[key], "items"):
        merge(node[key], value)
      else:
        node[key] = value

  for layer in (*layers, updates):
    merge(config, layer)
  config.lock()
  return config


def write_finished_run(path, steps, result):
  """What a finished training run leaves (its last checkpoint, final/ with its marker, results.json), for tests
  whose stand-in runs train nothing."""
  os.makedirs(os.path.join(path, "checkpoints", str(steps)), exist_ok=True)
  os.makedirs(os.path.join(path, "final"), exist_ok=True)
  open(os.path.join(path, "final", "flyp_clip.json"), "w").write("{}")
  open(os.path.join(path, "results.json"), "w").write(json.dumps(result))


def use_small_suites(monkeypatch, names=("domain_shapes",), first=None):
  """The demo suites `names` (their first `first` datasets) and the demo's validation set on domain_shapes/small."""
  from flyp_jax.data import suites
  for name in names:
    monkeypatch.setitem(suites.SUITES, name, tuple(dataclasses.replace(d, tfds_name="domain_shapes/small")
                                                   for d in suites.SUITES[name][:first]))
  monkeypatch.setitem(suites.VALIDATION, "domain_shapes",
                      dataclasses.replace(suites.VALIDATION["domain_shapes"], tfds_name="domain_shapes/small"))
