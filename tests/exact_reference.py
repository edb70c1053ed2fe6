"""Exact references in rational arithmetic, independent of wassnet's code (and of POT).

Float64 inputs are exact dyadic rationals, so a transport problem's marginals are exact
``Fraction`` s. Euclidean costs are square roots, irrational in general: each is
enclosed in ``[lo, hi]`` with rational endpoints ``2^-BITS`` apart (integer square
roots). The optimal value is monotone in the costs, so the exact W1 lies in
``[LP(lo), LP(hi)]``, each computed exactly by the transportation simplex in
``Fraction`` s (Bland's rule: it terminates on degenerate problems). Cityblock (l1) and
chebyshev (l-inf) costs of rationals are rationals: their enclosures are exact.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from math import isqrt

import numpy as np

BITS = 160


def fraction_array(values) -> list[Fraction]:
    return [Fraction(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]


def marginal(weights, n: int) -> list[Fraction]:
    """Exact probabilities ``w / sum(w)`` (uniform when ``weights`` is None)."""
    if weights is None:
        return [Fraction(1, n)] * n
    w = fraction_array(weights)
    total = sum(w)
    return [v / total for v in w]


def sqrt_enclosure(q: Fraction, bits: int = BITS) -> tuple[Fraction, Fraction]:
    """Rationals ``lo <= sqrt(q) <= hi`` with ``hi - lo <= 2^-bits / den``."""
    if q == 0:
        return Fraction(0), Fraction(0)
    num, den = q.numerator, q.denominator
    scaled = num * den * 4**bits
    r = isqrt(scaled)
    scale = den * 2**bits
    if r * r == scaled:
        return Fraction(r, scale), Fraction(r, scale)
    return Fraction(r, scale), Fraction(r + 1, scale)


def exact_cost(xi: list[Fraction], yj: list[Fraction], metric: str) -> tuple[Fraction, Fraction]:
    """An enclosure of one cost: exact for cityblock and chebyshev."""
    diffs = [abs(p - q) for p, q in zip(xi, yj, strict=True)]
    if metric == "cityblock":
        return sum(diffs, Fraction(0)), sum(diffs, Fraction(0))
    if metric == "chebyshev":
        return max(diffs), max(diffs)
    assert metric == "euclidean", metric
    return sqrt_enclosure(sum(d * d for d in diffs))


def cost_enclosures(
    x, y, metric: str = "euclidean"
) -> tuple[list[list[Fraction]], list[list[Fraction]]]:
    """Exact enclosures of all costs between two float64 clouds ``[n, d]``."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    fx = [[Fraction(float(v)) for v in row] for row in x]
    fy = [[Fraction(float(v)) for v in row] for row in y]
    lo, hi = [], []
    for xi in fx:
        row_lo, row_hi = [], []
        for yj in fy:
            a, b = exact_cost(xi, yj, metric)
            row_lo.append(a)
            row_hi.append(b)
        lo.append(row_lo)
        hi.append(row_hi)
    return lo, hi


def _northwest(a: list[Fraction], b: list[Fraction]) -> dict[tuple[int, int], Fraction]:
    """A basic feasible solution with exactly n + m - 1 basic cells (a spanning tree)."""
    n, m = len(a), len(b)
    ra, rb = list(a), list(b)
    basis: dict[tuple[int, int], Fraction] = {}
    i = j = 0
    while i < n and j < m:
        t = min(ra[i], rb[j])
        basis[(i, j)] = t
        ra[i] -= t
        rb[j] -= t
        if i == n - 1 and j == m - 1:
            break
        if ra[i] == 0 and i < n - 1:
            i += 1
        else:
            j += 1
    return basis


def _tree_path(basis, n: int, start_row: int, end_col: int) -> list[tuple[int, int]]:
    """Cells of the basis tree on the path from row ``start_row`` to column ``end_col``."""
    adj: dict[tuple[str, int], list[tuple[tuple[str, int], tuple[int, int]]]] = {}
    for i, j in basis:
        adj.setdefault(("r", i), []).append((("c", j), (i, j)))
        adj.setdefault(("c", j), []).append((("r", i), (i, j)))
    start, goal = ("r", start_row), ("c", end_col)
    prev: dict = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for nxt, cell in adj.get(node, []):
            if nxt not in prev:
                prev[nxt] = (node, cell)
                queue.append(nxt)
    path = []
    node = goal
    while prev[node] is not None:
        node, cell = prev[node]
        path.append(cell)
    return path[::-1]


