r"""A certified bracket in a few linear passes over the points: the budget's last resort.

When a time budget leaves no room for a solver, W1 is still bracketed, from two
certificates that cost ``O((n + m) d)`` (no sort, no pass over pairs):

* **upper: the hub coupling.** Everything moves through one point :math:`z`:

  .. math:: W_1(a, b) \le \sum_i a_i |x_i - z| + \sum_j b_j |y_j - z| ,

  the triangle inequality for the Kantorovich--Rubinstein norm of
  :math:`a - b = (a - \delta_z) + (\delta_z - b)` (the certificate of
  :func:`~wassnet.ot.plans.plan_bound` for the empty plan, which charges every mass
  to the hub). ``z`` is the centre of the pooled points.
* **lower: a linear critic.** For a direction :math:`e`,
  :math:`f(x) = \langle x, e\rangle / |e|_*` is 1-Lipschitz for the metric's norm
  (:math:`|e|_*` its dual norm), so :math:`W_1 \ge |\sum_i a_i f(x_i) - \sum_j b_j
  f(y_j)|`; ``e`` is the difference of the weighted means (the best linear critic in
  l2).

Every term is rounded outward: certified costs to the hub
(:func:`~wassnet.ot.costs.direct_cost_bounds`), certified marginals
(:meth:`~wassnet.ot.problem.Marginal.bounds`), rounded projections with their error
bounds charged as in :mod:`~wassnet.ot.projections`, products one step outward
(:func:`~wassnet.rounding.up`, valid in the subnormal range too), and sums by one
float64 sum (any order) widened by :func:`~wassnet.rounding.nonneg_sum_factor`
(``fl(s) / f <= s <= f fl(s)`` for ``k`` nonnegative terms), signed terms summed as
their positive and negative parts. The widening is about ``k`` units of roundoff
relative (``4e-9`` at ``k = 4e7``): negligible beside the bracket's width.
"""

from __future__ import annotations

import numpy as np

from wassnet.ot.costs import _sum_factors, direct_cost_bounds
from wassnet.ot.metrics import dual_norm_upper
from wassnet.ot.problem import Marginal, TransportProblem
from wassnet.rounding import UNIT, down, gamma, nonneg_sum_factor, up

__all__ = ["QuickBracket", "hub_upper_bound", "linear_lower_bound", "quick_bracket"]


#: Rows per chunk of the whole-array passes (temporaries stay in cache).
_CHUNK = 1 << 16


