r"""CPL: convex potential layers (Meunier, Delattre, Araujo & Allauzen, ICML 2022).

.. math::
    f(x) = x - \frac{2}{\|W\|_2^2}\, W^\top \mathrm{relu}(W x + b)

is one explicit Euler step of size :math:`h = 2 / \|W\|_2^2` on the gradient flow of the
convex potential :math:`\sum_i \mathrm{relu}(w_i \cdot x + b_i)^2 / 2`; with the exact
norm it is 1-Lipschitz in l2 (:mod:`wassnet.nn.residual`: the Jacobian's norm is at
most :math:`\max(1, h \|W\|_2^2 - 1) = 1`).

The norm is **estimated** by power iteration, as in the paper: a persistent buffer
``u`` (in the input space of :math:`W`) gives :math:`\hat\sigma = \|W u\| / \|u\|`,
which is never above :math:`\|W\|_2`, so :math:`h = 2 / \hat\sigma^2` may be slightly
too large. The forward pass uses the buffer as it is; a training forward pass (module
in training mode, autograd enabled) then refines it by one power step for the next
call, so the estimate tracks the weights as they train. :meth:`refine_norm_estimate_`
runs more steps (before certifying, for instance).

Guarantees and non-guarantees:

* The certificate (:func:`wassnet.nn.lipschitz_bound`) does **not** trust the estimate:
  it bounds :math:`\|W\|_2` itself (verified SVD bound, or the exact FFT norm of the
  convolution on the certified input size) and reports
  :math:`\max(1, h \sigma^2 - 1)` with the :math:`h` the forward pass uses. It is
  :math:`1 + O(\text{estimate error})`, above 1 whenever the estimate is below the norm.
* The certificate describes the layer as it is at certification. A later training
  forward pass moves ``u`` (and so :math:`h`) like an optimizer step moves the weights;
  ``lipschitz_bound`` itself runs without autograd and leaves ``u`` unchanged.
* For zero padding the power iteration runs on the circular convolution over the
  padded grid, the operator whose norm the certificate computes (a proven upper bound
  on the zero-padded one), so that a converged estimate gives a certificate of 1.
"""

from __future__ import annotations

import torch
from torch import nn

from wassnet.errors import InputError
from wassnet.nn.residual import (
    _ConvResidual,
    _DenseResidual,
    _odd_kernel,
    adjoint_kernel,
    conv_same,
    dense_init,
    register_residual_rules,
)

__all__ = ["CPLConv2d", "CPLLinear"]


