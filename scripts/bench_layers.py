"""Layer speed: Björck dense and BCOP conv layers against plain torch layers.

What it measures, for each layer shape, with all candidates timed side by side:

* **training step**: forward on a batch, ``.sum().backward()`` (no optimizer) of
  ``wassnet.nn.BjorckLinear`` (defaults: 20 iterations, order 1), plain ``nn.Linear``
  and ``torch.nn.utils.parametrizations.orthogonal(nn.Linear)``; of
  ``wassnet.nn.BCOPConv2d`` (circular padding, stride 1) and plain circular
  ``nn.Conv2d``; and, when ``deel-torchlip`` is importable, of its ``SpectralLinear``
  and ``SpectralConv2d`` (skipped with the reason printed when it is not);
* **inference** (eval mode, ``torch.no_grad()``): each layer after export to a plain
  layer (``wassnet.nn.export``; deel's own ``vanilla_export``), and the parametrized
  layer itself inside ``torch.nn.utils.parametrize.cached()``.

Every time is reported in ms and as a ratio to the plain layer of the same shape. The
machine is shared and noisy, so candidates are timed in interleaved rounds (one timed
call batch per candidate per round, rotating the order), each ratio is taken within a
round and the table gives the median over rounds (with the quartiles).

Run from the repository root (takes about 2-3 minutes on 2 CPU cores)::

    python scripts/bench_layers.py            # writes the bench_layers section of BENCHMARKS.md
    python scripts/bench_layers.py --quick --out /tmp/BENCHMARKS.md   # smoke run
    python scripts/bench_layers.py --equal-time --budget-min 15 --jobs 2   # the bake-off

``--equal-time`` runs the equal-CPU-time bake-off of the layer families instead
(``scripts/bake_off.py``: throughput at batch 256, clean and certified accuracy after the
same CPU budget, certified bound, PGD check; its own section of BENCHMARKS.md).

Uses the GPU when ``torch.cuda.is_available()`` (``--device`` overrides). On a busy shared
CPU, ``--threads 1`` gives steadier ratios (another job holding one core stalls torch's
multi-threaded kernels, which inflates the short plain-layer timings most).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType

import torch
from benchtools import BENCHMARKS, markdown_table, median_time, write_section
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal

import wassnet.nn as wn

SECTION = "bench_layers"
TITLE = "Layer speed: Björck dense and BCOP conv vs plain layers"
PLAIN = "plain"


@dataclass(frozen=True)
class Plan:
    """How long to time one group of candidates."""

    min_rounds: int
    max_rounds: int
    budget_s: float  # keep adding rounds (up to max_rounds) while within this budget
    target_s: float  # one timed batch of calls lasts about this long (fast calls are repeated)


@dataclass
class Candidate:
    """One layer to time, with how to export it to a plain layer."""

    name: str
    module: nn.Module
    export: Callable[[nn.Module], nn.Module]
    parametrized: bool = True
    exported: nn.Module | None = field(default=None, repr=False)


@dataclass
class Group:
    """Candidates sharing one input shape; the first one is the plain reference layer."""

    kind: str  # "dense" or "conv"
    shape: str
    x: torch.Tensor
    candidates: list[Candidate]


@dataclass
class Row:
    layer: str
    shape: str
    train_ms: float
    train_ratio: list[float] | None
    export_ms: float
    export_ratio: list[float] | None
    cached_ms: float | None
    cached_ratio: list[float] | None
    export_err: float | None


# ---------------------------------------------------------------------------------------
# deel-torchlip (optional)


def load_deel() -> tuple[ModuleType | None, str]:
    """Import ``deel.torchlip`` if it is there; return it (or None) and a status line."""
    try:
        torchlip = importlib.import_module("deel.torchlip")
        version = metadata.version("deel-torchlip")
    except Exception as err:  # ImportError, or any failure while importing it
        return None, f"not importable ({type(err).__name__}: {err}); its rows are skipped"
    return torchlip, f"deel-torchlip {version} imported"


def deel_export(module: nn.Module) -> nn.Module:
    return module.vanilla_export()


def randomize_deel(module: nn.Module) -> nn.Module:
    """Give a deel layer Gaussian (non-orthogonal) raw weights.

    At its orthogonal initialization deel's Björck loop stops after one iteration
    (tolerance 1e-3); with generic weights it runs more (up to 15). A few
    forward passes in train mode let its one-step power iteration catch up.
    """
    weight = module.parametrizations.weight.original
    fan_in = weight[0].numel()
    with torch.no_grad():
        weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
        module.train()
        for _ in range(5):
            _ = module.weight
    return module


def try_deel(
    torchlip: ModuleType | None,
    build: Callable[[ModuleType], nn.Module],
    x: torch.Tensor,
    skipped: list[str],
    label: str,
) -> list[Candidate]:
    """deel candidates (orthogonal init and Gaussian weights) or none, noting why."""
    if torchlip is None:
        return []
    out = []
    for suffix, prepare in (("", lambda m: m), (", Gaussian W", randomize_deel)):
        try:
            module = prepare(build(torchlip).to(x.device))
            module(x).sum().backward()  # check it runs here before timing it
        except Exception as err:
            skipped.append(f"{label}{suffix}: failed ({type(err).__name__}: {err})")
            continue
        out.append(Candidate(f"deel {label}{suffix}", module, deel_export))
    return out


# ---------------------------------------------------------------------------------------
# candidates


def wassnet_export(module: nn.Module) -> nn.Module:
    return wn.export(module)


def dense_group(
    n: int, batch: int, device: torch.device, torchlip: ModuleType | None, skipped: list[str]
) -> Group:
    x = torch.randn(batch, n, device=device)
    candidates = [
        Candidate(PLAIN + " nn.Linear", nn.Linear(n, n).to(device), wassnet_export, False),
        Candidate("wassnet BjorckLinear", wn.BjorckLinear(n, n).to(device), wassnet_export),
        Candidate(
            "torch orthogonal(nn.Linear)", orthogonal(nn.Linear(n, n)).to(device), wassnet_export
        ),
    ]
    candidates += try_deel(
        torchlip, lambda tl: tl.SpectralLinear(n, n), x, skipped, "SpectralLinear"
    )
    return Group("dense", f"{n}→{n}, batch {batch}", x, candidates)


def conv_group(
    c: int,
    size: int,
    k: int,
    batch: int,
    device: torch.device,
    torchlip: ModuleType | None,
    skipped: list[str],
) -> Group:
    x = torch.randn(batch, c, size, size, device=device)
    plain = nn.Conv2d(c, c, k, padding=k // 2, padding_mode="circular")
    candidates = [
        Candidate(PLAIN + " nn.Conv2d (circular)", plain.to(device), wassnet_export, False),
        Candidate("wassnet BCOPConv2d", wn.BCOPConv2d(c, c, k).to(device), wassnet_export),
    ]
    candidates += try_deel(
        torchlip,
        lambda tl: tl.SpectralConv2d(c, c, k, padding=k // 2, padding_mode="circular"),
        x,
        skipped,
        "SpectralConv2d",
    )
    return Group("conv", f"{c}→{c} ch, k={k}, {size}×{size}, batch {batch}", x, candidates)


# ---------------------------------------------------------------------------------------
# timing


def repeated(fn: Callable[[], object], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def interleaved(fns: dict[str, Callable[[], object]], plan: Plan) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round, rounds interleaved."""
    names = list(fns)
    for fn in fns.values():  # warm-up (allocator, oneDNN/cuBLAS kernel choice, caches)
        fn()
    inner = {}
    for name, fn in fns.items():
        once = median_time(fn, repeats=1, warmup=0)
        inner[name] = max(1, min(1000, math.ceil(plan.target_s / max(once, 1e-7))))
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < plan.min_rounds or (
        rounds < plan.max_rounds and time.perf_counter() - start < plan.budget_s
    ):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            batch = repeated(fns[name], inner[name])
            times[name].append(median_time(batch, repeats=1, warmup=0) / inner[name])
        rounds += 1
    return times


