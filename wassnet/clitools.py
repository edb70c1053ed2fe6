"""Shared pieces of the ``wassnet`` command line (used by every command group).

Errors and exit codes, the same for every subcommand:

* ``0``: done;
* ``1``: a :class:`wassnet.errors.WassnetError` (bad input, corrupt file, run folder in
  use, diverged training) or an ``OSError`` (missing file, full disk), printed as one
  line ``Error: ...``;
* ``2``: a usage error (unknown option, bad value), found before any work starts,
  printed as one line ``Error: ... (see 'wassnet CMD --help')``;
* ``130``: interrupted by Ctrl-C (trainers checkpoint first and say how to continue).

Any other exception is a bug in wassnet and keeps its full traceback. wassnet's own
warnings (:class:`wassnet.errors.WassnetWarning`) print as one line ``Note: ...``.

The options shared by several subcommands (``--device``, ``--seed``, ``--threads``,
``--quiet``, ``--json``, ``--limit``, ``--iters``) are defined once here so they are
spelled, typed and documented the same everywhere. This module is torch-free: it is
imported by ``wassnet --help``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from wassnet.deprecation import REMOVED_IN, WassnetDeprecationWarning, deprecated_alias
from wassnet.errors import WassnetError, WassnetWarning
from wassnet.jsonio import strict_json
from wassnet.norms import CLI_KEYS

__all__ = [
    "INTERRUPTED",
    "USER_ERRORS",
    "Device",
    "ErrorLineGroup",
    "Finite",
    "Renamed",
    "RunFolderPath",
    "check_new_file",
    "data_root_option",
    "device_option",
    "emit",
    "force_option",
    "given_options",
    "iters_option",
    "json_option",
    "limit_option",
    "norm_option",
    "parse_shape",
    "quiet_option",
    "saved_config",
    "seed_option",
    "set_threads",
    "strict_json",
    "threads_option",
    "with_options",
]

#: Exceptions reported as one line (exit code 1): wassnet's own errors and the OS's.
USER_ERRORS: tuple[type[BaseException], ...] = (WassnetError, OSError)
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line, ``Error: ... (see 'wassnet CMD --help')``, exit 2
    (click's own takes three: usage, hint and error)."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {_one_line(self).rstrip('.')}{hint}", err=True)

    def format_message(self) -> str:
        return self.message


def _one_line_usage(exc: click.UsageError) -> OneLineUsageError:
    if isinstance(exc, OneLineUsageError):
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


class ErrorLineGroup(click.Group):
    """A click group that prints wassnet's errors and usage errors as one line each and
    maps Ctrl-C to 130."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_note(warnings.showwarning)
                return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except USER_ERRORS as exc:
            raise click.ClickException(_one_line(exc)) from None
        except KeyboardInterrupt as exc:
            click.echo(str(exc) or "interrupted", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None


def _show_note(default: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints wassnet's own notes as one line, ``Note: ...``
    (deprecation notes only on a terminal)."""

    def show(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if issubclass(category, WassnetDeprecationWarning):
            # an old spelling: a note for a person at a terminal; output that a program
            # reads (a pipe, --json) stays as the 0.1 spelling produced it
            if _stderr_is_terminal():
                click.echo(f"Note: {_one_line(message)}", err=True)
        elif issubclass(category, WassnetWarning):
            click.echo(f"Note: {_one_line(message)}", err=True)
        else:
            default(message, category, *args, **kwargs)

    return show


def _stderr_is_terminal() -> bool:
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 500 else text[:497] + "..."


class Finite(click.ParamType):
    """A finite float (never NaN or inf), optionally within ``[low, high]``.

    ``click.FloatRange`` lets ``nan`` through (every comparison with NaN is false);
    this type refuses it, and ``inf``, at parse time (exit code 2).
    """

    name = "number"

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        open_low: bool = False,
        open_high: bool = False,
    ) -> None:
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (number < self.low or (self.open_low and number == self.low)):
            side = ">" if self.open_low else ">="
            self.fail(f"{value} is not {side} {self.low:g}", param, ctx)
        if self.high is not None and (
            number > self.high or (self.open_high and number == self.high)
        ):
            side = "<" if self.open_high else "<="
            self.fail(f"{value} is not {side} {self.high:g}", param, ctx)
        return number


_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


class Device(click.ParamType):
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked at parse time (torch-free).

    Only the spelling is checked here; :func:`device_option` checks that a GPU device is
    present while the options are parsed, before any work (one line, exit code 1).
    """

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        text = str(value).strip().lower()
        if not _DEVICE.match(text):
            self.fail(f"{value!r} is not a device: use cpu, cuda, cuda:N or mps", param, ctx)
        return text


def _device_present(ctx: click.Context, param: click.Parameter, value: str | None):
    """``--device``'s callback: a GPU that is not there is one line (exit 1) before any
    work; torch is imported only when a GPU is asked for (the command imports it anyway)."""
    if value is not None and value != "cpu":
        from wassnet.runtime import resolve_device

        try:
            resolve_device(value)
        except WassnetError as exc:
            raise click.ClickException(_one_line(exc)) from None
    return value


def device_option(f: F) -> F:
    """``--device``: where to compute (default: a GPU when one is present, else the CPU)."""
    return click.option(
        "--device",
        type=Device(),
        default=None,
        callback=_device_present,
        help="cpu, cuda, cuda:N (default: a GPU if present)",
    )(f)


class Seed(click.ParamType):
    """A seed: an integer from 0 to 2^63 - 1, what NumPy (non-negative) and torch (64
    bits) both take (:func:`wassnet.runtime.check_seed`, torch-free here)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        try:
            seed = int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not an integer", param, ctx)
        if not 0 <= seed < 2**63:
            self.fail(f"{value} is not a seed: use an integer from 0 to 2^63 - 1", param, ctx)
        return seed


def seed_option(f: F) -> F:
    """``--seed``: the run's random seed, 0 to 2^63 - 1 (same seed, same result on the
    same machine)."""
    return click.option(
        "--seed", type=Seed(), default=0, show_default=True, help="random seed (>= 0)"
    )(f)


def threads_option(f: F) -> F:
    """``--threads``: torch's intra-op CPU threads (default: torch's choice)."""
    return click.option(
        "--threads", type=click.IntRange(1), default=None, help="CPU threads for torch"
    )(f)


def quiet_option(f: F) -> F:
    """``--quiet``: no progress bar."""
    return click.option("--quiet", is_flag=True, help="no progress bar")(f)


def json_option(f: F) -> F:
    """``--json``: print the result as strict JSON (``null`` for NaN)."""
    return click.option("--json", "as_json", is_flag=True, help="print the result as JSON")(f)


class Renamed(click.Option):
    """An option that also accepts its old spellings, hidden from ``--help``.

    ``click.option("--limit", "limit", cls=Renamed, old=("--train-limit",))``: both
    spellings set ``limit`` (given on the command line either way, so a continued run
    treats them alike); only ``--limit`` is documented; an old spelling warns
    (:func:`wassnet.deprecation.deprecated_alias`, naming ``removed_in``); both spellings
    at once are a usage error (exit 2) rather than a silent last-one-wins.
    """

    def __init__(
        self,
        param_decls: list[str],
        old: tuple[str, ...] = (),
        removed_in: str = REMOVED_IN,
        **attrs: Any,
    ) -> None:
        super().__init__(list(param_decls), **attrs)
        self.old_names = tuple(old)
        self.removed_in = removed_in

    @property
    def _old_dest(self) -> str:
        return f"{self.name}\x00old"

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        if self.old_names:  # the old spellings store apart, so that a conflict is seen
            parser.add_option(
                obj=self, opts=self.old_names, dest=self._old_dest, action="store", nargs=1
            )

    def handle_parse_result(self, ctx: click.Context, opts: Any, args: list[str]) -> Any:
        if self._old_dest in opts:
            spelled = " or ".join(self.old_names)
            if self.name in opts:
                raise click.UsageError(
                    f"{spelled} is the old spelling of {self.opts[0]} (removed in wassnet "
                    f"{self.removed_in}): give one of them",
                    ctx,
                )
            deprecated_alias(spelled, self.opts[0], self.removed_in)
            opts = {**opts, self.name: opts[self._old_dest]}
        return super().handle_parse_result(ctx, opts, args)


def with_options(decorators: tuple[Callable[[F], F], ...]) -> Callable[[F], F]:
    """Apply a command's option decorators listed in ``--help`` order (a long list of
    options reads better as data than as a stack of decorators on the command)."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def norm_option(help_text: str) -> Callable[[F], F]:
    """``--norm 2|inf|1``: the lp norm of a certificate (default 2)."""
    return click.option(
        "--norm",
        type=click.Choice(CLI_KEYS),
        default="2",
        show_default=True,
        help=help_text,
    )


