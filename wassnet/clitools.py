"""Shared pieces of the ``wassnet`` command line (used by every command group).

Errors and exit codes, the same for every subcommand:

* ``0``: done;
* ``1``: a :class:`wassnet.errors.WassnetError` (bad input, corrupt file, run folder in
  use, diverged training) or an ``OSError`` (missing file, full disk), printed as one
  line ``Error: ...``;
* ``2``: a usage error (unknown option, bad value), found before any work starts;
* ``130``: interrupted by Ctrl-C (trainers checkpoint first and say how to continue).

Any other exception is a bug in wassnet and keeps its full traceback.

The options shared by several subcommands (``--device``, ``--seed``, ``--threads``,
``--quiet``, ``--json``, ``--limit``, ``--iters``) are defined once here so they are
spelled, typed and documented the same everywhere. This module is torch-free: it is
imported by ``wassnet --help``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from wassnet.errors import WassnetError
from wassnet.jsonio import strict_json

__all__ = [
    "INTERRUPTED",
    "USER_ERRORS",
    "Device",
    "ErrorLineGroup",
    "Finite",
    "Renamed",
    "check_new_file",
    "continued_options",
    "data_root_option",
    "device_option",
    "emit",
    "force_option",
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
]

#: Exceptions reported as one line (exit code 1): wassnet's own errors and the OS's.
USER_ERRORS: tuple[type[BaseException], ...] = (WassnetError, OSError)
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


class ErrorLineGroup(click.Group):
    """A click group that prints wassnet's errors as one line and maps Ctrl-C to 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except USER_ERRORS as exc:
            raise click.ClickException(_one_line(exc)) from None
        except KeyboardInterrupt as exc:
            click.echo(str(exc) or "interrupted", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None


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

    Whether the device is present is checked when the command starts (by
    :func:`wassnet.runtime.resolve_device`), with one clear line.
    """

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        text = str(value).strip().lower()
        if not _DEVICE.match(text):
            self.fail(f"{value!r} is not a device: use cpu, cuda, cuda:N or mps", param, ctx)
        return text


def device_option(f: F) -> F:
    """``--device``: where to compute (default: a GPU when one is present, else the CPU)."""
    return click.option(
        "--device",
        type=Device(),
        default=None,
        help="cpu, cuda, cuda:N (default: a GPU if present)",
    )(f)


def seed_option(f: F) -> F:
    """``--seed``: the run's random seed (same seed, same result on the same machine)."""
    return click.option("--seed", type=int, default=0, show_default=True, help="random seed")(f)


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
    spellings set ``limit``; only ``--limit`` is documented.
    """

    def __init__(self, param_decls: list[str], old: tuple[str, ...] = (), **attrs: Any) -> None:
        super().__init__([*param_decls, *old], **attrs)
        self.old_names = tuple(old)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts = self.opts
        self.opts = [o for o in opts if o not in self.old_names]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def norm_option(help_text: str) -> Callable[[F], F]:
    """``--norm 2|inf|1``: the lp norm of a certificate (default 2)."""
    return click.option(
        "--norm",
        type=click.Choice(["2", "inf", "1"]),
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


def continued_options(
    ctx: click.Context, options: dict[str, Any], saved: dict[str, Any] | None
) -> dict[str, Any]:
    """The options of a run: ``options`` for a new run; for a run being continued, its
    ``saved`` options with those given on this command line on top (the trainer then
    refuses the changes a run cannot take)."""
    if saved is None:
        return options
    source = click.core.ParameterSource.COMMANDLINE
    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) is source}
    return {**saved, **given}


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
