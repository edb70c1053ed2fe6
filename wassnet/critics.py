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

from wassnet.nn import BCOPConv2d, BjorckLinear, FullSort, GroupSort

__all__ = ["PRESETS", "conv_critic", "dense_critic", "make_critic"]

Activation = Literal["groupsort", "maxmin", "fullsort", "relu"]
Constraint = Literal["bjorck", "none"]


def _activation(name: str, group_size: int, width: int) -> nn.Module:
    if name in ("groupsort", "maxmin"):
        size = 2 if name == "maxmin" else group_size
        if width % size:
            raise ValueError(f"layer width {width} is not divisible by the group size {size}")
        return GroupSort(size)
    if name == "fullsort":
        return FullSort()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}: choose groupsort, maxmin, fullsort or relu")


def _shape(input_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(map(int, input_shape))
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive sizes, got {input_shape!r}")
    return shape


def _dense(i: int, o: int, constraint: str, iters: int, order: int, bias: bool) -> nn.Module:
    if constraint == "bjorck":
        return BjorckLinear(i, o, bias=bias, iters=iters, order=order)
    if constraint == "none":
        return nn.Linear(i, o, bias=bias)
    raise ValueError(f"unknown constraint {constraint!r}: choose bjorck or none")


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
        raise ValueError(f"conv_critic needs input_shape (C, H, W), got {shape}")
    c, h, w = shape
    layers: list[nn.Module] = []
    for out_channels, kernel, stride in channels:
        if stride not in (1, 2):
            raise ValueError(f"conv stride must be 1 or 2, got {stride}")
        if stride == 2 and (h % 2 or w % 2):
            raise ValueError(f"stride-2 convolution needs an even size, got {h}x{w}")
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
            raise ValueError(f"unknown constraint {constraint!r}: choose bcop or none")
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


PRESETS: dict[str, dict] = {
    "dense": {"builder": dense_critic, "hidden": (1024, 1024, 1024)},
    "dense-small": {"builder": dense_critic, "hidden": (256, 256, 256)},
    # Li et al. 2019, "small" and "large" convolutional networks.
    "conv-small": {"builder": conv_critic, "channels": ((16, 4, 2), (32, 4, 2)), "hidden": (100,)},
    "conv-large": {
        "builder": conv_critic,
        "channels": ((32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 4, 2)),
        "hidden": (512, 512),
    },
}


def make_critic(
    arch: str, input_shape: int | Sequence[int], out_features: int = 1, **overrides
) -> nn.Sequential:
    """Build a preset critic by name (see :data:`PRESETS`), with keyword overrides.

    Example: ``make_critic("conv-small", (1, 28, 28), out_features=10)``.
    """
    if arch not in PRESETS:
        raise ValueError(f"unknown critic {arch!r}: choose one of {', '.join(PRESETS)}")
    options = dict(PRESETS[arch])
    builder = options.pop("builder")
    options.update(overrides)
    return builder(input_shape, out_features=out_features, **options)
