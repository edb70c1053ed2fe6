r"""Exact W1 and certified bounds on point clouds (Euclidean ground cost).

For weighted clouds :math:`a = \sum_i a_i \delta_{x_i}` and
:math:`b = \sum_j b_j \delta_{y_j}`, with :math:`c_{ij} = \|x_i - y_j\|_2`:

.. math::
    W_1(a, b) = \min_{\pi \in \Pi(a, b)} \sum_{ij} \pi_{ij} c_{ij}
              = \max_{u_i - v_j \le c_{ij}} \sum_i a_i u_i - \sum_j b_j v_j .

* Any coupling :math:`\pi` gives an **upper bound**, its cost (:func:`assignment_cost`,
  :func:`sparse_transport_upper_bound`).
* Any potential :math:`u` on the points gives a **lower bound** after the
  c-transforms :math:`v_j = \max_i (u_i - c_{ij})`, :math:`u_i = \min_j (v_j + c_{ij})`,
  which make the pair feasible by construction (:func:`c_transform_bound`). For
  :math:`u = f(x)` with :math:`f` 1-Lipschitz the transforms never lower the bound.

Everything is computed in chunks of rows (never the whole ``n x m`` matrix unless it
fits a small budget), in float64 for the certified values.
:func:`exact_w1` is POT's network simplex (``ot.emd2``) with its result code checked,
and :func:`w1_1d` the exact 1-D solution by sorting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ExactSolverError",
    "PairwiseCost",
    "c_transform_bound",
    "exact_w1",
    "exact_w1_fits",
    "sinkhorn_refine",
    "sparse_transport_upper_bound",
    "w1_1d",
]


class ExactSolverError(RuntimeError):
    """POT's solver stopped before optimality (its result is not an exact W1)."""


def w1_1d(
    x: np.ndarray, y: np.ndarray, wx: np.ndarray | None = None, wy: np.ndarray | None = None
) -> float:
    r"""Exact W1 between weighted point sets on the line: :math:`\int |F_a - F_b|`.

    Sorts both sets once (``O((n + m) log(n + m))``, any size). Weights default to
    uniform and are normalized to sum 1.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    wx = np.full(len(x), 1.0 / len(x)) if wx is None else np.asarray(wx, np.float64) / np.sum(wx)
    wy = np.full(len(y), 1.0 / len(y)) if wy is None else np.asarray(wy, np.float64) / np.sum(wy)
    values = np.concatenate([x, y])
    signed = np.concatenate([wx, -wy])
    order = np.argsort(values, kind="stable")
    values, cdf_gap = values[order], np.cumsum(signed[order])
    return float(np.sum(np.abs(cdf_gap[:-1]) * np.diff(values)))


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def exact_w1_fits(n: int, m: int, memory_fraction: float = 0.6) -> bool:
    """Whether dense ``ot.emd2`` fits in memory: it peaks near 0.3 GB + 40 bytes * n * m."""
    return 0.3e9 + 40.0 * n * m <= memory_fraction * _available_memory()


def exact_w1(
    x: np.ndarray,
    y: np.ndarray,
    wx: np.ndarray | None = None,
    wy: np.ndarray | None = None,
    num_iter_max: int | None = None,
) -> float:
    """Exact W1 by POT's network simplex on the dense Euclidean cost matrix.

    ``numItermax`` defaults to ``max(10**7, 100 (n + m))`` (POT's default 100000 stops
    early already at n = 2000), and the result code is checked: a solver that did not
    reach optimality raises :class:`ExactSolverError` instead of returning a number
    that is not exact. 1-D inputs use :func:`w1_1d`.
    """
    import ot

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim == 1:
        return w1_1d(x, y, wx, wy)
    n, m = len(x), len(y)
    wx = np.full(n, 1.0 / n) if wx is None else np.asarray(wx, np.float64) / np.sum(wx)
    wy = np.full(m, 1.0 / m) if wy is None else np.asarray(wy, np.float64) / np.sum(wy)
    cost = ot.dist(x, y, metric="euclidean")
    iters = num_iter_max or max(10**7, 100 * (n + m))
    value, log = ot.emd2(wx, wy, cost, numItermax=iters, log=True)
    if log.get("result_code") != 1:
        raise ExactSolverError(
            f"ot.emd2 did not reach optimality (result code {log.get('result_code')}: "
            f"{log.get('warning')}); increase num_iter_max"
        )
    return float(value)


class PairwiseCost:
    """Euclidean costs between two clouds, served by chunks of rows.

    Holds the dense ``n x m`` matrix when it takes at most ``dense_bytes``; otherwise
    recomputes each chunk of ``chunk_rows`` rows on the fly (memory ``O(chunk m)``).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        dense_bytes: int = 512 * 2**20,
        chunk_bytes: int = 64 * 2**20,
    ) -> None:
        self.x, self.y = x, y
        self.n, self.m = len(x), len(y)
        itemsize = x.element_size()
        self.chunk_rows = max(1, chunk_bytes // (itemsize * self.m))
        self._dense = None
        if self.n * self.m * itemsize <= dense_bytes:
            self._dense = torch.cat([c for _, c in self._compute_chunks()])

    def _compute_chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        y_sq = (self.y * self.y).sum(1)
        for start in range(0, self.n, self.chunk_rows):
            xc = self.x[start : start + self.chunk_rows]
            # ||x||^2 + ||y||^2 - 2 x.y, then an exact recomputation where cancellation bites
            sq = (xc * xc).sum(1, keepdim=True) + y_sq - 2.0 * xc @ self.y.T
            yield start, sq.clamp_min_(0).sqrt_()

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first_row, cost[first_row : first_row + rows])``."""
        if self._dense is not None:
            for start in range(0, self.n, self.chunk_rows):
                yield start, self._dense[start : start + self.chunk_rows]
        else:
            yield from self._compute_chunks()

    def exact_rows(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Costs of the given pairs, computed directly (no cancellation), float64."""
        return (self.x[rows].double() - self.y[cols].double()).norm(dim=1)


