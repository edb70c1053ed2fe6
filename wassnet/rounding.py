r"""Directed rounding for certified float64 arithmetic (NumPy, round-to-nearest hardware).

IEEE 754 arithmetic rounds every basic operation (``+ - * /`` and ``sqrt``) to the
nearest float, so the exact result lies within half a unit in the last place of the
computed one, *including* in the subnormal range (gradual underflow) and on overflow
to ``inf``. One step of :func:`numpy.nextafter` away from the computed value therefore
lands on the other side of the exact result:

.. math::
    \mathrm{down}(\mathrm{fl}(a \circ b)) \le a \circ b \le \mathrm{up}(\mathrm{fl}(a \circ b)).

Every certified number in wassnet is built from this fact, from correctly rounded
sums (:func:`math.fsum`, Shewchuk's exact summation, rounded once) and from explicit
error bounds where a vectorized kernel sums many terms (see the functions' notes).
Monotone reductions need only one step: ``up(max_i fl(t_i)) >= t_i`` for every
``i``, because ``up`` is nondecreasing.
"""

from __future__ import annotations

import math

import numpy as np

from wassnet.errors import InputError

__all__ = [
    "UNIT",
    "div_bounds",
    "dot_bounds",
    "down",
    "gamma",
    "nonneg_sum_factor",
    "product_down",
    "product_up",
    "sum_down",
    "sum_up",
    "two_product",
    "up",
]

#: float64 unit roundoff (half an ulp of 1).
UNIT = 2.0**-53
_INF = np.inf


def up(x: np.ndarray | float) -> np.ndarray | float:
    """The next float above ``x``: an upper bound of any exact value ``x`` rounds to."""
    return np.nextafter(x, _INF)


def down(x: np.ndarray | float) -> np.ndarray | float:
    """The next float below ``x``: a lower bound of any exact value ``x`` rounds to."""
    return np.nextafter(x, -_INF)


def gamma(k: int) -> float:
    r""":math:`\gamma_k = k u / (1 - k u)`, Higham's bound on ``k`` chained roundings,
    rounded up (valid for ``k u < 1/2``)."""
    ku = k * UNIT
    if not ku < 0.5:
        raise InputError(f"gamma({k}) is not defined (k u >= 1/2)")
    return float(up(up(ku) / down(1.0 - ku)))


def nonneg_sum_factor(k: int) -> float:
    r"""A factor ``f`` with ``s <= f * fl(s)`` and ``fl(s) <= f * s`` for any float sum
    ``fl(s)`` of ``k`` nonnegative terms computed in any order (pairwise, blocked or
    sequential): ``|fl(s) - s| <= gamma_{k-1} s``, so ``f = 1 / (1 - gamma_{k-1})``,
    rounded up (plus one ``u`` for the multiplication that applies it)."""
    g = gamma(max(k - 1, 1))
    return float(up(up(1.0 / down(1.0 - g)) + 2 * UNIT))


def _exact_sum(values: np.ndarray) -> tuple[float, int]:
    """The correctly rounded sum and the sign of its rounding error (``-1, 0, 1``:
    the exact sum is below, equal to, above the result). ``math.fsum`` is exact before
    its one rounding, so ``fsum(values - s)`` has the sign of ``exact - s``."""
    items = np.asarray(values, dtype=np.float64).ravel().tolist()
    s = math.fsum(items)
    if not math.isfinite(s):
        return s, 0
    items.append(-s)
    residual = math.fsum(items)
    return s, (residual > 0) - (residual < 0)


def sum_up(values: np.ndarray) -> float:
    """An upper bound on the exact sum of ``values`` (the sum itself when exact)."""
    s, sign = _exact_sum(values)
    return float(up(s)) if sign > 0 else s


def sum_down(values: np.ndarray) -> float:
    """A lower bound on the exact sum of ``values`` (the sum itself when exact)."""
    s, sign = _exact_sum(values)
    return float(down(s)) if sign < 0 else s


_SPLIT = 134217729.0  # 2^27 + 1, Veltkamp's splitting constant
_SAFE = 2.0**-969  # below this a product's error term may be inexact (underflow)
_BIG = 2.0**995  # above this the splitting may overflow


def two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dekker's error-free product: ``p = fl(a b)`` and ``e`` with ``p + e == a b``
    exactly where ``valid`` (no underflow or overflow in the splitting)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    p = a * b
    with np.errstate(over="ignore", invalid="ignore"):
        ca, cb = _SPLIT * a, _SPLIT * b
        ah = ca - (ca - a)
        al = a - ah
        bh = cb - (cb - b)
        bl = b - bh
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    valid = (
        ((np.abs(p) >= _SAFE) | (p == 0) & ((a == 0) | (b == 0)))
        & (np.abs(a) < _BIG)
        & (np.abs(b) < _BIG)
        & np.isfinite(e)
    )
    return p, np.where(valid, e, 0.0), valid


def product_down(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise lower bounds on ``a b``: the rounded product when exact or rounded
    down already, one step down otherwise."""
    p, e, valid = two_product(a, b)
    return np.where(valid & (e >= 0), p, down(p))


def product_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise upper bounds on ``a b`` (see :func:`product_down`)."""
    p, e, valid = two_product(a, b)
    return np.where(valid & (e <= 0), p, up(p))


def dot_bounds(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    r"""``(lo, hi)`` with ``lo <= sum_i a_i b_i <= hi`` exactly (float64 inputs).

    Each product is bracketed by directed rounding (error-free where possible), and the
    brackets are summed exactly (:func:`math.fsum`) and rounded outward once. The width
    is at most about two ulps of :math:`\sum |a_i b_i|`, and zero for exact sums.
    """
    return sum_down(product_down(a, b)), sum_up(product_up(a, b))


def div_bounds(num: tuple[float, float], den: tuple[float, float]) -> tuple[float, float]:
    """``(lo, hi)`` enclosing ``x / y`` for every ``x`` in ``num`` and ``y`` in ``den``;
    ``den`` must be positive."""
    n_lo, n_hi = num
    d_lo, d_hi = den
    if not d_lo > 0:
        raise InputError("div_bounds needs a positive denominator interval")
    lo = down(n_lo / (d_hi if n_lo >= 0 else d_lo))
    hi = up(n_hi / (d_lo if n_hi >= 0 else d_hi))
    return float(lo), float(hi)
