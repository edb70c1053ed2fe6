r"""Explicit transport plans and their certified costs: upper bounds on W1.

**The certificate** (:func:`plan_bound`). For *any* nonnegative matrix :math:`P` with
row sums :math:`r` and column sums :math:`s` (equal totals), and any point :math:`z`,

.. math::
    W_1(a, b) \le \langle P, C \rangle + \sum_i |a_i - r_i|\, |x_i - z|
              + \sum_j |b_j - s_j|\, |y_j - z| .

Proof: :math:`W_1(a, b) = \|a - b\|_{KR}` (the Kantorovich–Rubinstein norm of the
signed measure), and :math:`a - b = (a - r - (1 - M)\delta_z) + (r - s)
+ (s + (1 - M)\delta_z - b)` with :math:`M = \sum P`. The middle term costs at most
:math:`\langle P, C\rangle` (``P`` couples ``r`` and ``s``); the first equals
:math:`\sum_i (a_i - r_i)(\delta_{x_i} - \delta_z)`, whose norm is at most
:math:`\sum_i |a_i - r_i| |x_i - z|` by the triangle inequality; likewise the last.

So a plan from any solver (rounded masses, a dropped point of weight ``1e-17``, a
marginal off by the solver's tolerance) gives a certified bound: its marginal
residuals are **charged**, at the distance to a hub ``z`` (the better of the centre
of mass and the residuals' own centre). Every term is evaluated with outward
rounding against the exact marginals :math:`a_i = w_i / \sum w`
(:class:`~wassnet.ot.problem.Marginal`) and certified cost bounds
(:func:`~wassnet.ot.costs.direct_cost_bounds`).

Plans come from: the monotone coupling along two scores (any size), exact OT inside
blocks of it, sparse assignments and sparse transport plans on candidate pairs
(:mod:`~wassnet.ot.sparse`) and POT's network simplex (:mod:`~wassnet.ot.exact`).
Basic plans (spanning forests) get their masses re-solved on their support
(:func:`polish_forest_masses`) so that the charge is at rounding level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wassnet.deadline import Deadline
from wassnet.errors import InputError
from wassnet.ot.costs import direct_cost_bounds, pair_cost_bounds
from wassnet.ot.dual import DualBound
from wassnet.ot.problem import TransportProblem
from wassnet.rounding import down, nonneg_sum_factor, product_up, sum_up, up

__all__ = [
    "PrimalBound",
    "monotone_coupling",
    "plan_bound",
    "polish_forest_masses",
]


@dataclass(frozen=True)
class PrimalBound:
    """A transport plan as sparse triplets and its certified cost (input units).

    ``value`` is an upper bound on W1: the plan's cost plus its charged marginal
    residual (``residual_charge``, see :func:`plan_bound`). ``dual`` is the best
    certified dual found on the way (column generation), if any.
    """

    value: float
    rows: np.ndarray
    cols: np.ndarray
    mass: np.ndarray
    method: str
    residual_charge: float = 0.0
    dual: DualBound | None = None


# ----------------------------------------------------------------------------- the certificate


def _marginal_residual(index: np.ndarray, mass: np.ndarray, size: int, marginal) -> np.ndarray:
    """Upper bounds on ``|a_i - r_i|`` with ``r`` the plan's sums along ``index``."""
    sums = np.bincount(index, weights=mass, minlength=size)
    counts = np.bincount(index, minlength=size)
    f = nonneg_sum_factor(int(counts.max(initial=1)))
    r_lo, r_hi = np.maximum(down(sums / f), 0.0), up(sums * f)
    a_lo, a_hi = marginal.bounds()
    return np.maximum(np.maximum(up(a_hi - r_lo), up(r_hi - a_lo)), 0.0)


def _hub_charge(points: np.ndarray, residual: np.ndarray, hub: np.ndarray, metric: str) -> float:
    """An upper bound on ``sum_i residual_i |points_i - hub|`` (the metric's norm)."""
    keep = residual > 0
    if not keep.any():
        return 0.0
    _, dist = direct_cost_bounds(points[keep], hub[None, :], metric=metric)
    return sum_up(np.where(dist == 0, 0.0, product_up(residual[keep], dist)))


def _residual_charge(problem: TransportProblem, ea: np.ndarray, eb: np.ndarray) -> float:
    """The smallest certified hub charge over a few hubs (any hub is valid)."""
    if not (ea.any() or eb.any()):
        return 0.0
    hubs = [np.concatenate([problem.x, problem.y]).mean(0)]
    weight = float(ea.sum() + eb.sum())
    if weight > 0:
        hubs.append((ea @ problem.x + eb @ problem.y) / weight)
    charges = [
        float(
            up(
                _hub_charge(problem.x, ea, z, problem.metric)
                + _hub_charge(problem.y, eb, z, problem.metric)
            )
        )
        for z in hubs
        if np.all(np.isfinite(z))
    ]
    return min(charges)


