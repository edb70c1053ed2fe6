"""Population W1 benchmark: known-truth families, coverage over independent draws.

    python scripts/bench_estimate.py population --draws 20 --workers 2

(``bench_estimate.py population`` runs :func:`population` below.) For each family and
dimension, ``--draws`` independent pairs of samples of ``--n`` points per side are drawn;
each is given to ``estimate_w1(target="population")`` with default options, and the
table reports, per row: the mean ratio estimate / truth and its range, the coverage
(fraction of draws whose bracket contains the truth), the mean bracket, the time per
estimate, and the alternatives users reach for, as ratios to the truth: the plug-in
sample W1 (certified midpoint), POT's sliced W1 (``ot.sliced_wasserstein_distance``,
p = 1, 200 projections) on every draw, and one GroupSort critic without the capacity
choice (``critics=("dense",)``, cross-fitted) on the first ``--alt-draws`` draws.
MNIST / FashionMNIST class pairs (no truth) report the bracket.

Families (truth in closed form):

* translation: coordinates i.i.d. uniform on [-sqrt 3, sqrt 3] (unit variance, not
  Gaussian), B = A' + t with |t| = 1 along a random direction: W1 = 1;
* scaling: N(0, I) vs N(0, s^2 I), s = 1.5: W1 = |1 - s| E|Z|,
  E|Z| = sqrt 2 Gamma((d + 1)/2) / Gamma(d/2);
* spheres: uniform on the spheres of radius 1 and 1.5: W1 = 0.5.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchtools import markdown_table, write_section

Pair = tuple[np.ndarray, np.ndarray]


def _translation(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float]:
    t = rng.standard_normal(d)
    t /= np.linalg.norm(t)
    a = rng.uniform(-math.sqrt(3), math.sqrt(3), (n, d))
    b = rng.uniform(-math.sqrt(3), math.sqrt(3), (n, d)) + t
    return (a, b), 1.0


def _mean_norm(d: int) -> float:
    return math.sqrt(2) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


def _scaling(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float]:
    s = 1.5
    return (rng.standard_normal((n, d)), s * rng.standard_normal((n, d))), (s - 1) * _mean_norm(d)


def _spheres(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float]:
    def sphere(r: float) -> np.ndarray:
        g = rng.standard_normal((n, d))
        return r * g / np.linalg.norm(g, axis=1, keepdims=True)

    return (sphere(1.0), sphere(1.5)), 0.5


FAMILIES: dict[str, Callable[..., tuple[Pair, float]]] = {
    "translation of a uniform cube by 1": _translation,
    "scaling N(0, I) vs N(0, 1.5^2 I)": _scaling,
    "spheres r = 1 vs 1.5": _spheres,
}


@dataclass(frozen=True)
class Job:
    family: str
    dim: int
    draw: int
    n: int
    alternatives: bool
    seed: int


def _run(job: Job) -> dict:
    import ot
    import torch

    from wassnet import estimate_w1
    from wassnet.w1 import PopulationOptions

    torch.set_num_threads(1)
    rng = np.random.default_rng([job.seed, job.dim, job.draw, len(job.family)])
    (a, b), truth = FAMILIES[job.family](job.n, job.dim, rng)
    t0 = time.perf_counter()
    r = estimate_w1(a, b, target="population", floor=False, seed=job.draw)
    seconds = time.perf_counter() - t0
    p = r.population
    row = {
        "family": job.family,
        "dim": job.dim,
        "truth": truth,
        "lower": p.lower,
        "upper": p.upper,
        "estimate": p.estimate,
        "critics": sorted({f.critic for f in p.folds}),
        "seconds": seconds,
        "sample": r.sample.estimate,
        "sliced": float(
            ot.sliced_wasserstein_distance(a, b, n_projections=200, p=1, seed=job.draw)
        ),
    }
    if job.alternatives:
        options = PopulationOptions(critics=("dense",))
        dense = estimate_w1(a, b, target="population", population=options, floor=False)
        row["dense_only"] = dense.population.estimate
    return row


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _table_row(rows: list[dict]) -> list:
    truth = rows[0]["truth"]
    ratios = [r["estimate"] / truth for r in rows]
    covered = sum(r["lower"] <= truth <= r["upper"] for r in rows)
    dense = [r["dense_only"] / truth for r in rows if "dense_only" in r]
    critics = sorted({c for r in rows for c in r["critics"]})
    return [
        rows[0]["family"],
        rows[0]["dim"],
        f"{truth:.4g}",
        f"{_mean(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]",
        f"{covered}/{len(rows)} ({covered / len(rows):.0%})",
        f"[{_mean([r['lower'] for r in rows]):.4g}, {_mean([r['upper'] for r in rows]):.4g}]",
        ", ".join(critics),
        f"{_mean([r['seconds'] for r in rows]):.1f}",
        f"{_mean([r['sample'] / truth for r in rows]):.2f}",
        f"{_mean([r['sliced'] / truth for r in rows]):.2f}",
        f"{_mean(dense):.3f} ({len(dense)})" if dense else "-",
    ]


HEADER = [
    "family",
    "d",
    "truth W1",
    "estimate / truth: mean [min, max]",
    "coverage",
    "mean bracket",
    "critics kept",
    "s / estimate",
    "plug-in sample W1 / truth",
    "sliced W1 / truth",
    "GroupSort critic only / truth (draws)",
]


def _real_data(args, n: int) -> list[list]:
    """MNIST / FashionMNIST class pairs: the bracket (no truth)."""
    import ot
    import torch

    from wassnet import estimate_w1
    from wassnet.datasets import load_images

    torch.set_num_threads(args.threads)
    out = []
    for name, folder, (ca, cb) in (
        ("mnist", "MNIST", (3, 8)),
        ("fashion-mnist", "FashionMNIST", (0, 6)),
    ):
        with tempfile.TemporaryDirectory() as root:  # the raw files' folder is read-only
            shutil.copytree(args.data_root / folder, Path(root) / folder)
            data = load_images(name, root, download=True)
        x = data.images.reshape(len(data.images), -1).double().numpy()
        y = data.labels.numpy()
        rng = np.random.default_rng(args.seed)
        a = x[rng.choice(np.flatnonzero(y == ca), n, replace=False)]
        b = x[rng.choice(np.flatnonzero(y == cb), n, replace=False)]
        t0 = time.perf_counter()
        r = estimate_w1(a, b, target="both", seed=args.seed)
        p = r.population
        sliced = float(ot.sliced_wasserstein_distance(a, b, n_projections=200, p=1, seed=0))
        out.append(
            [
                f"{name} {ca} vs {cb}",
                784,
                "unknown",
                f"estimate {p.estimate:.4g}",
                "-",
                f"[{p.lower:.4g}, {p.upper:.4g}]",
                ", ".join(sorted({f.critic for f in p.folds})),
                f"{time.perf_counter() - t0:.1f}",
                f"sample W1 {r.sample.estimate:.4g} (floor {r.floor.estimate:.4g})",
                f"{sliced:.4g}",
                "-",
            ]
        )
    return out


def population(args) -> None:
    """Run the families (in ``args.workers`` processes of 1 thread) and write the table."""
    jobs = [
        Job(family, d, draw, args.n, draw < args.alt_draws, args.seed)
        for family in FAMILIES
        for d in args.dims
        for draw in range(args.draws)
    ]
    results: dict[tuple[str, int], list[dict]] = {}
    ctx = mp.get_context("spawn")
    start = time.perf_counter()
    with ctx.Pool(args.workers, maxtasksperchild=20) as pool:
        for row in pool.imap_unordered(_run, jobs):
            results.setdefault((row["family"], row["dim"]), []).append(row)
            done = sum(map(len, results.values()))
            print(
                f"[{time.perf_counter() - start:7.0f} s] {done}/{len(jobs)} {row['family']} "
                f"d={row['dim']}: [{row['lower']:.4g}, {row['upper']:.4g}] est "
                f"{row['estimate']:.4g} truth {row['truth']:.4g} ({row['seconds']:.1f} s)",
                flush=True,
            )
    rows = [_table_row(results[key]) for key in sorted(results, key=lambda k: (k[0], k[1]))]
    if not args.skip_real:
        rows += _real_data(args, args.n)
    body = (
        f"n = {args.n} points per side, {args.draws} independent draws per row, "
        f"{args.workers} worker processes with 1 torch thread each (seconds per estimate "
        "include the sample bracket and the critic fits; no floor). Coverage: draws whose "
        "95% bracket contains the truth. Ratios are means over the draws. "
        f"Wall time {time.perf_counter() - start:.0f} s.\n\n" + markdown_table(HEADER, rows)
    )
    write_section("bench_estimate_population", "W1 between the distributions: known truth", body)
    print(body)


def add_arguments(parser) -> None:
    parser.add_argument("--n", type=int, default=5000, help="points per side")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--alt-draws", type=int, default=3, help="draws with the dense-only critic")
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--skip-real", action="store_true", help="no MNIST/FashionMNIST rows")


__all__ = ["FAMILIES", "add_arguments", "population"]
