"""The ``wassnet`` command line.

Every subcommand reports wassnet's errors and OS errors as one line (``Error: ...``,
exit code 1), usage errors with exit code 2 before any work, Ctrl-C with 130; any other
exception is a bug and keeps its traceback (see :mod:`wassnet.clitools`).
"""

from __future__ import annotations

import click

from wassnet import __version__
from wassnet.clitools import (
    ErrorLineGroup,
    emit,
    iters_option,
    json_option,
    norm_option,
    parse_shape,
    seed_option,
)
from wassnet.names import ARCHS, CONSTRAINTS


@click.group(cls=ErrorLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wassnet")
def main() -> None:
    """Provably 1-Lipschitz networks: W1 estimation, WGANs, certified classifiers."""


@main.command()
@click.option("--arch", type=click.Choice(list(ARCHS)), default="conv-small", show_default=True)
@click.option(
    "--constraint",
    type=click.Choice(CONSTRAINTS),
    default="orthogonal",
    show_default=True,
    help="orthogonal: Björck/BCOP (1-Lipschitz in l2); projection: plain layers, "
    "projected to norm <= 1 with --norm; none: plain layers + ReLU",
)
@click.option(
    "--input-shape",
    "input_shape",
    default="1,28,28",
    show_default=True,
    help="shape of one input, e.g. 2 or 1,28,28",
)
@click.option("--out-features", default=1, show_default=True, type=click.IntRange(1))
@norm_option("certify |f(x) - f(y)|_p <= L |x - y|_p in this lp norm")
@iters_option(20)
@seed_option
@json_option
def bound(
    arch: str,
    constraint: str,
    input_shape: str,
    out_features: int,
    norm: str,
    iters: int,
    seed: int,
    as_json: bool,
) -> None:
    """Build a network and print its certified Lipschitz bound, layer by layer."""
    import torch

    from wassnet.critics import make_critic
    from wassnet.nn import lipschitz_bound

    torch.manual_seed(seed)
    shape = parse_shape(input_shape)
    _check_bound_size(arch, shape, out_features, constraint, iters)
    critic = make_critic(arch, shape, out_features, constraint=constraint, iters=iters)
    if constraint == "projection":
        from wassnet.nn import project_

        project_(critic, norm, shape, iters=30)
    cert = lipschitz_bound(critic, shape, p=norm)
    emit(cert, as_json)


def _check_bound_size(
    arch: str, shape: tuple[int, ...], out_features: int, constraint: str, iters: int
) -> None:
    """Refuse a network too large for this machine before building it: its parameters
    are counted on torch's meta device (no memory), times four for the Björck/BCOP
    iterates, plus the input probe."""
    import math

    import torch

    from wassnet.critics import make_critic
    from wassnet.runtime import check_memory

    with torch.device("meta"):
        critic = make_critic(arch, shape, out_features, constraint=constraint, iters=iters)
    params = sum(p.numel() for p in critic.parameters())
    need = 4.0 * (4 * params + 2 * math.prod(shape))
    check_memory(need, f"--arch {arch} on --input-shape {','.join(map(str, shape))}")


@main.command()
@click.option(
    "--require-native",
    is_flag=True,
    help="exit with status 1 unless every compiled path is active and was built at "
    "install time (no compiler used at run time)",
)
@json_option
def info(require_native: bool, as_json: bool) -> None:
    """Print the version and which compiled paths are active, loaded from where (or why not)."""
    # each of these modules registers its compiled library with cbuild
    import wassnet.nn.linf
    import wassnet.ot.native
    import wassnet.ot.native_tiles
    import wassnet.ot.simplex  # noqa: F401
    from wassnet.ot.cbuild import native_report

    report = native_report(__version__)
    emit(report, as_json)
    if require_native and not report.all_installed:
        missing = [s.name for s in report.paths if not (s.active and s.origin == "installed")]
        raise click.ClickException(
            f"compiled paths not active from the install: {', '.join(missing)}"
        )


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
