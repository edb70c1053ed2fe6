"""``wassnet estimate``: the W1 job's command (registered by :mod:`wassnet.cli`).

The command parses, makes one library call and prints: its options are parsed into
:class:`~wassnet.w1.io.InputFiles` and an :class:`~wassnet.w1.estimate.EstimateRequest`
(checked by :func:`~wassnet.w1.estimate.resolve_request`, the check
:func:`wassnet.estimate_w1` uses too), :func:`~wassnet.w1.estimate.estimate_files`
loads, checks and estimates, and the result is printed (and plotted). A refusal of the
options is a usage error, found before any file is read.

Heavy imports (torch, POT) happen inside the command, so ``wassnet --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

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
from wassnet.errors import InputError
from wassnet.norms import METRICS
from wassnet.w1.options import DEFAULT_CRITICS, ROUTES, PopulationOptions, SampleOptions

if TYPE_CHECKING:
    from wassnet.deadline import Deadline
    from wassnet.w1.estimate import EstimateRequest
    from wassnet.w1.io import Clouds, InputFiles
    from wassnet.w1.result import W1Result

__all__ = ["estimate"]

F = TypeVar("F", bound=Callable[..., Any])
_FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


class _ImageShape(click.ParamType):
    """``C,H,W``: three positive ints."""

    name = "text"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int, int]:
        if isinstance(value, tuple):
            return value  # type: ignore[return-value]
        shape = parse_shape(value)
        if len(shape) != 3:
            self.fail(f"{value!r}: use C,H,W (e.g. 1,28,28)", param, ctx)
        return shape  # type: ignore[return-value]


class _Names(click.ParamType):
    """A comma-separated list of names, as a tuple (the names are checked by the
    options object they go to)."""

    name = "text"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        return tuple(c.strip() for c in value.split(",") if c.strip())


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """The decorators applied as if written one above the other, in this order."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


_input_options = _stack(
    click.argument("a_path", metavar="A", type=click.Path(dir_okay=False)),
    click.argument("b_path", metavar="B", type=click.Path(dir_okay=False)),
    click.option("--key", help="array name inside .npz files (when they hold several)"),
    click.option("--weights-a", type=click.Path(dir_okay=False), help="sample weights for A"),
    click.option("--weights-b", type=click.Path(dir_okay=False), help="sample weights for B"),
)

_question_options = _stack(
    click.option(
        "--target",
        type=click.Choice(["sample", "population", "both"]),
        default="both",
        show_default=True,
        help="sample: W1 between the two given samples (certified bracket); population: "
        "between the distributions they come from (confidence bracket); both",
    ),
    click.option(
        "--metric",
        type=click.Choice(METRICS),
        default="euclidean",
        show_default=True,
        help="ground cost: euclidean (l2), cityblock (l1) or chebyshev (l-inf), as in "
        "scipy's cdist; the population critics are certified 1-Lipschitz in that norm",
    ),
)

_sample_options = _stack(
    click.option(
        "--route",
        type=click.Choice(["auto", *ROUTES]),
        default="auto",
        show_default=True,
        help="how the sample bracket is computed (auto: by size and weights)",
    ),
    click.option(
        "--time-budget",
        type=Finite(0, open_low=True),
        help="seconds for the whole command, from its start (loading included): return "
        "the best certified bracket found by then (see README: the guarantee and its slack)",
    ),
    click.option(
        "--tol",
        type=Finite(0),
        default=1e-9,
        show_default=True,
        help="stop once upper - lower <= tol * upper",
    ),
    click.option(
        "--exact",
        type=click.Choice(["auto", "always", "never"]),
        default="never",
        show_default=True,
        help="also compute POT's exact W1 as a reference (auto: when the matrix is small)",
    ),
    click.option(
        "--floor/--no-floor",
        default=None,
        help="bracket W1 between two random halves of A (default: with the population, "
        "up to 40 000 points)",
    ),
)

