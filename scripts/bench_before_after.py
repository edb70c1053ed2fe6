"""The W1 sample bracket's speed before and after a change: two source trees, same inputs.

For each pair of ``bench_estimate.py``'s speed suite and each ``--sizes`` n, the
certified sample bracket (``estimate_w1(target="sample")``, the ``speed`` tables' "ours")
is timed in fresh processes importing wassnet from the baseline tree (``--baseline``,
e.g. a ``git worktree`` of the commit before the change) and from ``--tree`` (default:
this checkout), alternately (baseline, after, baseline, after, ...), ``--rounds`` times
each. The time is the process CPU time of the call: on the shared machine other jobs'
load moves wall time by 2-4x and one thread's CPU time much less. The row keeps the best
time of each side and their ratio. The brackets must agree (same lower and upper ends):
a speed-up that changed a certified number is reported as such.

    git worktree add /tmp/before <commit>
    python scripts/bench_before_after.py --baseline /tmp/before [--sizes 2000 5000 10000]

Writes the section ``bench_before_after`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchtools import ROOT, markdown_table, write_section

HERE = Path(__file__).resolve().parent


def _child(case_index: int, n: int, threads: int, data_root: str) -> None:
    """Runs in a fresh process whose ``PYTHONPATH`` picks the tree; prints one JSON line."""
    import time

    import torch
    from bench_estimate import SUITE, _ours

    torch.set_num_threads(threads)
    case = SUITE[case_index]
    (a, b), weights = case.data(n, 0, Path(data_root))
    wa, wb = weights if weights is not None else (None, None)
    args = {"time_budget": None, "seed": 0, "metric": "euclidean"}
    _ours(a[:50], b[:50], None if wa is None else wa[:50], None if wb is None else wb[:50], args)
    t0, c0 = time.perf_counter(), time.process_time()
    out = _ours(a, b, wa, wb, args)
    out["wall"], out["time"] = time.perf_counter() - t0, time.process_time() - c0
    import wassnet

    out["tree"] = str(Path(wassnet.__file__).parent.parent)
    print(json.dumps(out))


def _time(tree: Path, case_index: int, n: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{HERE}", OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, __file__, "--child", str(case_index), str(n)]
    cmd += ["--threads", str(args.threads), "--data-root", str(args.data_root)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(out["tree"]).resolve() != tree.resolve():
        raise RuntimeError(f"the child imported wassnet from {out['tree']}, not {tree}")
    return out


def _row(case, n: int, args: argparse.Namespace, index: int) -> tuple[list, float]:
    before, after = [], []
    for _ in range(args.rounds):
        before.append(_time(args.baseline, index, n, args))
        after.append(_time(args.tree, index, n, args))
    same = all(
        (b["lower"], b["upper"]) == (a["lower"], a["upper"])
        for b, a in zip(before, after, strict=True)
    )
    t_before = min(r["time"] for r in before)
    t_after = min(r["time"] for r in after)
    ratio = t_after / t_before
    row = [case.label(), case.dim, n, f"{t_before:.3g}", f"{t_after:.3g}", f"{ratio:.2f}"]
    return [*row, after[0]["route"], "yes" if same else "**no**"], ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="the tree after the change (default: this one)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    if args.child is not None:
        _child(*args.child, args.threads, str(args.data_root))
        return
    if args.baseline is None:
        parser.error("--baseline is required")
    from bench_estimate import SUITE

    rows, ratios = [], []
    for n in args.sizes:
        for index, case in enumerate(SUITE):
            if n <= case.max_n:
                row, ratio = _row(case, n, args, index)
                rows.append(row)
                ratios.append(ratio)
                print(row, flush=True)
    header = ["pair", "d", "n", "before CPU s", "after CPU s", "after / before", "route"]
    header.append("same bracket")
    body = (
        markdown_table(header, rows)
        + f"\n\nBaseline tree: `{args.baseline}`; after: `{args.tree}`. Best of "
        f"{args.rounds} fresh processes per side, run alternately; process CPU "
        "seconds of one `estimate_w1(target='sample')` call "
        f"(imports and a 50-point warm-up excluded), {args.threads} torch thread(s). Median "
        f"after / before: **{statistics.median(ratios):.2f}**, worst **{max(ratios):.2f}**."
        + (f" {args.note}" if args.note else "")
    )
    write_section("bench_before_after", "W1 sample bracket: before / after a change", body)


if __name__ == "__main__":
    main()
