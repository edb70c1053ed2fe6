"""Shared helpers for the benchmark scripts: machine facts and BENCHMARKS.md sections.

Each script owns one section of ``BENCHMARKS.md``, delimited by HTML comments
``<!-- NAME:start -->`` / ``<!-- NAME:end -->``; :func:`write_section` replaces that
section (or appends it), stamped with the machine, the command and the date.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """One line describing where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores (torch threads: {torch.get_num_threads()}), {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def command() -> str:
    return "python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- {name}:start -->\n## {title}\n\n"
        f"- machine: {machine()}\n- command: `{command()}`\n- date: {stamp}\n\n"
        f"{body.strip()}\n<!-- {name}:end -->"
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n\nMeasured, never assumed.\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def median_time(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds (synchronizing CUDA when used)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def shuffled_batches(
    images: torch.Tensor, labels: torch.Tensor, batch: int, seed: int
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A function returning the next training batch of a seeded epoch order, reshuffled
    when an epoch runs out (the stream every equal-budget row trains on)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    state = {"order": torch.randperm(n, generator=gen), "cursor": 0}

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        if state["cursor"] + batch > n:
            state["order"], state["cursor"] = torch.randperm(n, generator=gen), 0
        idx = state["order"][state["cursor"] : state["cursor"] + batch]
        state["cursor"] += batch
        return images[idx], labels[idx]

    return next_batch
