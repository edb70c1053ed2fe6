"""The ``wassnet`` command line.

Every subcommand reports bad input as one line (``Error: ...``) with exit code 1
(click's usage errors: 2), never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from wassnet import __version__

#: Exceptions that are the user's input or environment, reported as one line.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, RuntimeError)


class _Group(click.Group):
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


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 784 or 1,28,28") from None
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"{text!r} is not a shape like 784 or 1,28,28")
    return shape


def _emit(result: Any, as_json: bool, summary: Callable[[], str]) -> None:
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else summary())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wassnet")
def main() -> None:
    """Provably 1-Lipschitz networks: W1 estimation, WGANs, certified classifiers."""


@main.command()
@click.option(
    "--arch",
    default="conv-small",
    show_default=True,
    help="critic preset (dense, dense-small, conv-small, conv-large)",
)
@click.option(
    "--input-shape",
    "input_shape",
    default="1,28,28",
    show_default=True,
    help="shape of one input, e.g. 2 or 1,28,28",
)
@click.option("--out-features", default=1, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="print the certificate as JSON")
def bound(arch: str, input_shape: str, out_features: int, seed: int, as_json: bool) -> None:
    """Build a critic and print its certified Lipschitz bound, layer by layer."""
    import torch

    from wassnet.critics import make_critic
    from wassnet.nn import lipschitz_bound

    torch.manual_seed(seed)
    shape = _shape(input_shape)
    critic = make_critic(arch, shape, out_features=out_features)
    cert = lipschitz_bound(critic, shape)
    _emit(cert, as_json, cert.summary)


if __name__ == "__main__":  # pragma: no cover
    main()
