"""Certify a classifier, attack its certificates and check its export, in one call.

:func:`evaluate` is the evaluation reported by ``wassnet classify certify``,
``apps/mnist_certified.py`` and ``scripts/bench_certify.py``:

1. the certified Lipschitz bound ``L`` of the weights, computed once
   (:func:`wassnet.nn.lipschitz_bound`, model in eval mode);
2. clean and certified accuracy at each radius (:func:`certified_accuracy` with that
   ``L``);
3. optionally, PGD (in the classifier's norm) on the certified points at their radius
   (:func:`attack_certified`: "certified but broken" must be 0);
4. optionally, the plain-torch export (:func:`export_classifier`): its certified bound
   must equal ``L`` exactly (:func:`export_checked` raises otherwise: export freezes
   the same weights, so a difference is a bug), and its predictions are compared with
   the model's on the data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from wassnet.certify.attack import AttackCheck, AttackOptions
from wassnet.certify.model import LoadedClassifier, export_classifier
from wassnet.certify.radius import (
    CertifiedAccuracy,
    certified_accuracy,
    certified_radius,
    lipschitz_certificate,
)
from wassnet.errors import InputError, InputTypeError
from wassnet.nn import LipschitzCertificate

if TYPE_CHECKING:
    from wassnet.datasets import ImageData

__all__ = ["AttackOptions", "Evaluation", "evaluate", "export_checked"]

_DEFAULT_ATTACK = AttackOptions()  # frozen: one shared default is safe


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes:
        lipschitz: the certified bound ``L`` of the model's weights, with its per-layer
            breakdown; every radius below uses ``L``.
        accuracy: clean accuracy and certified accuracy at each ``eps``.
        attack: the PGD check of the certificates (``broken`` must be 0), or ``None``
            when no attack was asked for.
        attack_seconds: wall time of the attack, or ``None``.
        export_bound: the certified bound of the exported plain-torch copy, or ``None``
            when the export was not checked. When set, it equals ``lipschitz.bound``
            exactly (:func:`evaluate` raises otherwise).
        export_same_predictions: whether the export predicts the same class as the
            model on every image of the data (``None``: not checked).
        export_max_radius_difference: the largest difference between the certified
            radii of the model and of its export on the data (float32 rounding of the
            frozen weights; ``None``: not checked).
    """

    lipschitz: LipschitzCertificate
    accuracy: CertifiedAccuracy
    attack: AttackCheck | None = None
    attack_seconds: float | None = None
    export_bound: float | None = None
    export_same_predictions: bool | None = None
    export_max_radius_difference: float | None = None

    def to_dict(self) -> dict:
        """The accuracy's fields (``n``, ``clean_accuracy``, ...), then attack and export."""
        return {
            **self.accuracy.to_dict(),
            "attack": None if self.attack is None else self.attack.to_dict(),
            "attack_seconds": self.attack_seconds,
            "export_bound": self.export_bound,
            "export_same_predictions": self.export_same_predictions,
            "export_max_radius_difference": self.export_max_radius_difference,
        }

    def summary(self) -> str:
        """The accuracy summary, the attack line and the export line (those that ran)."""
        lines = [self.accuracy.summary()]
        if self.attack is not None:
            lines.append(self.attack.summary())
        if self.export_bound is not None:
            lines.append(
                f"export keeps predictions and certificate: {self.export_same_predictions}"
            )
        return "\n".join(lines)


def export_checked(
    model: nn.Module,
    input_shape: Sequence[int],
    lipschitz: float | None = None,
    p: float | str = 2,
) -> tuple[nn.Module, float]:
    """``(plain, bound)``: :func:`export_classifier` of ``model`` and its certified bound.

    ``bound`` is :func:`wassnet.nn.lipschitz_bound` of the exported copy; it must equal
    the model's (``lipschitz``, or computed here) exactly, since the export freezes the
    same weights: a difference is a bug and raises ``RuntimeError``.
    """
    shape = tuple(int(s) for s in input_shape)
    if lipschitz is None:
        lipschitz = float(lipschitz_certificate(model, shape, p).bound)
    original = lipschitz
    plain = export_classifier(model)
    bound = float(lipschitz_certificate(plain, shape, p).bound)
    if bound != original:
        raise RuntimeError(f"export changed the certified bound ({original} -> {bound})")
    return plain, bound


