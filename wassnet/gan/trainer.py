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

Under torchrun (``torchrun --nproc-per-node K -m wassnet gan train ...``, or
:func:`train_gan` called on every rank) the generator and the critic are
``DistributedDataParallel`` replicas. Every rank draws the same global minibatch,
latent codes and penalty weights from the same seeded stream, and keeps its part
(``batch_size / K`` of each, contiguous; ``batch_size`` must divide by K): the averaged
gradients are the whole batch's, the run equals a single-process run with the same
``batch_size`` up to float rounding, and the replicas stay identical (the same step and
the same deterministic constraint on every rank). Rank 0 writes the run folder
(checkpoints, ``metrics.jsonl`` with the losses averaged over the ranks, pictures,
``summary.json``) and certifies the critic's bound; a run continues with any number of
ranks.
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

from wassnet import distributed
from wassnet.checkpoint import load_checkpoint
from wassnet.critics import dual_step, setup_projected_training
from wassnet.deprecation import deprecated_alias, renamed_keys
from wassnet.errors import CheckpointError, InputError, TrainingError
from wassnet.gan.critics import build_critic
from wassnet.gan.data import DataSource
from wassnet.gan.generators import make_generator
from wassnet.gan.losses import generator_loss, gradient_penalty
from wassnet.jsonio import strict_json
from wassnet.names import (
    ARCHS,
    CONSTRAINTS,
    DATASETS,
    LEGACY_GAN_CRITICS,
    default_arch,
    is_toy,
)
from wassnet.norms import CLI_KEYS, Norm, by_p
from wassnet.runs import CHECKPOINT_NAME, LoopOptions, ResumableRun, RunSpec, StepReport
from wassnet.runtime import resolve_device

__all__ = [
    "CHECKPOINT_NAME",
    "GANConfig",
    "GANResult",
    "LoadedGenerator",
    "build_models",
    "generate",
    "load_generator",
    "train_gan",
]

METRICS_NAME = "metrics.jsonl"
#: Config fields that may differ when a run is resumed (the others must match).
RESUMABLE_CHANGES = ("steps", "log_every", "sample_every", "checkpoint_every")


