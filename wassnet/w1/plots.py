"""Figures of the W1 estimator (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from wassnet.w1.result import W1Result

__all__ = ["plot_estimate"]


def _triangulation(a: np.ndarray, b: np.ndarray):
    """A Delaunay triangulation of 2-D points, or None (other d, or degenerate points)."""
    if a.ndim != 2 or a.shape[1] != 2:
        return None
    from matplotlib.tri import Triangulation

    pts = np.concatenate([a, b])
    try:
        tri = Triangulation(pts[:, 0], pts[:, 1])
        tri.get_masked_triangles()
    except (ValueError, RuntimeError):  # collinear or too few distinct points
        return None
    return tri


def _plan_segments(a: np.ndarray, b: np.ndarray, plan, limit: int = 3000):
    """The heaviest pairs of a plan as line segments (2-D), with their masses."""
    rows, cols, mass = plan
    order = np.argsort(-mass)[:limit]
    segments = np.stack([a[rows[order]], b[cols[order]]], axis=1)
    return segments, mass[order]


def plot_estimate(result: W1Result, a: np.ndarray, b: np.ndarray, path: str | Path) -> Path:
    """Save a figure of an estimate and return its path.

    Left: 2-D data: both clouds, the optimal plan's heaviest pairs and the level sets
    of the dual potential (interpolated from its values on the points); otherwise (or
    for collinear 2-D points) histograms of the potentials on each cloud. Right: the
    certified bracket, round by round.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    path = Path(path)
    sample = result.sample
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    potentials = sample.potentials if sample is not None else None
    tri = _triangulation(a, b) if potentials is not None else None
    if tri is not None:
        values = np.concatenate(potentials)
        contour = left.tricontourf(tri, values, levels=20, cmap="coolwarm", alpha=0.5)
        fig.colorbar(contour, ax=left, label="dual potential")
        if sample.plan is not None:
            segments, mass = _plan_segments(a, b, sample.plan)
            width = 0.3 + 1.5 * mass / mass.max()
            left.add_collection(LineCollection(segments, colors="0.3", linewidths=width, alpha=0.5))
        left.scatter(a[:, 0], a[:, 1], s=3, c="tab:red", label="A")
        left.scatter(b[:, 0], b[:, 1], s=3, c="tab:blue", label="B")
        left.set_title("points, optimal plan, dual potential")
        left.legend(loc="upper right")
    elif potentials is not None:
        left.hist(potentials[0], bins=60, alpha=0.6, density=True, label="potential on A")
        left.hist(potentials[1], bins=60, alpha=0.6, density=True, label="potential on B")
        left.set_title("dual potential values")
        left.legend()
    else:
        left.axis("off")
    if sample is not None:
        rounds = sample.rounds or [{"round": 1, "lower": sample.lower, "upper": sample.upper}]
        steps = [r["round"] for r in rounds]
        right.plot(steps, [r["upper"] for r in rounds], "o-", color="tab:red", label="upper")
        right.plot(steps, [r["lower"] for r in rounds], "o-", color="tab:blue", label="lower")
        if sample.exact is not None:
            right.axhline(sample.exact, color="k", ls="--", lw=0.8, label="exact (POT)")
        right.set_xlabel("round")
        right.set_ylabel("W1")
        right.set_title(f"sample W1 in [{sample.lower:.6g}, {sample.upper:.6g}]")
        right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
