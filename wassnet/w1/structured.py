r"""Critics that look for low-dimensional structure: projections and subspaces.

Two laws can have equal means and covariances and still differ, along one direction
or within a small subspace of a space whose other directions are the same noise in
both. The population bracket's dense critic does not find such a difference from a
few thousand points in d = 32 (it fits the noise), and the sample W1 is useless there.
The families here look for the subspace first, on the training points only:

* ``projection``: ``f(x) = g(<u, x> / |u|_*)``, a direction ``u`` and the 1-D
  Kantorovich potential ``g`` of the training points' projections onto it
  (:class:`LinePotential`, a piecewise-linear function with slopes in ``[-1, 1]``,
  constant beyond its knots). ``|u|_*`` is the dual norm of the metric's norm
  (l2 for euclidean, l-inf for cityblock, l1 for chebyshev), so ``x -> <u, x> /
  |u|_*`` is 1-Lipschitz from the metric's norm to the line.
* ``subspace``: a small Björck + GroupSort network on a learned ``k``-dimensional
  orthonormal projection (``k`` = 2 and 3 below ``d``, the better on validation; a
  semi-orthogonal Björck layer), started from the best directions found below and
  trained like ``dense``.

**Directions** (:func:`candidate_directions`, on the fitting split): the difference of
the means, its whitened version (Fisher's direction), the leading eigenvectors of the
difference of the covariances (both signs), and, in whitened coordinates ``z``,
directions where the third and fourth moments differ: fixed points of
``v <- E_A[z <v, z>^3] - E_B[z <v, z>^3]`` (the gradient of the difference of the
fourth moments along ``v``; FastICA's iteration with the Gaussian term cancelled by
the difference), started from the leading eigenvectors of
``E_A[|z|^2 z z^T] - E_B[|z|^2 z z^T]`` and deflated, and the same for the third
moments. Each is refined by ascent of the 1-D W1 of the projections (exact on the
line: sorted projections matched in order, subgradient ``mean sign(a_(i) - b_(i))
(a_(i) - b_(i))``), keeping the iterate whose W1 on the *validation* split is largest
(so refinement stops before it fits the noise), and the direction with the largest
validation W1 is kept. Several starts of different kinds make a bad start harmless.

**Certification.** Both families are plain ``nn.Sequential`` networks certified by
:func:`wassnet.nn.lipschitz_bound`: ``projection`` is ``nn.Linear(d, 1)`` holding
``u / |u|_*`` (bound from its weight: l2 norm, max abs entry or abs sum, computed, never
assumed) followed by :class:`LinePotential`, whose rule (registered here, every lp,
the line having one norm) is the largest ``|slope|`` of its pieces computed exactly
in rationals from the stored knots and values. ``subspace`` is Björck and GroupSort
layers, bounded by the existing rules. Everything is fitted on the training folds; the
held-out argument of :mod:`wassnet.w1.population` is unchanged.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from wassnet.critics import make_critic
from wassnet.nn import NORMS, BjorckLinear, register_lipschitz_rule
from wassnet.nn.lipschitz import LipschitzBoundError
from wassnet.norms import by_metric

__all__ = [
    "SUBSPACE_DIMS",
    "LinePotential",
    "candidate_directions",
    "dual_norm",
    "line_potential",
    "projection_critic",
    "refine_direction",
    "subspace_critic",
]

#: The subspace critic is fitted on projections of these dimensions (below ``d``); the
#: best on validation is kept (``k = 1`` is the ``projection`` family: on a line, the
#: 1-D Kantorovich potential is already the optimal function).
SUBSPACE_DIMS = (2, 3)
#: The 1-D potential has at most this many pieces (knots at pooled quantiles).
POTENTIAL_KNOTS = 256
#: Iterations of the contrast fixed points and of the W1 ascent.
_MOMENT_ITERS = 30
_ASCENT_ITERS = 40


class LinePotential(nn.Module):
    """A piecewise-linear function on the line: ``knots[0] < ... < knots[K]``, the
    value ``values[i]`` at ``knots[i]``, linear between knots, constant beyond them.

    Input ``[N, 1]`` (or ``[N]``), output ``[N, 1]``. Its Lipschitz constant is the
    largest ``|values[i+1] - values[i]| / (knots[i+1] - knots[i])`` (the constant
    ends have slope 0), computed exactly by :func:`line_potential_slope`.
    """

    def __init__(self, knots: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        knots = torch.as_tensor(knots).reshape(-1)
        values = torch.as_tensor(values, dtype=knots.dtype).reshape(-1)
        if len(knots) < 1 or len(knots) != len(values):
            raise ValueError("LinePotential needs as many values as knots (at least one)")
        if len(knots) > 1 and not bool((knots[1:] > knots[:-1]).all()):
            raise ValueError("LinePotential's knots must be strictly increasing")
        self.register_buffer("knots", knots.clone())
        self.register_buffer("values", values.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.reshape(-1).to(self.knots.dtype)
        knots, values = self.knots, self.values
        if len(knots) == 1:
            return values.expand(len(t)).unsqueeze(1).clone()
        t = t.clamp(knots[0], knots[-1])
        i = (torch.searchsorted(knots, t, right=True) - 1).clamp(0, len(knots) - 2)
        left, right = knots[i], knots[i + 1]
        weight = (t - left) / (right - left)
        return (values[i] + weight * (values[i + 1] - values[i])).unsqueeze(1)


def line_potential_slope(module: LinePotential) -> float:
    """The exact largest ``|slope|`` of the pieces, rounded up to a float64.

    Knots and values are floats, so every slope is a rational computed exactly
    (:class:`fractions.Fraction`), and the maximum is rounded up."""
    knots = module.knots.detach().cpu().double().numpy()
    values = module.values.detach().cpu().double().numpy()
    if not (np.isfinite(knots).all() and np.isfinite(values).all()):
        raise LipschitzBoundError("LinePotential has non-finite knots or values")
    if len(knots) < 2:
        return 0.0
    if not bool((knots[1:] > knots[:-1]).all()):
        raise LipschitzBoundError("LinePotential's knots are not strictly increasing")
    # screen in float64, then compute the few largest candidates exactly; a slope the
    # screen cannot see (a difference that overflows, a quotient in the subnormal range)
    # is always a candidate
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        approx = np.abs(np.diff(values)) / np.diff(knots)
    finite = np.isfinite(approx)
    top = float(approx[finite].max()) if finite.any() else 0.0
    candidates = np.flatnonzero(~finite | (approx >= top * (1 - 1e-9) - 2.0**-1000))
    best = Fraction(0)
    for i in candidates:
        slope = abs(
            (Fraction(values[i + 1]) - Fraction(values[i]))
            / (Fraction(knots[i + 1]) - Fraction(knots[i]))
        )
        best = max(best, slope)
    bound = float(best)
    return bound if Fraction(bound) >= best else math.nextafter(bound, math.inf)


def _line_potential_rule(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, str]:
    r"""Proof. On ``[knots[i], knots[i+1]]`` the function is affine with slope
    ``s_i = (values[i+1] - values[i]) / (knots[i+1] - knots[i])``; below ``knots[0]`` and
    above ``knots[-1]`` it is constant (input clamped). For ``x < y`` split ``[x, y]`` at
    the knots inside it: ``|f(y) - f(x)| <= sum over the pieces of |s_i| * length <=
    max_i |s_i| * (y - x)``. The line has one norm (``|t|`` for every lp), so the bound
    holds for ``p`` = 1, 2 and inf. The float64 screen: a difference of two floats that
    does not overflow is within one rounding of the exact one and the quotient adds one
    more, so a screened slope at or above ``2^-1020`` is within ``3u`` relative of its
    exact value; a slope whose screen is not finite, or within ``1e-9`` relative (plus
    ``2^-1000`` absolute, for quotients in the subnormal range) of the screened
    maximum, is recomputed exactly in rationals. Any other slope is below
    ``top (1 - 1e-9) - 2^-1000`` in its screen, hence below the exact slope behind
    ``top``: it cannot be the maximum."""
    if int(math.prod(input_shape)) != 1:
        raise LipschitzBoundError(f"LinePotential takes points on the line, got {input_shape}")
    return line_potential_slope(module), "exact (rational): largest |slope| of the pieces"  # type: ignore[arg-type]


for _p in NORMS:
    register_lipschitz_rule(LinePotential, _line_potential_rule, _p)


def dual_norm(u: np.ndarray, metric: str) -> float:
    """``|u|_*``: l2 (euclidean), l-inf (cityblock: dual of l1), l1 (chebyshev)."""
    norm = by_metric(metric)
    if norm.is_cityblock:
        return float(np.abs(u).max())
    if norm.is_chebyshev:
        return float(np.abs(u).sum())
    return float(np.linalg.norm(u))


# ----------------------------------------------------------------------------- directions


def _unit(v: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(v))
    return None if not math.isfinite(norm) or norm <= 1e-300 else v / norm


def _whitener(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, W, W^-1) of the pooled law: ``z = (x - mean) W`` has identity covariance
    (directions of tiny variance are cut at 1e-9 of the largest)."""
    mean = 0.5 * (a.mean(0) + b.mean(0))
    cov = 0.5 * (np.cov(a, rowvar=False) + np.cov(b, rowvar=False))
    cov = np.atleast_2d(cov)
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-9 * max(float(vals.max()), 1e-300))
    w = (vecs / np.sqrt(vals)) @ vecs.T
    w_inv = (vecs * np.sqrt(vals)) @ vecs.T
    return mean, w, w_inv


