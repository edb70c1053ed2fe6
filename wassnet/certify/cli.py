"""``wassnet classify``: train, certify and export certified-robust classifiers.

Heavy imports (torch, torchvision) happen inside the commands, so that
``wassnet --help`` stays fast.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import click

from wassnet.clitools import (
    ErrorLineGroup,
    Finite,
    Renamed,
    RunFolderPath,
    check_new_file,
    data_root_option,
    device_option,
    emit,
    given_options,
    iters_option,
    json_option,
    limit_option,
    norm_option,
    quiet_option,
    saved_config,
    seed_option,
    set_threads,
    threads_option,
    with_options,
)
from wassnet.names import ARCHS, IMAGE_DATASETS

IMAGE_NAMES = list(IMAGE_DATASETS)
#: The radius factor c in margin / (c L), by norm, as written in the export's metadata.
_FACTOR_TEXT = {"2": "sqrt(2)", "inf": "2", "1": "1"}
#: Default radii of `classify certify`, by norm (MNIST pixels in [0, 1]).
_DEFAULT_EPS = {"2": [0.5, 1.0, 1.58], "inf": [0.1, 0.3], "1": [1.0, 2.0]}


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
    """Certified-robust classifiers: no perturbation below the radius changes a prediction.

    The radius of a prediction is margin / (c L), with L the Lipschitz bound computed
    from the trained weights in the run's norm (--norm: l2, c = sqrt(2); l-inf, c = 2;
    l1, c = 1).
    """


#: Options that define a classifier run: the :class:`~wassnet.certify.TrainConfig` fields.
CONFIG_FIELDS = (
    "dataset",
    "arch",
    "eps",
    "loss",
    "temperature",
    "epochs",
    "batch_size",
    "lr",
    "schedule",
    "seed",
    "iters",
    "limit",
    "norm",
    "constraint",
    "relax_epochs",
)
_positive_number = Finite(0, open_low=True)


#: The options of `classify train`, in the order ``--help`` lists them.
_TRAIN_OPTIONS = (
    click.option("--dataset", type=click.Choice(IMAGE_NAMES), default="mnist", show_default=True),
    click.option("--arch", type=click.Choice(list(ARCHS)), default="conv-small", show_default=True),
    click.option(
        "--eps",
        default=1.58,
        show_default=True,
        type=_positive_number,
        help="the one radius training targets, in --norm (hinge margin sqrt(2)*eps in l2, "
        "2*eps in l-inf, eps in l1); `classify certify --eps` reports several",
    ),
    click.option("--loss", type=click.Choice(["hinge", "ce"]), default="hinge", show_default=True),
    click.option(
        "--temperature",
        default=0.25,
        show_default=True,
        type=_positive_number,
        help="for --loss ce",
    ),
    click.option("--epochs", default=5, show_default=True, type=click.IntRange(1)),
    click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1)),
    click.option("--lr", default=1e-3, show_default=True, type=_positive_number),
    click.option(
        "--schedule",
        type=click.Choice(["cosine", "step", "constant"]),
        default="cosine",
        show_default=True,
    ),
    norm_option("norm of the certified radii (linf-dist: inf)"),
    click.option(
        "--constraint",
        type=click.Choice(["orthogonal", "projection"]),
        default=None,
        help="orthogonal: Björck/BCOP layers, or the AOL/CPL/SLL layers of the aol-/cpl-/sll- "
        "archs (l2), or the l-inf-distance neurons of linf-dist (l-inf); projection: plain "
        "layers projected to norm <= 1 after every step (any --norm; dense and conv archs "
        "only)  [default: what works for --norm: orthogonal in l2 and for linf-dist, else "
        "projection]",
    ),
    click.option(
        "--relax-epochs",
        type=click.IntRange(0),
        default=None,
        help="linf-dist: epochs of the lp relaxation (p doubling from 8 to 1024, then inf)  "
        "[default: half of --epochs]",
    ),
    iters_option(None),
    limit_option("training images", "--train-limit"),
    seed_option,
    device_option,
    threads_option,
    data_root_option,
    click.option(
        "--out",
        required=True,
        type=RunFolderPath(),
        help="run folder (checkpoint.pt; a folder holding a run continues it)",
    ),
    click.option(
        "--resume",
        is_flag=True,
        hidden=True,
        help="require a run to continue in --out (continuing is the default)",
    ),
    click.option("--max-steps", type=click.IntRange(0), help="stop after N steps (continue later)"),
    click.option("--checkpoint-every", default=200, show_default=True, type=click.IntRange(1)),
    click.option(
        "--eval-limit",
        type=click.IntRange(0),
        help="certify on the first N test images after training (0: skip; default: all, or "
        "--limit when the run has one)",
    ),
    json_option,
    quiet_option,
)


@classify.command()
@with_options(_TRAIN_OPTIONS)
@click.pass_context
def train(
    ctx: click.Context,
    device: str | None,
    threads: int | None,
    data_root: str | None,
    out: str,
    resume: bool,
    max_steps: int | None,
    checkpoint_every: int,
    eval_limit: int | None,
    as_json: bool,
    quiet: bool,
    **fields,
) -> None:
    """Train a classifier in a run folder and certify it on the test split at --eps.

    A folder that holds a run is continued from its last checkpoint with the run's
    saved options (options given here must agree with them). Ctrl-C checkpoints first.
    """
    from wassnet import distributed
    from wassnet.certify.train import TrainConfig, train_and_certify
    from wassnet.runs import CHECKPOINT_NAME, LoopOptions, continued_config

    with distributed.peer_failures():  # under torchrun: rank 0 reads the run folder
        if distributed.launch().distributed:
            distributed.start(device)
        saved = distributed.from_main(
            saved_config, Path(out) / CHECKPOINT_NAME, "classifier", resume
        )
        config = continued_config(TrainConfig, saved, fields, given_options(ctx, fields))
        set_threads(threads)
        loop = LoopOptions(checkpoint_every, max_steps, progress=not quiet)
        report = train_and_certify(
            config, out, eval_limit=eval_limit, data_root=data_root, device=device, loop=loop
        )
    distributed.shutdown()
    if distributed.is_main():  # rank 0 prints (and certified the test split)
        emit(report, as_json)


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
    help="radii in the checkpoint's norm, e.g. --eps 0.5 1.0 1.58  [default: 0.5 1.0 "
    "1.58 in l2, 0.1 0.3 in l-inf, 1 2 in l1]",
)
@click.argument("eps_more", nargs=-1, metavar="")
@click.option("--dataset", type=click.Choice(IMAGE_NAMES), help="default: the checkpoint's")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@limit_option("images of the split")
@data_root_option
@click.option(
    "--attack/--no-attack",
    default=True,
    show_default=True,
    help="PGD (in the checkpoint's norm) on certified points at their radius (must break none)",
)
@click.option(
    "--attack-limit",
    "attack_limit",
    cls=Renamed,
    old=("--attack-n",),
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="attack the first N certified points",
)
@click.option("--attack-steps", default=50, show_default=True, type=click.IntRange(1))
@seed_option
@device_option
@threads_option
@json_option
@quiet_option
def certify(
    checkpoint: str,
    eps_first: tuple[str, ...],
    eps_more: tuple[str, ...],
    dataset: str | None,
    split: str,
    limit: int | None,
    data_root: str | None,
    attack: bool,
    attack_limit: int,
    attack_steps: int,
    seed: int,
    device: str | None,
    threads: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Clean accuracy and certified accuracy per radius, with the PGD check.

    Prints "certified but broken: 0 of N": PGD (in the checkpoint's norm) run on N certified
    points at their certified radius; any other count would mean a wrong certificate.
    """
    eps = _parse_eps(eps_first, eps_more) if eps_first or eps_more else None
    from wassnet.certify.evaluation import AttackOptions, evaluate
    from wassnet.certify.model import load_classifier
    from wassnet.datasets import load_images
    from wassnet.errors import InputError
    from wassnet.runtime import resolve_device

    set_threads(threads)
    loaded = load_classifier(checkpoint, device=resolve_device(device))
    eps = _DEFAULT_EPS.get(loaded.norm, _DEFAULT_EPS["2"]) if eps is None else eps
    name = dataset or loaded.config.get("dataset", "mnist")
    data = load_images(name, data_root, split=split, limit=limit)
    options = AttackOptions(limit=attack_limit, steps=attack_steps, seed=seed) if attack else None
    try:
        ev = evaluate(loaded, data, eps, attack=options, progress=not quiet)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    result = {**ev.accuracy.to_dict(), "dataset": name, "split": split}
    if ev.attack is not None:
        result["attack"] = ev.attack.to_dict()
    text = f"{name} {split} split\n" + ev.summary()
    emit(_Result(result, text), as_json, lambda: text)


