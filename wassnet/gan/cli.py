"""``wassnet gan``: train a WGAN, sample from it, measure its FID (or exact W1 on 2-D data).

Heavy imports (torch, pytorch-fid) happen inside the commands, so ``wassnet --help``
stays fast.
"""

from __future__ import annotations

import math
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
    force_option,
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
from wassnet.deprecation import deprecated_alias
from wassnet.errors import InputError
from wassnet.names import (
    ARCHS,
    CONSTRAINTS,
    DATASETS,
    LEGACY_GAN_CRITICS,
    is_toy,
)

#: Options that define a run: the :class:`~wassnet.gan.trainer.GANConfig` fields.
CONFIG_FIELDS = (
    "dataset",
    "arch",
    "constraint",
    "norm",
    "steps",
    "batch_size",
    "n_critic",
    "lr_g",
    "lr_c",
    "beta1",
    "beta2",
    "gp",
    "latent_dim",
    "generator_width",
    "width",
    "iters",
    "limit",
    "seed",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "eval_samples",
)

_positive = click.IntRange(1)
_rate = Finite(0, open_low=True)
_beta = Finite(0, 1, open_high=True)


@click.group(cls=ErrorLineGroup)
def gan() -> None:
    """Wasserstein GANs with a 1-Lipschitz critic (no gradient penalty), and WGAN-GP."""


def _legacy_critic(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """The hidden ``--critic NAME`` of wassnet 0.1: sets ``--arch`` and ``--constraint``."""
    if value is not None:
        arch, constraint = LEGACY_GAN_CRITICS[value]
        deprecated_alias(f"--critic {value}", f"--arch {arch} --constraint {constraint}")
        ctx.meta["wassnet_legacy_critic"] = (value, (arch, constraint))


def _legacy_arch_constraint(ctx: click.Context, options: dict) -> frozenset[str]:
    """Apply ``--critic NAME`` exactly as its ``--arch A --constraint C`` would be: the
    two options count as given (a continued run refuses a change of either), and giving
    either beside ``--critic`` is a usage error. Returns the names it set."""
    if "wassnet_legacy_critic" not in ctx.meta:
        return frozenset()
    name, (arch, constraint) = ctx.meta["wassnet_legacy_critic"]
    clash = sorted(given_options(ctx, ("arch", "constraint")))
    if clash:
        raise click.UsageError(
            f"--critic {name} is the old spelling of --arch {arch} --constraint {constraint}: "
            f"give it or --{' and --'.join(clash)}, not both",
            ctx,
        )
    options["arch"], options["constraint"] = arch, constraint
    return frozenset(("arch", "constraint"))


#: The options of `gan train`, in the order ``--help`` lists them.
_TRAIN_OPTIONS = (
    click.option("--dataset", type=click.Choice(DATASETS), default="mnist", show_default=True),
    click.option(
        "--arch",
        type=click.Choice(list(ARCHS)),
        default=None,
        help="critic architecture  [default: conv-small for images, dense-small for 2-D data]",
    ),
    click.option(
        "--constraint",
        type=click.Choice(CONSTRAINTS),
        default="orthogonal",
        show_default=True,
        help="orthogonal: 1-Lipschitz by construction (Björck/BCOP + GroupSort); projection: "
        "plain layers + GroupSort, weights projected to --norm norm <= 1 after every step; "
        "none: plain layers + ReLU with a gradient penalty (the WGAN-GP baseline)",
    ),
    norm_option(
        "the norm the critic is 1-Lipschitz in, i.e. the ground cost of the W1 minimized: "
        "2 euclidean, 1 cityblock, inf chebyshev (1 and inf need --constraint projection)"
    ),
    click.option(
        "--critic",
        type=click.Choice(list(LEGACY_GAN_CRITICS)),
        hidden=True,
        expose_value=False,
        callback=_legacy_critic,
    ),
    click.option("--out", "out_dir", required=True, type=RunFolderPath(), help="run folder"),
    click.option(
        "--resume",
        is_flag=True,
        hidden=True,
        help="(old spelling) require a run to continue in --out; continuing is the default",
    ),
    click.option(
        "--steps", type=_positive, default=2000, show_default=True, help="generator steps"
    ),
    click.option("--batch-size", type=_positive, default=64, show_default=True),
    click.option(
        "--n-critic",
        type=_positive,
        default=5,
        show_default=True,
        help="critic steps per generator step",
    ),
    click.option(
        "--lr-g", type=_rate, default=2e-3, show_default=True, help="generator Adam learning rate"
    ),
    click.option(
        "--lr-c", type=_rate, default=2e-3, show_default=True, help="critic Adam learning rate"
    ),
    click.option("--beta1", type=_beta, default=0.5, show_default=True),
    click.option("--beta2", type=_beta, default=0.9, show_default=True),
    click.option(
        "--gp",
        type=Finite(0),
        default=None,
        help="gradient-penalty weight (default: 10 with --constraint none, else 0)",
    ),
    click.option("--latent-dim", type=_positive, default=64, show_default=True),
    click.option("--generator-width", type=_positive, default=64, show_default=True),
    click.option(
        "--width",
        "width",
        cls=Renamed,
        old=("--critic-width",),
        type=_positive,
        default=128,
        show_default=True,
        help="critic hidden width (every hidden layer of --arch)",
    ),
    iters_option(10, "--bjorck-iters"),
    limit_option("training images", "--data-limit"),
    seed_option,
    click.option("--log-every", type=_positive, default=10, show_default=True),
    click.option(
        "--sample-every", type=_positive, default=250, show_default=True, help="sample grid cadence"
    ),
    click.option("--checkpoint-every", type=_positive, default=100, show_default=True),
    click.option(
        "--eval-samples",
        type=_positive,
        default=512,
        show_default=True,
        help="2-D: points for the exact W1",
    ),
    data_root_option,
    device_option,
    threads_option,
    json_option,
    quiet_option,
)


@gan.command()
@with_options(_TRAIN_OPTIONS)
@click.pass_context
def train(
    ctx: click.Context,
    out_dir: str,
    resume: bool,
    data_root: str | None,
    device: str | None,
    threads: int | None,
    as_json: bool,
    quiet: bool,
    **fields,
) -> None:
    """Train a WGAN; writes checkpoint.pt, metrics.jsonl, sample grids and curves to --out.

    A folder that holds a run is continued from its last checkpoint with the run's
    saved options; options given on the command line must agree with them, except
    --steps (to extend a run) and the logging cadences. Ctrl-C checkpoints first.
    """
    from wassnet import distributed
    from wassnet.gan.trainer import GANConfig, train_gan
    from wassnet.runs import CHECKPOINT_NAME, continued_config

    legacy = _legacy_arch_constraint(ctx, fields)
    with distributed.peer_failures():  # under torchrun: rank 0 reads the run folder
        if distributed.launch().distributed:
            distributed.start(device)
        saved = distributed.from_main(saved_config, Path(out_dir) / CHECKPOINT_NAME, "gan", resume)
        config = continued_config(GANConfig, saved, fields, given_options(ctx, fields) | legacy)
        set_threads(threads)
        result = train_gan(config, out_dir, data_root=data_root, device=device, progress=not quiet)
    distributed.shutdown()
    if distributed.is_main():  # rank 0 prints
        emit(result, as_json)


@gan.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="checkpoint.pt or run folder")
@click.option("--n", "n", type=_positive, default=64, show_default=True, help="number of samples")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help=".png picture or .npy array",
)
@force_option
@seed_option
@device_option
def sample(
    checkpoint: str, n: int, out_path: str, force: bool, seed: int, device: str | None
) -> None:
    """Draw samples from a trained generator: a grid (images) or scatter plot (2-D), or .npy."""
    import numpy as np

    from wassnet.gan.plots import save_samples
    from wassnet.gan.trainer import generate, load_generator
    from wassnet.runtime import check_memory

    check_new_file(out_path, force, "--out", (".png", ".npy"))
    path = Path(out_path)
    loaded = load_generator(checkpoint, device)
    check_memory(8.0 * n * math.prod(loaded.data_shape), f"drawing {n} samples")
    samples = generate(loaded.generator, n, seed=seed)
    if path.suffix.lower() == ".npy":
        np.save(path, samples.numpy(), allow_pickle=False)
    else:
        save_samples(samples * 2 - 1 if samples.dim() == 4 else samples, path)
    click.echo(f"wrote {n} samples to {path}")


