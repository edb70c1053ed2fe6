r"""Costs of a :class:`~wassnet.ot.problem.TransportProblem`, certified.

Two kinds of certified values, both in the problem's (power-of-two scaled) units.
The notes below prove the Euclidean ones; for the ``cityblock`` and ``chebyshev``
metrics both kinds come from direct differences with the margins of
:mod:`wassnet.ot.metrics` (chunks by ``torch.cdist``, whose order of summation the
margin does not depend on).

* :meth:`PairwiseCost.pair_bounds`: **lower and upper bounds** on :math:`c_{ij}` for
  given pairs, from direct differences of the scaled points (no shift). With
  :math:`\hat s = \mathrm{fl}(\sum_k \mathrm{fl}(\hat\delta_k^2))` and
  :math:`\hat\delta_k = \mathrm{fl}(x_k - y_k) = \delta_k (1 + \epsilon_k)`,
  :math:`|\epsilon_k| \le u` (exact when subnormal), the exact square satisfies
  :math:`\hat s (1-u)^2 / (1 + \gamma_d) - d\eta \le s \le \hat s (1+u)^2 / (1 - \gamma_d)
  + d\eta` (:math:`\eta = 2^{-1074}` charges squares that underflow), and the square
  root and the scaling by these factors are rounded outward by one ulp each. Relative
  width about :math:`(d + 4) u`.
* :meth:`PairwiseCost.chunks`: **lower bounds** on all costs by chunks of rows, from
  the fast expansion :math:`|x'|^2 + |y'|^2 - 2 x' \cdot y'` of centred points
  :math:`x' = \mathrm{fl}(x - c)` (a matrix product). Proof of the margins, with
  :math:`T = |x'|^2 + |y'|^2` and :math:`u = 2^{-53}`:

  - one matrix product of augmented vectors
    :math:`[x', (1-\kappa)|x'|^2, 1] \cdot [-2y', 1, (1-\kappa)|y'|^2 - (3d+8)\eta]`
    computes :math:`s' - \kappa T` (:math:`s' = |x' - y'|^2`) up to
    :math:`\gamma_{d+2}` times the sum of the terms' magnitudes, at most
    :math:`2\gamma_{d+2} T (1 + u)`, plus :math:`uT` for storing the squared norms;
    products below the normal range err by at most :math:`\eta = 2^{-1074}` each,
    absolutely, which the :math:`(3d + 8)\eta` covers;
  - with :math:`\kappa = 2\gamma_{d+2} + 16u` the computed value is at most
    :math:`s' - 13uT` (:math:`s' \le 2T`), and the rounded square root of that is at
    most :math:`\sqrt{s'}(1 - 2u)`;
  - centring moves each coordinate by at most :math:`u |x - c|`, so the true distance
    is at least :math:`|x' - y'| - u(|x'| + |y'|)/(1-u)`; subtracting
    :math:`\sigma = 2u(|x'| + |y'|)` after the square root covers it and the last
    subtraction's rounding.

  The loss against the exact costs is :math:`\kappa T / (2c) + \sigma`: about
  :math:`10^{-13}` relative on ordinary data, more for pairs much closer than the
  clouds' radius (which :meth:`pair_bounds` serves exactly where it matters).

Holds the dense ``n x m`` matrix of lower bounds when it takes at most
``dense_bytes``; otherwise recomputes each chunk of rows on the fly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from wassnet.errors import InputError
from wassnet.norms import Norm, by_metric
from wassnet.ot.metrics import down_t, lower_bound_matrix, norm_bounds_torch, up_t
from wassnet.ot.problem import TransportProblem
from wassnet.rounding import UNIT, down, gamma, up

__all__ = ["PairwiseCost", "direct_cost_bounds", "direct_cost_bounds_torch", "pair_cost_bounds"]

_ETA = 2.0**-1074  # smallest subnormal: the absolute error of an underflowing square


def _sum_factors(dim: int) -> tuple[float, float]:
    """``(f_lo, f_hi)`` with ``s_hat * f_lo - d eta <= s <= s_hat * f_hi + d eta``."""
    g = gamma(dim)
    f_hi = up(up(up(1.0 + UNIT) ** 2) / down(1.0 - g))
    f_lo = down(down(down(1.0 - UNIT) ** 2) / up(1.0 + g))
    # one more ulp each for the multiplication s_hat * f that applies them
    return float(down(f_lo)), float(up(f_hi))


def direct_cost_bounds_torch(
    x: torch.Tensor, y: torch.Tensor, metric: str | Norm = "euclidean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` with ``lo_k <= |x_k - y_k| <= hi_k`` exactly (the metric's norm), for
    rows of two float64 ``[k, d]`` tensors (any device; see the module notes)."""
    norm = by_metric(metric)
    diff = x - y
    if not norm.is_euclidean:
        return norm_bounds_torch(diff, norm)
    dim = x.shape[1]
    f_lo, f_hi = _sum_factors(dim)
    floor = dim * _ETA
    sq = (diff * diff).sum(1)
    same = ~(diff != 0).any(1)  # equal points: the cost is exactly 0
    hi = up_t(torch.sqrt(up_t(up_t(sq * f_hi) + floor)))
    lo = down_t(torch.sqrt((down_t(down_t(sq * f_lo) - floor)).clamp_min(0)))
    zero = torch.zeros_like(hi)
    return torch.where(same, zero, lo.clamp_min(0)), torch.where(same, zero, hi)


