r"""BCOP: block convolution orthogonal parametrization (Li et al., NeurIPS 2019).

A :math:`k \times k` orthogonal convolution over :math:`n` channels is built as the
composition (as convolutions) of an orthogonal :math:`1 \times 1` kernel :math:`H`
and :math:`k - 1` pairs of *block convolutions*

.. math::
    [P_j,\; I - P_j] \;(1 \times 2), \qquad
    \begin{bmatrix} Q_j \\ I - Q_j \end{bmatrix} \;(2 \times 1),

where :math:`P_j = V_j V_j^\top` and :math:`Q_j = U_j U_j^\top` are symmetric projectors
built from matrices :math:`V_j, U_j \in \mathbb{R}^{n \times n/2}` with Björck-
orthonormalized columns. Under circular padding each block convolution has the
Fourier symbol :math:`P + (I - P) e^{i\omega}`, a unitary matrix, so the whole
convolution is an orthogonal operator on every input size.

Guarantees:

* Even when Björck has not converged, every singular value of :math:`V_j` lies in
  :math:`(0, 1]` (safe scaling, see :mod:`wassnet.nn.bjorck`), so
  :math:`P_j` has eigenvalues in :math:`[0, 1]`, each symbol
  :math:`\lambda + (1-\lambda) e^{i\omega}` has modulus at most 1, and the composed
  operator has norm at most 1 (up to rounding), with circular or zero padding.
* The kernel is assembled by exact kernel composition, for any :math:`k \ge 1`
  (odd or even). An even kernel is stored zero-padded to odd size :math:`k + 1`, so
  that a plain ``nn.Conv2d`` with symmetric padding computes the same map.
* Different channel counts: the orthogonal operator is built on
  :math:`\max(c_{in}, c_{out})` channels and sliced, which gives an isometry
  (:math:`c_{out} > c_{in}`) or a co-isometry (:math:`c_{out} < c_{in}`).
* ``stride=2`` uses the invertible downsampling of Li et al. (pixel unshuffle, an
  orthogonal permutation of :math:`[C, H, W]` into :math:`[4C, H/2, W/2]`) followed
  by a stride-1 BCOP convolution with kernel :math:`\lceil k/2 \rceil`.

The certified Lipschitz constant of a module is computed from its kernel by
:func:`wassnet.nn.lipschitz_bound`; it is never assumed to be 1.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from wassnet.errors import InputError
from wassnet.nn.bjorck import Scaling, bjorck_orthonormalize
from wassnet.nn.export import export
from wassnet.nn.lipschitz import (
    NORMS,
    Rule,
    Shape,
    check_faithful,
    register_lipschitz_rule,
    registered_rule,
)

__all__ = ["BCOPConv2d", "BCOPKernel", "compose_kernels"]

PaddingMode = Literal["circular", "zeros"]


def compose_kernels(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Kernel of the convolution ``second ∘ first`` (both ``[out, in, kh, kw]``).

    Cross-correlating with the result, with a left/top padding equal to the sum of
    the two paddings, equals applying ``first`` and then ``second``; the result has
    spatial size ``(kh1 + kh2 - 1, kw1 + kw2 - 1)``.
    """
    kh, kw = second.shape[-2:]
    composed = F.conv2d(first.transpose(0, 1), second.flip(-2, -1), padding=(kh - 1, kw - 1))
    return composed.transpose(0, 1)


class BCOPKernel(nn.Module):
    """Parametrization: BCOP matrices ``[2k - 1, n, n]`` -> conv kernel ``[out, in, k', k']``.

    ``original[0]`` is Björck-orthonormalized into the ``1 x 1`` kernel; for
    ``j >= 1`` the first ``rank`` columns of ``original[j]`` give the projectors of
    the block convolutions. ``k' = k`` for odd ``k`` and ``k + 1`` for even ``k``.

    ``right_inverse`` cannot recover BCOP matrices from an arbitrary kernel: it
    returns a fresh orthogonal initialization, so assigning ``conv.weight = ...`` on
    a BCOP layer re-initializes it.
    """

    lipschitz_deterministic = True  # the same weight at every evaluation (no randomness)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        iters: int = 20,
        order: int = 1,
        scaling: Scaling | float = "safe",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.channels = max(in_channels, out_channels)
        self.rank = max(1, self.channels // 2)
        self.iters = iters
        self.order = order
        self.scaling = scaling

    def forward(self, matrices: torch.Tensor) -> torch.Tensor:
        n, k = self.channels, self.kernel_size
        ortho = lambda m: bjorck_orthonormalize(m, self.iters, self.order, self.scaling)  # noqa: E731
        kernel = ortho(matrices[0]).reshape(n, n, 1, 1)
        if k > 1:
            v = ortho(matrices[1:, :, : self.rank])
            projectors = v @ v.mT  # [2(k-1), n, n]
            eye = torch.eye(n, dtype=matrices.dtype, device=matrices.device)
            for j in range(k - 1):
                p, q = projectors[2 * j], projectors[2 * j + 1]
                row = torch.stack((p, eye - p), dim=-1).unsqueeze(-2)  # [n, n, 1, 2]
                col = torch.stack((q, eye - q), dim=-1).unsqueeze(-1)  # [n, n, 2, 1]
                kernel = compose_kernels(compose_kernels(kernel, row), col)
        kernel = kernel[: self.out_channels, : self.in_channels]
        if k % 2 == 0:  # store at odd size: a zero first row/column gives padding k/2 - 1
            kernel = F.pad(kernel, (1, 0, 1, 0))
        return kernel

    @torch.no_grad()
    def right_inverse(self, kernel: torch.Tensor) -> torch.Tensor:
        matrices = torch.empty(
            2 * self.kernel_size - 1,
            self.channels,
            self.channels,
            dtype=kernel.dtype,
            device=kernel.device,
        )
        for m in matrices:
            nn.init.orthogonal_(m)
        return matrices

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, rank={self.rank}, kernel_size={self.kernel_size}, "
            f"iters={self.iters}, order={self.order}, scaling={self.scaling!r}"
        )