def _contrast_fixed_point(za: np.ndarray, zb: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """A direction ``v`` (whitened) where ``E_A G(<v, z>) - E_B G(<v, z>)`` is extreme,
    ``G(y) = -exp(-y^2 / 2)``: FastICA's fixed point (Hyvärinen 1999) on the
    difference of the two laws, ``v <- E_A[z g(<v,z>)] - E_B[z g(<v,z>)] -
    (E_A g'(<v,z>) - E_B g'(<v,z>)) v`` with ``g = G'``. A bounded contrast: far less
    noisy than fourth moments, so it locks onto a direction from a rough start."""
    for _ in range(_MOMENT_ITERS):
        ya, yb = za @ v, zb @ v
        ea, eb = np.exp(-0.5 * ya * ya), np.exp(-0.5 * yb * yb)
        grad = za.T @ (ya * ea) / len(za) - zb.T @ (yb * eb) / len(zb)
        grad -= (((1 - ya * ya) * ea).mean() - ((1 - yb * yb) * eb).mean()) * v
        new = _unit(grad)
        if new is None:
            return v
        if abs(float(new @ v)) > 1 - 1e-9:
            return new
        v = new
    return v


def candidate_directions(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, per_kind: int = 6, random: int = 10
) -> list[np.ndarray]:
    """Unit directions (in x space) along which the laws of ``a`` and ``b`` may differ:
    means, covariances, third and fourth moments (see the module docstring)."""
    d = a.shape[1]
    out: list[np.ndarray] = []

    def add(v: np.ndarray | None) -> None:
        v = None if v is None else _unit(v)
        if v is not None:
            out.append(v)

    mean, w, _ = _whitener(a, b)
    diff = a.mean(0) - b.mean(0)
    add(diff)
    add(w @ w @ diff)  # Fisher: Sigma^-1 (mean_a - mean_b)
    cov_diff = np.atleast_2d(np.cov(a, rowvar=False) - np.cov(b, rowvar=False))
    vals, vecs = np.linalg.eigh(cov_diff)
    for i in np.argsort(-np.abs(vals))[: min(3, d)]:
        add(vecs[:, i])
    za, zb = (a - mean) @ w, (b - mean) @ w
    ra, rb = (za**2).sum(1, keepdims=True), (zb**2).sum(1, keepdims=True)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    # third moments: E[z (|z|^2 - mean)] differs along a skewed direction
    starts = [(za * ra).mean(0) - (zb * rb).mean(0)]
    # fourth moments: leading eigenvectors of the difference of E[(|z|^2 - mean) z z^T]
    # (centred: the covariances' sampling noise, times d, cancels)
    m4 = (za * ra).T @ za / len(za) - (zb * rb).T @ zb / len(zb)
    vals4, vecs4 = np.linalg.eigh(m4)
    starts += [vecs4[:, i] for i in np.argsort(-np.abs(vals4))[: min(per_kind, d)]]
    for i, start in enumerate(starts + [rng.standard_normal(d) for _ in range(random)]):
        start = _unit(start)
        if start is None:
            continue
        if i < len(starts):  # the moment directions themselves (not the random starts)
            add(w @ start)
        v = _contrast_fixed_point(za, zb, start)
        if v is not None:
            add(w @ v)  # <v, z> = <W v, x> + const: the x-space direction is W v
    return out


def line_w1(pa: np.ndarray, pb: np.ndarray) -> float:
    """Exact W1 between the empirical laws of two samples on the line."""
    pa, pb = np.sort(pa), np.sort(pb)
    grid = np.sort(np.concatenate([pa, pb]))
    fa = np.searchsorted(pa, grid[:-1], side="right") / len(pa)
    fb = np.searchsorted(pb, grid[:-1], side="right") / len(pb)
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


def _matched(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple:
    """Equal-size copies (the larger side subsampled), for the sorted coupling."""
    k = min(len(x), len(y))
    if len(x) > k:
        x = x[rng.choice(len(x), k, replace=False)]
    if len(y) > k:
        y = y[rng.choice(len(y), k, replace=False)]
    return x, y


def refine_direction(
    u: np.ndarray,
    fit: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    metric: str = "euclidean",
) -> tuple[np.ndarray, float]:
    """Ascent of the 1-D W1 of the fitting points' projections onto ``u / |u|_*``; the
    iterate with the largest validation W1 (the start included) and that W1."""
    a, b = _matched(*fit, rng)
    va, vb = val

    def score(v: np.ndarray) -> float:
        return line_w1(va @ v, vb @ v) / dual_norm(v, metric)

    best_u, best = u, score(u)
    step = 0.5
    for _ in range(_ASCENT_ITERS):
        pa, pb = a @ u, b @ u
        ia, ib = np.argsort(pa), np.argsort(pb)
        gap = a[ia] - b[ib]
        grad = (np.sign(pa[ia] - pb[ib])[:, None] * gap).mean(0)
        grad -= (grad @ u) * u  # tangent to the sphere
        g = _unit(grad)
        if g is None:
            break
        # ascent step of angle `step`, then back to the sphere
        u = _unit(math.cos(step) * u + math.sin(step) * g)
        value = score(u)
        if value > best:
            best_u, best = u, value
        step *= 0.85
    return best_u, best


# ----------------------------------------------------------------------------- critics


def line_potential(pa: np.ndarray, pb: np.ndarray, knots: int = POTENTIAL_KNOTS) -> LinePotential:
    """The 1-D Kantorovich potential of two samples on the line, on a coarse grid.

    ``E_A g - E_B g = integral g'(t) (F_B(t) - F_A(t)) dt``, so the optimal slope is
    ``sign(F_B - F_A)``; here the slope on each piece (knots at pooled quantiles) is that
    sign, shrunk to ``(F_B - F_A) / s`` where the difference is within one standard
    error ``s`` of 0 (less held-out loss where the sign is noise). Slopes lie in
    ``[-1, 1]``."""
    pooled = np.concatenate([pa, pb])
    grid = np.unique(np.quantile(pooled, np.linspace(0, 1, knots + 1)))
    if len(grid) < 2:
        return LinePotential(
            torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        )
    mids = 0.5 * (grid[1:] + grid[:-1])
    sa, sb = np.sort(pa), np.sort(pb)
    fa = np.searchsorted(sa, mids, side="right") / len(pa)
    fb = np.searchsorted(sb, mids, side="right") / len(pb)
    f = 0.5 * (fa + fb)
    stderr = np.sqrt(np.maximum(f * (1 - f), 1e-12) * (1 / len(pa) + 1 / len(pb)))
    slope = np.clip((fb - fa) / stderr, -1.0, 1.0)
    values = np.concatenate([[0.0], np.cumsum(slope * np.diff(grid))])
    return LinePotential(torch.from_numpy(grid), torch.from_numpy(values))


def projection_critic(
    u: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str = "euclidean"
) -> nn.Sequential:
    """``x -> g(<u, x> / |u|_*)`` (float64): ``nn.Linear(d, 1)`` holding ``u / |u|_*``,
    then the 1-D potential of ``a``'s and ``b``'s projections."""
    w = u / dual_norm(u, metric)
    linear = nn.Linear(len(u), 1, bias=False).double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w).unsqueeze(0))
    return nn.Sequential(linear, line_potential(a @ w, b @ w)).eval()


