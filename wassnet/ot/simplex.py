"""A warm-startable network simplex in C for transport plans on sparse graphs.

Column generation (:mod:`wassnet.ot.sparse`) solves a sequence of transport problems
on growing graphs of candidate pairs. POT's network simplex solves each from scratch;
:func:`transport_simplex` starts from the previous round's optimal spanning tree (the
new pairs enter at zero flow), so late rounds cost a few pivots instead of a full solve
(measured in ``scripts/bench_estimate.py``). The C source (``_simplex.c``) is compiled
on first use and cached (:mod:`wassnet.ot.cbuild`); without a compiler, or with
``WASSNET_NO_NATIVE=1``, callers use POT's solver instead.

The algorithm: primal network simplex with an artificial root ("big M" arcs), block
search pricing and the strongly-feasible-tree leaving rule (no cycling on degenerate
pivots). Nothing certified rests on it: the plan and the potentials it returns are
certified by :func:`wassnet.ot.plan_bound` and the c-transforms; an inexact solve
costs tightness, never correctness.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wassnet.ot.cbuild import NativeLibrary

__all__ = [
    "SimplexBasis",
    "TransportPlan",
    "forest_basis",
    "simplex_available",
    "transport_simplex",
]

_STATUS = {
    1: "the pivot budget ran out",
    2: "out of memory",
    3: "unbounded cycle",
    4: "the warm start is not a strongly feasible spanning tree",
}


def _declare(lib: ctypes.CDLL) -> None:
    i64p = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    f64p = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    lib.transport_simplex.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_longlong, i64p, i64p, f64p, f64p, f64p,
        ctypes.c_int, i64p, f64p, f64p, f64p, ctypes.c_longlong, ctypes.c_double, i64p,
    ]  # fmt: skip
    lib.transport_simplex.restype = ctypes.c_int


_NATIVE = NativeLibrary(Path(__file__).with_name("_simplex.c"), [["-O3"]], _declare)


def simplex_available() -> bool:
    """Whether the compiled network simplex loads on this machine (compiling it if needed)."""
    return _NATIVE.get() is not None


@dataclass(frozen=True)
class SimplexBasis:
    """A spanning tree to warm-start a solve: for each node (the ``n`` rows, then the
    ``m`` columns) the key ``i m + j`` of its tree arc (``-1``: its artificial arc to
    the root) and the arc's flow in units of ``2^-50`` (``None``: the flows the masses
    imply, see :func:`forest_basis`)."""

    keys: np.ndarray
    flows: np.ndarray | None


@dataclass(frozen=True)
class TransportPlan:
    """A transport plan within a sparse graph (pairs ``rows, cols`` with positive
    ``mass``), potentials with ``u_i - v_j <= c_ij`` on every graph edge (up to the
    solver's tolerance), the tree that ends the solve and the pivots it took."""

    rows: np.ndarray
    cols: np.ndarray
    mass: np.ndarray
    u: np.ndarray
    v: np.ndarray
    basis: SimplexBasis
    pivots: int
    warm: bool


#: Masses are scaled to integers summing to this (exact in float64, with room to spare):
#: every pivot's flow update is then exact, so the strongly feasible tree rule holds as
#: in exact arithmetic. The rounding to integers can leave a few units that a sparse
#: graph cannot route on artificial arcs; the potentials returned stay dual feasible
#: (``output_potentials`` in the C source) and the caller certifies the plan's residual.
MASS_UNITS = 2.0**50


def _integer_masses(w: np.ndarray) -> np.ndarray:
    """``w`` scaled to nonnegative integers (as float64) that sum to exactly
    :data:`MASS_UNITS`; the rounding error goes to the largest entry."""
    q = np.floor(np.asarray(w, dtype=np.float64) / w.sum() * MASS_UNITS)
    q[np.argmax(q)] += MASS_UNITS - q.sum()
    return q


def _warm_arcs(keys: np.ndarray, basis: SimplexBasis | None, nodes: int) -> np.ndarray | None:
    """Each node's tree arc as an index into ``keys`` (artificial: ``E + node``), or
    ``None`` when the basis does not fit this graph."""
    if basis is None or len(basis.keys) != nodes:
        return None
    real = basis.keys >= 0
    pos = np.searchsorted(keys, basis.keys[real]).clip(max=max(len(keys) - 1, 0))
    if len(keys) == 0 or np.any(keys[pos] != basis.keys[real]):
        return None
    arcs = len(keys) + np.arange(nodes, dtype=np.int64)
    arcs[real] = pos
    return arcs


def forest_basis(
    rows: np.ndarray, cols: np.ndarray, mass: np.ndarray, m: int, a: np.ndarray, b: np.ndarray
) -> SimplexBasis:
    """A starting tree from a plan whose support is a forest (a basic plan, e.g. POT's;
    pairs with less mass than the integer rounding can move, ``(n + m) 2^-50``, are
    left out as degenerate): each component hangs from the root by the artificial arc
    of a node chosen so that the tree is strongly feasible (a row when the component's
    integer masses balance or exceed, a column of positive mass when they fall short).
    The solver computes the flows from the masses and refuses (``RuntimeError``) a
    support that is not a forest or implies a negative flow."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n = len(a)
    nodes = n + m
    keep = np.asarray(mass) * MASS_UNITS > nodes
    rows, cols = rows[keep], cols[keep]
    edges = coo_matrix((np.ones(len(rows)), (rows, n + cols)), shape=(nodes + 1, nodes + 1))
    count, label = connected_components(edges, directed=False)
    label = label[:nodes]
    mass = np.concatenate([_integer_masses(a), -_integer_masses(b)])
    net = np.bincount(label, mass, count)
    is_row = np.arange(nodes) < n
    # rows and empty columns hang by arcs towards the root, other columns away from it
    towards_root = is_row | (mass == 0)
    fits = np.where(net[label] >= 0, towards_root, ~towards_root)
    candidates = np.flatnonzero(fits)
    labels, first = np.unique(label[candidates], return_index=True)
    top = candidates[first]
    root = np.full(len(top), nodes)
    graph = coo_matrix(
        (np.ones(len(rows) + len(top)), (np.r_[rows, top], np.r_[n + cols, root])),
        shape=(nodes + 1, nodes + 1),
    ).tocsr()
    _, parent = breadth_first_order(graph, nodes, directed=False, return_predecessors=True)
    parent = parent[:nodes]
    if len(labels) < count - 1 or np.any(parent < 0):
        raise RuntimeError("the plan's components cannot all hang from the root")
    lo, hi = np.minimum(np.arange(nodes), parent), np.maximum(np.arange(nodes), parent)
    keys = np.where(parent == nodes, -1, lo * m + (hi - n))
    return SimplexBasis(keys.astype(np.int64), None)


def transport_simplex(
    keys: np.ndarray,
    costs: np.ndarray,
    m: int,
    a: np.ndarray,
    b: np.ndarray,
    basis: SimplexBasis | None = None,
    *,
    tol: float = 1e-14,
    max_pivots: int | None = None,
) -> TransportPlan:
    """Min-cost transport from ``a`` (rows) to ``b`` (columns) within the graph of
    sorted unique keys ``i m + j``.

    Args:
        keys, costs: the edges and their costs; the graph must hold a feasible plan
            (otherwise mass stays on artificial arcs and the plan returned misses it).
        m: columns.
        a, b: nonnegative masses, each normalized to sum 1 here (solved in integer
            units of ``2^-50``; the plan's masses are returned in those units over
            ``2^50``: the caller polishes them to the exact marginals).
        basis: a previous solve's :attr:`TransportPlan.basis` on a subgraph of this
            graph (same ``a`` and ``b``), or :func:`forest_basis` of a plan on it: the
            warm start (refused with ``RuntimeError`` if it does not fit).
        tol: pricing tolerance, relative to the largest cost.
        max_pivots: budget (default ``50 * (edges + nodes)``).

    Raises:
        RuntimeError: the compiled solver is unavailable, or failed (says why).
    """
    lib = _NATIVE.get()
    if lib is None:
        raise RuntimeError(f"the C network simplex is not available ({_NATIVE.failed})")
    n, edges = len(a), len(keys)
    nodes = n + m
    costs = np.ascontiguousarray(costs, dtype=np.float64)
    if not math.isfinite(2.0 * float(np.abs(costs).max(initial=0.0)) * (nodes + 1)):
        raise RuntimeError("costs too large for the artificial arcs' cost (or not finite)")
    arcs = _warm_arcs(keys, basis, nodes)
    if basis is not None and arcs is None:
        raise RuntimeError("the warm start's tree arcs are not all in the graph")
    pred = np.zeros(nodes, np.int64) if arcs is None else arcs
    given = arcs is not None and basis.flows is not None
    flow_pred = np.array(basis.flows, dtype=np.float64) if given else np.zeros(nodes)
    flow, pi, stats = np.zeros(edges), np.zeros(nodes + 1), np.zeros(2, np.int64)
    status = lib.transport_simplex(
        n, m, edges, np.ascontiguousarray(keys // m), np.ascontiguousarray(keys % m),
        costs, _integer_masses(a),
        _integer_masses(b), 0 if arcs is None else (1 if given else 2), pred, flow_pred, flow,
        pi, max_pivots if max_pivots is not None else 50 * (edges + nodes), tol, stats,
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"the C network simplex failed: {_STATUS.get(status, status)}")
    tree_keys = np.full(nodes, -1, np.int64)
    tree_keys[pred < edges] = keys[pred[pred < edges]]
    used = np.flatnonzero(flow > 0)
    # reduced costs c_ij + pi_i - pi_j >= 0: u = -pi on rows, v = -pi on columns
    return TransportPlan(
        keys[used] // m, keys[used] % m, flow[used] / MASS_UNITS, -pi[:n], -pi[n:nodes],
        SimplexBasis(tree_keys, flow_pred), int(stats[0]), bool(stats[1]),
    )  # fmt: skip
