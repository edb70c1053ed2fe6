r"""AOL: almost-orthogonal layers (Prach & Lampert, ECCV 2022).

A matrix :math:`W` (``[out, in]``) is rescaled column by column,

.. math::
    \tilde W = W D, \qquad D = \mathrm{diag}(d), \qquad
    d_i = \Big(\sum_j |W^\top W|_{ij}\Big)^{-1/2},

and :math:`\|\tilde W\|_2 \le 1` for **every** :math:`W` (the paper's Theorem 1).
Proof: for a symmetric :math:`M`,
:math:`x^\top M x \le \sum_{ij} |M_{ij}| |x_i| |x_j| \le \sum_{ij} |M_{ij}| (x_i^2 + x_j^2) / 2
= \sum_i x_i^2 \sum_j |M_{ij}|`, so :math:`M \preceq \mathrm{diag}(\text{row sums of } |M|)`.
With :math:`M = W^\top W` this reads :math:`W^\top W \preceq D^{-2}`, i.e.
:math:`D W^\top W D \preceq I`.

**Convolutions.** For a kernel :math:`K` (``[out, in, kh, kw]``) the convolution
operator :math:`A` on the plane has :math:`A^\top A` = the convolution by
:math:`K^\top \star K` (the cross-correlation of the kernel with itself,
``[in, in, 2kh - 1, 2kw - 1]``), so the row sums of :math:`|A^\top A|` are
:math:`\sum_j \sum_t |(K^\top \star K)_{ij}[t]|` and the same rescaling of the input
channels gives :math:`\|A D\|_2 \le 1`. On a periodic grid the Gram entries are sums of
those taps (aliasing), so the row sums only shrink; zero padding is a crop of the plane
operator applied to a zero-extended input, strides subsample the output, dilation
spreads the taps: all keep the norm at most 1.

Guarantees and non-guarantees:

* In exact arithmetic the rescaled weight has spectral norm at most 1, whatever the
  raw weight. Computed in float32 it is within rounding of that (a few ``1e-7``).
* Nothing is assumed by the certificate: :func:`wassnet.nn.lipschitz_bound` bounds the
  rescaled weight **as the forward pass computes it** (the parametrized ``weight``),
  by the rules of ``nn.Linear`` / ``nn.Conv2d`` (verified spectral norm, FFT norm of the
  convolution, induced l1 / l-inf norms). The rescaling is recomputed from the raw
  weight at each access (once per forward inside ``parametrize.cached()``); on another
  device or thread count a recomputation may differ in its last bits, which
  :func:`wassnet.nn.export` removes by freezing it.
* Orthogonality is not claimed: :math:`\tilde W` is orthogonal only when the columns of
  :math:`W` are already orthogonal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.common_types import _size_2_t
from torch.nn.utils import parametrize

from wassnet.errors import InputError
from wassnet.nn.export import _plain_layer
from wassnet.nn.lipschitz import (
    NORMS,
    LipschitzBoundError,
    lipschitz_bound,
    register_lipschitz_rule,
)

__all__ = ["AOLConv2d", "AOLLinear", "AOLRescale", "abs_gram", "aol", "aol_scale"]

Shape = tuple[int, ...]


def abs_gram(weight: torch.Tensor) -> torch.Tensor:
    r"""``|W^T W|`` over the input side of a dense weight ``[out, in]`` or a kernel
    ``[out, in, kh, kw]`` (then summed over the taps of :math:`K^\top \star K`): an
    ``[in, in]`` nonnegative matrix whose row sums bound those of the operator's Gram.
    Differentiable."""
    if weight.dim() == 2:
        return (weight.mT @ weight).abs()
    if weight.dim() != 4:
        raise InputError(f"abs_gram needs a matrix or a conv kernel, got {tuple(weight.shape)}")
    kh, kw = weight.shape[-2:]
    flipped = weight.transpose(0, 1)  # [in, out, kh, kw]: channels of each input
    gram = F.conv2d(flipped, flipped, padding=(kh - 1, kw - 1))  # [in, in, 2kh-1, 2kw-1]
    return gram.abs().sum((-2, -1))


def aol_scale(weight: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The AOL factors ``d`` of the input channels, shaped to multiply ``weight``."""
    d = abs_gram(weight).sum(1).clamp_min(eps).rsqrt()
    return d.reshape(1, -1, *([1] * (weight.dim() - 2)))


