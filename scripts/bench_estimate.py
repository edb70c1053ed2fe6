"""Benchmark of `wassnet estimate`: tightness against exact OT, scale, held-out mode.

    python scripts/bench_estimate.py tightness --sizes 2000 5000
    python scripts/bench_estimate.py scale --sizes 20000 100000 1000000 --dims 16 64
    python scripts/bench_estimate.py holdout

Each section writes its own table into BENCHMARKS.md (machine, command, date).

* tightness: certified lower / exact and upper / exact, against POT's exact W1
  (``ot.emd2``, result code checked), on a suite covering d = 2, 16, 64, 784
  (MNIST digits from ``--data-root``, default ``../shared/data``, copied to a
  temporary root) and several shapes; ours and POT's times side by side.
* scale: time, peak memory (RSS of a fresh child process) and bracket width at large
  n, next to POT's sliced W1 and Sinkhorn (approximate alternatives) where they run.
* holdout: translation pairs whose population W1 is the shift's norm exactly.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchtools import ROOT, markdown_table, write_section

Pair = tuple[np.ndarray, np.ndarray]


def _gaussians(n: int, d: int, rng: np.random.Generator) -> Pair:
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d) + 0.5
    return a, b


def _mixture_vs_ring(n: int, d: int, rng: np.random.Generator) -> Pair:
    centers = np.array([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    a = centers[rng.integers(0, 4, n)] + 0.3 * rng.standard_normal((n, 2))
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 2.0 + 0.1 * rng.standard_normal(n)
    return a, np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)


def _uniform_vs_shifted(n: int, d: int, rng: np.random.Generator) -> Pair:
    return rng.uniform(0, 1, (n, d)), rng.uniform(0, 1, (n, d)) + 0.3


def _sphere_vs_point(n: int, d: int, rng: np.random.Generator) -> Pair:
    g = rng.standard_normal((n, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True), np.zeros((n, d))


def _mixture_vs_gaussian(n: int, d: int, rng: np.random.Generator) -> Pair:
    centers = 3.0 * rng.standard_normal((5, d)) / np.sqrt(d)
    a = centers[rng.integers(0, 5, n)] + 0.5 * rng.standard_normal((n, d))
    return a, 1.2 * rng.standard_normal((n, d))


def _mnist(
    digit_a: int, digit_b: int, data_root: Path
) -> Callable[[int, int, np.random.Generator], Pair]:
    def make(n: int, d: int, rng: np.random.Generator) -> Pair:
        import torchvision

        with tempfile.TemporaryDirectory() as root:
            shutil.copytree(data_root / "MNIST", Path(root) / "MNIST")
            ds = torchvision.datasets.MNIST(root, train=True, download=True)
            x = ds.data.numpy().reshape(len(ds), -1).astype(np.float64) / 255.0
            y = ds.targets.numpy()
        ia = rng.choice(np.flatnonzero(y == digit_a), n, replace=False)
        ib = rng.choice(np.flatnonzero(y == digit_b), n, replace=False)
        return x[ia], x[ib]

    return make


def _suite(data_root: Path) -> list[tuple[str, int, Callable]]:
    return [
        ("mixture vs ring", 2, _mixture_vs_ring),
        ("Gaussians, different covariances", 2, _gaussians),
        ("Gaussians, different covariances", 16, _gaussians),
        ("uniform cube vs shifted cube", 16, _uniform_vs_shifted),
        ("Gaussians, different covariances", 64, _gaussians),
        ("5-mode mixture vs Gaussian", 64, _mixture_vs_gaussian),
        ("unit sphere vs a point", 64, _sphere_vs_point),
        ("MNIST 3 vs 8", 784, _mnist(3, 8, data_root)),
    ]


def tightness(args: argparse.Namespace) -> None:
    from wassnet.estimate import estimate_w1

    from wassnet.ot import exact_w1

    for n in args.sizes:
        rows = []
        for name, d, make in _suite(args.data_root):
            a, b = make(n, d, np.random.default_rng(args.seed))
            t0 = time.perf_counter()
            exact = exact_w1(a, b)
            t_exact = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = estimate_w1(a, b, exact="never", steps=args.steps, seed=args.seed, progress=False)
            t_ours = time.perf_counter() - t0
            inside = r.lower <= exact * (1 + 1e-9) and exact <= r.upper * (1 + 1e-9)
            rows.append(
                [
                    name,
                    d,
                    n,
                    f"{exact:.5g}",
                    f"{r.lower / exact:.4f}",
                    f"{r.upper / exact:.4f}",
                    "yes" if inside else "**NO**",
                    f"{r.critic_lower / exact:.3f}",
                    f"{t_ours:.1f}",
                    f"{t_exact:.1f}",
                ]
            )
            print(rows[-1], flush=True)
            table = markdown_table(
                [
                    "pair",
                    "d",
                    "n = m",
                    "exact W1",
                    "lower / exact",
                    "upper / exact",
                    "exact inside",
                    "critic alone / exact",
                    "ours s",
                    "POT exact s",
                ],
                rows,
            )
            body = (
                table + "\n\nTargets: lower/exact >= 0.99 for d <= 16 and >= 0.97 for d = 64, 784; "
                "upper/exact <= 1.02; exact always inside. `critic alone` is the network's dual "
                "value divided by its certified Lipschitz bound, before any refinement on the "
                f"points. Critic: {args.steps} Adam steps, default widths."
            )
            title = f"W1 estimate: tightness against exact OT, n = {n}"
            write_section(f"bench_estimate_tightness_{n}", title, body)


def _scale_child(
    n: int, d: int, steps: int, seed: int, threads: int, method: str, queue: mp.Queue
) -> None:
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    a, b = _gaussians(n, d, rng)
    t0 = time.perf_counter()
    if method == "wassnet":
        from wassnet.estimate import estimate_w1

        r = estimate_w1(a, b, exact="never", steps=steps, seed=seed, progress=False)
        out = {
            "lower": r.lower,
            "upper": r.upper,
            "method": r.upper_method,
            "train": r.timings["train"],
            "bracket": r.timings["bracket"],
        }
    elif method == "exact":
        from wassnet.ot import exact_w1

        out = {"value": exact_w1(a, b)}
    elif method == "sliced":
        import ot

        out = {
            "value": float(ot.sliced_wasserstein_distance(a, b, n_projections=200, p=1, seed=seed))
        }
    else:
        import ot

        out = {
            "value": float(
                ot.bregman.empirical_sinkhorn2(
                    a, b, reg=0.1, metric="euclidean", isLazy=True, batchSize=1000, numIterMax=100
                )
            )
        }
    out["time"] = time.perf_counter() - t0
    out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put(out)


def _in_child(*args: object, timeout: float) -> dict | None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_scale_child, args=(*args, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        return None
    return queue.get() if not queue.empty() else None


def scale(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)  # as in the children: the header says so
    for d in args.dims:
        rows = []
        for n in args.sizes:
            common = (n, d, args.steps, args.seed, args.threads)
            ours = _in_child(*common, "wassnet", timeout=args.timeout)
            exact = _in_child(*common, "exact", timeout=args.timeout) if n <= args.pot_max else None
            sliced = _in_child(*common, "sliced", timeout=args.timeout)
            sink = (
                _in_child(*common, "sinkhorn", timeout=args.timeout)
                if n <= args.sinkhorn_max
                else None
            )
            pot_gb = (0.3e9 + 40.0 * n * n) / 2**30

            def fmt(res: dict | None, key: str) -> str:
                return "timeout" if res is None else f"{res[key]:.4g}"

            width = (
                "—" if ours is None else f"{(ours['upper'] - ours['lower']) / ours['upper']:.2%}"
            )
            if n > args.pot_max:
                pot_exact, pot_time = "not run", "—"
            else:
                pot_exact, pot_time = fmt(exact, "value"), fmt(exact, "time")
            rows.append(
                [
                    d,
                    n,
                    fmt(ours, "lower"),
                    fmt(ours, "upper"),
                    width,
                    "—" if ours is None else ours["method"],
                    fmt(ours, "time"),
                    "—" if ours is None else f"{ours['train']:.0f} + {ours['bracket']:.0f}",
                    fmt(ours, "peak_gb"),
                    pot_exact,
                    pot_time,
                    f"{pot_gb:.1f}",
                    fmt(sliced, "value"),
                    fmt(sliced, "time"),
                    "not run" if n > args.sinkhorn_max else fmt(sink, "value"),
                    "—" if sink is None else fmt(sink, "time"),
                ]
            )
            print(rows[-1], flush=True)
            table = markdown_table(
                [
                    "d",
                    "n = m",
                    "lower",
                    "upper",
                    "gap",
                    "upper from",
                    "ours s",
                    "critic + bracket s",
                    "ours peak GB",
                    "POT exact W1",
                    "POT exact s",
                    "POT exact GB (extrapolated)",
                    "sliced W1 (POT)",
                    "sliced s",
                    "Sinkhorn eps=0.1 (POT)",
                    "Sinkhorn s",
                ],
                rows,
            )
            body = (
                table + "\n\nPairs: N(0, I) vs N(0.5, diag(linspace(0.5, 2))). POT's dense exact "
                "solver peaks near 0.3 GB + 40 bytes * n^2, so it does not fit 24 GiB past "
                f"n ~ 25 000; it runs here up to n = {args.pot_max}. Torch threads: "
                f"{args.threads}. Sliced W1 (200 projections) and entropic Sinkhorn are not "
                "bounds on W1: sliced W1 is below it, Sinkhorn's cost is regularized. Peak memory "
                "is the child process's max RSS. `timeout`: no result within "
                f"{args.timeout:g} s (or the child died)."
            )
            write_section(f"bench_estimate_scale_d{d}", f"W1 estimate: scale, d = {d}", body)


def holdout(args: argparse.Namespace) -> None:
    from wassnet.estimate import estimate_w1

    rows = []
    for d, shift_norm in ((2, 1.0), (16, 1.0), (64, 2.0)):
        rng = np.random.default_rng(args.seed)
        t = np.zeros(d)
        t[0] = shift_norm
        a = rng.standard_normal((args.holdout_n, d))
        b = rng.standard_normal((args.holdout_n, d)) + t
        r = estimate_w1(
            a,
            b,
            holdout=0.3,
            exact="never",
            refine=False,
            steps=args.steps,
            seed=args.seed,
            progress=False,
        )
        h = r.holdout
        rows.append(
            [
                d,
                args.holdout_n,
                shift_norm,
                f"{h.value:.4f}",
                f"[{h.ci_low:.4f}, {h.ci_high:.4f}]",
                f"{h.value / shift_norm:.3f}",
                f"{r.lower:.4f}",
                f"{r.upper:.4f}",
            ]
        )
        print(rows[-1], flush=True)
    table = markdown_table(
        [
            "d",
            "n = m",
            "true W1 (populations)",
            "held-out dual",
            "95% CI",
            "held-out / truth",
            "sample bracket lower",
            "sample bracket upper",
        ],
        rows,
    )
    body = (
        table + "\n\nPairs: N(0, I) and N(t, I), W1 = |t| exactly. 30% held out. The "
        "sample bracket is for the two finite samples, whose W1 exceeds the population's "
        "(sampling noise grows with d)."
    )
    write_section("bench_estimate_holdout", "W1 estimate: held-out mode, known truth", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["tightness", "scale", "holdout"])
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--sinkhorn-max", type=int, default=20000)
    parser.add_argument("--pot-max", type=int, default=20000, help="largest n for POT exact")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per child")
    parser.add_argument("--holdout-n", type=int, default=5000)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [2000, 5000] if args.section == "tightness" else [20000, 100000, 1000000]
    {"tightness": tightness, "scale": scale, "holdout": holdout}[args.section](args)


if __name__ == "__main__":
    main()
