r"""Certified W1 brackets at scale: column generation on sparse graphs of candidate pairs.

Optimal transport between two clouds is a linear program over ``n m`` pairs;
:func:`sparse_bracket` solves it on a sparse graph of candidate pairs and grows the
graph only where the duals say it must, never holding the ``n x m`` matrix. With uniform
weights and ``n == m`` it is an assignment problem (some permutation :math:`\sigma` is
optimal and :math:`W_1 = \frac1n \sum_i c_{i\sigma(i)}`). Each round:

1. Primal: the optimal plan within the graph -- an assignment
   (:func:`~wassnet.ot.native.assign`: an auction with eps-scaling, then shortest
   augmenting paths, warm-started from the previous round) or a transport plan
   (POT's network simplex from scratch; near the optimum our network simplex,
   :func:`~wassnet.ot.simplex.transport_simplex`, warm-started from the previous
   round's plan). Its cost, with certified cost bounds
   and charged marginal residuals, is a **certified upper bound**
   (:func:`~wassnet.ot.plans.plan_bound`).
2. Dual: the solver's potentials ``(u, v)``, for which every graph edge has
   nonnegative reduced cost and every used edge zero. One pass over *all* pairs
   replaces ``u`` by :math:`u'_i = \min_j (v_j + c_{ij})`, rounded down
   (:func:`~wassnet.ot.dual.half_transform`): ``(u', v)`` is feasible everywhere, a
   **certified lower bound**, equal to the plan's cost when ``(u, v)`` was already
   feasible. The same pass prices the pairs: for each row with a negative reduced
   cost, the ``k`` columns of smallest reduced cost.
3. Priced pairs with a negative reduced cost join the graph; repeat until the bracket
   is closed to ``tol``, no pair prices out (the graph's optimum is then the global
   one), ``rounds`` are done, or time is up.

The starting potentials (e.g. from a solved subsample,
:func:`~wassnet.ot.multiscale.warm_start`) are c-transformed first (two passes): a
certified lower bound before any plan, and candidates for rows and columns. Passes
are float64 chunks (:class:`~wassnet.ot.costs.PairwiseCost`) or fused float32 screens
with exact float64 recomputation (:class:`~wassnet.ot.tiles.TiledCost`): either way
the bracket closes to float64 rounding. Each round costs one pass over the ``n m``
pairs and one sparse solve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from wassnet.errors import InputError
from wassnet.ot.costs import PairwiseCost, pair_cost_bounds
from wassnet.ot.dual import DualBound, c_transform, dual_value, half_transform
from wassnet.ot.matching import matching_potentials as _matching_potentials  # noqa: F401 (old path)
from wassnet.ot.native import assign, solver_name
from wassnet.ot.plans import PrimalBound, monotone_coupling, plan_bound, polish_forest_masses
from wassnet.ot.problem import TransportProblem
from wassnet.ot.sharded import ShardedCost
from wassnet.ot.simplex import SimplexBasis, forest_basis, simplex_available, transport_simplex
from wassnet.ot.tiles import TiledCost

__all__ = ["AssignmentBracket", "assignment_bracket", "sparse_bracket"]


@dataclass(frozen=True)
class AssignmentBracket:
    """The result of :func:`assignment_bracket`: a plan, a feasible dual, the history.

    ``plan.value`` and ``dual.value`` bracket W1; ``rounds`` lists, per round, the
    number of candidate pairs, both bounds and the elapsed seconds; ``passes`` counts
    the passes over all pairs.
    """

    plan: PrimalBound
    dual: DualBound
    rounds: list[dict[str, float]]
    passes: int


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of int64 keys by one sort (numpy 2.4's hashing ``np.unique`` was
    measured 70x slower on 1.6e6 keys spread over 1e10 values)."""
    keys = np.sort(keys)
    if len(keys) < 2:
        return keys
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def _row_keys(candidates: torch.Tensor, m: int) -> np.ndarray:
    """Keys ``i m + j`` of per-row candidate columns ``[n, k]``."""
    cols = candidates.cpu().numpy()
    return np.repeat(np.arange(len(cols), dtype=np.int64), cols.shape[1]) * m + cols.reshape(-1)


def _col_keys(candidates: torch.Tensor, m: int) -> np.ndarray:
    """Keys ``i m + j`` of per-column candidate rows ``[m, k]``."""
    rows = candidates.cpu().numpy()
    return rows.reshape(-1).astype(np.int64) * m + np.repeat(np.arange(m), rows.shape[1])