def _c_transform_pass(cost: PairwiseCost, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``v_j = max_i (u_i - c_ij)`` then ``u'_i = min_j (v_j + c_ij)``; two passes."""
    v = torch.full((cost.m,), -torch.inf, dtype=u.dtype, device=u.device)
    for start, c in cost.chunks():
        v = torch.maximum(v, (u[start : start + len(c), None] - c).max(dim=0).values)
    u_new = torch.empty_like(u)
    for start, c in cost.chunks():
        u_new[start : start + len(c)] = (v[None, :] + c).min(dim=1).values
    return u_new, v


@dataclass(frozen=True)
class DualBound:
    """A dual pair ``(u, v)`` feasible on the points, and its value (a lower bound on W1)."""

    value: float
    u: torch.Tensor
    v: torch.Tensor


def c_transform_bound(
    cost: PairwiseCost, u: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor
) -> DualBound:
    """Certified lower bound on W1 from any potential ``u`` on the first cloud.

    The c-transforms make ``u_i - v_j <= c_ij`` hold for every pair by construction,
    so ``sum a u - sum b v <= W1``. The costs are computed in the dtype of ``cost``
    (use float64 for a certificate; float32 rounding of ``c_ij`` is ~1e-7 relative).
    """
    u_new, v = _c_transform_pass(cost, u.to(cost.x.dtype))
    value = float((wa.double() * u_new.double()).sum() - (wb.double() * v.double()).sum())
    return DualBound(value, u_new, v)


def sinkhorn_refine(
    cost: PairwiseCost,
    wa: torch.Tensor,
    wb: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    epsilons: list[float],
    iters_per_eps: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Improve potentials by log-domain Sinkhorn with decreasing ``epsilons``.

    Warm-started at ``(u, v)``; returns new potentials, which are *not* feasible by
    themselves: pass ``u`` to :func:`c_transform_bound` for a certified value.
    """
    u = u.clone()
    log_a, log_b = wa.log().to(u.dtype), wb.log().to(u.dtype)
    for eps in epsilons:
        for _ in range(iters_per_eps):
            # v_j = eps log sum_i a_i exp((u_i - c_ij) / eps)   (a soft max_i (u_i - c_ij))
            acc = torch.full((cost.m,), -torch.inf, dtype=u.dtype, device=u.device)
            for start, c in cost.chunks():
                z = (u[start : start + len(c), None] - c) / eps + log_a[
                    start : start + len(c), None
                ]
                acc = torch.logaddexp(acc, torch.logsumexp(z, dim=0))
            v = eps * acc
            # u_i = -eps log sum_j b_j exp(-(v_j + c_ij) / eps)  (a soft min_j (v_j + c_ij))
            for start, c in cost.chunks():
                z = -(v[None, :] + c) / eps + log_b[None, :]
                u[start : start + len(c)] = -eps * torch.logsumexp(z, dim=1)
    return u, v


def _candidate_pairs(
    cost: PairwiseCost, u: torch.Tensor, v: torch.Tensor, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` pairs of smallest reduced cost ``c_ij - u_i + v_j`` per row and per column."""
    k_row, k_col = min(k, cost.m), min(k, cost.n)
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


def _monotone_coupling(
    score_a: np.ndarray, score_b: np.ndarray, wa: np.ndarray, wb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """North-west-corner coupling of the two clouds sorted by score (always feasible)."""
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


@dataclass(frozen=True)
class PrimalBound:
    """An explicit transport plan (sparse) and its cost (an upper bound on W1)."""

    value: float
    rows: np.ndarray
    cols: np.ndarray
    mass: np.ndarray
    method: str


def sparse_transport_upper_bound(
    cost: PairwiseCost,
    wa: np.ndarray,
    wb: np.ndarray,
    u: torch.Tensor,
    v: torch.Tensor,
    k: int = 10,
) -> PrimalBound:
    """Certified upper bound: the optimal plan on a sparse set of candidate pairs.

    Candidates are the ``k`` pairs of smallest reduced cost per row and per column
    under the potentials ``(u, v)`` (for optimal potentials, the optimal plan lives on
    zero reduced costs), plus the monotone coupling along ``u`` / ``v`` that makes the
    problem feasible whatever the candidates. Uniform weights with ``n == m`` are
    solved as a sparse assignment (exact permutation); otherwise as a sparse LP
    (HiGHS), whose marginal residual ``r`` is charged as ``diam * |r|_1`` so that the
    bound stays certified. The plan's cost is recomputed in float64 pair by pair.
    """
    import scipy.sparse as sp

    n, m = cost.n, cost.m
    dev = cost.x.device
    mi, mj, mmass = _monotone_coupling(u.double().cpu().numpy(), v.double().cpu().numpy(), wa, wb)
    if k == 0:  # no pass over the n x m pairs: the monotone coupling alone
        mc = cost.exact_rows(torch.as_tensor(mi, device=dev), torch.as_tensor(mj, device=dev))
        return PrimalBound(float(mc.cpu().numpy() @ mmass), mi, mj, mmass, "monotone coupling")
    i, j = _candidate_pairs(cost, u, v, k)
    i, j = np.concatenate([i, mi]), np.concatenate([j, mj])
    pair = np.unique(i.astype(np.int64) * m + j)
    i, j = pair // m, pair % m
    c = (
        cost.exact_rows(
            torch.as_tensor(i, device=cost.x.device), torch.as_tensor(j, device=cost.x.device)
        )
        .cpu()
        .numpy()
    )
    uniform = (
        n == m
        and np.allclose(wa, 1.0 / n, rtol=0, atol=1e-15)
        and np.allclose(wb, 1.0 / m, rtol=0, atol=1e-15)
    )
    if uniform:
        from scipy.sparse.csgraph import min_weight_full_bipartite_matching

        # tiny offset: explicit zeros would be dropped from the sparse graph
        graph = sp.csr_matrix((c + 1e-300 + c.max() * 1e-12, (i, j)), shape=(n, m))
        r, s = min_weight_full_bipartite_matching(graph)
        plan_c = (
            cost.exact_rows(
                torch.as_tensor(r, device=cost.x.device), torch.as_tensor(s, device=cost.x.device)
            )
            .cpu()
            .numpy()
        )
        return PrimalBound(float(plan_c.sum() / n), r, s, np.full(n, 1.0 / n), "sparse assignment")
    from scipy.optimize import linprog

    e = len(c)
    a_eq = sp.vstack(
        [
            sp.csr_matrix((np.ones(e), (i, np.arange(e))), shape=(n, e)),
            sp.csr_matrix((np.ones(e), (j, np.arange(e))), shape=(m, e)),
        ]
    )
    res = linprog(c, A_eq=a_eq, b_eq=np.concatenate([wa, wb]), bounds=(0, None), method="highs")
    if res.status != 0:  # fall back on the monotone coupling, feasible by construction
        return sparse_transport_upper_bound(cost, wa, wb, u, v, k=0)
    mass = np.clip(res.x, 0, None)
    keep = mass > 0
    residual = np.abs(a_eq @ mass - np.concatenate([wa, wb])).sum()
    # repairing the marginals moves mass |r|_1 by at most the diameter of both clouds
    center = cost.x[0].double()
    radius = max(
        float((cost.x.double() - center).norm(dim=1).max()),
        float((cost.y.double() - center).norm(dim=1).max()),
    )
    diameter = 2.0 * radius
    value = float(c[keep] @ mass[keep] + diameter * residual)
    return PrimalBound(value, i[keep], j[keep], mass[keep], "sparse LP (HiGHS)")
