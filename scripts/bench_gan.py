"""Benchmark of `wassnet gan`: Lipschitz critics versus the WGAN-GP ReLU baseline.

    python scripts/bench_gan.py                      # the CPU run in BENCHMARKS.md (~35 min)
    python scripts/bench_gan.py --steps 5000 --fid-n 10000 --device cuda   # a GPU-sized run
    python scripts/bench_gan.py --equal-time 300     # projection vs parametrization

MNIST: the same DCGAN-style generator, seed, batch, optimizer and number of generator
steps, trained with (a) the GroupSort/Björck dense critic, (b) the BCOP convolutional
critic, (c) a ReLU convolutional critic of the same shape with the WGAN-GP penalty
(weight 10). Reported: FID at equal steps (pytorch-fid Inception, ``--fid-n`` generated
images against the first ``--fid-n`` MNIST test images, equal N for all rows), the
median time of one generator step (including its critic steps), the peak memory of the
training process (RSS of a fresh child process on CPU; CUDA max allocated on a GPU),
and the critic's certified Lipschitz bound at the end.

8gaussians and ring: the MLP generator trained with the GroupSort/Björck dense critic
and with the ReLU dense critic + WGAN-GP, equal steps; reported: the exact W1 (POT)
between ``--toy-n`` generated points and as many data points, next to the sampling floor
(W1 between two independent data samples of that size).

``--equal-time SECONDS``: MNIST critics constrained by **projection** (plain layers,
weights projected onto l2 operator norm <= 1 after every critic step) against the same
architectures **parametrized** (Björck / BCOP), and WGAN-GP, each trained for the same
CPU time: a 30-step calibration run measures the row's time per generator step, the
real run gets ``SECONDS / that`` generator steps. Section ``bench_gan_projection``.

Every training run is a ``wassnet gan train`` child process, so its peak memory is its
own. Writes the section ``bench_gan`` of BENCHMARKS.md; the run folders stay in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchtools import ROOT, markdown_table, write_section

MNIST_CRITICS = {
    "groupsort-dense": "GroupSort + Björck dense (no GP)",
    "bcop-conv": "BCOP conv (no GP)",
    "relu-conv": "ReLU conv + WGAN-GP",
}
#: WGAN-GP at its customary optimizer settings (Gulrajani et al. 2017), beside the rows
#: that share ``--lr-g`` / ``--lr-c``: (critic, label, options overriding the common ones).
MNIST_STANDARD_GP = (
    "relu-conv",
    "ReLU conv + WGAN-GP, lr 1e-4 (standard)",
    ["--lr-g", "1e-4", "--lr-c", "1e-4", "--beta1", "0.5", "--beta2", "0.9"],
)
#: ``--equal-time`` rows: (arch, constraint, label).
EQUAL_TIME_ROWS = (
    ("conv-small", "orthogonal", "BCOP conv + Björck dense (parametrization)"),
    ("conv-small", "projection", "plain conv + dense, projected after every step"),
    ("dense-small", "orthogonal", "Björck dense (parametrization)"),
    ("dense-small", "projection", "plain dense, projected after every step"),
    ("conv-small", "none", "ReLU conv + WGAN-GP (reference)"),
)
TOY_CRITICS = {
    "groupsort-dense": "GroupSort + Björck dense (no GP)",
    "relu-dense": "ReLU dense + WGAN-GP",
}


def _reusable(args: argparse.Namespace, out: Path, options: list[str]) -> dict | None:
    """The summary of a finished run in ``out`` trained with these options, if any."""
    path = out / "summary.json"
    if not (args.reuse and path.exists()):
        return None
    summary = json.loads(path.read_text())
    wanted = dict(zip(options[::2], options[1::2], strict=True))
    wanted["--seed"] = str(args.seed)
    for flag, value in wanted.items():
        key = flag.removeprefix("--").replace("-", "_")
        if key in summary["config"] and str(summary["config"][key]) != value:
            try:
                if float(summary["config"][key]) == float(value):
                    continue
            except (TypeError, ValueError):
                pass
            return None
    return summary


def _critic_options(row: str) -> list[str]:
    """The ``gan train`` options of a row named by its critic (e.g. ``bcop-conv``)."""
    from wassnet.names import LEGACY_GAN_CRITICS

    arch, constraint = LEGACY_GAN_CRITICS[row]
    return ["--arch", arch, "--constraint", constraint]


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (tables name no home)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _train(args: argparse.Namespace, out: Path, options: list[str], log) -> dict:
    reused = _reusable(args, out, options)
    if reused is not None:
        log(f"reusing the finished run in {out}")
        return reused
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "wassnet.cli",
        "gan",
        "train",
        "--out",
        str(out),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--quiet",
        "--json",
        *options,
    ]
    if args.device:
        cmd += ["--device", args.device]
    log(" ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"training failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout)
    log(f"  done in {time.perf_counter() - t0:.0f} s: step {result['step_time_s'] * 1e3:.0f} ms")
    return result


def _mnist_options(args: argparse.Namespace, steps: int) -> list[str]:
    """The ``gan train`` options every MNIST row shares, for ``steps`` generator steps."""
    return [
        "--dataset",
        "mnist",
        "--steps",
        str(steps),
        "--batch-size",
        str(args.batch_size),
        "--n-critic",
        str(args.n_critic),
        "--lr-g",
        str(args.lr_g),
        "--lr-c",
        str(args.lr_c),
        "--beta1",
        str(args.beta1),
        "--beta2",
        str(args.beta2),
        "--width",
        str(args.width),
        "--iters",
        str(args.iters),
        "--data-root",
        str(args.data_root),
        "--sample-every",
        str(max(1, steps // 4)),
        "--checkpoint-every",
        str(steps),
        "--log-every",
        str(max(1, steps // 50)),
    ]


def _fids(args: argparse.Namespace, folders: dict[str, Path], log) -> dict[str, float]:
    """FID of each trained generator (``--fid-n`` images) against MNIST test images."""
    from wassnet.datasets import load_images
    from wassnet.gan.fid import (
        frechet_distance_from_features,
        inception_features,
        load_fid_inception,
    )
    from wassnet.gan.trainer import generate, load_generator

    torch.set_num_threads(args.threads)
    model = load_fid_inception(args.fid_weights, args.device)
    real = load_images("mnist", args.data_root, split="test", limit=args.fid_n).images
    t0 = time.perf_counter()
    real_features = inception_features(real, model[0])
    log(f"real statistics ({len(real)} images) in {time.perf_counter() - t0:.0f} s")
    fids = {}
    for name, folder in folders.items():
        generator = load_generator(folder, args.device).generator
        fake = generate(generator, args.fid_n, seed=args.seed)
        fids[name] = frechet_distance_from_features(
            real_features, inception_features(fake, model[0])
        )
        log(f"FID {name}: {fids[name]:.2f}")
    return fids


def mnist(args: argparse.Namespace, log) -> str:
    common = _mnist_options(args, args.steps)
    # name -> (critic, label, options); later options override the common ones
    specs = {c: (c, label, []) for c, label in MNIST_CRITICS.items()}
    if args.standard_gp_row:
        specs["relu-conv_lr1e-4"] = MNIST_STANDARD_GP
    runs = {}
    for name, (critic, _, extra) in specs.items():
        options = [*common, *_critic_options(critic)]
        for flag, value in zip(extra[::2], extra[1::2], strict=True):
            options[options.index(flag) + 1] = value
        runs[name] = _train(args, args.out / f"mnist_{name}", options, log)

    fids = _fids(args, {name: args.out / f"mnist_{name}" for name in specs}, log)
    rows = []
    for name, (_, label, _) in specs.items():
        r = runs[name]
        rows.append(
            [
                label,
                f"{fids[name]:.1f}",
                f"{r['step_time_s'] * 1e3:.0f}",
                f"{r['peak_memory_mb']:.0f}",
                f"{r['critic_lipschitz_bound']:.6f}",
                f"{r['train_time_s'] / 60:.1f}",
            ]
        )
    table = markdown_table(
        [
            "critic",
            f"FID (N={args.fid_n})",
            "ms / generator step",
            f"peak memory MB ({runs['bcop-conv']['memory_kind']})",
            "certified Lipschitz bound",
            "train minutes",
        ],
        rows,
    )
    grid = args.out / "mnist_bcop-conv" / f"samples_{args.steps:06d}.png"
    standard = (
        "The last row is WGAN-GP at its customary Adam lr 1e-4 (both networks), everything "
        "else equal. "
        if args.standard_gp_row
        else ""
    )
    return (
        f"**MNIST**, {args.steps} generator steps, {args.n_critic} critic steps each, batch "
        f"{args.batch_size}, Adam lr {args.lr_g:g} (generator) / {args.lr_c:g} (critic) betas "
        f"({args.beta1:g}, {args.beta2:g}) for every critic, DCGAN-style generator (latent 64, "
        f"width 64), critic hidden width {args.width}, Björck/BCOP iterations "
        f"{args.iters}, seed {args.seed}. "
        f"{standard}FID: {args.fid_n} generated images against the first {args.fid_n} MNIST "
        f"test images (pytorch-fid Inception, local weights), equal N for every row; small-N "
        f"FID is biased upwards, so compare rows, not papers. Sample grids: "
        f"`{grid.relative_to(args.out)}` etc. under `{_shown(args.out)}`.\n\n{table}\n"
    )


def equal_time(args: argparse.Namespace, log) -> str:
    """Projection vs parametrization (and WGAN-GP) at equal CPU time (module notes)."""
    runs, folders = {}, {}
    for arch, constraint, _ in EQUAL_TIME_ROWS:
        name = f"{arch}_{constraint}"
        row = ["--arch", arch, "--constraint", constraint]
        calibration = _train(
            args, args.out / f"calibrate_{name}", [*_mnist_options(args, 30), *row], log
        )
        steps = max(1, int(args.equal_time / calibration["step_time_s"]))
        folders[name] = args.out / f"equal_{name}"
        runs[name] = _train(args, folders[name], [*_mnist_options(args, steps), *row], log)
        runs[name]["steps"] = steps
    fids = _fids(args, folders, log)
    rows = [
        [
            label,
            constraint,
            f"{fids[f'{arch}_{constraint}']:.1f}",
            runs[f"{arch}_{constraint}"]["steps"],
            f"{runs[f'{arch}_{constraint}']['step_time_s'] * 1e3:.0f}",
            f"{runs[f'{arch}_{constraint}']['train_time_s'] / 60:.1f}",
            f"{runs[f'{arch}_{constraint}']['critic_lipschitz_bound']:.6f}",
        ]
        for arch, constraint, label in EQUAL_TIME_ROWS
    ]
    table = markdown_table(
        [
            "critic",
            "constraint",
            f"FID (N={args.fid_n})",
            "generator steps",
            "ms / generator step",
            "train minutes",
            "certified Lipschitz bound (l2)",
        ],
        rows,
    )
    return (
        f"**MNIST at equal CPU time**: {args.equal_time:g} s of training per row (generator "
        f"steps = {args.equal_time:g} s / the row's median step time, measured by a 30-step "
        f"calibration run), {args.n_critic} critic steps per generator step, batch "
        f"{args.batch_size}, Adam lr {args.lr_g:g} / {args.lr_c:g} betas ({args.beta1:g}, "
        f"{args.beta2:g}), critic width {args.width}, Björck/BCOP iterations {args.iters} "
        f"(parametrized rows; projected rows run 3 warm-started Björck iterations per "
        f"dense weight and rescale each convolution by its certified operator norm), "
        f"seed {args.seed}, {args.threads} torch thread(s). FID: {args.fid_n} generated "
        f"images against the first {args.fid_n} MNIST test images.\n\n{table}\n"
    )


def toy(args: argparse.Namespace, log) -> str:
    rows = []
    for dataset in ("8gaussians", "ring"):
        for critic, label in TOY_CRITICS.items():
            out = args.out / f"{dataset}_{critic}"
            options = [
                "--dataset",
                dataset,
                *_critic_options(critic),
                "--steps",
                str(args.toy_steps),
                "--batch-size",
                "256",
                "--n-critic",
                str(args.n_critic),
                "--lr-g",
                "1e-3",
                "--lr-c",
                "1e-3",
                "--latent-dim",
                "8",
                "--generator-width",
                "128",
                "--width",
                "128",
                "--iters",
                str(args.iters),
                "--eval-samples",
                str(args.toy_n),
                "--sample-every",
                str(max(1, args.toy_steps // 5)),
                "--checkpoint-every",
                str(args.toy_steps),
            ]
            r = _train(args, out, options, log)
            proc = subprocess.run(
                [
                    *(sys.executable, "-m", "wassnet.cli", "gan", "fid", "--checkpoint", str(out)),
                    *("--n", str(args.toy_n), "--seed", str(args.seed), "--json"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            w = json.loads(proc.stdout)
            rows.append(
                [
                    dataset,
                    label,
                    f"{w['w1']:.4f}",
                    f"{w['floor']:.4f}",
                    f"{r['step_time_s'] * 1e3:.0f}",
                    f"{r['critic_lipschitz_bound']:.6f}",
                ]
            )
            log(f"{dataset} {critic}: W1 {w['w1']:.4f} (floor {w['floor']:.4f})")
    table = markdown_table(
        [
            "data",
            "critic",
            f"exact W1 (n={args.toy_n})",
            "floor (data vs data)",
            "ms / generator step",
            "certified Lipschitz bound",
        ],
        rows,
    )
    return (
        f"**2-D toy data**, {args.toy_steps} generator steps, {args.n_critic} critic steps "
        f"each, batch 256, Adam lr 1e-3 betas (0.5, 0.9), MLP generator (latent 8, 3x128 "
        f"ReLU), critics 3x128 (GP weight 10 for ReLU), seed {args.seed}. Exact W1 by POT "
        f"between {args.toy_n} fresh generated points and {args.toy_n} data points.\n\n{table}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="MNIST generator steps")
    parser.add_argument("--toy-steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-critic", type=int, default=5)
    parser.add_argument("--lr-g", type=float, default=2e-3, help="MNIST generator Adam lr")
    parser.add_argument("--lr-c", type=float, default=2e-3, help="MNIST critic Adam lr")
    parser.add_argument("--beta1", type=float, default=0.5)
    parser.add_argument("--beta2", type=float, default=0.9)
    parser.add_argument("--width", type=int, default=128, help="critic hidden width")
    parser.add_argument("--iters", type=int, default=10, help="Björck/BCOP iterations")
    parser.add_argument("--fid-n", type=int, default=1000, help="images per side for FID")
    parser.add_argument("--toy-n", type=int, default=1000, help="points per side for W1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="MNIST folder (default: a temp copy of ../shared/data)",
    )
    parser.add_argument("--fid-weights", default=None, help="pytorch-fid Inception state_dict")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_gan")
    parser.add_argument(
        "--reuse", action="store_true", help="keep finished runs in --out with the same options"
    )
    parser.add_argument(
        "--no-standard-gp-row",
        dest="standard_gp_row",
        action="store_false",
        help="skip the extra WGAN-GP row at lr 1e-4 (its customary setting)",
    )
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--note", default="", help="a line added under the tables")
    parser.add_argument(
        "--equal-time",
        type=float,
        default=None,
        help="seconds per row: projection vs parametrization at equal CPU time (only)",
    )
    args = parser.parse_args()

    shared = ROOT.parent / "shared" / "data"
    tmp = None
    if args.data_root is None:
        tmp = Path(tempfile.mkdtemp(prefix="wassnet-data-"))
        shutil.copytree(shared / "MNIST", tmp / "MNIST")
        args.data_root = tmp
    if args.fid_weights is None and not os.environ.get("WASSNET_FID_WEIGHTS"):
        local = shared / "fid" / "pt_inception-2015-12-05-converted.pth"
        args.fid_weights = str(local) if local.exists() else None
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    t0 = time.perf_counter()
    parts = []
    if args.equal_time is not None:
        try:
            body = equal_time(args, log)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        total = (time.perf_counter() - t0) / 60
        body += f"\nWhole benchmark: {total:.0f} min (shared machine). {args.note}\n"
        title = "WGAN critics: projection vs parametrization at equal CPU time"
        write_section("bench_gan_projection", title, body)
        print(body)
        return
    try:
        if not args.skip_mnist:
            parts.append(mnist(args, log))
        if not args.skip_toy:
            parts.append(toy(args, log))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    total = (time.perf_counter() - t0) / 60
    body = "\n".join(parts) + (
        f"\nWhole benchmark: {total:.0f} min. Times are wall-clock on a machine shared with "
        f"other jobs (indicative, not precise). {args.note}\n"
    )
    write_section("bench_gan", "WGAN: Lipschitz critics versus WGAN-GP", body)
    print(body)


if __name__ == "__main__":
    main()
