"""wassnet's own error types (torch-free, imported by every module that raises them).

:class:`WassnetError` is the base of every error wassnet raises on purpose: bad input,
a file that is not what it should be, a run folder in use, a diverged training run.
The command line prints these (and ``OSError``) as one line, ``Error: ...``, with exit
code 1; any other exception is a bug and keeps its traceback.

Each subclass also derives from the matching built-in type, so ``except ValueError``
(or ``TypeError``, ``RuntimeError``) keeps working for callers that used it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "InputError",
    "InputTypeError",
    "RunFolderError",
    "TrainingError",
    "WassnetError",
    "WassnetWarning",
]


class WassnetError(Exception):
    """Base of the errors wassnet raises on purpose (its message is one clear line)."""


class InputError(WassnetError, ValueError):
    """Bad user input: the message names the input and the problem."""


class InputTypeError(InputError, TypeError):
    """An input of the wrong type (also a ``TypeError``)."""


class CheckpointError(WassnetError, ValueError):
    """A checkpoint is missing, unreadable, corrupt, or not the kind that was expected."""


class RunFolderError(WassnetError, RuntimeError):
    """A run folder cannot be used: another process holds it, or it holds another run."""


class TrainingError(WassnetError, RuntimeError):
    """Training cannot go on (for example the loss diverged to NaN or infinity)."""


class WassnetWarning(UserWarning):
    """A note wassnet gives without stopping (e.g. a checkpoint too old to be verified);
    the command line prints it as one line, ``Note: ...``."""
