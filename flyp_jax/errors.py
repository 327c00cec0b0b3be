"""The errors a user can fix: something in what the command was given (config, paths, data, checkpoints).

Every check of the project raises one of these, with one paragraph that says what is wrong and how to fix it;
`main.py` prints that paragraph alone (`error: ...`, exit status 2). Anything else that escapes is a bug, in this
project or a library, and keeps its traceback. Each kind also derives from the built-in exception a caller would
catch for it (a missing file is a FileNotFoundError), so `except ValueError` keeps working.
"""

import sys


class UserError(Exception):
  """Something in the command's input is wrong; the message says what and how to fix it."""


class BadValue(UserError, ValueError):
  """A config value, argument or data content that cannot be used."""


class NotFound(UserError, FileNotFoundError):
  """A file or folder the command names does not exist."""


class AlreadyExists(UserError, FileExistsError):
  """A file or folder the command would write is already there."""


class NotPermitted(UserError, PermissionError):
  """A file or folder the command needs cannot be read or written."""


class StorageFull(UserError, OSError):
  """A write found its storage full: the message names the file, what is kept (`kept`, e.g. the newest complete
  checkpoint, where the caller knows it) and what to do."""

  def __init__(self, path: str, kept: str = ""):
    super().__init__(
        f"writing {path} failed: no space left on device (its storage is full). What was written before is kept"
        f"{kept} and nothing half-written is read again. Make room there (or copy the workdir to a larger disk and "
        f"name the copy with --workdir), then run the same command again: what is finished is not done again.")
    self.path = path


class Diverged(UserError, FloatingPointError):
  """Training produced a non-finite loss."""


USAGE_ERROR_EXIT = 2  # as argparse's usage errors: the command needs changing, not re-running


def error_message(e: BaseException):
  """The message of an error in what the command was given (config, paths, data, checkpoints), or None.

  The project raises these (`UserError`) with one paragraph that says what is wrong and how to fix it, so the
  traceback adds nothing for the user; anything else is a bug and keeps its traceback.
  """
  return (str(e) or type(e).__name__) if isinstance(e, UserError) else None


INTERNAL_ERROR = ("internal error (a bug in flyp_jax or a library it uses, not in your command): please report it "
                  "to the flyp_jax issue tracker with this output, the command and `pip freeze`. The traceback:")


def run_reporting_errors(fn, *args, verbose: bool):
  """fn(*args) for a command line: an error in the input is printed as `error: ...` (exit status 2), its traceback
  only if verbose; any other error is announced as internal and keeps its traceback (exit status 1)."""
  try:
    return fn(*args)
  except Exception as e:  # the mapping of every user error to its message is here, in one place
    message = error_message(e)
    if message is None:
      print(INTERNAL_ERROR, file=sys.stderr, flush=True)
      raise
    if verbose:
      raise
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR_EXIT)