def ratios(times: dict[str, list[float]], name: str, ref: str) -> list[float]:
    return [t / r for t, r in zip(times[name], times[ref], strict=True)]


def train_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()

    return step


def forward(module: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: module(x)


@contextmanager
def inference() -> Iterator[None]:
    with torch.no_grad(), parametrize.cached():
        yield


def measure(group: Group, plan: Plan) -> tuple[list[Row], str]:
    plain, *others = group.candidates
    x = group.x

    for cand in group.candidates:
        cand.module.train()
    train = interleaved({c.name: train_step(c.module, x) for c in group.candidates}, plan)

    export_err: dict[str, float] = {}
    for cand in group.candidates:
        cand.exported = cand.export(cand.module).to(x.device).eval()
        cand.module.eval()
        with torch.no_grad():
            export_err[cand.name] = (cand.exported(x) - cand.module(x)).abs().max().item()
    fns: dict[str, Callable[[], object]] = {}
    for cand in group.candidates:
        assert cand.exported is not None
        fns["exported " + cand.name] = forward(cand.exported, x)
        if cand.parametrized:
            fns["cached " + cand.name] = forward(cand.module, x)
    with inference():  # the cache is filled by the warm-up calls and then reused
        infer = interleaved(fns, plan)

    ref_train, ref_infer = plain.name, "exported " + plain.name
    rows = [
        Row(
            plain.name,
            group.shape,
            _ms(train[ref_train]),
            None,
            _ms(infer[ref_infer]),
            None,
            None,
            None,
            None,
        )
    ]
    for cand in others:
        rows.append(
            Row(
                cand.name,
                group.shape,
                _ms(train[cand.name]),
                ratios(train, cand.name, ref_train),
                _ms(infer["exported " + cand.name]),
                ratios(infer, "exported " + cand.name, ref_infer),
                _ms(infer["cached " + cand.name]),
                ratios(infer, "cached " + cand.name, ref_infer),
                export_err[cand.name],
            )
        )
    rounds = f"{group.shape}: {len(train[ref_train])}/{len(infer[ref_infer])}"
    return rows, rounds


def _ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds)


