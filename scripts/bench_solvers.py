"""Each hand-written solver against the best library alternative, same inputs, 1 thread.

- Sparse assignment (``wassnet.ot.native.assign``, auction + augmenting paths in C)
  vs SciPy's ``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp).
- Transport on a sparse graph (``wassnet.ot.simplex.transport_simplex``, network simplex
  in C, warm-startable) vs OR-Tools' ``SimpleMinCostFlow`` (cost scaling) and POT's
  network simplex (the solver of ``ot.emd``, called on the sparse graph through its
  ``emd_c_sparse`` entry, as ``wassnet.ot.sparse`` does for its cold rounds).

Inputs are what column generation solves (``wassnet.ot.sparse``): points in d = 16, the
graph of each row's k nearest columns plus a feasible backbone (a random permutation for
assignments, the north-west-corner plan for transport). "cold": from scratch; "warm":
the graph grown from k to 2k neighbours, ours restarted from the k-graph's solution
(matching and potentials, or simplex tree), the libraries from scratch (they cannot be
warm-started). Transport data are integers (masses 1..1000, costs in units of 1e-6) so
that OR-Tools' integer solver gets the same problem; every solver's optimal cost is
checked to agree to 1e-9 relative. Times: wall seconds from numpy arrays to the
solution (each library's model building included), best of ``--repeats``.

Usage: ``python scripts/bench_solvers.py [--repeats 3] [--no-write]``
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their pools

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from benchtools import markdown_table, write_section
from ortools.graph.python import min_cost_flow
from ot.lp.emd_wrap import emd_c_sparse
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from wassnet.ot import native, simplex

RTOL = 1e-9
COST_UNIT = 1e-6  # transport costs are integers in these units (OR-Tools needs integers)


@dataclass(frozen=True)
class Graph:
    """Sorted unique keys ``i m + j`` of a sparse bipartite graph and their costs."""

    keys: np.ndarray
    costs: np.ndarray
    n: int
    m: int


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The best wall time of up to ``repeats`` calls (one call past 2 s), and the last
    result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        if best > 2.0:
            break
    return best, out


def points(n: int, m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((m, d)) * np.linspace(0.5, 2.0, d) + 0.5
    return a, b


def knn_graph(x: np.ndarray, y: np.ndarray, k: int, backbone: np.ndarray, integer: bool) -> Graph:
    """Each row's ``k`` nearest columns plus the ``backbone`` keys, with their costs."""
    n, m = len(x), len(y)
    _, cols = cKDTree(y).query(x, k)
    keys = np.repeat(np.arange(n, dtype=np.int64), k) * m + cols.reshape(-1)
    keys = np.union1d(keys, backbone)
    costs = np.linalg.norm(x[keys // m] - y[keys % m], axis=1)
    if integer:
        costs = np.round(costs / COST_UNIT)
    return Graph(keys, costs, n, m)


def northwest_corner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Keys of the north-west-corner plan of integer masses: a feasible backbone."""
    ca, cb = np.cumsum(a), np.cumsum(b)
    cuts = np.union1d(ca, cb)[:-1]
    rows, cols = np.searchsorted(ca, cuts, "right"), np.searchsorted(cb, cuts, "right")
    rows = np.concatenate([[0], rows])
    cols = np.concatenate([[0], cols])
    return np.unique(rows.astype(np.int64) * len(b) + cols)


# -- the assignment solvers ---------------------------------------------------------------


def priced(small: Graph, big: Graph, u: np.ndarray, v: np.ndarray) -> Graph:
    """``small`` plus the edges of ``big`` that violate ``u_i - v_j <= c_ij``: the graph
    of the next column-generation round (``small`` is a subgraph of ``big``)."""
    rows, cols = big.keys // big.m, big.keys % big.m
    scale = float(np.abs(big.costs).max())
    violated = big.costs - u[rows] + v[cols] < -1e-12 * scale
    keys = np.union1d(small.keys, big.keys[violated])
    pos = np.searchsorted(big.keys, keys)
    assert np.array_equal(big.keys[pos], keys), "small is not a subgraph of big"
    return Graph(keys, big.costs[pos], big.n, big.m)


def cases(small: Graph, big: Graph, solve: Callable) -> list[tuple[str, Graph, object]]:
    """The problems to time: ``small`` from scratch ("cold"), then column generation
    towards ``big`` with ``solve(graph, previous)`` (ours, warm-started): its first round
    (many new edges) and its last round that adds any (few), each with the previous
    round's solution to start from."""
    previous, graph, rounds = solve(small, None), small, []
    while True:
        grown = priced(graph, big, previous.u, previous.v)
        if len(grown.keys) == len(graph.keys):
            break
        rounds.append((len(rounds) + 2, grown, previous, len(grown.keys) - len(graph.keys)))
        graph, previous = grown, solve(grown, previous)
    out: list[tuple[str, Graph, object]] = [("cold", small, None)]
    for r, g, start, new in rounds[:1] + rounds[1:][-1:]:
        out.append((f"warm, round {r} (+{new} edges)", g, start))
    return out


def ours_assign(g: Graph, start: native.Assignment | None = None) -> native.Assignment:
    if start is None:
        return native.assign(g.keys, g.costs, g.n, np.zeros(g.n))
    return native.assign(g.keys, g.costs, g.n, start.v, start.match)


def scipy_assign(g: Graph) -> float:
    graph = csr_matrix((g.costs, (g.keys // g.n, g.keys % g.n)), shape=(g.n, g.n))
    rows, cols = min_weight_full_bipartite_matching(graph)
    return float(np.asarray(graph[rows, cols]).sum())


def matching_cost(g: Graph, match: np.ndarray) -> float:
    pos = np.searchsorted(g.keys, np.arange(g.n) * g.n + match)
    assert np.array_equal(g.keys[pos], np.arange(g.n) * g.n + match), "not along graph edges"
    return float(g.costs[pos].sum())


def assignment_rows(n: int, k: int, repeats: int) -> list[list[object]]:
    x, y = points(n, n, 16, seed=n)
    backbone = np.arange(n, dtype=np.int64) * n + np.random.default_rng(1).permutation(n)
    small, big = (knn_graph(x, y, kk, backbone, integer=False) for kk in (k, 4 * k))
    rows = []
    for label, g, start in cases(small, big, ours_assign):
        t_ours, sol = best_time(lambda g=g, start=start: ours_assign(g, start), repeats)
        t_scipy, scipy_cost = best_time(lambda g=g: scipy_assign(g), repeats)
        ours_cost = matching_cost(g, sol.match)
        assert abs(ours_cost - scipy_cost) <= RTOL * abs(scipy_cost), (ours_cost, scipy_cost)
        rows.append(
            ["assignment", label, n, len(g.keys), t_ours, "SciPy LAPJVsp", t_scipy,
             t_ours / t_scipy, f"{ours_cost / n:.12g}"]
        )  # fmt: skip
    return rows


# -- the transport solvers ----------------------------------------------------------------


def ours_transport(g: Graph, a, b, basis=None) -> simplex.TransportPlan:
    return simplex.transport_simplex(g.keys, g.costs, g.m, a, b, basis)


def plan_cost(g: Graph, plan: simplex.TransportPlan, total: float) -> float:
    """The plan's cost in the libraries' units (its masses are normalized to sum 1)."""
    cost = g.costs[np.searchsorted(g.keys, plan.rows * g.m + plan.cols)]
    return float((plan.mass * cost).sum()) * total


def ortools_transport(g: Graph, a: np.ndarray, b: np.ndarray) -> float:
    flow = min_cost_flow.SimpleMinCostFlow()
    cap = np.full(len(g.keys), int(a.sum()), np.int64)
    flow.add_arcs_with_capacity_and_unit_cost(
        g.keys // g.m, g.n + g.keys % g.m, cap, g.costs.astype(np.int64)
    )
    flow.set_nodes_supplies(np.arange(g.n + g.m), np.concatenate([a, -b]).astype(np.int64))
    status = flow.solve()
    assert status == flow.OPTIMAL, status
    return float(flow.optimal_cost())


def pot_transport(g: Graph, a: np.ndarray, b: np.ndarray) -> float:
    _, _, _, cost, *_ = emd_c_sparse(
        a.astype(np.float64), b.astype(np.float64), (g.keys // g.m).astype(np.uint64),
        (g.keys % g.m).astype(np.uint64), np.ascontiguousarray(g.costs), 10**9,
    )  # fmt: skip
    return float(cost)


def integer_masses(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Masses 1..1000 with equal totals."""
    rng = np.random.default_rng(seed)
    while True:
        a, b = rng.integers(1, 1001, n), rng.integers(1, 1001, m)
        b[-1] += a.sum() - b.sum()
        if b[-1] >= 1:
            return a, b


LIBRARIES = (("OR-Tools min-cost flow", ortools_transport), ("POT emd", pot_transport))


def transport_rows(n: int, k: int, repeats: int) -> list[list[object]]:
    m = int(0.8 * n)
    x, y = points(n, m, 16, seed=n)
    a, b = integer_masses(n, m, seed=2)
    backbone = northwest_corner(a, b)
    small, big = (knn_graph(x, y, kk, backbone, integer=True) for kk in (k, 4 * k))

    def ours(g: Graph, start: simplex.TransportPlan | None) -> simplex.TransportPlan:
        return ours_transport(g, a, b, None if start is None else start.basis)

    rows = []
    for label, g, start in cases(small, big, ours):
        t_ours, plan = best_time(lambda g=g, start=start: ours(g, start), repeats)
        ours_cost = plan_cost(g, plan, float(a.sum()))
        for name, solver in LIBRARIES:
            t_lib, lib_cost = best_time(lambda g=g, solver=solver: solver(g, a, b), repeats)
            assert abs(ours_cost - lib_cost) <= RTOL * abs(lib_cost), (name, ours_cost, lib_cost)
            rows.append(
                ["transport", label, f"{n} x {m}", len(g.keys), t_ours, name, t_lib,
                 t_ours / t_lib, f"{ours_cost / a.sum() * COST_UNIT:.12g}"]
            )  # fmt: skip
    return rows


HEADER = ["solver", "start", "n", "edges", "ours s", "library", "library s", "ours / library",
          "optimal cost / mass (all agree)"]  # fmt: skip


def phase(start: str) -> str:
    """The column-generation phase of a row's start label."""
    if start == "cold":
        return "cold"
    return "first warm round" if "round 2 " in start else "last warm round"


def verdict(rows: list[list[object]]) -> str:
    """Per solver, phase and library: the range of ours / library over the sizes, and
    who wins."""
    ratios: dict[tuple[str, str, str], list[float]] = {}
    for solver, start, _, _, _, library, _, ratio, _ in rows:
        ratios.setdefault((solver, phase(start), library), []).append(ratio)
    lines = []
    for (solver, when, library), rs in ratios.items():
        lo, hi = min(rs), max(rs)
        who = "ours wins" if hi < 1 else ("the library wins" if lo > 1 else "mixed")
        lines.append(f"- {solver}, {when}, vs {library}: ours / library {lo:.3g}-{hi:.3g}: {who}")
    return "\n".join(lines)


NOTE = """Times are wall seconds, best of the repeats (one call past 2 s), one thread, from numpy
arrays to the solution (SciPy's CSR matrix, OR-Tools' model and POT's arc lists built
inside the timed call, as ours marshals its arrays). "cold": from scratch on each row's
{k} nearest columns; "warm, round r": a column-generation round towards the {k4} nearest
(the edges whose reduced cost is negative under the previous round's potentials are
added), ours restarted from the previous round's solution, the libraries from scratch
(they take no warm start). Every row's optimal costs agree to 1e-9 relative (checked by
the script)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--assign-sizes", type=int, nargs="+", default=[2000, 10000, 20000])
    parser.add_argument("--transport-sizes", type=int, nargs="+", default=[2000, 10000, 20000])
    parser.add_argument("--k", type=int, default=8, help="nearest columns per row (cold)")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not (native.native_available() and simplex.simplex_available()):
        raise SystemExit("the compiled solvers are not available (wassnet info says why)")
    rows: list[list[object]] = []
    jobs = [(assignment_rows, n) for n in args.assign_sizes]
    jobs += [(transport_rows, n) for n in args.transport_sizes]
    for rows_of, n in jobs:
        new = rows_of(n, args.k, args.repeats)
        print(markdown_table(HEADER, new).split("\n", 2)[2], flush=True)
        rows += new
    note = NOTE.format(k=args.k, k4=4 * args.k)
    body = f"{markdown_table(HEADER, rows)}\n\n{note}\n\n{verdict(rows)}"
    print(body)
    if not args.no_write:
        write_section("solvers", "Hand-written solvers vs library solvers (1 thread)", body)


if __name__ == "__main__":
    main()