def _images_labels(
    data: ImageData | tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "images") and hasattr(data, "labels"):  # wassnet.datasets.ImageData
        return data.images, data.labels
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        return data[0], data[1]
    raise InputTypeError(
        f"evaluate needs an ImageData or (images, labels) tensors, got {type(data).__name__}"
    )


def _input_shape(images: torch.Tensor, model_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = tuple(int(s) for s in images.shape[1:])
    if model_shape is not None and shape != tuple(int(s) for s in model_shape):
        raise InputError(
            f"the images are {shape}, the classifier takes {tuple(int(s) for s in model_shape)}"
        )
    return shape


def evaluate(
    model: nn.Module | LoadedClassifier,
    data: ImageData | tuple[torch.Tensor, torch.Tensor],
    eps: float | Sequence[float] = (0.5, 1.0, 1.58),
    *,
    input_shape: Sequence[int] | None = None,
    attack: AttackOptions | None = _DEFAULT_ATTACK,
    check_export: bool = False,
    progress: bool = False,
    p: float | str | None = None,
) -> Evaluation:
    """Certified accuracy of ``model`` on ``data`` at each ``eps``, with the checks.

    Args:
        model: a classifier ``[N, *shape] -> [N, k]``, or a :class:`LoadedClassifier`
            (its ``input_shape`` is then the one the data must have).
        data: a :class:`wassnet.datasets.ImageData` or ``(images, labels)`` tensors.
        eps: lp radii (in input units; pixels in ``[0, 1]`` for wassnet's datasets).
        input_shape: the shape one input must have (default: the
            :class:`LoadedClassifier`'s, or else the data's).
        attack: options of the PGD check of the certificates (default:
            ``AttackOptions()``, the defaults of :func:`attack_certified`); ``None``: no
            attack.
        check_export: also export the model to plain torch layers, require the same
            certified bound (``RuntimeError`` otherwise) and compare predictions.
        progress: show the attack's progress bar.
        p: the norm of the radii and of the attack (default: the
            :class:`LoadedClassifier`'s ``norm``, else 2).

    Returns:
        An :class:`Evaluation`; every radius in it uses the one bound ``lipschitz``.

    Raises:
        wassnet.errors.InputError: (a ``ValueError``) when the images do not have the
            model's input shape; ``ValueError`` for bad ``eps`` or data.
    """
    if isinstance(model, LoadedClassifier):
        input_shape = model.input_shape if input_shape is None else input_shape
        p = model.norm if p is None else p
        model = model.model
    p = 2 if p is None else p
    images, labels = _images_labels(data)
    shape = _input_shape(images, input_shape)
    cert = lipschitz_certificate(model, shape, p)
    accuracy = certified_accuracy(model, (images, labels), eps=eps, lipschitz=cert, p=p)
    check, seconds = None, None
    if attack is not None:
        start = time.perf_counter()
        check = attack.run(model, images, cert, progress=progress, p=p)
        seconds = time.perf_counter() - start
    result = Evaluation(cert, accuracy, check, seconds)
    return _with_export(result, model, images, shape, p) if check_export else result


def _with_export(
    result: Evaluation,
    model: nn.Module,
    images: torch.Tensor,
    shape: tuple[int, ...],
    p: float | str,
) -> Evaluation:
    bound = float(result.lipschitz.bound)
    plain, export_bound = export_checked(model, shape, bound, p)
    pred, radius = certified_radius(model, images, bound, return_prediction=True, p=p)
    plain_pred, plain_radius = certified_radius(
        plain, images, export_bound, return_prediction=True, p=p
    )
    return replace(
        result,
        export_bound=export_bound,
        export_same_predictions=bool((pred == plain_pred).all()),
        export_max_radius_difference=float((radius - plain_radius).abs().max()),
    )
