"""The errors a user can fix: something in what the command was given (config, paths, data, checkpoints).

Every check of the project raises one of these, with one paragraph that says what is wrong and how to fix it;
`main.py` prints that paragraph alone (`error: ...`, exit status 2). Anything else that escapes is a bug, in this
project or a library, and keeps its traceback. Each kind also derives from the built-in exception a caller would
catch for it (a missing file is a FileNotFoundError), so `except ValueError` keeps working.
"""


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


class Diverged(UserError, FloatingPointError):
  """Training produced a non-finite loss."""
