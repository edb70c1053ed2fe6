"""``wassnet estimate``: the W1 job's command (registered by :mod:`wassnet.cli`).

Heavy imports (torch, POT) happen inside the command, so ``wassnet --help`` stays fast.
"""

from __future__ import annotations

import click

from wassnet.clitools import (
    Finite,
    check_new_file,
    device_option,
    emit,
    force_option,
    json_option,
    parse_shape,
    quiet_option,
    seed_option,
    set_threads,
    threads_option,
)
from wassnet.names import METRICS
from wassnet.w1.options import CRITICS, DEFAULT_CRITICS, ROUTES

__all__ = ["estimate"]

_FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _image_shape(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    shape = parse_shape(text)
    if len(shape) != 3:
        raise click.BadParameter(f"{text!r}: use C,H,W (e.g. 1,28,28)", param_hint="--image-shape")
    return shape  # type: ignore[return-value]


def _population_options(
    confidence: float, folds: int, critics: str, budget: float, image_shape: str | None
):
    """The population options, checked before any work (bad values: a usage error)."""
    from wassnet.w1.options import PopulationOptions

    names = tuple(c.strip() for c in critics.split(",") if c.strip())
    unknown = [c for c in names if c not in CRITICS]
    if not names or unknown:
        raise click.BadParameter(
            f"{critics!r}: use a comma-separated list of {', '.join(CRITICS)}",
            param_hint="--critics",
        )
    shape = _image_shape(image_shape)
    if "conv" in names and shape is None:
        raise click.BadParameter("the conv critic needs --image-shape", param_hint="--critics")
    return PopulationOptions(
        confidence=confidence,
        folds=folds,
        critics=names,
        time_budget=budget,
        image_shape=shape,
    )


@click.command()
@click.argument("a_path", metavar="A", type=click.Path(dir_okay=False))
@click.argument("b_path", metavar="B", type=click.Path(dir_okay=False))
@click.option("--key", help="array name inside .npz files (when they hold several)")
@click.option("--weights-a", type=click.Path(dir_okay=False), help="sample weights for A")
@click.option("--weights-b", type=click.Path(dir_okay=False), help="sample weights for B")
@click.option(
    "--target",
    type=click.Choice(["sample", "population", "both"]),
    default="both",
    show_default=True,
    help="sample: W1 between the two given samples (certified bracket); population: "
    "between the distributions they come from (confidence bracket); both",
)
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default="euclidean",
    show_default=True,
    help="ground cost: euclidean (l2), cityblock (l1) or chebyshev (l-inf), as in "
    "scipy's cdist; the population critics are certified 1-Lipschitz in that norm",
)
@click.option(
    "--route",
    type=click.Choice(["auto", *ROUTES]),
    default="auto",
    show_default=True,
    help="how the sample bracket is computed (auto: by size and weights)",
)
@click.option(
    "--time-budget",
    type=Finite(0, open_low=True),
    help="seconds for the whole command, from its start (loading included): return the "
    "best certified bracket found by then (see README: the guarantee and its slack)",
)
@click.option(
    "--tol",
    type=Finite(0),
    default=1e-9,
    show_default=True,
    help="stop once upper - lower <= tol * upper",
)
@click.option(
    "--exact",
    type=click.Choice(["auto", "always", "never"]),
    default="never",
    show_default=True,
    help="also compute POT's exact W1 as a reference (auto: when the matrix is small)",
)
@click.option(
    "--floor/--no-floor",
    default=None,
    help="bracket W1 between two random halves of A (default: with the population, "
    "up to 40 000 points)",
)
@click.option(
    "--confidence",
    type=Finite(0.5, 1, open_high=True),
    default=0.95,
    show_default=True,
    help="level of the population bracket",
)
@click.option(
    "--folds",
    type=click.IntRange(2),
    default=2,
    show_default=True,
    help="cross-fitting folds of the population critics",
)
@click.option(
    "--critics",
    default=",".join(DEFAULT_CRITICS),
    show_default=True,
    help="critic families tried on each fold (the best on validation is kept); "
    "add conv for images (with --image-shape)",
)
@click.option(
    "--image-shape",
    help="C,H,W of flattened images, for the conv critic (e.g. 1,28,28)",
)
@click.option(
    "--critic-budget",
    type=Finite(0, open_low=True),
    default=60.0,
    show_default=True,
    help="seconds for all the population critic fits",
)
@seed_option
@device_option
@threads_option
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="save a figure (2-D: points, plan and potential; else potential histograms)",
)
@force_option
@json_option
@quiet_option
def estimate(
    a_path: str,
    b_path: str,
    key: str | None,
    weights_a: str | None,
    weights_b: str | None,
    target: str,
    metric: str,
    route: str,
    time_budget: float | None,
    tol: float,
    exact: str,
    floor: bool | None,
    confidence: float,
    folds: int,
    critics: str,
    critic_budget: float,
    image_shape: str | None,
    seed: int,
    device: str | None,
    threads: int | None,
    plot_path: str | None,
    force: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Wasserstein-1 distance between the point clouds in files A and B.

    A and B hold [n, d] and [m, d] arrays (.npy, .npz, .csv, .txt); 1-D arrays are
    points on the line. Two questions, answered separately: W1 between the two given
    samples (a certified bracket: it holds exactly, for the input as given), and W1
    between the distributions they were drawn from (a confidence bracket from
    held-out critics and the sample value; i.i.d. draws assumed).
    """
    from wassnet.deadline import Deadline

    deadline = Deadline(time_budget)  # the user's clock starts before anything is loaded
    check_new_file(plot_path, force, "--plot", _FIGURE_SUFFIXES)
    population = _population_options(confidence, folds, critics, critic_budget, image_shape)
    from wassnet.w1 import SampleOptions, estimate_w1
    from wassnet.w1.io import check_same_dimension, load_points, load_weights

    set_threads(threads)
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
        target=target,  # type: ignore[arg-type]
        metric=metric,
        sample=SampleOptions(route=route, time_budget=time_budget, tol=tol),  # type: ignore[arg-type]
        population=population,
        exact=exact,  # type: ignore[arg-type]
        floor=floor,
        seed=seed,
        device=device,
        progress=not quiet,
        deadline=deadline,
    )
    emit(result, as_json)
    if plot_path:
        from wassnet.w1.plots import plot_estimate

        plot_estimate(result, a, b, plot_path)