def _nonneg_sum(values: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` enclosing the exact sum of nonnegative finite ``values``."""
    if len(values) == 0:
        return 0.0, 0.0
    f = nonneg_sum_factor(len(values))
    s = float(np.sum(values))
    if not np.isfinite(s):
        return 0.0, float("inf")
    return max(float(down(down(s) / f)), 0.0), float(up(s * f))


def _signed_sum(lower_terms: np.ndarray, upper_terms: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` with ``lo <= sum_k t_k <= hi`` for exact terms ``lower_terms_k <= t_k
    <= upper_terms_k`` (positive and negative parts summed apart)."""
    pos_lo, pos_hi = _nonneg_sum(np.maximum(lower_terms, 0.0))
    neg_lo, neg_hi = _nonneg_sum(np.maximum(-lower_terms, 0.0))
    if upper_terms is not lower_terms:
        _, pos_hi = _nonneg_sum(np.maximum(upper_terms, 0.0))
        neg_lo, _ = _nonneg_sum(np.maximum(-upper_terms, 0.0))
    return float(down(pos_lo - neg_hi)), float(up(pos_hi - neg_lo))


def _weighted_sum(marginal: Marginal, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
    r"""``(lo, hi)`` enclosing :math:`\sum_i a_i t_i` for exact ``t_i`` in ``[lo_i, hi_i]``."""
    if marginal.is_uniform:
        s_lo, s_hi = _signed_sum(lo, hi)
        n = float(marginal.n)  # exact: n < 2^53
        return float(down(s_lo / n)), float(up(s_hi / n))
    a_lo, a_hi = marginal.bounds()
    # the smallest and largest products over the weight's interval, one step outward
    t_lo = np.where(lo >= 0, down(a_lo * lo), down(a_hi * lo))
    t_hi = np.where(hi >= 0, up(a_hi * hi), up(a_lo * hi))
    return _signed_sum(t_lo, t_hi)


def _euclidean_hub_sum(points: np.ndarray, hub: np.ndarray) -> float:
    r"""An upper bound on :math:`\sum_i |x_i - z|_2` by whole-array float64 operations.

    With :math:`\hat s_i` the float sum of the rounded squares of the rounded
    differences, the factors of :func:`~wassnet.ot.costs.direct_cost_bounds_torch` give
    :math:`s_i \le \hat s_i f_{hi} + d\eta` for the exact :math:`s_i = |x_i - z|^2`;
    so :math:`|x_i - z| \le \sqrt{\hat s_i}\sqrt{f_{hi}} + \sqrt{d\eta}`, and the
    rounded square root :math:`r_i` satisfies :math:`\sqrt{\hat s_i} \le r_i / (1 - u)`.
    Summed: :math:`\sum_i |x_i - z| \le K f\, \mathrm{fl}(\sum_i r_i) + n\sqrt{d\eta}`
    with :math:`K = \sqrt{f_{hi}} / (1 - u)` and ``f`` the factor of a nonnegative
    float sum. Coordinates below 1 in magnitude (the problem's scale) and a hub inside
    their box keep every square finite."""
    dim = points.shape[1]
    total = 0.0  # a float sum of the n roots, in chunks (any order is covered by f)
    for start in range(0, len(points), _CHUNK):
        diff = points[start : start + _CHUNK] - hub[None, :]
        total += float(np.sqrt((diff * diff).sum(1)).sum())
    if not np.isfinite(total):
        return float("inf")
    f = nonneg_sum_factor(max(len(points), 1))
    _, f_hi = _sum_factors(dim)
    k_factor = up(up(np.sqrt(f_hi)) / down(1.0 - UNIT))
    eps = up(np.sqrt(up(dim * 2.0**-1074)))
    return float(up(up(k_factor * up(total * f)) + up(len(points) * eps)))


def _hub_sum(
    problem: TransportProblem, points: np.ndarray, marginal: Marginal, hub: np.ndarray
) -> float:
    r"""An upper bound on :math:`\sum_i a_i |x_i - z|` (the metric's norm)."""
    if marginal.is_uniform and problem.norm.is_euclidean:
        return float(up(_euclidean_hub_sum(points, hub) / float(marginal.n)))
    _, cost = direct_cost_bounds(points, hub[None, :], chunk=1 << 20, metric=problem.metric)
    return _weighted_sum(marginal, cost, cost)[1]


def _mean(points: np.ndarray, marginal: Marginal) -> np.ndarray:
    """The weighted mean of the points (nearest float64; only picks a hub or a direction)."""
    if marginal.is_uniform:
        return points.mean(0)
    return marginal.probabilities() @ points


def hub_upper_bound(problem: TransportProblem, hub: np.ndarray | None = None) -> float:
    """The certified cost of the hub coupling through ``hub`` (default: the centre of the
    pooled points), in the problem's scaled units."""
    if hub is None:
        hub = 0.5 * (_mean(problem.x, problem.a) + _mean(problem.y, problem.b))
    hub = np.clip(np.asarray(hub, dtype=np.float64).reshape(-1), -1.0, 1.0)
    hi_x = _hub_sum(problem, problem.x, problem.a, hub)
    hi_y = _hub_sum(problem, problem.y, problem.b, hub)
    return float(up(hi_x + hi_y))


def _projection_error(e: np.ndarray, dim: int) -> float:
    """A bound on ``|fl(<x, e>) - <x, e>|`` for every point of the problem: the bound of
    :func:`~wassnet.ot.projections.projection_bounds` with ``|x_k| < 1`` (the
    problem's scale puts every coordinate below 1 in magnitude)."""
    _, e_one = _nonneg_sum(np.abs(e))
    floor = 2.0 * dim * 2.0**-1074
    return float(up(up(up(e_one) * (2.0 * gamma(dim + 1))) + floor))


def _projected_mean(points: np.ndarray, marginal: Marginal, e: np.ndarray) -> tuple[float, float]:
    r"""``(lo, hi)`` enclosing :math:`\sum_i a_i \mathrm{fl}(\langle x_i, e\rangle)`."""
    if not marginal.is_uniform:
        p = points @ e
        return _weighted_sum(marginal, p, p)
    pos = neg = 0.0  # float sums of the positive and negative parts, in chunks
    for start in range(0, len(points), _CHUNK):
        p = points[start : start + _CHUNK] @ e
        pos += float(np.maximum(p, 0.0).sum())
        neg += float(np.maximum(-p, 0.0).sum())
    f = nonneg_sum_factor(max(len(points), 1))
    n = float(marginal.n)
    lo = down(down(down(pos) / f) - up(neg * f))
    hi = up(up(pos * f) - down(down(neg) / f))
    return float(down(lo / n)), float(up(hi / n))


def linear_lower_bound(problem: TransportProblem, direction: np.ndarray | None = None) -> float:
    """The certified dual value of the linear critic along ``direction`` (default: the
    difference of the weighted means), in the problem's scaled units (``>= 0``).

    The exact projections lie within one error bound ``delta`` of the rounded ones, and
    the marginals sum to 1 exactly, so each weighted mean moves by at most ``delta``."""
    if direction is None:
        direction = _mean(problem.x, problem.a) - _mean(problem.y, problem.b)
    e = np.asarray(direction, dtype=np.float64).reshape(-1)
    if not (np.all(np.isfinite(e)) and np.any(e != 0)):
        return 0.0
    e = np.ldexp(e, -int(np.frexp(np.abs(e).max())[1]))  # exact; largest in [1/2, 1)
    e = np.where(np.abs(e) < 2.0**-1000, 0.0, e)
    delta = _projection_error(e, problem.dim)
    pa_lo, pa_hi = _projected_mean(problem.x, problem.a, e)
    qb_lo, qb_hi = _projected_mean(problem.y, problem.b, e)
    spread = float(up(2.0 * delta))
    forward = float(down(down(pa_lo - qb_hi) - spread))
    backward = float(down(down(qb_lo - pa_hi) - spread))
    gap = max(forward, backward, 0.0)
    return float(down(gap / dual_norm_upper(e, problem.metric)))


class QuickBracket:
    """``lower <= W1 <= upper`` (input units) from :func:`quick_bracket`, and what each
    side is."""

    lower_method = "linear critic along the difference of the means (certified dual value)"
    upper_method = "hub coupling: every mass moved through the centre of the points"

    def __init__(self, lower: float, upper: float) -> None:
        self.lower, self.upper = lower, upper


def quick_bracket(problem: TransportProblem) -> QuickBracket:
    """The certified bracket of the module notes, in the input's units."""
    lower, upper = problem.to_input_units(linear_lower_bound(problem), hub_upper_bound(problem))
    return QuickBracket(lower, upper)
