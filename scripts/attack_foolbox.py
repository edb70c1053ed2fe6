"""An independent attack on wassnet's certificates: foolbox's PGD at 0.9999 x each radius.

For a ``wassnet classify train`` checkpoint, the certified radius of every test point is
computed from the certified Lipschitz bound of its weights (what ``classify certify``
reports); then, for the first ``--limit`` points that are correct and certified at a
radius > 0, foolbox's own PGD (``LinfPGD`` for an l-inf checkpoint, ``L2PGD`` for l2;
foolbox 3, installed by the ``bench`` extra, never by the package) searches for an
adversarial point within ``0.9999 x`` that point's radius. Each point is attacked alone
(its own epsilon), from a random start, with ``--restarts`` restarts.

A point counts as broken only when the adversarial point lies within the radius (float64
distance) and a float64 copy of the network also predicts another class (the rule of
wassnet's own check, :func:`wassnet.certify.attack_certified`): a float32 flip inside
its rounding is not a contradiction of the certificate. Any broken point is the worst
bug the project can have; the script exits 1 when it finds one.

    python scripts/attack_foolbox.py --checkpoint RUN/checkpoint.pt --dataset mnist \
        [--limit 1000] [--steps 50] [--restarts 2] [--section linf-foolbox]
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time

import torch
from benchtools import markdown_table, write_section

from wassnet.certify import certified_radius, load_classifier
from wassnet.certify.radius import lipschitz_certificate
from wassnet.datasets import load_images


def _attack(norm: str, steps: int):
    import foolbox as fb

    if norm == "inf":
        return fb.attacks.LinfPGD(steps=steps, rel_stepsize=0.033, random_start=True)
    return fb.attacks.L2PGD(steps=steps, rel_stepsize=0.025, random_start=True)


def _distance(x: torch.Tensor, adv: torch.Tensor, norm: str) -> float:
    diff = (adv.double() - x.double()).flatten()
    return float(diff.abs().max() if norm == "inf" else diff.norm())


def _targets(model, images, labels, bound: float, norm: str, limit: int):
    """Indices of the first ``limit`` correct points certified at a radius > 0, and radii."""
    p = math.inf if norm == "inf" else 2
    pred, radii = certified_radius(model, images, bound, return_prediction=True, p=p)
    ok = torch.nonzero((pred == labels) & (radii > 0)).flatten()[:limit]
    return ok, radii


def run(args: argparse.Namespace) -> dict:
    import foolbox as fb

    torch.set_num_threads(args.threads)
    loaded = load_classifier(args.checkpoint)
    norm, model = loaded.norm, loaded.model.eval()
    p = math.inf if norm == "inf" else 2
    bound = float(lipschitz_certificate(model, loaded.input_shape, p).bound)
    data = load_images(args.dataset, root=args.data, split="test", download=False)
    images, labels = data.images, data.labels
    indices, radii = _targets(model, images, labels, bound, norm, args.limit)
    fmodel = fb.PyTorchModel(model, bounds=(-1e9, 1e9))  # radii may leave [0, 1]: no clip
    exact = copy.deepcopy(model).double().eval()
    attack, broken, flips, start = _attack(norm, args.steps), 0, 0, time.process_time()
    for i in indices.tolist():
        x, y = images[i : i + 1], labels[i : i + 1]
        eps = args.scale * float(radii[i])
        for _ in range(args.restarts):
            _, adv, success = attack(fmodel, x, y, epsilons=eps)
            if not bool(success[0]):
                continue
            flips += 1
            with torch.no_grad():
                before, after = exact(x.double()).argmax(1), exact(adv.double()).argmax(1)
            if _distance(x, adv, norm) <= float(radii[i]) and int(before) != int(after):
                broken += 1
                print(f"BROKEN: test point {i}, radius {float(radii[i])!r}", file=sys.stderr)
            break
    return {
        "attacked": len(indices),
        "float32 flips": flips,
        "broken": broken,
        "bound": bound,
        "cpu_s": time.process_time() - start,
        "norm": norm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data", default=None, help="dataset root (default: wassnet's)")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--scale",
        type=float,
        default=0.9999,
        help="attack radius / certified radius (> 1 shows the attack's strength: flips "
        "beyond the radius are expected and are not counted as broken)",
    )
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section to write")
    args = parser.parse_args()
    result = run(args)
    print(result)
    if args.section:
        _write(args, result)
    sys.exit(1 if result["broken"] else 0)


def _write(args: argparse.Namespace, r: dict) -> None:
    attack = "LinfPGD" if r["norm"] == "inf" else "L2PGD"
    table = markdown_table(
        [
            "points attacked",
            "float32 label flips found",
            "broken (within radius, confirmed in float64)",
            "CPU s",
        ],
        [[r["attacked"], r["float32 flips"], f"**{r['broken']}**", round(r["cpu_s"])]],
    )
    body = (
        f"foolbox {attack}, {args.steps} steps, random start, {args.restarts} restart(s), "
        f"each point alone at {args.scale} x its own certified radius (from the certified bound "
        f"L = {r['bound']:.6g} of the checkpoint's weights), on the first {args.limit} "
        f"correct points certified at a radius > 0 of the {args.dataset} test split.\n\n" + table
    )
    title = f"Independent attack (foolbox {attack}) on certified points: {args.dataset}"
    write_section(args.section, title, body)


if __name__ == "__main__":
    main()
