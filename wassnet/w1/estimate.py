r"""``estimate_w1``: W1 between two samples, and between the distributions they come from.

Two questions, answered separately and labelled so that nobody confuses them:

* **sample** -- W1 between the two given point clouds, a finite LP. Answered with a
  certified bracket (:mod:`wassnet.w1.sample`): ``lower <= W1 <= upper`` holds exactly.
* **population** -- W1 between the distributions the samples were drawn from. The
  sample value overstates it (in high dimension by far); the ``floor`` (W1 between two
  halves of A) shows by how much sampling alone moves W1. Answered with a confidence
  bracket (:mod:`wassnet.w1.population`): cross-fitted held-out critics below, the
  sample value plus a concentration margin above.

Stages of :func:`estimate_w1`: validate the inputs, build the exact problem, the
sample bracket, the floor, the population bracket, the optional POT reference.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from wassnet.deadline import Deadline
from wassnet.errors import InputError
from wassnet.names import METRICS
from wassnet.ot import TransportProblem, exact_w1, exact_w1_fits
from wassnet.runtime import check_seed, resolve_device
from wassnet.w1.io import check_same_dimension, validate_points, validate_weights
from wassnet.w1.options import PopulationOptions, SampleOptions, Target
from wassnet.w1.population import population_bracket, size_problem
from wassnet.w1.result import SampleBracket, W1Result
from wassnet.w1.sample import sample_bracket

__all__ = ["METRICS", "estimate_w1"]

ExactMode = Literal["auto", "always", "never"]
_TARGETS = ("sample", "population", "both")
#: ``floor=None`` computes the floor up to this many points in A.
FLOOR_AUTO_MAX_POINTS = 40_000


def _validated(
    a: Any, b: Any, weights_a: Any, weights_b: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    xa, xb = validate_points(a, "A"), validate_points(b, "B")
    check_same_dimension(xa, xb)
    wa = None if weights_a is None else validate_weights(weights_a, len(xa), "weights A")
    wb = None if weights_b is None else validate_weights(weights_b, len(xb), "weights B")
    return xa, xb, wa, wb


def _floor_bracket(
    x: np.ndarray,
    w: np.ndarray | None,
    options: SampleOptions,
    device: torch.device,
    seed: int,
    metric: str,
    deadline: Deadline | None = None,
) -> SampleBracket:
    """W1 between two disjoint random halves of one cloud (the sampling floor)."""
    n = len(x)
    if n < 2:
        raise InputError("the floor needs at least 2 points in A")
    perm = np.random.default_rng([seed, 1]).permutation(n)
    half = n // 2
    first, second = np.sort(perm[:half]), np.sort(perm[half : 2 * half])
    wf = None if w is None else w[first]
    ws = None if w is None else w[second]
    if wf is not None and not (wf.max() > 0 and ws.max() > 0):
        raise InputError("the floor needs positive weight in both halves of A")
    problem = TransportProblem.build(x[first], x[second], wf, ws, metric)
    return sample_bracket(problem, options, device=device, seed=seed, deadline=deadline)


def _floor_auto(target: str, xa: np.ndarray, wa: np.ndarray | None) -> bool:
    """Whether ``floor=None`` computes the floor: with the population, when it is cheap."""
    if target == "sample" or not 2 <= len(xa) <= FLOOR_AUTO_MAX_POINTS:
        return False
    return wa is None or np.count_nonzero(wa) >= 2


def _reference(
    xa: np.ndarray,
    xb: np.ndarray,
    wa: np.ndarray | None,
    wb: np.ndarray | None,
    exact: ExactMode,
    options: SampleOptions,
    metric: str,
) -> float | None:
    """POT's exact W1 (a float64 reference) when asked for and it fits."""
    n, m = len(xa), len(xb)
    small = n * m <= options.dense_max_pairs and exact_w1_fits(n, m)
    if exact == "never" or (exact == "auto" and not small):
        return None
    return exact_w1(np.asarray(xa), np.asarray(xb), wa, wb, metric=metric)


def _checked_options(
    target: str, metric: str, exact: str, sample: object, population: object
) -> tuple[SampleOptions, PopulationOptions]:
    if target not in _TARGETS:
        raise InputError(f"target must be sample, population or both, got {target!r}")
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if exact not in ("auto", "always", "never"):
        raise InputError(f"exact must be auto, always or never, got {exact!r}")
    sample = SampleOptions() if sample is None else sample
    if not isinstance(sample, SampleOptions):
        raise InputError(f"sample must be a SampleOptions, got {type(sample).__name__}")
    population = PopulationOptions() if population is None else population
    if not isinstance(population, PopulationOptions):
        raise InputError(f"population must be a PopulationOptions, got {type(population).__name__}")
    return sample, population


def _population_refusal(target: str, weighted: bool, n_a: int, n_b: int, folds: int) -> str | None:
    """Why the population bracket cannot be computed (``None``: it can).

    With ``target="population"`` the reason is raised as a ``ValueError``; with
    ``"both"`` it becomes a note and the sample question is still answered.
    """
    if target == "sample":
        return None
    if weighted:
        why = "population W1 needs unweighted i.i.d. samples; weights are for target='sample'"
    else:
        why = size_problem(n_a, n_b, folds)
    if why is not None and target == "population":
        raise InputError(why)
    return None if why is None else f"population bracket not computed: {why}"


#: Under a time budget, the population bracket is not started with less time left.
POPULATION_MIN_SECONDS = 1.0