class AOLRescale(nn.Module):
    """Parametrization: a raw weight ``W`` (dense or conv) -> its AOL rescaling ``W D``.

    Register it with :func:`aol` (or ``torch.nn.utils.parametrize``). ``eps`` floors the
    Gram row sums (a zero input column gets ``d = eps^-1/2`` and stays zero; a floor
    only lowers ``d``, so the norm bound still holds). ``right_inverse`` stores a
    weight as the raw weight (assigning ``layer.weight = X`` makes ``X`` the raw weight).
    """

    lipschitz_deterministic = True  # the same weight at every evaluation (no randomness)

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * aol_scale(weight, self.eps)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def aol(module: nn.Module, name: str = "weight", *, eps: float = 1e-12) -> nn.Module:
    """Rescale ``module.<name>`` (an ``nn.Linear`` or ungrouped ``nn.Conv2d`` weight) by AOL.

    Like :func:`wassnet.nn.bjorck`: the module keeps its type, its weight is computed
    from ``module.parametrizations.<name>.original`` on access, and it is certified and
    exported as the layer it is (``nn.Linear`` / ``nn.Conv2d`` rules on the rescaled
    weight).

    Returns:
        The module, with the parametrization registered.
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4):
        shape = None if weight is None else tuple(weight.shape)
        raise InputError(f"aol() needs a 2-D or 4-D tensor at module.{name}, found {shape}")
    if getattr(module, "groups", 1) != 1:
        raise InputError("aol() does not support grouped convolutions (groups != 1)")
    parametrize.register_parametrization(module, name, AOLRescale(eps))
    return module


def _raw_weight(module: nn.Module) -> torch.Tensor:
    return module.parametrizations.weight.original


@torch.no_grad()
def _orthogonal_center_(kernel: torch.Tensor) -> None:
    """A kernel with one orthogonal tap (the center) and zeros elsewhere: its AOL
    factors are 1 when ``out >= in``, so the layer starts as an exact isometry."""
    kernel.zero_()
    kh, kw = kernel.shape[-2:]
    center = torch.empty_like(kernel[:, :, 0, 0])
    nn.init.orthogonal_(center)
    kernel[:, :, kh // 2, kw // 2] = center


class AOLLinear(nn.Linear):
    """An ``nn.Linear`` whose weight is AOL-rescaled: at most 1-Lipschitz in l2 for any
    raw weight, with no iteration (one ``in x in`` Gram matrix per forward pass).

    The raw weight starts orthogonal (then the rescaling is the identity) and the bias
    at zero. :func:`wassnet.nn.lipschitz_bound` certifies the rescaled weight as it is
    (l2, l1, l-inf); :meth:`export` returns a plain ``nn.Linear`` holding it.

    Args:
        in_features, out_features, bias, device, dtype: as for ``nn.Linear``.
        eps: floor of the Gram row sums (see :class:`AOLRescale`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        eps: float = 1e-12,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        aol(self, eps=eps)

    def reset_parameters(self) -> None:
        raw = _raw_weight(self) if parametrize.is_parametrized(self, "weight") else self.weight
        nn.init.orthogonal_(raw)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def export(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the rescaled weight (same function, same bound)."""
        return _plain_layer(self)


class AOLConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose kernel is AOL-rescaled over its input channels: at most
    1-Lipschitz in l2 for any raw kernel, padding (zeros or circular), stride and
    dilation, on every input size.

    The raw kernel starts with an orthogonal center tap and zeros elsewhere (an
    isometry when ``out_channels >= in_channels`` and the padding keeps the size).
    Certified as the ``nn.Conv2d`` it is, on its rescaled kernel; :meth:`export`
    returns a plain ``nn.Conv2d`` holding it.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
        padding_mode, device, dtype: as for ``nn.Conv2d`` (same defaults; no groups).
        eps: floor of the Gram row sums (see :class:`AOLRescale`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t | str = 0,
        dilation: _size_2_t = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        eps: float = 1e-12,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        aol(self, eps=eps)

    def reset_parameters(self) -> None:
        raw = _raw_weight(self) if parametrize.is_parametrized(self, "weight") else self.weight
        _orthogonal_center_(raw)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def export(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the rescaled kernel (same function, same bound)."""
        return _plain_layer(self)


def _check_finite(module: nn.Module) -> None:
    for name, tensor in (("raw weight", _raw_weight(module)), ("bias", module.bias)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise LipschitzBoundError(f"{type(module).__name__} has a non-finite {name}")


def _aol_rule(p: float):
    r"""The rule of the plain layer that :meth:`export` returns, applied to it: the
    bound of ``nn.Linear`` / ``nn.Conv2d`` on the rescaled weight as the forward pass
    computes it (no property of AOL is used, so the bound holds whatever the weight)."""

    def rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
        _check_finite(module)
        cert = lipschitz_bound(module.export(), input_shape, p=p)
        (layer,) = cert.layers
        return layer.bound, f"{layer.method}, of the AOL-rescaled weight"

    return rule


for _p in NORMS:
    register_lipschitz_rule(AOLLinear, _aol_rule(_p), _p)
    register_lipschitz_rule(AOLConv2d, _aol_rule(_p), _p)
