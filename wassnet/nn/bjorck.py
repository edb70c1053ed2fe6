r"""Björck orthonormalization of dense weights (Björck & Bowie 1971; Anil et al. 2019).

Given a matrix :math:`W` with singular values in :math:`(0, 1]`, the order-:math:`p`
Björck iteration

.. math::
    W_{t+1} = W_t \sum_{k=0}^{p} \binom{2k}{k} 4^{-k} \, Q_t^k,
    \qquad Q_t = I - W_t^\top W_t,

is the truncated Taylor series of :math:`W (W^\top W)^{-1/2}`, the closest
(semi-)orthogonal matrix to :math:`W`. It acts on each singular value alone,
:math:`\sigma \mapsto \sigma \sum_{k\le p} c_k (1-\sigma^2)^k`, a map that sends
:math:`(0, 1]` into :math:`(0, 1]` and converges to 1.

Guarantee used by wassnet: with ``scaling="safe"`` the input is first divided by an
upper bound on its spectral norm (the smaller of the Frobenius norm and
:math:`\sqrt{\|W\|_1 \|W\|_\infty}`), so every singular value starts in
:math:`(0, 1]` and, in exact arithmetic, **never exceeds 1 after any number of
iterations**. Orthogonality itself is only approximate (it depends on the number
of iterations and on the smallest singular value), which is why the certified
Lipschitz bound (:func:`wassnet.nn.lipschitz_bound`) is always computed from the
resulting weights rather than assumed.

For a rectangular ``[out, in]`` weight the iteration works on the smaller Gram
matrix: it returns rows that are orthonormal (``W W^T = I``) when ``out <= in`` and
columns that are orthonormal (``W^T W = I``) when ``out >= in``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from wassnet.errors import InputError

__all__ = ["BjorckLinear", "BjorckOrthonormalize", "bjorck", "bjorck_orthonormalize"]

Scaling = Literal["safe", "none"]


def _taylor_coefficients(order: int) -> list[float]:
    """Coefficients ``binom(2k, k) / 4**k`` of ``(1 - q)^{-1/2}``, for ``k = 0..order``."""
    return [math.comb(2 * k, k) / 4**k for k in range(order + 1)]


def safe_spectral_scale(weight: torch.Tensor) -> torch.Tensor:
    """A cheap, differentiable upper bound on the spectral norm of a matrix.

    Returns ``min(||W||_F, sqrt(||W||_1 ||W||_inf))``; both are proven upper bounds
    on ``||W||_2``. Never smaller than the spectral norm.
    """
    frobenius = torch.linalg.matrix_norm(weight, ord="fro")
    one_inf = torch.sqrt(
        torch.linalg.matrix_norm(weight, ord=1) * torch.linalg.matrix_norm(weight, ord=float("inf"))
    )
    return torch.minimum(frobenius, one_inf)


def bjorck_orthonormalize(
    weight: torch.Tensor,
    iters: int = 20,
    order: int = 1,
    scaling: Scaling | float = "safe",
) -> torch.Tensor:
    r"""Return the Björck orthonormalization of a matrix (differentiable).

    Args:
        weight: a ``[out, in]`` matrix (or a batch ``[..., out, in]``).
        iters: number of Björck iterations, ``>= 0``.
        order: order ``p >= 1`` of the Taylor expansion in each iteration.
        scaling: ``"safe"`` divides by :func:`safe_spectral_scale` first (so singular
            values start in ``(0, 1]`` and never exceed 1); ``"none"`` or a float
            divides by nothing or by that number. Without safe scaling the iteration
            diverges when a singular value exceeds ``sqrt(3)`` (order 1).

    Returns:
        A tensor of the same shape whose rows (``out <= in``) or columns (``out > in``)
        are approximately orthonormal.
    """
    if weight.dim() < 2:
        raise InputError(f"bjorck_orthonormalize needs a matrix, got shape {tuple(weight.shape)}")
    if iters < 0 or order < 1:
        raise InputError(f"need iters >= 0 and order >= 1, got iters={iters}, order={order}")
    if scaling == "safe":
        scale = safe_spectral_scale(weight).clamp_min(torch.finfo(weight.dtype).tiny)
        w = weight / scale.unsqueeze(-1).unsqueeze(-1)
    elif scaling == "none":
        w = weight
    elif isinstance(scaling, (int, float)) and scaling > 0:
        w = weight / float(scaling)
    else:
        raise InputError(f"scaling must be 'safe', 'none' or a positive number, got {scaling!r}")

    wide = w.shape[-2] < w.shape[-1]
    if wide:  # orthonormalize rows by working on the transpose (Gram of the smaller side)
        w = w.mT
    coefficients = _taylor_coefficients(order)
    eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
    for _ in range(iters):
        q = eye - w.mT @ w
        poly = coefficients[order] * q
        for c in reversed(coefficients[1:order]):
            poly = (poly + c * eye) @ q
        w = w + w @ poly
    return w.mT if wide else w


class BjorckOrthonormalize(nn.Module):
    """Parametrization mapping an unconstrained matrix to its Björck orthonormalization.

    Register it with :func:`bjorck` (or ``torch.nn.utils.parametrize``) on the weight
    of an ``nn.Linear``. Inside ``parametrize.cached()`` the iterations run once per
    forward pass of the whole model. ``right_inverse`` stores a matrix as it is: a
    (semi-)orthogonal matrix is a fixed point of the iteration.
    """

    lipschitz_deterministic = True  # the same weight at every evaluation (no randomness)

    def __init__(self, iters: int = 20, order: int = 1, scaling: Scaling | float = "safe") -> None:
        super().__init__()
        self.iters = iters
        self.order = order
        self.scaling = scaling

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return bjorck_orthonormalize(weight, self.iters, self.order, self.scaling)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def extra_repr(self) -> str:
        return f"iters={self.iters}, order={self.order}, scaling={self.scaling!r}"


def bjorck(
    module: nn.Module,
    name: str = "weight",
    *,
    iters: int = 20,
    order: int = 1,
    scaling: Scaling | float = "safe",
) -> nn.Module:
    """Constrain ``module.<name>`` (a matrix) to be orthonormal by Björck iterations.

    Works like :func:`torch.nn.utils.parametrizations.orthogonal`: the module keeps
    its type (an ``nn.Linear`` stays an ``nn.Linear``), ``module.<name>`` is computed
    from ``module.parametrizations.<name>.original`` on access, and
    :func:`wassnet.nn.export` turns it back into a plain layer.

    Returns:
        The module, with the parametrization registered.
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = None if weight is None else tuple(weight.shape)
        raise InputError(f"bjorck() needs a 2-D tensor at module.{name}, found shape {shape}")
    parametrize.register_parametrization(
        module, name, BjorckOrthonormalize(iters=iters, order=order, scaling=scaling)
    )
    return module