# ---------------------------------------------------------------------------------------
# report


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(values: list[float] | None) -> str:
    if values is None:
        return "1 (ref)"
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"**{fmt(med)}** ({fmt(q1)}–{fmt(q3)})"


def table(rows: list[Row]) -> str:
    header = [
        "layer",
        "shape",
        "train step ms",
        "train / plain",
        "inference ms, exported",
        "exported / plain",
        "inference ms, in cached()",
        "cached() / plain",
    ]
    body = [
        [
            r.layer,
            r.shape,
            fmt(r.train_ms),
            fmt_ratio(r.train_ratio),
            fmt(r.export_ms),
            fmt_ratio(r.export_ratio),
            "—" if r.cached_ms is None else fmt(r.cached_ms),
            "—" if r.cached_ratio is None else fmt_ratio(r.cached_ratio),
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def notes(
    rows: list[Row],
    deel_status: str,
    deel_rows: bool,
    skipped: list[str],
    rounds: list[str],
    load: str,
    quick: bool,
    device: torch.device,
) -> str:
    worst = max((r.export_err for r in rows if r.export_err is not None), default=0.0)
    lines = []
    if quick:
        lines.append(
            "**Quick smoke run (`--quick`): small sizes, few rounds; not representative.**\n"
        )
    lines += [
        f"Device: {device}. Times are medians over interleaved rounds (rounds used, "
        f"training/inference: {'; '.join(rounds)}); "
        "each ratio is taken within a round against the plain layer of the same shape, and "
        "the table gives its median **in bold** and its quartiles in parentheses. "
        "All layers are timed as constructed (initial weights). 1-minute load average "
        f"(this run included): {load} (other jobs share the machine; a load above the core count "
        "widens the quartiles).",
        "",
        "- **train / plain**: cost of one training step (forward, `.sum().backward()`, no "
        "optimizer) relative to the unconstrained layer. `BjorckLinear(n, n)` re-derives "
        "its weight on every step: 20 order-1 Björck iterations, each two n×n×n matrix "
        "products (about 4n³ flops forward, twice that backward), independent of the "
        "batch, against 2·batch·n² flops for the layer itself: the ratio grows like "
        "n / batch. `BCOPConv2d` runs the same iterations on its 2k−1 channel matrices and "
        "composes the kernel, also independent of the batch and image size, so its "
        "ratio shrinks as batch × H × W grows.",
        "- **exported / plain**: `wassnet.nn.export` evaluates the parametrization once "
        "and returns a plain `nn.Linear` / `nn.Conv2d`, so it should run at the plain "
        "layer's speed (≈ 1); largest |exported − parametrized| output difference seen: "
        f"{worst:.1e}.",
        "- **cached() / plain**: the parametrized layer in eval mode inside "
        "`torch.nn.utils.parametrize.cached()`: the weight is computed on the first call "
        "and reused, so what remains is the parametrization's Python overhead per call.",
        "- `orthogonal()` on a convolution is not compared: applied to an `nn.Conv2d` it "
        "treats the `[out, in, k, k]` kernel as a batch of k×k matrices and makes each of "
        "them orthogonal, which does not make the convolution orthogonal or 1-Lipschitz "
        "(so there is no row for it).",
        f"- deel-torchlip: {deel_status}.",
    ]
    if deel_rows:
        lines.append(
            "  It is not a project dependency (install with `pip install --no-deps "
            "deel-torchlip` to reproduce these rows). Its layers use torch's "
            "`spectral_norm` (one power iteration per step) then a Björck loop that stops "
            "when the update falls below 1e-3 (at most 15 iterations; after the 4th, the "
            "cubic term is detached from the graph). At the orthogonal initialization "
            "that loop stops after one iteration, hence the extra `Gaussian W` rows "
            "with generic weights (more iterations, up to 15). `SpectralConv2d` orthonormalizes "
            "the reshaped kernel matrix and multiplies it by 1/k (k×k kernel), which "
            "bounds the convolution's Lipschitz constant by 1 but is not an orthogonal "
            "(gradient-norm preserving) convolution like BCOP. Exported with deel's "
            "`vanilla_export()`."
        )
    lines += [f"- skipped: {s}" for s in skipped]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--equal-time" in argv:
        import bake_off

        bake_off.main(argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--out", type=Path, default=BENCHMARKS, help="BENCHMARKS.md to update")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help=f"default: {default_device}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is steadier on a busy machine",
    )
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_start = os.getloadavg()[0]
    device = torch.device(args.device)
    torchlip, deel_status = load_deel()
    print(f"deel-torchlip: {deel_status}")

    if args.quick:
        dense_sizes, dense_batch = (64, 256), 32
        conv_sizes, conv_batch = ((8, 12), (16, 8)), 8
        plans = {"dense": Plan(3, 5, 2.0, 0.005), "conv": Plan(3, 5, 2.0, 0.005)}
    else:
        dense_sizes, dense_batch = (256, 1024), 128
        conv_sizes, conv_batch = ((16, 28), (64, 16)), 64
        plans = {"dense": Plan(7, 40, 15.0, 0.02), "conv": Plan(7, 40, 15.0, 0.02)}

    skipped: list[str] = []
    groups = [dense_group(n, dense_batch, device, torchlip, skipped) for n in dense_sizes]
    groups += [conv_group(c, s, 3, conv_batch, device, torchlip, skipped) for c, s in conv_sizes]

    rows: list[Row] = []
    rounds: list[str] = []
    for group in groups:
        t0 = time.perf_counter()
        group_rows, group_rounds = measure(group, plans[group.kind])
        rows += group_rows
        rounds.append(group_rounds)
        print(f"\n{group.kind} {group.shape}  ({time.perf_counter() - t0:.0f} s)")
        print(table(group_rows))

    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    deel_rows = any(r.layer.startswith("deel") for r in rows)
    body = (
        table(rows)
        + "\n\n"
        + notes(rows, deel_status, deel_rows, skipped, rounds, load, args.quick, device)
    )
    write_section(SECTION, TITLE, body, path=args.out)
    print(f"\nwrote section {SECTION!r} of {args.out}")


if __name__ == "__main__":
    main()
