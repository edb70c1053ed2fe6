"""``wassnet classify``: train, certify and export certified-robust classifiers.

Heavy imports (torch, torchvision) happen inside the commands, so that
``wassnet --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from wassnet.clitools import ErrorLineGroup, emit

DATASETS = ["mnist", "fashion-mnist", "cifar10"]
ARCHS = ["dense", "dense-small", "conv-small", "conv-large"]


class _Result:
    """Adapter: a dict and a summary for :func:`wassnet.clitools.emit`."""

    def __init__(self, data: dict, text: str) -> None:
        self._data, self._text = data, text

    def to_dict(self) -> dict:
        return self._data

    def summary(self) -> str:
        return self._text


def _parse_eps(first: tuple[str, ...], more: tuple[str, ...]) -> list[float]:
    from wassnet.certify.radius import check_eps

    if more and not first:
        raise click.UsageError(f"unexpected argument {more[0]!r}")
    values = []
    for text in (*first, *more):
        for part in text.split(","):
            if part.strip():
                try:
                    values.append(float(part))
                except ValueError:
                    raise click.BadParameter(
                        f"{part!r} is not a number", param_hint="'--eps'"
                    ) from None
    try:
        return check_eps(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--eps'") from None


@click.group(cls=ErrorLineGroup)
def classify() -> None:
    """Certified-robust classifiers: no L2 perturbation below the radius changes a prediction.

    The radius of a prediction is margin / (sqrt(2) L), with L the Lipschitz bound
    computed from the trained weights.
    """


@classify.command()
@click.option("--dataset", type=click.Choice(DATASETS), default="mnist", show_default=True)
@click.option("--arch", type=click.Choice(ARCHS), default="conv-small", show_default=True)
@click.option(
    "--eps",
    default=1.58,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="target certified L2 radius (hinge margin sqrt(2)*eps)",
)
@click.option("--loss", type=click.Choice(["hinge", "ce"]), default="hinge", show_default=True)
@click.option(
    "--temperature",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="for --loss ce",
)
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "step", "constant"]),
    default="cosine",
    show_default=True,
)
@click.option("--iters", type=click.IntRange(1), help="Björck iterations (default 20)")
@click.option("--train-limit", type=click.IntRange(1), help="train on the first N images only")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU if present)")
@click.option("--data-root", type=click.Path(file_okay=False), help="default $WASSNET_DATA")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="run folder (checkpoint.pt; an existing run is resumed)",
)
@click.option("--max-steps", type=click.IntRange(0), help="stop after N steps (resume later)")
@click.option("--checkpoint-every", default=200, show_default=True, type=click.IntRange(1))
@click.option(
    "--eval-limit",
    type=click.IntRange(0),
    help="certify on the first N test images after training (0: skip; default: all)",
)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(
    dataset: str,
    arch: str,
    eps: float,
    loss: str,
    temperature: float,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: str,
    iters: int | None,
    train_limit: int | None,
    seed: int,
    device: str | None,
    data_root: str | None,
    out: str,
    max_steps: int | None,
    checkpoint_every: int,
    eval_limit: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Train a classifier (resumable) and certify it on the test split at --eps."""
    from wassnet.certify.radius import certified_accuracy
    from wassnet.certify.train import TrainConfig, train_classifier
    from wassnet.datasets import load_images

    config = TrainConfig(
        dataset=dataset,
        arch=arch,
        eps=eps,
        loss=loss,  # type: ignore[arg-type]
        temperature=temperature,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,  # type: ignore[arg-type]
        seed=seed,
        iters=iters,
        train_limit=train_limit,
    )
    result = train_classifier(
        config,
        out,
        data_root=data_root,
        device=device,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        progress=not quiet,
    )
    data, text = result.to_dict(), result.summary()
    if result.finished and eval_limit != 0:
        test = load_images(dataset, data_root, split="test", limit=eval_limit)
        acc = certified_accuracy(result.model, test, eps=[eps])
        data["test"] = acc.to_dict()
        text += "\ntest split:\n" + acc.summary()
    emit(_Result(data, text), as_json, lambda: text)