class BjorckLinear(nn.Linear):
    """An ``nn.Linear`` whose weight is Björck-orthonormalized: an orthogonal dense layer.

    With ``in_features == out_features`` the layer is (up to Björck's convergence)
    orthogonal and gradient-norm preserving; otherwise it is semi-orthogonal:
    an isometry when ``out_features > in_features``, a co-isometry (``W W^T = I``)
    when ``out_features < in_features``. Its Lipschitz constant is at most 1 + O(eps)
    for any weights (safe scaling); the exact value is reported by
    :func:`wassnet.nn.lipschitz_bound`. The raw weight is initialized orthogonal, so
    all its singular values are equal and the iterations converge quickly.

    Args:
        in_features, out_features, bias: as for ``nn.Linear``.
        iters, order, scaling: see :func:`bjorck_orthonormalize`.
    """

    #: computes ``nn.Linear``'s function of its (parametrized) weight
    lipschitz_inherits_rule = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        iters: int = 20,
        order: int = 1,
        scaling: Scaling | float = "safe",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        bjorck(self, "weight", iters=iters, order=order, scaling=scaling)

    def reset_parameters(self) -> None:
        if parametrize.is_parametrized(self, "weight"):
            nn.init.orthogonal_(self.parametrizations.weight.original)
        else:
            nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
