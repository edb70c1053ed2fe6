"""One factory for the critics used by all three jobs (W1, WGAN, classification).

Every critic is a plain ``nn.Sequential`` of wassnet layers, so
:func:`wassnet.nn.lipschitz_bound` can certify it and :func:`wassnet.nn.export` can
freeze it. With the default constraints each layer has Lipschitz constant at most
1 (up to rounding), hence so has the critic; the certified value is always computed
from the weights, never assumed.

* :func:`dense_critic`: Björck-orthonormal dense layers with GroupSort (Anil et al.).
* :func:`conv_critic`: BCOP convolutions (stride 2 by invertible downsampling),
  then Björck dense layers (Li et al.).
* :func:`make_critic`: the named presets (``"dense"``, ``"conv-small"``,
  ``"conv-large"``) with keyword overrides.

``constraint="none"`` builds the same shapes from unconstrained ``nn.Linear`` /
``nn.Conv2d``: the baseline for WGAN-GP, whose Lipschitz constant is not controlled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from wassnet.errors import InputError
from wassnet.names import ARCHS, CONSTRAINTS
from wassnet.nn import BCOPConv2d, BjorckLinear, FullSort, GroupSort

__all__ = ["PRESETS", "conv_critic", "dense_critic", "make_critic"]

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


def _dense(i: int, o: int, constraint: str, iters: int, order: int, bias: bool) -> nn.Module:
    if constraint == "bjorck":
        return BjorckLinear(i, o, bias=bias, iters=iters, order=order)
    if constraint == "none":
        return nn.Linear(i, o, bias=bias)
    raise InputError(f"unknown constraint {constraint!r}: choose bjorck or none")


def _dense_tail(
    layers: list[nn.Module],
    features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str,
    group_size: int,
    constraint: str,
    iters: int,
    order: int,
    bias: bool,
) -> nn.Sequential:
    for width in hidden:
        layers.append(_dense(features, width, constraint, iters, order, bias))
        layers.append(_activation(activation, group_size, width))
        features = width
    layers.append(_dense(features, out_features, constraint, iters, order, bias))
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
    shape = _shape(input_shape)
    layers: list[nn.Module] = [nn.Flatten()] if len(shape) > 1 else []
    features = 1
    for s in shape:
        features *= s
    return _dense_tail(
        layers,
        features,
        hidden,
        out_features,
        activation,
        group_size,
        constraint,
        iters,
        order,
        bias,
    )


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
    layers: list[nn.Module] = []
    for out_channels, kernel, stride in channels:
        if stride not in (1, 2):
            raise InputError(f"conv stride must be 1 or 2, got {stride}")
        if stride == 2 and (h % 2 or w % 2):
            raise InputError(f"stride-2 convolution needs an even size, got {h}x{w}")
        if constraint == "bcop":
            conv: nn.Module = BCOPConv2d(
                c,
                out_channels,
                kernel,
                stride=stride,
                padding_mode=padding_mode,
                bias=bias,
                iters=iters,
                order=order,
            )
        elif constraint == "none":
            conv = nn.Conv2d(
                c,
                out_channels,
                kernel,
                stride=stride,
                padding=(kernel - 1) // 2,
                padding_mode=padding_mode,
                bias=bias,
            )
        else:
            raise InputError(f"unknown constraint {constraint!r}: choose bcop or none")
        layers += [conv, _activation(activation, group_size, out_channels)]
        c, h, w = out_channels, h // stride, w // stride
    layers.append(nn.Flatten())
    dense_constraint = "bjorck" if constraint == "bcop" else "none"
    return _dense_tail(
        layers,
        c * h * w,
        hidden,
        out_features,
        activation,
        group_size,
        dense_constraint,
        iters,
        order,
        bias,
    )


#: :data:`wassnet.names.ARCHS` as builder keyword arguments (one source of truth).
PRESETS: dict[str, dict] = {
    name: {"builder": dense_critic, "hidden": spec.hidden}
    if spec.kind == "dense"
    else {"builder": conv_critic, "channels": spec.channels, "hidden": spec.hidden}
    for name, spec in ARCHS.items()
}


def make_critic(
    arch: str,
    input_shape: int | Sequence[int],
    out_features: int = 1,
    *,
    constraint: str = "orthogonal",
    width: int | None = None,
    **overrides,
) -> nn.Sequential:
    """Build the architecture ``arch`` (see :data:`wassnet.names.ARCHS`).

    Args:
        constraint: ``"orthogonal"`` (Björck / BCOP layers with GroupSort: 1-Lipschitz
            by construction), ``"projection"`` (plain ``nn.Linear`` / ``nn.Conv2d`` with
            zero padding and GroupSort, to be kept Lipschitz by
            :func:`wassnet.nn.projection.constrain` after every optimizer step: the
            returned network is not constrained until then) or ``"none"`` (plain layers
            with zero padding and ReLU, same shapes: the unconstrained WGAN-GP baseline).
        width: if given, every hidden dense width of the preset becomes ``width``.
        overrides: keyword arguments for the builder (``iters``, ``activation``,
            ``group_size``, ``hidden``, ...).

    Example: ``make_critic("conv-small", (1, 28, 28), out_features=10)``.
    """
    if arch not in PRESETS:
        raise InputError(f"unknown architecture {arch!r}: choose one of {', '.join(PRESETS)}")
    if constraint not in CONSTRAINTS:
        raise InputError(
            f"unknown constraint {constraint!r}: choose one of {', '.join(CONSTRAINTS)}"
        )
    options = dict(PRESETS[arch])
    builder = options.pop("builder")
    if width is not None:
        options["hidden"] = (width,) * len(options["hidden"])
    if constraint in ("none", "projection"):
        activation = "relu" if constraint == "none" else "groupsort"
        options.update(activation=activation, constraint="none")
        if builder is conv_critic:
            options["padding_mode"] = "zeros"
        overrides.pop("iters", None)  # plain layers have no iterations
    options.update(overrides)
    return builder(input_shape, out_features=out_features, **options)
