r"""A certified W1 bracket at scale for two uniform clouds of equal size.

With uniform weights and ``n == m``, optimal transport is an assignment problem: some
permutation :math:`\sigma` is an optimal plan, and :math:`W_1 = \frac1n \sum_i
c_{i\sigma(i)}`. :func:`assignment_bracket` solves it by **column generation** on a
sparse graph of candidate pairs, never holding the ``n x n`` matrix. Each round:

1. Primal: the optimal permutation within the graph
   (:func:`~wassnet.ot.native.assign`: an auction with eps-scaling, then shortest
   augmenting paths, warm-started from the previous round's matching and potentials);
   read as the exact assignment, its cost (certified cost bounds, rounded up) is a
   **certified upper bound** (:func:`~wassnet.ot.plans.plan_bound`).
2. Dual: the solver's potentials ``(u, v)``, for which every graph edge has
   nonnegative reduced cost and every matched edge zero. One pass over *all* pairs
   replaces ``u`` by
   :math:`u'_i = \min_j (v_j + c_{ij})`, rounded down
   (:func:`~wassnet.ot.dual.half_transform`): ``(u', v)`` is feasible everywhere, a
   **certified lower bound**, equal to the plan's cost when ``(u, v)`` was already
   feasible. The same pass prices the pairs: per row, the ``k`` columns of smallest
   reduced cost.
3. Priced pairs with a negative reduced cost join the graph; repeat until the bracket
   is closed to ``tol``, no pair prices out (the graph's optimum is then the global
   one), ``rounds`` are done, or time is up.

The starting potentials (e.g. from a solved subsample,
:func:`~wassnet.ot.multiscale.warm_start`) go through the same pass first: a certified
lower bound before any assignment, and the first candidates. Passes are float64 chunks
(:class:`~wassnet.ot.costs.PairwiseCost`) or fused float32 screens with exact float64
recomputation (:class:`~wassnet.ot.tiles.TiledCost`): either way the bracket closes to
float64 rounding. Each round costs one pass over the ``n^2`` pairs and one sparse
assignment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wassnet.ot.costs import PairwiseCost, pair_cost_bounds
from wassnet.ot.dual import DualBound, c_transform, dual_value, half_transform
from wassnet.ot.native import Assignment, assign
from wassnet.ot.plans import PrimalBound, monotone_coupling, plan_bound
from wassnet.ot.problem import TransportProblem
from wassnet.ot.tiles import TiledCost

__all__ = ["AssignmentBracket", "assignment_bracket"]


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


def _matching_potentials(
    rows: np.ndarray, cols: np.ndarray, costs: np.ndarray, match: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""Dual potentials of an optimal assignment within a sparse graph.

    With ``match[i]`` the column of row ``i``, we want :math:`u_i - v_j \le c_{ij}` on
    every edge with equality on matched edges. Setting :math:`v_{\sigma(k)} = u_k -
    c_{k\sigma(k)}` turns an edge ``(i, j = σ(k))`` into :math:`u_i \le u_k + c_{ij} -
    c_{kj}`: shortest-path distances from a virtual source (zero-weight arcs to all
    rows) satisfy it, and exist because an optimal matching leaves no negative cycle.
    Bellman–Ford, vectorized, relaxing only arcs out of rows improved in the last
    sweep. Rounding can create cycles of weight ``-1e-15``; improvements below a
    relative ``1e-13`` are ignored, so it always stops. (Exact potentials are not
    needed: the c-transforms that follow make any potential feasible.)
    """
    owner = np.empty(n, dtype=np.int64)
    owner[match] = np.arange(n)
    matched_cost = np.empty(n)
    edge_of_match = rows * n + cols
    key = np.arange(n, dtype=np.int64) * n + match
    pos = np.searchsorted(edge_of_match, key)  # rows*n + cols is sorted (unique keys)
    matched_cost[:] = costs[pos]
    k = owner[cols]
    arc = k != rows
    src, dst = k[arc], rows[arc]
    weight = costs[arc] - matched_cost[src]
    order = np.argsort(src, kind="stable")
    src, dst, weight = src[order], dst[order], weight[order]
    start = np.searchsorted(src, np.arange(n + 1))
    dist = np.zeros(n)
    tol = 1e-13 * max(1.0, float(np.abs(costs).max()))
    active = np.arange(n)
    for _ in range(4 * n + 10):
        if len(active) == 0:
            break
        lens = start[active + 1] - start[active]
        total = int(lens.sum())
        if total == 0:
            break
        base = np.repeat(start[active] - np.cumsum(lens) + lens, lens)
        idx = base + np.arange(total)
        cand = dist[src[idx]] + weight[idx]
        target = dst[idx]
        better = cand < dist[target] - tol
        if not better.any():
            break
        target, cand = target[better], cand[better]
        order = np.lexsort((cand, target))
        target, cand = target[order], cand[order]
        first = np.ones(len(target), dtype=bool)
        first[1:] = target[1:] != target[:-1]
        target, cand = target[first], cand[first]
        dist[target] = cand
        active = target
    u = dist
    v = np.empty(n)
    v[match] = u - matched_cost
    return u, v


