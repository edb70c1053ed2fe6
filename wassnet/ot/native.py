"""The sparse assignment solver in C, compiled on first use, with a pure-SciPy fallback.

:func:`assign` matches the rows of a sparse bipartite graph to its columns at minimum
cost, warm-started from a previous matching and column potentials: an auction with
eps-scaling (bulk work, vectorizes the global price moves) followed by shortest
augmenting paths (exact finish). The C source (``_assign.c``) is compiled with the
system C compiler the first time it is needed and cached (:mod:`wassnet.ot.cbuild`);
a machine without a compiler uses SciPy's sparse Jonker-Volgenant instead (the same
optimum, slower from about ``10^5`` points: its augmentations cost ``O(n)`` each), after
one warning. ``WASSNET_NO_NATIVE=1`` forces the fallback.

Nothing certified rests on this module: the plan and potentials it returns are
certified by :func:`wassnet.ot.plan_bound` and the c-transforms.
"""

from __future__ import annotations

import ctypes
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wassnet.ot.cbuild import NativeLibrary
from wassnet.ot.matching import matching_potentials

__all__ = ["Assignment", "assign", "native_available", "solver_name"]


def _declare(lib: ctypes.CDLL) -> None:
    i64p = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    f64p = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    lib.sparse_auction.argtypes = [
        ctypes.c_int, i64p, i64p, f64p, f64p, i64p, i64p,
        ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_longlong, i64p,
    ]  # fmt: skip
    lib.sparse_assign.argtypes = [
        ctypes.c_int, i64p, i64p, f64p, f64p, i64p, i64p, ctypes.c_double, i64p,
    ]  # fmt: skip
    lib.sparse_auction.restype = lib.sparse_assign.restype = ctypes.c_int


def _warn(why: str) -> None:
    warnings.warn(
        f"wassnet: the C assignment solver is not available ({why}); using SciPy's "
        "sparse Jonker-Volgenant (correct, slower on large problems)",
        RuntimeWarning,
        stacklevel=4,
    )


_NATIVE = NativeLibrary(Path(__file__).with_name("_assign.c"), [["-O3"]], _declare, _warn)


#: Warm-started assignments of more points than this may start with an auction ...
AUCTION_WARM_MIN_POINTS = 10_000
#: ... when more than this fraction of the rows must be freed (their matched edge is no
#: longer their cheapest under the starting potentials); fewer are re-matched by
#: augmenting paths alone, which change the potentials only where the paths explore.
AUCTION_WARM_MIN_FREED = 0.01


def solver_name(assignment: bool) -> str:
    """The sparse solver used on this machine, for reports: :func:`assign` for
    assignments, network simplex on the sparse graph for transport plans (POT's from
    scratch, ours in C for rounds warm-started near the optimum)."""
    if not assignment:
        from wassnet.ot.simplex import simplex_available

        if simplex_available():
            return "network simplex on the sparse graph (POT; warm-started rounds in C)"
        return "network simplex on the sparse graph (POT)"
    if _NATIVE.get() is None:
        return "sparse Jonker-Volgenant (SciPy)"
    return "auction + augmenting paths (C)"


def native_available() -> bool:
    """Whether the compiled solver loads on this machine (compiling it if needed)."""
    return _NATIVE.get() is not None


@dataclass(frozen=True)
class Assignment:
    """An optimal matching within a sparse graph and its column potentials.

    ``match[i]`` is the column of row ``i``; ``v`` are column potentials and
    ``u[i] = c[i, match[i]] + v[match[i]]`` row potentials with ``u_i - v_j <= c_ij``
    on every graph edge (up to the solver's tolerance; the caller certifies any use).
    """

    match: np.ndarray
    u: np.ndarray
    v: np.ndarray
    method: str


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = keys // n
    return np.searchsorted(rows, np.arange(n + 1)).astype(np.int64), (keys % n).astype(np.int64)


