"""Benchmark of `wassnet estimate --target sample` against POT's exact solver.

    python scripts/bench_estimate.py speed --sizes 2000 5000 10000 20000
    python scripts/bench_estimate.py speed --metric cityblock --sizes 2000 5000 10000
    python scripts/bench_estimate.py scale --sizes 100000 --dims 16 64
    python scripts/bench_estimate.py scale --sizes 1000000 --dims 16 --time-budget 1800
    python scripts/bench_estimate.py population --draws 20 --workers 2

Each section writes its own table into BENCHMARKS.md (machine, command, date).

* speed: one suite of problem pairs (d = 2, 16, 64, 784; Gaussians, mixtures, a sphere,
  MNIST classes from ``--data-root``; uniform with n == m, and weighted with m = 0.8 n),
  ours and POT's exact solver side by side, each in a fresh child process (so that the
  peak RSS is the row's own). POT's time includes the ``cdist`` cost matrix
  (``ot.dist(metric="euclidean")`` then ``ot.emd2``); imports are not timed; above
  ``--pot-dense-max`` points it is ``ot.emd2_lazy`` (no matrix), under a time limit.
  Ours: ``estimate_w1(target="sample")`` with default options (bracket closed to
  1e-9 relative), POT's value must lie inside it (checked, column "exact inside").
  ``--metric cityblock|chebyshev``: both sides with that ground cost (POT's
  ``ot.dist(metric=...)``), tables in their own sections.
* scale: ours only (POT's dense solver does not fit 24 GiB past n ~ 25 000), time,
  passes over all pairs, bracket width and peak memory.
* population: W1 between the distributions on known-truth families, coverage over
  independent draws (:mod:`bench_population`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_population import add_arguments as population_arguments
from bench_population import population
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


def _mnist(digit_a: int, digit_b: int, data_root: Path) -> Callable[..., Pair]:
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


@dataclass(frozen=True)
class Case:
    """One problem pair of the suite: ``weighted`` draws weights in [0.1, 1.1) and
    keeps ``0.8 n`` points of B (n != m)."""

    name: str
    dim: int
    make: Callable[..., Pair]
    weighted: bool = False
    max_n: int = 10**9

    def data(self, n: int, seed: int, data_root: Path) -> tuple[Pair, Pair | None]:
        rng = np.random.default_rng(seed)
        make = self.make(data_root) if self.make is _mnist_38 else self.make
        a, b = make(n, self.dim, rng)
        if not self.weighted:
            return (a, b), None
        b = b[: int(0.8 * n)]
        return (a, b), (rng.uniform(0.1, 1.1, len(a)), rng.uniform(0.1, 1.1, len(b)))

    def label(self) -> str:
        return f"{self.name}{', weighted, m = 0.8 n' if self.weighted else ''}"


def _mnist_38(data_root: Path) -> Callable[..., Pair]:
    return _mnist(3, 8, data_root)


SUITE = [
    Case("mixture vs ring", 2, _mixture_vs_ring),
    Case("Gaussians", 2, _gaussians, max_n=10000),
    Case("Gaussians", 2, _gaussians, weighted=True, max_n=5000),
    Case("Gaussians", 16, _gaussians),
    Case("Gaussians", 16, _gaussians, weighted=True),
    Case("cube vs shifted cube", 16, _uniform_vs_shifted, max_n=5000),
    Case("Gaussians", 64, _gaussians, max_n=10000),
    Case("5-mode mixture vs Gaussian", 64, _mixture_vs_gaussian, weighted=True, max_n=5000),
    Case("unit sphere vs a point", 64, _sphere_vs_point, max_n=2000),
    Case("MNIST 3 vs 8", 784, _mnist_38, max_n=5000),
]


# ---------------------------------------------------------------------------------------
# children: one measurement per fresh process (peak RSS is the row's own)


def _child(job: str, case: Case, n: int, args: dict, queue: mp.Queue) -> None:
    import ot  # noqa: F401  (imports are not timed, for either side)
    import torch

    import wassnet.w1.estimate  # noqa: F401

    torch.set_num_threads(args["threads"])
    (a, b), weights = case.data(n, args["seed"], args["data_root"])
    wa, wb = weights if weights is not None else (None, None)
    run = _ours if job == "ours" else _pot
    # warm-up on 50 points (first-call costs: lazy imports, torch's kernel set-up)
    run(a[:50], b[:50], None if wa is None else wa[:50], None if wb is None else wb[:50], args)
    times = []
    for _ in range(args["repeats"] if len(a) <= args["repeat_max"] else 1):
        t0 = time.perf_counter()
        out = run(a, b, wa, wb, args)
        times.append(time.perf_counter() - t0)
    out["time"] = min(times)
    out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put(out)


def _ours(a: np.ndarray, b: np.ndarray, wa, wb, args: dict) -> dict:
    from wassnet import SampleOptions, estimate_w1

    options = SampleOptions(time_budget=args["time_budget"])
    s = estimate_w1(
        a, b, wa, wb, target="sample", sample=options, seed=args["seed"], metric=args["metric"]
    ).sample
    return {"lower": s.lower, "upper": s.upper, "route": s.route, "passes": s.passes}


def _pot(a: np.ndarray, b: np.ndarray, wa, wb, args: dict) -> dict:
    import ot

    wa = np.full(len(a), 1 / len(a)) if wa is None else wa / wa.sum()
    wb = np.full(len(b), 1 / len(b)) if wb is None else wb / wb.sum()
    if len(a) <= args["pot_dense_max"]:
        cost = ot.dist(a, b, metric=args["metric"])
        value, log = ot.emd2(wa, wb, cost, numItermax=10**9, log=True)
        how = "emd2 + cdist"
    else:
        value, log = ot.emd2_lazy(a, b, wa, wb, metric=args["metric"], numItermax=10**9, log=True)
        how = "emd2_lazy"
    return {"value": float(value), "status": log.get("warning") or "optimal", "how": how}


def _in_child(job: str, case: Case, n: int, args: dict, timeout: float) -> dict | None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(job, case, n, args, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    return queue.get() if not queue.empty() else None


def _child_args(args: argparse.Namespace) -> dict:
    return {
        "threads": args.threads,
        "seed": args.seed,
        "data_root": args.data_root,
        "time_budget": args.time_budget,
        "pot_dense_max": args.pot_dense_max,
        "repeats": args.repeats,
        "repeat_max": args.repeat_max,
        "metric": args.metric,
    }


# ---------------------------------------------------------------------------------------
# sections


def _width(ours: dict) -> float:
    return (ours["upper"] - ours["lower"]) / ours["upper"] if ours["upper"] > 0 else 0.0


def _speed_row(case: Case, n: int, ours: dict | None, pot: dict | None, limit: float) -> list:
    def fmt(res: dict | None, key: str, spec: str = ".3g") -> str:
        return f"> {limit:g} s" if res is None else format(res[key], spec)

    if ours is None or pot is None:
        inside, ratio = "—", "—"
    else:
        exact = pot["value"]
        inside = ours["lower"] <= exact * (1 + 1e-12) and exact <= ours["upper"] * (1 + 1e-12)
        inside = "yes" if inside else "**NO**"
        ratio = f"{ours['time'] / pot['time']:.2f}"
    return [
        case.label(), case.dim, n, fmt(ours, "time"), fmt(pot, "time"), ratio,
        "—" if ours is None else f"{_width(ours):.1e}", inside,
        "—" if ours is None else ours["route"], "—" if ours is None else ours["passes"],
        fmt(ours, "peak_gb", ".2f"), fmt(pot, "peak_gb", ".2f"),
        "—" if pot is None else pot["how"],
    ]  # fmt: skip


SPEED_HEADER = [
    "pair", "d", "n", "ours s", "POT s", "ours / POT", "relative width", "exact inside",
    "route", "passes", "ours peak GB", "POT peak GB", "POT solver",
]  # fmt: skip


def speed(args: argparse.Namespace) -> None:
    child = _child_args(args)
    for n in args.sizes:
        rows, ratios = [], []
        for case in (c for c in SUITE if n <= c.max_n):
            ours = _in_child("ours", case, n, child, args.timeout)
            pot = _in_child("pot", case, n, child, args.timeout)
            rows.append(_speed_row(case, n, ours, pot, args.timeout))
            if ours is not None and pot is not None:
                ratios.append(ours["time"] / pot["time"])
            print(rows[-1], flush=True)
        median = statistics.median(ratios) if ratios else float("nan")
        body = (
            markdown_table(SPEED_HEADER, rows)
            + f"\n\nMedian ours / POT over the {len(ratios)} rows: **{median:.2f}**. "
            f"Torch threads: {args.threads}. Times are wall seconds inside a fresh process "
            "(imports excluded, both sides warmed up on 50 points first), the best of "
            f"{args.repeats} runs up to n = {args.repeat_max} (the machine is shared); POT's "
            "include its cost matrix. `passes`: passes over all n m pairs (over the held "
            "matrix on the dense route). Peak GB: the child's max RSS (Python, torch and the "
            "data included)."
        )
        if args.metric == "euclidean":
            write_section(f"bench_estimate_speed_n{n}", f"W1 sample bracket vs POT, n = {n}", body)
        else:
            write_section(
                f"bench_estimate_speed_{args.metric}_n{n}",
                f"W1 sample bracket vs POT, {args.metric} cost, n = {n}",
                body,
            )


def scale(args: argparse.Namespace) -> None:
    child = _child_args(args)
    case = SUITE[3]  # Gaussians, uniform, n == m
    for d in args.dims:
        rows = []
        for n in args.sizes:
            ours = _in_child("ours", Case(case.name, d, case.make), n, child, args.timeout)
            rows.append(
                [d, n, "timeout" if ours is None else f"{ours['lower']:.6g}",
                 "—" if ours is None else f"{ours['upper']:.6g}",
                 "—" if ours is None else f"{_width(ours):.2e}",
                 "—" if ours is None else ours["route"], "—" if ours is None else ours["passes"],
                 f"> {args.timeout:g}" if ours is None else f"{ours['time']:.0f}",
                 "—" if ours is None else f"{ours['peak_gb']:.2f}",
                 f"{(0.3e9 + 40.0 * n * n) / 2**30:.0f}"]
            )  # fmt: skip
            print(rows[-1], flush=True)
        header = ["d", "n = m", "lower", "upper", "relative width", "route", "passes",
                  "ours s", "ours peak GB", "POT dense GB (extrapolated)"]  # fmt: skip
        budget = "none" if args.time_budget is None else f"{args.time_budget:g} s"
        body = (
            markdown_table(header, rows)
            + "\n\nPairs: N(0, I) vs N(0.5, diag(linspace(0.5, 2))), uniform weights. "
            f"Torch threads: {args.threads}; time budget: {budget}. POT's dense exact solver "
            "peaks near 0.3 GB + 40 bytes * n^2, beyond this machine's 24 GiB."
        )
        sizes = "_".join(str(n) for n in args.sizes)
        write_section(f"bench_estimate_scale_d{d}_n{sizes}", f"W1 sample bracket at scale, "
                      f"d = {d}, n = {', '.join(map(str, args.sizes))}", body)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["speed", "scale", "population"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 20000])
    parser.add_argument(
        "--dims", type=int, nargs="+", help="default: 16 64 (population: 2 16 64 128)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--metric", choices=["euclidean", "cityblock", "chebyshev"], default="euclidean"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per child, seconds")
    parser.add_argument("--time-budget", type=float, default=None, help="ours, seconds")
    parser.add_argument("--pot-dense-max", type=int, default=25000)
    parser.add_argument("--repeats", type=int, default=3, help="best of, for small n")
    parser.add_argument("--repeat-max", type=int, default=5000, help="largest n repeated")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per child")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    population_arguments(parser)
    args = parser.parse_args()
    if args.dims is None:
        args.dims = [2, 16, 64, 128] if args.section == "population" else [16, 64]
    {"speed": speed, "scale": scale, "population": population}[args.section](args)


if __name__ == "__main__":
    main()
