"""Figures for the estimator (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from wassnet.estimate import W1Result

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


def plot_estimate(result: W1Result, a: np.ndarray, b: np.ndarray, path: str | Path) -> Path:
    """Save a figure of an estimate and return its path.

    2-D data: both clouds over the level sets of the critic's potential (interpolated
    from its values on the points). Otherwise (or when the 2-D points are collinear):
    histograms of the critic's values on each cloud. Always: the training curve of
    the critic's dual value.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    fa, fb = result.potentials
    tri = _triangulation(a, b) if fa is not None else None
    if tri is not None:
        values = np.concatenate([fa, fb])
        contour = left.tricontourf(tri, values, levels=20, cmap="coolwarm", alpha=0.6)
        fig.colorbar(contour, ax=left, label="potential")
        left.scatter(a[:, 0], a[:, 1], s=3, c="tab:red", label="A")
        left.scatter(b[:, 0], b[:, 1], s=3, c="tab:blue", label="B")
        left.set_title("points and potential level sets")
        left.legend(loc="upper right")
    elif fa is not None:
        left.hist(fa, bins=60, alpha=0.6, density=True, label="potential on A")
        left.hist(fb, bins=60, alpha=0.6, density=True, label="potential on B")
        left.set_title("potential values")
        left.legend()
    else:
        left.axis("off")
    if result.history:
        right.plot(result.history, lw=0.6, color="0.6", label="minibatch dual")
        window = max(1, len(result.history) // 50)
        smooth = np.convolve(result.history, np.ones(window) / window, mode="valid")
        right.plot(np.arange(len(smooth)) + window - 1, smooth, color="k", label="moving average")
    right.axhspan(
        result.lower, result.upper, color="tab:green", alpha=0.3, label="certified bracket"
    )
    if result.exact is not None:
        right.axhline(result.exact, color="tab:red", ls="--", label="exact (POT)")
    right.set_xlabel("training step")
    right.set_ylabel("W1")
    right.set_title(f"W1 in [{result.lower:.4g}, {result.upper:.4g}]")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
