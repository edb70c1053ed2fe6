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

Structured rows (``--structured``: the rows of :data:`STRUCTURED`, each at its own d;
section ``bench_estimate_population_structured``). Truths, proven:

* **Subspace lemma.** If ``X = Q (S, N)`` and ``Y = Q (S', N')`` with ``Q`` orthogonal,
  ``S, S'`` in ``R^k`` and ``N, N'`` i.i.d. the same law independent of ``S``, ``S'``,
  then ``W1(X, Y) = W1(S, S')``: ``>=`` because ``x -> (Q^T x)_{1..k}`` is 1-Lipschitz (so
  its push-forward cannot increase W1), ``<=`` by coupling ``S, S'`` optimally and
  setting ``N' = N`` (cost ``|S - S'|``).
* epsilon-contamination, d = 64: P = N(0, I), Q = 0.9 N(0, I) + 0.1 N(t, I), ``|t| = 5``:
  W1 = 0.1 |t| = 0.5 (``<=``: move the shifted tenth back by ``t``; ``>=``: the linear
  critic ``<t/|t|, x>`` has dual 0.1 |t|).
* heavy-tailed shift, d = 16: i.i.d. Student t coordinates (2.5 dof, finite variance
  5), B = A' + t, ``|t| = 1``: W1 = 1 (a translation: the coupling ``x -> x + t`` and
  the linear critic along ``t`` give 1).
* covariance spike, d = 32: N(0, I) vs N(0, I + 3 u u^T) (standard deviation 2 along
  ``u``): by the lemma, W1 = W1(N(0, 1), N(0, 4)) = (2 - 1) E|Z| = sqrt(2 / pi).
* equal means and covariances, one direction, d = 16, 32, 64: along ``u``, N(0, 1) vs
  the mixture 1/2 N(-0.95, s^2) + 1/2 N(0.95, s^2), ``s^2 = 1 - 0.95^2`` (mean 0,
  variance 1, third moment 0); the other directions N(0, 1) in both. By the lemma W1 =
  the 1-D W1 = integral |F_1 - F_2| (closed-form CDFs, adaptive quadrature: 0.30236).