def orthonormal_rows(directions: list[np.ndarray], k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` orthonormal rows spanning the first directions (Gram-Schmidt; nearly
    dependent ones skipped, random ones fill up)."""
    d = len(directions[0]) if directions else 0
    rows: list[np.ndarray] = []
    pool = list(directions) + [rng.standard_normal(d) for _ in range(k + 2)]
    for v in pool:
        if len(rows) >= k:
            break
        for r in rows:
            v = v - (v @ r) * r
        if np.linalg.norm(v) > 0.1:  # the directions are unit: keep what is new
            rows.append(v / np.linalg.norm(v))
    return np.stack(rows)


def subspace_critic(
    rows: np.ndarray, hidden: tuple[int, ...], iters: int, metric: str = "euclidean"
) -> nn.Sequential:
    """A semi-orthogonal Björck projection to ``R^k`` started at ``rows``, then a dense
    Björck + MaxMin network (float32; trained by the caller). For ``metric`` other than
    euclidean, plain layers of the same shapes (the first scaled to induced norm <= 1),
    to be projected while trained."""
    k, d = rows.shape
    norm = by_metric(metric)
    plain = not norm.is_euclidean
    first = nn.Linear(d, k, bias=False) if plain else BjorckLinear(d, k, bias=False, iters=iters)
    weight = torch.from_numpy(rows).float()
    with torch.no_grad():
        if isinstance(first, BjorckLinear):
            first.parametrizations.weight.original.copy_(weight)
        else:
            first.weight.copy_(weight / max(1.0, _induced(rows, norm.p)))
    constraint = "projection" if plain else "orthogonal"
    tail = make_critic(
        "dense", k, constraint=constraint, hidden=hidden, activation="maxmin", iters=iters
    )
    return nn.Sequential(first, *tail)


def _induced(w: np.ndarray, p: float) -> float:
    """Induced lp norm of ``w`` (l1: max column abs sum; l-inf: max row abs sum)."""
    if p == 1:
        return float(np.abs(w).sum(0).max())
    if p == math.inf:
        return float(np.abs(w).sum(1).max())
    return float(np.linalg.norm(w, 2))
