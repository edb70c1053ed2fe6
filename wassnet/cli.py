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


@main.command()
@click.argument("a_path", metavar="A", type=click.Path(dir_okay=False))
@click.argument("b_path", metavar="B", type=click.Path(dir_okay=False))
@click.option("--key", help="array name inside .npz files (when they hold several)")
@click.option("--weights-a", type=click.Path(dir_okay=False), help="sample weights for A")
@click.option("--weights-b", type=click.Path(dir_okay=False), help="sample weights for B")
@click.option(
    "--exact",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="also compute the exact W1 with POT (auto: if it fits)",
)
@click.option(
    "--refine/--no-refine",
    default=None,
    help="refined bracket on the points (default: when n*m is small enough)",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="fraction held out: report the population W1 estimate with a 95% CI",
)
@click.option(
    "--floor",
    is_flag=True,
    help="also bracket W1 between two random halves of A (the sampling floor)",
)
@click.option(
    "--steps", default=1000, show_default=True, type=click.IntRange(1), help="critic training steps"
)
@click.option(
    "--time-budget",
    type=click.FloatRange(0, min_open=True),
    help="stop critic training after this many seconds",
)
@click.option(
    "--refine-budget",
    type=click.FloatRange(0, min_open=True),
    help="seconds for refining the bracket: no new round starts after them",
)
@click.option("--hidden", default="256,256", show_default=True, help="critic hidden widths")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU if present)")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="save a figure (2-D: points and critic level sets; else histograms)",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--quiet", is_flag=True, help="no progress bar")
def estimate(
    a_path: str,
    b_path: str,
    key: str | None,
    weights_a: str | None,
    weights_b: str | None,
    exact: str,
    refine: bool | None,
    holdout: float | None,
    floor: bool,
    steps: int,
    time_budget: float | None,
    refine_budget: float | None,
    hidden: str,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | None,
    plot_path: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Certified Wasserstein-1 distance between the point clouds in files A and B.

    A and B hold [n, d] and [m, d] arrays (.npy, .npz, .csv, .txt); 1-D arrays are
    points on the line, solved exactly. Prints a certified bracket lower <= W1 <= upper,
    the estimate (its midpoint) and, when it fits in memory, the exact W1 from POT.
    """
    from wassnet.estimate import estimate_w1
    from wassnet.io import check_same_dimension, load_points, load_weights

    a = load_points(a_path, key)
    b = load_points(b_path, key)
    check_same_dimension(a, b)
    wa = load_weights(weights_a, len(a)) if weights_a else None
    wb = load_weights(weights_b, len(b)) if weights_b else None
    result = estimate_w1(
        a,
        b,
        wa,
        wb,
        hidden=parse_shape(hidden),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        time_budget=time_budget,
        refine="auto" if refine is None else refine,
        refine_budget=refine_budget,
        exact=exact,
        holdout=holdout,
        floor=floor,
        seed=seed,
        device=device,
        progress=not quiet,
    )
    emit(result, as_json, result.summary)
    if plot_path:
        from wassnet.plots import plot_estimate

        plot_estimate(result, a, b, plot_path)


# Command groups of the other jobs live beside their code; each registers here.
# (Imported lazily inside their commands, so `wassnet --help` stays fast.)
from wassnet.certify.cli import classify  # noqa: E402

main.add_command(classify)
from wassnet.gan.cli import gan  # noqa: E402

main.add_command(gan)


if __name__ == "__main__":  # pragma: no cover
    main()
