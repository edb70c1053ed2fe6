"""The ``wassnet`` command line.

Every subcommand reports bad input as one line (``Error: ...``) with exit code 1
(click's usage errors: 2), never a traceback.
"""

from __future__ import annotations

import click

from wassnet import __version__
from wassnet.clitools import ErrorLineGroup, emit, parse_shape


@click.group(cls=ErrorLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    shape = parse_shape(input_shape)
    critic = make_critic(arch, shape, out_features=out_features)
    cert = lipschitz_bound(critic, shape)
    emit(cert, as_json, cert.summary)


# Command groups of the other jobs live beside their code; each registers here.
# (Imported lazily inside their commands, so `wassnet --help` stays fast.)
from wassnet.w1.cli import estimate  # noqa: E402

main.add_command(estimate)
from wassnet.certify.cli import classify  # noqa: E402

main.add_command(classify)
from wassnet.gan.cli import gan  # noqa: E402

main.add_command(gan)


if __name__ == "__main__":  # pragma: no cover
    main()
