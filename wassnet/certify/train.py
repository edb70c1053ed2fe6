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
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from wassnet.certify.losses import cross_entropy_with_temperature, hinge_margin, multiclass_hinge
from wassnet.certify.model import make_classifier
from wassnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from wassnet.runtime import resolve_device, rng_state, seed_everything, set_rng_state

__all__ = ["CHECKPOINT_NAME", "TrainConfig", "TrainResult", "train_classifier"]

CHECKPOINT_NAME = "checkpoint.pt"
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
        train_limit: train on the first ``train_limit`` examples only.
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
    train_limit: int | None = None

    def __post_init__(self) -> None:
        hinge_margin(self.eps)  # validates eps
        if self.loss not in ("hinge", "ce"):
            raise ValueError(f"unknown loss {self.loss!r}: choose hinge or ce")
        if self.schedule not in ("constant", "cosine", "step"):
            raise ValueError(f"unknown schedule {self.schedule!r}: choose constant, cosine or step")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if self.iters is not None and self.iters < 1:
            raise ValueError(f"iters must be >= 1, got {self.iters}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"train_limit must be >= 1, got {self.train_limit}")

    def overrides(self) -> dict[str, Any]:
        return {} if self.iters is None else {"iters": self.iters}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def _load_data(config: TrainConfig, data, data_root) -> tuple[torch.Tensor, torch.Tensor, int]:
    if data is None:
        from wassnet.datasets import load_images

        d = load_images(config.dataset, data_root, split="train", limit=config.train_limit)
        return d.images, d.labels, d.num_classes
    if hasattr(data, "images"):
        images, labels = data.images, data.labels
    else:
        images, labels = data
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if config.train_limit is not None:
        images, labels = images[: config.train_limit], labels[: config.train_limit]
    if images.dim() < 2 or len(images) == 0 or len(images) != len(labels):
        raise ValueError(
            f"training data must be [N, ...] inputs with N labels, got {tuple(images.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if not torch.isfinite(images).all():
        raise ValueError("training inputs contain NaN or inf")
    labels = labels.to(torch.int64)
    if labels.min() < 0:
        raise ValueError("labels must be class indices >= 0")
    num_classes = getattr(data, "num_classes", None) or max(2, int(labels.max()) + 1)
    return images.to(torch.float32), labels, int(num_classes)


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
    """Train (or resume training) a certified-robust classifier; checkpoint into ``out``.

    Args:
        config: the run; resuming requires the same config as the checkpoint's.
        out: folder for ``checkpoint.pt`` (written atomically).
        data: training ``(images, labels)`` or an ``ImageData``; default: the
            ``config.dataset`` train split from ``data_root`` (torchvision download).
            With bare tensors the number of classes is ``max(labels) + 1``.
        device: ``cpu``, ``cuda``...; default a GPU if present.
        resume: continue from ``out/checkpoint.pt`` when it exists; with ``False`` an
            existing checkpoint is an error (never silently overwritten).
        max_steps: stop after this many optimizer steps in *this call* (a budget); the
            checkpoint lets a later call continue exactly where this one stopped.
        checkpoint_every: also checkpoint every this many steps (and at each epoch's
            end, on stop, and on ``KeyboardInterrupt``).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`TrainResult` whose ``model`` is in eval mode on ``device``.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    dev = resolve_device(device)
    path = Path(out) / CHECKPOINT_NAME
    images, labels, num_classes = _load_data(config, data, data_root)
    input_shape = tuple(images.shape[1:])
    n = len(images)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs

    state: dict[str, Any] | None = None
    if path.exists():
        if not resume:
            raise ValueError(f"{str(path)!r} exists: resume it, or choose another output folder")
        state = load_checkpoint(path, kind="classifier")
        saved = state.get("config")
        if saved != config.to_dict():
            diff = sorted(k for k in config.to_dict() if (saved or {}).get(k) != getattr(config, k))
            raise CheckpointError(
                f"{str(path)!r} was trained with other options ({', '.join(diff) or 'unknown'}); "
                "resume with the same options or choose another output folder"
            )
        if state.get("total_steps") != total:
            raise CheckpointError(
                f"{str(path)!r} was trained on {state.get('total_steps')} steps in all, this data "
                f"gives {total}: resume with the same training data"
            )
    else:
        seed_everything(config.seed)

    model = make_classifier(config.arch, input_shape, num_classes, **config.overrides()).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(config.schedule, s, total)
    )
    step, seconds, history = 0, 0.0, []
    running = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    if state is not None:
        try:
            model.load_state_dict(state["model"]["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, seconds = int(state["step"]), float(state["train_seconds"])
            history = list(state["history"])
            running = dict(state["running"])
            set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise CheckpointError(f"cannot resume from {str(path)!r}: {reason}") from None

    def snapshot() -> None:
        save_checkpoint(
            {
                "kind": "classifier",
                "config": config.to_dict(),
                "model": {
                    "arch": config.arch,
                    "input_shape": list(input_shape),
                    "num_classes": num_classes,
                    "overrides": config.overrides(),
                    "state_dict": model.state_dict(),
                },
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "total_steps": total,
                "train_seconds": seconds,
                "history": history,
                "running": running,
                "rng": rng_state(),
            },
            path,
        )

    budget = total if max_steps is None else min(total, step + max_steps)
    bar = None
    if progress and step < budget:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc=f"train {config.arch}", unit="step")
    model.train()
    consistent = True  # the in-memory state matches `step` (safe to checkpoint)
    try:
        while step < budget:
            epoch, index = divmod(step, steps_per_epoch)
            order = _epoch_order(config.seed, epoch, n)
            idx = order[index * config.batch_size : (index + 1) * config.batch_size]
            x, y = images[idx].to(dev), labels[idx].to(dev)
            t0 = time.perf_counter()
            consistent = False
            logits = model(x)
            if config.loss == "hinge":
                loss = multiclass_hinge(logits, y, eps=config.eps)
            else:
                loss = cross_entropy_with_temperature(logits, y, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seconds += time.perf_counter() - t0
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"training diverged at step {step} (loss {value})")
            step += 1
            running["loss"] += value * len(y)
            running["correct"] += float((logits.argmax(1) == y).sum())
            running["count"] += len(y)
            consistent = True
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", epoch=epoch + 1)
            if step % steps_per_epoch == 0:
                count = max(running["count"], 1.0)
                history.append(
                    {
                        "epoch": float(epoch + 1),
                        "loss": running["loss"] / count,
                        "accuracy": running["correct"] / count,
                        "lr": float(scheduler.get_last_lr()[0]),
                        "train_seconds": seconds,
                    }
                )
                running = {"loss": 0.0, "correct": 0.0, "count": 0.0}
                snapshot()
            elif step % checkpoint_every == 0 or step == budget:
                snapshot()
    except KeyboardInterrupt:
        if consistent:
            snapshot()
        raise
    finally:
        if bar is not None:
            bar.close()
    if state is None and step == 0:
        snapshot()
    model.eval()
    return TrainResult(
        model=model,
        checkpoint=path,
        config=config,
        epoch=step // steps_per_epoch,
        step=step,
        total_steps=total,
        train_seconds=seconds,
        finished=step >= total,
        history=history,
    )
