r"""``estimate_w1``: W1 between two samples, and between the distributions they come from.

Two questions, answered separately and labelled so that nobody confuses them:

* **sample** -- W1 between the two given point clouds, a finite LP. Answered with a
  certified bracket (:mod:`wassnet.w1.sample`): ``lower <= W1 <= upper`` holds exactly.
* **population** -- W1 between the distributions the samples were drawn from. The
  sample value overstates it (in high dimension by far); the ``floor`` (W1 between two
  halves of A) shows by how much sampling alone moves W1. Answered with a confidence
  bracket (:mod:`wassnet.w1.population`): cross-fitted held-out critics below, the
  sample value plus a concentration margin above.

The input is checked once, at the boundary: the clouds by
:func:`wassnet.w1.io.resolve_clouds` (arrays, :func:`estimate_w1`) or
:func:`wassnet.w1.io.load_clouds` (files, :func:`estimate_files`, ``wassnet estimate``)
into a :class:`~wassnet.w1.io.Clouds`, the options by :func:`resolve_request` into an
:class:`EstimateRequest`. :func:`estimate_clouds` takes those two and checks nothing
again. Its stages: the population refusal, the exact problem, the sample bracket, the
floor, the population bracket, the optional POT reference.

Under a time budget the stages share one clock (:class:`~wassnet.deadline.Deadline`):
the sample bracket gets half of the time left when the floor or the population follow,
the floor a quarter of what is then left, and the population's critic fits the rest
(at most their own ``time_budget``); what was skipped is said in ``notes`` and in
``sample.budget``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from wassnet.deadline import Deadline
from wassnet.errors import InputError
from wassnet.norms import METRICS, Norm, by_metric
from wassnet.ot import TransportProblem, exact_w1, exact_w1_fits
from wassnet.ot.sharded import job_rank, run_sharded
from wassnet.runtime import check_seed, resolve_device
from wassnet.w1.io import Clouds, InputFiles, load_clouds, resolve_clouds
from wassnet.w1.options import PopulationOptions, SampleOptions, Target
from wassnet.w1.population import population_bracket, size_problem
from wassnet.w1.result import PopulationBracket, SampleBracket, W1Result
from wassnet.w1.sample import sample_bracket

__all__ = [
    "METRICS",
    "EstimateRequest",
    "estimate_clouds",
    "estimate_files",
    "estimate_w1",
    "resolve_request",
]

ExactMode = Literal["auto", "always", "never"]
_TARGETS = ("sample", "population", "both")
#: ``floor=None`` computes the floor up to this many points in A.
FLOOR_AUTO_MAX_POINTS = 40_000
#: Under a time budget, the population bracket is not started with less time left.
POPULATION_MIN_SECONDS = 1.0


# ----------------------------------------------------------------------------- the boundary


@dataclass(frozen=True)
class EstimateRequest:
    """What the estimator is asked, checked: the keyword options of :func:`estimate_w1`
    resolved (see there for each).

    Built by :func:`resolve_request`, which guarantees: ``target`` and ``exact`` are
    among their values; ``norm`` is the ground cost's resolved
    :class:`~wassnet.norms.Norm`; ``sample`` and ``population`` are option objects
    (checked by their own constructors); ``seed`` is in ``[0, 2^63 - 1]``; ``device``
    is a usable :class:`torch.device`; ``deadline`` runs for ``sample.time_budget``.
    """

    target: Target
    norm: Norm
    sample: SampleOptions
    population: PopulationOptions
    exact: ExactMode
    floor: bool | None
    seed: int
    device: torch.device
    progress: bool
    deadline: Deadline

    @property
    def metric(self) -> str:
        """The ground cost's name (``euclidean``, ``cityblock`` or ``chebyshev``)."""
        return self.norm.metric


