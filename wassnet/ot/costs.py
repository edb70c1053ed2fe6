r"""Euclidean costs of a :class:`~wassnet.ot.problem.TransportProblem`, certified.

Two kinds of certified values, both in the problem's (power-of-two scaled) units:

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

  - the expansion is a sum of :math:`3d` products through at most :math:`d + 2`
    roundings each, so :math:`|\hat s - s'| \le \gamma_{d+2} \cdot 2T` for
    :math:`s' = |x' - y'|^2`;
  - products below the normal range err by at most :math:`\eta = 2^{-1074}` each,
    absolutely: :math:`(3d + 8)\eta` more is subtracted;
  - subtracting :math:`\kappa T` with :math:`\kappa = 2\gamma_{d+2} + 16u` leaves
    :math:`s' - 13uT` after the subtraction's own rounding (:math:`s' \le 2T`), and the
    rounded square root of that is at most :math:`\sqrt{s'}(1 - 2u)`;
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

from wassnet.ot.problem import TransportProblem
from wassnet.rounding import UNIT, down, gamma, up

__all__ = ["PairwiseCost", "direct_cost_bounds", "pair_cost_bounds"]

_ETA = 2.0**-1074  # smallest subnormal: the absolute error of an underflowing square


def _sum_factors(dim: int) -> tuple[float, float]:
    """``(f_lo, f_hi)`` with ``s_hat * f_lo - d eta <= s <= s_hat * f_hi + d eta``."""
    g = gamma(dim)
    f_hi = up(up(up(1.0 + UNIT) ** 2) / down(1.0 - g))
    f_lo = down(down(down(1.0 - UNIT) ** 2) / up(1.0 + g))
    # one more ulp each for the multiplication s_hat * f that applies them
    return float(down(f_lo)), float(up(f_hi))


def direct_cost_bounds(
    x: np.ndarray, y: np.ndarray, chunk: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` with ``lo_k <= |x_k - y_k| <= hi_k`` exactly, for rows of two
    ``[k, d]`` float64 arrays (see the module notes)."""
    k, dim = x.shape
    f_lo, f_hi = _sum_factors(dim)
    floor = dim * _ETA
    lo, hi = np.empty(k), np.empty(k)
    for s in range(0, k, chunk):
        diff = x[s : s + chunk] - y[s : s + chunk]
        sq = np.einsum("ij,ij->i", diff, diff)
        same = ~diff.any(axis=1)  # equal points: the cost is exactly 0
        hi_c = up(np.sqrt(up(up(sq * f_hi) + floor)))
        lo_c = down(np.sqrt(np.maximum(down(down(sq * f_lo) - floor), 0.0)))
        hi[s : s + chunk] = np.where(same, 0.0, hi_c)
        lo[s : s + chunk] = np.where(same, 0.0, np.maximum(lo_c, 0.0))
    return lo, hi


def pair_cost_bounds(
    problem: TransportProblem, rows: np.ndarray, cols: np.ndarray, chunk: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`direct_cost_bounds` for the pairs ``(x[rows_k], y[cols_k])`` of a problem,
    gathered by chunks (memory ``O(chunk * d)``)."""
    lo, hi = np.empty(len(rows)), np.empty(len(rows))
    for s in range(0, len(rows), chunk):
        r, c = rows[s : s + chunk], cols[s : s + chunk]
        lo[s : s + chunk], hi[s : s + chunk] = direct_cost_bounds(problem.x[r], problem.y[c])
    return lo, hi


class PairwiseCost:
    """Certified Euclidean costs of a :class:`TransportProblem` (scaled units).

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
        self.center = torch.cat([x64, y64]).mean(0)
        self.x, self.y = x64 - self.center, y64 - self.center  # x' = fl(x - c)
        self.n, self.m = len(self.x), len(self.y)
        dim = self.x.shape[1]
        self._x_sq, self._y_sq = (self.x * self.x).sum(1), (self.y * self.y).sum(1)
        self._kappa = float(up(2.0 * gamma(dim + 2) + 16 * UNIT))
        self._x_norm, self._y_norm = self._x_sq.sqrt(), self._y_sq.sqrt()
        self._sigma = 2.0 * UNIT
        self._floor = (3 * dim + 8) * _ETA  # products that underflow err absolutely
        # pairs closer than 1% of the radius scale: the expansion's margin would exceed
        # ~1e-10 of their cost, so they are recomputed by direct differences
        self._close = 1e-4
        self.exact_close_pairs = exact_close_pairs
        self.chunk_rows = max(1, chunk_bytes // (8 * max(self.m, 1)))
        self._dense = None
        if self.n * self.m * 8 <= dense_bytes:
            self._dense = torch.cat([c for _, c in self._compute_chunks()])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def _compute_chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, self.n, self.chunk_rows):
            stop = start + self.chunk_rows
            xc, xsq = self.x[start:stop], self._x_sq[start:stop, None]
            total = xsq + self._y_sq
            sq = total - 2.0 * (xc @ self.y.T)
            close = sq < self._close * total  # the expansion is loose: recompute exactly
            sq.sub_(self._kappa * total).sub_(self._floor).clamp_min_(0).sqrt_()
            sq.sub_(self._sigma * (self._x_norm[start:stop, None] + self._y_norm)).clamp_min_(0)
            if self.exact_close_pairs and bool(close.any()):
                r, c = torch.nonzero(close, as_tuple=True)
                lo, _ = self.pair_bounds(r.cpu().numpy() + start, c.cpu().numpy())
                sq[r, c] = torch.as_tensor(lo, dtype=sq.dtype, device=sq.device)
            yield start, sq

    def dense_matrix(self) -> np.ndarray:
        """The ``n x m`` lower bounds as a NumPy array (only when held densely)."""
        if self._dense is None:
            raise ValueError("the cost matrix is not held densely (n * m too large)")
        return self._dense.cpu().numpy()

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first_row, lower bounds on cost[first_row : first_row + rows])``."""
        if self._dense is not None:
            for start in range(0, self.n, self.chunk_rows):
                yield start, self._dense[start : start + self.chunk_rows]
        else:
            yield from self._compute_chunks()

    def pair_bounds(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)``: certified bounds on ``c_ij`` for the given pairs (direct differences)."""
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        return pair_cost_bounds(self.problem, rows, cols)

    def pair_costs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Certified upper bounds on ``c_ij`` for the given pairs."""
        return self.pair_bounds(rows, cols)[1]
