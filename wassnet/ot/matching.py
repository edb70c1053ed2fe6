r"""Dual potentials of an optimal assignment within a sparse graph.

Used by the SciPy fallback of :func:`wassnet.ot.native.assign`, which gets a matching
without potentials. It lived in :mod:`wassnet.ot.sparse`, whose column generation
calls :func:`~wassnet.ot.native.assign`, so the two imported each other; here it
depends on neither (pure NumPy). Nothing certified rests on it: the c-transforms that
follow make any potentials feasible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["matching_potentials"]


def matching_potentials(
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
