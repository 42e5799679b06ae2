"""The project's own errors: mistakes a user can fix, told in one line.

A wrong flag, a bad data file or the wrong checkpoint is not a bug in the code, and a traceback
hides the one sentence that matters. Every such mistake raises a UserError whose message names the
flag, file, line or field and what to do; the scripts call report_user_errors() first, so an
uncaught UserError prints as

    error: out/sft.pt holds a 'reward' checkpoint, not 'sft': ...

and the process exits with status 1. Any other exception is a bug and keeps its traceback.

    raise ConfigError("--n_embd 100 must be divisible by --n_head 3")
"""

import sys


class UserError(Exception):
    """A mistake in the input (a flag, a file, the data) that the user can fix."""


class ConfigError(UserError, ValueError):
    """A flag has a value the run cannot use."""


class DataError(UserError, ValueError):
    """A data file or data set cannot be trained or evaluated on."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, unreadable, of another stage, or does not fit the run."""


class MissingCheckpoint(CheckpointError, FileNotFoundError):
    """No checkpoint where one was asked for."""


def one_line(error: BaseException) -> str:
    """The message a user sees: 'error: <message>' on a single line."""
    return "error: " + " ".join(str(error).split())


def _print_user_errors(kind, error, traceback):
    if issubclass(kind, UserError):
        print(one_line(error), file=sys.stderr)
    elif issubclass(kind, KeyboardInterrupt):  # a second Ctrl-C (nanollm/runs.py StopRequest)
        print("interrupted", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, traceback)


def report_user_errors():
    """From now on an uncaught UserError prints one line (exit status 1), and so does Ctrl-C;
    other errors, bugs, print their traceback as usual."""
    sys.excepthook = _print_user_errors
