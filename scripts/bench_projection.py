"""Training-step cost of projection-constrained layers, against plain and parametrized ones.

One training step = forward on a batch, backward of ``-mean(output^2)`` (a loss that
grows the weights, so the constraint binds at every step), Adam step, and for the
projected layers the projection after the step (:func:`wassnet.nn.constrain`'s hook), for:

* dense ``[n, n]`` layers, n = 256 and 1024, batch 256: plain ``nn.Linear``; projected
  in l1, l2 (3 warm-started Björck iterations, the default; and 1, which already
  restores the bound but leaves the weight further from orthonormal) and l-inf;
  ``BjorckLinear`` (the reparametrization, 20 iterations);
* convolutions 16 -> 16 channels, kernel 3, 28 x 28, batch 64: plain ``nn.Conv2d``
  (zero padding); projected in l1, l2 (rescaled by its certified norm) and l-inf;
  ``BCOPConv2d``.

Candidates of one shape are timed in interleaved rounds (rotating order) and each
ratio is taken within a round; the table gives the median ratio over rounds. After
the timing, every projected layer takes 30 more steps and its certified bound
(``lipschitz_bound(p=...)``) is computed after each: the largest is reported (target:
at most 1 + 1e-6); for l2 dense layers also the largest ``|s - 1|`` over the singular
values after the last step (how far from orthonormal the projection leaves the weight).

    python scripts/bench_projection.py [--rounds 7] [--threads 1] [--no-write]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from benchtools import markdown_table, write_section
from torch import nn

from wassnet.nn import BCOPConv2d, BjorckLinear, constrain, lipschitz_bound

NORM_LABEL = {1: "l1", 2: "l2", math.inf: "l-inf"}


def _step(
    module: nn.Module, x: torch.Tensor, p: float | None, shape: tuple[int, ...], iters: int = 3
) -> Callable[[], None]:
    """One training step (optimizer and projection hook included)."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    if p is not None:
        constrain(optimizer, module, p, shape, iters=iters)

    def run() -> None:
        loss = -module(x).square().mean()  # grows the weights: the constraint binds
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    run.module, run.p, run.shape, run.x = module, p, shape, x  # type: ignore[attr-defined]
    return run


def _candidates(kind: str, n: int) -> tuple[dict[str, Callable[[], None]], tuple[int, ...]]:
    torch.manual_seed(0)
    if kind == "dense":
        shape: tuple[int, ...] = (n,)
        x = torch.randn(256, n)

        def plain() -> nn.Module:
            return nn.Linear(n, n)

        reparam: nn.Module = BjorckLinear(n, n)
        label = "Björck (20 iters)"
    else:
        shape = (16, 28, 28)
        x = torch.randn(64, *shape)

        def plain() -> nn.Module:
            return nn.Conv2d(16, 16, 3, padding=1)

        reparam = BCOPConv2d(16, 16, 3)
        label = "BCOP"
    steps = {"plain": _step(plain(), x, None, shape)}
    for p in (1, 2, math.inf):
        steps[f"projected {NORM_LABEL[p]}"] = _step(plain(), x, p, shape)
        if kind == "dense" and p == 2:
            steps["projected l2, 1 iteration"] = _step(plain(), x, p, shape, iters=1)
    steps[label] = _step(reparam, x, None, shape)
    return steps, shape


def _time_rounds(steps: dict[str, Callable[[], None]], rounds: int, calls: int) -> dict:
    for fn in steps.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            for _ in range(calls):
                steps[name]()
            times[name].append((time.perf_counter() - t0) / calls)
    return times


def _worst_bound(fn: Callable[[], None], steps: int = 30) -> tuple[float, str]:
    """The largest certified bound over ``steps`` more steps, and for l2 dense layers the
    largest ``|s - 1|`` over the final weight's singular values."""
    module, p, shape = fn.module, fn.p, fn.shape  # type: ignore[attr-defined]
    worst = 0.0
    for _ in range(steps):
        fn()
        worst = max(worst, lipschitz_bound(module, shape, p=p).bound)
    if p != 2 or not isinstance(module, nn.Linear):
        return worst, "-"
    singular = torch.linalg.svdvals(module.weight.detach().double())
    return worst, f"{float((singular - 1).abs().max()):.1e}"


def measure(rounds: int) -> list[list[str]]:
    rows = []
    for kind, n in (("dense", 256), ("dense", 1024), ("conv", 16)):
        steps, _ = _candidates(kind, n)
        calls = 3 if (kind == "dense" and n == 1024) or kind == "conv" else 10
        times = _time_rounds(steps, rounds, calls)
        shape_label = (
            f"dense {n}x{n}, batch 256" if kind == "dense" else "conv 16->16 k3 28x28, b 64"
        )
        for name, fn in steps.items():
            ratio = statistics.median(
                t / b for t, b in zip(times[name], times["plain"], strict=True)
            )
            worst, off = "-", "-"
            if name.startswith("projected"):
                bound, off = _worst_bound(fn)
                worst = f"{bound:.9f}"
            rows.append(
                [
                    shape_label,
                    name,
                    f"{statistics.median(times[name]) * 1e3:.2f}",
                    f"{ratio:.2f}x",
                    worst,
                    off,
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args.rounds)
    header = [
        "shape",
        "layer",
        "step (ms)",
        "ratio to plain",
        "max certified bound, 30 steps",
        "max abs(s - 1), l2 dense",
    ]
    body = (
        "Training step = forward + backward + Adam step (+ the projection for the projected "
        f"layers), median over {args.rounds} interleaved rounds; threads: "
        f"{torch.get_num_threads()}. Target: projected / plain <= 2x at 256 and 1024 units, "
        "certified bound <= 1 + 1e-6 after every step.\n\n" + markdown_table(header, rows)
    )
    print(body)
    if not args.no_write:
        write_section("bench_projection", "Projection-constrained layers: step cost", body)


if __name__ == "__main__":
    main()
