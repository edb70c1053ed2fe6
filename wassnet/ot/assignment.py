r"""A certified W1 bracket at scale for two uniform clouds of equal size.

With uniform weights and ``n == m``, optimal transport is an assignment problem: some
permutation :math:`\sigma` is an optimal plan, and :math:`W_1 = \frac1n \sum_i
c_{i\sigma(i)}`. :func:`assignment_bracket` solves it by **column generation** on a
sparse graph of candidate pairs, never holding the ``n x n`` matrix. Each round:

1. Primal: the optimal permutation within the graph (sparse Jonker–Volgenant on
   quantized reduced costs, :func:`~wassnet.ot.plans.solve_assignment`); read as the
   exact assignment, its cost (certified cost bounds, rounded up) is a **certified
   upper bound** (:func:`~wassnet.ot.plans.plan_bound`).
2. Dual: potentials for which every graph edge has nonnegative reduced cost and every
   matched edge zero: shortest paths in the matching's residual graph
   (:func:`_matching_potentials`). Their c-transforms over *all* pairs
   (:func:`~wassnet.ot.dual.c_transform`) are feasible everywhere: a **certified lower
   bound**. The same two passes price the pairs: per row and per column, the ``k``
   pairs of smallest reduced cost.
3. Priced pairs with a negative reduced cost join the graph; repeat until the bracket
   is closed to ``tol``, no pair prices out (the graph's optimum is then the global
   one), ``rounds`` are done, or time is up.

The starting potentials (e.g. from a solved subsample,
:func:`~wassnet.ot.multiscale.warm_start`) are c-transformed first: a certified lower
bound before any assignment, and the first candidates. Passes are float64 chunks
(:class:`~wassnet.ot.costs.PairwiseCost`) or fused float32 screens with exact float64
recomputation (:class:`~wassnet.ot.tiles.TiledCost`): either way the bracket closes to
float64 rounding. Each round costs two passes over the ``n^2`` pairs and one sparse
assignment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wassnet.ot.costs import PairwiseCost
from wassnet.ot.dual import DualBound, Transform, c_transform, dual_value
from wassnet.ot.plans import PrimalBound, monotone_coupling, plan_bound, solve_assignment
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


def _candidate_keys(t: Transform, n: int) -> np.ndarray:
    """Keys ``i n + j`` of the pricing candidates of a transform (rows and columns)."""
    rows_c = t.row_candidates.cpu().numpy()
    cols_c = t.col_candidates.cpu().numpy()
    by_row = np.repeat(np.arange(n, dtype=np.int64), rows_c.shape[1]) * n + rows_c.reshape(-1)
    by_col = cols_c.reshape(-1).astype(np.int64) * n + np.repeat(np.arange(n), cols_c.shape[1])
    return np.union1d(by_row, by_col)


@dataclass
class _Graph:
    """The sparse graph of candidate pairs (sorted keys ``i n + j``) and their costs."""

    cost: PairwiseCost | TiledCost
    keys: np.ndarray
    costs: np.ndarray

    @classmethod
    def of(cls, cost: PairwiseCost | TiledCost, keys: np.ndarray) -> _Graph:
        n = cost.n
        keys = np.unique(keys)
        return cls(cost, keys, _pair_costs(cost, keys // n, keys % n))

    def add(self, new: np.ndarray, new_costs: np.ndarray) -> None:
        self.keys, order = np.unique(np.concatenate([self.keys, new]), return_index=True)
        self.costs = np.concatenate([self.costs, new_costs])[order]


def _pair_costs(cost: PairwiseCost | TiledCost, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    from wassnet.ot.costs import pair_cost_bounds

    return pair_cost_bounds(cost.problem, rows, cols)[1]


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
    transform = c_transform(cost, u0, k)
    passes = 2
    best_dual = DualBound(dual_value(problem, transform.u, transform.v), transform.u, transform.v)
    uniform = np.full(n, 1.0 / n)
    u_np, v_np = u0.double().cpu().numpy(), v0.double().cpu().numpy()
    mi, mj, _ = monotone_coupling(u_np, v_np, uniform, uniform)
    graph = _Graph.of(cost, np.union1d(mi.astype(np.int64) * n + mj, _candidate_keys(transform, n)))
    u_prev, v_prev = transform.u.cpu().numpy(), transform.v.cpu().numpy()
    best_plan: PrimalBound | None = None
    history: list[dict[str, float]] = []

    def record(round_: int) -> float:
        assert best_plan is not None
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
        return best_plan.value - best_dual.value

    for round_ in range(1, rounds + 1):
        match = solve_assignment(graph.keys, graph.costs, n, u_prev, v_prev)
        plan = plan_bound(problem, np.arange(n), match, uniform, "sparse assignment")
        if best_plan is None or plan.value < best_plan.value:
            best_plan = plan
        gap = best_plan.value - best_dual.value
        elapsed = time.perf_counter() - t0
        out_of_time = time_budget is not None and elapsed * (round_ + 1) / round_ > time_budget
        if gap <= tol * best_plan.value or best_plan.value <= 0 or round_ == rounds or out_of_time:
            record(round_)
            break
        u_m, v_m = _matching_potentials(graph.keys // n, graph.keys % n, graph.costs, match, n)
        transform = c_transform(cost, torch.as_tensor(u_m, device=cost.device), k)
        passes += 2
        dual = DualBound(dual_value(problem, transform.u, transform.v), transform.u, transform.v)
        if dual.value > best_dual.value:
            best_dual = dual
        if record(round_) <= tol * best_plan.value:
            break
        new = np.setdiff1d(_candidate_keys(transform, n), graph.keys, assume_unique=True)
        new_costs = _pair_costs(cost, new // n, new % n)
        reduced = new_costs - u_m[new // n] + v_m[new % n]
        if len(new) == 0 or reduced.min() >= -1e-12 * float(graph.costs.max()):
            break  # no pair outside the graph prices out: its optimum is the global one
        graph.add(new, new_costs)
        u_prev, v_prev = u_m, v_m
    assert best_plan is not None
    return AssignmentBracket(best_plan, best_dual, history, passes)