def plan_bound(
    problem: TransportProblem,
    rows: np.ndarray,
    cols: np.ndarray,
    mass: np.ndarray,
    method: str,
) -> PrimalBound:
    """The certified cost of the plan ``sum_k mass_k delta_(rows_k, cols_k)`` (see the
    module notes): an upper bound on W1 for **any** nonnegative masses.

    Negative or zero masses are dropped (any nonnegative plan is allowed). A
    permutation with equal masses between uniform clouds of equal size is read as the
    exact assignment (``1/n`` per pair): its cost is ``sum c / n`` and nothing is charged.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    mass = np.asarray(mass, dtype=np.float64)
    if not np.all(np.isfinite(mass)):
        raise InputError("plan masses must be finite")
    keep = mass > 0
    rows, cols, mass = rows[keep], cols[keep], mass[keep]
    with np.errstate(over="ignore"):
        total = mass.sum()
    if not np.isfinite(total):
        raise InputError("plan masses overflow float64 when summed (a plan's total is 1)")
    _, c_hi = pair_cost_bounds(problem, rows, cols)
    if _is_uniform_permutation(problem, rows, cols, mass):
        # read as exactly 1/n per pair: an exact assignment, nothing to charge
        charge = 0.0
        total = float(up(sum_up(c_hi) / problem.n)) if c_hi.any() else 0.0
    else:
        transport = sum_up(product_up(mass, c_hi))
        ea = _marginal_residual(rows, mass, problem.n, problem.a)
        eb = _marginal_residual(cols, mass, problem.m, problem.b)
        charge = _residual_charge(problem, ea, eb)
        total = float(up(transport + charge)) if charge else transport
    value = problem.to_input_units(total, total)[1]
    charge_units = problem.to_input_units(charge, charge)[1]
    return PrimalBound(value, rows, cols, mass, method, charge_units)


def _is_uniform_permutation(
    problem: TransportProblem, rows: np.ndarray, cols: np.ndarray, mass: np.ndarray
) -> bool:
    """A permutation with equal masses between uniform clouds of equal size: the plan
    that moves exactly ``1/n`` along each pair (its float masses are only labels)."""
    n = problem.n
    return (
        problem.uniform_square
        and len(rows) == n
        and bool(np.all(mass == mass[0]))
        and np.array_equal(np.sort(rows), np.arange(n))
        and np.array_equal(np.sort(cols), np.arange(n))
    )


# ----------------------------------------------------------------------------- plans


def polish_forest_masses(
    rows: np.ndarray, cols: np.ndarray, mass: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Re-solve the masses of a basic plan on its support so its marginals are ``a, b``.

    A basic plan's support is a forest; peeling leaves determines every mass from the
    marginals (float64). Edges left on cycles keep their masses; a negative solution
    (an inconsistent support) falls back to the given masses. Nothing certified rests
    on this: it only makes the residual charged by :func:`plan_bound` small.
    """
    n, m = len(a), len(b)
    e = len(rows)
    node_u = rows.astype(np.int64)
    node_v = cols.astype(np.int64) + n
    remaining = np.concatenate([a, b]).astype(np.float64)
    degree = np.bincount(np.concatenate([node_u, node_v]), minlength=n + m)
    incident: list[list[int]] = [[] for _ in range(n + m)]
    for k, (p, q) in enumerate(zip(node_u.tolist(), node_v.tolist(), strict=True)):
        incident[p].append(k)
        incident[q].append(k)
    solved = np.full(e, np.nan)
    alive = np.ones(e, dtype=bool)
    stack = [int(i) for i in np.flatnonzero(degree == 1)]
    while stack:
        leaf = stack.pop()
        if degree[leaf] != 1:
            continue
        edge = next(k for k in incident[leaf] if alive[k])
        other = node_v[edge] if node_u[edge] == leaf else node_u[edge]
        solved[edge] = remaining[leaf]
        remaining[other] -= remaining[leaf]
        remaining[leaf] = 0.0
        alive[edge] = False
        degree[leaf] -= 1
        degree[other] -= 1
        if degree[other] == 1:
            stack.append(int(other))
    out = np.where(np.isnan(solved), mass, solved)
    if (out < -1e-12 * max(float(np.max(a)), float(np.max(b)))).any():
        return mass
    return np.maximum(out, 0.0)