def _check_export_target(checkpoint: str, out: str, force: bool) -> None:
    """Refuse to overwrite the checkpoint, or any existing file without ``--force``."""
    target, source = Path(out), Path(checkpoint)
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise click.BadParameter(
            f"{out} is the checkpoint being exported: choose another file", param_hint="--out"
        )
    check_new_file(out, force, "--out")


@classify.command("export")
@click.option("--checkpoint", required=True, type=click.Path(), help="a classifier checkpoint")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="file for the plain-torch program (torch.export, .pt2)",
)
@click.option("--force", is_flag=True, help="replace OUT if it exists (never the checkpoint)")
@json_option
def export_command(checkpoint: str, out: str, force: bool, as_json: bool) -> None:
    """Export to plain torch layers (torch.export program), certificate unchanged.

    Load with ``torch.export.load(OUT).module()``; the certified bound L is stored in
    the program's extra file ``wassnet.json`` and printed here. An existing OUT is
    kept unless ``--force``; OUT can never be the checkpoint itself. The program is
    written to a temporary file and renamed, so a failed export (a full disk) leaves
    OUT as it was and says so in one line.
    """
    _check_export_target(checkpoint, out, force)
    import torch

    from wassnet.certify.evaluation import export_checked
    from wassnet.certify.model import load_classifier
    from wassnet.checkpoint import write_atomic

    loaded = load_classifier(checkpoint)
    model, shape = loaded.model, loaded.input_shape
    plain, bound = export_checked(model, shape, p=loaded.norm)  # same bound, or RuntimeError
    probe = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    program = torch.export.export(plain, (probe,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    meta = {
        "lipschitz_bound": bound,
        "input_shape": list(shape),
        "num_classes": loaded.num_classes,
        "arch": loaded.arch,
        "norm": loaded.norm,
        "radius": f"margin / ({_FACTOR_TEXT[loaded.norm]} * lipschitz_bound)",
    }
    target = Path(out)
    buffer = io.BytesIO()  # in memory first: torch's C++ writer never meets a full disk
    torch.export.save(program, buffer, extra_files={"wassnet.json": json.dumps(meta)})
    buffer.seek(0)
    reloaded = torch.export.load(buffer).module()
    with torch.no_grad():
        same = bool((reloaded(probe).argmax(1) == model(probe).argmax(1)).all())
    if not same:
        raise RuntimeError("the exported program predicts differently from the checkpoint")
    write_atomic(buffer.getbuffer(), target, "exported program")
    text = f"exported {meta['arch']} to {target}; certified Lipschitz bound {bound:.8f} (unchanged)"
    emit(_Result({**meta, "out": str(target)}, text), as_json, lambda: text)
