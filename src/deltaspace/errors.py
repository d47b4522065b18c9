"""The library's exception types for *expected* failures, the ones a user can fix.

The command line prints these as one line (no traceback); anything else is a bug and keeps its traceback.
Each subclasses the builtin that code written before this module expected (``ValueError`` or
``FileNotFoundError``), so ``except ValueError`` in callers of the Python API keeps working.

This module imports nothing, so any layer may raise these.
"""

from __future__ import annotations


class DeltaspaceError(Exception):
    """Base of every expected failure: the message names the problem, the offending value and the fix."""


class UserInputError(DeltaspaceError, ValueError):
    """A bad argument, option, config value or task spec."""


class MissingFileError(DeltaspaceError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class MissingAssetError(MissingFileError):
    """A packaged model or task is not in the cache; the message says to run ``deltaspace fetch``."""


class BrokenFileError(DeltaspaceError, ValueError):
    """A file exists but cannot be used: empty, truncated, not UTF-8, malformed JSON / CSV / YAML."""


class RunMismatchError(DeltaspaceError, ValueError):
    """A run directory holds a run trained with other settings than the ones asked for."""


class RunDirectoryError(DeltaspaceError, FileExistsError):
    """An output directory that may not be written to or cleared (a finished run, or files not ours)."""