def monotone_coupling(
    score_a: np.ndarray, score_b: np.ndarray, wa: np.ndarray, wb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """North-west-corner coupling of the two clouds sorted by score (always feasible up
    to rounding, which :func:`plan_bound` charges)."""
    oa, ob = np.argsort(-score_a, kind="stable"), np.argsort(-score_b, kind="stable")
    ca, cb = np.cumsum(wa[oa]), np.cumsum(wb[ob])
    ca[-1] = cb[-1] = 1.0
    breaks = np.union1d(ca, cb)
    mass = np.diff(np.concatenate([[0.0], breaks]))
    keep = mass > 0
    breaks, mass = breaks[keep], mass[keep]
    ia = np.minimum(np.searchsorted(ca, breaks - mass / 2), len(ca) - 1)
    ib = np.minimum(np.searchsorted(cb, breaks - mass / 2), len(cb) - 1)
    return oa[ia], ob[ib], mass


def solve_assignment(
    pairs: np.ndarray, costs: np.ndarray, n: int, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """``match[i]``: the optimal column of row ``i`` within the sparse graph ``pairs``
    (keys ``i * n + j``), by sparse Jonker–Volgenant on quantized reduced costs.

    Solved on the reduced costs ``c_ij - u_i + v_j`` (the same optimal permutations),
    on a grid of ``2^-36`` of their range, in integers plus one: near-ties from
    rounding become exact ties (the solver's row reduction can cycle on differences
    of ``1e-17``), integer weights make its running time finite, and no weight is an
    explicit zero. The plan is optimal to ``n`` grid steps; its cost is certified
    separately. (SciPy's solver costs ``O(n)`` per augmentation: the compiled solver of
    :mod:`wassnet.ot.native` replaces it where a C compiler exists.)
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    rows, cols = pairs // n, pairs % n
    reduced = costs - u[rows] + v[cols]
    reduced -= float(reduced.min())
    step = 2.0 ** (math.frexp(max(float(reduced.max()), 1e-300))[1] - 36)
    weights = np.rint(reduced / step) + 1.0
    graph = sp.csr_matrix((weights, (rows, cols)), shape=(n, n))
    r, c = min_weight_full_bipartite_matching(graph)
    match = np.empty(n, dtype=np.int64)
    match[r] = c
    return match


def blockwise_refinement(
    problem: TransportProblem,
    plan: PrimalBound,
    block: int,
    deadline: Deadline | None = None,
    reserve: float = 0.0,
) -> PrimalBound:
    """Improve a plan by solving OT exactly inside consecutive blocks of its pairs.

    Each block of ``block`` consecutive pairs of ``plan`` (in the monotone order) moves
    some mass from some points of A to some points of B; replacing it by the optimal
    plan between those same partial marginals keeps the whole plan feasible and never
    raises its cost. Uniform ``n == m`` blocks are permutations (an exact assignment
    by ``linear_sum_assignment``); others are solved by ``ot.emd``. The result is
    certified by :func:`plan_bound` like any plan.

    With a ``deadline``, blocks are refined while ``reserve`` seconds (the final
    certification) are left; the pairs of the blocks not reached are kept as they are
    (the plan stays feasible), and the cut is recorded on the deadline.
    """
    import ot
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    rows, cols, masses = [], [], []
    for start in range(0, len(plan.rows), block):
        if deadline is not None and not deadline.allows(0.0, reserve):
            done = start // block
            deadline.cut(f"exact OT in {done} of {-(-len(plan.rows) // block)} blocks")
            rows.append(plan.rows[start:])
            cols.append(plan.cols[start:])
            masses.append(plan.mass[start:])
            break
        i, j, w = (
            plan.rows[start : start + block],
            plan.cols[start : start + block],
            plan.mass[start : start + block],
        )
        ui, inv_i = np.unique(i, return_inverse=True)
        uj, inv_j = np.unique(j, return_inverse=True)
        ra = np.bincount(inv_i, weights=w, minlength=len(ui))
        rb = np.bincount(inv_j, weights=w, minlength=len(uj))
        c = cdist(problem.x[ui], problem.y[uj], metric=problem.metric)
        if len(ui) == len(uj) == len(w) and np.ptp(w) == 0:
            r, s_ = linear_sum_assignment(c)
            bi, bj, bw = ui[r], uj[s_], np.full(len(r), w[0])
        else:
            pi = ot.emd(ra, rb, c, numItermax=10**7)
            r, s_ = np.nonzero(pi)
            bi, bj, bw = ui[r], uj[s_], pi[r, s_]
        rows.append(bi)
        cols.append(bj)
        masses.append(bw)
    refined = plan_bound(
        problem,
        np.concatenate(rows),
        np.concatenate(cols),
        np.concatenate(masses),
        f"monotone coupling, blocks of {block}",
    )
    return refined if refined.value < plan.value else plan
