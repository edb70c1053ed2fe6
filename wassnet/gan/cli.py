"""``wassnet gan``: train a WGAN, sample from it, measure its FID (or exact W1 on 2-D data).

Heavy imports (torch, pytorch-fid) happen inside the commands, so ``wassnet --help``
stays fast.
"""

from __future__ import annotations

import click

from wassnet.clitools import ErrorLineGroup, emit

DATASET_NAMES = (
    "mnist",
    "fashion-mnist",
    "cifar10",
    "8gaussians",
    "25gaussians",
    "ring",
    "swissroll",
)
CRITIC_NAMES = ("groupsort-dense", "bcop-conv", "relu-dense", "relu-conv")

#: CLI option name -> GANConfig field, for the options that define a run.
_CONFIG_OPTIONS = {
    "dataset": "dataset",
    "critic": "critic",
    "steps": "steps",
    "batch_size": "batch_size",
    "n_critic": "n_critic",
    "lr_g": "lr_g",
    "lr_c": "lr_c",
    "beta1": "beta1",
    "beta2": "beta2",
    "gp": "gp",
    "latent_dim": "latent_dim",
    "generator_width": "generator_width",
    "critic_width": "critic_width",
    "bjorck_iters": "bjorck_iters",
    "data_limit": "data_limit",
    "seed": "seed",
    "log_every": "log_every",
    "sample_every": "sample_every",
    "checkpoint_every": "checkpoint_every",
    "eval_samples": "eval_samples",
}

_positive = click.IntRange(1)
_rate = click.FloatRange(0, min_open=True)
_beta = click.FloatRange(0, 1, max_open=True)


@click.group(cls=ErrorLineGroup)
def gan() -> None:
    """Wasserstein GANs with a 1-Lipschitz critic (no gradient penalty), and WGAN-GP."""