@gan.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="checkpoint.pt or run folder")
@click.option(
    "--n", "n", type=_positive, default=2000, show_default=True, help="generated and real samples"
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="test",
    show_default=True,
    help="real images: first N of this split",
)
@click.option(
    "--fid-weights",
    type=click.Path(),
    default=None,
    help="local pytorch-fid Inception state_dict (.pth, or its folder); "
    "default: $WASSNET_FID_WEIGHTS, else pytorch-fid's download",
)
@data_root_option
@click.option("--batch-size", type=_positive, default=50, show_default=True)
@seed_option
@device_option
@threads_option
@json_option
@quiet_option
def fid(
    checkpoint: str,
    n: int,
    split: str,
    fid_weights: str | None,
    data_root: str | None,
    batch_size: int,
    seed: int,
    device: str | None,
    threads: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """FID of a generator's samples against real images (pytorch-fid's Inception).

    For 2-D toy data, prints instead the exact W1 (POT) between N generated points and N
    data points, next to the sampling floor: the W1 between two independent N-point
    samples of the data.
    """
    import torch

    from wassnet.gan.trainer import generate, load_generator

    set_threads(threads)
    loaded = load_generator(checkpoint, device)
    generator, config = loaded.generator, loaded.config
    if is_toy(config.dataset):
        from wassnet.datasets import sample_toy
        from wassnet.gan.toy import ToyW1Result
        from wassnet.ot import exact_w1

        gen = torch.Generator().manual_seed(seed + 12345)
        a = sample_toy(config.dataset, n, gen).double().numpy()
        b = sample_toy(config.dataset, n, gen).double().numpy()
        fake = generate(generator, n, seed=seed).double().numpy()
        metric = config.lp.metric  # the cost of the W1 the run minimized
        result = ToyW1Result(
            config.dataset,
            n,
            exact_w1(fake, a, metric=metric),
            exact_w1(a, b, metric=metric),
            metric,
        )
        emit(result, as_json)
        return
    from wassnet.datasets import load_images
    from wassnet.gan.fid import compute_fid

    real = load_images(config.dataset, data_root, split=split, limit=n).images
    if len(real) < n:
        raise InputError(
            f"the {split} split of {config.dataset} has only {len(real)} images; "
            f"use --n {len(real)} or less"
        )
    fake = generate(generator, n, seed=seed)
    result = compute_fid(real, fake, fid_weights, device, batch_size, progress=not quiet)
    emit(result, as_json)
