"""The sparse assignment solver in C, compiled on first use, with a pure-SciPy fallback.

:func:`assign` matches the rows of a sparse bipartite graph to its columns at minimum
cost, warm-started from a previous matching and column potentials: an auction with
eps-scaling (bulk work, vectorizes the global price moves) followed by shortest
augmenting paths (exact finish). The C source (``_assign.c``) is compiled with the
system C compiler the first time it is needed and cached (``$WASSNET_CACHE``, else
``$XDG_CACHE_HOME/wassnet``, else ``~/.cache/wassnet``); a machine without a compiler
uses SciPy's sparse Jonker-Volgenant instead (the same optimum, slower from about
``10^5`` points: its augmentations cost ``O(n)`` each), after one warning.
``WASSNET_NO_NATIVE=1`` forces the fallback.

Nothing certified rests on this module: the plan and potentials it returns are
certified by :func:`wassnet.ot.plan_bound` and the c-transforms.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Assignment", "assign", "native_available", "solver_name"]

_SOURCE = Path(__file__).with_name("_assign.c")
_LIB: ctypes.CDLL | None = None
_FAILED: str | None = None


def _cache_dir() -> Path:
    if os.environ.get("WASSNET_CACHE"):
        return Path(os.environ["WASSNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wassnet"


def _compile() -> ctypes.CDLL:
    """Compile ``_assign.c`` (once per source version) and load it."""
    source = _SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "wassnet-cache"
        folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"assign-{digest}.so"
    if not target.exists():
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise OSError("no C compiler (cc, gcc) on PATH")
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        try:
            subprocess.run(
                [compiler, "-O3", "-shared", "-fPIC", "-o", tmp, str(_SOURCE), "-lm"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            os.replace(tmp, target)  # atomic: concurrent processes never load half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
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
    return lib


#: Warm-started assignments of more points than this start with an auction.
AUCTION_WARM_MIN_POINTS = 10_000


def _library() -> ctypes.CDLL | None:
    global _LIB, _FAILED
    if _LIB is not None or _FAILED is not None:
        return _LIB
    if os.environ.get("WASSNET_NO_NATIVE"):
        _FAILED = "WASSNET_NO_NATIVE is set"
        return None
    try:
        _LIB = _compile()
    except (OSError, subprocess.SubprocessError) as exc:
        _FAILED = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"wassnet: the C assignment solver is not available ({_FAILED}); using SciPy's "
            "sparse Jonker-Volgenant (correct, slower on large problems)",
            RuntimeWarning,
            stacklevel=3,
        )
    return _LIB


def solver_name(assignment: bool) -> str:
    """The sparse solver used on this machine, for reports: :func:`assign` for
    assignments, POT's network simplex on the sparse graph for transport plans."""
    if not assignment:
        return "network simplex on the sparse graph (POT)"
    if _library() is None:
        return "sparse Jonker-Volgenant (SciPy)"
    return "auction + augmenting paths (C)"


def native_available() -> bool:
    """Whether the compiled solver loads on this machine (compiling it if needed)."""
    return _library() is not None


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
    lib = _library()
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
    # (the fine-eps auction runs into price wars); at 1e5 points the auction is.
    if match0 is None or n > AUCTION_WARM_MIN_POINTS:
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
    from wassnet.ot.sparse import _matching_potentials

    rows, cols = keys // n, keys % n
    u0 = np.full(n, np.inf)
    np.minimum.at(u0, rows, costs + v0[cols])  # reduced costs c - u + v >= 0 on the graph
    match = solve_assignment(keys, costs, n, u0, v0)
    u, v = _matching_potentials(rows, cols, costs, match, n)
    if not math.isfinite(float(np.max(np.abs(u), initial=0.0))):
        raise RuntimeError("matching potentials are not finite")
    return Assignment(match, u, v, "sparse Jonker-Volgenant (SciPy)")