@gan.command()
@click.option("--dataset", type=click.Choice(DATASET_NAMES), default="mnist", show_default=True)
@click.option(
    "--critic",
    type=click.Choice(CRITIC_NAMES),
    default=None,
    help="groupsort-dense / bcop-conv: 1-Lipschitz by construction; relu-dense / relu-conv: "
    "the WGAN-GP baseline  [default: bcop-conv for images, groupsort-dense for 2-D data]",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run folder"
)
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option("--steps", type=_positive, default=2000, show_default=True, help="generator steps")
@click.option("--batch-size", type=_positive, default=64, show_default=True)
@click.option(
    "--n-critic",
    type=_positive,
    default=5,
    show_default=True,
    help="critic steps per generator step",
)
@click.option(
    "--lr-g", type=_rate, default=2e-3, show_default=True, help="generator Adam learning rate"
)
@click.option(
    "--lr-c", type=_rate, default=2e-3, show_default=True, help="critic Adam learning rate"
)
@click.option("--beta1", type=_beta, default=0.5, show_default=True)
@click.option("--beta2", type=_beta, default=0.9, show_default=True)
@click.option(
    "--gp",
    type=click.FloatRange(0),
    default=None,
    help="gradient-penalty weight (default: 10 for relu critics, 0 for Lipschitz critics)",
)
@click.option("--latent-dim", type=_positive, default=64, show_default=True)
@click.option("--generator-width", type=_positive, default=64, show_default=True)
@click.option(
    "--critic-width", type=_positive, default=128, show_default=True, help="critic hidden width"
)
@click.option(
    "--bjorck-iters", type=_positive, default=10, show_default=True, help="Björck/BCOP iterations"
)
@click.option(
    "--data-limit", type=_positive, default=None, help="use only the first N training images"
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--log-every", type=_positive, default=10, show_default=True)
@click.option(
    "--sample-every", type=_positive, default=250, show_default=True, help="sample grid cadence"
)
@click.option("--checkpoint-every", type=_positive, default=100, show_default=True)
@click.option(
    "--eval-samples",
    type=_positive,
    default=512,
    show_default=True,
    help="2-D: points for the exact W1",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="image data folder (default: $WASSNET_DATA or ~/.cache/wassnet/data)",
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU if present)")
@click.option("--threads", type=_positive, default=None, help="torch intra-op threads")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--quiet", is_flag=True, help="no progress bar")
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
    **options,
) -> None:
    """Train a WGAN; writes checkpoint.pt, metrics.jsonl, sample grids and curves to --out.

    With --resume, the run's saved config is used; options given on the command line
    must agree with it, except --steps (to extend a run) and the logging cadences.
    """
    import torch

    from wassnet.checkpoint import load_checkpoint
    from wassnet.gan.trainer import CHECKPOINT_NAME, GANConfig, train_gan

    if threads is not None:
        torch.set_num_threads(threads)
    values = {_CONFIG_OPTIONS[k]: v for k, v in options.items()}
    if resume:
        from pathlib import Path

        saved = load_checkpoint(Path(out_dir) / CHECKPOINT_NAME, kind="gan")["config"]
        given = {
            k
            for k in options
            if ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE
        }
        values = {**saved, **{_CONFIG_OPTIONS[k]: options[k] for k in given}}
    if values["critic"] is None:
        from wassnet.gan.data import is_toy

        values["critic"] = "groupsort-dense" if is_toy(values["dataset"]) else "bcop-conv"
    config = GANConfig(**values)
    result = train_gan(
        config, out_dir, resume=resume, data_root=data_root, device=device, progress=not quiet
    )
    emit(result, as_json, result.summary)


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
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="cpu, cuda (default: a GPU if present)")
def sample(checkpoint: str, n: int, out_path: str, seed: int, device: str | None) -> None:
    """Draw samples from a trained generator: a grid (images) or scatter plot (2-D), or .npy."""
    from pathlib import Path

    import numpy as np

    from wassnet.gan.plots import save_samples
    from wassnet.gan.trainer import generate, load_generator

    path = Path(out_path)
    if path.suffix.lower() not in (".png", ".npy"):
        raise click.BadParameter("must end in .png or .npy", param_hint="--out")
    generator, _, _ = load_generator(checkpoint, device)
    samples = generate(generator, n, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
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
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option("--batch-size", type=_positive, default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def fid(
    checkpoint: str,
    n: int,
    split: str,
    fid_weights: str | None,
    data_root: str | None,
    batch_size: int,
    seed: int,
    device: str | None,
    as_json: bool,
) -> None:
    """FID of a generator's samples against real images (pytorch-fid's Inception).

    For 2-D toy data, prints instead the exact W1 (POT) between N generated points and N
    data points, next to the sampling floor: the W1 between two independent N-point
    samples of the data.
    """
    import torch

    from wassnet.gan.data import is_toy
    from wassnet.gan.trainer import generate, load_generator

    generator, config, _ = load_generator(checkpoint, device)
    if is_toy(config.dataset):
        from wassnet.datasets import sample_toy
        from wassnet.gan.toy import ToyW1Result
        from wassnet.ot import exact_w1

        gen = torch.Generator().manual_seed(seed + 12345)
        a = sample_toy(config.dataset, n, gen).double().numpy()
        b = sample_toy(config.dataset, n, gen).double().numpy()
        fake = generate(generator, n, seed=seed).double().numpy()
        result = ToyW1Result(config.dataset, n, exact_w1(fake, a), exact_w1(a, b))
        emit(result, as_json, result.summary)
        return
    from wassnet.datasets import load_images
    from wassnet.gan.fid import compute_fid

    real = load_images(config.dataset, data_root, split=split, limit=n).images
    if len(real) < n:
        raise ValueError(
            f"the {split} split of {config.dataset} has only {len(real)} images; "
            f"use --n {len(real)} or less"
        )
    fake = generate(generator, n, seed=seed)
    result = compute_fid(real, fake, fid_weights, device, batch_size)
    emit(result, as_json, result.summary)
