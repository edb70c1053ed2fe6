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


def _sample_panel(fig, ax, result: W1Result, a: np.ndarray, b: np.ndarray) -> None:
    """2-D: points, the plan's heaviest pairs, the dual potential; else potential histograms."""
    from matplotlib.collections import LineCollection

    sample = result.sample
    potentials = sample.potentials if sample is not None else None
    tri = _triangulation(a, b) if potentials is not None else None
    if tri is not None:
        values = np.concatenate(potentials)
        contour = ax.tricontourf(tri, values, levels=20, cmap="coolwarm", alpha=0.5)
        fig.colorbar(contour, ax=ax, label="dual potential")
        if sample.plan is not None:
            segments, mass = _plan_segments(a, b, sample.plan)
            width = 0.3 + 1.5 * mass / mass.max()
            ax.add_collection(LineCollection(segments, colors="0.3", linewidths=width, alpha=0.5))
        ax.scatter(a[:, 0], a[:, 1], s=3, c="tab:red", label="A")
        ax.scatter(b[:, 0], b[:, 1], s=3, c="tab:blue", label="B")
        ax.set_title("points, optimal plan, dual potential")
        ax.legend(loc="upper right")
    elif potentials is not None:
        ax.hist(potentials[0], bins=60, alpha=0.6, density=True, label="potential on A")
        ax.hist(potentials[1], bins=60, alpha=0.6, density=True, label="potential on B")
        ax.set_title("dual potential values")
        ax.legend()
    else:
        ax.axis("off")


def _rounds_panel(ax, result: W1Result) -> None:
    """The certified sample bracket, round by round."""
    sample = result.sample
    if sample is None:
        ax.axis("off")
        return
    rounds = sample.rounds or [{"round": 1, "lower": sample.lower, "upper": sample.upper}]
    steps = [r["round"] for r in rounds]
    ax.plot(steps, [r["upper"] for r in rounds], "o-", color="tab:red", label="upper")
    ax.plot(steps, [r["lower"] for r in rounds], "o-", color="tab:blue", label="lower")
    if sample.exact is not None:
        ax.axhline(sample.exact, color="k", ls="--", lw=0.8, label="exact (POT)")
    ax.set_xlabel("round")
    ax.set_ylabel("W1")
    ax.set_title(f"sample W1 in [{sample.lower:.6g}, {sample.upper:.6g}]")
    ax.legend(loc="lower right")


def _critic_grid(a: np.ndarray, b: np.ndarray, steps: int = 120):
    pts = np.concatenate([a, b])
    low, high = pts.min(0), pts.max(0)
    pad = 0.05 * np.maximum(high - low, 1e-12)
    xs = np.linspace(low[0] - pad[0], high[0] + pad[0], steps)
    ys = np.linspace(low[1] - pad[1], high[1] + pad[1], steps)
    return np.meshgrid(xs, ys)


def _population_panel(fig, ax, result: W1Result, a: np.ndarray, b: np.ndarray) -> None:
    """2-D: level sets of the first fold's critic; else held-out critic value histograms."""
    import torch

    population = result.population
    if population is None:
        ax.axis("off")
        return
    title = f"population W1 in [{population.lower:.4g}, {population.upper:.4g}]"
    if a.ndim == 2 and a.shape[1] == 2 and population.critics:
        fitted = population.critics[0]
        gx, gy = _critic_grid(a, b)
        grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))
        with torch.no_grad():
            values = fitted.module(grid).reshape(gx.shape).numpy() / fitted.lipschitz
        contour = ax.contourf(gx, gy, values, levels=20, cmap="coolwarm", alpha=0.6)
        fig.colorbar(contour, ax=ax, label=f"critic ({fitted.name}, fold 0) / L")
        ax.scatter(a[:, 0], a[:, 1], s=2, c="tab:red", label="A")
        ax.scatter(b[:, 0], b[:, 1], s=2, c="tab:blue", label="B")
        ax.legend(loc="upper right")
        ax.set_title(title)
        return
    if population.heldout is not None and population.directions is not None:
        _along_directions(fig, ax, population, a, b)
        ax.set_title(title + f", estimate {population.estimate:.4g}")
        return
    if population.heldout is not None:
        ha, hb = population.heldout
        ax.hist(ha, bins=60, alpha=0.6, density=True, color="tab:red", label="held-out f on A")
        ax.hist(hb, bins=60, alpha=0.6, density=True, color="tab:blue", label="held-out f on B")
        ax.legend()
    ax.set_title(title + f", estimate {population.estimate:.4g}")


def _along_directions(fig, ax, population, a: np.ndarray, b: np.ndarray) -> None:
    """Projection critics: the held-out critic values against ``<u, x>`` (A and B);
    subspace critics: the points on the subspace's first two axes, coloured by them."""
    rows = np.asarray(population.directions)
    ha, hb = population.heldout
    pa, pb = a.reshape(len(a), -1) @ rows.T, b.reshape(len(b), -1) @ rows.T
    if len(rows) == 1:
        ax.scatter(pa[:, 0], ha, s=2, alpha=0.4, c="tab:red", label="held-out f on A")
        ax.scatter(pb[:, 0], hb, s=2, alpha=0.4, c="tab:blue", label="held-out f on B")
        ax.set_xlabel("<u, x> (u: the direction found)")
        ax.set_ylabel("held-out critic value / L")
        ax.legend(loc="best")
        return
    points = np.concatenate([pa[:, :2], pb[:, :2]])
    values = np.concatenate([ha, hb])
    shown = ax.scatter(points[:, 0], points[:, 1], s=2, c=values, cmap="coolwarm", alpha=0.6)
    fig.colorbar(shown, ax=ax, label="held-out critic value / L")
    ax.set_xlabel("first axis of the subspace found")
    ax.set_ylabel("second axis")


def plot_estimate(result: W1Result, a: np.ndarray, b: np.ndarray, path: str | Path) -> Path:
    """Save a figure of an estimate and return its path.

    Sample panels: 2-D data: both clouds, the optimal plan's heaviest pairs and the
    level sets of the dual potential (interpolated from its values on the points);
    otherwise (or for collinear 2-D points) histograms of the potentials on each
    cloud; then the certified bracket, round by round. Population panel (when the
    population was asked for): 2-D: the level sets of a fitted critic; when
    projection critics were kept, the held-out critic values along the direction
    found (subspace critics: the points on the subspace's first two axes, coloured by
    those values); otherwise histograms of the held-out critic values on A and B.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    panels = 3 if result.population is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5))
    _sample_panel(fig, axes[0], result, a, b)
    _rounds_panel(axes[1], result)
    if panels == 3:
        _population_panel(fig, axes[2], result, a, b)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