def transport_lp(cost: list[list[Fraction]], a: list[Fraction], b: list[Fraction]) -> Fraction:
    """The exact optimal value ``min <P, C>`` over couplings of ``a`` and ``b``."""
    n, m = len(a), len(b)
    basis = _northwest(a, b)
    while True:
        u: dict[int, Fraction] = {0: Fraction(0)}
        v: dict[int, Fraction] = {}
        changed = True
        while changed:
            changed = False
            for i, j in basis:
                if i in u and j not in v:
                    v[j] = cost[i][j] - u[i]
                    changed = True
                elif j in v and i not in u:
                    u[i] = cost[i][j] - v[j]
                    changed = True
        entering = None
        for i in range(n):
            for j in range(m):
                if (i, j) not in basis and cost[i][j] - u[i] - v[j] < 0:
                    entering = (i, j)
                    break
            if entering:
                break
        if entering is None:
            return sum(cost[i][j] * x for (i, j), x in basis.items())
        path = _tree_path(basis, n, entering[0], entering[1])
        # the cycle: entering (+), then the path's cells alternate -, +, -, ...
        minus = path[0::2]
        theta = min(basis[c] for c in minus)
        leaving = min((c for c in minus if basis[c] == theta), key=lambda c: c[0] * m + c[1])
        for k, c in enumerate(path):
            basis[c] += -theta if k % 2 == 0 else theta
        basis[entering] = theta
        del basis[leaving]


def w1_enclosure(x, y, wa=None, wb=None, metric: str = "euclidean") -> tuple[Fraction, Fraction]:
    """Rationals ``lo <= W1 <= hi`` for float64 clouds (exact marginals), ``hi - lo`` tiny
    (``0`` for cityblock and chebyshev)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    a, b = marginal(wa, len(x)), marginal(wb, len(y))
    lo, hi = cost_enclosures(x, y, metric)
    if hi == lo:
        value = transport_lp(lo, a, b)
        return value, value
    return transport_lp(lo, a, b), transport_lp(hi, a, b)


def w1_line_exact(x, y, wa=None, wb=None) -> Fraction:
    """Exact W1 on the line: the integral of |F_a - F_b| in rationals."""
    xs, ys = fraction_array(x), fraction_array(y)
    a, b = marginal(wa, len(xs)), marginal(wb, len(ys))
    events = sorted(
        [(p, w) for p, w in zip(xs, a, strict=True)] + [(q, -w) for q, w in zip(ys, b, strict=True)]
    )
    total, cdf = Fraction(0), Fraction(0)
    for k in range(len(events) - 1):
        cdf += events[k][1]
        total += abs(cdf) * (events[k + 1][0] - events[k][0])
    return total


def hub_upper_bound(x, y, wa, wb, pairs, masses, hub) -> Fraction:
    """An exact upper bound on W1 from any nonnegative plan (rational masses), charging
    the marginal residuals at the distance to ``hub`` (the lemma of wassnet.ot.plans,
    re-derived here in exact arithmetic)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    a, b = marginal(wa, len(x)), marginal(wb, len(y))
    r = [Fraction(0)] * len(x)
    s = [Fraction(0)] * len(y)
    total = Fraction(0)
    hub = np.asarray(hub, dtype=np.float64)[None, :]
    _, to_hub_a = cost_enclosures(x, hub)
    _, to_hub_b = cost_enclosures(y, hub)
    for (i, j), w in zip(pairs, masses, strict=True):
        _, c = cost_enclosures(x[i : i + 1], y[j : j + 1])
        total += w * c[0][0]
        r[i] += w
        s[j] += w
    total += sum(abs(a[i] - r[i]) * to_hub_a[i][0] for i in range(len(x)))
    total += sum(abs(b[j] - s[j]) * to_hub_b[j][0] for j in range(len(y)))
    return total


def psd_exact(matrix: list[list[Fraction]]) -> bool:
    """Exact test of positive semidefiniteness (symmetric LDL^T, zero pivots allowed)."""
    a = [row[:] for row in matrix]
    n = len(a)
    for k in range(n):
        pivot = a[k][k]
        if pivot < 0 or (pivot == 0 and any(a[k][j] != 0 for j in range(k + 1, n))):
            return False
        if pivot == 0:
            continue
        for i in range(k + 1, n):
            factor = a[i][k] / pivot
            for j in range(k + 1, n):
                a[i][j] -= factor * a[k][j]
    return True


def norm_at_most(matrix, bound: float) -> bool:
    """Exactly: is ``||M||_2 <= bound`` for the float64 matrix ``M`` (an array or a
    tensor), i.e. is ``bound^2 I - M^T M`` positive semidefinite?"""
    rows = [fraction_array(row) for row in np.asarray(matrix, dtype=np.float64)]
    n, b2 = len(rows[0]), Fraction(bound) ** 2
    gram = [
        [(b2 if i == j else 0) - sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)
    ]
    return psd_exact(gram)