def _population_budget(
    options: PopulationOptions, deadline: Deadline, notes: list[str], target: str
) -> PopulationOptions:
    """The population options with the critic fits' budget cut to the time left (a note
    added, and the bracket skipped, when less than :data:`POPULATION_MIN_SECONDS` is)."""
    if not deadline.limited or target == "sample" or notes:
        return options
    left = deadline.remaining()
    if left < POPULATION_MIN_SECONDS:
        deadline.cut("population bracket not computed")
        notes.append(f"population bracket not computed: time budget {deadline.seconds:g} s reached")
        return options
    own = options.time_budget
    return dataclasses.replace(options, time_budget=left if own is None else min(own, left))


def estimate_w1(
    a: np.ndarray | torch.Tensor | Sequence,
    b: np.ndarray | torch.Tensor | Sequence,
    weights_a: np.ndarray | Sequence[float] | None = None,
    weights_b: np.ndarray | Sequence[float] | None = None,
    *,
    target: Target = "both",
    metric: str = "euclidean",
    sample: SampleOptions | None = None,
    population: PopulationOptions | None = None,
    exact: ExactMode = "never",
    floor: bool | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    deadline: Deadline | None = None,
) -> W1Result:
    """W1 between two point clouds, for the ground cost ``metric``.

    Args:
        a, b: ``[n, d]`` and ``[m, d]`` points (``n != m`` allowed), or 1-D arrays of
            points on the line; arrays with more dimensions are flattened per point.
        weights_a, weights_b: optional nonnegative sample weights (any positive sum;
            the marginals are ``w / sum(w)`` exactly).
        target: ``"sample"``: W1 between the two given samples, certified;
            ``"population"``: W1 between the distributions they were drawn from, a
            confidence bracket (needs unweighted samples; the sample bracket is
            computed too, its upper end is part of the argument); ``"both"``.
        metric: the ground cost: ``"euclidean"`` (l2, default), ``"cityblock"`` (l1)
            or ``"chebyshev"`` (l-inf), as in ``scipy.spatial.distance.cdist``. The
            sample bracket is certified for that cost; the population critics are
            certified 1-Lipschitz for that norm (:func:`wassnet.nn.lipschitz_bound`
            with ``p`` = 2, 1, inf).
        sample: options of the sample bracket (:class:`SampleOptions`).
        population: options of the population bracket (:class:`PopulationOptions`).
        exact: also compute POT's exact W1 as a reference: ``"auto"`` when the dense
            matrix is small, ``"always"``, or ``"never"``.
        floor: also bracket W1 between two disjoint random halves of A (the sampling
            floor), with the sample options. ``None``: when the population is asked
            for and A has at most ``FLOOR_AUTO_MAX_POINTS`` points.
        seed: picks the warm start's subsample, the floor's halves, the folds and
            the critics' initialization.
        device: where the passes over all pairs run and the critics are fitted
            (default: a GPU when present).
        progress: show progress bars.
        deadline: the clock of ``sample.time_budget``, when the caller started it
            earlier (the CLI starts it before loading the files); default: started
            now. Under a budget, the whole call shares it: the sample bracket gets
            half of the time left when the floor or the population follow, the floor
            a quarter of what is then left, and the population's critic fits the rest
            (at most their own ``time_budget``); what was skipped is said in
            ``notes`` and in ``sample.budget``.

    Returns:
        A :class:`W1Result`; ``result.sample.lower <= W1(a, b) <= result.sample.upper``
        holds exactly for the input as given; ``result.population`` (when asked for)
        holds with probability ``>= confidence`` under the assumptions stated in
        :mod:`wassnet.w1.population`.

    Raises:
        wassnet.errors.InputError: empty, non-finite, mismatched inputs, or values
            that float64 cannot hold exactly.
        ValueError: bad options (a seed outside ``[0, 2^63 - 1]`` too);
            ``target="population"`` with weights.
    """
    options, pop_options = _checked_options(target, metric, exact, sample, population)
    check_seed(seed)
    if deadline is None or deadline.seconds != options.time_budget:
        deadline = Deadline(options.time_budget, *(() if deadline is None else (deadline.start,)))
    timings: dict[str, float] = {}
    xa, xb, wa, wb = _validated(a, b, weights_a, weights_b)
    weighted = wa is not None or wb is not None
    refusal = _population_refusal(target, weighted, len(xa), len(xb), pop_options.folds)
    notes = [refusal] if refusal else []
    dev = resolve_device(device)
    problem = TransportProblem.build(xa, xb, wa, wb, metric)

    want_floor = bool(floor or (floor is None and _floor_auto(target, xa, wa)))
    more = want_floor or (target != "sample" and not notes)
    result_sample = sample_bracket(
        problem,
        options,
        device=dev,
        seed=seed,
        progress=progress,
        deadline=deadline.share(0.5) if more else deadline,
    )
    timings["sample"] = result_sample.seconds
    floor_result = None
    if want_floor:
        t0 = time.perf_counter()
        share = 0.25 if target != "sample" and not notes else 1.0
        floor_result = _floor_bracket(xa, wa, options, dev, seed, metric, deadline.share(share))
        timings["floor"] = time.perf_counter() - t0
    population_result = None
    pop_options = _population_budget(pop_options, deadline, notes, target)
    if target != "sample" and not notes:
        population_result = population_bracket(
            xa.reshape(len(xa), -1),
            xb.reshape(len(xb), -1),
            result_sample.upper,
            pop_options,
            device=dev,
            seed=seed,
            progress=progress,
            metric=metric,
        )
        timings["population"] = population_result.seconds
    t0 = time.perf_counter()
    result_sample.exact = _reference(xa, xb, wa, wb, exact, options, metric)
    if result_sample.exact is not None:
        timings["exact (POT)"] = time.perf_counter() - t0
    return W1Result(
        sample=result_sample,
        n_a=len(xa),
        n_b=len(xb),
        dim=problem.dim,
        target=target,
        metric=metric,
        floor=floor_result,
        population=population_result,
        notes=notes,
        seed=seed,
        device=str(dev),
        timings=timings,
    )
