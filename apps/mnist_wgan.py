"""Train an MNIST Wasserstein GAN whose critic is 1-Lipschitz by construction.

After Anil, Lucas & Grosse (ICML 2019) and Li et al. (NeurIPS 2019): the critic is a
BCOP convolutional network (or GroupSort + Björck dense layers), so the WGAN needs no
gradient penalty and no weight clipping, and its Lipschitz constant is certified from
its weights at every log step. Built on the public API only: ``wassnet.gan.GANConfig``,
``train_gan``, ``load_generator``, ``generate``, ``compute_fid``.

    python apps/mnist_wgan.py --out runs/mnist_wgan                 # default run
    python apps/mnist_wgan.py --out /tmp/wgan_quick --quick         # smoke test, seconds
    python apps/mnist_wgan.py --out runs/wgan_gp --constraint none  # WGAN-GP baseline

Writes into ``--out``: the trainer's run folder (``checkpoint.pt``, ``metrics.jsonl``,
``samples_STEP.png`` grids, ``curves.png``), ``grid.png`` (64 samples of the final
generator), and ``results.json`` (config, certified bound, step time, FID if asked).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from wassnet.datasets import default_data_root, load_images
from wassnet.gan import (
    GANConfig,
    compute_fid,
    generate,
    load_generator,
    train_gan,
)
from wassnet.gan.plots import save_samples
from wassnet.names import ARCHS, CONSTRAINTS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/mnist_wgan"))
    parser.add_argument("--arch", choices=list(ARCHS), default="conv-small", help="critic")
    parser.add_argument(
        "--constraint",
        choices=CONSTRAINTS,
        default="orthogonal",
        help="orthogonal: 1-Lipschitz critic; none: WGAN-GP baseline",
    )
    parser.add_argument("--steps", type=int, default=1500, help="generator steps")
    parser.add_argument("--n-critic", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr-g", type=float, default=GANConfig.lr_g, help="generator Adam lr")
    parser.add_argument("--lr-c", type=float, default=GANConfig.lr_c, help="critic Adam lr")
    parser.add_argument("--data-root", type=Path, default=None, help="MNIST folder")
    parser.add_argument("--fid-n", type=int, default=0, help="FID on N images (0: skip)")
    parser.add_argument("--fid-weights", default=None, help="pytorch-fid Inception .pth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke test)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = GANConfig(
        dataset="mnist",
        arch=args.arch,
        constraint=args.constraint,
        steps=3 if args.quick else args.steps,
        batch_size=8 if args.quick else args.batch_size,
        n_critic=1 if args.quick else args.n_critic,
        lr_g=args.lr_g,
        lr_c=args.lr_c,
        generator_width=8 if args.quick else 64,
        width=16 if args.quick else 128,
        iters=3 if args.quick else 10,
        limit=256 if args.quick else None,
        seed=args.seed,
        log_every=1 if args.quick else 10,
        sample_every=3 if args.quick else 250,
    )
    t0 = time.perf_counter()
    result = train_gan(config, args.out, data_root=args.data_root, device=args.device)
    print(result.summary())
    generator = load_generator(args.out, args.device).generator
    samples = generate(generator, 64, seed=args.seed)
    save_samples(samples * 2 - 1, args.out / "grid.png", nrow=8)

    fid = None
    if args.fid_n:
        real = load_images("mnist", args.data_root, split="test", limit=args.fid_n).images
        fake = generate(generator, args.fid_n, seed=args.seed)
        fid = compute_fid(real, fake, args.fid_weights, args.device)
        print(fid.summary())
    results = {
        "config": config.to_dict(),
        "data_root": str(args.data_root or default_data_root()),
        "critic_lipschitz_bound": result.critic_lipschitz_bound,
        "step_time_s": result.step_time_s,
        "peak_memory_mb": result.peak_memory_mb,
        "runtime_s": time.perf_counter() - t0,
        "fid": None if fid is None else fid.to_dict(),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
