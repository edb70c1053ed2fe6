"""Regenerate the sample point clouds in data/ (deterministic).

    python scripts/make_sample_data.py

* ``data/mixture.npy``: 1000 points in R^2, a mixture of four Gaussians (std 0.3)
  centred at (+-2, +-2).
* ``data/ring.npy``: 800 points in R^2, a noisy ring of radius 2 (radial std 0.1).

Also prints the exact W1 between them (POT), recorded in data/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data"


def make(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    mixture = centers[rng.integers(0, 4, 1000)] + 0.3 * rng.standard_normal((1000, 2))
    angle = rng.uniform(0, 2 * np.pi, 800)
    radius = 2.0 + 0.1 * rng.standard_normal(800)
    ring = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return mixture.astype(np.float64), ring.astype(np.float64)


if __name__ == "__main__":
    from wassnet.ot import exact_w1

    a, b = make()
    DATA.mkdir(exist_ok=True)
    np.save(DATA / "mixture.npy", a)
    np.save(DATA / "ring.npy", b)
    print(f"exact W1(mixture, ring) = {exact_w1(a, b):.6f}")