_population_options = _stack(
    click.option(
        "--confidence",
        type=Finite(0.5, 1, open_high=True),
        default=0.95,
        show_default=True,
        help="level of the population bracket",
    ),
    click.option(
        "--folds",
        type=click.IntRange(2),
        default=2,
        show_default=True,
        help="cross-fitting folds of the population critics",
    ),
    click.option(
        "--critics",
        type=_Names(),
        default=",".join(DEFAULT_CRITICS),
        show_default=True,
        help="critic families tried on each fold (the best on validation is kept); "
        "add conv for images (with --image-shape)",
    ),
    click.option(
        "--image-shape",
        type=_ImageShape(),
        help="C,H,W of flattened images, for the conv critic (e.g. 1,28,28)",
    ),
    click.option(
        "--critic-budget",
        type=Finite(0, open_low=True),
        default=60.0,
        show_default=True,
        help="seconds for all the population critic fits",
    ),
)

_output_options = _stack(
    click.option(
        "--plot",
        "plot_path",
        type=click.Path(dir_okay=False),
        help="save a figure (2-D: points, plan and potential; else potential histograms)",
    ),
    force_option,
    json_option,
    quiet_option,
)


@dataclass(frozen=True)
class _Output:
    """How the result is shown: ``--json`` or the summary, and the ``--plot`` file."""

    as_json: bool
    plot_path: str | None


@click.command()
@_input_options
@_question_options
@_sample_options
@_population_options
@seed_option
@device_option
@threads_option
@_output_options
def estimate(**params: Any) -> None:
    """Wasserstein-1 distance between the point clouds in files A and B.

    A and B hold [n, d] and [m, d] arrays (.npy, .npz, .csv, .txt); 1-D arrays are
    points on the line. Two questions, answered separately: W1 between the two given
    samples (a certified bracket: it holds exactly, for the input as given), and W1
    between the distributions they were drawn from (a confidence bracket from
    held-out critics and the sample value; i.i.d. draws assumed).

    Under torchrun (``torchrun --nproc-per-node K -m wassnet estimate A B``) the passes
    over all pairs are split across the ranks and the population folds fitted in
    parallel; rank 0 prints the same result as one process.
    """
    from wassnet.deadline import Deadline

    deadline = Deadline(params["time_budget"])  # the user's clock starts before any loading
    files, request, output = _parse(params, deadline)
    from wassnet import distributed
    from wassnet.w1.estimate import estimate_files

    distributed.init(str(request.device))  # under torchrun: passes and folds shared
    request = dataclasses.replace(request, device=distributed.rank_device(request.device))
    try:
        with distributed.peer_failures():
            result, clouds = estimate_files(files, request)
    finally:
        distributed.shutdown()
    if distributed.is_main():  # one answer per job
        _show(result, clouds, output)


def _parse(p: dict[str, Any], deadline: Deadline) -> tuple[InputFiles, EstimateRequest, _Output]:
    """The command's options as the library's objects, checked before any file is read
    (the output file first, then the population options, then the request)."""
    check_new_file(p["plot_path"], p["force"], "--plot", _FIGURE_SUFFIXES)
    population = _population(p)
    from wassnet.w1.estimate import resolve_request
    from wassnet.w1.io import InputFiles

    set_threads(p["threads"])
    request = resolve_request(
        target=p["target"],
        metric=p["metric"],
        sample=SampleOptions(route=p["route"], time_budget=p["time_budget"], tol=p["tol"]),
        population=population,
        exact=p["exact"],
        floor=p["floor"],
        seed=p["seed"],
        device=p["device"],
        progress=not p["quiet"],
        deadline=deadline,
    )
    files = InputFiles(p["a_path"], p["b_path"], p["key"], p["weights_a"], p["weights_b"])
    return files, request, _Output(p["as_json"], p["plot_path"])


def _population(p: dict[str, Any]) -> PopulationOptions:
    """The population options (checked by :class:`PopulationOptions`; a refusal is a
    usage error naming the options it concerns)."""
    try:
        return PopulationOptions(
            confidence=p["confidence"],
            folds=p["folds"],
            critics=p["critics"],
            time_budget=p["critic_budget"],
            image_shape=p["image_shape"],
        )
    except InputError as exc:
        hint = ["--critics", "--image-shape"] if "conv" in p["critics"] else "--critics"
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _show(result: W1Result, clouds: Clouds, output: _Output) -> None:
    """Print the result (JSON or the summary), then save the figure if asked for."""
    emit(result, output.as_json)
    if output.plot_path:
        from wassnet.w1.plots import plot_estimate

        plot_estimate(result, clouds.a, clouds.b, output.plot_path)
