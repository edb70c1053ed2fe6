r"""W1 between the two given samples: a certified bracket by the fastest route.

The problem is a finite LP. Every route ends with the same two certificates
(:mod:`wassnet.ot`): a transport plan whose cost, marginal residuals charged, is an
upper bound (:func:`~wassnet.ot.plan_bound`), and a dual pair made feasible on every
pair by outward-rounded c-transforms, whose value is a lower bound
(:func:`~wassnet.ot.c_transform_bound`). Routes differ in how they find a good plan
and good potentials, and are chosen from a table (:func:`choose_route`):

==============  ==========================================  ===============================
route           when (``auto``)                             how
==============  ==========================================  ===============================
``line``        ``d == 1``                                  exact CDFs in integers
``dense``       ``n m <= dense_max_pairs`` (x4 for          POT's network simplex on the
                weighted clouds in d <= 3; x16 for the      full matrix, then certified
                cityblock and chebyshev costs in d <= 3,
                memory permitting)
``assignment``  uniform weights, ``n == m``                 warm start from solved
                                                            subsamples, sparse assignments
                                                            by column generation, fused
                                                            passes over all pairs
``transport``   other weights or ``n != m``                 the same with sparse
                                                            transport plans
``blockwise``   ``n m > pass_max_pairs``                    monotone coupling solved
                                                            exactly in blocks; sliced
                                                            lower bounds; no pass over
                                                            all pairs
==============  ==========================================  ===============================

When column generation ends with the bracket still open (degenerate costs: l-inf
distances between images are mostly ties), the dense route finishes the job if it fits
(the same x16 limit and memory).

No critic is trained for this question: a critic's values are only potentials, and
cheaper ones (a solved subsample) start the column generation as well.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from wassnet.deadline import Deadline
from wassnet.errors import InputError
from wassnet.ot import (
    AssignmentBracket,
    DualBound,
    PairwiseCost,
    PrimalBound,
    TiledCost,
    TransportProblem,
    blockwise_refinement,
    c_transform_bound,
    line_bracket,
    monotone_coupling,
    plan_bound,
    sparse_bracket,
)
from wassnet.ot.exact import ExactSolverError, exact_w1_fits, network_simplex
from wassnet.ot.multiscale import multilevel_warm_start, warm_start
from wassnet.ot.plans import polish_forest_masses
from wassnet.ot.projections import sliced_lower_bound
from wassnet.ot.quick import QuickBracket, quick_bracket
from wassnet.ot.sharded import ShardedCost, ranks
from wassnet.w1.options import SampleOptions
from wassnet.w1.result import SampleBracket

__all__ = ["choose_route", "sample_bracket"]

#: Passes over a float64 cost matrix held in memory up to this many pairs; above, fused
#: float32 screens with exact float64 recomputation (both tight to float64 rounding).
DENSE_PASS_MAX_PAIRS = 64 * 2**20
#: With a time budget, one pass is predicted by timing a slice of about this many pairs.
CALIBRATION_PAIRS = 2**30
#: The dense route serves up to this many times ``dense_max_pairs`` for the cityblock and
#: chebyshev costs in d <= 3, and as the finish of a column generation left open
#: (measured on BENCHMARKS.md's suite: in d = 2, 2.4x faster than column generation at
#: n = 10 000 for chebyshev).
DENSE_FALLBACK_FACTOR = 16

#: Seconds per unit of work measured on this project's 2-core CPU (2026-12). Under a
#: time budget, a stage that cannot be interrupted starts only when its prediction
#: (these times the run's own slowdown, measured on its quick bracket) fits in the time
#: left. Units: coordinates (quick bracket), points (blockwise bracket, with three
#: sliced directions; exact CDFs on the line), pairs (POT's dense simplex, a fused
#: pass, the float64 extension of warm-start potentials).
SECONDS_PER_UNIT = {
    "quick": 2.5e-8,
    "blockwise": 4e-6,
    "line": 1.5e-6,
    "simplex": 2.5e-7,
    "pass": 4e-10,
    "extend": 3e-9,
}


def _dense_fits(problem: TransportProblem, options: SampleOptions) -> bool:
    """Whether the dense route may serve ``problem`` beyond ``dense_max_pairs``."""
    pairs = problem.n * problem.m
    return pairs <= DENSE_FALLBACK_FACTOR * options.dense_max_pairs and exact_w1_fits(
        problem.n, problem.m
    )


def choose_route(problem: TransportProblem, options: SampleOptions) -> str:
    """The route ``auto`` picks for ``problem`` (see the module's table)."""
    pairs = problem.n * problem.m
    if problem.dim == 1:
        return "line"
    if pairs <= options.dense_max_pairs:
        return "dense"
    if not problem.uniform_square and problem.dim <= 3 and pairs <= 4 * options.dense_max_pairs:
        return "dense"  # measured: POT's dense solver beats sparse transport plans here
    if not problem.norm.is_euclidean and problem.dim <= 3 and _dense_fits(problem, options):
        return "dense"  # measured: l1 / l-inf costs in low dimension, many ties
    if pairs > options.pass_max_pairs:
        return "blockwise"
    return "assignment" if problem.uniform_square else "transport"


@dataclass
class _Run:
    """One computation of the bracket: the problem, its options, the clock, the display."""

    problem: TransportProblem
    options: SampleOptions
    device: torch.device
    rng: np.random.Generator
    bar: tqdm
    deadline: Deadline = field(default_factory=Deadline)
    slow: float = 1.0  # this run's slowdown against SECONDS_PER_UNIT (quick bracket)
    start: float = field(default_factory=time.perf_counter)
    passes: int = 0
    passes_warm: int = 0  # passes over the pairs of warm-start subsamples
    history: list[dict[str, float]] = field(default_factory=list)

    def remaining(self) -> float | None:
        if not self.deadline.limited:
            return None
        return self.deadline.remaining()

    def predict(self, kind: str, units: float) -> float:
        """Predicted seconds of ``units`` of work of ``kind`` (:data:`SECONDS_PER_UNIT`)."""
        return SECONDS_PER_UNIT[kind] * units * self.slow

    def fits(self, seconds: float, what: str) -> bool:
        """Whether work predicted to take ``seconds`` fits the budget (recorded if not)."""
        if self.deadline.allows(seconds):
            return True
        self.deadline.cut(f"{what} skipped (predicted ~{seconds:.1f} s)")
        return False

    def record(self, lower: float, upper: float) -> None:
        entry = {
            "round": len(self.history) + 1,
            "lower": lower,
            "upper": upper,
            "seconds": time.perf_counter() - self.start,
        }
        self.history.append(entry)
        self.bar.update()
        self.bar.set_postfix(lower=f"{lower:.6g}", upper=f"{upper:.6g}")

    def bracket(
        self, route: str, plan: PrimalBound | None, dual: DualBound | None, **fixed: object
    ) -> SampleBracket:
        """The :class:`SampleBracket` of a plan and a dual (potentials in input units)."""
        p = self.problem
        potentials = None
        if dual is not None:
            potentials = p.potentials_in_input_units(
                dual.u.detach().cpu().numpy(), dual.v.detach().cpu().numpy()
            )
        return SampleBracket(
            lower=fixed.get("lower", max(dual.value, 0.0) if dual else 0.0),  # type: ignore[arg-type]
            upper=fixed.get("upper", plan.value if plan else math.inf),  # type: ignore[arg-type]
            route=route,
            lower_method=str(fixed.get("lower_method", "")),
            upper_method=str(fixed.get("upper_method", plan.method if plan else "")),
            seconds=time.perf_counter() - self.start,
            passes=self.passes,
            rounds=self.history,
            plan=None if plan is None else (plan.rows, plan.cols, plan.mass),
            potentials=potentials,
        )

    def starting_potentials(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Potentials from solved subsamples: one level (:func:`warm_start`), or a
        ladder of levels for large uniform clouds (:func:`multilevel_warm_start`).
        ``None`` when the time budget does not allow the smallest level."""
        p = self.problem
        limited = self.deadline.limited
        if p.uniform_square:
            return multilevel_warm_start(
                p.x,
                p.y,
                size=self.options.warm_start,
                solve=self._solve_level,
                rng=self.rng,
                device=self.device,
                backend=self.options.backend,
                metric=p.metric,
                deadline=self.deadline if limited else None,
                predict=self._predict_level,
            )
        s_a, s_b = min(self.options.warm_start, p.n), min(self.options.warm_start, p.m)
        predicted = self.predict("simplex", s_a * s_b) + self.predict(
            "extend", p.n * s_b + p.m * s_a
        )
        if limited and not self.fits(predicted, f"warm start ({s_a} x {s_b} subsample)"):
            return None
        return warm_start(
            p.x,
            p.y,
            p.a.probabilities(),
            p.b.probabilities(),
            size=self.options.warm_start,
            rng=self.rng,
            device=self.device,
            metric=p.metric,
        )

    def _predict_level(self, size: int) -> float:
        """Predicted seconds of a warm-start level of ``size`` points per side: the
        first is POT's dense simplex, the others about eight passes over its pairs; then
        the extension of its potentials to all points (a pass over ``2 n size`` pairs)."""
        first = size <= self.options.warm_start
        solve = self.predict("simplex" if first else "pass", size * size * (1 if first else 8))
        return solve + self.predict(
            "pass", 2 * self.problem.n * size * max(1, self.problem.dim / 2)
        )

    def _solve_level(
        self, x: np.ndarray, y: np.ndarray, u0: np.ndarray, v0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A subsample of the multilevel warm start, solved to about 1e-6 (under a time
        budget, its rounds stop in time to extend its potentials to all points)."""
        sub = TransportProblem.build(x, y, metric=self.problem.metric)
        budget = None
        if self.deadline.limited:
            extend = self.predict("pass", 2 * self.problem.n * len(x))
            budget = max(self.deadline.remaining() - extend, 1e-3)
        scale = 2.0**sub.exponent  # potentials in the subsample's own units
        solved = sparse_bracket(
            _passes_for(sub, self),
            torch.as_tensor(u0 / scale),
            torch.as_tensor(v0 / scale),
            k=self.options.candidates_for(sub.dim),
            rounds=6,
            tol=1e-6,
            time_budget=budget,
        )
        self.passes_warm += solved.passes
        return solved.dual.u.cpu().numpy() * scale, solved.dual.v.cpu().numpy() * scale


# ----------------------------------------------------------------------------- routes


def _line(run: _Run) -> SampleBracket | None:
    p = run.problem
    if run.deadline.limited and not run.fits(run.predict("line", p.n + p.m), "exact CDFs"):
        return None
    lower, upper = run.problem.to_input_units(*line_bracket(run.problem))
    run.record(lower, upper)
    method = "exact CDFs on the line (integer arithmetic)"
    return run.bracket(
        "line", None, None, lower=lower, upper=upper, lower_method=method, upper_method=method
    )


def _dense(run: _Run) -> SampleBracket | None:
    p = run.problem
    predicted = run.predict("simplex", p.n * p.m)
    if run.deadline.limited and not run.fits(predicted, "POT's dense network simplex"):
        return _blockwise(run)
    bounds = _dense_bounds(run)
    if bounds is None:  # column generation from cheap potentials instead
        return _column_route(run, "dense (network simplex stopped early: column generation)")
    return run.bracket(
        "dense", *bounds, lower_method="POT's potentials, c-transformed on every pair"
    )


def _dense_bounds(run: _Run) -> tuple[PrimalBound, DualBound] | None:
    """POT's optimal plan and potentials on the full matrix, certified (refined by column
    generation if rounding left the bracket open); ``None`` if the simplex stopped early."""
    p = run.problem
    cost = PairwiseCost(p, device=run.device, dense_bytes=2**62)
    run.passes += 1
    a, b = p.a.probabilities(), p.b.probabilities()
    try:
        rows, cols, mass, u, v = network_simplex(cost.dense_matrix(), a, b)
    except ExactSolverError:
        return None
    mass = polish_forest_masses(rows, cols, mass, a, b)
    plan = plan_bound(p, rows, cols, mass, "optimal plan of POT's network simplex")
    dual = c_transform_bound(cost, u)
    run.passes += 2
    run.record(dual.value, plan.value)
    if plan.value - max(dual.value, 0.0) > run.options.tol * plan.value:  # rounding: refine
        refined = _column_generation(run, cost, u, v)
        plan = min(plan, refined.plan, key=lambda q: q.value)
        dual = max(dual, refined.dual, key=lambda q: q.value)
    return plan, dual


def _passes(run: _Run) -> ShardedCost:
    """The passes over all pairs of the problem: a float64 matrix in memory for
    moderate sizes, fused tiles beyond; split by rows across the ranks of a
    distributed job (:mod:`wassnet.ot.sharded`; all rows in one process)."""
    return ShardedCost(_passes_for(run.problem, run))


def _passes_for(p: TransportProblem, run: _Run) -> PairwiseCost | TiledCost:
    if p.n * p.m <= DENSE_PASS_MAX_PAIRS:
        return PairwiseCost(p, device=run.device, dense_bytes=2**62)
    if not p.norm.is_euclidean:  # float64 chunks recomputed on every pass
        return PairwiseCost(p, device=run.device)
    return TiledCost(p, device=run.device, backend=run.options.backend)


def _column_generation(
    run: _Run, cost: PairwiseCost | TiledCost | ShardedCost, u0: np.ndarray, v0: np.ndarray
) -> AssignmentBracket:
    """Sparse plans by column generation from potentials, within the time budget."""
    solved = sparse_bracket(
        cost,
        torch.as_tensor(u0),
        torch.as_tensor(v0),
        k=run.options.candidates_for(run.problem.dim),
        rounds=run.options.rounds,
        tol=run.options.tol,
        time_budget=run.remaining(),
        callback=lambda r: run.record(r["lower"], r["upper"]),
        neighbors=8 if run.problem.dim <= 4 else 0,  # measured: 13 -> 9 passes, ring d=2
    )
    run.passes += solved.passes
    return solved


def _column_route(run: _Run, route: str) -> SampleBracket | None:
    """Routes ``assignment`` and ``transport``: warm start, then column generation."""
    p = run.problem
    if route == "assignment" and not p.uniform_square:
        raise InputError("the assignment route needs uniform weights and n == m")
    potentials = run.starting_potentials()
    if potentials is None:  # the time budget did not allow the warm start
        return _blockwise(run, None, why="no time for the warm start")
    u0, v0 = potentials
    cost = _passes(run)
    if run.deadline.limited and not run.deadline.allows(
        0.25 * run.predict("pass", p.n * p.m * max(1, p.dim / 2)) / ranks()
    ):  # not even worth timing a slice
        run.deadline.cut("passes over all pairs skipped (predicted far beyond the budget)")
        return _blockwise(run, (u0, v0), why="passes predicted far beyond the budget")
    seconds = _pass_seconds(run, cost)
    remaining = run.remaining()
    if seconds is not None and remaining is not None and remaining < 2.5 * seconds:
        run.deadline.cut(f"passes over all pairs skipped (one takes ~{seconds:.0f} s)")
        # the first bracket needs two passes (both c-transforms): out of budget
        return _blockwise(run, (u0, v0), why=f"a pass over all pairs takes ~{seconds:.0f} s")
    solved = _column_generation(run, cost, u0, v0)
    where = "fused float32 screens" if isinstance(cost.cost, TiledCost) else "float64 passes"
    kind = "assignment" if p.uniform_square else "transport plan"
    lower_method = f"{kind} potentials, c-transformed on every pair ({where})"
    plan, dual = solved.plan, solved.dual
    upper_method = plan.method  # names the solver, or says why it failed
    if _still_open(run, plan, dual) and _dense_fits(p, run.options):
        finished = _dense_bounds(run)  # column generation stalled: POT's dense solver
        if finished is not None and finished[0].value - finished[1].value < (
            plan.value - dual.value
        ):
            plan, dual = finished
            why = f"column generation left the bracket open after {len(solved.rounds)} rounds"
            lower_method = f"POT's potentials, c-transformed on every pair ({why})"
            upper_method = f"{plan.method} ({why}; its plan: {solved.plan.method})"
    return run.bracket(route, plan, dual, lower_method=lower_method, upper_method=upper_method)


def _still_open(run: _Run, plan: PrimalBound, dual: DualBound) -> bool:
    """Whether the bracket is wider than ``tol`` with time left to narrow it."""
    remaining = run.remaining()
    wide = plan.value - max(dual.value, 0.0) > run.options.tol * plan.value
    return wide and (remaining is None or remaining > 0)


def _pass_seconds(run: _Run, cost: ShardedCost) -> float | None:
    """Predicted seconds of one pass over all pairs, timed on a slice of about
    :data:`CALIBRATION_PAIRS` pairs, shared by the ranks (``None`` without a time
    budget, or for passes over a held matrix)."""
    if run.options.time_budget is None or cost.held:
        return None
    p = run.problem
    rows = CALIBRATION_PAIRS // p.m
    rows = int(min(p.n, max(1, rows // 1024 * 1024 if rows >= 1024 else rows)))  # whole tiles
    if rows == p.n:
        return None
    weights = None if p.uniform_square else p.a.probabilities()[:rows]
    sub = TransportProblem.build(p.x[:rows], p.y, weights, p.b.probabilities(), p.metric)
    if isinstance(cost.cost, TiledCost):
        slice_cost: PairwiseCost | TiledCost = TiledCost(
            sub, device=run.device, backend=run.options.backend
        )
    else:
        slice_cost = PairwiseCost(sub, device=run.device, dense_bytes=0)
    t0 = time.perf_counter()
    slice_cost.row_pass(torch.zeros(p.m, dtype=torch.float64), run.options.candidates_for(p.dim))
    return (time.perf_counter() - t0) * p.n / rows / ranks()


def _direction_scores(p: TransportProblem) -> tuple[np.ndarray, np.ndarray]:
    """Scores along the difference of the weighted means (a monotone coupling's order
    when no warm start was affordable)."""
    e = p.a.probabilities() @ p.x - p.b.probabilities() @ p.y
    return p.x @ e, p.y @ e


def _blockwise(
    run: _Run, potentials: tuple[np.ndarray, np.ndarray] | None = None, why: str = ""
) -> SampleBracket | None:
    """No pass over all pairs: a monotone coupling along the starting potentials, solved
    exactly within blocks, and sliced lower bounds. ``why``: the reason, when this
    stands in for another route (said in ``lower_method``). Under a time budget:
    ``None`` when even the coupling and its certificate are predicted not to fit, and
    the blocks are refined only while time for the rest is left."""
    p = run.problem
    limited = run.deadline.limited
    if limited and not run.fits(run.predict("blockwise", p.n + p.m), "blockwise bracket"):
        return None
    if potentials is None:
        potentials = run.starting_potentials()
    u0, v0 = potentials if potentials is not None else _direction_scores(p)
    a, b = p.a.probabilities(), p.b.probabilities()
    t0 = time.perf_counter()
    mi, mj, mmass = monotone_coupling(u0, v0, a, b)
    plan = plan_bound(p, mi, mj, mmass, "monotone coupling")
    reserve = 3.5 * (time.perf_counter() - t0)  # the final certificate, sliced bounds
    plan = blockwise_refinement(p, plan, 1000, run.deadline if limited else None, reserve)
    lower_scaled, _ = sliced_lower_bound(p)
    lower = p.to_input_units(lower_scaled, lower_scaled)[0]
    run.record(lower, plan.value)
    return run.bracket(
        "blockwise",
        plan,
        None,
        lower=lower,
        lower_method="sliced: exact W1 of projections on lines (mean difference, principal axes)"
        + (f"; no pass over all pairs: {why}, the time budget does not allow two" if why else ""),
    )


def _merged(
    run: _Run, route: str, found: SampleBracket | None, quick: QuickBracket
) -> SampleBracket:
    """The route's bracket, each side replaced by the quick bracket's where that is
    better (both certified), and the budget's sentence."""
    if found is None:  # the planned route did not run: its name would mislead
        found = run.bracket(
            "quick", None, None, lower=quick.lower, upper=quick.upper,
            lower_method=quick.lower_method, upper_method=quick.upper_method,
        )  # fmt: skip
        source = "bracket from the quick certificates (hub coupling, linear critic)"
    else:
        source = f"bracket from the {found.route} route"
        if quick.lower > found.lower:
            found.lower, found.lower_method, found.potentials = (
                quick.lower,
                quick.lower_method,
                None,
            )
            source += " (lower: the quick linear critic)"
        if quick.upper < found.upper:
            found.upper, found.upper_method, found.plan = quick.upper, quick.upper_method, None
            source += " (upper: the quick hub coupling)"
    found.seconds = time.perf_counter() - run.start
    sentence = run.deadline.describe()
    found.budget = f"{sentence}; {source}" if run.deadline.cuts else sentence
    return found


_ROUTES: dict[str, Callable[[_Run], SampleBracket | None]] = {
    "line": _line,
    "dense": _dense,
    "assignment": lambda run: _column_route(run, "assignment"),
    "transport": lambda run: _column_route(run, "transport"),
    "blockwise": _blockwise,
}


def sample_bracket(
    problem: TransportProblem,
    options: SampleOptions | None = None,
    *,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = False,
    deadline: Deadline | None = None,
) -> SampleBracket:
    """Certified bracket on W1 between the two samples of ``problem``.

    Args:
        problem: the clouds and their exact marginals
            (:meth:`wassnet.ot.TransportProblem.build`).
        options: route, time budget, tolerance (:class:`SampleOptions`).
        device: where passes over all pairs run (CPU by default; a GPU when given).
        seed: picks the warm start's subsample.
        progress: show a progress bar with the bracket as it narrows.
        deadline: the clock of the whole call (:class:`~wassnet.deadline.Deadline`),
            started by the caller; default: one started now with
            ``options.time_budget``. With a budget, the quick bracket
            (:mod:`wassnet.ot.quick`) comes first and the route's stages run only as
            far as the budget allows (see :class:`SampleOptions`).

    Returns:
        A :class:`SampleBracket`: ``lower <= W1 <= upper`` exactly, in the input's units.
    """
    options = options or SampleOptions()
    route = choose_route(problem, options) if options.route == "auto" else options.route
    if route == "line" and problem.dim != 1:
        raise InputError(f"the line route needs points on the line (d = 1), got d={problem.dim}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    bar = tqdm(desc=f"W1 bracket ({route})", unit="round", disable=not progress, leave=False)
    deadline = deadline if deadline is not None else Deadline(options.time_budget)
    run = _Run(problem, options, dev, np.random.default_rng(seed), bar, deadline)
    try:
        if not deadline.limited:
            found = _ROUTES[route](run)
            assert found is not None  # only a time budget skips a route
            return found
        t0 = time.perf_counter()
        quick = quick_bracket(problem)
        units = (problem.n + problem.m) * problem.dim
        run.slow = max(1.0, (time.perf_counter() - t0) / (SECONDS_PER_UNIT["quick"] * units))
        run.record(quick.lower, quick.upper)
        return _merged(run, route, _ROUTES[route](run), quick)
    finally:
        bar.close()