def _rows_to_free(
    indptr: np.ndarray, cols: np.ndarray, costs: np.ndarray, v: np.ndarray, match: np.ndarray
) -> int:
    """How many rows are free or matched along an edge that is not (within a relative
    ``1e-12``) their cheapest ``c_ij + v_j``: the rows a warm start must re-match."""
    value = costs + v[cols]
    has_edges = indptr[1:] > indptr[:-1]
    cheapest = np.full(len(match), np.inf)
    cheapest[has_edges] = np.minimum.reduceat(value, indptr[:-1][has_edges])
    rows = np.repeat(np.arange(len(match)), np.diff(indptr))
    on_match = cols == match[rows]
    matched = np.full(len(match), np.inf)
    matched[rows[on_match]] = value[on_match]
    tol = 1e-12 * (float(np.abs(costs).max(initial=0.0)) or 1.0)
    return int((matched > cheapest + tol).sum())


def _row_potentials(keys: np.ndarray, costs: np.ndarray, n: int, match: np.ndarray, v: np.ndarray):
    pos = np.searchsorted(keys, np.arange(n, dtype=np.int64) * n + match)
    return costs[pos] + v[match]


def assign(
    keys: np.ndarray,
    costs: np.ndarray,
    n: int,
    v0: np.ndarray,
    match0: np.ndarray | None = None,
) -> Assignment:
    """Min-cost perfect matching within the graph of sorted unique keys ``i n + j``.

    Args:
        keys, costs: the edges (sorted ``i * n + j``) and their costs; the graph must
            have a perfect matching.
        n: rows and columns.
        v0: starting column potentials (e.g. the previous round's), any finite values.
        match0: a starting matching (``-1`` for free rows), e.g. the previous round's.
    """
    lib = _NATIVE.get()
    if lib is None:
        return _scipy_assign(keys, costs, n, v0)
    indptr, cols = _csr(keys, n)
    c = np.ascontiguousarray(costs, dtype=np.float64)
    v = np.array(v0, dtype=np.float64)
    rm = np.full(n, -1, np.int64) if match0 is None else np.array(match0, dtype=np.int64)
    cm = np.full(n, -1, np.int64)
    cm[rm[rm >= 0]] = np.flatnonzero(rm >= 0)
    stats = np.zeros(3, np.int64)
    scale = float(np.abs(c).max(initial=0.0)) or 1.0
    # the auction moves the prices globally (coarse eps from a cold start, fine from a
    # warm one) and the augmenting paths finish exactly from its eps-optimal matching.
    # Measured: for warm rounds up to ~1e4 points the augmenting paths alone are faster
    # (the fine-eps auction runs into price wars); at 1e5 points with 15% of the rows
    # freed the auction is (3 s vs 30 s); with few rows freed the augmenting paths are,
    # and since they leave most potentials as they were, the next pass over all pairs
    # finds fewer new violations (4 rounds instead of 8 at 4e4 points, d = 64).
    if match0 is None or (
        n > AUCTION_WARM_MIN_POINTS
        and _rows_to_free(indptr, cols, c, v, rm) > AUCTION_WARM_MIN_FREED * n
    ):
        eps0 = (1e-2 if match0 is None else 1e-5) * scale
        status = lib.sparse_auction(
            n, indptr, cols, c, v, rm, cm, eps0, 1e-9 * scale, 5.0, 400 * n + 10**6, stats
        )
        if status not in (0, 3):  # 3: the bid budget ran out; the augmenting paths finish
            raise RuntimeError(f"the sparse auction failed (status {status})")
    status = lib.sparse_assign(n, indptr, cols, c, v, rm, cm, 1e-12 * scale, stats)
    if status != 0:
        raise RuntimeError(f"the sparse assignment failed (status {status}): no perfect matching")
    return Assignment(rm, _row_potentials(keys, c, n, rm, v), v, "auction + augmenting paths (C)")


def _scipy_assign(keys: np.ndarray, costs: np.ndarray, n: int, v0: np.ndarray) -> Assignment:
    """SciPy's sparse Jonker-Volgenant on quantized reduced costs, then potentials by
    shortest paths in the matching's residual graph."""
    from wassnet.ot.plans import solve_assignment

    rows, cols = keys // n, keys % n
    u0 = np.full(n, np.inf)
    np.minimum.at(u0, rows, costs + v0[cols])  # reduced costs c - u + v >= 0 on the graph
    match = solve_assignment(keys, costs, n, u0, v0)
    u, v = matching_potentials(rows, cols, costs, match, n)
    if not math.isfinite(float(np.max(np.abs(u), initial=0.0))):
        raise RuntimeError("matching potentials are not finite")
    return Assignment(match, u, v, "sparse Jonker-Volgenant (SciPy)")