def resolve_request(
    *,
    target: str = "both",
    metric: str | Norm = "euclidean",
    sample: object = None,
    population: object = None,
    exact: str = "never",
    floor: bool | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    deadline: Deadline | None = None,
) -> EstimateRequest:
    """The one check of the estimator's options (:func:`estimate_w1` and ``wassnet
    estimate`` both call it); ``None`` options become the defaults, and ``deadline`` is
    kept when it runs for ``sample.time_budget`` (else one started at ``deadline.start``,
    or now).

    Raises:
        ValueError: an unknown target, metric or exact mode; ``sample`` or
            ``population`` not an option object; a seed outside ``[0, 2^63 - 1]``; an
            unknown or absent device.
    """
    if target not in _TARGETS:
        raise InputError(f"target must be sample, population or both, got {target!r}")
    norm = by_metric(metric)
    if exact not in ("auto", "always", "never"):
        raise InputError(f"exact must be auto, always or never, got {exact!r}")
    sample = SampleOptions() if sample is None else sample
    if not isinstance(sample, SampleOptions):
        raise InputError(f"sample must be a SampleOptions, got {type(sample).__name__}")
    population = PopulationOptions() if population is None else population
    if not isinstance(population, PopulationOptions):
        raise InputError(f"population must be a PopulationOptions, got {type(population).__name__}")
    check_seed(seed)
    if deadline is None or deadline.seconds != sample.time_budget:
        deadline = Deadline(sample.time_budget, *(() if deadline is None else (deadline.start,)))
    return EstimateRequest(
        target, norm, sample, population, exact, floor, seed,  # type: ignore[arg-type]
        resolve_device(device), bool(progress), deadline,
    )  # fmt: skip


# ----------------------------------------------------------------------------- entry points


