r"""Ground costs of the transport problem: certified distances in l2, l1 and l-inf.

W1 is defined for any metric; wassnet serves three, named as in SciPy's ``cdist``
(and POT's ``ot.dist``):

==============  =========  ==================================================
metric          norm       cost :math:`c_{ij}`
==============  =========  ==================================================
``euclidean``   l2         :math:`(\sum_k (x_k - y_k)^2)^{1/2}`
``cityblock``   l1         :math:`\sum_k |x_k - y_k|`
``chebyshev``   l-inf      :math:`\max_k |x_k - y_k|`
==============  =========  ==================================================

The Kantorovich potentials of W1 under the lp cost are the functions that are
1-Lipschitz from lp to the real line, which is what
:func:`wassnet.nn.lipschitz_bound` certifies with ``p`` = :func:`metric_p`.

Certified bounds for l1 and l-inf, from the differences of the (scaled) points,
with :math:`\hat\delta_k = \mathrm{fl}(x_k - y_k) = \delta_k(1 + \epsilon_k)`,
:math:`|\epsilon_k| \le u = 2^{-53}` (a subtraction whose result is subnormal is
exact):

* l1: the computed sum :math:`\hat s` of the :math:`|\hat\delta_k|`, in **any order**
  (so also inside ``torch.cdist``'s vectorized kernel), is within
  :math:`\gamma_d` of :math:`\sum_k |\hat\delta_k|`, itself within a relative ``u``
  of the exact cost ``s``: :math:`\hat s / ((1+u)(1+\gamma_d)) \le s \le \hat s /
  ((1-u)(1-\gamma_d))`;
* l-inf: the maximum is exact, so :math:`\hat s / (1+u) \le s \le \hat s / (1-u)`.

Each factor is rounded outward and the product that applies it is rounded outward by
one step of ``nextafter`` (valid in the subnormal range too). No squares: nothing
underflows, no margin is charged for cancellation. The Euclidean bounds (squares and a
square root) are in :mod:`wassnet.ot.costs`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from wassnet.norms import LINF, METRICS, Norm, by_metric
from wassnet.rounding import UNIT, down, gamma, nonneg_sum_factor, up

__all__ = [
    "METRICS",
    "check_metric",
    "down_t",
    "dual_norm_upper",
    "lower_bound_matrix",
    "metric_cdist",
    "metric_p",
    "norm_bounds_torch",
    "ones_norm",
    "up_t",
]


def check_metric(metric: str | Norm) -> str:
    """``metric`` if it is one of :data:`METRICS`; otherwise one clear ``InputError``
    (:func:`wassnet.norms.by_metric`; a :class:`~wassnet.norms.Norm` gives its name)."""
    return by_metric(metric).metric


def metric_p(metric: str | Norm) -> float:
    """The ``p`` of the metric's norm: 2 (euclidean), 1 (cityblock), inf (chebyshev)."""
    return by_metric(metric).p


def ones_norm(metric: str | Norm, dim: int) -> float:
    """An upper bound on the norm of the all-ones vector in ``R^dim``: ``sqrt(d)``,
    ``d`` or ``1``. Points with coordinates in ``[-1, 1]`` lie within twice this of
    each other (the diameter every potential is clipped to)."""
    norm = by_metric(metric)
    if norm.is_cityblock:
        return float(dim)
    if norm.is_chebyshev:
        return 1.0
    return float(up(math.sqrt(dim)))


def _factors(norm: Norm, dim: int) -> tuple[float, float]:
    """``(f_lo, f_hi)`` with ``s_hat * f_lo <= s <= s_hat * f_hi`` for l1 and l-inf
    (before the rounding of the product, charged separately)."""
    g = gamma(max(dim, 1)) if norm.is_cityblock else 0.0
    f_hi = up(1.0 / down(down(1.0 - UNIT) * down(1.0 - g)))
    f_lo = down(1.0 / up(up(1.0 + UNIT) * up(1.0 + g)))
    return float(f_lo), float(f_hi)


def up_t(t: torch.Tensor) -> torch.Tensor:
    """The next float above every element (:func:`wassnet.rounding.up` for tensors)."""
    return torch.nextafter(t, torch.full_like(t, torch.inf))


def down_t(t: torch.Tensor) -> torch.Tensor:
    """The next float below every element (:func:`wassnet.rounding.down` for tensors)."""
    return torch.nextafter(t, torch.full_like(t, -torch.inf))


