r"""The transport problem exactly as given: points, exact marginals, a safe scale.

Certified numbers are statements about the **input as given**: float64 points
:math:`x_i, y_j` (exact dyadic rationals) and the marginals
:math:`a_i = w_i / \sum_k w_k`, :math:`b_j = w'_j / \sum_k w'_k` of the given weights,
as exact rationals (uniform weights: :math:`a_i = 1/n` exactly). Nothing here rounds
the problem itself:

* **Scale.** Both clouds are multiplied by one power of two, chosen so that the largest
  coordinate lies in ``[1/2, 1)``: squares of differences can then neither overflow nor
  lose relative accuracy to underflow (squares that still underflow are charged). A
  power of two is exact unless a coordinate falls into the subnormal range; then the
  scaled points move by at most ``2^-1075`` per coordinate, and every bound is widened
  by that displacement (``perturbation``): moving each point by at most ``delta``
  changes W1 by at most ``delta``. W1 scales by the same power of two, exactly.
* **Weights.** Kept as given (scaled by a power of two, exactly) with a proven
  interval around their exact sum; :class:`Marginal` turns them into certified
  intervals for the probabilities and for weighted sums.

Inputs that cannot be represented faithfully are refused with one line
(:class:`~wassnet.errors.InputError`): a W1 beyond the float64 range (reported when a
bound is converted back to the input's units), weights spanning more than about
``2^1000`` (a power-of-two scale would lose bits).
Integer and extended-precision inputs are checked when loaded
(:func:`wassnet.w1.io.validate_points`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wassnet.errors import InputError
from wassnet.norms import Norm, by_metric
from wassnet.ot.metrics import ones_norm
from wassnet.rounding import div_bounds, dot_bounds, down, sum_down, sum_up, up

__all__ = ["Marginal", "TransportProblem", "power_of_two_exponent", "scale_exactly"]


def power_of_two_exponent(max_abs: float) -> int:
    """``e`` such that ``max_abs * 2^-e`` lies in ``[1/2, 1)`` (``0`` for ``max_abs == 0``)."""
    if max_abs == 0 or not math.isfinite(max_abs):
        return 0
    return math.frexp(max_abs)[1]


def scale_exactly(
    values: np.ndarray, exponent: int, what: str, refuse: bool = True
) -> tuple[np.ndarray, bool]:
    """``values * 2^-exponent`` as a float64 array (``values`` itself, not a copy, when
    the exponent is 0), and whether it is exact; an inexact scale is refused
    (``InputError``) unless ``refuse`` is False."""
    v = np.asarray(values, dtype=np.float64)
    if exponent == 0:  # nothing to scale (no copy of a large cloud)
        return v, True
    scaled = np.ldexp(v, -exponent)
    exact = exponent <= 0 or np.array_equal(np.ldexp(scaled, exponent), v)
    if refuse and not exact:
        nonzero = np.abs(v[v != 0])
        raise InputError(
            f"{what}: magnitudes span too wide a range to compute with exactly in float64 "
            f"(largest {float(np.abs(v).max()):.3g}, smallest nonzero {float(nonzero.min()):.3g}); "
            "rescale the data or round the tiny values to zero"
        )
    return scaled, exact


@dataclass(frozen=True)
class Marginal:
    r"""The exact probability vector :math:`a_i = w_i / \sum_k w_k` of one cloud.

    ``weights`` holds the given weights times a power of two (exact), or is ``None``
    for uniform weights (then :math:`a_i = 1/n` and the sum is ``n`` exactly).
    ``total`` brackets the exact sum of ``weights``.
    """

    n: int
    weights: np.ndarray | None
    total: tuple[float, float]

    @classmethod
    def uniform(cls, n: int) -> Marginal:
        return cls(n, None, (float(n), float(n)))

    @classmethod
    def from_weights(cls, w: np.ndarray, what: str) -> Marginal:
        """Exact marginals of nonnegative finite float64 weights with a positive sum."""
        w = np.asarray(w, dtype=np.float64)
        scaled, _ = scale_exactly(w, power_of_two_exponent(float(w.max())), what)
        if np.all(scaled == scaled[0]):
            return cls.uniform(len(w))
        return cls(len(w), scaled, (sum_down(scaled), sum_up(scaled)))

    @property
    def is_uniform(self) -> bool:
        return self.weights is None

    def probabilities(self) -> np.ndarray:
        """The nearest float64 probability vector (for solvers; not certified)."""
        if self.weights is None:
            return np.full(self.n, 1.0 / self.n)
        return self.weights / (0.5 * (self.total[0] + self.total[1]))

    def bounds(self, index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` arrays enclosing the exact :math:`a_i` (all ``i``, or ``index``)."""
        count = self.n if index is None else len(index)
        if self.weights is None:
            q = 1.0 / self.n
            return np.full(count, down(q)), np.full(count, up(q))
        w = self.weights if index is None else self.weights[index]
        lo_t, hi_t = self.total
        return np.maximum(down(w / hi_t), 0.0), up(w / lo_t)

    def weighted_sum(self, values: np.ndarray) -> tuple[float, float]:
        r"""``(lo, hi)`` enclosing :math:`\sum_i a_i \,\mathrm{values}_i` exactly."""
        values = np.asarray(values, dtype=np.float64)
        if self.weights is None:
            num = (sum_down(values), sum_up(values))
        else:
            num = dot_bounds(self.weights, values)
        return div_bounds(num, self.total)