def estimate_w1(
    a: np.ndarray | torch.Tensor | Sequence,
    b: np.ndarray | torch.Tensor | Sequence,
    weights_a: np.ndarray | Sequence[float] | None = None,
    weights_b: np.ndarray | Sequence[float] | None = None,
    *,
    target: Target = "both",
    metric: str | Norm = "euclidean",
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
        metric: the ground cost, as in ``scipy.spatial.distance.cdist``:
            ``"euclidean"`` (l2, default), ``"cityblock"`` (l1) or ``"chebyshev"``
            (l-inf), or its :class:`~wassnet.norms.Norm`; the sample bracket is
            certified for it, the critics 1-Lipschitz in its norm.
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
            now. The whole call shares it (see the module notes).

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
    request = resolve_request(
        target=target, metric=metric, sample=sample, population=population, exact=exact,
        floor=floor, seed=seed, device=device, progress=progress, deadline=deadline,
    )  # fmt: skip
    return estimate_clouds(resolve_clouds(a, b, weights_a, weights_b), request)


def estimate_files(files: InputFiles, request: EstimateRequest) -> tuple[W1Result, Clouds]:
    """``wassnet estimate``: load and check the files (:func:`~wassnet.w1.io.load_clouds`),
    then :func:`estimate_clouds`. Returns the result and the clouds (for a figure).

    Raises:
        wassnet.errors.InputError: as :func:`~wassnet.w1.io.load_clouds` and
            :func:`estimate_clouds`.
    """
    clouds = load_clouds(files)
    return estimate_clouds(clouds, request), clouds


# ----------------------------------------------------------------------------- the stages


def estimate_clouds(clouds: Clouds, request: EstimateRequest) -> W1Result:
    """The estimator on checked input (the guarantees of :func:`estimate_w1`).

    Raises:
        wassnet.errors.InputError: ``target="population"`` that cannot be answered
            (weights, too few points for the folds); weights or coordinates that the
            exact problem cannot scale exactly.
    """
    notes = _population_refusal(clouds, request)
    wants_population = request.target != "sample" and not notes
    wants_floor = _wants_floor(clouds, request)
    a, b, wa, wb = clouds.a, clouds.b, clouds.weights_a, clouds.weights_b
    problem = TransportProblem.build(a, b, wa, wb, request.norm)
    deadline = request.deadline
    share = deadline.share(0.5) if wants_floor or wants_population else deadline
    sample = _sharded_bracket(problem, request, share, request.progress)
    timings = {"sample": sample.seconds}
    floor = None
    if wants_floor:
        t0 = time.perf_counter()
        floor = _floor_bracket(clouds, request, deadline.share(0.25 if wants_population else 1.0))
        timings["floor"] = time.perf_counter() - t0
    population = _population_stage(clouds, request, sample.upper, notes)
    if population is not None:
        timings["population"] = population.seconds
    t0 = time.perf_counter()
    sample.exact = _reference(clouds, request)
    if sample.exact is not None:
        timings["exact (POT)"] = time.perf_counter() - t0
    return W1Result(
        sample=sample,
        n_a=len(a),
        n_b=len(b),
        dim=problem.dim,
        target=request.target,
        metric=request.metric,
        floor=floor,
        population=population,
        notes=notes,
        seed=request.seed,
        device=str(request.device),
        timings=timings,
    )


def _population_refusal(clouds: Clouds, request: EstimateRequest) -> list[str]:
    """Why the population bracket cannot be computed, as a note (``[]``: it can).

    With ``target="population"`` the reason is raised as a ``ValueError``; with
    ``"both"`` it becomes a note and the sample question is still answered.
    """
    if request.target == "sample":
        return []
    if clouds.weighted:
        why = "population W1 needs unweighted i.i.d. samples; weights are for target='sample'"
    else:
        why = size_problem(len(clouds.a), len(clouds.b), request.population.folds)
    if why is not None and request.target == "population":
        raise InputError(why)
    return [] if why is None else [f"population bracket not computed: {why}"]


def _wants_floor(clouds: Clouds, request: EstimateRequest) -> bool:
    """``floor``, or for ``floor=None``: with the population, when it is cheap."""
    if request.floor is not None:
        return request.floor
    if request.target == "sample" or not 2 <= len(clouds.a) <= FLOOR_AUTO_MAX_POINTS:
        return False
    return clouds.weights_a is None or np.count_nonzero(clouds.weights_a) >= 2


def _floor_bracket(clouds: Clouds, request: EstimateRequest, deadline: Deadline) -> SampleBracket:
    """W1 between two disjoint random halves of A (the sampling floor)."""
    x, w = clouds.a, clouds.weights_a
    n = len(x)
    if n < 2:
        raise InputError("the floor needs at least 2 points in A")
    perm = np.random.default_rng([request.seed, 1]).permutation(n)
    half = n // 2
    first, second = np.sort(perm[:half]), np.sort(perm[half : 2 * half])
    wf = None if w is None else w[first]
    ws = None if w is None else w[second]
    if wf is not None and not (wf.max() > 0 and ws.max() > 0):
        raise InputError("the floor needs positive weight in both halves of A")
    problem = TransportProblem.build(x[first], x[second], wf, ws, request.norm)
    return _sharded_bracket(problem, request, deadline, False)


def _sharded_bracket(
    problem: TransportProblem, request: EstimateRequest, deadline: Deadline, progress: bool
) -> SampleBracket:
    """:func:`sample_bracket`, run by rank 0 with its passes over all pairs split
    across the ranks of a distributed job (:func:`~wassnet.ot.sharded.run_sharded`);
    the other ranks get it without its plan and potentials."""

    def lead() -> SampleBracket:
        return sample_bracket(
            problem, request.sample, device=request.device, seed=request.seed,
            progress=progress, deadline=deadline,
        )  # fmt: skip

    def light(bracket: SampleBracket) -> SampleBracket:
        return dataclasses.replace(bracket, plan=None, potentials=None)

    return run_sharded(problem, lead, device=request.device, share=light)


def _population_stage(
    clouds: Clouds, request: EstimateRequest, sample_upper: float, notes: list[str]
) -> PopulationBracket | None:
    """The confidence bracket, when asked for and not refused; under a time budget its
    critic fits get the time left (at most their own budget), and it is skipped, with a
    note added, when less than :data:`POPULATION_MIN_SECONDS` is left."""
    if request.target == "sample" or notes:
        return None
    options, deadline = request.population, request.deadline
    if deadline.limited:
        left = deadline.remaining()
        if left < POPULATION_MIN_SECONDS:
            deadline.cut("population bracket not computed")
            notes.append(
                f"population bracket not computed: time budget {deadline.seconds:g} s reached"
            )
            return None
        own = options.time_budget
        options = dataclasses.replace(options, time_budget=left if own is None else min(own, left))
    return population_bracket(
        clouds.a.reshape(len(clouds.a), -1),
        clouds.b.reshape(len(clouds.b), -1),
        sample_upper,
        options,
        device=request.device,
        seed=request.seed,
        progress=request.progress,
        metric=request.metric,
    )


def _reference(clouds: Clouds, request: EstimateRequest) -> float | None:
    """POT's exact W1 (a float64 reference) when asked for and it fits."""
    n, m = len(clouds.a), len(clouds.b)
    if job_rank()[0] != 0:  # rank 0's result is the job's
        return None
    small = n * m <= request.sample.dense_max_pairs and exact_w1_fits(n, m)
    if request.exact == "never" or (request.exact == "auto" and not small):
        return None
    a, b = np.asarray(clouds.a), np.asarray(clouds.b)
    return exact_w1(a, b, clouds.weights_a, clouds.weights_b, metric=request.norm)
