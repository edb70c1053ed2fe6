r"""Training losses for certified-robust classification with 1-Lipschitz networks.

For a network :math:`f: \mathbb{R}^d \to \mathbb{R}^k` with L2 Lipschitz constant
:math:`L` and logit margin :math:`m(x) = f_y(x) - \max_{j \ne y} f_j(x)`, no perturbation
of norm :math:`< m(x) / (\sqrt{2} L)` changes the prediction (Tsuzuku et al. 2018;
Anil et al. 2019; Li et al. 2019). Training therefore pushes margins up to
:math:`\sqrt{2}\,\varepsilon` (times :math:`L`, which is 1 for wassnet's layers):

* :func:`multiclass_hinge`: the multi-class hinge loss of Anil et al. (2019) and Li et
  al. (2019), with the margin tied to the target radius:
  ``margin = sqrt(2) * eps``. A training point with zero loss and ``L <= 1`` is
  certified at radius ``eps``.
* :func:`cross_entropy_with_temperature`: cross-entropy on ``logits / temperature``; a
  small temperature makes the loss care about margins of order ``temperature``
  rather than saturating at unit-scale logits (1-Lipschitz logits are small).

Both are plain differentiable functions of the logits; neither certifies anything by
itself: the certificate comes from :func:`wassnet.certify.certified_radius`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wassnet.errors import InputError
from wassnet.nn.lipschitz import norm_p

__all__ = ["cross_entropy_with_temperature", "hinge_margin", "multiclass_hinge"]


def hinge_margin(eps: float, p: float | str = 2) -> float:
    """The logit margin ``c_p * eps`` that certifies lp radius ``eps`` for a 1-Lipschitz net.

    ``c_2 = sqrt(2)``, ``c_inf = 2``, ``c_1 = 1`` (see
    :func:`wassnet.certify.radius.margin_factor`).
    """
    if not math.isfinite(eps) or eps < 0:
        raise InputError(f"target radius eps must be finite and >= 0, got {eps}")
    factor = {1.0: 1.0, 2.0: math.sqrt(2.0), math.inf: 2.0}[norm_p(p)]
    return factor * eps


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise InputError(
            f"logits must be [batch, classes] with >= 2 classes, got {tuple(logits.shape)}"
        )
    if target.shape != logits.shape[:1]:
        raise InputError(
            f"target must be [batch] = {logits.shape[0]} class indices, got {tuple(target.shape)}"
        )


def multiclass_hinge(
    logits: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1.58,
    reduction: str = "mean",
    p: float | str = 2,
) -> torch.Tensor:
    r"""Multi-class hinge loss with margin :math:`\mu = \sqrt{2}\,\varepsilon`.

    .. math::
        \ell(f(x), y) = \frac{1}{k} \sum_{j \ne y} \max\bigl(0,\; \mu - f_y(x) + f_j(x)\bigr)

    the same value as ``torch.nn.functional.multi_margin_loss(logits, target,
    margin=sqrt(2) * eps)``. It is zero exactly when every rival logit trails the true
    one by at least :math:`\mu`, i.e. when the point's certified radius
    ``margin / (sqrt(2) L)`` is at least ``eps / L``.

    Args:
        logits: ``[batch, k]``.
        target: ``[batch]`` class indices.
        eps: target L2 radius (Li et al. 2019 use 1.58 on MNIST in [0, 1] pixels).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per example, ``[batch]``).
        p: the norm of ``eps`` (margin ``c_p * eps``: ``2 * eps`` in l-inf).
    """
    _check(logits, target)
    margin = hinge_margin(eps, p)
    true = logits.gather(1, target[:, None])
    hinge = (margin - true + logits).clamp_min(0)
    hinge = hinge.scatter(1, target[:, None], 0.0)
    per_example = hinge.sum(1) / logits.shape[1]
    return _reduce(per_example, reduction)


def cross_entropy_with_temperature(
    logits: torch.Tensor, target: torch.Tensor, temperature: float = 0.25, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``softmax(logits / temperature)``.

    A 1-Lipschitz network cannot make its logits large on inputs in ``[0, 1]^d``, so
    plain cross-entropy (temperature 1) never saturates and favours accuracy over
    margin; a temperature ``t < 1`` rescales the logits so that margins of a few ``t``
    already give a near-zero loss. Unlike the hinge loss, the target margin is soft.
    """
    _check(logits, target)
    if not math.isfinite(temperature) or temperature <= 0:
        raise InputError(f"temperature must be finite and > 0, got {temperature}")
    return F.cross_entropy(logits / temperature, target, reduction=reduction)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise InputError(f"unknown reduction {reduction!r}: choose mean, sum or none")