* equal means and covariances, a 2-D plane, d = 16, 32, 64: in the plane, N(0, I_2) vs a
  noisy ring (angle uniform, radius N(r0, 0.1^2), ``r0^2 = 1.99``: covariance
  ``E r^2 / 2 I = I``, mean 0); N(0, 1) noise elsewhere. By the lemma W1 = the plane's
  W1, and between two rotation-invariant laws of the plane W1 = W1 of the radii
  (``>=``: ``|x|`` is 1-Lipschitz; ``<=``: couple the radii optimally and share the
  angle, cost ``|r - r'|``): W1(Rayleigh(1), N(r0, 0.01)) = 0.47943 by quadrature
  (the normal radius is negative with probability < 1e-40, ignored).
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


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _contamination(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float]:
    t = rng.standard_normal(d)
    t *= 5.0 / np.linalg.norm(t)
    b = rng.standard_normal((n, d))
    b[rng.random(n) < 0.1] += t
    return (rng.standard_normal((n, d)), b), 0.5


def _heavy_shift(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float]:
    t = rng.standard_normal(d)
    t /= np.linalg.norm(t)
    return (rng.standard_t(2.5, (n, d)), rng.standard_t(2.5, (n, d)) + t), 1.0


def _spike(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float, np.ndarray]:
    q = _rotation(d, rng)
    b = rng.standard_normal((n, d))
    b[:, 0] *= 2.0
    return (rng.standard_normal((n, d)), b @ q.T), math.sqrt(2 / math.pi), q[:, :1]


MIX = 0.95


def _line_truth() -> float:
    from scipy import integrate, stats

    s = math.sqrt(1 - MIX**2)

    def gap(t: float) -> float:
        mixture = 0.5 * (stats.norm.cdf((t - MIX) / s) + stats.norm.cdf((t + MIX) / s))
        return abs(stats.norm.cdf(t) - mixture)

    return integrate.quad(gap, -12, 12, limit=400, points=[-MIX, 0.0, MIX])[0]


def _one_direction(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float, np.ndarray]:
    q = _rotation(d, rng)
    b = rng.standard_normal((n, d))
    b[:, 0] = rng.choice([-MIX, MIX], n) + math.sqrt(1 - MIX**2) * rng.standard_normal(n)
    return (rng.standard_normal((n, d)) @ q.T, b @ q.T), _line_truth(), q[:, :1]


R0 = math.sqrt(1.99)


def _ring_truth() -> float:
    from scipy import integrate, stats

    def gap(t: float) -> float:
        return abs((1 - math.exp(-t * t / 2)) - stats.norm.cdf((t - R0) / 0.1))

    return integrate.quad(gap, 0, 12, limit=400, points=[R0 - 0.5, R0, R0 + 0.5])[0]


def _plane(n: int, d: int, rng: np.random.Generator) -> tuple[Pair, float, np.ndarray]:
    q = _rotation(d, rng)
    b = rng.standard_normal((n, d))
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = R0 + 0.1 * rng.standard_normal(n)
    b[:, 0], b[:, 1] = radius * np.cos(angle), radius * np.sin(angle)
    return (rng.standard_normal((n, d)) @ q.T, b @ q.T), _ring_truth(), q[:, :2]


STRUCTURED_FAMILIES: dict[str, Callable[..., tuple]] = {
    "epsilon-contamination: 10% of Q shifted by 5": _contamination,
    "Student t (2.5 dof) shifted by 1": _heavy_shift,
    "covariance spike: sd 2 along one direction": _spike,
    "equal mean and cov: bimodal along 1 direction": _one_direction,
    "equal mean and cov: ring in a 2-D plane": _plane,
}
#: (family, d) of the structured rows.
STRUCTURED: list[tuple[str, int]] = [
    ("epsilon-contamination: 10% of Q shifted by 5", 64),
    ("Student t (2.5 dof) shifted by 1", 16),
    ("covariance spike: sd 2 along one direction", 32),
    *(("equal mean and cov: bimodal along 1 direction", d) for d in (16, 32, 64)),
    *(("equal mean and cov: ring in a 2-D plane", d) for d in (16, 32, 64)),
]


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
    made = {**FAMILIES, **STRUCTURED_FAMILIES}[job.family](job.n, job.dim, rng)
    (a, b), truth = made[:2]
    planted = made[2] if len(made) > 2 else None
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
        "capture": _capture(p.directions, planted),
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


def _capture(directions, planted) -> float | None:
    """How much of the planted subspace the reported directions span:
    ``|V^T U|_F^2 / k`` (1: all of it; ``None`` without one or the other)."""
    if directions is None or planted is None:
        return None
    v = np.asarray(directions)
    return float(np.sum((v @ planted) ** 2) / planted.shape[1])


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _structured_row(rows: list[dict]) -> list:
    truth = rows[0]["truth"]
    ratios = [r["estimate"] / truth for r in rows]
    lows = [r["lower"] / truth for r in rows]
    covered = sum(r["lower"] <= truth <= r["upper"] for r in rows)
    captures = [r["capture"] for r in rows if r.get("capture") is not None]
    kept = {}
    for r in rows:
        for c in r["critics"]:
            kept[c] = kept.get(c, 0) + 1
    return [
        rows[0]["family"],
        rows[0]["dim"],
        f"{truth:.4g}",
        len(rows),
        f"{_mean(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]",
        f"{_mean(lows):.3f}",
        f"{covered}/{len(rows)}",
        f"{_mean([r['upper'] for r in rows]):.4g}",
        ", ".join(f"{c} ({k})" for c, k in sorted(kept.items())),
        f"{_mean(captures):.2f} ({len(captures)})" if captures else "-",
        f"{_mean([r['seconds'] for r in rows]):.1f}",
        f"{_mean([r['sliced'] / truth for r in rows]):.2f}",
    ]


STRUCTURED_HEADER = [
    "family",
    "d",
    "truth W1",
    "draws",
    "estimate / truth: mean [min, max]",
    "lower / truth (mean)",
    "coverage",
    "mean upper",
    "critics kept (draws)",
    "planted subspace captured (draws)",
    "s / estimate",
    "sliced W1 / truth",
]


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
    if args.structured:
        cases = STRUCTURED
    else:
        cases = [(family, d) for family in FAMILIES for d in args.dims]
    alternatives = 0 if args.structured else args.alt_draws
    jobs = [
        Job(family, d, draw, args.n, draw < alternatives, args.seed)
        for draw in range(args.draws)
        for family, d in cases
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
    if args.structured:
        rows = [_structured_row(results[key]) for key in cases if key in results]
        body = (
            f"n = {args.n} points per side, {args.draws} independent draws per row (the "
            "issue's target is 20: these rows were run with as many as the CPU time "
            f"allowed), {args.workers} worker processes with 1 torch thread each, default "
            "options (the default ladder includes projection and subspace). Truths proven "
            "in scripts/bench_population.py. Captured: |V^T U|_F^2 / k of the reported "
            "directions V and the planted subspace U (1: all of it), over the draws that "
            f"reported directions. Wall time {time.perf_counter() - start:.0f} s.\n\n"
            + markdown_table(STRUCTURED_HEADER, rows)
        )
        write_section(
            "bench_estimate_population_structured",
            "W1 between the distributions: structured differences (known truth)",
            body,
        )
        print(body)
        return
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
    parser.add_argument(
        "--structured",
        action="store_true",
        help="the structured rows (contamination, heavy tails, spike, equal moments)",
    )


__all__ = ["FAMILIES", "STRUCTURED", "STRUCTURED_FAMILIES", "add_arguments", "population"]
