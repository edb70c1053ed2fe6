"""Shared pieces of the ``wassnet`` command line (used by every command group).

Bad input and environment problems are reported as one line (``Error: ...``) with exit
code 1 (click's usage errors: 2), never as a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from wassnet.jsonio import strict_json

__all__ = ["USER_ERRORS", "ErrorLineGroup", "emit", "parse_shape", "strict_json"]

#: Exceptions that are the user's input or environment, reported as one line.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, RuntimeError)


class ErrorLineGroup(click.Group):
    """A click group that turns user-facing exceptions into one clear error line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except USER_ERRORS as exc:
            raise click.ClickException(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 500 else text[:497] + "..."


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,28,28"`` (or ``"1x28x28"``, ``"784"``) as a tuple of positive ints."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 784 or 1,28,28") from None
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"{text!r} is not a shape like 784 or 1,28,28")
    return shape


def emit(result: Any, as_json: bool, summary: Callable[[], str]) -> None:
    """Print ``result.to_dict()`` as strict JSON (``null`` for NaN), or ``summary()``."""
    if as_json:
        click.echo(json.dumps(strict_json(result.to_dict()), indent=2, allow_nan=False))
    else:
        click.echo(summary())
