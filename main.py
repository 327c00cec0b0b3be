"""Train and evaluate a method: python main.py --config=configs/flyp.py[:preset] [--workdir=DIR] [--config.x=y].

Prints the progress lines, the evaluations and the final table. -v (or --verbosity=0) adds the libraries' logs
(absl, orbax, TFDS); --verbose adds them and shows the traceback of an error, which is otherwise one paragraph
`error: ...` with exit status 2.
"""

import atexit
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from flyp_jax.errors import USAGE_ERROR_EXIT, run_reporting_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "method config file, optionally :preset", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (default: workdirs/<config.name>)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "one of several processes (a TPU pod slice: one per host)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, outside Cloud TPU")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes of the job, with --coordinator_address")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's id, with --coordinator_address")
_VERBOSE = flags.DEFINE_bool("verbose", False, "the libraries' logs, and the traceback of an error")
_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def normalise_argv(argv: list[str]) -> list[str]:
  """The command line as absl and the config checks expect it.

  `--config FILE` (a space, which absl accepts) becomes `--config=FILE`, so the unknown-key check below sees the
  file; a bare `-v` (absl's needs a level) means `--verbosity=0`, the libraries' INFO logs. Fields after the
  preset, as big_vision writes them (`--config=configs/flyp.py:imagenet_b16,batch_size=256,optimizer.lr=1e-5`),
  become `--config.batch_size=256 --config.optimizer.lr=1e-5` in their place, so flags given later win.
  """
  out, i = [argv[0]], 1
  while i < len(argv):
    arg = argv[i]
    if arg == "--config" and i + 1 < len(argv):
      arg, i = f"--config={argv[i + 1]}", i + 1
    elif arg == "-v" and not (i + 1 < len(argv) and argv[i + 1].lstrip("-").isdigit()):
      arg = "--verbosity=0"
    if arg.startswith("--config=") and "," in arg.partition(":")[2]:
      preset, *fields = arg.split(",")
      bad = [f for f in fields if "=" not in f]
      if bad:
        print(f"error: config field {bad[0]!r} in {arg[len('--config='):]!r} has no value: write "
              f"FILE:PRESET,KEY=VALUE,... (e.g. --config=configs/flyp.py:demo,steps=100)", file=sys.stderr)
        sys.exit(USAGE_ERROR_EXIT)
      out.append(preset.rstrip(":"))
      out.extend(f"--config.{f}" for f in fields)
      i += 1
      continue
    out.append(arg)
    i += 1
  return out


def verbosity(argv: list[str]):
  """The absl verbosity the command line asks for (-v N, --verbosity=N, ...), or None if it names none."""
  level = None
  for i, arg in enumerate(argv):
    name, eq, value = arg.partition("=")
    if name in ("-v", "--v", "--verbosity", "-verbosity"):
      if not eq:
        value = argv[i + 1] if i + 1 < len(argv) else ""
      try:
        level = int(value)
      except ValueError:
        pass  # absl reports the bad value
  return level


_quiet = False  # set for a command line that asks for no verbosity


def quiet_libraries() -> None:
  """Only warnings and errors from the libraries: their INFO logs (hundreds of orbax lines) bury the progress.

  Called once absl has parsed the flags (it sets the log level from --verbosity while parsing).
  """
  absl_logging.set_verbosity(absl_logging.WARNING)
  # orbax and TFDS log through absl's logger, warnings included (e.g. a dataset folder without its info file,
  # which the error that follows explains); this package's own warnings (root logger) still show.
  logging.getLogger("absl").setLevel(logging.ERROR)
  # TensorFlow's deprecation notices (warnings about TFDS's own calls, nothing the user can change).
  logging.getLogger("tensorflow").setLevel(logging.ERROR)
  # A background save that fails (a full disk) is logged by orbax with its traceback, and tensorstore's callbacks
  # then raise into the closed event loop, over and over (exceptions Python ignores and prints): hundreds of lines,
  # while the project's own paragraph says what happened and what to do. -v shows them.
  logging.getLogger("absl").addFilter(lambda record: f"{os.sep}orbax{os.sep}" not in record.pathname)
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # orbax's failed write tasks, when collected
  sys.unraisablehook = lambda u: logging.debug("ignored exception in %r: %s: %s", u.object, u.exc_type.__name__,
                                               u.exc_value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _quiet:
    quiet_libraries()

  from flyp_jax import parallel, train

  def run():
    logging.info("main.py %s\nconfig:\n%s", " ".join(sys.argv[1:]), _CONFIG.value)  # with -v: what ran
    parallel.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    train.main(_CONFIG.value, _WORKDIR.value)

  try:
    run_reporting_errors(run, verbose=_VERBOSE.value or flags.FLAGS.verbosity >= 1)
  except train.Preempted as stop:
    # The run is saved and closed (the loop's and the workdir lock's cleanup have run). A library's input thread
    # (TFDS streaming a large split) can still keep the interpreter from exiting, so leave now, once every
    # process is here (the last of them may still be finishing its share of the checkpoint).
    parallel.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(stop.code)
  except SystemExit as stop:  # an error in the input, said in one paragraph
    # A library's thread can hold the interpreter past it too (orbax's writer of a checkpoint that met a full disk):
    # run the exit handlers, then leave without waiting for such threads.
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(stop.code if isinstance(stop.code, int) else 1)


def help_text() -> str:
  """This file's docstring and the methods' config files with their presets, for --help."""
  from flyp_jax import configs_lib
  lines = [__doc__.rstrip(), "", "Methods (--config=FILE[:PRESET]; the first preset is the default):"]
  for name, description, presets in configs_lib.catalogue():
    lines += [f"  {name}: {description}", f"      presets: {', '.join(presets)}"]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.argv = normalise_argv(sys.argv)
  level = verbosity(sys.argv)
  verbose = "--verbose" in sys.argv or (level is not None and level >= 1)
  if level is None and not verbose:
    _quiet = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up lines; read at its import
  if any(arg in _HELP for arg in sys.argv[1:]):
    # Printed here rather than by absl, whose --help exits with status 1, as a failure.
    sys.modules["__main__"].__doc__ = help_text()  # app.usage prints the main module's docstring above the flags
    full = "--helpfull" in sys.argv
    if full:
      import jax
      jax.config.config_with_absl()
    app.usage(shorthelp=not full, writeto_stdout=True)
    sys.exit(0)
  flags.mark_flag_as_required("config")
  from flyp_jax import configs_lib

  def check_config():
    if not any(arg.startswith("--config=") for arg in sys.argv):
      return ("--config is required: the method's config file, e.g. --config=configs/flyp.py (the offline demo); "
              "python main.py --help lists the config files and their presets")
    # The config file found from the working directory, else from the repository (main.py run from elsewhere).
    sys.argv[:] = configs_lib.resolve_args(sys.argv)
    return configs_lib.unknown_override(sys.argv[1:])  # ml_collections' own message names neither key nor fix

  problem = run_reporting_errors(check_config, verbose=verbose)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(USAGE_ERROR_EXIT)
  import jax
  jax.config.config_with_absl()  # JAX's own options as flags: --jax_debug_nans, --jax_log_compiles, ...
  app.run(main)
