"""The critic builders: every network the three jobs train, as a plain ``nn.Sequential``.

Every critic is a plain ``nn.Sequential`` of wassnet layers, so
:func:`wassnet.nn.lipschitz_bound` can certify it and :func:`wassnet.nn.export` can
freeze it. With the default constraints each layer has Lipschitz constant at most
1 (up to rounding), hence so has the critic; the certified value is always computed
from the weights, never assumed.

* :func:`dense_critic`: Björck-orthonormal dense layers with GroupSort (Anil et al.).
* :func:`conv_critic`: BCOP convolutions (stride 2 by invertible downsampling),
  then Björck dense layers (Li et al.).
* :func:`family_critic`: AOL, CPL or SLL layers (Prach & Lampert 2022; Meunier et
  al. 2022; Araujo et al. 2023) between exact permutations (pixel unshuffle) and AOL
  transitions, then a Björck layer to the outputs.
* :func:`linf_dist_critic`: l-inf-distance neurons with mean shift (Zhang et al. 2021),
  1-Lipschitz in l-inf.
* :func:`linear_critic`, :func:`radial_critic`: the two smallest critics of the
  population bracket (a unit vector; a distance to a learned center).

``constraint="none"`` builds the same shapes from unconstrained ``nn.Linear`` /
``nn.Conv2d``: the baseline for WGAN-GP, whose Lipschitz constant is not controlled.
Parameters are created (and random draws made) in the order the layers appear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from wassnet.critics.norm_estimates import refine_norm_estimates_
from wassnet.errors import InputError
from wassnet.names import ARCHS, FAMILIES
from wassnet.nn import (
    AOLConv2d,
    AOLLinear,
    BCOPConv2d,
    BjorckLinear,
    CPLConv2d,
    CPLLinear,
    FullSort,
    GroupSort,
    NormPool,
    SLLConv2d,
    SLLLinear,
    Translate,
)
from wassnet.norms import Norm, by_p

__all__ = [
    "conv_critic",
    "dense_critic",
    "family_critic",
    "linear_critic",
    "linf_dist_critic",
    "radial_critic",
]

Activation = Literal["groupsort", "maxmin", "fullsort", "relu"]
Constraint = Literal["bjorck", "none"]


def _activation(name: str, group_size: int, width: int) -> nn.Module:
    if name in ("groupsort", "maxmin"):
        size = 2 if name == "maxmin" else group_size
        if width % size:
            raise InputError(f"layer width {width} is not divisible by the group size {size}")
        return GroupSort(size)
    if name == "fullsort":
        return FullSort()
    if name == "relu":
        return nn.ReLU()
    raise InputError(f"unknown activation {name!r}: choose groupsort, maxmin, fullsort or relu")


def _shape(input_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(map(int, input_shape))
    if not shape or any(s < 1 for s in shape):
        raise InputError(f"input_shape must be positive sizes, got {input_shape!r}")
    return shape


def _flat_start(shape: tuple[int, ...]) -> tuple[list[nn.Module], int]:
    """``([nn.Flatten()]`` for points of several dimensions, else ``[]``; the features)."""
    layers: list[nn.Module] = [nn.Flatten()] if len(shape) > 1 else []
    features = 1
    for s in shape:
        features *= s
    return layers, features


@dataclass(frozen=True)
class _Dense:
    """How the dense layers of a critic are made (one value per critic)."""

    activation: str
    group_size: int
    constraint: str
    iters: int
    order: int
    bias: bool

    def layer(self, i: int, o: int) -> nn.Module:
        if self.constraint == "bjorck":
            return BjorckLinear(i, o, bias=self.bias, iters=self.iters, order=self.order)
        if self.constraint == "none":
            return nn.Linear(i, o, bias=self.bias)
        raise InputError(f"unknown constraint {self.constraint!r}: choose bjorck or none")

    def tail(
        self, layers: list[nn.Module], features: int, hidden: Sequence[int], out_features: int
    ) -> nn.Sequential:
        """``layers``, then per width of ``hidden`` a dense layer and the activation,
        then a dense layer to ``out_features``."""
        for width in hidden:
            layers.append(self.layer(features, width))
            layers.append(_activation(self.activation, self.group_size, width))
            features = width
        layers.append(self.layer(features, out_features))
        return nn.Sequential(*layers)


def dense_critic(
    input_shape: int | Sequence[int],
    hidden: Sequence[int] = (256, 256, 256),
    out_features: int = 1,
    *,
    activation: Activation = "groupsort",
    group_size: int = 2,
    constraint: Constraint = "bjorck",
    iters: int = 20,
    order: int = 1,
    bias: bool = True,
) -> nn.Sequential:
    """A dense critic ``R^input_shape -> R^out_features``: Björck layers + GroupSort.

    Inputs with several dimensions (images) are flattened first (a permutation:
    Lipschitz constant 1). Hidden widths must be divisible by ``group_size``.
    """
    layers, features = _flat_start(_shape(input_shape))
    dense = _Dense(activation, group_size, constraint, iters, order, bias)
    return dense.tail(layers, features, hidden, out_features)


def _check_stride(stride: int, h: int, w: int, what: str = "stride-2 convolution") -> None:
    if stride not in (1, 2):
        raise InputError(f"conv stride must be 1 or 2, got {stride}")
    if stride == 2 and (h % 2 or w % 2):
        raise InputError(f"{what} needs an even size, got {h}x{w}")


def _conv(
    c: int,
    out_channels: int,
    kernel: int,
    stride: int,
    constraint: str,
    padding_mode: str,
    dense: _Dense,
) -> nn.Module:
    """One convolution of :func:`conv_critic`: BCOP (``"bcop"``) or plain (``"none"``)."""
    if constraint == "bcop":
        return BCOPConv2d(
            c,
            out_channels,
            kernel,
            stride=stride,
            padding_mode=padding_mode,
            bias=dense.bias,
            iters=dense.iters,
            order=dense.order,
        )
    if constraint == "none":
        return nn.Conv2d(
            c,
            out_channels,
            kernel,
            stride=stride,
            padding=(kernel - 1) // 2,
            padding_mode=padding_mode,
            bias=dense.bias,
        )
    raise InputError(f"unknown constraint {constraint!r}: choose bcop or none")


def conv_critic(
    input_shape: Sequence[int] = (1, 28, 28),
    channels: Sequence[tuple[int, int, int]] = ((16, 4, 2), (32, 4, 2)),
    hidden: Sequence[int] = (100,),
    out_features: int = 1,
    *,
    activation: Activation = "groupsort",
    group_size: int = 2,
    constraint: Literal["bcop", "none"] = "bcop",
    padding_mode: Literal["circular", "zeros"] = "circular",
    iters: int = 20,
    order: int = 1,
    bias: bool = True,
) -> nn.Sequential:
    """A convolutional critic: BCOP convolutions, GroupSort, then a dense Björck tail.

    Args:
        input_shape: ``(C, H, W)``.
        channels: one ``(out_channels, kernel_size, stride)`` per convolution; stride 2
            halves the spatial size (invertible downsampling; the size must be even).
        hidden: widths of the dense layers after flattening.
        constraint: ``"bcop"`` (orthogonal) or ``"none"`` (plain ``nn.Conv2d`` /
            ``nn.Linear`` with the same shapes, for the unconstrained baseline).
    """
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise InputError(f"conv_critic needs input_shape (C, H, W), got {shape}")
    c, h, w = shape
    dense_constraint = "bjorck" if constraint == "bcop" else "none"
    dense = _Dense(activation, group_size, dense_constraint, iters, order, bias)
    layers: list[nn.Module] = []
    for out_channels, kernel, stride in channels:
        _check_stride(stride, h, w)
        conv = _conv(c, out_channels, kernel, stride, constraint, padding_mode, dense)
        layers += [conv, _activation(activation, group_size, out_channels)]
        c, h, w = out_channels, h // stride, w // stride
    layers.append(nn.Flatten())
    return dense.tail(layers, c * h * w, hidden, out_features)


@dataclass
class _FamilyStack:
    """The layers of a :func:`family_critic` network, appended in order."""

    family: str
    activation: str
    group_size: int
    padding_mode: str
    bias: bool
    layers: list[nn.Module] = field(default_factory=list)

    def odd(self, kernel: int) -> None:
        if kernel % 2 == 0:
            raise InputError(f"{self.family} networks need odd kernels, got {kernel}")

    def act(self, width: int) -> None:
        """The activation after an AOL layer (``"aol"`` networks only)."""
        if self.family == "aol":
            self.layers.append(_activation(self.activation, self.group_size, width))

    def aol_conv(self, i: int, o: int, k: int) -> None:
        self.odd(k)
        conv = AOLConv2d(i, o, k, padding=k // 2, padding_mode=self.padding_mode, bias=self.bias)
        self.layers.append(_tight_start_(conv))
        self.act(o)

    def conv(self, chw: tuple[int, int, int], entry: tuple[int, int, int]) -> tuple[int, int, int]:
        """One ``(out_channels, kernel, stride)`` entry; returns the new ``(C, H, W)``."""
        (c, h, w), (out_channels, kernel, stride) = chw, entry
        _check_stride(stride, h, w, "downsampling")
        if stride == 2:
            self.layers.append(nn.PixelUnshuffle(2))
            c, h, w = 4 * c, h // 2, w // 2
        if out_channels != c:
            self.aol_conv(c, out_channels, kernel)
            c = out_channels
        elif stride == 1:
            self.odd(kernel)
            if self.family == "aol":
                self.aol_conv(c, c, kernel)
            elif self.family == "cpl":
                self.layers.append(
                    CPLConv2d(
                        c, kernel, input_size=(h, w), padding_mode=self.padding_mode, bias=self.bias
                    )
                )
            else:
                self.layers.append(
                    SLLConv2d(c, kernel, padding_mode=self.padding_mode, bias=self.bias)
                )
        return c, h, w

    def dense(self, features: int, width: int) -> int:
        """One entry of ``hidden``; returns the new width."""
        if width != features or self.family == "aol":
            self.layers.append(_tight_start_(AOLLinear(features, width, bias=self.bias)))
            self.act(width)
            return width
        if self.family == "cpl":
            self.layers.append(CPLLinear(features, bias=self.bias))
        else:
            self.layers.append(SLLLinear(features, bias=self.bias))
        return features


def family_critic(
    input_shape: Sequence[int] = (1, 28, 28),
    channels: Sequence[tuple[int, int, int]] = ARCHS["sll-small"].channels,
    hidden: Sequence[int] = ARCHS["sll-small"].hidden,
    out_features: int = 1,
    *,
    family: Literal["aol", "cpl", "sll"] = "sll",
    activation: Activation = "maxmin",
    group_size: int = 2,
    padding_mode: Literal["zeros", "circular"] = "zeros",
    iters: int = 20,
    order: int = 1,
    bias: bool = True,
) -> nn.Sequential:
    """A convolutional critic from one layer family, read as :class:`wassnet.names.ArchSpec`
    says: per ``(out_channels, kernel, stride)``, stride 2 = ``nn.PixelUnshuffle(2)`` then
    (if the channels differ) an :class:`~wassnet.nn.AOLConv2d`; stride 1 with new
    channels = an AOL convolution; stride 1 at the same channels = one family layer
    (:class:`~wassnet.nn.AOLConv2d` + activation, :class:`~wassnet.nn.CPLConv2d` or
    :class:`~wassnet.nn.SLLConv2d`, kernel ``k``, ``k // 2`` padding). Then flatten and
    ``hidden`` likewise (new width = :class:`~wassnet.nn.AOLLinear`, same width = one
    family layer), and a :class:`~wassnet.nn.BjorckLinear` (``iters``, ``order``) to
    ``out_features``.

    Every layer is 1-Lipschitz in l2 for any weights (CPL: with an exact norm estimate;
    see :func:`~wassnet.critics.refine_norm_estimates_`); the certificate is computed
    from the weights. The residual layers (CPL, SLL) carry their own ReLU; ``activation``
    (default MaxMin) follows the AOL layers of an ``"aol"`` network only (the
    transitions of CPL and SLL networks are linear).
    """
    if family not in FAMILIES:
        raise InputError(f"unknown layer family {family!r}: choose one of {', '.join(FAMILIES)}")
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise InputError(f"a {family} network needs input_shape (C, H, W), got {shape}")
    stack = _FamilyStack(family, activation, group_size, padding_mode, bias)
    chw = (shape[0], shape[1], shape[2])
    for entry in channels:
        chw = stack.conv(chw, entry)
    stack.layers.append(nn.Flatten())
    features = math.prod(chw)
    for width in hidden:
        features = stack.dense(features, width)
    last = BjorckLinear(features, out_features, bias=bias, iters=iters, order=order)
    return refine_norm_estimates_(nn.Sequential(*stack.layers, last))


@torch.no_grad()
def _tight_start_(layer: nn.Module) -> nn.Module:
    """Start a narrowing AOL layer (``out < in``) at norm 1: raw weight ``W_ji = 1`` where
    ``i = j (mod out)`` (the center tap of a kernel), else 0.

    AOL's rescaling is exact (norm 1) when the columns of ``W`` are orthogonal, which
    ``out < in`` columns of a random orthogonal ``W`` are not (a 1568 -> 256 layer would
    start at norm 0.29); here each output is the normalized sum of its ``in / out``
    inputs (rows with disjoint supports: orthonormal after the rescaling). Layers with
    ``out >= in`` keep AOL's orthogonal start.
    """
    raw = layer.parametrizations.weight.original
    out, inp = raw.shape[:2]
    if out >= inp:
        return layer
    tiled = (torch.arange(inp)[None, :] % out == torch.arange(out)[:, None]).to(raw.dtype)
    raw.zero_()
    if raw.dim() == 2:
        raw.copy_(tiled)
    else:
        kh, kw = raw.shape[-2:]
        raw[:, :, kh // 2, kw // 2] = tiled
    return layer


def linf_dist_critic(
    input_shape: int | Sequence[int],
    hidden: Sequence[int] = ARCHS["linf-dist"].hidden,
    out_features: int = 1,
    *,
    bias: bool = True,
) -> nn.Sequential:
    """An l-inf-distance network (Zhang et al. 2021): flatten, then per width of ``hidden``
    a :class:`~wassnet.nn.LinfDistLinear` and a :class:`~wassnet.nn.MeanShift`, then a
    negated :class:`~wassnet.nn.LinfDistLinear` to ``out_features`` (the outputs are
    ``-||x - w_j||_inf - b_j``). 1-Lipschitz in l-inf at ``p = inf`` (the layers start
    there; training relaxes ``p``: :func:`wassnet.nn.set_relaxation_p_`); the
    certificate is computed from the layers as they are.
    """
    from wassnet.nn.linf import LinfDistLinear, MeanShift

    layers, features = _flat_start(_shape(input_shape))
    for width in hidden:
        layers += [LinfDistLinear(features, width, bias=bias), MeanShift(width)]
        features = width
    layers.append(LinfDistLinear(features, out_features, bias=bias, negate=True))
    return nn.Sequential(*layers)


def linear_critic(dim: int, norm: float | str | Norm = 2) -> nn.Sequential:
    """``x -> <w, x>`` on ``R^dim``: a :class:`~wassnet.nn.BjorckLinear` row (l2: unit
    norm for any weight) or a plain ``nn.Linear`` without bias (other norms: its
    certified bound is the weight's dual norm; set it with a dual-norm-1 ``w``).
    ``norm``: any spelling :func:`wassnet.norms.by_p` reads, or a :class:`Norm`."""
    if by_p(norm).is_euclidean:
        return nn.Sequential(BjorckLinear(dim, 1))
    return nn.Sequential(nn.Linear(dim, 1, bias=False))


def radial_critic(dim: int, norm: float | str | Norm = 2) -> nn.Sequential:
    """``x -> s |x - c|_p + t`` on ``R^dim``: :class:`~wassnet.nn.Translate` (the center),
    :class:`~wassnet.nn.NormPool` (the lp norm ``norm``, 1-Lipschitz in lp) and a 1 x 1
    :class:`~wassnet.nn.BjorckLinear` (``s = +-1``, a bias ``t``)."""
    p = by_p(norm).p
    return nn.Sequential(Translate(dim), NormPool(dim, p), BjorckLinear(1, 1, bias=True))
