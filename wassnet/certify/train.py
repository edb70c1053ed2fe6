"""A resumable trainer for certified-robust classifiers.

:func:`train_classifier` trains a :func:`~wassnet.certify.make_classifier` network with
the margin-tied multi-class hinge loss (or cross-entropy with a temperature), Adam and
a per-step learning-rate schedule, and writes ``OUT/checkpoint.pt`` atomically (model,
optimizer, schedule, position in the epoch, every RNG stream). Calling it again with the
same ``OUT`` and the same :class:`TrainConfig` resumes from that checkpoint and produces
the same weights as an uninterrupted run (the epoch's shuffling comes from a generator
seeded by ``(seed, epoch)``, not from a global stream).

The trainer certifies nothing by itself: evaluate with
:func:`wassnet.certify.certified_accuracy`, which uses the bound computed from the
trained weights.

Under torchrun (``torchrun --nproc-per-node K -m wassnet classify train ...``, or
:func:`train_classifier` called on every rank) the model is a
``DistributedDataParallel`` replica on each rank: every rank draws the same seeded
epoch order, each global batch of ``batch_size`` examples is split into K contiguous
parts (``batch_size`` must divide by K; an epoch's shorter last batch is split as
evenly as it goes), rank r trains on part r, and the loss is weighted so that the
averaged gradient is the full batch's: the run equals a single-process run with the
same ``batch_size`` up to float rounding, whatever K. Every rank then applies the same
step and the same deterministic constraint (Björck / BCOP parametrizations, the
projection after each step, the CPL norm estimates, the l-inf-distance ``p``), so the
replicas stay identical. Rank 0 writes the run folder (see :mod:`wassnet.runs`); a run
continues with any number of ranks.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from wassnet import distributed
from wassnet.certify.losses import cross_entropy_with_temperature, hinge_margin, multiclass_hinge
from wassnet.certify.model import make_classifier
from wassnet.certify.radius import CertifiedAccuracy, certified_accuracy
from wassnet.critics import setup_projected_training, track_norm_estimates
from wassnet.deprecation import renamed_keys
from wassnet.errors import InputError, TrainingError
from wassnet.names import ARCHS
from wassnet.nn.linf import LinfDistLinear, relaxation_p, set_relaxation_p_
from wassnet.norms import Norm, by_p
from wassnet.runs import CHECKPOINT_NAME, LoopOptions, ResumableRun, RunSpec, StepReport

__all__ = [
    "CHECKPOINT_NAME",
    "TrainConfig",
    "TrainReport",
    "TrainResult",
    "train_and_certify",
    "train_classifier",
]

LossName = Literal["hinge", "ce"]
Schedule = Literal["constant", "cosine", "step"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (a resumed run must use the same config).

    Attributes:
        dataset: ``mnist``, ``fashion-mnist`` or ``cifar10`` (ignored by
            :func:`train_classifier` when ``data=`` is given; recorded).
        arch: a :data:`wassnet.critics.PRESETS` name.
        eps: target certified radius; the hinge margin is ``sqrt(2) * eps``.
        loss: ``hinge`` (Anil et al. / Li et al.) or ``ce`` (cross-entropy on
            ``logits / temperature``).
        temperature: for ``loss="ce"``.
        epochs, batch_size, lr: Adam's schedule covers ``epochs`` full passes.
        schedule: ``constant``; ``cosine`` decay to 0; ``step``: x0.1 at 50% and 75%
            of the steps.
        seed: initial weights and data order.
        iters: Björck iterations per layer (``None``: the preset's default, 20).
        limit: train on the first ``limit`` examples only.
        norm: the norm of the certified radii: ``"2"`` (default), ``"inf"`` or ``"1"``;
            the hinge margin is ``c_p * eps`` (``2 eps`` in l-inf, ``eps`` in l1).
        constraint: ``"orthogonal"`` (Björck / BCOP layers, or the AOL / CPL / SLL
            layers of a family arch such as ``sll-small``; l2 only; or the l-inf-distance
            neurons of ``linf-dist``, l-inf only: the arch's own construction) or
            ``"projection"`` (plain layers projected to lp norm <= 1 after every step,
            :func:`wassnet.nn.constrain`). ``None`` chooses what works for the norm:
            ``orthogonal`` in l2 and for ``linf-dist``, else ``projection``.
        relax_epochs: ``linf-dist`` only: the lp relaxation of Zhang et al. (2021) lasts
            this many epochs (``p`` doubles from 8 to 1024 in 8 equal stages, then
            ``inf``: :func:`wassnet.nn.relaxation_p`); ``None``: half of ``epochs``
            (rounded down); 0 trains at ``p = inf`` throughout. A run stopped during the
            relaxation keeps its finite ``p`` and certifies the larger bound that gives.
    """

    dataset: str = "mnist"
    arch: str = "conv-small"
    eps: float = 1.58
    loss: LossName = "hinge"
    temperature: float = 0.25
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    schedule: Schedule = "cosine"
    seed: int = 0
    iters: int | None = None
    limit: int | None = None
    norm: str = "2"
    constraint: str | None = None
    relax_epochs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", by_p(self.norm).cli)
        hinge_margin(self.eps)  # validates eps
        family = ARCHS[self.arch].family if self.arch in ARCHS else None
        if self.constraint is None:  # what works for the norm
            own = self.lp.is_euclidean or family == "linf-dist"
            object.__setattr__(self, "constraint", "orthogonal" if own else "projection")
        if self.constraint not in ("orthogonal", "projection"):
            raise InputError(
                f"unknown constraint {self.constraint!r}: choose orthogonal or projection"
            )
        self._check_relaxation(family)
        if family == "linf-dist":
            if not self.lp.is_chebyshev or self.constraint != "orthogonal":
                raise InputError(
                    f"arch {self.arch!r} is built from l-inf-distance neurons, 1-Lipschitz in "
                    f"l-inf by construction: it takes norm inf (and no projection), not norm "
                    f"{self.norm} with constraint {self.constraint}"
                )
        elif family is not None and (self.constraint != "orthogonal" or not self.lp.is_euclidean):
            raise InputError(
                f"arch {self.arch!r} is built from {family.upper()} layers, 1-Lipschitz in l2 "
                f"by construction: it takes norm 2 and constraint orthogonal, not norm "
                f"{self.norm} with constraint {self.constraint}"
            )
        if not self.lp.is_euclidean and self.constraint != "projection" and family != "linf-dist":
            raise InputError(
                f"norm {self.norm} needs constraint='projection' or arch linf-dist (orthogonal "
                "layers are 1-Lipschitz in l2 only)"
            )
        if self.loss not in ("hinge", "ce"):
            raise InputError(f"unknown loss {self.loss!r}: choose hinge or ce")
        if self.schedule not in ("constant", "cosine", "step"):
            raise InputError(f"unknown schedule {self.schedule!r}: choose constant, cosine or step")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise InputError(f"lr must be finite and > 0, got {self.lr}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise InputError(f"temperature must be finite and > 0, got {self.temperature}")
        if self.iters is not None and self.iters < 1:
            raise InputError(f"iters must be >= 1, got {self.iters}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}")

    def _check_relaxation(self, family: str | None) -> None:
        relax = self.relax_epochs
        if relax is None:
            relax = self.epochs // 2 if family == "linf-dist" else 0
            object.__setattr__(self, "relax_epochs", relax)
        if isinstance(relax, bool) or not isinstance(relax, int) or relax < 0:
            raise InputError(f"relax_epochs must be an integer >= 0, got {relax!r}")
        if relax and family != "linf-dist":
            raise InputError(
                f"relax_epochs is for the l-inf-distance arch (linf-dist), not {self.arch!r}"
            )
        if relax > self.epochs:
            raise InputError(f"relax_epochs ({relax}) exceeds epochs ({self.epochs})")

    @property
    def lp(self) -> Norm:
        """The resolved :class:`~wassnet.norms.Norm` of ``norm``."""
        return by_p(self.norm)

    def overrides(self) -> dict[str, Any]:
        """Keyword arguments for :func:`make_classifier` beyond the preset."""
        extra: dict[str, Any] = {} if self.iters is None else {"iters": self.iters}
        if self.constraint != "orthogonal":
            extra["constraint"] = self.constraint
        return extra

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config from :meth:`to_dict` (also reads wassnet 0.1's ``train_limit``)."""
        data = renamed_keys(data, {"train_limit": "limit"}, "classifier config field")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown classifier config fields: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class TrainResult:
    """The outcome of :func:`train_classifier` (possibly partial: see ``finished``)."""

    model: nn.Module
    checkpoint: Path
    config: TrainConfig
    epoch: int
    step: int
    total_steps: int
    train_seconds: float
    finished: bool
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "train_seconds": self.train_seconds,
            "finished": self.finished,
            "history": self.history,
        }

    def summary(self) -> str:
        state = "finished" if self.finished else "stopped (resume with the same command)"
        lines = [
            f"{self.config.arch} on {self.config.dataset}: step {self.step}/{self.total_steps}, "
            f"{state}, {self.train_seconds:.1f} s of training",
            f"checkpoint: {self.checkpoint}",
        ]
        for h in self.history:
            lines.append(
                f"  epoch {int(h['epoch'])}: loss {h['loss']:.4f}, train accuracy "
                f"{100 * h['accuracy']:.2f}%"
            )
        return "\n".join(lines)


def _lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if schedule == "step":
        return 0.01 if step >= 0.75 * total else 0.1 if step >= 0.5 * total else 1.0
    return 1.0


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)  # torch: 64 bits
    return torch.randperm(n, generator=gen)


