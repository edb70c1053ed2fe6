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
blocks of it, a sparse LP on candidate pairs (HiGHS, with a time limit), sparse
assignments (:mod:`~wassnet.ot.sparse`) and POT's network simplex
(:mod:`~wassnet.ot.exact`). Basic plans (spanning forests) get their masses re-solved
on their support (:func:`polish_forest_masses`) so that the charge is at rounding level.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wassnet.ot.costs import PairwiseCost, direct_cost_bounds, pair_cost_bounds
from wassnet.ot.dual import DualBound, c_transform_bound
from wassnet.ot.problem import TransportProblem
from wassnet.rounding import down, nonneg_sum_factor, product_up, sum_up, up

__all__ = [
    "PrimalBound",
    "monotone_coupling",
    "plan_bound",
    "polish_forest_masses",
    "sparse_transport_upper_bound",
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


def _hub_charge(points: np.ndarray, residual: np.ndarray, hub: np.ndarray) -> float:
    """An upper bound on ``sum_i residual_i |points_i - hub|``."""
    keep = residual > 0
    if not keep.any():
        return 0.0
    _, dist = direct_cost_bounds(points[keep], hub[None, :])
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
        float(up(_hub_charge(problem.x, ea, z) + _hub_charge(problem.y, eb, z)))
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
        raise ValueError("plan masses must be finite")
    keep = mass > 0
    rows, cols, mass = rows[keep], cols[keep], mass[keep]
    with np.errstate(over="ignore"):
        total = mass.sum()
    if not np.isfinite(total):
        raise ValueError("plan masses overflow float64 when summed (a plan's total is 1)")
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


def _candidate_pairs(
    cost: PairwiseCost, u: torch.Tensor, v: torch.Tensor, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` pairs of smallest reduced cost ``c_ij - u_i + v_j`` per row and per column."""
    k_row, k_col = min(k, cost.m), min(k, cost.n)
    u = u.to(cost.device, torch.float64)
    v = v.to(cost.device, torch.float64)
    rows, cols = [], []
    col_best = torch.full((k_col, cost.m), torch.inf, dtype=u.dtype, device=u.device)
    col_idx = torch.zeros((k_col, cost.m), dtype=torch.long, device=u.device)
    for start, c in cost.chunks():
        reduced = c - u[start : start + len(c), None] + v[None, :]
        top = reduced.topk(k_row, dim=1, largest=False).indices
        rows.append((torch.arange(len(c), device=u.device)[:, None] + start).expand(-1, k_row))
        cols.append(top)
        kk = min(k_col, len(c))
        cand_val, cand_pos = reduced.topk(kk, dim=0, largest=False)
        merged = torch.cat([col_best, cand_val])
        merged_idx = torch.cat([col_idx, cand_pos + start])
        col_best, order = merged.topk(k_col, dim=0, largest=False)
        col_idx = merged_idx.gather(0, order)
    rows.append(col_idx)
    cols.append(torch.arange(cost.m, device=u.device)[None, :].expand(k_col, -1))
    i = torch.cat([r.reshape(-1) for r in rows]).cpu().numpy()
    j = torch.cat([c.reshape(-1) for c in cols]).cpu().numpy()
    return i, j


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


def _assignment_plan(cost: PairwiseCost, i: np.ndarray, j: np.ndarray) -> PrimalBound:
    """Uniform weights, n == m: the optimal permutation within the candidate pairs."""
    n = cost.n
    keys = np.unique(i.astype(np.int64) * n + j)
    zero = np.zeros(n)
    match = solve_assignment(keys, cost.pair_costs(keys // n, keys % n), n, zero, zero)
    return plan_bound(cost.problem, np.arange(n), match, np.full(n, 1.0 / n), "sparse assignment")


@dataclass(frozen=True)
class _LPSolution:
    plan: PrimalBound
    u: torch.Tensor
    v: torch.Tensor


def _sparse_lp(
    cost: PairwiseCost, i: np.ndarray, j: np.ndarray, time_limit: float
) -> _LPSolution | None:
    """The optimal plan within the candidate pairs (HiGHS, time-limited) and the LP's
    dual potentials; ``None`` when the solver fails or runs out of time."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    problem = cost.problem
    n, m, e = cost.n, cost.m, len(i)
    c = cost.pair_costs(i, j)
    a_eq = sp.vstack(
        [
            sp.csr_matrix((np.ones(e), (i, np.arange(e))), shape=(n, e)),
            sp.csr_matrix((np.ones(e), (j, np.arange(e))), shape=(m, e)),
        ]
    )
    wa, wb = problem.a.probabilities(), problem.b.probabilities()
    # interior point + crossover: a basic optimal plan with its duals, several times
    # faster than dual simplex on these transport LPs (measured 6x at n = 3000, d = 2)
    res = linprog(
        c,
        A_eq=a_eq,
        b_eq=np.concatenate([wa, wb]),
        bounds=(0, None),
        method="highs-ipm",
        options={"time_limit": max(time_limit, 1e-3)},
    )
    if res.status != 0 or res.x is None:
        return None
    mass = polish_forest_masses(i, j, np.clip(res.x, 0, None), wa, wb)
    plan = plan_bound(problem, i, j, mass, "sparse LP (HiGHS)")
    y = torch.as_tensor(res.eqlin.marginals, dtype=torch.float64, device=cost.device)
    return _LPSolution(plan, y[:n], -y[n:])  # HiGHS: y_i + y_{n+j} <= c_ij; ours: u_i - v_j <= c_ij


def sparse_transport_upper_bound(
    cost: PairwiseCost,
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    k: int = 10,
    rounds: int = 1,
    block: int = 1000,
    lp_max_pairs: int = 2_000_000,
    tol: float = 1e-9,
    time_limit: float = 600.0,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> PrimalBound:
    """Certified upper bound: the optimal plan on a sparse set of candidate pairs.

    Candidates are the ``k`` pairs of smallest reduced cost ``c_ij - u_i + v_j`` per row
    and per column (for optimal potentials, the optimal plan lives on zero reduced
    costs), plus the monotone coupling along ``u`` / ``v``, which keeps the problem
    feasible whatever the candidates.

    * A sparse LP (HiGHS). With ``rounds > 1`` this is column generation: the LP's
      duals price every pair, the most negative reduced costs join the candidates, and
      the LP is solved again, until the relative gap is below ``tol`` or no pair prices
      out. Each round's duals, c-transformed, give a certified lower bound (``.dual``).
    * Uniform weights with ``n == m`` and more than ``lp_max_pairs`` candidates: a
      sparse assignment (an exact permutation; no duals), much faster than the LP.

    Every solver call is bounded by what is left of ``time_limit`` (seconds); a failed
    or timed-out LP leaves the best plan so far (at worst the monotone coupling),
    named in ``method``. ``callback`` receives each round's record (``lower``,
    ``upper``, and the ``passes`` over all pairs it made). ``k = 0`` skips the pass
    over all pairs: the monotone coupling, re-solved exactly within consecutive blocks
    of ``block`` of its pairs (``block=0`` keeps it as is).
    """
    problem = cost.problem
    m = cost.m
    deadline = time.perf_counter() + time_limit
    wa, wb = problem.a.probabilities(), problem.b.probabilities()
    mi, mj, mmass = monotone_coupling(u.double().cpu().numpy(), v.double().cpu().numpy(), wa, wb)
    monotone = plan_bound(problem, mi, mj, mmass, "monotone coupling")
    if k == 0:
        return blockwise_refinement(problem, monotone, block) if block else monotone
    i, j = _candidate_pairs(cost, u, v, k)
    pair = np.unique(np.concatenate([i, mi]).astype(np.int64) * m + np.concatenate([j, mj]))
    i, j = pair // m, pair % m
    if problem.uniform_square and len(pair) > lp_max_pairs:
        return _assignment_plan(cost, i, j)
    best_plan, best_dual = monotone, None
    for _ in range(rounds):
        left = deadline - time.perf_counter()
        solved = _sparse_lp(cost, i, j, left) if left > 0 else None
        if solved is None:
            if best_plan is monotone:
                best_plan = _renamed(monotone, "monotone coupling (the LP failed or timed out)")
            break
        if solved.plan.value < best_plan.value:
            best_plan = solved.plan
        dual = c_transform_bound(cost, solved.u)
        if best_dual is None or dual.value > best_dual.value:
            best_dual = dual
        closed = best_plan.value - best_dual.value <= tol * max(1e-300, abs(best_plan.value))
        if callback is not None:
            record = {
                "lower": best_dual.value,
                "upper": best_plan.value,
                "passes": 2 + (not closed),
            }
            callback(record)
        if closed:
            break
        ni, nj = _candidate_pairs(cost, solved.u, solved.v, k)
        new = np.setdiff1d(ni.astype(np.int64) * m + nj, pair)
        if len(new) == 0:
            break
        pair = np.union1d(pair, new)
        i, j = pair // m, pair % m
    return _renamed(best_plan, best_plan.method, dual=best_dual)


def _renamed(plan: PrimalBound, method: str, dual: DualBound | None = None) -> PrimalBound:
    return PrimalBound(
        plan.value, plan.rows, plan.cols, plan.mass, method, plan.residual_charge, dual
    )


def blockwise_refinement(problem: TransportProblem, plan: PrimalBound, block: int) -> PrimalBound:
    """Improve a plan by solving OT exactly inside consecutive blocks of its pairs.

    Each block of ``block`` consecutive pairs of ``plan`` (in the monotone order) moves
    some mass from some points of A to some points of B; replacing it by the optimal
    plan between those same partial marginals keeps the whole plan feasible and never
    raises its cost. Uniform ``n == m`` blocks are permutations (an exact assignment
    by ``linear_sum_assignment``); others are solved by ``ot.emd``. The result is
    certified by :func:`plan_bound` like any plan.
    """
    import ot
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    rows, cols, masses = [], [], []
    for start in range(0, len(plan.rows), block):
        i, j, w = (
            plan.rows[start : start + block],
            plan.cols[start : start + block],
            plan.mass[start : start + block],
        )
        ui, inv_i = np.unique(i, return_inverse=True)
        uj, inv_j = np.unique(j, return_inverse=True)
        ra = np.bincount(inv_i, weights=w, minlength=len(ui))
        rb = np.bincount(inv_j, weights=w, minlength=len(uj))
        c = cdist(problem.x[ui], problem.y[uj])
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
