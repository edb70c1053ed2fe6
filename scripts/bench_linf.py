"""Forward + backward of l-inf-distance layers against ``nn.Linear`` of the same shape.

For a batch ``[B, n]`` and ``m`` neurons, one call = forward, then backward of the sum
of the outputs times a fixed random tensor (gradients for the input and the weights):

* ``nn.Linear(n, m)`` (a matrix product: the reference a dense layer costs);
* :class:`wassnet.nn.LinfDistLinear` with the compiled kernel at ``p = inf`` (blocked
  maximum + argmax; the backward a scatter) and at ``p = 8`` (the relaxation: lp norm
  by squarings, a full backward pass);
* the same layer through the chunked pure-torch formulation (``WASSNET_NO_NATIVE``'s
  path), at ``p = inf`` and ``p = 8``;
* ``torch.cdist(x, w, p=inf)`` and ``p = 8`` with autograd (torch's own kernel).

Median over ``--repeats`` calls, float32, ``--threads`` threads.

    python scripts/bench_linf.py [--threads 1] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from benchtools import markdown_table, median_time, write_section
from torch import nn

from wassnet.nn import linf


def _call(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, params, m: int):
    g = torch.randn(len(x), m)

    def run() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        (forward(x) * g).sum().backward()

    return run


def _cases(b: int, n: int, m: int) -> dict[str, Callable[[], None]]:
    x = torch.rand(b, n, requires_grad=True)
    dense = nn.Linear(n, m)
    layer = linf.LinfDistLinear(n, m)
    w = layer.weight

    def torch_path(p: float) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(inp: torch.Tensor) -> torch.Tensor:
            saved, linf._NATIVE.lib = linf._NATIVE.lib, None
            saved_failed, linf._NATIVE.failed = linf._NATIVE.failed, "benchmark: torch path"
            try:
                return linf.linf_dist(inp, w, p)
            finally:
                linf._NATIVE.lib, linf._NATIVE.failed = saved, saved_failed

        return forward

    return {
        "nn.Linear": _call(dense, x, list(dense.parameters()), m),
        "LinfDistLinear, C kernel, p = inf": _call(
            lambda inp: linf.linf_dist(inp, w, math.inf), x, [w], m
        ),
        "LinfDistLinear, C kernel, p = 8": _call(
            lambda inp: linf.linf_dist(inp, w, 8.0), x, [w], m
        ),
        "chunked torch, p = inf": _call(torch_path(math.inf), x, [w], m),
        "chunked torch, p = 8": _call(torch_path(8.0), x, [w], m),
        "torch.cdist, p = inf": _call(lambda inp: torch.cdist(inp, w, p=math.inf), x, [w], m),
        "torch.cdist, p = 8": _call(lambda inp: torch.cdist(inp, w, p=8.0), x, [w], m),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not linf.native_linf_available():
        raise SystemExit(f"the compiled kernel is not available: {linf._NATIVE.failed}")
    rows = []
    for b, n, m in [(128, 784, 1024), (128, 1024, 1024)]:
        times = {
            name: median_time(fn, repeats=args.repeats, warmup=1)
            for name, fn in _cases(b, n, m).items()
        }
        base = times["nn.Linear"]
        for name, seconds in times.items():
            rows.append((f"{b} x {n} -> {m}", name, 1000 * seconds, seconds / base))
        print(markdown_table(["shape", "layer", "ms", "x nn.Linear"], rows[-len(times) :]))
    body = (
        f"Forward + backward (input and weight gradients), float32, {args.threads} thread(s), "
        "median of "
        f"{args.repeats} calls (`scripts/bench_linf.py`). The compiled kernel is what "
        "`LinfDistLinear` uses for float32 on the CPU; the others are for comparison.\n\n"
        + markdown_table(["batch x in -> out", "layer", "ms", "x nn.Linear"], rows)
    )
    if not args.no_write:
        write_section("linf-layers", "l-inf-distance layers: forward + backward", body)


if __name__ == "__main__":
    main()