@dataclass(frozen=True)
class TransportProblem:
    r"""Two weighted clouds, scaled exactly by ``2^-exponent`` for certified arithmetic.

    ``x`` ``[n, d]`` and ``y`` ``[m, d]`` are the scaled points (``d >= 1``; points on
    the line have ``d == 1``), ``a`` and ``b`` the exact marginals, ``metric`` the
    ground cost (:mod:`wassnet.ot.metrics`: ``euclidean``, ``cityblock`` or
    ``chebyshev``; every metric is a norm, so the scale is exact for all). A bound ``t`` on
    W1 of the scaled problem is a bound ``t * 2^exponent`` on the given one, widened
    by ``perturbation`` (scaled units; nonzero only when the scale rounded subnormal
    coordinates) (:meth:`to_input_units`).
    """

    x: np.ndarray
    y: np.ndarray
    a: Marginal
    b: Marginal
    exponent: int
    perturbation: float = 0.0
    metric: str = "euclidean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", by_metric(self.metric).metric)

    @property
    def norm(self) -> Norm:
        """The resolved ground cost (:class:`wassnet.norms.Norm`)."""
        return by_metric(self.metric)

    @classmethod
    def build(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        wa: np.ndarray | None = None,
        wb: np.ndarray | None = None,
        metric: str | Norm = "euclidean",
    ) -> TransportProblem:
        """From validated float64 clouds (``[n]`` or ``[n, d]``), optional weights and
        the ground cost.

        Raises:
            InputError: weights spanning too wide a range to be scaled exactly; an
                unknown metric.
        """
        metric = by_metric(metric).metric
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        x = x.reshape(len(x), -1)
        y = y.reshape(len(y), -1)
        max_abs = max(float(-x.min()), float(x.max()), float(-y.min()), float(y.max()))
        exponent = power_of_two_exponent(max_abs)
        xs, exact_x = scale_exactly(x, exponent, "points", refuse=False)
        ys, exact_y = scale_exactly(y, exponent, "points", refuse=False)
        # rounded subnormal coordinates moved by at most 2^-1075 each
        reach = ones_norm(metric, x.shape[1])
        moved = 0.0 if exact_x and exact_y else float(up(reach * 2.0**-1074))
        a = Marginal.uniform(len(x)) if wa is None else Marginal.from_weights(wa, "weights A")
        b = Marginal.uniform(len(y)) if wb is None else Marginal.from_weights(wb, "weights B")
        return cls(xs, ys, a, b, exponent, moved, metric)

    def transposed(self) -> TransportProblem:
        """The same problem with the roles of the two clouds swapped."""
        return TransportProblem(
            self.y, self.x, self.b, self.a, self.exponent, self.perturbation, self.metric
        )

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def m(self) -> int:
        return len(self.y)

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    @property
    def uniform_square(self) -> bool:
        """Uniform weights and ``n == m``: an assignment problem."""
        return self.n == self.m and self.a.is_uniform and self.b.is_uniform

    def to_input_units(self, lower: float, upper: float) -> tuple[float, float]:
        """A bracket of the scaled problem as a bracket of the given one (exact unless
        the result is subnormal, then rounded outward; widened by ``perturbation``)."""
        if self.perturbation:
            lower = float(down(lower - self.perturbation))
            upper = float(up(upper + self.perturbation))
        with np.errstate(over="ignore"):
            lo = float(np.ldexp(lower, self.exponent))
            hi = float(np.ldexp(upper, self.exponent))
        if math.isinf(hi) or math.isinf(lo):
            raise InputError(
                "W1 or its certified upper bound exceeds the float64 range (about 1.8e308) "
                "for these inputs; rescale the data"
            )
        if math.ldexp(lo, -self.exponent) != lower:
            lo = float(down(lo))
        if math.ldexp(hi, -self.exponent) != upper:
            hi = float(up(hi))
        return max(lo, 0.0), hi

    def potentials_in_input_units(
        self, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A feasible pair of the scaled problem (``u_i - v_j <= c_ij``) as a feasible
        pair of the given one: times ``2^exponent``, ``u`` rounded down and ``v`` up
        where that is inexact (subnormal results), so feasibility holds exactly;
        ``None`` when they overflow float64. A nonzero ``perturbation`` (the scale moved
        subnormal coordinates, so each scaled cost is within it of the given one) is
        added to ``v`` first, rounded up."""
        if self.perturbation:
            v = up(np.asarray(v, dtype=np.float64) + self.perturbation)
        with np.errstate(over="ignore"):
            u_in, v_in = np.ldexp(u, self.exponent), np.ldexp(v, self.exponent)
        if not (np.all(np.isfinite(u_in)) and np.all(np.isfinite(v_in))):
            return None
        u_in = np.where(np.ldexp(u_in, -self.exponent) == u, u_in, down(u_in))
        v_in = np.where(np.ldexp(v_in, -self.exponent) == v, v_in, up(v_in))
        return u_in, v_in
