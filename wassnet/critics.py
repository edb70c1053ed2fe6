"""One factory for the critics used by all three jobs (W1, WGAN, classification).

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
* :func:`make_critic`: the named presets (``"dense"``, ``"conv-small"``,
  ``"conv-large"``, ``"aol-small"``, ``"cpl-small"``, ``"sll-small"``) with keyword
  overrides.
* :func:`refine_norm_estimates_`: more power steps for the CPL layers of a network
  (their step size comes from an estimate of ``||W||_2``; the certificate never trusts
  it, but a converged estimate certifies 1); :func:`track_norm_estimates` keeps them
  exact during training (an optimizer hook).

``constraint="none"`` builds the same shapes from unconstrained ``nn.Linear`` /
``nn.Conv2d``: the baseline for WGAN-GP, whose Lipschitz constant is not controlled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from wassnet.errors import InputError
from wassnet.names import ARCHS, CONSTRAINTS, FAMILIES
from wassnet.nn import (
    AOLConv2d,
    AOLLinear,
    BCOPConv2d,
    BjorckLinear,
    CPLConv2d,
    CPLLinear,
    FullSort,
    GroupSort,
    SLLConv2d,
    SLLLinear,
)

__all__ = [
    "PRESETS",
    "conv_critic",
    "dense_critic",
    "family_critic",
    "linf_dist_critic",
    "make_critic",
    "refine_norm_estimates_",
    "track_norm_estimates",
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
    see :func:`refine_norm_estimates_`); the certificate is computed from the weights.
    The residual layers (CPL, SLL) carry their own ReLU; ``activation`` (default MaxMin)
    follows the AOL layers of an ``"aol"`` network only (the transitions of CPL and SLL
    networks are linear).
    """
    if family not in FAMILIES:
        raise InputError(f"unknown layer family {family!r}: choose one of {', '.join(FAMILIES)}")
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise InputError(f"a {family} network needs input_shape (C, H, W), got {shape}")
    c, h, w = shape
    act = family == "aol"
    layers: list[nn.Module] = []

    def aol_conv(i: int, o: int, k: int) -> None:
        if k % 2 == 0:
            raise InputError(f"{family} networks need odd kernels, got {k}")
        conv = AOLConv2d(i, o, k, padding=k // 2, padding_mode=padding_mode, bias=bias)
        layers.append(_tight_start_(conv))
        if act:
            layers.append(_activation(activation, group_size, o))

    for out_channels, kernel, stride in channels:
        if stride not in (1, 2):
            raise InputError(f"conv stride must be 1 or 2, got {stride}")
        if stride == 2:
            if h % 2 or w % 2:
                raise InputError(f"downsampling needs an even size, got {h}x{w}")
            layers.append(nn.PixelUnshuffle(2))
            c, h, w = 4 * c, h // 2, w // 2
        if out_channels != c:
            aol_conv(c, out_channels, kernel)
            c = out_channels
        elif stride == 1:
            if kernel % 2 == 0:
                raise InputError(f"{family} networks need odd kernels, got {kernel}")
            if family == "aol":
                aol_conv(c, c, kernel)
            elif family == "cpl":
                layers.append(
                    CPLConv2d(c, kernel, input_size=(h, w), padding_mode=padding_mode, bias=bias)
                )
            else:
                layers.append(SLLConv2d(c, kernel, padding_mode=padding_mode, bias=bias))
    layers.append(nn.Flatten())
    features = c * h * w
    for width in hidden:
        if width != features or family == "aol":
            layers.append(_tight_start_(AOLLinear(features, width, bias=bias)))
            if act:
                layers.append(_activation(activation, group_size, width))
            features = width
        elif family == "cpl":
            layers.append(CPLLinear(features, bias=bias))
        else:
            layers.append(SLLLinear(features, bias=bias))
    layers.append(BjorckLinear(features, out_features, bias=bias, iters=iters, order=order))
    return refine_norm_estimates_(nn.Sequential(*layers))


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


@torch.no_grad()
def _top_right_singular_vector(module: nn.Module) -> torch.Tensor:
    """A unit top right singular vector of the operator a CPL layer's power iteration
    runs on (``W``, or the circular convolution on the buffer's grid), computed exactly
    (float64 SVD; for a convolution, at the frequency of its largest singular value)."""
    weight = module.weight.detach().to("cpu", torch.float64)
    u = module.u
    if weight.dim() == 2:
        top = torch.linalg.svd(weight, full_matrices=False).Vh[0]
    else:
        gh, gw = u.shape[-2:]
        # symbol[i, j] = sum_t K_t exp(-i w.t): the cross-correlation maps the plane wave
        # v exp(-i w.x) to exp(-i w.(x - pad)) symbol v, so its gain is the symbol's.
        symbol = torch.fft.fft2(weight, s=(gh, gw)).permute(2, 3, 0, 1)
        i, j = divmod(int(torch.linalg.matrix_norm(symbol, ord=2).argmax()), gw)
        v = torch.linalg.svd(symbol[i, j]).Vh[0].conj()
        y = torch.arange(gh, dtype=torch.float64)[:, None] * (i / gh)
        x = torch.arange(gw, dtype=torch.float64)[None, :] * (j / gw)
        wave = torch.exp(-2j * torch.pi * (y + x))
        z = v[:, None, None] * wave  # [channels, gh, gw]
        top = z.real if float(z.real.norm()) >= float(z.imag.norm()) else z.imag
        top = top[None]
    top = top / torch.linalg.vector_norm(top)
    return top.to(u.dtype).reshape(u.shape)


@torch.no_grad()
def refine_norm_estimates_(model: nn.Module, iterations: int = 10) -> nn.Module:
    """Set the power-iteration buffer of every CPL layer of ``model`` to an exact top
    singular vector of its weight, then run ``iterations`` power steps (in place).

    A CPL layer's step ``2 / sigma_hat^2`` comes from a power-iteration estimate of
    ``||W||_2``, refined once per training step; with Xavier weights the top singular
    values are close and power iteration alone converges slowly (a 16-channel layer
    still certifies 1.00008 after 1000 steps). After this call the estimate is the norm
    up to float32 rounding, so the certified bound (which uses the true norm) is 1 up to
    rounding. :func:`family_critic` calls it on the layers it builds and
    :func:`wassnet.certify.train_classifier` at the end of training. Layers of other
    types are left alone. Returns ``model``.
    """
    for module in model.modules():
        if isinstance(module, (CPLLinear, CPLConv2d)):
            module.u.copy_(_top_right_singular_vector(module))
            module.refine_norm_estimate_(iterations)
    return model


def track_norm_estimates(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Keep the CPL layers of ``model`` at their exact norm while ``optimizer`` trains it:
    after every step, :func:`refine_norm_estimates_` with no extra power step.

    The paper's one power step per training step lags behind the weights (a dense CPL
    layer of 256 trained with Adam at 1e-3 certified 1.5 after 15 steps: its step size
    was too large, and training used that); the exact reset costs about 40 ms per step
    for ``cpl-small`` on one CPU thread (the steps themselves about 130 ms at batch
    256) and keeps the certified bound within 1e-5 of 1. Returns the hook's handle, or
    ``None`` when ``model`` has no CPL layer.
    """
    if not any(isinstance(m, (CPLLinear, CPLConv2d)) for m in model.modules()):
        return None
    return optimizer.register_step_post_hook(
        lambda _optimizer, _args, _kwargs: refine_norm_estimates_(model, 0)
    )


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

    shape = _shape(input_shape)
    layers: list[nn.Module] = [nn.Flatten()] if len(shape) > 1 else []
    features = 1
    for s in shape:
        features *= s
    for width in hidden:
        layers += [LinfDistLinear(features, width, bias=bias), MeanShift(width)]
        features = width
    layers.append(LinfDistLinear(features, out_features, bias=bias, negate=True))
    return nn.Sequential(*layers)


def _preset(spec) -> dict:
    if spec.family == "linf-dist":
        return {"builder": linf_dist_critic, "hidden": spec.hidden}
    if spec.family is not None:
        return {
            "builder": family_critic,
            "family": spec.family,
            "channels": spec.channels,
            "hidden": spec.hidden,
        }
    if spec.kind == "dense":
        return {"builder": dense_critic, "hidden": spec.hidden}
    return {"builder": conv_critic, "channels": spec.channels, "hidden": spec.hidden}


#: :data:`wassnet.names.ARCHS` as builder keyword arguments (one source of truth).
PRESETS: dict[str, dict] = {name: _preset(spec) for name, spec in ARCHS.items()}


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
        constraint: ``"orthogonal"`` (Björck / BCOP layers with GroupSort, or the AOL /
            CPL / SLL layers of a family preset: 1-Lipschitz by construction; the only
            constraint a family preset takes), ``"projection"`` (plain ``nn.Linear`` /
            ``nn.Conv2d`` with zero padding and GroupSort, to be kept Lipschitz by
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
    if builder is linf_dist_critic:
        if constraint != "orthogonal":
            raise InputError(
                f"arch {arch!r} is built from l-inf-distance neurons, 1-Lipschitz in l-inf by "
                f"construction: it takes constraint 'orthogonal' (the default), not {constraint!r}"
            )
        overrides.pop("iters", None)  # no Björck layers
    if builder is family_critic and constraint != "orthogonal":
        raise InputError(
            f"arch {arch!r} is built from {options['family'].upper()} layers, 1-Lipschitz by "
            f"construction: it takes constraint 'orthogonal' (the default), not {constraint!r}"
        )
    if constraint in ("none", "projection"):
        activation = "relu" if constraint == "none" else "groupsort"
        options.update(activation=activation, constraint="none")
        if builder is conv_critic:
            options["padding_mode"] = "zeros"
        overrides.pop("iters", None)  # plain layers have no iterations
    options.update(overrides)
    return builder(input_shape, out_features=out_features, **options)
