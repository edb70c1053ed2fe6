"""Pictures of a GAN run: sample grids, training curves, and 2-D critic level sets."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["plot_curves", "plot_level_sets", "save_samples"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_samples(
    samples: torch.Tensor,
    path: str | os.PathLike[str],
    real: np.ndarray | None = None,
    nrow: int | None = None,
) -> Path:
    """Save generated samples as a picture.

    Images (``[N, C, H, W]``, generator scale ``[-1, 1]``) become a grid
    (``torchvision.utils.save_image``); 2-D points become a scatter plot over the
    ``real`` points when given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.dim() == 4:
        from torchvision.utils import save_image

        n = len(samples)
        grid_rows = nrow or max(1, round(n**0.5))
        save_image(samples.add(1).div(2).clamp(0, 1), path, nrow=grid_rows, padding=2)
        return path
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:blue", alpha=0.5, label="data")
    pts = samples.numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=3, c="tab:red", alpha=0.6, label="generated")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(metrics_path: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Plot the curves of ``metrics.jsonl``: critic W1 estimate, losses, Lipschitz bound,
    and (2-D data) the exact W1 of generated samples to data."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    plt = _pyplot()
    panels = [
        ("critic W1 estimate", ["critic_w1"]),
        ("losses", ["critic_loss", "generator_loss", "gradient_penalty"]),
        ("certified Lipschitz bound of the critic", ["critic_lipschitz_bound"]),
    ]
    if any("exact_w1" in r for r in rows):
        panels.append(("exact W1(samples, data), POT", ["exact_w1"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            # strict JSON writes NaN as null: plot it as a gap
            pts = [(r["step"], math.nan if r[key] is None else r[key]) for r in rows if key in r]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="." if len(pts) < 30 else None, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("generator step")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_level_sets(
    critic: nn.Module,
    real: np.ndarray,
    fake: np.ndarray,
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    resolution: int = 200,
) -> Path:
    """2-D data: the critic's level sets over the plane, with data and generated samples."""
    pts = np.concatenate([real, fake])
    lo, hi = pts.min(0), pts.max(0)
    margin = 0.15 * (hi - lo).max() + 1e-3
    xs = np.linspace(lo[0] - margin, hi[0] + margin, resolution)
    ys = np.linspace(lo[1] - margin, hi[1] + margin, resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    was_training = critic.training
    critic.eval()
    with torch.no_grad():
        values = critic(grid.to(device)).cpu().numpy().reshape(gx.shape)
    critic.train(was_training)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    filled = ax.contourf(gx, gy, values, levels=25, cmap="coolwarm", alpha=0.75)
    ax.contour(gx, gy, values, levels=25, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(filled, ax=ax, label="critic f(x)")
    ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:blue", label="data")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="black", label="generated")
    ax.set_aspect("equal")
    ax.set_title("critic level sets (data: high f)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
