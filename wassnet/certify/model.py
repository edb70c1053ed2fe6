"""Classifiers from the shared critic factory, saved and restored from checkpoints.

A classifier is a critic with ``num_classes`` outputs: :func:`make_classifier` is
:func:`wassnet.critics.make_critic` with ``out_features = num_classes``. A checkpoint
records how to rebuild it (``arch``, ``input_shape``, ``num_classes``, overrides), so
:func:`load_classifier` needs nothing but the file; it returns a :class:`LoadedClassifier`
(the model and that description).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wassnet.checkpoint import CheckpointError, load_checkpoint
from wassnet.critics import PRESETS, make_critic
from wassnet.errors import InputError
from wassnet.nn import export

__all__ = ["LoadedClassifier", "export_classifier", "load_classifier", "make_classifier"]


def make_classifier(
    arch: str, input_shape: Sequence[int], num_classes: int, **overrides: Any
) -> nn.Sequential:
    """A 1-Lipschitz classifier ``[N, *input_shape] -> [N, num_classes]`` from a preset.

    ``arch`` is a :data:`wassnet.critics.PRESETS` name: ``dense`` (3 x 1024, the FC
    network of Li et al. 2019), ``dense-small`` (3 x 256), ``conv-small`` / ``conv-large``
    (BCOP networks of Li et al. 2019), ``aol-small`` / ``cpl-small`` / ``sll-small`` (one
    skeleton of AOL, CPL or SLL layers: :func:`wassnet.critics.family_critic`; these take
    the default constraint only). ``overrides`` go to the builder (``iters``,
    ``activation``, ``group_size``, ``hidden``, ``constraint``...). With the default
    ``constraint="orthogonal"`` the L2 Lipschitz constant is at most 1 by construction;
    with ``constraint="projection"`` the layers are plain and stay 1-Lipschitz only while
    :func:`wassnet.nn.constrain` projects them. The certified value is always what
    :func:`wassnet.nn.lipschitz_bound` computes from the weights.
    """
    if arch not in PRESETS:
        raise InputError(f"unknown architecture {arch!r}: choose one of {', '.join(PRESETS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise InputError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return make_critic(arch, tuple(input_shape), out_features=num_classes, **overrides)


def _spec(state: dict[str, Any], path: str | os.PathLike[str]) -> tuple[str, tuple, int, dict]:
    try:
        model = state["model"]
        return (
            str(model["arch"]),
            tuple(int(s) for s in model["input_shape"]),
            int(model["num_classes"]),
            dict(model.get("overrides", {})),
        )
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{str(path)!r} lacks a model description (arch, shape)") from None


@dataclass(frozen=True)
class LoadedClassifier:
    """A classifier rebuilt from a checkpoint by :func:`load_classifier`.

    Attributes:
        model: the network, in eval mode, with the saved weights.
        arch: its :data:`wassnet.critics.PRESETS` name.
        input_shape: the shape of one input, without the batch dimension (the shape
            it was trained on, e.g. ``(1, 28, 28)``).
        num_classes: the number of logits.
        config: the training config saved with it (:meth:`TrainConfig.to_dict`
            of the run), ``{}`` when the checkpoint has none.
        path: the checkpoint file.
        norm: the norm its radii are certified in (``"2"``, ``"1"`` or ``"inf"``; the
            training config's ``norm``, ``"2"`` for checkpoints of wassnet 0.1).
    """

    model: nn.Sequential
    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    config: dict[str, Any]
    path: Path
    norm: str = "2"


def load_classifier(
    path: str | os.PathLike[str], device: str | torch.device | None = "cpu"
) -> LoadedClassifier:
    """Rebuild the classifier saved in a ``classifier`` checkpoint.

    The model is in eval mode on ``device`` (``None``: left on the CPU). Raises
    :class:`wassnet.checkpoint.CheckpointError` (a ``ValueError``) for a missing,
    corrupt or foreign file, or weights that do not fit the recorded architecture.
    """
    state = load_checkpoint(path, kind="classifier")
    arch, shape, num_classes, overrides = _spec(state, path)
    config = state.get("config") or {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(path)!r}: the saved training config is not a mapping")
    model = make_classifier(arch, shape, num_classes, **overrides)
    try:
        model.load_state_dict(state["model"]["state_dict"])
    except (KeyError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{str(path)!r}: weights do not fit {arch}: {reason}") from None
    if device is not None:
        model = model.to(device)
    norm = str(config.get("norm", "2"))
    return LoadedClassifier(model.eval(), arch, shape, num_classes, dict(config), Path(path), norm)


def export_classifier(model: nn.Module) -> nn.Module:
    """A plain-torch copy (``nn.Linear`` / ``nn.Conv2d``, frozen weights) for deployment.

    Same predictions (up to float rounding of the frozen Björck/BCOP weights, which are
    evaluated once) and the same certificate: :func:`wassnet.nn.lipschitz_bound` of the
    copy equals that of the original, so radii computed on either agree.
    """
    return export(model).eval()