def direct_cost_bounds(
    x: np.ndarray, y: np.ndarray, chunk: int = 1 << 16, metric: str | Norm = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`direct_cost_bounds_torch` for NumPy ``[k, d]`` arrays (chunked); ``y`` may
    be a single row ``[1, d]``, paired with every row of ``x``."""
    k = len(x)
    lo, hi = np.empty(k), np.empty(k)
    one = len(y) == 1
    y_one = torch.tensor(np.asarray(y, dtype=np.float64)) if one else None
    for s in range(0, k, chunk):
        xs = torch.tensor(np.asarray(x[s : s + chunk], dtype=np.float64))
        ys = y_one if one else torch.tensor(np.asarray(y[s : s + chunk], dtype=np.float64))
        lo_t, hi_t = direct_cost_bounds_torch(xs, ys, metric)
        lo[s : s + chunk], hi[s : s + chunk] = lo_t.numpy(), hi_t.numpy()
    return lo, hi


def pair_cost_bounds(
    problem: TransportProblem, rows: np.ndarray, cols: np.ndarray, chunk: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`direct_cost_bounds` for the pairs ``(x[rows_k], y[cols_k])`` of a problem,
    gathered by chunks (memory ``O(chunk * d)``)."""
    lo, hi = np.empty(len(rows)), np.empty(len(rows))
    for s in range(0, len(rows), chunk):
        r, c = rows[s : s + chunk], cols[s : s + chunk]
        lo[s : s + chunk], hi[s : s + chunk] = direct_cost_bounds(
            problem.x[r], problem.y[c], metric=problem.metric
        )
    return lo, hi


class PairwiseCost:
    """Certified costs of a :class:`TransportProblem` (scaled units, its metric).

    Args:
        problem: the two clouds (``x`` ``[n, d]``, ``y`` ``[m, d]``, scaled exactly).
        device: where the float64 chunks are computed (default CPU).
        dense_bytes: keep the whole ``n x m`` matrix of lower bounds when it fits.
        chunk_bytes: memory of one chunk of rows otherwise.
        exact_close_pairs: recompute the pairs much closer than the clouds' radius
            by direct differences (tight bounds where the expansion loses digits).
    """

    def __init__(
        self,
        problem: TransportProblem,
        *,
        device: torch.device | str | None = None,
        dense_bytes: int = 512 * 2**20,
        chunk_bytes: int = 64 * 2**20,
        exact_close_pairs: bool = True,
    ) -> None:
        self.problem = problem
        dev = torch.device(device) if device is not None else torch.device("cpu")
        x64 = torch.as_tensor(problem.x, dtype=torch.float64, device=dev)
        y64 = torch.as_tensor(problem.y, dtype=torch.float64, device=dev)
        self.n, self.m = len(x64), len(y64)
        self.chunk_rows = max(1, min(chunk_bytes // (8 * max(self.m, 1)), 1 << 18))
        self.exact_close_pairs = exact_close_pairs
        self._dense = None
        if problem.norm.is_euclidean:
            self._prepare_expansion(x64, y64)
        else:  # l1, l-inf: direct differences, no centring, no expansion
            self.x, self.y = x64, y64
        if self.n * self.m * 8 <= dense_bytes:
            self._dense = torch.cat([c for _, c in self._compute_chunks()])

    def _prepare_expansion(self, x64: torch.Tensor, y64: torch.Tensor) -> None:
        """The augmented, centred points of the Euclidean expansion (module notes)."""
        self.center = torch.cat([x64, y64]).mean(0)
        self.x, self.y = x64 - self.center, y64 - self.center  # x' = fl(x - c)
        dim = self.x.shape[1]
        x_sq, y_sq = (self.x * self.x).sum(1), (self.y * self.y).sum(1)
        self._kappa = float(up(2.0 * gamma(dim + 2) + 16 * UNIT))
        self._x_norm, self._y_norm = x_sq.sqrt(), y_sq.sqrt()
        self._sigma = 2.0 * UNIT
        self._floor = (3 * dim + 8) * _ETA  # products that underflow err absolutely
        # [x', (1-k)|x'|^2, 1] . [-2y', 1, (1-k)|y'|^2 - floor] = |x'-y'|^2 - k T - floor,
        # one matrix product (its rounding is within the margin, see the module notes)
        one_x, one_y = torch.ones_like(x_sq)[:, None], torch.ones_like(y_sq)[:, None]
        self._xa = torch.cat([self.x, ((1 - self._kappa) * x_sq)[:, None], one_x], 1)
        ya = torch.cat([-2.0 * self.y, one_y, ((1 - self._kappa) * y_sq - self._floor)[:, None]], 1)
        self._ya_t = ya.T.contiguous()
        # pairs closer than 1% of the radius scale: the expansion's margin would exceed
        # ~1e-10 of their cost, so they are recomputed by direct differences
        self._close_ratio = 1e-2 / 2.0**0.5  # c < ratio (|x'| + |y'|)  =>  c^2 < 1e-4 T

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def held(self) -> bool:
        """Whether the matrix of lower bounds is held in memory (passes only read it)."""
        return self._dense is not None

    def _compute_chunks(
        self, first: int = 0, last: int | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        last = self.n if last is None else last
        if not self.problem.norm.is_euclidean:
            for start in range(first, last, self.chunk_rows):
                rows = self.x[start : min(start + self.chunk_rows, last)]
                yield start, lower_bound_matrix(rows, self.y, self.problem.norm)
            return
        for start in range(first, last, self.chunk_rows):
            stop = min(start + self.chunk_rows, last)
            cost = (self._xa[start:stop] @ self._ya_t).clamp_min_(0).sqrt_()
            norms = self._x_norm[start:stop, None] + self._y_norm
            close = cost < self._close_ratio * norms  # the expansion is loose there
            cost.sub_(norms, alpha=self._sigma).clamp_min_(0)
            if self.exact_close_pairs and bool(close.any()):
                r, c = torch.nonzero(close, as_tuple=True)
                lo, _ = self.pair_bounds(r.cpu().numpy() + start, c.cpu().numpy())
                cost[r, c] = torch.as_tensor(lo, dtype=cost.dtype, device=cost.device)
            yield start, cost

    def dense_matrix(self) -> np.ndarray:
        """The ``n x m`` lower bounds as a NumPy array (only when held densely)."""
        if self._dense is None:
            raise InputError("the cost matrix is not held densely (n * m too large)")
        return self._dense.cpu().numpy()

    def chunks(self, rows: tuple[int, int] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first_row, lower bounds on cost[first_row : first_row + rows])``, for
        the rows ``rows = (first, last)`` only when given (``first`` a multiple of
        :attr:`chunk_rows`: the same chunks, the same values as a pass over all rows)."""
        first, last = (0, self.n) if rows is None else rows
        if self._dense is not None:
            for start in range(first, last, self.chunk_rows):
                yield start, self._dense[start : min(start + self.chunk_rows, last)]
        else:
            yield from self._compute_chunks(first, last)

    @torch.no_grad()
    def row_pass(
        self,
        p: torch.Tensor,
        k: int = 0,
        below: torch.Tensor | None = None,
        rows: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Certified lower bounds of :math:`\min_j (c_{ij} + p_j)` for every row (rounded
        down once after the minimum), and ``[n, k]`` columns of smallest
        :math:`c_{ij} + p_j` (pricing candidates; nothing certified rests on them).
        ``below`` is accepted for the interface of :meth:`TiledCost.row_pass`: here every
        row gets candidates (a dense matrix makes them cheap). ``rows = (first, last)``:
        those rows only (see :meth:`chunks`)."""
        p = p.to(self.device, torch.float64)
        first, last = (0, self.n) if rows is None else rows
        lower = torch.empty(last - first, dtype=torch.float64, device=self.device)
        k = min(k, self.m)
        cand = torch.empty((last - first, k), dtype=torch.long, device=self.device)
        for start, c in self.chunks((first, last)):
            values = c + p[None, :]
            lower[start - first : start - first + len(c)] = values.min(1).values
            if k:
                cand[start - first : start - first + len(c)] = values.topk(
                    k, dim=1, largest=False
                ).indices
        return down_t(lower), cand

    @torch.no_grad()
    def col_pass(self, q: torch.Tensor, k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Certified upper bounds of :math:`\max_i (q_i - c_{ij})` for every column
        (rounded up once after the maximum), and ``[m, k]`` rows of largest
        :math:`q_i - c_{ij}` (pricing candidates)."""
        q = q.to(self.device, torch.float64)
        upper = torch.full((self.m,), -torch.inf, dtype=torch.float64, device=self.device)
        k = min(k, self.n)
        best = torch.full((k, self.m), -torch.inf, dtype=torch.float64, device=self.device)
        best_i = torch.zeros((k, self.m), dtype=torch.long, device=self.device)
        for start, c in self.chunks():
            values = q[start : start + len(c), None] - c
            upper = torch.maximum(upper, values.max(0).values)
            if k:
                kk = min(k, len(c))
                top_v, top_i = values.topk(kk, dim=0)
                merged, order = torch.cat([best, top_v]).topk(k, dim=0)
                best_i = torch.cat([best_i, top_i + start]).gather(0, order)
                best = merged
        return up_t(upper), best_i.T.contiguous()

    def pair_bounds(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)``: certified bounds on ``c_ij`` for the given pairs (direct differences)."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        return pair_cost_bounds(self.problem, rows, cols)
