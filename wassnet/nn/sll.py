r"""SLL: SDP-based Lipschitz layers (Araujo, Havens, Delattre, Allauzen & Hu, ICLR 2023).

.. math::
    f(x) = x - 2\, W^\top T^{-1} \mathrm{relu}(W x + b), \qquad
    T = \mathrm{diag}(t), \quad t_i = \sum_j |W W^\top|_{ij}\, \frac{q_j}{q_i},

with :math:`q = e^{\log q} > 0` learned (``weight`` :math:`W` is ``[hidden, features]``,
so :math:`W W^\top` is the paper's :math:`W^\top W` over the hidden units). For
convolutions :math:`|W W^\top|` is the Gram of the kernel over its output channels,
summed over the taps (:func:`wassnet.nn.aol.abs_gram`).

Why it is 1-Lipschitz (in exact arithmetic): with :math:`G = W W^\top` (symmetric) and
AM-GM, :math:`|x_i| |x_j| \le \tfrac12 (x_i^2 q_j / q_i + x_j^2 q_i / q_j)`, so
:math:`x^\top G x \le \sum_{ij} |G_{ij}| |x_i| |x_j| \le \sum_i x_i^2 \sum_j |G_{ij}|
q_j / q_i = \sum_i t_i x_i^2`, i.e. :math:`G \preceq T`. Then
:math:`s^2 = \|(2 T^{-1})^{1/2} W\|_2^2 = 2 \lambda_{\max}(T^{-1/2} G T^{-1/2}) \le 2`
and the Jacobian bound of :mod:`wassnet.nn.residual`, :math:`\max(1, s^2 - 1)`, is 1.

Guarantees and non-guarantees: the certificate (:func:`wassnet.nn.lipschitz_bound`)
bounds :math:`s` from the weights and the scales :math:`r = 2 / t` **as the forward pass
computes them** (float32 rounding included), never from the argument above; it is
within rounding of 1 for any ``weight`` and ``log_q``. ``eps`` floors :math:`t` (a zero
row of :math:`W` would divide by zero); a floor only lowers :math:`r`.
"""

from __future__ import annotations

import torch
from torch import nn

from wassnet.errors import InputError
from wassnet.nn.aol import abs_gram
from wassnet.nn.residual import (
    _ConvResidual,
    _DenseResidual,
    _odd_kernel,
    dense_init,
    register_residual_rules,
)

__all__ = ["SLLConv2d", "SLLLinear"]


class _GershgorinScales:
    """SLL's scales ``r = 2 / t``, mixed into a residual layer with ``weight`` and
    ``log_q``."""

    weight: nn.Parameter
    log_q: nn.Parameter
    eps: float

    def scales(self) -> torch.Tensor:
        """``2 / max(t, eps)``, ``t_i = sum_j |W W^T|_ij q_j / q_i`` (differentiable)."""
        q = self.log_q.exp()
        gram = abs_gram(self.weight.transpose(0, 1))  # [hidden, hidden]
        t = (gram @ q) / q
        return 2.0 / t.clamp_min(self.eps)


class SLLLinear(_GershgorinScales, _DenseResidual):
    r"""Dense SLL layer :math:`x - 2 W^\top T^{-1} \mathrm{relu}(W x + b)`.

    Args:
        features: the input (and output) size.
        hidden_features: the number of hidden units (rows of ``weight``), default
            ``features``.
        bias: learn ``b`` (initialized at zero).
        eps: floor of :math:`t`.

    Attributes:
        weight: ``[hidden_features, features]``, Xavier-normal initialized.
        log_q: ``[hidden_features]``, :math:`\log q`, initialized at zero.
    """

    def __init__(
        self,
        features: int,
        hidden_features: int | None = None,
        bias: bool = True,
        *,
        eps: float = 1e-12,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        kw = {"device": device, "dtype": dtype}
        super().__init__(*dense_init("SLLLinear", features, hidden_features, bias, **kw))
        hidden = self.hidden_features
        self.log_q = nn.Parameter(torch.zeros(hidden, **kw))
        self.eps = eps


class SLLConv2d(_GershgorinScales, _ConvResidual):
    r"""Convolutional SLL layer :math:`x - 2 W^\top T^{-1} \mathrm{relu}(W x + b)`, :math:`W`
    a stride-1 convolution keeping the size (odd kernel, padding ``k // 2``, zeros or
    circular) and :math:`W^\top` its exact adjoint; :math:`T` per hidden channel.

    Args:
        channels: input (and output) channels.
        kernel_size: odd, one int or a pair.
        hidden_channels: channels of ``W x``, default ``channels``.
        padding_mode: ``"zeros"`` or ``"circular"``.
        bias, eps: as for :class:`SLLLinear`.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        hidden_channels: int | None = None,
        padding_mode: str = "zeros",
        bias: bool = True,
        eps: float = 1e-12,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        kh, kw = _odd_kernel(kernel_size)
        hidden = channels if hidden_channels is None else hidden_channels
        if channels < 1 or hidden < 1:
            raise InputError(f"SLLConv2d needs channels >= 1, got {channels} and {hidden}")
        factory = {"device": device, "dtype": dtype}
        weight = nn.init.xavier_normal_(torch.empty(hidden, channels, kh, kw, **factory))
        bias_ = torch.zeros(hidden, **factory) if bias else None
        super().__init__(weight, bias_, padding_mode)
        self.log_q = nn.Parameter(torch.zeros(hidden, **factory))
        self.eps = eps


register_residual_rules(SLLLinear, conv=False)
register_residual_rules(SLLConv2d, conv=True)
