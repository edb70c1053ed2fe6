"""wassnet's own error types (torch-free, imported by every module that raises them).

:class:`WassnetError` is the base of every error wassnet raises on purpose; the CLI
prints it as one line. Subclasses also derive from the matching built-in type, so
``except ValueError`` keeps working for callers that used it.
"""

from __future__ import annotations

__all__ = ["InputError", "WassnetError"]


class WassnetError(Exception):
    """Base of the errors wassnet raises on purpose (its message is one clear line)."""


class InputError(WassnetError, ValueError):
    """Bad user input: the message is one clear line that names the input and the problem."""
