"""Euclidean costs in float64, served by chunks of rows, with certified rounding bounds."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["PairwiseCost"]


class PairwiseCost:
    """Euclidean costs between two clouds (float64), served by chunks of rows.

    Built from the original points, it centres them once (a shift changes no
    distance) and then serves:

    * :meth:`chunks`: **certified lower bounds** on the costs, ``c_ij - O(1e-13) c``:
      the fast ``|x|^2 + |y|^2 - 2 x.y`` expansion minus a proven bound on its float64
      rounding (summation error ``<= gamma_{d+4} (|x|^2 + |y|^2)``) and on the
      rounding of the centring. Dual potentials made feasible against these are
      feasible against the true costs.
    * :meth:`pair_costs`: **certified upper bounds** on the costs of given pairs,
      computed directly from differences, for the cost of a transport plan.

    Holds the dense ``n x m`` matrix when it takes at most ``dense_bytes``; otherwise
    recomputes each chunk of rows on the fly (memory ``O(chunk_bytes)``).
    """

    def __init__(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        *,
        device: torch.device | str | None = None,
        dense_bytes: int = 512 * 2**20,
        chunk_bytes: int = 64 * 2**20,
    ) -> None:
        x64 = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
        y64 = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y)
        x64 = x64.to(device=device or x64.device, dtype=torch.float64)
        y64 = y64.to(device=x64.device, dtype=torch.float64)
        center = torch.cat([x64, y64]).mean(0)
        self.x, self.y = x64 - center, y64 - center
        self.n, self.m = len(self.x), len(self.y)
        dim = self.x.shape[1]
        unit = 2.0**-53
        self._x_sq, self._y_sq = (self.x * self.x).sum(1), (self.y * self.y).sum(1)
        # |fl(s) - s| <= gamma_{d+4} (|x|^2 + |y|^2) for s = |x|^2 + |y|^2 - 2 x.y
        self._kappa = 2.0 * (dim + 4) * unit / (1.0 - (dim + 4) * unit)
        # centring rounds each coordinate: distances move by at most 2u (|x'| + |y'|)
        self._x_norm, self._y_norm = self._x_sq.sqrt(), self._y_sq.sqrt()
        self._shift = 4.0 * unit
        self.chunk_rows = max(1, chunk_bytes // (8 * self.m))
        self._dense = None
        if self.n * self.m * 8 <= dense_bytes:
            self._dense = torch.cat([c for _, c in self._compute_chunks()])

    def _compute_chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, self.n, self.chunk_rows):
            stop = start + self.chunk_rows
            xc, xsq = self.x[start:stop], self._x_sq[start:stop, None]
            total = xsq + self._y_sq
            sq = total - 2.0 * (xc @ self.y.T)
            sq.sub_(self._kappa * total).clamp_min_(0).sqrt_()
            sq.sub_(self._shift * (self._x_norm[start:stop, None] + self._y_norm)).clamp_min_(0)
            yield start, sq

    def chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first_row, lower bounds on cost[first_row : first_row + rows])``."""
        if self._dense is not None:
            for start in range(0, self.n, self.chunk_rows):
                yield start, self._dense[start : start + self.chunk_rows]
        else:
            yield from self._compute_chunks()

    def pair_costs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Certified upper bounds on ``c_ij`` for the given pairs (direct differences)."""
        dev = self.x.device
        r, c = torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)
        direct = (self.x[r] - self.y[c]).norm(dim=1)
        dim = self.x.shape[1]
        margin = (dim + 3) * 2.0**-52 * direct + self._shift * (self._x_norm[r] + self._y_norm[c])
        return (direct + margin).cpu().numpy()