@dataclass
class GANConfig:
    """Everything that defines a WGAN run (model, optimization, logging cadence).

    Defaults suit MNIST with the BCOP critic on a CPU. The critic is ``arch`` (a
    :data:`wassnet.names.ARCHS` name; ``None``: ``conv-small`` for images,
    ``dense-small`` for 2-D data) built with ``constraint`` (``orthogonal``:
    1-Lipschitz by construction; ``none``: the WGAN-GP baseline), every hidden width
    set to ``width`` and ``iters`` Björck / BCOP iterations. ``norm`` (``"2"``, ``"1"`` or
    ``"inf"``) is the norm the critic is 1-Lipschitz in, hence the ground cost of the
    W1 the WGAN minimizes (euclidean, cityblock, chebyshev); l1 and l-inf need
    ``constraint="projection"``. ``gp=None`` means 10 for
    unconstrained critics and 0 for the others. ``limit`` keeps the first
    ``limit`` training images. The learning rates (2e-3 for both networks, Adam betas
    (0.5, 0.9)) are 20 times WGAN-GP's customary 1e-4: on MNIST they gave a far lower
    FID at equal generator steps for the BCOP, dense and WGAN-GP critics alike
    (measurements in the ``bench_gan`` section of BENCHMARKS.md).
    """

    dataset: str = "mnist"
    arch: str | None = None
    constraint: str = "orthogonal"
    norm: str = "2"
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
    width: int = 128
    iters: int = 10
    limit: int | None = None
    seed: int = 0
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 100
    eval_samples: int = 512

    def __post_init__(self) -> None:
        if self.arch is None:
            self.arch = default_arch(self.dataset)
        if self.gp is None:
            self.gp = 10.0 if self.constraint == "none" else 0.0
        self.norm = by_p(self.norm).cli
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~wassnet.errors.InputError` with one sentence for a bad config."""
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("arch", self.arch, tuple(ARCHS))
        _check_choice("constraint", self.constraint, CONSTRAINTS)
        _check_choice("norm", self.norm, CLI_KEYS)
        if not self.lp.is_euclidean and self.constraint != "projection":
            raise InputError(
                f"norm {self.norm} needs constraint 'projection' (orthogonal layers and the "
                "gradient penalty are for l2)"
            )
        for name in _POSITIVE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr_g", "lr_c"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (math.isfinite(self.gp) and self.gp >= 0):
            raise InputError(f"gp must be a finite number >= 0, got {self.gp!r}")
        if self.constraint == "none" and self.gp == 0:
            raise InputError(
                "an unconstrained critic (constraint 'none') needs a gradient penalty gp > 0 "
                "(WGAN-GP uses 10); only orthogonal and projection critics train without one"
            )
        if ARCHS[self.arch].kind == "conv" and is_toy(self.dataset):
            raise InputError(
                f"arch {self.arch!r} is convolutional; 2-D dataset {self.dataset!r} needs a "
                "dense arch (dense-small or dense)"
            )
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}")

    @property
    def lp(self) -> Norm:
        """The resolved :class:`~wassnet.norms.Norm` of ``norm``."""
        return by_p(self.norm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GANConfig:
        """The config from :meth:`to_dict` (also reads wassnet 0.1's field names)."""
        data = _upgrade(data)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown GAN config fields: {', '.join(sorted(unknown))}")
        return cls(**data)


_POSITIVE_FIELDS = (
    "steps",
    "batch_size",
    "n_critic",
    "latent_dim",
    "generator_width",
    "width",
    "iters",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "eval_samples",
)
#: wassnet 0.1 config field -> its name now.
_RENAMED_FIELDS = {"critic_width": "width", "bjorck_iters": "iters", "data_limit": "limit"}


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config with wassnet 0.1's names (``critic``, ``critic_width``...) renamed."""
    data = renamed_keys(data, _RENAMED_FIELDS, "GAN config field")
    if "critic" in data:
        deprecated_alias("GAN config field 'critic'", "'arch' and 'constraint'", stacklevel=3)
        critic = data.pop("critic")
        if critic not in LEGACY_GAN_CRITICS:
            raise InputError(f"unknown critic {critic!r} in a saved GAN config")
        data["arch"], data["constraint"] = LEGACY_GAN_CRITICS[critic]
    return data


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
            f"trained {self.config['arch']} ({self.config['constraint']}) WGAN on "
            f"{self.config['dataset']}: "
            f"{self.steps} generator steps"
            + (
                f" (resumed from step {self.resumed_from})" if self.resumed_from is not None else ""
            ),
            (
                f"  median step time        {self.step_time_s * 1e3:.1f} ms "
                f"({self.config['n_critic']} critic steps + 1 generator step)"
                if math.isfinite(self.step_time_s)
                else "  median step time        - (no step trained in this call: the run "
                "was complete)"
            ),
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
    critic = build_critic(
        config.arch,  # type: ignore[arg-type]
        data_shape,
        constraint=config.constraint,
        width=config.width,
        iters=config.iters,
    )
    return generator, critic


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS"


#: A GAN run folder: its checkpoint kind, what may change on resume, its metrics log.
RUN_SPEC = RunSpec(kind="gan", changeable=RESUMABLE_CHANGES, extendable=True, metrics=METRICS_NAME)


def train_gan(
    config: GANConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    data_root: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> GANResult:
    """Train a WGAN as described by ``config``, writing the run into ``out_dir``.

    Each generator step is preceded by ``config.n_critic`` critic steps maximizing
    ``mean f(real) - mean f(fake)`` (minus ``gp`` times the WGAN-GP penalty when
    ``gp > 0``). Every ``log_every`` steps the critic's Lipschitz constant is
    certified from its weights (:func:`wassnet.nn.lipschitz_bound`) and logged as
    ``critic_lipschitz_bound``; for an orthogonal critic it is at most ``1 + 1e-6`` or
    so (rounding), for an unconstrained one it is the product of its layers' norms.

    The run folder follows :mod:`wassnet.runs` (:class:`~wassnet.runs.ResumableRun`):
    locked against a second process, a folder holding a checkpoint is continued,
    Ctrl-C checkpoints at the end of the current step and raises ``KeyboardInterrupt``.

    Args:
        config: the run's :class:`GANConfig`.
        out_dir: the run folder (created).
        resume: continue the run in ``out_dir`` when it holds one (the default).
            ``config`` must then equal the saved one except for ``steps`` and the
            logging cadences (else :class:`~wassnet.runs.ResumeError`); start from
            ``GANConfig.from_dict(state["config"])`` to reuse it. With ``False`` an
            existing run is an error.
        data_root: folder of image datasets (torchvision layout).
        device: ``"cpu"``, ``"cuda"``, ... (default: a GPU if present).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`GANResult`, also written to ``out_dir/summary.json``.
    """
    config.validate()
    with distributed.peer_failures():
        dev = distributed.start(device, config.batch_size)
        with ResumableRun(out_dir, RUN_SPEC, config, config.steps, resume=resume) as run:
            job = _GANJob(config, run, data_root, dev)
            run.restore(job)
            if not run.resumed:
                job.log(0, {}, 0.0)
                job.sample_picture(0)
            run.train(job, LoopOptions(config.checkpoint_every, progress=progress))
            return job.finish()


class _GANJob:
    """A WGAN run's :class:`~wassnet.runs.Job`: models, optimizers, its random stream,
    its logs and pictures."""

    def __init__(
        self,
        config: GANConfig,
        run: ResumableRun,
        data_root: str | os.PathLike[str] | None,
        dev: torch.device,
    ) -> None:
        self.config, self.run, self.dev = config, run, dev
        self.out = run.folder.path
        self.step, self.total = 0, config.steps
        self.label = f"WGAN {config.arch} ({config.constraint})"
        self.data = DataSource(config.dataset, data_root, config.limit)
        self.generator, self.critic = build_models(config, self.data.shape)
        self.generator.to(dev)
        self.critic.to(dev)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), config.lr_g, betas=betas)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), config.lr_c, betas=betas)
        if config.constraint == "projection":  # the norm of the W1 the WGAN minimizes
            setup_projected_training(self.critic, self.opt_c, config.lp, self.data.shape)
        # under torchrun: DDP replicas (rank 0's initial state, averaged gradients)
        self.g_net = distributed.replicate(self.generator, dev)
        self.c_net = distributed.replicate(self.critic, dev)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.stream = torch.Generator().manual_seed(config.seed)
        self.images = self.data.images is not None
        if self.data.images is not None:
            self.data.images = self.data.images.to(dev)
        # Fixed evaluation draws, independent of the training stream.
        eval_gen = torch.Generator().manual_seed(config.seed + 1)
        self.eval_z = torch.randn(
            max(64, config.eval_samples), config.latent_dim, generator=eval_gen
        )
        self.eval_real = (
            None if self.images else self.data.sample(config.eval_samples, eval_gen).numpy()
        )
        self.step_times: list[float] = []
        self.last: dict[str, Any] = {}
        self.t_start = time.perf_counter()

    # -- the checkpoint -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 2,
            "data_shape": list(self.data.shape),
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "stream": self.stream.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.stream.set_state(state["stream"])

    # -- samples and pictures -----------------------------------------------------------

    def latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=self.stream)

    def part(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch (the whole batch in one process)."""
        return batch if self.world == 1 else batch.tensor_split(self.world)[self.rank]

    def fakes(self, n_or_z: int | torch.Tensor) -> torch.Tensor:
        z = n_or_z if isinstance(n_or_z, torch.Tensor) else self.latent(n_or_z)
        return self.generator(z.to(self.dev))

    def eval_fakes(self, n: int) -> torch.Tensor:
        """``n`` samples from the fixed evaluation codes (eval mode, no gradients)."""
        self.generator.eval()
        with torch.no_grad():
            samples = self.fakes(self.eval_z[:n]).cpu()
        self.generator.train()
        return samples

    def exact_w1_now(self) -> float:
        from wassnet.ot import exact_w1

        samples = self.eval_fakes(self.config.eval_samples).double().numpy()
        return exact_w1(samples, self.eval_real, metric=self.config.lp)

    def sample_picture(self, step: int) -> None:
        from wassnet.gan.plots import save_samples

        if not distributed.is_main():
            return
        samples = self.eval_fakes(64 if self.images else self.config.eval_samples)
        real = None if self.images else self.eval_real
        save_samples(samples, self.out / f"samples_{step:06d}.png", real=real)

    # -- one step -----------------------------------------------------------------------

    def critic_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One critic update; returns (dual estimate, loss, penalty or None)."""
        b, config = self.config.batch_size, self.config
        real = self.part(self.data.sample(b, self.stream)).to(self.dev)
        z = self.part(self.latent(b))
        with torch.no_grad():
            fake = self.fakes(z)

        def penalty() -> torch.Tensor:  # drawn after the forward pass, as always
            weights = self.part(torch.rand(b, generator=self.stream))
            return gradient_penalty(self.critic, real, fake, weights)

        step = dual_step(
            self.c_net, self.opt_c, real, fake, penalty if config.gp > 0 else None, config.gp
        )
        return step.dual, step.loss, step.penalty

    def generator_step(self) -> torch.Tensor:
        self.critic.requires_grad_(False)
        z = self.part(self.latent(self.config.batch_size)).to(self.dev)
        loss = generator_loss(self.critic(self.g_net(z)))
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.critic.requires_grad_(True)
        return loss

    def log(self, done: int, losses: dict[str, torch.Tensor | None], step_time: float) -> None:
        """Append step ``done``'s record to ``metrics.jsonl`` (losses averaged over the
        ranks; certified bound and, when a picture is due, exact W1 of 2-D samples,
        computed by rank 0); a non-finite value stops the run on every rank."""
        record: dict[str, Any] = {"step": done, **_mean_over_ranks(losses)}
        if distributed.is_main():
            self._certify(record, done, step_time)
        record = distributed.broadcast_object(record)
        if not all(math.isfinite(v) for v in record.values()):
            raise TrainingError(f"training diverged at step {done}: {record}")
        if self.run.metrics is not None:  # rank 0's log (RUN_SPEC names it)
            self.run.metrics.write(record)
        self.last.update(record)

    def _certify(self, record: dict[str, Any], done: int, step_time: float) -> None:
        """Rank 0's part of a record: the certified bound, times, exact W1 (2-D)."""
        from wassnet.nn import lipschitz_bound

        record["critic_lipschitz_bound"] = lipschitz_bound(
            self.critic, self.data.shape, p=self.config.norm
        ).bound
        if done > 0:
            record["step_time_s"] = step_time
            record["elapsed_s"] = time.perf_counter() - self.t_start
        sample_now = done % self.config.sample_every == 0 or done == self.config.steps
        if not self.images and (done == 0 or sample_now):
            record["exact_w1"] = self.exact_w1_now()

    def advance(self) -> StepReport:
        """Generator step ``step + 1`` (with its critic steps), then its logs and picture."""
        config = self.config
        t0 = time.perf_counter()
        for _ in range(config.n_critic):
            w1, loss_c, penalty = self.critic_step()
        loss_g = self.generator_step()
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        step_time = time.perf_counter() - t0
        self.step_times.append(step_time)
        self.step = done = self.step + 1
        if done % config.log_every == 0 or done == config.steps:
            losses = {
                "critic_loss": loss_c,
                "generator_loss": loss_g,
                "critic_w1": w1,
                "gradient_penalty": penalty,
            }
            self.log(done, losses, step_time)
        if done % config.sample_every == 0 or done == config.steps:
            self.sample_picture(done)
        if "critic_w1" not in self.last:
            return StepReport()
        last = self.last
        return StepReport(
            {"w1": f"{last['critic_w1']:.3f}", "L": f"{last['critic_lipschitz_bound']:.4f}"}
        )

    # -- the end ------------------------------------------------------------------------

    def finish(self) -> GANResult:
        """Curves, level sets (2-D), ``summary.json`` (rank 0); the :class:`GANResult`
        (rank 0's, on every rank)."""
        result = self._write_summary() if distributed.is_main() else None
        return distributed.broadcast_object(result)

    def _write_summary(self) -> GANResult:
        from wassnet.gan.plots import plot_curves, plot_level_sets

        out = self.out
        files = [METRICS_NAME, CHECKPOINT_NAME]
        plot_curves(out / METRICS_NAME, out / "curves.png")
        files.append("curves.png")
        if not self.images:
            samples = self.eval_fakes(self.config.eval_samples).numpy()
            plot_level_sets(self.critic, self.eval_real, samples, out / "level_sets.png", self.dev)
            files.append("level_sets.png")
        last = self.last
        if "critic_w1" not in last:  # nothing trained in this call (already done)
            rows = [json.loads(s) for s in (out / METRICS_NAME).read_text().splitlines()]
            last = rows[-1] if rows else {}
        memory, memory_kind = _peak_memory(self.dev)
        times = sorted(self.step_times)
        result = GANResult(
            out_dir=str(out),
            config=self.config.to_dict(),
            steps=self.config.steps,
            resumed_from=self.run.start if self.run.resumed else None,
            train_time_s=time.perf_counter() - self.t_start,
            step_time_s=times[len(times) // 2] if times else float("nan"),
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


def _mean_over_ranks(losses: dict[str, torch.Tensor | None]) -> dict[str, float]:
    """The given losses as floats, each averaged over the ranks (equal parts of the
    batch: the whole batch's mean); ``None`` values are left out."""
    names = [name for name, value in losses.items() if value is not None]
    values = [float(losses[name].detach()) for name in names]  # type: ignore[union-attr]
    if distributed.world_size() > 1:
        values = [v / distributed.world_size() for v in distributed.all_reduce_floats(values)]
    return dict(zip(names, values, strict=True))


@dataclass(frozen=True)
class LoadedGenerator:
    """A generator rebuilt from a GAN checkpoint by :func:`load_generator`.

    Attributes:
        generator: the network, in eval mode, with the saved weights.
        config: the run's :class:`GANConfig`.
        data_shape: the shape of one sample (``(2,)`` or ``(C, H, W)``).
        step: the generator steps trained when the checkpoint was written.
        path: the checkpoint file.
    """

    generator: nn.Module
    config: GANConfig
    data_shape: tuple[int, ...]
    step: int
    path: Path


def load_generator(
    checkpoint: str | os.PathLike[str], device: str | torch.device | None = None
) -> LoadedGenerator:
    """The trained generator of a GAN checkpoint (in eval mode), with its config.

    ``checkpoint`` is a ``checkpoint.pt`` file or a run folder holding one. Raises
    :class:`wassnet.checkpoint.CheckpointError` for a missing, corrupt or non-GAN file.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    state = load_checkpoint(path, kind="gan")
    try:
        config = GANConfig.from_dict(state["config"])
        shape = tuple(int(s) for s in state["data_shape"])
        generator, _ = build_models(config, shape)
        generator.load_state_dict(state["generator"])
        step = int(state["step"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a usable GAN checkpoint: {exc}") from None
    generator.to(resolve_device(device)).eval()
    return LoadedGenerator(generator, config, shape, step, path)


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
        raise InputError(f"n must be >= 1, got {n}")
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
