r"""Cheap starting potentials for large problems: solve a subsample, extend to all points.

Kantorovich potentials of W1 are 1-Lipschitz functions, so the optimal potentials of a
random subsample approximate those of the whole problem. :func:`warm_start` solves a
subsample of ``size`` points per side exactly (POT's network simplex on a dense
matrix of ``size^2`` costs) and extends its potentials to every point by the
c-transforms restricted to the subsample,

.. math::
    u_i = \min_{j \in B'} (v'_j + c_{ij}), \qquad v_j = \max_{i \in A'} (u'_i - c_{ij}),

which costs ``(n + m) * size`` distances (no pass over all ``n m`` pairs). With
``levels > 1`` the extended potentials seed a sparse solve on a larger subsample, and
so on (a geometric ladder of sizes): the potentials the solver starts from at full
size are then close to optimal, and column generation needs few rounds.

Nothing here is certified: these are starting points, made certified by the
c-transforms over all pairs that follow (:mod:`wassnet.ot.dual`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from wassnet.deadline import Deadline
from wassnet.norms import Norm, by_metric
from wassnet.ot.exact import network_simplex
from wassnet.ot.metrics import metric_cdist

__all__ = ["extend_potentials", "multilevel_warm_start", "warm_start"]


def _cdist(x: torch.Tensor, y: torch.Tensor, metric: str | Norm) -> torch.Tensor:
    if by_metric(metric).is_euclidean:  # heuristic values: the fast expansion is fine here
        return torch.cdist(x, y, compute_mode="use_mm_for_euclid_dist_if_necessary")
    return metric_cdist(x, y, metric)


@torch.no_grad()
def extend_potentials(
    x: np.ndarray,
    y: np.ndarray,
    sub_a: np.ndarray,
    sub_b: np.ndarray,
    u_sub: np.ndarray,
    v_sub: np.ndarray,
    device: torch.device | str | None = None,
    chunk: int = 1 << 24,
    metric: str = "euclidean",
) -> tuple[np.ndarray, np.ndarray]:
    """Extend potentials of the subsample ``(x[sub_a], y[sub_b])`` to all points."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    xs = torch.as_tensor(x[sub_a], dtype=torch.float64, device=dev)
    ys = torch.as_tensor(y[sub_b], dtype=torch.float64, device=dev)
    us = torch.as_tensor(u_sub, dtype=torch.float64, device=dev)
    vs = torch.as_tensor(v_sub, dtype=torch.float64, device=dev)
    u = np.empty(len(x))
    step = max(1, chunk // max(1, len(sub_b)))
    for s in range(0, len(x), step):
        xc = torch.as_tensor(x[s : s + step], dtype=torch.float64, device=dev)
        u[s : s + step] = (vs[None, :] + _cdist(xc, ys, metric)).min(1).values.cpu().numpy()
    v = np.empty(len(y))
    step = max(1, chunk // max(1, len(sub_a)))
    for s in range(0, len(y), step):
        yc = torch.as_tensor(y[s : s + step], dtype=torch.float64, device=dev)
        v[s : s + step] = (us[:, None] - _cdist(xs, yc, metric)).max(0).values.cpu().numpy()
    return u, v


def _subsample(
    rng: np.random.Generator, n: int, size: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of at most ``size`` points with positive weight, and their
    weights renormalized."""
    candidates = np.flatnonzero(weights > 0)
    pick = np.sort(rng.choice(candidates, min(size, len(candidates)), replace=False))
    w = weights[pick]
    return pick, w / w.sum()


def warm_start(
    x: np.ndarray,
    y: np.ndarray,
    wa: np.ndarray,
    wb: np.ndarray,
    *,
    size: int = 2000,
    rng: np.random.Generator | None = None,
    device: torch.device | str | None = None,
    metric: str = "euclidean",
) -> tuple[np.ndarray, np.ndarray]:
    """Potentials ``(u, v)`` on all points from an exactly solved random subsample.

    Args:
        x, y: ``[n, d]`` and ``[m, d]`` points (any units; the potentials share them).
        wa, wb: probability vectors (weights of the points).
        size: points per side in the subsample.
        rng: the random generator that picks the subsample.
        device: where the extension's distances are computed.
        metric: the ground cost (:mod:`wassnet.ot.metrics`).
    """
    from scipy.spatial.distance import cdist

    rng = rng or np.random.default_rng(0)
    sub_a, pa = _subsample(rng, len(x), size, wa)
    sub_b, pb = _subsample(rng, len(y), size, wb)
    _, _, _, u_sub, v_sub = network_simplex(cdist(x[sub_a], y[sub_b], metric=metric), pa, pb)
    return extend_potentials(x, y, sub_a, sub_b, u_sub, v_sub, device=device, metric=metric)


def _restricted_transforms(
    x: np.ndarray,
    y: np.ndarray,
    sub_a: np.ndarray,
    sub_b: np.ndarray,
    u_sub: np.ndarray,
    v_sub: np.ndarray,
    device: torch.device | str | None,
    backend: str,
    metric: str,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`extend_potentials` by fused float32 passes (any size; heuristic values;
    Euclidean), or by chunks of distances for the other metrics."""
    from wassnet.ot.problem import TransportProblem
    from wassnet.ot.tiles import TiledCost

    if not by_metric(metric).is_euclidean:
        return extend_potentials(x, y, sub_a, sub_b, u_sub, v_sub, device=device, metric=metric)

    def row_min(points: np.ndarray, others: np.ndarray, potential: np.ndarray) -> np.ndarray:
        problem = TransportProblem.build(points, others)
        scale = 2.0**problem.exponent  # the passes work in the problem's own units
        tiles = TiledCost(problem, device=device, backend=backend)
        return tiles.row_min(tiles.round_potential(potential / scale)).cpu().numpy() * scale

    u = row_min(x, y[sub_b], v_sub)  # u_i = min_j (v_j + c_ij) over the subsample
    v = -row_min(y, x[sub_a], -u_sub)  # v_j = max_i (u_i - c_ij)
    return u, v


def multilevel_warm_start(
    x: np.ndarray,
    y: np.ndarray,
    *,
    size: int = 2000,
    factor: int = 10,
    solve: Callable[
        [np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
    ],
    rng: np.random.Generator | None = None,
    device: torch.device | str | None = None,
    backend: str = "auto",
    metric: str = "euclidean",
    deadline: Deadline | None = None,
    predict: Callable[[int], float] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Potentials on all points of two uniform clouds of equal size, level by level.

    Nested random subsamples of ``size``, ``size * factor``, ... points per side (while
    at most half of ``n``): the smallest is solved exactly (POT), each
    next one is started from the previous one's potentials extended to it and solved by
    ``solve(x_sub, y_sub, u0, v0) -> (u, v)`` (a few rounds of column generation), and
    the last one's potentials are extended to all points by fused passes.

    With a ``deadline`` and ``predict(s)`` (predicted seconds of solving the level of
    ``s`` points per side and extending its potentials to all points), a level starts
    only when its prediction fits in the time left; the last level solved is extended.
    Returns ``None`` when not even the smallest level fits (the cut is recorded).
    """
    from scipy.spatial.distance import cdist

    rng = rng or np.random.default_rng(0)
    n = len(x)
    perm_a, perm_b = rng.permutation(n), rng.permutation(len(y))
    s = min(size, n)
    if deadline is not None and predict is not None and not deadline.allows(predict(s)):
        deadline.cut(f"warm start skipped (a {s}-point subsample predicted ~{predict(s):.1f} s)")
        return None
    sub_a, sub_b = np.sort(perm_a[:s]), np.sort(perm_b[:s])
    w = np.full(s, 1.0 / s)
    _, _, _, u, v = network_simplex(cdist(x[sub_a], y[sub_b], metric=metric), w, w)
    while s * factor * 2 <= n:
        s_next = s * factor
        if deadline is not None and predict is not None and not deadline.allows(predict(s_next)):
            deadline.cut(
                f"warm start stopped after {s} points per side ({s_next} predicted "
                f"~{predict(s_next):.1f} s)"
            )
            break
        next_a, next_b = np.sort(perm_a[:s_next]), np.sort(perm_b[:s_next])
        u0, v0 = _restricted_transforms(
            x[next_a],
            y[next_b],
            np.searchsorted(next_a, sub_a),
            np.searchsorted(next_b, sub_b),
            u,
            v,
            device,
            backend,
            metric,
        )
        u, v = solve(x[next_a], y[next_b], u0, v0)
        s, sub_a, sub_b = s_next, next_a, next_b
    if s == n:
        return u, v
    return _restricted_transforms(x, y, sub_a, sub_b, u, v, device, backend, metric)
