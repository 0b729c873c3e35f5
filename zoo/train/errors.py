"""Errors a user can act on. train.py prints their one-line message and exits non-zero, no traceback;
the other commands through :func:`run_command`."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ZooError(Exception):
    """Base of the errors that are the user's to fix (bad config, bad data, bad checkpoint)."""


class ConfigError(ZooError, ValueError):
    """A configuration value is invalid; the message names the key, the value and what is allowed."""


class RunDirError(ZooError):
    """The run dir cannot take this run: another process holds it, it holds another run's records, or a
    directory stands where a run file goes; the message names the dir and what to do."""


class DataError(ZooError):
    """The dataset cannot be read; the message names the path or file and what was expected."""


class CheckpointError(ZooError):
    """A checkpoint cannot be resumed from; the message says why and which file."""


class TrainingDiverged(ZooError):
    """The loss became non-finite; the message names the epoch, the step and the last checkpoint."""


class CompileFailed(ZooError):
    """torch.compile could not compile the model; the message names the model and mode, and compile=false."""


def run_command(action: Callable[[], str], errors: tuple[type[Exception], ...] = (ZooError,)) -> int:
    """A command's exit code: ``action``'s line printed and 0, or a user's mistake (one of ``errors``: a
    bad flag value, run dir, sweep dir or checkpoint) as one ``error:`` line on stderr and 2."""
    try:
        line = action()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(line)
    return 0
