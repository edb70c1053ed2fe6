r"""Train and certify a robust MNIST classifier with wassnet's public API.

A CPU-scale version of the provable-robustness experiments of Li et al., *Preventing
Gradient Attenuation in Lipschitz Constrained Convolutional Networks* (NeurIPS 2019)
and Anil et al., *Sorting Out Lipschitz Function Approximation* (ICML 2019): a network
that is 1-Lipschitz by construction (BCOP convolutions or Björck dense layers, MaxMin
activations) is trained with the multi-class hinge loss whose margin ``sqrt(2) * eps``
is tied to the target radius, and every test prediction gets a certified L2 radius

.. math::
    r(x) = \frac{f_c(x) - \max_{j \ne c} f_j(x)}{\sqrt{2}\, L},

where ``L`` is the Lipschitz bound computed from the trained weights
(:func:`wassnet.nn.lipschitz_bound`). No perturbation of norm ``< r(x)`` changes the
prediction. The app then

* draws the certified-accuracy curve (fraction of test images classified correctly
  with radius ``> eps``) for ``eps`` from 0 to 2.5, next to Li et al.'s published point;
* attacks every certified point with L2 PGD at its certified radius ("certified but
  broken" must be 0) and, as a control, at twice its radius;
* exports the network to plain torch layers and checks that predictions and the
  certificate are unchanged.

Run::

    python apps/mnist_certified.py --out runs/mnist_certified [--arch conv-small]
        [--epochs 3] [--eps 1.58] [--data-root DIR] [--quick]

MNIST is read (or downloaded) by torchvision under ``--data-root`` (default
``$WASSNET_DATA`` or ``~/.cache/wassnet/data``). Training is resumable: rerunning the
same command continues from ``OUT/train/checkpoint.pt``. Writes ``results.json``,
``results.md`` and ``certified_accuracy.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from wassnet.certify import (
    AttackOptions,
    TrainConfig,
    certified_accuracy,
    evaluate,
    train_classifier,
)
from wassnet.datasets import default_data_root, load_images

#: Li et al. (2019), MNIST, certified accuracy at eps = 1.58 (clean %, certified %).
PUBLISHED = {"conv-large": ("BCOP large", 98.8, 56.7), "dense": ("FC Björck+GroupSort", 98.7, 54.5)}
REPORTED_EPS = (0.5, 1.0, 1.58)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and certify a robust MNIST classifier.")
    parser.add_argument("--out", type=Path, default=Path("runs/mnist_certified"))
    parser.add_argument(
        "--arch", default="conv-small", choices=["dense", "dense-small", "conv-small", "conv-large"]
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eps", type=float, default=1.58, help="target radius of the hinge loss")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--attack-limit", type=int, default=500, help="certified points to attack")
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test, seconds)")
    return parser.parse_args(argv)


def plot_curve(
    path: Path, eps: list[float], certified: list[float], clean: float, arch: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(eps, [100 * c for c in certified], label=f"wassnet {arch} (certified)")
    ax.axhline(100 * clean, color="gray", ls=":", label="clean accuracy")
    for name, _, published in PUBLISHED.values():
        ax.scatter([1.58], [published], marker="x", label=f"{name}, Li et al. 2019")
    ax.set_xlabel("L2 radius eps (pixels in [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.data_root or default_data_root()
    train_limit, test_limit, epochs, attack_n, steps = (
        None,
        None,
        args.epochs,
        args.attack_limit,
        50,
    )
    if args.quick:
        train_limit, test_limit, epochs, attack_n, steps = 512, 200, 1, 30, 10
    args.out.mkdir(parents=True, exist_ok=True)

    train = load_images("mnist", root, split="train", limit=train_limit)
    test = load_images("mnist", root, split="test", limit=test_limit)
    config = TrainConfig(
        dataset="mnist",
        arch=args.arch,
        eps=args.eps,
        epochs=epochs,
        batch_size=32 if args.quick else 128,
        lr=3e-3 if args.quick else 1e-3,
        seed=args.seed,
    )
    run = train_classifier(
        config, args.out / "train", data=train, device=args.device, progress=not args.quick
    )
    model = run.model

    attack = AttackOptions(limit=attack_n, steps=steps, beyond=2.0)
    ev = evaluate(model, test, REPORTED_EPS, attack=attack, check_export=True)
    cert, table, check = ev.lipschitz, ev.accuracy, ev.attack
    assert check is not None  # an attack was asked for
    grid = [round(0.1 * i, 2) for i in range(26)]
    curve = certified_accuracy(model, test, eps=grid, lipschitz=cert)
    export_ok = bool(ev.export_same_predictions)  # a changed bound raises in evaluate

    results = {
        "config": config.to_dict(),
        "train_seconds": run.train_seconds,
        "test_images": len(test),
        "lipschitz_bound": cert.bound,
        "clean_accuracy": table.clean,
        "certified_accuracy": dict(zip(map(str, REPORTED_EPS), table.certified, strict=True)),
        "curve": {"eps": grid, "certified_accuracy": curve.certified},
        "median_certified_radius": table.median_radius,
        "attack": check.to_dict(),
        "attack_seconds": ev.attack_seconds,
        "export_same_predictions_and_bound": export_ok,
        "export_max_radius_difference": ev.export_max_radius_difference,
        "published": {
            k: {"name": n, "clean": c, "certified_1.58": r} for k, (n, c, r) in PUBLISHED.items()
        },
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    rows = [
        "| model | clean % | " + " | ".join(f"certified % @ {e:g}" for e in REPORTED_EPS) + " |",
        "|---|---|" + "---|" * len(REPORTED_EPS),
        f"| wassnet `{args.arch}`, {epochs} epoch(s), {run.train_seconds:.0f} s | "
        f"{100 * table.clean:.2f} | "
        + " | ".join(f"{100 * c:.2f}" for c in table.certified)
        + " |",
    ]
    rows += [f"| {n} (Li et al. 2019) | {c} | – | – | {r} |" for n, c, r in PUBLISHED.values()]
    md = "\n".join(rows) + f"\n\nL = {cert.bound:.8f}; {check.summary()}\n"
    (args.out / "results.md").write_text(md)
    plot_curve(args.out / "certified_accuracy.png", grid, curve.certified, table.clean, args.arch)
    print(ev.summary())  # accuracy, "certified but broken: 0 of N", export check
    print(f"wrote {args.out / 'results.json'}, results.md, certified_accuracy.png")
    return 0 if check.broken == 0 and export_ok else 1


if __name__ == "__main__":
    sys.exit(main())
