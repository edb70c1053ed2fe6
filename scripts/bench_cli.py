"""How fast the command line answers: ``wassnet --help`` against importing click + NumPy.

Target (issue "runs that never lose work, one vocabulary"): ``wassnet --help`` within
2x the time of ``python -c "import click, numpy"``. The commands run alternately in
fresh processes (``--repeats`` each, medians), so machine load hits both alike; also
measured: each command group's ``--help`` and whether any of them imported torch.

    python scripts/bench_cli.py [--repeats 15] [--no-write]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from benchtools import markdown_table, write_section

BASELINE = [sys.executable, "-c", "import click, numpy"]
TORCH_CHECK = (
    "import sys; from click.testing import CliRunner; import wassnet.cli as c; "
    "CliRunner().invoke(c.main, sys.argv[1:]); print('torch' in sys.modules)"
)


def _wassnet() -> list[str]:
    exe = shutil.which("wassnet")
    return [exe] if exe else [sys.executable, "-m", "wassnet.cli"]


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def measure(repeats: int) -> list[list[object]]:
    """Rows: command, median seconds, ratio to the baseline, torch imported?"""
    commands = {
        "python -c 'import click, numpy'": BASELINE,
        "wassnet --help": [*_wassnet(), "--help"],
        "wassnet estimate --help": [*_wassnet(), "estimate", "--help"],
        "wassnet gan train --help": [*_wassnet(), "gan", "train", "--help"],
        "wassnet classify train --help": [*_wassnet(), "classify", "train", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd in commands.values():  # warm the file cache
        _time(cmd)
    for _ in range(repeats):
        for name, cmd in commands.items():
            times[name].append(_time(cmd))
    base = statistics.median(times["python -c 'import click, numpy'"])
    rows = []
    for name in commands:
        median = statistics.median(times[name])
        torch = "-"
        if name.startswith("wassnet"):
            check = [sys.executable, "-c", TORCH_CHECK, *name.split()[1:]]
            out = subprocess.run(check, capture_output=True, text=True, check=True).stdout
            torch = "yes" if out.strip().endswith("True") else "no"
        rows.append([f"`{name}`", f"{median * 1e3:.0f} ms", f"{median / base:.2f}x", torch])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rows = measure(args.repeats)
    table = markdown_table(["command", "median wall time", "ratio", "imports torch"], rows)
    body = (
        f"Fresh processes, alternating, {args.repeats} runs each (medians). Target: "
        "`wassnet --help` within 2x the baseline `python -c 'import click, numpy'`.\n\n" + table
    )
    print(body)
    if not args.no_write:
        write_section("bench_cli", "Command-line start-up (`--help`)", body)


if __name__ == "__main__":
    main()
