r"""Certified upper bounds on the L2 Lipschitz constant of a network.

:func:`lipschitz_bound` walks a network made of ``nn.Sequential`` containers and
layers it knows, computes a bound for each layer **from its weights as they are
now**, and multiplies them (the Lipschitz constant of a composition is at most the
product). Per layer:

* ``nn.Linear`` (Björck or not): the largest singular value, by a float64 SVD.
* ``nn.Conv2d`` with circular padding that keeps the spatial size, stride 1: the
  exact operator norm on the given input size, from the singular values of the
  kernel's 2-D DFT at every frequency of the ``H x W`` grid (Sedghi, Gupta & Long,
  ICLR 2019).
* ``nn.Conv2d`` with zero padding (any padding): the zero-padded convolution is a
  crop of the circular convolution on the padded grid ``(H + pad_h) x (W + pad_w)``
  applied to the zero-extended input; both the crop and the extension have norm 1,
  so the exact norm of that circular convolution is a proven **upper bound**.
* Strides: a stride-``s`` convolution is rewritten as a stride-1 convolution over
  the ``s x s`` polyphase components of its input (a permutation), so strided
  circular convolutions keep an exact norm when ``s`` divides the input size.
* GroupSort / MaxMin / FullSort, pixel (un)shuffle, flatten, identity: exactly 1 (a
  permutation); ReLU, Tanh: 1; LeakyReLU: ``max(1, |slope|)``; Sigmoid: 1/4.

A layer it does not know raises :class:`LipschitzBoundError` instead of being
assumed 1-Lipschitz. A custom container with its own ``forward`` is not walked for
the same reason (its forward may add skip connections). Register rules for new
layers with :func:`register_lipschitz_rule`.

Rounding: bounds are computed in float64; each factor is multiplied by
``1 + ROUNDING_MARGIN`` to cover the float64 rounding of the SVD/FFT computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from wassnet.nn.activations import GroupSort
from wassnet.nn.bcop import BCOPConv2d

__all__ = [
    "ROUNDING_MARGIN",
    "LayerBound",
    "LipschitzBoundError",
    "LipschitzCertificate",
    "conv2d_operator_norm",
    "lipschitz_bound",
    "power_iteration_norm",
    "register_lipschitz_rule",
]

ROUNDING_MARGIN = 1e-9
Shape = tuple[int, ...]
Rule = Callable[[nn.Module, Shape], tuple[float, str]]


class LipschitzBoundError(TypeError):
    """Raised for a layer whose Lipschitz constant wassnet cannot certify."""


@dataclass(frozen=True)
class LayerBound:
    """The certified bound of one layer, with how it was obtained."""

    name: str
    layer: str
    input_shape: Shape
    output_shape: Shape
    bound: float
    method: str


@dataclass(frozen=True)
class LipschitzCertificate:
    """A certified upper bound on the L2 Lipschitz constant, with its per-layer breakdown.

    ``bound`` is the product of the per-layer bounds. ``exact`` is True when every
    factor is the layer's exact Lipschitz constant (the product can still exceed the
    network's constant: composition is only sub-multiplicative).
    """

    bound: float
    input_shape: Shape
    layers: list[LayerBound] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(not layer.method.startswith("upper") for layer in self.layers)

    def __float__(self) -> float:
        return self.bound

    def to_dict(self) -> dict:
        return {
            "bound": self.bound,
            "input_shape": list(self.input_shape),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def summary(self) -> str:
        """A readable table of the breakdown."""
        lines = [f"certified L2 Lipschitz bound: {self.bound:.8f} (input {self.input_shape})"]
        for layer in self.layers:
            lines.append(f"  {layer.name:<24} {layer.layer:<14} {layer.bound:.8f}  {layer.method}")
        return "\n".join(lines)


_RULES: dict[type, Rule] = {}


def register_lipschitz_rule(cls: type, rule: Rule) -> None:
    """Teach :func:`lipschitz_bound` a layer type.

    ``rule(module, input_shape)`` returns ``(bound, method)``, where ``bound`` must be a
    proven upper bound on the module's L2 Lipschitz constant for inputs of
    ``input_shape`` (no batch dimension) and ``method`` says how it was obtained
    (start it with ``"upper"`` when it is not the exact constant). Subclasses of
    ``cls`` use the rule too unless they have their own.
    """
    _RULES[cls] = rule


def _rule_for(module: nn.Module) -> Rule | None:
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def _margin(value: float) -> float:
    return value * (1.0 + ROUNDING_MARGIN)


def _linear_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    weight = module.weight.detach().to("cpu", torch.float64)
    return _margin(float(torch.linalg.svdvals(weight)[0])), "exact: SVD"


def _fold(kernel: torch.Tensor, grid: Shape) -> torch.Tensor:
    """Wrap a ``[o, i, kh, kw]`` kernel onto a periodic ``grid`` (sums aliased taps)."""
    o, i, kh, kw = kernel.shape
    gh, gw = grid
    rows = torch.arange(kh) % gh
    cols = torch.arange(kw) % gw
    folded = kernel.new_zeros(o, i, gh, kw).index_add_(2, rows, kernel)
    return folded.new_zeros(o, i, gh, gw).index_add_(3, cols, folded)


def conv2d_operator_norm(kernel: torch.Tensor, grid: Shape, chunk: int = 2**22) -> float:
    """Exact operator norm of the circular (periodic) convolution by ``kernel`` on ``grid``.

    The circular convolution is block-diagonalized by the 2-D DFT: its singular values
    are those of the ``[out, in]`` matrices ``K_hat(u, v)`` over all frequencies of the
    grid (Sedghi et al. 2019). Padding offsets only change phases, not singular values.
    Computed in float64, in chunks of frequencies to bound memory. Conjugate
    symmetry of a real kernel halves the work (``rfft2``).
    """
    k = _fold(kernel.detach().to("cpu", torch.float64), grid)
    spectrum = torch.fft.rfft2(k).permute(2, 3, 0, 1).reshape(-1, k.shape[0], k.shape[1])
    per_chunk = max(1, chunk // max(1, k.shape[0] * k.shape[1]))
    best = 0.0
    for start in range(0, spectrum.shape[0], per_chunk):
        block = spectrum[start : start + per_chunk]
        best = max(best, float(torch.linalg.matrix_norm(block, ord=2).max()))
    return best


def _dilated(kernel: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
    dh, dw = dilation
    if dh == 1 and dw == 1:
        return kernel
    o, i, kh, kw = kernel.shape
    out = kernel.new_zeros(o, i, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out[:, :, ::dh, ::dw] = kernel
    return out


def _polyphase(kernel: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Rewrite a stride-``s`` kernel as a stride-1 kernel on the polyphase components.

    ``y[i] = sum_a K[a] x[s i + a]`` equals ``sum_r sum_q K[s q + r] x_r[i + q]`` with
    ``x_r[j] = x[s j + r]`` (pixel unshuffle, a permutation), so the strided
    convolution is a stride-1 convolution over ``in * sh * sw`` channels.
    """
    sh, sw = stride
    o, i, kh, kw = kernel.shape
    qh, qw = -(-kh // sh), -(-kw // sw)
    padded = F.pad(kernel, (0, qw * sw - kw, 0, qh * sh - kh))
    return (
        padded.reshape(o, i, qh, sh, qw, sw)
        .permute(0, 1, 3, 5, 2, 4)
        .reshape(o, i * sh * sw, qh, qw)
    )


def _conv2d_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    conv: nn.Conv2d = module  # type: ignore[assignment]
    if len(input_shape) != 3:
        raise LipschitzBoundError(f"Conv2d needs an input shape [C, H, W], got {input_shape}")
    if conv.groups != 1:
        raise LipschitzBoundError("Conv2d with groups != 1 is not supported by lipschitz_bound")
    kernel = _dilated(conv.weight.detach(), tuple(conv.dilation))
    kh, kw = kernel.shape[-2:]
    left, right, top, bottom = conv._reversed_padding_repeated_twice
    _, h, w = input_shape
    sh, sw = conv.stride
    if conv.padding_mode == "circular":
        if top + bottom != kh - 1 or left + right != kw - 1:
            raise LipschitzBoundError(
                "circular Conv2d is certified only when its padding keeps the spatial size "
                f"(total padding kernel-1); got padding {conv.padding} for kernel {(kh, kw)}"
            )
        if h % sh == 0 and w % sw == 0:
            grid, exact = (h // sh, w // sw), "exact: FFT, circular"
        else:  # striding is a crop of the stride-1 circular convolution
            grid, exact, sh, sw = (h, w), "upper: FFT, circular, stride ignored", 1, 1
    elif conv.padding_mode == "zeros":
        # crop of a circular convolution on the zero-extended grid (rounded up to the stride)
        hp, wp = -(-(h + top + bottom) // sh) * sh, -(-(w + left + right) // sw) * sw
        grid, exact = (hp // sh, wp // sw), f"upper: FFT on zero-padded grid {hp}x{wp}"
    else:
        raise LipschitzBoundError(
            f"Conv2d with padding_mode={conv.padding_mode!r} is not certified "
            "(use 'circular' or 'zeros')"
        )
    norm = conv2d_operator_norm(_polyphase(kernel, (sh, sw)), grid)
    if (sh, sw) != (1, 1):
        exact += f", polyphase stride {sh}x{sw}"
    return _margin(norm), exact


def _constant(value: float, method: str) -> Rule:
    return lambda module, shape: (value, method)


def _leaky_relu_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    return max(1.0, abs(module.negative_slope)), "exact: max(1, |slope|)"


def _dropout_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    if module.training and module.p > 0:
        return 1.0 / (1.0 - module.p), "upper: training-mode dropout rescaling"
    return 1.0, "exact: identity in eval mode"


def _bcop_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    bcop: BCOPConv2d = module  # type: ignore[assignment]
    c, h, w = input_shape
    s = bcop.downsample
    bound, method = _conv2d_rule(bcop.conv, (c * s * s, h // s, w // s))
    return bound, method + (" after invertible downsampling" if s > 1 else "")


register_lipschitz_rule(nn.Linear, _linear_rule)
register_lipschitz_rule(nn.Conv2d, _conv2d_rule)
register_lipschitz_rule(BCOPConv2d, _bcop_rule)
register_lipschitz_rule(GroupSort, _constant(1.0, "exact: permutation"))
for _cls in (nn.PixelUnshuffle, nn.PixelShuffle, nn.Flatten, nn.Unflatten, nn.Identity):
    register_lipschitz_rule(_cls, _constant(1.0, "exact: permutation"))
for _cls in (nn.ReLU, nn.Tanh):
    register_lipschitz_rule(_cls, _constant(1.0, "exact: 1-Lipschitz activation"))
register_lipschitz_rule(nn.Sigmoid, _constant(0.25, "exact: max slope 1/4"))
register_lipschitz_rule(nn.LeakyReLU, _leaky_relu_rule)
register_lipschitz_rule(nn.Dropout, _dropout_rule)


def _type_name(module: nn.Module) -> str:
    cls = type(module)
    return cls.__mro__[1].__name__ if parametrize.is_parametrized(module) else cls.__name__


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _walk(module: nn.Module, name: str, shape: Shape, out: list[LayerBound], probe: torch.Tensor):
    """Append the bounds of ``module``'s layers to ``out``; return the output probe."""
    rule = _rule_for(module)
    if rule is None and _is_plain_sequential(module):
        for child_name, child in module.named_children():
            probe = _walk(child, f"{name}.{child_name}" if name else child_name, shape, out, probe)
            shape = tuple(probe.shape[1:])
        return probe
    if rule is None:
        raise LipschitzBoundError(
            f"cannot certify layer {name or '<model>'} of type {type(module).__name__}: "
            "no Lipschitz rule is registered for it (see wassnet.nn.register_lipschitz_rule)"
        )
    bound, method = rule(module, shape)
    if not math.isfinite(bound):
        raise LipschitzBoundError(f"layer {name} has a non-finite bound {bound}")
    result = module(probe)
    out.append(
        LayerBound(
            name or "<model>", _type_name(module), shape, tuple(result.shape[1:]), bound, method
        )
    )
    return result


@torch.no_grad()
def lipschitz_bound(model: nn.Module, input_shape: Sequence[int]) -> LipschitzCertificate:
    """A certified upper bound on the L2 Lipschitz constant of ``model``.

    Args:
        model: an ``nn.Sequential`` (nested freely) of layers with a registered rule,
            or one such layer.
        input_shape: the shape of one input, without the batch dimension (e.g.
            ``(784,)`` or ``(1, 28, 28)``). Convolution bounds depend on it.

    Returns:
        A :class:`LipschitzCertificate`; ``float(cert)`` is the bound. It is computed
        from the current weights (Björck/BCOP parametrizations are evaluated as they
        are), never assumed from the construction.

    Raises:
        LipschitzBoundError: for a layer without a rule, or an unsupported
            configuration (grouped convolutions, reflect padding, ...).
    """
    shape = tuple(int(s) for s in input_shape)
    param = next(model.parameters(), None)
    probe = torch.zeros(
        (1, *shape),
        device=None if param is None else param.device,
        dtype=None if param is None else param.dtype,
    )
    layers: list[LayerBound] = []
    with parametrize.cached():
        _walk(model, "", shape, layers, probe)
    bound = math.prod(layer.bound for layer in layers)
    return LipschitzCertificate(bound=bound, input_shape=shape, layers=layers)


def power_iteration_norm(
    linear_map: Callable[[torch.Tensor], torch.Tensor],
    input_shape: Sequence[int],
    iters: int = 200,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Estimate the operator norm of a **linear** map by power iteration on ``A^T A``.

    ``linear_map`` takes a batch ``[1, *input_shape]`` (e.g. a bias-free conv, or
    ``lambda x: F.conv2d(x, w, padding=...)``). The result is a lower bound on the true
    norm (up to convergence), independent of the FFT/SVD computation, which makes it
    a check of the certified bound: it must never exceed it.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *input_shape), generator=gen, dtype=dtype)
    x /= x.norm()
    norm = 0.0
    for _ in range(iters):
        x = x.detach().requires_grad_(True)
        y = linear_map(x)
        (grad,) = torch.autograd.grad(y, x, grad_outputs=y)  # A^T A x
        norm = float(y.detach().norm())
        x = grad / grad.norm().clamp_min(1e-300)
    return norm
