"""``wassnet estimate --time-budget``: wall time and bracket of the issue's two cases.

1. ``--target sample`` on two uniform random clouds of ``--points`` points in the plane
   (B shifted by (0.1, 0.1): W1 is about 0.1414);
2. ``--route blockwise`` on a memory-mapped float32 ``.npy`` of ``--mapped`` points in
   the plane against 10 points.

Each command runs as a fresh process (interpreter start-up and imports included, as a
user sees it); the table (machine, command, date, wall time, bracket, what the budget
allowed) goes to BENCHMARKS.md under "Time budget".

    python scripts/bench_budget.py [--points 1000000] [--mapped 40000000] [--budget 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchtools import markdown_table, write_section


def _clouds(folder: Path, points: int, mapped: int) -> list[tuple[str, list[str]]]:
    """The input files and the two commands' arguments (after ``wassnet estimate``)."""
    rng = np.random.default_rng(0)
    np.save(folder / "a.npy", rng.random((points, 2)))
    np.save(folder / "b.npy", rng.random((points, 2)) + 0.1)
    big = np.lib.format.open_memmap(
        folder / "mapped.npy", mode="w+", dtype=np.float32, shape=(mapped, 2)
    )
    for start in range(0, mapped, 1 << 22):
        stop = min(mapped, start + (1 << 22))
        big[start:stop] = rng.random((stop - start, 2), dtype=np.float32)
    big.flush()
    del big
    np.save(folder / "ten.npy", rng.random((10, 2)))
    return [
        (f"{points:.0e} x 2 per side", ["a.npy", "b.npy", "--target", "sample"]),
        (
            f"memory-mapped {mapped:.0e} x 2 float32 vs 10",
            ["mapped.npy", "ten.npy", "--route", "blockwise", "--target", "sample"],
        ),
    ]


def _run(folder: Path, args: list[str], budget: float) -> tuple[float, dict]:
    wassnet = str(Path(sys.executable).with_name("wassnet"))  # the venv's entry point
    command = [wassnet, "estimate", *args, "--time-budget", f"{budget:g}", "--quiet", "--json"]
    start = time.perf_counter()
    out = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(out.stdout)["sample"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--mapped", type=int, default=40_000_000)
    parser.add_argument("--budget", type=float, default=5.0)
    args = parser.parse_args()
    rows = []
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, cmd in _clouds(folder, args.points, args.mapped):
            wall, sample = _run(folder, cmd, args.budget)
            shown = " ".join(["wassnet estimate", *cmd, "--time-budget", f"{args.budget:g}"])
            bracket = f"[{sample['lower']:.6g}, {sample['upper']:.6g}]"
            rows.append([label, f"`{shown}`", date, f"{wall:.2f}", bracket, sample["budget"]])
            print(label, f"{wall:.2f} s", bracket, sample["budget"], file=sys.stderr)
    body = (
        markdown_table(
            ["case", "command", "date", "wall s", "bracket", "what the budget allowed"], rows
        )
        + "\n\nWall time of a fresh process (start-up, imports and loading included); the "
        "budget's clock starts in the command, before the files are loaded.\n"
    )
    write_section("bench_budget", "Time budget", body)


if __name__ == "__main__":
    main()
