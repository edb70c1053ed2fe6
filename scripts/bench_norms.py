"""Certified MNIST in l2 and l-inf: projection against parametrization, at equal CPU time.

Rows (all ``conv-small``, hinge loss with the margin tied to the target radius, Adam,
cosine schedule, batch 128, seed 0, the full training split):

* l2, ``constraint=orthogonal`` (BCOP + Björck, today's default) against l2,
  ``constraint=projection`` (plain layers, projected after every step), both trained
  at target eps = 1.58 for the same CPU budget;
* l-inf, ``constraint=projection``, trained at target eps = 0.1 and at 0.3.

"Equal CPU time": each run first times 30 training steps, then gets as many whole
epochs as fit in ``--budget`` seconds (at least 1); the table reports the epochs and
the seconds actually spent. Every row is certified on the 10 000 test images at the
norm's radii, with the PGD check (500 certified points, 50 steps, 2 restarts) in the
same norm, which must break none.

    python scripts/bench_norms.py --data-root DATA [--budget 480] [--threads 2] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import torch
from benchtools import markdown_table, write_section

from wassnet.certify import AttackOptions, TrainConfig, evaluate, train_classifier
from wassnet.datasets import load_images

EPS = {"2": [0.5, 1.0, 1.58], "inf": [0.1, 0.3]}
TITLE = "Certified MNIST in l2 and l-inf: projection vs parametrization"


@dataclass(frozen=True)
class Run:
    label: str
    norm: str
    constraint: str
    eps: float


RUNS = (
    Run("l2, orthogonal (BCOP + Björck)", "2", "orthogonal", 1.58),
    Run("l2, projection", "2", "projection", 1.58),
    Run("l-inf, projection, trained at 0.1", "inf", "projection", 0.1),
    Run("l-inf, projection, trained at 0.3", "inf", "projection", 0.3),
)


def _config(run: Run, epochs: int) -> TrainConfig:
    return TrainConfig(
        arch="conv-small",
        eps=run.eps,
        epochs=epochs,
        batch_size=128,
        lr=1e-3,
        norm=run.norm,
        constraint=run.constraint,
    )


def _epochs_within(run: Run, train, budget: float) -> tuple[int, float]:
    """Whole epochs that fit in ``budget`` seconds, from the time of 30 steps."""
    with tempfile.TemporaryDirectory() as probe:
        result = train_classifier(_config(run, 1), probe, data=train, max_steps=30, progress=False)
    step = result.train_seconds / 30
    steps_per_epoch = -(-len(train) // 128)
    return max(1, int(budget // (step * steps_per_epoch))), step


def measure(args: argparse.Namespace) -> list[list[str]]:
    train = load_images("mnist", args.data_root, split="train")
    test = load_images("mnist", args.data_root, split="test")
    rows = []
    for run in RUNS:
        epochs, step = _epochs_within(run, train, args.budget)
        print(f"{run.label}: {step * 1e3:.0f} ms/step -> {epochs} epochs", flush=True)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            result = train_classifier(_config(run, epochs), out, data=train, progress=False)
            wall = time.perf_counter() - t0
        attack = AttackOptions(limit=500, steps=50, restarts=2)
        ev = evaluate(result.model, test, EPS[run.norm], attack=attack, p=run.norm)
        certified = ", ".join(
            f"{e:g}: {100 * c:.1f}%"
            for e, c in zip(ev.accuracy.eps, ev.accuracy.certified, strict=True)
        )
        rows.append(
            [
                run.label,
                str(epochs),
                f"{wall:.0f}",
                f"{100 * ev.accuracy.clean:.1f}%",
                certified,
                f"{ev.lipschitz.bound:.7f}",
                f"{ev.attack.broken} of {ev.attack.attacked}",
            ]
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds of training per row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = measure(args)
    header = [
        "run",
        "epochs",
        "train s",
        "clean",
        "certified (radius: accuracy)",
        "certified L",
        "PGD broke",
    ]
    body = (
        f"MNIST test split (10 000 images), conv-small, training budget {args.budget:.0f} s "
        f"per row on {args.threads} threads (whole epochs that fit, from a 30-step probe).\n\n"
        + markdown_table(header, rows)
    )
    print(body)
    if not args.no_write:
        write_section(
            "bench_norms", "Certified MNIST in l2 and l-inf: projection vs parametrization", body
        )


if __name__ == "__main__":
    main()