def norm_bounds_torch(diff: torch.Tensor, metric: str | Norm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` enclosing the l1 or l-inf norm of each row of the exact differences
    whose float64 roundings are ``diff`` (``[k, d]``; see the module notes)."""
    norm = by_metric(metric)
    mags = diff.abs()
    s_hat = mags.sum(1) if norm.is_cityblock else mags.amax(1)
    f_lo, f_hi = _factors(norm, diff.shape[1])
    hi = torch.where(s_hat == 0, s_hat, up_t(s_hat * f_hi))  # fl(x - y) = 0 iff x == y
    lo = down_t(s_hat * f_lo).clamp_min(0)
    if norm.is_cityblock and bool(torch.isinf(s_hat).any()):
        # the float sum overflowed (the exact one may not have): |.|_1 >= |.|_inf instead
        lo = torch.where(torch.isinf(s_hat), norm_bounds_torch(diff, LINF)[0], lo)
    return lo, hi


def _explicit_lower(x: torch.Tensor, y: torch.Tensor, metric: Norm) -> torch.Tensor:
    """:func:`lower_bound_matrix` from differences this module computes itself."""
    step = max(1, 2**22 // max(1, len(y) * x.shape[1]))
    parts = []
    for s in range(0, len(x), step):
        diff = (x[s : s + step, None, :] - y[None, :, :]).flatten(0, 1)
        parts.append(norm_bounds_torch(diff, metric)[0].view(-1, len(y)))
    return torch.cat(parts) if parts else torch.empty((0, len(y)), dtype=x.dtype, device=x.device)


_CDIST_CHECKED: dict[tuple[str, str], bool] = {}  # (metric name, device type)


def _cdist_is_faithful(metric: Norm, device: torch.device) -> bool:
    """Whether ``torch.cdist`` here behaves as the margin assumes, checked once per metric
    and device type on points built to expose another formula (wide magnitudes, nearly
    equal points, zeros) against this module's own upper bounds. A smoke test against a
    different kernel (say, an expansion with cancellation), not the proof: the proof
    rests on the kernel summing ``|x_k - y_k|`` (or taking their maximum), which is
    what PyTorch's CPU and CUDA kernels do."""
    key = (metric.metric, device.type)
    if key not in _CDIST_CHECKED:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(48, 37, generator=g, dtype=torch.float64)
        x[:, :5] *= 1e8
        y = torch.cat(
            [
                x[:16] + 1e-9 * torch.randn(16, 37, generator=g, dtype=torch.float64),
                torch.zeros(1, 37, dtype=torch.float64),
                x[16:40],
            ]
        )
        x, y = x.to(device), y.to(device)
        f_lo, _ = _factors(metric, x.shape[1])
        fast = down_t(torch.cdist(x, y, p=metric.p).mul_(f_lo)).clamp_min_(0)
        diff = (x[:, None, :] - y[None, :, :]).flatten(0, 1)
        _, hi = norm_bounds_torch(diff, metric)
        _CDIST_CHECKED[key] = bool((fast.reshape(-1) <= hi).all())
    return _CDIST_CHECKED[key]


def lower_bound_matrix(x: torch.Tensor, y: torch.Tensor, metric: str | Norm) -> torch.Tensor:
    """Certified lower bounds on all ``len(x) x len(y)`` l1 or l-inf costs of two float64
    tensors, by ``torch.cdist`` (which sums ``|x_k - y_k|`` in some order, or takes
    their maximum: the margin holds for any order; checked once per device, with
    this module's own differences as the fallback, about 5x slower)."""
    norm = by_metric(metric)
    if not _cdist_is_faithful(norm, x.device):
        return _explicit_lower(x, y, norm)
    f_lo, _ = _factors(norm, x.shape[1])
    c = torch.cdist(x, y, p=norm.p)
    overflowed = torch.isinf(c) if norm.is_cityblock else None
    lower = down_t(c.mul_(f_lo)).clamp_min_(0)
    if overflowed is not None and bool(overflowed.any()):  # |.|_1 >= |.|_inf instead
        lower = torch.where(overflowed, lower_bound_matrix(x, y, LINF), lower)
    return lower


def metric_cdist(x: torch.Tensor, y: torch.Tensor, metric: str | Norm) -> torch.Tensor:
    """All pairwise costs to float accuracy (heuristics: warm starts, critics; not
    certified). Euclidean distances from differences, never the expansion."""
    norm = by_metric(metric)
    if norm.is_euclidean:
        return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.cdist(x, y, p=norm.p)


def dual_norm_upper(e: np.ndarray, metric: str | Norm) -> float:
    r"""An upper bound on the dual norm of ``e`` (so that :math:`|\langle e, \delta\rangle|
    \le` this times the metric's norm of :math:`\delta`): l2 for euclidean, l-inf for
    cityblock (exact), l1 for chebyshev. ``e`` must be scaled so that its largest
    component lies in ``[1/2, 1)`` (no squares under- or overflow)."""
    norm = by_metric(metric)
    e = np.abs(np.asarray(e, dtype=np.float64))
    if norm.is_cityblock:
        return float(e.max())
    if norm.is_chebyshev:
        return float(up(float(e.sum()) * nonneg_sum_factor(len(e))))
    norm_sq = float(np.dot(e, e))
    return float(up(np.sqrt(up(norm_sq * (1.0 + 2.0 * gamma(len(e) + 1))))))