@dataclass
class _Graph:
    """The sparse graph of candidate pairs (sorted keys ``i m + j``) and their costs
    (certified upper bounds)."""

    problem: TransportProblem
    keys: np.ndarray
    costs: np.ndarray

    @classmethod
    def of(cls, problem: TransportProblem, keys: np.ndarray) -> _Graph:
        m = problem.m
        keys = _sorted_unique(keys)
        costs = pair_cost_bounds(problem, keys // m, keys % m)[1]
        return cls(problem, keys, costs)

    def missing(self, keys: np.ndarray) -> np.ndarray:
        """The keys (unique) not yet in the graph."""
        keys = _sorted_unique(keys)
        pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return keys[self.keys[pos] != keys]

    def add(self, new: np.ndarray, new_costs: np.ndarray) -> None:
        keys = np.concatenate([self.keys, new])
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.costs = np.concatenate([self.costs, new_costs])[order]


@dataclass(frozen=True)
class _Neighbours:
    """The ``k`` nearest neighbours of every point within its own cloud."""

    m: int
    of_x: np.ndarray
    of_y: np.ndarray

    @classmethod
    def of(cls, problem: TransportProblem, k: int) -> _Neighbours:
        from scipy.spatial import cKDTree

        def knn(points: np.ndarray) -> np.ndarray:
            kk = min(k + 1, len(points))
            found = cKDTree(points).query(points, k=kk, p=problem.norm.p)[1]
            return found.reshape(len(points), kk).astype(np.int64)

        return cls(problem.m, knn(problem.x), knn(problem.y))

    def keys(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Keys of the pairs (row, neighbour of its partner) and (neighbour of the
        column's partner, column) for the plan's pairs ``(rows, cols)``."""
        to_y = rows[:, None] * self.m + self.of_y[cols]
        to_x = self.of_x[rows] * self.m + cols[:, None]
        return np.concatenate([to_y.reshape(-1), to_x.reshape(-1)])


@dataclass
class _Solution:
    """A plan on the graph and its potentials (problem units)."""

    rows: np.ndarray
    cols: np.ndarray
    mass: np.ndarray
    u: np.ndarray
    v: np.ndarray
    match: np.ndarray | None = None
    basis: SimplexBasis | None = None


#: A transport round starts from the previous round's tree (our network simplex) when
#: the previous plan was within this relative gap of the dual bound; farther from the
#: optimum a warm tree saves no pivots (measured: 1.72e5 pivots warm vs 1.76e5 cold at
#: n = 20 000, d = 16, a 3% gap) and its deep subtrees make each pivot dearer, so POT's
#: cold solve (faster than ours from scratch) serves.
SIMPLEX_WARM_GAP = 1e-3


def _solve(graph: _Graph, v: np.ndarray, previous: _Solution | None, gap: float) -> _Solution:
    """The optimal plan on the graph: an assignment for uniform clouds of equal size
    (warm-started from the previous round), a transport plan otherwise (warm-started
    from the previous round's plan when it was within :data:`SIMPLEX_WARM_GAP`)."""
    problem = graph.problem
    n = problem.n
    if problem.uniform_square:
        solution = assign(
            graph.keys, graph.costs, n, v, None if previous is None else previous.match
        )
        return _Solution(np.arange(n), solution.match, np.full(n, 1.0 / n), solution.u,
                         solution.v, solution.match)  # fmt: skip
    a, b = problem.a.probabilities(), problem.b.probabilities()
    if previous is not None and gap <= SIMPLEX_WARM_GAP and simplex_available():
        try:
            basis = previous.basis
            if basis is None:  # the previous round was POT's: a tree from its plan
                basis = forest_basis(previous.rows, previous.cols, previous.mass, problem.m, a, b)
            plan = transport_simplex(graph.keys, graph.costs, problem.m, a, b, basis)
            return _Solution(plan.rows, plan.cols, plan.mass, plan.u, plan.v, basis=plan.basis)
        except RuntimeError:
            pass  # a tree that does not fit: POT solves from scratch
    return _network_simplex(graph, a, b)


def _network_simplex(graph: _Graph, a: np.ndarray, b: np.ndarray) -> _Solution:
    """POT's network simplex on the sparse graph (which holds a feasible plan: the
    monotone coupling is always part of it). Neither the plan nor the potentials need be
    exactly optimal: the caller certifies both."""
    from ot.lp.emd_wrap import emd_c_sparse

    m = graph.problem.m
    rows, cols = graph.keys // m, graph.keys % m
    src, dst, mass, _, u, v, _ = emd_c_sparse(
        a, b * (a.sum() / b.sum()), rows.astype(np.uint64), cols.astype(np.uint64),
        np.ascontiguousarray(graph.costs), 100 * len(graph.keys) + 10**7,
    )  # fmt: skip
    src, dst, mass = np.asarray(src, np.int64), np.asarray(dst, np.int64), np.asarray(mass)
    keep = mass > 0
    # POT's potentials satisfy u_i + v_j <= c_ij; ours u_i - v_j <= c_ij
    return _Solution(src[keep], dst[keep], mass[keep], np.asarray(u), -np.asarray(v))


@dataclass
class _ColumnGeneration:
    """The state of :func:`sparse_bracket` between rounds: the graph, the best certified
    bounds so far, the last plan, and the clocks that predict the next round.

    Invariant: ``best_dual`` is feasible on every pair and ``best_plan`` (once set) is a
    plan's certified cost, so ``best_dual.value <= W1 <= best_plan.value`` throughout.
    """

    cost: PairwiseCost | TiledCost | ShardedCost
    a: np.ndarray
    b: np.ndarray
    monotone: tuple[np.ndarray, np.ndarray, np.ndarray]  # always in the graph: a fallback
    graph: _Graph
    best_dual: DualBound
    v_next: np.ndarray
    scale: float  # for relative pricing tolerances
    method: str
    t0: float
    pass_seconds: float  # the last pass over all pairs, for the round predictions
    pass_end: float
    passes: int = 2
    best_plan: PrimalBound | None = None
    solution: _Solution | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        cost: PairwiseCost | TiledCost | ShardedCost,
        u0: torch.Tensor,
        v0: torch.Tensor,
        k: int,
    ) -> _ColumnGeneration:
        """Both c-transforms of the starting potentials (a certified lower bound, and
        candidates for rows and for columns), and the first graph: those candidates and
        the monotone coupling of the starting potentials (a feasible plan)."""
        problem, m = cost.problem, cost.m
        t0 = time.perf_counter()
        start = c_transform(cost, u0, k)
        pass_seconds = (time.perf_counter() - t0) / 2  # one pass, for the round predictions
        pass_end = time.perf_counter()
        best_dual = DualBound(dual_value(problem, start.u, start.v), start.u, start.v)
        a, b = problem.a.probabilities(), problem.b.probabilities()
        u0_np, v0_np = u0.double().cpu().numpy(), v0.double().cpu().numpy()
        mi, mj, mono_mass = monotone_coupling(u0_np, v0_np, a, b)
        graph = _Graph.of(
            problem,
            np.concatenate(
                [mi.astype(np.int64) * m + mj, _row_keys(start.row_candidates, m),
                 _col_keys(start.col_candidates, m)]
            ),
        )  # fmt: skip
        kind = "assignment" if problem.uniform_square else "transport plan"
        method = f"optimal {kind} within candidate pairs ({solver_name(problem.uniform_square)})"
        return cls(
            cost, a, b, (mi, mj, mono_mass), graph, best_dual, start.v.cpu().numpy(),
            float(graph.costs.max()) + 1e-300, method, t0, pass_seconds, pass_end,
        )  # fmt: skip

    @property
    def upper(self) -> PrimalBound:
        assert self.best_plan is not None
        return self.best_plan

    def solve(self) -> bool:
        """The optimal plan on the graph, certified; the best upper bound kept. False when
        the sparse solver failed (the monotone coupling then serves if nothing else has)."""
        gap = math.inf
        if self.best_plan is not None and self.best_plan.value > 0:
            gap = 1.0 - self.best_dual.value / self.best_plan.value
        try:
            self.solution = _solve(self.graph, self.v_next, self.solution, gap)
        except RuntimeError as exc:  # keep what is certified so far, and say why
            if self.best_plan is None:
                why = f"monotone coupling (the sparse solver failed: {exc})"
                self.best_plan = plan_bound(self.cost.problem, *self.monotone, why)
            return False
        plan = self._certified(self.solution)
        if self.best_plan is None or plan.value < self.best_plan.value:
            self.best_plan = plan
        return True

    def _certified(self, solution: _Solution) -> PrimalBound:
        problem = self.cost.problem
        mass = solution.mass
        if not problem.uniform_square:
            mass = polish_forest_masses(solution.rows, solution.cols, mass, self.a, self.b)
        return plan_bound(problem, solution.rows, solution.cols, mass, self.method)

    def closed(self, tol: float) -> bool:
        """Whether ``upper - lower <= tol * upper``."""
        return self.upper.value - self.best_dual.value <= tol * self.upper.value

    def out_of_time(self, time_budget: float | None) -> bool:
        """Whether the next round (one pass, then the graph's growth and a solve like
        this round's, with 20% to spare) would end past ``time_budget``."""
        elapsed = time.perf_counter() - self.t0
        next_round = self.pass_seconds + (time.perf_counter() - self.pass_end)
        return time_budget is not None and elapsed + 1.2 * next_round > time_budget

    def price(self, k: int) -> torch.Tensor:
        """One pass over all pairs: the c-transform of the plan's column potentials (a
        feasible dual, kept when better) and each row's ``k`` cheapest reduced costs."""
        solution = self.solution
        assert solution is not None
        pass_start = time.perf_counter()
        dual, candidates = half_transform(
            self.cost,
            torch.as_tensor(solution.v),
            k,
            below=torch.as_tensor(solution.u) - 1e-12 * self.scale,
        )
        self.passes += 1
        self.pass_end = time.perf_counter()
        self.pass_seconds = self.pass_end - pass_start
        if dual.value > self.best_dual.value:
            self.best_dual = dual
        return candidates

    def record(self, round_: int, callback: Callable[[dict[str, float]], None] | None) -> None:
        entry = {
            "round": round_,
            "pairs": float(len(self.graph.keys)),
            "lower": self.best_dual.value,
            "upper": self.upper.value,
            "seconds": time.perf_counter() - self.t0,
        }
        self.history.append(entry)
        if callback is not None:
            callback(entry)

    def grow(self, candidates: torch.Tensor, near: _Neighbours | None) -> bool:
        """Add the priced pairs (and the plan's neighbours' pairs) with a negative reduced
        cost. False when no pair outside the graph prices out: its optimum is the global
        one."""
        problem, m, solution = self.cost.problem, self.cost.m, self.solution
        assert solution is not None
        new = self.graph.missing(_row_keys(candidates, m))
        new_costs = pair_cost_bounds(problem, new // m, new % m)[1]
        reduced = new_costs - solution.u[new // m] + solution.v[new % m]
        if len(new) == 0 or reduced.min() >= -1e-12 * self.scale:
            return False
        if near is not None:
            extra = self.graph.missing(
                np.concatenate([new, near.keys(solution.rows, solution.cols)])
            )
            extra_costs = pair_cost_bounds(problem, extra // m, extra % m)[1]
            price = extra_costs - solution.u[extra // m] + solution.v[extra % m]
            new, new_costs = extra[price < 0], extra_costs[price < 0]
        self.graph.add(new, new_costs)
        self.v_next = solution.v
        return True


def sparse_bracket(
    cost: PairwiseCost | TiledCost | ShardedCost,
    u0: torch.Tensor,
    v0: torch.Tensor,
    *,
    k: int = 8,
    rounds: int = 8,
    tol: float = 1e-9,
    time_budget: float | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
    neighbors: int = 0,
) -> AssignmentBracket:
    """Certified bracket by column generation on sparse graphs of candidate pairs.

    Uniform clouds of equal size are assignment problems (:func:`~wassnet.ot.native.assign`);
    other weights transport problems (POT's network simplex on the sparse graph). See
    the module notes.

    Args:
        cost: the passes over all pairs: :class:`PairwiseCost` (float64 chunks, for
            small problems) or :class:`TiledCost` (fused float32 screens).
        u0, v0: starting potentials (problem units), e.g. from a solved subsample.
        k: pricing candidates per point and pass.
        rounds: at most this many plans are solved.
        tol: stop when ``upper - lower <= tol * upper``.
        time_budget: seconds; no new round starts unless it is predicted to end in
            time (one pass, as long as the last one, and a solve and graph update as long
            as the last ones, with 20% to spare).
        callback: called with each round's record (for progress display).
        neighbors: also price, each round, the pairs between a point and the
            ``neighbors`` nearest neighbours of its partners in the plan (a k-d tree;
            for low dimension, where optimal plans are locally monotone and the
            pass's ``k`` candidates per row miss most of the nearly tight pairs).

    Returns:
        :class:`AssignmentBracket`; ``plan.value`` (the plan's certified cost) and
        ``dual.value`` (a dual pair feasible on every pair) bracket W1.
    """
    run = _ColumnGeneration.start(cost, u0, v0, k)
    near = _Neighbours.of(cost.problem, neighbors) if neighbors > 0 else None
    for round_ in range(1, rounds + 1):
        if not run.solve():
            break
        stop = (
            run.closed(tol)
            or run.upper.value <= 0
            or round_ == rounds
            or run.out_of_time(time_budget)
        )
        candidates = None if stop else run.price(k)
        run.record(round_, callback)
        if candidates is None or run.closed(tol) or not run.grow(candidates, near):
            break
    return AssignmentBracket(run.upper, run.best_dual, run.history, run.passes)


def assignment_bracket(
    cost: PairwiseCost | TiledCost | ShardedCost,
    u0: torch.Tensor,
    v0: torch.Tensor,
    **options: object,
) -> AssignmentBracket:
    """:func:`sparse_bracket` for uniform clouds of equal size (checked)."""
    if cost.m != cost.n:
        raise InputError("assignment_bracket needs two clouds of the same size")
    if not cost.problem.uniform_square:
        raise InputError("assignment_bracket needs uniform weights")
    return sparse_bracket(cost, u0, v0, **options)  # type: ignore[arg-type]