@classify.command()
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(),
    help="a classifier checkpoint (RUN/checkpoint.pt from `classify train`)",
)
@click.option(
    "--eps",
    "eps_first",
    multiple=True,
    help="L2 radii, e.g. --eps 0.5 1.0 1.58  [default: 0.5 1.0 1.58]",
)
@click.argument("eps_more", nargs=-1, metavar="")
@click.option("--dataset", type=click.Choice(DATASETS), help="default: the checkpoint's")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(1), help="first N images only")
@click.option("--data-root", type=click.Path(file_okay=False), help="default $WASSNET_DATA")
@click.option(
    "--attack/--no-attack",
    default=True,
    show_default=True,
    help="L2 PGD on certified points at their radius (must break none)",
)
@click.option("--attack-n", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--attack-steps", default=50, show_default=True, type=click.IntRange(1))
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU if present)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def certify(
    checkpoint: str,
    eps_first: tuple[str, ...],
    eps_more: tuple[str, ...],
    dataset: str | None,
    split: str,
    limit: int | None,
    data_root: str | None,
    attack: bool,
    attack_n: int,
    attack_steps: int,
    device: str | None,
    as_json: bool,
) -> None:
    """Clean accuracy and certified accuracy per radius, with the PGD check.

    Prints "certified but broken: 0 of N": the L2 PGD attack run on N certified points
    at their certified radius; any other count would mean a wrong certificate.
    """
    eps = _parse_eps(eps_first, eps_more) if eps_first or eps_more else [0.5, 1.0, 1.58]
    from wassnet.certify.attack import attack_certified
    from wassnet.certify.model import load_classifier
    from wassnet.certify.radius import certified_accuracy
    from wassnet.datasets import load_images
    from wassnet.nn import lipschitz_bound
    from wassnet.runtime import resolve_device

    model, state = load_classifier(checkpoint, device=resolve_device(device))
    name = dataset or state.get("config", {}).get("dataset", "mnist")
    data = load_images(name, data_root, split=split, limit=limit)
    shape = tuple(state["model"]["input_shape"])
    if tuple(data.shape) != shape:
        raise ValueError(f"{name} images are {tuple(data.shape)}, the classifier takes {shape}")
    cert = lipschitz_bound(model, shape)
    acc = certified_accuracy(model, data, eps=eps, lipschitz=cert)
    result = acc.to_dict()
    result["dataset"], result["split"] = name, split
    text = f"{name} {split} split\n" + acc.summary()
    if attack:
        check = attack_certified(model, data.images, cert, limit=attack_n, steps=attack_steps)
        result["attack"] = check.to_dict()
        text += "\n" + check.summary
    emit(_Result(result, text), as_json, lambda: text)


def _check_export_target(checkpoint: str, out: str, force: bool) -> None:
    """Refuse to overwrite the checkpoint, or any existing file without ``--force``."""
    target, source = Path(out), Path(checkpoint)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise click.BadParameter(
            f"{out} is the checkpoint being exported: choose another file", param_hint="--out"
        )
    if target.exists() and not force:
        raise click.BadParameter(f"{out} exists: pass --force to replace it", param_hint="--out")


@classify.command("export")
@click.option("--checkpoint", required=True, type=click.Path(), help="a classifier checkpoint")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="file for the plain-torch program (torch.export, .pt2)",
)
@click.option("--force", is_flag=True, help="replace OUT if it exists (never the checkpoint)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def export_command(checkpoint: str, out: str, force: bool, as_json: bool) -> None:
    """Export to plain torch layers (torch.export program), certificate unchanged.

    Load with ``torch.export.load(OUT).module()``; the certified bound L is stored in
    the program's extra file ``wassnet.json`` and printed here. An existing OUT is
    kept unless ``--force``; OUT can never be the checkpoint itself. The program is
    written to a temporary file and renamed, so a failed export leaves OUT as it was.
    """
    _check_export_target(checkpoint, out, force)
    import torch

    from wassnet.certify.model import export_classifier, load_classifier
    from wassnet.nn import lipschitz_bound

    model, state = load_classifier(checkpoint)
    shape = tuple(state["model"]["input_shape"])
    plain = export_classifier(model)
    bound = float(lipschitz_bound(plain, shape).bound)
    original = float(lipschitz_bound(model, shape).bound)
    if bound != original:  # export freezes the same weights: a difference is a bug
        raise RuntimeError(f"export changed the certified bound ({original} -> {bound})")
    probe = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    program = torch.export.export(plain, (probe,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    meta = {
        "lipschitz_bound": bound,
        "input_shape": list(shape),
        "num_classes": int(state["model"]["num_classes"]),
        "arch": state["model"]["arch"],
        "radius": "margin / (sqrt(2) * lipschitz_bound)",
    }
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial.pt2")  # .pt2: no warning
    try:
        torch.export.save(program, str(partial), extra_files={"wassnet.json": json.dumps(meta)})
        reloaded = torch.export.load(str(partial)).module()
        with torch.no_grad():
            same = bool((reloaded(probe).argmax(1) == model(probe).argmax(1)).all())
        if not same:
            raise RuntimeError("the exported program predicts differently from the checkpoint")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    text = f"exported {meta['arch']} to {target}; certified Lipschitz bound {bound:.8f} (unchanged)"
    emit(_Result({**meta, "out": str(target)}, text), as_json, lambda: text)