def _row_keys(candidates: torch.Tensor, n: int) -> np.ndarray:
    """Keys ``i n + j`` of per-row candidate columns ``[n, k]``."""
    cols = candidates.cpu().numpy()
    return np.repeat(np.arange(n, dtype=np.int64), cols.shape[1]) * n + cols.reshape(-1)


@dataclass
class _Graph:
    """The sparse graph of candidate pairs (sorted keys ``i n + j``) and their costs."""

    problem: TransportProblem
    keys: np.ndarray
    costs: np.ndarray

    @classmethod
    def of(cls, problem: TransportProblem, keys: np.ndarray) -> _Graph:
        n = problem.n
        keys = np.unique(keys)
        return cls(problem, keys, pair_cost_bounds(problem, keys // n, keys % n)[1])

    def add(self, new: np.ndarray, new_costs: np.ndarray) -> None:
        self.keys, order = np.unique(np.concatenate([self.keys, new]), return_index=True)
        self.costs = np.concatenate([self.costs, new_costs])[order]


def assignment_bracket(
    cost: PairwiseCost | TiledCost,
    u0: torch.Tensor,
    v0: torch.Tensor,
    *,
    k: int = 8,
    rounds: int = 8,
    tol: float = 1e-9,
    time_budget: float | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> AssignmentBracket:
    """Certified bracket for uniform clouds with ``n == m`` by column generation.

    Args:
        cost: the passes over all pairs: :class:`PairwiseCost` (float64 chunks, for
            small problems) or :class:`TiledCost` (fused float32 screens).
        u0, v0: starting potentials (problem units), e.g. from a solved subsample.
        k: pricing candidates per point and pass.
        rounds: at most this many assignments are solved.
        tol: stop when ``upper - lower <= tol * upper``.
        time_budget: seconds; no new round starts once it is spent.
        callback: called with each round's record (for progress display).

    Returns:
        :class:`AssignmentBracket`; ``plan.value`` (the exact assignment's certified
        cost) and ``dual.value`` (a dual pair feasible on every pair) bracket W1.
    """
    problem = cost.problem
    n = cost.n
    if cost.m != n:
        raise ValueError("assignment_bracket needs two clouds of the same size")
    if not problem.uniform_square:
        raise ValueError("assignment_bracket needs uniform weights")
    t0 = time.perf_counter()
    # the starting potentials: both c-transforms, candidates for rows and for columns
    start = c_transform(cost, u0, k)
    passes = 2
    best_dual = DualBound(dual_value(problem, start.u, start.v), start.u, start.v)
    uniform = np.full(n, 1.0 / n)
    u_np, v_np = u0.double().cpu().numpy(), v0.double().cpu().numpy()
    mi, mj, _ = monotone_coupling(u_np, v_np, uniform, uniform)
    by_col = start.col_candidates.cpu().numpy()
    col_keys = by_col.reshape(-1).astype(np.int64) * n + np.repeat(np.arange(n), by_col.shape[1])
    first = np.concatenate(
        [mi.astype(np.int64) * n + mj, _row_keys(start.row_candidates, n), col_keys]
    )
    graph = _Graph.of(problem, first)
    v_prev = start.v.cpu().numpy()
    scale = float(graph.costs.max()) + 1e-300  # for relative pricing tolerances
    best_plan: PrimalBound | None = None
    history: list[dict[str, float]] = []
    solution: Assignment | None = None
    for round_ in range(1, rounds + 1):
        solution = assign(
            graph.keys,
            graph.costs,
            n,
            v_prev if solution is None else solution.v,
            None if solution is None else solution.match,
        )
        match = solution.match
        plan = plan_bound(problem, np.arange(n), match, uniform, "sparse assignment")
        if best_plan is None or plan.value < best_plan.value:
            best_plan = plan
        closed = best_plan.value - best_dual.value <= tol * best_plan.value
        elapsed = time.perf_counter() - t0
        out_of_time = time_budget is not None and elapsed * (round_ + 1) / round_ > time_budget
        if not (closed or best_plan.value <= 0 or round_ == rounds or out_of_time):
            u_m, v_m = solution.u, solution.v
            dual, candidates = half_transform(
                cost, torch.as_tensor(v_m), k, below=torch.as_tensor(u_m) - 1e-12 * scale
            )
            passes += 1
            if dual.value > best_dual.value:
                best_dual = dual
            closed = best_plan.value - best_dual.value <= tol * best_plan.value
        entry = {
            "round": round_,
            "pairs": float(len(graph.keys)),
            "lower": best_dual.value,
            "upper": best_plan.value,
            "seconds": time.perf_counter() - t0,
        }
        history.append(entry)
        if callback is not None:
            callback(entry)
        if closed or best_plan.value <= 0 or round_ == rounds or out_of_time:
            break
        new = np.setdiff1d(_row_keys(candidates, n), graph.keys, assume_unique=False)
        new_costs = pair_cost_bounds(problem, new // n, new % n)[1]
        reduced = new_costs - u_m[new // n] + v_m[new % n]
        if len(new) == 0 or reduced.min() >= -1e-12 * scale:
            break  # no pair outside the graph prices out: its optimum is the global one
        graph.add(new, new_costs)
    assert best_plan is not None
    return AssignmentBracket(best_plan, best_dual, history, passes)