def limit_option(what: str, *old: str) -> Callable[[F], F]:
    """``--limit N``: use only the first N of ``what``; ``old``: hidden old spellings."""
    return click.option(
        "--limit",
        "limit",
        cls=Renamed,
        old=old,
        type=click.IntRange(1),
        default=None,
        help=f"use only the first N {what}",
    )


def iters_option(default: int | None, *old: str) -> Callable[[F], F]:
    """``--iters N``: Björck / BCOP iterations per constrained layer."""
    shown = f" [default: {default}]" if default is not None else ""
    return click.option(
        "--iters",
        "iters",
        cls=Renamed,
        old=old,
        type=click.IntRange(1),
        default=default,
        help=f"Björck/BCOP iterations per layer{shown}",
    )


def data_root_option(f: F) -> F:
    """``--data-root``: the image-data folder (torchvision layout)."""
    return click.option(
        "--data-root",
        type=click.Path(file_okay=False),
        default=None,
        help="image data folder (default: $WASSNET_DATA or ~/.cache/wassnet/data)",
    )(f)


class RunFolderPath(click.Path):
    """``--out`` of a trainer: a folder path, refused before any work when it is empty
    (``''`` would be the current folder), names an existing file, or lies under a file."""

    def __init__(self) -> None:
        super().__init__(file_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        import os

        text = os.fspath(value)
        if not text.strip():
            self.fail("the run folder cannot be empty: name a folder", param, ctx)
        if "\x00" in text:
            self.fail(f"{text!r} is not a valid folder name", param, ctx)
        parent = os.path.dirname(os.path.abspath(text))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
        if parent and not os.path.isdir(parent):
            self.fail(f"{text!r} lies under {parent!r}, which is a file", param, ctx)
        return super().convert(text, param, ctx)


def force_option(f: F) -> F:
    """``--force``: allow replacing an existing output file."""
    return click.option("--force", is_flag=True, help="replace the output file if it exists")(f)


def check_new_file(path: str | None, force: bool, option: str, suffixes: tuple[str, ...] = ()):
    """Refuse (usage error, before any work) an output file that exists without ``--force``,
    whose folder is missing, or whose name lacks one of ``suffixes``."""
    if path is None:
        return
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder} does not exist", param_hint=option)
    import tempfile

    try:  # a real write: permission bits say nothing to root, or of read-only mounts
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise click.BadParameter(
            f"cannot write into folder {folder}: {exc.strerror or exc}", param_hint=option
        ) from None
    if suffixes and not path.lower().endswith(suffixes):
        names = ", ".join(suffixes)
        raise click.BadParameter(f"{path}: use a file name ending in {names}", param_hint=option)
    if os.path.exists(path) and not force:
        raise click.BadParameter(f"{path} exists: pass --force to replace it", param_hint=option)


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (torch is imported only when it is given)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def saved_config(checkpoint: Any, kind: str, required: bool = False) -> dict[str, Any] | None:
    """The config saved in a run folder's checkpoint, or None when there is no run yet.

    ``required`` (the old ``--resume`` flag): a missing checkpoint is an error.
    """
    from pathlib import Path

    path = Path(checkpoint)
    if not path.exists():
        if required:
            raise click.UsageError(
                f"no run to continue in {str(path.parent)!r} (no {path.name} yet): run the "
                "command without --resume to start one"
            )
        return None
    from wassnet.checkpoint import load_checkpoint

    config = load_checkpoint(path, kind=kind).get("config")
    if not isinstance(config, dict):
        from wassnet.errors import CheckpointError

        raise CheckpointError(f"{str(path)!r} has no saved config: not a wassnet run")
    return config


def given_options(ctx: click.Context, names: Any) -> set[str]:
    """Which of ``names`` were given on the command line (any spelling)."""
    source = click.core.ParameterSource.COMMANDLINE
    return {name for name in names if ctx.get_parameter_source(name) is source}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,28,28"`` (or ``"1x28x28"``, ``"784"``) as a tuple of positive ints."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 784 or 1,28,28") from None
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"{text!r} is not a shape like 784 or 1,28,28")
    return shape


def emit(result: Any, as_json: bool, summary: Callable[[], str] | None = None) -> None:
    """Print ``result.to_dict()`` as strict JSON (``null`` for NaN), or its summary.

    ``summary`` defaults to ``result.summary`` (every result has ``to_dict()`` and
    ``summary()``).
    """
    if as_json:
        click.echo(json.dumps(strict_json(result.to_dict()), indent=2, allow_nan=False))
    else:
        click.echo((summary or result.summary)())