class BCOPConv2d(nn.Module):
    """Orthogonal 2-D convolution by BCOP, with the signature of ``nn.Conv2d``.

    Args:
        in_channels, out_channels: channel counts (they may differ).
        kernel_size: any integer ``k >= 1``, odd or even (square kernels).
        stride: 1, or 2 for invertible downsampling followed by a stride-1 BCOP
            convolution on ``4 * in_channels`` channels with kernel ``ceil(k / 2)``;
            the spatial size of the input must then be even.
        padding_mode: ``"circular"`` (the operator is orthogonal: norm preserving
            when ``out_channels >= in_channels``) or ``"zeros"`` (norm at most 1;
            boundary pixels lose energy). The output has the input's spatial size
            (divided by the stride).
        bias: add a learnable bias (does not change the Lipschitz constant).
        iters, order, scaling: Björck options for the matrices (see
            :func:`wassnet.nn.bjorck.bjorck_orthonormalize`).

    Attributes:
        conv: the stride-1 ``nn.Conv2d`` whose ``weight`` is the BCOP parametrization.
        downsample: 1 or 2.

    Shape:
        - Input ``[N, in_channels, H, W]``; output ``[N, out_channels, H / s, W / s]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding_mode: PaddingMode = "circular",
        bias: bool = True,
        *,
        iters: int = 20,
        order: int = 1,
        scaling: Scaling | float = "safe",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise InputError(
                f"BCOPConv2d: kernel_size must be an integer >= 1, got {kernel_size!r}"
            )
        if stride not in (1, 2):
            raise InputError(f"BCOPConv2d: stride must be 1 or 2, got {stride!r}")
        if padding_mode not in ("circular", "zeros"):
            raise InputError(
                f"BCOPConv2d: padding_mode must be 'circular' or 'zeros', got {padding_mode!r}"
            )
        if in_channels < 1 or out_channels < 1:
            raise InputError("BCOPConv2d: channel counts must be >= 1")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.downsample = stride
        inner_channels = in_channels * stride * stride
        inner_kernel = kernel_size if stride == 1 else (kernel_size + 1) // 2
        stored = inner_kernel + (1 - inner_kernel % 2)
        self.conv = nn.Conv2d(
            inner_channels,
            out_channels,
            stored,
            padding=(stored - 1) // 2,
            padding_mode=padding_mode,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        if bias:
            nn.init.zeros_(self.conv.bias)
        parametrize.register_parametrization(
            self.conv,
            "weight",
            BCOPKernel(
                inner_channels,
                out_channels,
                inner_kernel,
                iters=iters,
                order=order,
                scaling=scaling,
            ),
        )

    @property
    def weight(self) -> torch.Tensor:
        """The current kernel ``[out, in * s^2, k', k']`` of the inner convolution."""
        return self.conv.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample > 1:
            h, w = x.shape[-2:]
            if h % self.downsample or w % self.downsample:
                raise InputError(
                    f"BCOPConv2d with stride {self.downsample} needs an even spatial size, "
                    f"got {h}x{w}"
                )
            x = F.pixel_unshuffle(x, self.downsample)
        return self.conv(x)

    def export(self) -> nn.Module:
        """A plain torch module computing the same map (no parametrization)."""
        conv = export(self.conv)
        if self.downsample == 1:
            return conv
        return nn.Sequential(nn.PixelUnshuffle(self.downsample), conv)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding_mode={self.conv.padding_mode!r}"
        )


def _bcop_rule(p: float) -> Rule:
    """A BCOP layer is its inner convolution after an invertible downsampling (a
    permutation, Lipschitz constant 1 in every lp): the inner ``nn.Conv2d``'s lp rule on
    the downsampled shape."""
    conv_rule = registered_rule(nn.Conv2d, p)

    def rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
        bcop: BCOPConv2d = module  # type: ignore[assignment]
        check_faithful(bcop.conv, "conv")  # the rule reads the inner convolution
        c, h, w = input_shape
        s = bcop.downsample
        bound, method = conv_rule(bcop.conv, (c * s * s, h // s, w // s))
        return bound, method + (" after invertible downsampling" if s > 1 else "")

    return rule


for _p in NORMS:
    register_lipschitz_rule(BCOPConv2d, _bcop_rule(_p), _p)