def _load_data(config: TrainConfig, data, data_root) -> tuple[torch.Tensor, torch.Tensor, int]:
    if data is None:
        from wassnet.datasets import load_images

        d = load_images(config.dataset, data_root, split="train", limit=config.limit)
        return d.images, d.labels, d.num_classes
    if hasattr(data, "images"):
        images, labels = data.images, data.labels
    else:
        images, labels = data
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if config.limit is not None:
        images, labels = images[: config.limit], labels[: config.limit]
    if images.dim() < 2 or len(images) == 0 or len(images) != len(labels):
        raise InputError(
            f"training data must be [N, ...] inputs with N labels, got {tuple(images.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if not torch.isfinite(images).all():
        raise InputError("training inputs contain NaN or inf")
    labels = labels.to(torch.int64)
    if labels.min() < 0:
        raise InputError("labels must be class indices >= 0")
    num_classes = getattr(data, "num_classes", None) or max(2, int(labels.max()) + 1)
    return images.to(torch.float32), labels, int(num_classes)


#: A classifier run folder: its checkpoint kind; every option and the step count fixed.
RUN_SPEC = RunSpec(kind="classifier")


def train_classifier(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    data: Any = None,
    data_root: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    max_steps: int | None = None,
    checkpoint_every: int = 200,
    progress: bool = True,
) -> TrainResult:
    """Train (or continue training) a certified-robust classifier in the run folder ``out``.

    The run folder follows :mod:`wassnet.runs` (:class:`~wassnet.runs.ResumableRun`):
    locked against a second process, a folder holding a checkpoint is continued,
    Ctrl-C checkpoints at the end of the current step and raises ``KeyboardInterrupt``.

    Args:
        config: the run; continuing requires the same config as the checkpoint's
            (else :class:`~wassnet.runs.ResumeError`, also a ``CheckpointError``).
        out: the run folder (``checkpoint.pt``, written atomically).
        data: training ``(images, labels)`` or an ``ImageData``; default: the
            ``config.dataset`` train split from ``data_root`` (torchvision download).
            With bare tensors the number of classes is ``max(labels) + 1``.
        device: ``cpu``, ``cuda``...; default a GPU if present.
        resume: continue the run in ``out`` when it holds one (the default); with
            ``False`` an existing run is an error (never silently overwritten).
        max_steps: stop after this many optimizer steps in *this call* (a budget); the
            checkpoint lets a later call continue exactly where this one stopped.
        checkpoint_every: also checkpoint every this many steps (and at each epoch's
            end, on stop, and on Ctrl-C).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`TrainResult` whose ``model`` is in eval mode on ``device``.
    """
    loop = LoopOptions(checkpoint_every, max_steps, progress)
    with distributed.peer_failures():
        dev = distributed.start(device, config.batch_size)
        images, labels, num_classes = _load_data(config, data, data_root)
        return _train(config, out, _ClassifierData(images, labels, num_classes), dev, resume, loop)


@dataclass(frozen=True)
class _ClassifierData:
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int


def _train(
    config: TrainConfig,
    out: str | os.PathLike[str],
    data: _ClassifierData,
    dev: torch.device,
    resume: bool,
    loop: LoopOptions,
) -> TrainResult:
    per_epoch = math.ceil(len(data.images) / config.batch_size)
    with ResumableRun(out, RUN_SPEC, config, per_epoch * config.epochs, resume=resume) as run:
        job = _ClassifierJob(config, data.images, data.labels, data.num_classes, dev)
        run.restore(job)
        run.train(job, loop)
    job.model.eval()
    return TrainResult(
        model=job.model,
        checkpoint=run.folder.checkpoint,
        config=config,
        epoch=job.step // per_epoch,
        step=job.step,
        total_steps=job.total,
        train_seconds=job.seconds,
        finished=job.step >= job.total,
        history=job.history,
    )


class _ClassifierJob:
    """A classifier run's :class:`~wassnet.runs.Job`: model, optimizer, schedule, data
    order, running averages of the epoch in progress."""

    def __init__(
        self,
        config: TrainConfig,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        dev: torch.device,
    ) -> None:
        self.config, self.dev = config, dev
        self.images, self.labels = images, labels
        self.input_shape, self.num_classes = tuple(images.shape[1:]), num_classes
        self.per_epoch = math.ceil(len(images) / config.batch_size)
        self.step, self.total = 0, self.per_epoch * config.epochs
        self.label = f"train {config.arch}"
        self.model = make_classifier(
            config.arch, self.input_shape, num_classes, **config.overrides()
        ).to(dev)
        total = self.total
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _lr_factor(config.schedule, s, total)
        )
        track_norm_estimates(self.optimizer, self.model)  # CPL layers: exact step sizes
        if config.constraint == "projection":
            setup_projected_training(self.model, self.optimizer, config.lp, self.input_shape)
        # the lp relaxation of l-inf-distance layers: p by optimizer step
        has_linf = any(isinstance(m, LinfDistLinear) for m in self.model.modules())
        self.relax_steps = self.per_epoch * config.relax_epochs if has_linf else None
        self.seconds = 0.0
        self.history: list[dict[str, float]] = []
        self.running = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        self.relax()
        self.model.train()
        # under torchrun: a DDP replica (rank 0's initial state broadcast, gradients averaged)
        self.net = distributed.replicate(self.model, dev)
        self.rank, self.world = distributed.rank(), distributed.world_size()

    # -- the checkpoint -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        config = self.config
        return {
            "model": {
                "arch": config.arch,
                "input_shape": list(self.input_shape),
                "num_classes": self.num_classes,
                "overrides": config.overrides(),
                "state_dict": self.model.state_dict(),
            },
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "train_seconds": self.seconds,
            "history": self.history,
            "running": self.running,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"]["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.seconds = float(state["train_seconds"])
        self.history = list(state["history"])
        self.running = dict(state["running"])
        self.relax()

    # -- one step -----------------------------------------------------------------------

    def advance(self) -> StepReport:
        """The next minibatch of the epoch's seeded order; the epoch's record at its end."""
        epoch, index = divmod(self.step, self.per_epoch)
        batch = self.config.batch_size
        order = _epoch_order(self.config.seed, epoch, len(self.images))
        idx = order[index * batch : (index + 1) * batch]
        part = idx.tensor_split(self.world)[self.rank]  # this rank's part of the batch
        x, y = self.images[part].to(self.dev), self.labels[part].to(self.dev)
        value = self.one_step(x, y, len(idx))
        epoch_done = self.step % self.per_epoch == 0
        if epoch_done:
            self.end_epoch(epoch)
        return StepReport({"loss": f"{value:.4f}", "epoch": epoch + 1}, checkpoint=epoch_done)

    def one_step(self, x: torch.Tensor, y: torch.Tensor, batch: int | None = None) -> float:
        """One optimizer step on ``(x, y)``, this rank's part of a global batch of
        ``batch`` examples (default ``len(y)``: one process); returns the batch's loss."""
        config = self.config
        batch = len(y) if batch is None else batch
        t0 = time.perf_counter()
        logits = self.net(x)
        if config.loss == "hinge":
            loss = multiclass_hinge(logits, y, eps=config.eps, p=config.norm)
        else:
            loss = cross_entropy_with_temperature(logits, y, config.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        self._weighted(loss, logits, len(y), batch).backward()
        self.optimizer.step()
        self.scheduler.step()
        self.seconds += time.perf_counter() - t0
        value, correct = self._batch_totals(loss, logits, y, batch)
        if not math.isfinite(value):
            raise TrainingError(f"training diverged at step {self.step} (loss {value})")
        self.step += 1
        self.relax()  # the next step's p (what a checkpoint holds): inf after the last
        self.running["loss"] += value * batch
        self.running["correct"] += correct
        self.running["count"] += batch
        return value

    def _weighted(self, loss: torch.Tensor, logits: torch.Tensor, n: int, batch: int):
        """The loss whose gradient, averaged over the ranks by DDP, is the whole batch's
        mean loss's (``loss`` itself in one process; zero on a rank with no example)."""
        if self.world == 1:
            return loss
        if n == 0:
            return logits.sum() * 0.0
        return loss * (n * self.world / batch)

    def _batch_totals(
        self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, batch: int
    ) -> tuple[float, float]:
        """The whole batch's mean loss and number of correct predictions (summed over the
        ranks: the same on every rank)."""
        correct = float((logits.argmax(1) == y).sum())
        if self.world == 1:
            return float(loss.detach()), correct
        mine = float(loss.detach()) * len(y) if len(y) else 0.0
        total, correct = distributed.all_reduce_floats([mine, correct])
        return total / batch, correct

    def relax(self) -> None:
        """Set ``p`` of the l-inf-distance layers for the current step (``inf`` after
        the relaxation, hence after the last step: the trained network is certified at
        ``p = inf``)."""
        if self.relax_steps is not None:
            set_relaxation_p_(self.model, relaxation_p(self.step, self.relax_steps))

    def end_epoch(self, epoch: int) -> None:
        count = max(self.running["count"], 1.0)
        self.history.append(
            {
                "epoch": float(epoch + 1),
                "loss": self.running["loss"] / count,
                "accuracy": self.running["correct"] / count,
                "lr": float(self.scheduler.get_last_lr()[0]),
                "train_seconds": self.seconds,
            }
        )
        self.running = {"loss": 0.0, "correct": 0.0, "count": 0.0}


@dataclass
class TrainReport:
    """What ``wassnet classify train`` reports: the training, and once it is finished the
    certified accuracy on the test split at the run's ``eps`` (``test``; ``None`` when
    the run stopped early or the evaluation was skipped)."""

    training: TrainResult
    test: CertifiedAccuracy | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self.training.to_dict()
        if self.test is not None:
            data["test"] = self.test.to_dict()
        return data

    def summary(self) -> str:
        text = self.training.summary()
        if self.test is not None:
            text += "\ntest split:\n" + self.test.summary()
        return text


def train_and_certify(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    eval_limit: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    loop: LoopOptions | None = None,
) -> TrainReport:
    """:func:`train_classifier` on ``config.dataset``'s train split, then (once the run
    is finished) :func:`~wassnet.certify.certified_accuracy` at ``config.eps`` on the
    first ``eval_limit`` test images: 0 skips it; ``None`` means all of them, or
    ``config.limit`` when the run has one (a quick run stays quick)."""
    from wassnet.datasets import load_images

    loop = loop or LoopOptions()
    training = train_classifier(
        config,
        out,
        data_root=data_root,
        device=device,
        max_steps=loop.max_steps,
        checkpoint_every=loop.checkpoint_every,
        progress=loop.progress,
    )
    if eval_limit is None and config.limit is not None:
        eval_limit = config.limit
    if not training.finished or eval_limit == 0 or not distributed.is_main():
        return TrainReport(training)  # certified once, on rank 0
    test = load_images(config.dataset, data_root, split="test", limit=eval_limit)
    accuracy = certified_accuracy(training.model, test, eps=[config.eps], p=config.norm)
    return TrainReport(training, accuracy)
