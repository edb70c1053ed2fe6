"""The WGAN trainer: one resumable loop for Lipschitz critics and the WGAN-GP baseline.

A run lives in one folder:

* ``checkpoint.pt``: the latest checkpoint (atomic; see :mod:`wassnet.checkpoint`):
  config, step, generator, critic, both optimizers, every RNG stream;
* ``metrics.jsonl``: one JSON object per logged step (losses, the critic's W1
  estimate, the critic's certified Lipschitz bound ``critic_lipschitz_bound``, step
  time; for 2-D data the exact W1 of generated samples to data);
* ``samples_STEP.png``: sample grids (images) or scatter plots (2-D);
* ``curves.png``, ``level_sets.png`` (2-D only), ``summary.json`` at the end.

Reproducibility guarantee: all randomness of the loop (minibatch indices or toy
points, latent codes, gradient-penalty interpolation weights) is drawn from one
``torch.Generator`` seeded from ``seed`` and stored in each checkpoint, together with
the global RNG streams and the optimizers. A run killed at any moment (even SIGKILL
mid-step) and resumed with ``resume=True`` from its last checkpoint continues with the
same streams, so its parameters are bit-identical to those of an uninterrupted run on
the same device and thread count. Metrics logged after the last checkpoint are
dropped on resume and recomputed.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wassnet.checkpoint import load_checkpoint, save_checkpoint
from wassnet.gan.critics import CRITICS, LIPSCHITZ_CRITICS, build_critic
from wassnet.gan.data import DATASETS, DataSource, is_toy
from wassnet.gan.generators import make_generator
from wassnet.gan.losses import critic_objective, generator_loss, gradient_penalty
from wassnet.jsonio import strict_json
from wassnet.runtime import resolve_device, rng_state, seed_everything, set_rng_state

__all__ = [
    "CHECKPOINT_NAME",
    "GANConfig",
    "GANResult",
    "build_models",
    "generate",
    "load_generator",
    "train_gan",
]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
#: Config fields that may differ when a run is resumed (the others must match).
RESUMABLE_CHANGES = ("steps", "log_every", "sample_every", "checkpoint_every")


@dataclass
class GANConfig:
    """Everything that defines a WGAN run (model, optimization, logging cadence).

    Defaults suit MNIST with the BCOP critic on a CPU. ``gp=None`` means 10 for the
    ReLU critics (WGAN-GP) and 0 for the Lipschitz ones. The learning rates (2e-3 for
    both networks, Adam betas (0.5, 0.9)) are 20 times WGAN-GP's customary 1e-4: on
    MNIST they gave a far lower FID at equal generator steps for the BCOP, dense and
    WGAN-GP critics alike (measurements in the ``bench_gan`` section of BENCHMARKS.md).
    """

    dataset: str = "mnist"
    critic: str = "bcop-conv"
    steps: int = 2000
    batch_size: int = 64
    n_critic: int = 5
    lr_g: float = 2e-3
    lr_c: float = 2e-3
    beta1: float = 0.5
    beta2: float = 0.9
    gp: float | None = None
    latent_dim: int = 64
    generator_width: int = 64
    critic_width: int = 128
    bjorck_iters: int = 10
    data_limit: int | None = None
    seed: int = 0
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 100
    eval_samples: int = 512

    def __post_init__(self) -> None:
        if self.gp is None:
            self.gp = 0.0 if self.critic in LIPSCHITZ_CRITICS else 10.0
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with one clear sentence for an inconsistent config."""
        if self.dataset not in DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}"
            )
        if self.critic not in CRITICS:
            raise ValueError(f"unknown critic {self.critic!r}: choose one of {', '.join(CRITICS)}")
        positive = [
            "steps",
            "batch_size",
            "n_critic",
            "latent_dim",
            "generator_width",
            "critic_width",
            "bjorck_iters",
            "log_every",
            "sample_every",
            "checkpoint_every",
            "eval_samples",
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr_g", "lr_c"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (math.isfinite(self.gp) and self.gp >= 0):
            raise ValueError(f"gp must be a finite number >= 0, got {self.gp!r}")
        if self.critic not in LIPSCHITZ_CRITICS and self.gp == 0:
            raise ValueError(
                f"critic {self.critic!r} is unconstrained: it needs a gradient penalty gp > 0 "
                "(WGAN-GP uses 10); only groupsort-dense and bcop-conv train without one"
            )
        if self.critic.endswith("-conv") and is_toy(self.dataset):
            raise ValueError(
                f"critic {self.critic!r} is convolutional; 2-D dataset {self.dataset!r} needs "
                "groupsort-dense or relu-dense"
            )
        if self.data_limit is not None and self.data_limit < 1:
            raise ValueError(f"data_limit must be >= 1, got {self.data_limit}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GANConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GAN config fields: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class GANResult:
    """What a finished :func:`train_gan` call reports (also written to ``summary.json``)."""

    out_dir: str
    config: dict[str, Any]
    steps: int
    resumed_from: int | None
    train_time_s: float
    step_time_s: float
    peak_memory_mb: float
    memory_kind: str
    critic_lipschitz_bound: float
    critic_w1: float
    exact_w1: float | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"trained {self.config['critic']} WGAN on {self.config['dataset']}: "
            f"{self.steps} generator steps"
            + (
                f" (resumed from step {self.resumed_from})" if self.resumed_from is not None else ""
            ),
            f"  median step time        {self.step_time_s * 1e3:.1f} ms "
            f"({self.config['n_critic']} critic steps + 1 generator step)",
            f"  critic W1 estimate      {self.critic_w1:.4f}",
            f"  certified Lipschitz     {self.critic_lipschitz_bound:.6g}",
            f"  peak memory             {self.peak_memory_mb:.0f} MB ({self.memory_kind})",
        ]
        if self.exact_w1 is not None:
            lines.append(f"  exact W1 samples-data   {self.exact_w1:.4f} (POT)")
        lines.append(f"  run folder              {self.out_dir}")
        return "\n".join(lines)


def build_models(config: GANConfig, data_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Sequential]:
    """The (generator, critic) pair of ``config`` for data of ``data_shape`` (fresh weights)."""
    generator = make_generator(data_shape, config.latent_dim, config.generator_width)
    critic = build_critic(config.critic, data_shape, config.critic_width, config.bjorck_iters)
    return generator, critic


def _data_shape(config: GANConfig) -> tuple[int, ...]:
    from wassnet.datasets import IMAGE_DATASETS

    return (2,) if is_toy(config.dataset) else IMAGE_DATASETS[config.dataset][1]


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS"


class _Metrics:
    """``metrics.jsonl``: appended and flushed line by line; truncated to a step on resume."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        kept: list[str] = []
        if keep_until is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= keep_until:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    break  # a line torn by a kill: everything after it is recomputed
        path.write_text("".join(line + "\n" for line in kept))
        self.file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(strict_json(record), allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _check_resume(saved: GANConfig, config: GANConfig) -> None:
    for f in fields(GANConfig):
        if f.name in RESUMABLE_CHANGES:
            continue
        old, new = getattr(saved, f.name), getattr(config, f.name)
        if old != new:
            raise ValueError(
                f"cannot resume: {f.name} is {new!r} but the run was started with {old!r} "
                f"(only {', '.join(RESUMABLE_CHANGES)} may change)"
            )


def train_gan(
    config: GANConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    data_root: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> GANResult:
    """Train a WGAN as described by ``config``, writing the run into ``out_dir``.

    Each generator step is preceded by ``config.n_critic`` critic steps maximizing
    ``mean f(real) - mean f(fake)`` (minus ``gp`` times the WGAN-GP penalty when
    ``gp > 0``). Every ``log_every`` steps the critic's Lipschitz constant is
    certified from its weights (:func:`wassnet.nn.lipschitz_bound`) and logged as
    ``critic_lipschitz_bound``; for a Lipschitz critic it is at most ``1 + 1e-6`` or so
    (rounding), for a ReLU critic it is the product of its layers' norms.

    Args:
        config: the run's :class:`GANConfig`.
        out_dir: the run folder (created). It must not already hold a checkpoint
            unless ``resume=True``.
        resume: continue from ``out_dir/checkpoint.pt``. ``config`` must equal the
            saved one except for ``steps`` and the logging cadences; use
            :meth:`GANConfig.from_dict` on ``load_checkpoint(...)["config"]`` to
            start from the saved config.
        data_root: folder of image datasets (torchvision layout).
        device: ``"cpu"``, ``"cuda"``, ... (default: a GPU if present).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`GANResult`, also written to ``out_dir/summary.json``.
    """
    from tqdm.auto import tqdm

    from wassnet.gan.plots import plot_curves, plot_level_sets, save_samples
    from wassnet.nn import lipschitz_bound

    config.validate()
    dev = resolve_device(device)
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    state = None
    if resume:
        state = load_checkpoint(ckpt_path, kind="gan")
        saved = GANConfig.from_dict(state["config"])
        _check_resume(saved, config)
        if config.steps < state["step"]:
            raise ValueError(
                f"cannot resume: steps={config.steps} is below the checkpoint's step "
                f"{state['step']}"
            )
    elif ckpt_path.exists():
        raise ValueError(
            f"{str(out)!r} already holds a run (checkpoint.pt): pass resume=True (--resume) "
            "to continue it, or choose another output folder"
        )
    out.mkdir(parents=True, exist_ok=True)

    seed_everything(config.seed)
    data = DataSource(config.dataset, data_root, config.data_limit)
    generator, critic = build_models(config, data.shape)
    generator.to(dev)
    critic.to(dev)
    opt_g = torch.optim.Adam(
        generator.parameters(), config.lr_g, betas=(config.beta1, config.beta2)
    )
    opt_c = torch.optim.Adam(critic.parameters(), config.lr_c, betas=(config.beta1, config.beta2))
    stream = torch.Generator().manual_seed(config.seed)
    start = 0
    if state is not None:
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_g"])
        opt_c.load_state_dict(state["opt_c"])
        stream.set_state(state["stream"])
        set_rng_state(state["rng"])
        start = int(state["step"])
    images = data.images is not None
    if data.images is not None:
        data.images = data.images.to(dev)

    # Fixed evaluation draws, independent of the training stream.
    eval_gen = torch.Generator().manual_seed(config.seed + 1)
    eval_z = torch.randn(max(64, config.eval_samples), config.latent_dim, generator=eval_gen)
    eval_real = None if images else data.sample(config.eval_samples, eval_gen).numpy()

    metrics = _Metrics(out / METRICS_NAME, keep_until=start if resume else None)
    step_times: list[float] = []
    last: dict[str, Any] = {}

    def save(step: int) -> None:
        save_checkpoint(
            {
                "kind": "gan",
                "version": 1,
                "config": config.to_dict(),
                "data_shape": list(data.shape),
                "step": step,
                "generator": generator.state_dict(),
                "critic": critic.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_c": opt_c.state_dict(),
                "stream": stream.get_state(),
                "rng": rng_state(),
            },
            ckpt_path,
        )

    def fakes(n_or_z: int | torch.Tensor) -> torch.Tensor:
        z = n_or_z if isinstance(n_or_z, torch.Tensor) else _latent(n_or_z)
        return generator(z.to(dev))

    def _latent(n: int) -> torch.Tensor:
        return torch.randn(n, config.latent_dim, generator=stream)

    def exact_w1_now() -> float:
        from wassnet.ot import exact_w1

        generator.eval()
        with torch.no_grad():
            samples = fakes(eval_z[: config.eval_samples]).cpu().double().numpy()
        generator.train()
        return exact_w1(samples, eval_real)

    def sample_picture(step: int) -> None:
        generator.eval()
        with torch.no_grad():
            samples = fakes(eval_z[: 64 if images else config.eval_samples]).cpu()
        generator.train()
        save_samples(samples, out / f"samples_{step:06d}.png", real=None if images else eval_real)

    if start == 0:
        record: dict[str, Any] = {"step": 0}
        record["critic_lipschitz_bound"] = lipschitz_bound(critic, data.shape).bound
        if not images:
            record["exact_w1"] = exact_w1_now()
        metrics.write(record)
        sample_picture(0)

    b = config.batch_size
    t_start = time.perf_counter()
    bar = tqdm(
        range(start, config.steps),
        initial=start,
        total=config.steps,
        desc=f"WGAN {config.critic}",
        disable=not progress,
    )
    try:
        for step in bar:
            t0 = time.perf_counter()
            for _ in range(config.n_critic):
                real = data.sample(b, stream).to(dev)
                z = _latent(b)
                with torch.no_grad():
                    fake = fakes(z)
                out_both = critic(torch.cat([real, fake]))
                w1 = critic_objective(out_both[:b], out_both[b:])
                loss_c = -w1
                penalty = None
                if config.gp > 0:
                    eps = torch.rand(b, generator=stream)
                    penalty = gradient_penalty(critic, real, fake, eps)
                    loss_c = loss_c + config.gp * penalty
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
            critic.requires_grad_(False)
            loss_g = generator_loss(critic(fakes(b)))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            critic.requires_grad_(True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            step_time = time.perf_counter() - t0
            step_times.append(step_time)
            done = step + 1

            if done % config.log_every == 0 or done == config.steps:
                record = {
                    "step": done,
                    "critic_loss": float(loss_c.detach()),
                    "generator_loss": float(loss_g.detach()),
                    "critic_w1": float(w1.detach()),
                    "critic_lipschitz_bound": lipschitz_bound(critic, data.shape).bound,
                    "step_time_s": step_time,
                    "elapsed_s": time.perf_counter() - t_start,
                }
                if penalty is not None:
                    record["gradient_penalty"] = float(penalty.detach())
                if not images and (done % config.sample_every == 0 or done == config.steps):
                    record["exact_w1"] = exact_w1_now()
                if not all(math.isfinite(v) for v in record.values()):
                    raise RuntimeError(f"training diverged at step {done}: {record}")
                metrics.write(record)
                last.update(record)
                bar.set_postfix(
                    w1=f"{record['critic_w1']:.3f}", L=f"{record['critic_lipschitz_bound']:.4f}"
                )
            if done % config.sample_every == 0 or done == config.steps:
                sample_picture(done)
            if done % config.checkpoint_every == 0 or done == config.steps:
                save(done)
    finally:
        bar.close()
        metrics.close()

    files = [METRICS_NAME, CHECKPOINT_NAME]
    plot_curves(out / METRICS_NAME, out / "curves.png")
    files.append("curves.png")
    if not images:
        generator.eval()
        with torch.no_grad():
            samples = fakes(eval_z[: config.eval_samples]).cpu().numpy()
        plot_level_sets(critic, eval_real, samples, out / "level_sets.png", device=dev)
        files.append("level_sets.png")
    if "critic_lipschitz_bound" not in last:  # nothing trained in this call (already done)
        rows = [json.loads(s) for s in (out / METRICS_NAME).read_text().splitlines()]
        last = rows[-1] if rows else {}
    memory, memory_kind = _peak_memory(dev)
    step_times.sort()
    result = GANResult(
        out_dir=str(out),
        config=config.to_dict(),
        steps=config.steps,
        resumed_from=start if resume else None,
        train_time_s=time.perf_counter() - t_start,
        step_time_s=step_times[len(step_times) // 2] if step_times else float("nan"),
        peak_memory_mb=memory,
        memory_kind=memory_kind,
        critic_lipschitz_bound=float(last.get("critic_lipschitz_bound", float("nan"))),
        critic_w1=float(last.get("critic_w1", float("nan"))),
        exact_w1=last.get("exact_w1"),
        files=files,
    )
    summary = json.dumps(strict_json(result.to_dict()), indent=2, allow_nan=False)
    (out / "summary.json").write_text(summary + "\n")
    return result


def load_generator(
    checkpoint: str | os.PathLike[str], device: str | torch.device | None = None
) -> tuple[nn.Module, GANConfig, dict[str, Any]]:
    """The trained generator of a GAN checkpoint (in eval mode), its config and the state.

    ``checkpoint`` is a ``checkpoint.pt`` file or a run folder holding one. Raises
    :class:`wassnet.checkpoint.CheckpointError` for a missing, corrupt or non-GAN file.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    state = load_checkpoint(path, kind="gan")
    try:
        config = GANConfig.from_dict(state["config"])
        shape = tuple(state["data_shape"])
        generator, _ = build_models(config, shape)
        generator.load_state_dict(state["generator"])
    except (KeyError, TypeError, RuntimeError) as exc:
        from wassnet.checkpoint import CheckpointError

        raise CheckpointError(f"{str(path)!r} is not a usable GAN checkpoint: {exc}") from None
    generator.to(resolve_device(device)).eval()
    return generator, config, state


def generate(
    generator: nn.Module,
    n: int,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_size: int = 500,
) -> torch.Tensor:
    """``n`` samples on the CPU: images in ``[0, 1]`` ``[n, C, H, W]``, or 2-D points ``[n, 2]``.

    Latent codes come from a ``torch.Generator`` seeded with ``seed`` (reproducible).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    dev = next(generator.parameters()).device if device is None else resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.eval()
    chunks = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - i), generator.latent_dim, generator=gen)
            chunks.append(generator(z.to(dev)).cpu())
    generator.train(was_training)
    out = torch.cat(chunks)
    return out.add(1).div(2).clamp(0, 1) if out.dim() == 4 else out