class _PowerIterationStep:
    """CPL's step ``h = 2 / sigma_hat^2`` from the power-iteration buffer ``u``; mixed
    into a residual layer that defines ``_map(u)`` (``W u``) and ``_map_adjoint(v)``."""

    u: torch.Tensor
    eps: float
    weight: nn.Parameter
    training: bool

    def _map(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _map_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def norm_estimate(self) -> torch.Tensor:
        r"""``||W u|| / ||u||`` (differentiable in ``W``): a lower bound on ``||W||_2``."""
        u = self.u.clone()  # a refinement after this call must not change saved tensors
        length = torch.linalg.vector_norm(u).clamp_min(torch.finfo(u.dtype).tiny)
        return torch.linalg.vector_norm(self._map(u)) / length

    def scales(self) -> torch.Tensor:
        """``h = 2 / max(sigma_hat^2, eps)`` for every hidden unit."""
        h = 2.0 / self.norm_estimate().square().clamp_min(self.eps)
        return h.expand(self.weight.shape[0])

    @torch.no_grad()
    def refine_norm_estimate_(self, iterations: int = 1) -> float:
        """Run ``iterations`` power steps ``u <- W^T W u / ||W^T W u||`` on the buffer (in
        place; ``u`` is kept where ``W^T W u = 0``) and return the new estimate."""
        u = self.u
        for _ in range(iterations):
            v = self._map_adjoint(self._map(u))
            norm = torch.linalg.vector_norm(v)
            u = torch.where(norm > 0, v / norm.clamp_min(torch.finfo(v.dtype).tiny), u)
        self.u.copy_(u)
        return float(self.norm_estimate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)  # type: ignore[misc]
        if self.training and torch.is_grad_enabled():
            self.refine_norm_estimate_(1)
        return y


class CPLLinear(_PowerIterationStep, _DenseResidual):
    r"""Dense convex potential layer :math:`x - (2 / \hat\sigma^2) W^\top \mathrm{relu}(Wx + b)`.

    Args:
        features: the input (and output) size.
        hidden_features: the number of hidden units (rows of ``weight``), default
            ``features``.
        bias: learn ``b`` (initialized at zero).
        eps: floor of :math:`\hat\sigma^2`.
        power_iterations: power steps run at construction.

    Attributes:
        weight: ``[hidden_features, features]``, Xavier-normal initialized.
        u: ``[features]``, the power-iteration buffer (saved in the state dict).
    """

    def __init__(
        self,
        features: int,
        hidden_features: int | None = None,
        bias: bool = True,
        *,
        eps: float = 1e-12,
        power_iterations: int = 50,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        kw = {"device": device, "dtype": dtype}
        super().__init__(*dense_init("CPLLinear", features, hidden_features, bias, **kw))
        self.eps = eps
        u = torch.randn(features, **kw)
        self.register_buffer("u", u / torch.linalg.vector_norm(u))
        self.refine_norm_estimate_(power_iterations)

    def _map(self, u: torch.Tensor) -> torch.Tensor:
        return self.weight @ u

    def _map_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return self.weight.mT @ v


class CPLConv2d(_PowerIterationStep, _ConvResidual):
    r"""Convolutional convex potential layer
    :math:`x - (2 / \hat\sigma^2) W^\top \mathrm{relu}(W x + b)`, :math:`W` a stride-1
    convolution keeping the size (odd kernel, padding ``k // 2``) and :math:`W^\top` its
    exact adjoint.

    Args:
        channels: input (and output) channels.
        kernel_size: odd, one int or a pair.
        input_size: ``(H, W)`` of the inputs, for the power iteration's grid (an input
            of another size is still certified, on its own size).
        hidden_channels: channels of ``W x``, default ``channels``.
        padding_mode: ``"zeros"`` or ``"circular"``.
        bias, eps, power_iterations: as for :class:`CPLLinear`.

    Attributes:
        weight: ``[hidden_channels, channels, kh, kw]``.
        u: ``[1, channels, gh, gw]``, the buffer on the grid of the certified operator
            (``input_size``, plus the padding for zeros).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        input_size: int | tuple[int, int],
        hidden_channels: int | None = None,
        padding_mode: str = "zeros",
        bias: bool = True,
        eps: float = 1e-12,
        power_iterations: int = 50,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        kh, kw = _odd_kernel(kernel_size)
        hidden = channels if hidden_channels is None else hidden_channels
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if channels < 1 or hidden < 1 or len(size) != 2 or min(size) < 1:
            raise InputError(f"CPLConv2d: bad sizes {channels}, {hidden}, input_size {size}")
        factory = {"device": device, "dtype": dtype}
        weight = nn.init.xavier_normal_(torch.empty(hidden, channels, kh, kw, **factory))
        bias_ = torch.zeros(hidden, **factory) if bias else None
        super().__init__(weight, bias_, padding_mode)
        self.eps = eps
        pad = (kh - 1, kw - 1) if padding_mode == "zeros" else (0, 0)
        u = torch.randn(1, channels, size[0] + pad[0], size[1] + pad[1], **factory)
        self.register_buffer("u", u / torch.linalg.vector_norm(u))
        self.refine_norm_estimate_(power_iterations)

    def _map(self, u: torch.Tensor) -> torch.Tensor:
        return conv_same(u, self.weight, "circular")

    def _map_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return conv_same(v, adjoint_kernel(self.weight), "circular")


register_residual_rules(CPLLinear, conv=False)
register_residual_rules(CPLConv2d, conv=True)
