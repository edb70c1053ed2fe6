r"""Certified L2 radii and certified accuracy, from the bound computed on the weights.

For a classifier :math:`f: \mathbb{R}^d \to \mathbb{R}^k` whose L2 Lipschitz constant is at
most :math:`L`, predicting :math:`c = \arg\max_j f_j(x)` with margin
:math:`m(x) = f_c(x) - \max_{j \ne c} f_j(x)`: each difference :math:`f_c - f_j` is
:math:`\sqrt{2} L`-Lipschitz (the vector :math:`e_c - e_j` has norm :math:`\sqrt{2}`), so

.. math::
    \|\delta\|_2 < r(x) = \frac{m(x)}{\sqrt{2}\, L} \;\Longrightarrow\;
    \arg\max_j f_j(x + \delta) = c.

:math:`L` is :func:`wassnet.nn.lipschitz_bound` of the model **as it is** (verified
upper bounds on each layer's spectral norm, multiplied, rounded up), never assumed to
be 1. What is *not* covered: rounding of the float32 forward pass itself (logit errors
of order ``1e-6`` relative), and models containing layers for which no Lipschitz rule
is registered (they raise :class:`wassnet.nn.LipschitzBoundError` instead of being
certified).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from wassnet.errors import InputError, InputTypeError
from wassnet.nn import LipschitzCertificate, lipschitz_bound, norm_name, norm_p

__all__ = [
    "CertifiedAccuracy",
    "certified_accuracy",
    "certified_radius",
    "check_eps",
    "lipschitz_certificate",
    "logit_margin",
    "margin_factor",
    "resolve_lipschitz",
]

SQRT2 = math.sqrt(2.0)


def margin_factor(p: float | str = 2) -> float:
    """``c_p`` with radius ``margin / (c_p L)`` for an lp -> lp bound ``L``, rounded up.

    Moving the input by ``delta`` moves the logits by ``|f(x+delta) - f(x)|_p <= L
    |delta|_p``; the margin (top logit minus any other) then shrinks by at most
    ``|d_i - d_j|``, which is ``<= |d|_1`` (``c_1 = 1``), ``<= sqrt(2) |d|_2``
    (``c_2 = sqrt(2)``) and ``<= 2 |d|_inf`` (``c_inf = 2``).
    """
    norm = norm_p(p)
    return {1.0: 1.0, 2.0: math.nextafter(SQRT2, math.inf), math.inf: 2.0}[norm]


Data = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


def check_eps(eps: float | Sequence[float]) -> list[float]:
    """``eps`` as a non-empty list of finite radii ``>= 0``; ``ValueError`` otherwise."""
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise InputError("eps must hold at least one radius")
    out = []
    for e in values:
        try:
            v = float(e)
        except (TypeError, ValueError):
            raise InputError(f"eps must be numbers, got {e!r}") from None
        if not math.isfinite(v) or v < 0:
            raise InputError(f"eps must be finite radii >= 0, got {e!r}")
        out.append(v)
    return out


def logit_margin(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prediction, margin)`` of ``[batch, k]`` logits: argmax and top-1 minus top-2
    (float64, ``>= 0``, rounded down: never above the exact gap between the logits)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise InputError(
            f"logits must be [batch, classes] with >= 2 classes, got {tuple(logits.shape)}"
        )
    top = logits.topk(2, dim=1)
    first, second = top.values[:, 0].double(), top.values[:, 1].double()
    gap = first - second  # float64: rounded at most once, then one step down
    gap = torch.where(gap > 0, torch.nextafter(gap, torch.zeros_like(gap)), gap)
    return top.indices[:, 0], gap.clamp_min(0)


def resolve_lipschitz(
    model: nn.Module,
    input_shape: Sequence[int],
    lipschitz: float | LipschitzCertificate | None = None,
    p: float | str = 2,
) -> float:
    """The certified lp bound ``L``: ``lipschitz_bound(model, input_shape, p)`` unless given.

    A given value must be a finite number ``> 0``; it is the caller's promise that it
    bounds the model's lp Lipschitz constant (pass the certificate of the same weights;
    a certificate of another norm is refused).
    """
    if lipschitz is None:
        return float(lipschitz_certificate(model, input_shape, p).bound)
    if isinstance(lipschitz, LipschitzCertificate) and lipschitz.p != norm_p(p):
        raise InputError(
            f"the certificate bounds the {lipschitz.norm} constant; this radius needs "
            f"the {norm_name(p)} one"
        )
    value = float(lipschitz)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"lipschitz must be a finite bound > 0, got {lipschitz!r}")
    return value


def lipschitz_certificate(
    model: nn.Module, input_shape: Sequence[int], p: float | str = 2
) -> LipschitzCertificate:
    """:func:`wassnet.nn.lipschitz_bound` of ``model`` in eval mode, the mode in which
    :func:`certified_radius` predicts (dropout off); the model's mode is restored."""
    with _eval_mode(model):
        return lipschitz_bound(model, input_shape, p=p)


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_inputs(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"inputs must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise InputError(f"inputs must be a non-empty batch [N, ...], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("inputs contain NaN or inf")


@torch.no_grad()
def _predict(
    model: nn.Module, x: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    device = _device_of(model)
    preds, margins = [], []
    with _eval_mode(model), parametrize.cached():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size].to(device))
            p, m = logit_margin(logits)
            preds.append(p.cpu())
            margins.append(m.to("cpu", torch.float64))
    return torch.cat(preds), torch.cat(margins)


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def certified_radius(
    model: nn.Module,
    x: torch.Tensor,
    lipschitz: float | LipschitzCertificate | None = None,
    *,
    batch_size: int = 1024,
    return_prediction: bool = False,
    p: float | str = 2,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Certified lp radius of the prediction at each input: ``margin / (c_p L)``.

    ``c_2 = sqrt(2)``, ``c_inf = 2``, ``c_1 = 1`` (:func:`margin_factor`), ``L`` the
    model's lp -> lp bound.

    Args:
        model: a classifier ``[N, *shape] -> [N, k]`` (``k >= 2``), evaluated in eval
            mode (its mode is restored afterwards).
        x: ``[N, *shape]`` inputs (moved to the model's device batch by batch).
        lipschitz: a bound on the model's lp Lipschitz constant. Default: computed from
            the current weights with :func:`wassnet.nn.lipschitz_bound` on ``shape``.
        batch_size: inputs per forward pass.
        return_prediction: also return the predicted classes.
        p: the norm of perturbations: ``2`` (default), ``1`` or ``inf``.

    Returns:
        ``radius``: float64 ``[N]`` on the CPU (``0`` where the top two logits tie), or
        ``(prediction, radius)`` with ``prediction`` int64 ``[N]``. Guarantee: for
        every ``i`` and every ``delta`` with ``||delta||_p < radius[i]``, the model
        predicts ``prediction[i]`` at ``x[i] + delta`` (up to float32 rounding of the
        forward pass).
    """
    _check_inputs(x)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    bound = resolve_lipschitz(model, tuple(x.shape[1:]), lipschitz, p)
    prediction, margin = _predict(model, x, batch_size)
    radius = radius_from_margin(margin, bound, p)
    return (prediction, radius) if return_prediction else radius


def radius_from_margin(margin: torch.Tensor, bound: float, p: float | str = 2) -> torch.Tensor:
    """``margin / (c_p L)`` rounded down: the denominator is rounded up (``c_p`` and the
    product), the quotient one step down (``0`` stays ``0``)."""
    denominator = math.nextafter(margin_factor(p) * bound, math.inf)
    radius = margin.to(torch.float64) / denominator
    return torch.where(radius > 0, torch.nextafter(radius, torch.zeros_like(radius)), radius)


@dataclass(frozen=True)
class CertifiedAccuracy:
    """Clean accuracy and certified accuracy at each radius, on ``n`` examples.

    ``certified[i]`` is the fraction of examples that are classified correctly **and**
    whose certified radius exceeds ``eps[i]`` (so no L2 perturbation of norm
    ``<= eps[i]`` can make them wrong). It never exceeds ``clean`` and never increases
    with ``eps``.
    """

    n: int
    clean: float
    eps: list[float]
    certified: list[float]
    lipschitz: float
    median_radius: float
    norm: str = "l2"

    def to_dict(self) -> dict:
        return {
            "norm": self.norm,
            "n": self.n,
            "clean_accuracy": self.clean,
            "certified_accuracy": {
                f"{e:g}": c for e, c in zip(self.eps, self.certified, strict=True)
            },
            "lipschitz_bound": self.lipschitz,
            "median_certified_radius": self.median_radius,
        }

    def summary(self) -> str:
        lines = [
            f"examples: {self.n}",
            f"certified {self.norm} Lipschitz bound L: {self.lipschitz:.8f}",
            f"clean accuracy: {100 * self.clean:.2f}%",
        ]
        lines += [
            f"certified accuracy at eps={e:g} ({self.norm}): {100 * c:.2f}%"
            for e, c in zip(self.eps, self.certified, strict=True)
        ]
        lines.append(f"median certified radius (correct points, else 0): {self.median_radius:.4f}")
        return "\n".join(lines)


def _batches(data: Data, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(data, "images") and hasattr(data, "labels"):  # wassnet.datasets.ImageData
        data = (data.images, data.labels)  # type: ignore[union-attr]
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if len(x) != len(y):
            raise InputError(f"{len(x)} inputs but {len(y)} labels")
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    for batch in data:  # a DataLoader or any iterable of (x, y)
        x, y = batch[0], batch[1]
        yield x, y


def certified_accuracy(
    model: nn.Module,
    data: Data,
    eps: float | Sequence[float] = (0.5, 1.0, 1.58),
    lipschitz: float | LipschitzCertificate | None = None,
    *,
    batch_size: int = 1024,
    p: float | str = 2,
) -> CertifiedAccuracy:
    """Clean and certified accuracy of ``model`` on ``data`` at each radius in ``eps``.

    Args:
        model: a classifier ``[N, *shape] -> [N, k]``.
        data: ``(images, labels)`` tensors, a :class:`wassnet.datasets.ImageData`, or an
            iterable of ``(x, y)`` batches such as a ``DataLoader``.
        eps: lp radii (in input units; pixels in ``[0, 1]`` for wassnet's datasets).
        lipschitz: the model's certified bound; default: computed from its weights once.
        batch_size: examples per forward pass (for tensors).
        p: the norm of perturbations (``2``, ``1`` or ``inf``).

    Returns:
        A :class:`CertifiedAccuracy`. Raises ``ValueError`` for bad ``eps``, empty data,
        NaN inputs, or labels that do not match the inputs.
    """
    radii = check_eps(eps)
    bound: float | None = None
    n = 0
    correct = 0
    certified = [0] * len(radii)
    correct_radii: list[torch.Tensor] = []
    for x, y in _batches(data, batch_size):
        _check_inputs(x)
        y = torch.as_tensor(y).reshape(-1).cpu()
        if len(y) != len(x):
            raise InputError(f"batch of {len(x)} inputs with {len(y)} labels")
        if bound is None:
            bound = resolve_lipschitz(model, tuple(x.shape[1:]), lipschitz, p)
        pred, radius = certified_radius(
            model, x, bound, batch_size=batch_size, return_prediction=True, p=p
        )
        ok = pred == y
        n += len(y)
        correct += int(ok.sum())
        for i, e in enumerate(radii):
            certified[i] += int((ok & (radius > e)).sum())
        correct_radii.append(torch.where(ok, radius, torch.zeros_like(radius)))
    if n == 0 or bound is None:
        raise InputError("no examples to certify: the data is empty")
    return CertifiedAccuracy(
        n=n,
        clean=correct / n,
        eps=radii,
        certified=[c / n for c in certified],
        lipschitz=bound,
        median_radius=float(torch.cat(correct_radii).median()),
        norm=norm_name(p),
    )
