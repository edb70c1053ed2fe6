"""W1 between samples under torch.distributed: 2 ranks x 1 thread against 1 rank x 1 thread.

For each size (Gaussian clouds, ``n`` points per side, dimension ``d``), the same
problem is run by a world of 1 and a world of 2 spawned processes (gloo, CPU, one
thread each):

* **pass**: :meth:`ShardedCost.row_pass <wassnet.ot.sharded.ShardedCost.row_pass>` (the
  fused float32 screen with exact float64 recomputation, 8 candidates per row, split
  by rows of A) against a realistic potential (one column pass of the zero potential);
  median seconds, pairs per second, and the bytes each pass sends (potential
  broadcast, rows gathered).
* **bracket**: ``estimate_w1(target="sample")`` end to end (warm start and sparse
  solves on rank 0, passes split), its bracket (checked identical between the worlds),
  passes, and the first pass count at which the bracket was within 1e-5.
* **bytes**: the seconds per byte of a gloo broadcast between the 2 ranks.

:func:`scaling_model` turns those measured costs into a prediction for a cluster
(default 8 nodes x 16 cores at n = 10M, d = 16), printed in the section.

    python scripts/bench_distributed.py [--sizes 100000x16,100000x64,1000000x16]
        [--repeats 3] [--no-write]

The default sizes take about an hour on 2 cores (the 1M bracket most of it); a smoke
run: ``--sizes 20000x16 --no-write``.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
from benchtools import markdown_table, write_section

PASS_K = 8  # pricing candidates per row, as the bracket's rounds ask in d >= 5


def _clouds(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)) * 1.2 + 0.3


def _pass_timing(n: int, d: int, repeats: int) -> dict[str, Any]:
    """Median seconds of a split row pass and its bytes (rank 0's numbers)."""
    from wassnet.ot import TiledCost, TransportProblem
    from wassnet.ot.sharded import ShardedCost, run_sharded

    a, b = _clouds(n, d)
    problem = TransportProblem.build(a, b)

    def lead() -> dict[str, Any]:
        cost = ShardedCost(TiledCost(problem))
        v, _ = cost.col_pass(torch.zeros(n, dtype=torch.float64))
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            cost.row_pass(v, PASS_K)
            seconds.append(time.perf_counter() - t0)
        return {"pass_s": statistics.median(seconds), "bytes": cost.traffic[-1]}

    return run_sharded(problem, lead)


def _bracket_timing(n: int, d: int) -> dict[str, Any]:
    from wassnet.w1 import estimate_w1

    a, b = _clouds(n, d)
    t0 = time.perf_counter()
    s = estimate_w1(a, b, target="sample").sample
    seconds = time.perf_counter() - t0
    within = [r for r in s.rounds if r["upper"] - r["lower"] <= 1e-5 * r["upper"]]
    to_tol = 2 + int(within[0]["round"]) if within else s.passes
    return {"bracket_s": seconds, "lower": s.lower, "upper": s.upper, "passes": s.passes,
            "passes_to_1e-5": to_tol, "route": s.route}  # fmt: skip


def _byte_timing(size: int = 2**24, repeats: int = 5) -> float:
    """Seconds per byte of a gloo broadcast of ``size`` bytes (0 in one process)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return 0.0
    buf = torch.zeros(size // 8, dtype=torch.float64)
    dist.broadcast(buf, src=0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.broadcast(buf, src=0)
    return (time.perf_counter() - t0) / (repeats * size)


def _rank_main(rank: int, world: int, port: int, out: str, job: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), WASSNET_DIST_TIMEOUT="3600")  # fmt: skip
    torch.set_num_threads(1)
    from wassnet import distributed

    distributed.init("cpu")
    n, d, repeats = job
    result = {**_pass_timing(n, d, repeats), **_bracket_timing(n, d)}
    result["byte_s"] = _byte_timing()
    distributed.shutdown()
    if rank == 0:
        Path(out).write_bytes(pickle.dumps(result))


def _measure(n: int, d: int, world: int, repeats: int) -> dict[str, Any]:
    """Rank 0's measurements in a world of ``world`` spawned processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.pkl")
        mp.start_processes(_rank_main, args=(world, port, out, (n, d, repeats)),
                           nprocs=world, start_method="spawn")  # fmt: skip
        return pickle.loads(Path(out).read_bytes())


def scaling_model(
    measured: dict[tuple[int, int, int], dict[str, Any]],
    *,
    nodes: int = 8,
    cores: int = 16,
    n: int = 10_000_000,
    d: int = 16,
    network_byte_s: float = 8e-10,
) -> dict[str, Any]:
    """Predicted seconds to a bracket within 1e-5 on ``nodes x cores`` ranks.

    From the measured one-rank pass (seconds per pair, in dimension ``d``), the bytes a
    pass sends (``8 n`` per potential and pricing threshold, through a broadcast tree
    of ``log2(ranks)`` hops; ``4 (2 + k) n`` gathered to rank 0), the per-byte cost
    (the larger of the measured loopback one and ``network_byte_s``, 10 Gb/s by
    default), the passes the largest measured bracket
    needed to reach 1e-5, and the serial rest of that bracket (warm start and sparse
    solves on rank 0: its time minus its passes), extrapolated to ``n`` by the power
    law of the two largest measured sizes in dimension ``d``.
    """
    rows = sorted((k, v) for k, v in measured.items() if k[1] == d and k[2] == 1)
    if not rows:
        raise ValueError(f"no one-rank measurement in d = {d}")
    (n1, _, _), one = rows[-1]
    ranks = nodes * cores
    per_pair = one["pass_s"] / n1**2
    two = measured.get((n1, d, 2), {})
    byte_s = max(two.get("byte_s", 0.0), network_byte_s)
    serial = [(k[0], v["bracket_s"] - v["passes"] * v["pass_s"]) for k, v in rows]
    if len(serial) >= 2 and serial[-2][1] > 0 and serial[-1][1] > 0:
        (na, sa), (nb, sb) = serial[-2], serial[-1]
        power = math.log(sb / sa) / math.log(nb / na)
    else:
        power = 1.0  # one size measured: linear in n (the sparse graph has ~k n pairs)
    rest = max(serial[-1][1], 0.0) * (n / n1) ** power
    compute = per_pair * n * n / ranks
    moved = 8 * n * 2 * math.ceil(math.log2(ranks)) + 4 * (2 + PASS_K) * n  # tree + gather
    comm = moved * byte_s
    passes = one["passes_to_1e-5"]
    parts = {"compute": passes * compute, "communication": passes * comm,
             "warm start and sparse solves (rank 0)": rest}  # fmt: skip
    return {"ranks": ranks, "n": n, "d": d, "passes": passes, "pass_compute_s": compute,
            "pass_comm_s": comm, "serial_power": power, "parts": parts,
            "total_s": sum(parts.values()), "dominant": max(parts, key=parts.get)}  # fmt: skip


def _tables(measured: dict[tuple[int, int, int], dict[str, Any]]) -> str:
    rows = []
    for (n, d, world), r in sorted(measured.items()):
        one = measured.get((n, d, 1))
        speed = one["pass_s"] / r["pass_s"] if one else float("nan")
        same = one is not None and (one["lower"], one["upper"]) == (r["lower"], r["upper"])
        rows.append([n, d, f"{world} x 1", f"{r['pass_s']:.3g}", f"{n * n / r['pass_s']:.3g}",
                     f"{speed:.2f}x", f"{r['bytes'] / 1e6:.3g}", f"{r['bracket_s']:.1f}",
                     r["passes"], "yes" if same else "-"])  # fmt: skip
    header = ["n", "d", "ranks x threads", "pass s", "pairs/s", "pass speed-up",
              "MB sent / pass", "bracket s", "passes", "same bracket"]  # fmt: skip
    return markdown_table(header, rows)


def _model_text(model: dict[str, Any]) -> str:
    parts = "; ".join(f"{k} {v:.3g} s" for k, v in model["parts"].items())
    return (
        f"Scaling model ({model['ranks']} ranks, n = {model['n']:,}, d = {model['d']}): "
        f"{model['passes']} passes to 1e-5, each {model['pass_compute_s']:.3g} s of compute "
        f"and {model['pass_comm_s']:.3g} s of communication; {parts}; predicted "
        f"{model['total_s']:.3g} s, dominated by {model['dominant']} (serial part grows as "
        f"n^{model['serial_power']:.2f}). If the sparse solve on rank 0 dominates, passes "
        "no longer matter: the solve itself must be split (a multilevel/blockwise plan whose "
        "blocks are solved on the ranks, or a distributed auction) and the warm start's "
        "levels sharded like the passes."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000x16,100000x64,1000000x16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    measured: dict[tuple[int, int, int], dict[str, Any]] = {}
    for size in args.sizes.split(","):
        n, d = (int(v) for v in size.split("x"))
        for world in (1, 2):
            measured[(n, d, world)] = _measure(n, d, world, args.repeats)
            print(n, d, world, measured[(n, d, world)], flush=True)
    body = _tables(measured)
    try:
        body += "\n\n" + _model_text(scaling_model(measured))
    except ValueError as exc:
        body += f"\n\nNo scaling model: {exc}."
    print(body)
    if not args.no_write:
        write_section("bench_distributed", "W1 bracket under torchrun: 2 ranks vs 1", body)


if __name__ == "__main__":
    main()
