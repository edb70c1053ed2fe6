r"""A certified W1 bracket at scale for two uniform clouds of equal size.

With uniform weights and ``n == m``, optimal transport is an assignment problem: some
permutation :math:`\sigma` is an optimal plan, and :math:`W_1 = \frac1n \sum_i
c_{i\sigma(i)}`. :func:`assignment_bracket` solves it by **column generation** on a
sparse graph of candidate pairs, never holding the ``n x n`` matrix:

1. Candidates: for each point, the pairs of smallest reduced cost
   :math:`c_{ij} - u_i + v_j` for the current potentials (a 1-Lipschitz critic's values
   to start with), found by a fused pass over all pairs
   (:meth:`~wassnet.ot.tiles.TiledCost.row_candidates`), plus a permutation that
   keeps the graph's perfect matching feasible.
2. Primal: the optimal permutation within the graph (sparse Jonker–Volgenant,
   :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching`); its cost,
   recomputed pair by pair in float64 and rounded up, is a **certified upper bound**.
3. Dual: potentials for which every graph edge has nonnegative reduced cost and every
   matched edge zero: shortest paths in the matching's residual graph
   (:func:`_matching_potentials`). Exact c-transforms over *all* pairs
   (:func:`~wassnet.ot.dual.tiled_c_transform_bound`) make them feasible everywhere:
   a **certified lower bound**.
4. Pairs whose reduced cost under these potentials is smallest join the graph; repeat
   until the bracket is closed to ``tol``, no new pair has a negative reduced cost
   (then the graph's optimum is the global one), ``rounds`` are done, or time is up.

At the optimum the bracket's width is the float32 passes' certified margin, a few
``1e-6`` relative; :func:`wassnet.ot.dual.c_transform_bound` in float64 closes it
further where ``n^2`` float64 passes are affordable. Each round costs four fused
passes over the ``n^2`` pairs and one sparse assignment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wassnet.ot.costs import PairwiseCost
from wassnet.ot.dual import DualBound, c_transform_bound, tiled_c_transform_bound
from wassnet.ot.plans import (
    PrimalBound,
    _candidate_pairs,
    monotone_coupling,
    plan_bound,
    solve_assignment,
)
from wassnet.ot.tiles import TiledCost

__all__ = ["AssignmentBracket", "assignment_bracket"]


@dataclass(frozen=True)
class AssignmentBracket:
    """The result of :func:`assignment_bracket`: a plan, a feasible dual, the history.

    ``plan.value`` and ``dual.value`` bracket W1; ``rounds`` lists, per round, the
    number of candidate pairs, both bounds and the elapsed seconds.
    """

    plan: PrimalBound
    dual: DualBound
    rounds: list[dict[str, float]]


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


def _candidates(
    cost: PairwiseCost, tiles: TiledCost | None, u: torch.Tensor, v: torch.Tensor, k: int
) -> np.ndarray:
    """Keys ``i n + j`` of the ``k`` smallest reduced costs per row and per column
    (float64 passes without ``tiles``, fused float32 passes with them)."""
    n = cost.n
    if tiles is None:
        i, j = _candidate_pairs(cost, u, v, k)
        return np.unique(i.astype(np.int64) * n + j)
    by_row = tiles.row_candidates(tiles.round_potential(v), k).cpu().numpy()
    by_col = tiles.T.row_candidates(tiles.T.round_potential(-u), k).cpu().numpy()
    rows = np.repeat(np.arange(n, dtype=np.int64), by_row.shape[1])
    keys_row = rows * n + by_row.reshape(-1)
    cols = np.repeat(np.arange(n, dtype=np.int64), by_col.shape[1])
    keys_col = by_col.reshape(-1).astype(np.int64) * n + cols
    return np.union1d(keys_row, keys_col)


def assignment_bracket(
    cost: PairwiseCost,
    tiles: TiledCost | None,
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
        cost: the float64 costs of the two clouds (plan costs, pair by pair).
        tiles: the same clouds for fused float32 passes over all pairs, or None for
            float64 passes with ``cost`` (exact to ``1e-13``, slower: for small
            problems).
        u0, v0: starting potentials (e.g. a 1-Lipschitz critic's values on both clouds),
            used to choose the first candidate pairs.
        k: candidate pairs per point and round.
        rounds: at most this many assignments are solved.
        tol: stop when ``(upper - lower) <= tol * upper``.
        time_budget: seconds; no new round starts once it is spent.
        callback: called with each round's record (for progress display).

    Returns:
        :class:`AssignmentBracket`; ``plan.value`` (a permutation's cost, rounded up)
        and ``dual.value`` (a dual pair feasible on every pair) bracket W1.
    """
    n = cost.n
    if cost.m != n or (tiles is not None and (tiles.n != n or tiles.m != n)):
        raise ValueError("assignment_bracket needs two clouds of the same size")
    if not cost.problem.uniform_square:
        raise ValueError("assignment_bracket needs uniform weights")
    t0 = time.perf_counter()
    device = cost.device if tiles is None else tiles.device
    uniform = np.full(n, 1.0 / n)
    mi, mj, _ = monotone_coupling(
        u0.double().cpu().numpy(), v0.double().cpu().numpy(), uniform, uniform
    )
    pairs = np.union1d(mi.astype(np.int64) * n + mj, _candidates(cost, tiles, u0, v0, k))
    costs = cost.pair_costs(pairs // n, pairs % n)
    u_prev, v_prev = u0.double().cpu().numpy(), v0.double().cpu().numpy()
    best_plan: PrimalBound | None = None
    best_dual: DualBound | None = None
    history: list[dict[str, float]] = []
    for round_ in range(rounds):
        match = solve_assignment(pairs, costs, n, u_prev, v_prev)
        rows = np.arange(n, dtype=np.int64)
        plan = plan_bound(cost.problem, rows, match, uniform, "sparse assignment")
        if best_plan is None or plan.value < best_plan.value:
            best_plan = plan
        u, v = _matching_potentials(pairs // n, pairs % n, costs, match, n)
        u_prev, v_prev = u, v
        u_t = torch.as_tensor(u, device=device)
        if tiles is None:
            dual = c_transform_bound(cost, u_t)
        else:
            dual = tiled_c_transform_bound(tiles, u_t)
        if best_dual is None or dual.value > best_dual.value:
            best_dual = dual
        record = {
            "round": round_ + 1,
            "pairs": float(len(pairs)),
            "lower": best_dual.value,
            "upper": best_plan.value,
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if callback is not None:
            callback(record)
        gap = best_plan.value - best_dual.value
        # a plan of cost 0 is optimal whatever the dual says
        if gap <= tol * best_plan.value or best_plan.value <= 0 or round_ + 1 == rounds:
            break
        elapsed = time.perf_counter() - t0
        if time_budget is not None and elapsed * (round_ + 2) / (round_ + 1) > time_budget:
            break
        new = np.setdiff1d(
            _candidates(cost, tiles, u_t, torch.as_tensor(v, device=device), k),
            pairs,
            assume_unique=True,
        )
        new_costs = cost.pair_costs(new // n, new % n)
        reduced = new_costs - u[new // n] + v[new % n]
        noise = 1e-12 if tiles is None else 1e-9  # float32 pricing cannot see below
        if len(new) == 0 or reduced.min() >= -noise * float(costs.max()):
            break  # no pair outside the graph prices out: its optimum is the global one
        pairs, order = np.unique(np.concatenate([pairs, new]), return_index=True)
        costs = np.concatenate([costs, new_costs])[order]
    assert best_plan is not None and best_dual is not None
    return AssignmentBracket(best_plan, best_dual, history)
