r"""Residual layers :math:`f(x) = x - W^\top \Lambda\, \mathrm{relu}(W x + b)`: the form of
CPL and SLL (:mod:`wassnet.nn.cpl`, :mod:`wassnet.nn.sll`), its certificate, and the
plain layers they export to.

Notation: ``weight`` is :math:`W`, ``[hidden, features]`` (the layer maps
:math:`\mathbb{R}^{features}` to itself through ``hidden`` units), and
:math:`\Lambda = \mathrm{diag}(r)`, :math:`r \ge 0` over the hidden units, is what
``scales()`` returns (CPL: :math:`r = 2 / \|W\|_2^2` everywhere; SLL:
:math:`r_i = 2 / t_i`). Such a layer is a gradient step :math:`x - \nabla \phi(x)` on
the convex potential :math:`\phi(x) = \sum_i r_i\, \mathrm{relu}(w_i \cdot x + b_i)^2 / 2`.
For convolutions :math:`W` is the stride-1 convolution by a kernel
``[hidden, channels, kh, kw]`` (odd sizes, padding ``k // 2``, zeros or circular) and
:math:`W^\top` its exact adjoint (the flipped, transposed kernel with the same
padding); :math:`r` is per hidden channel.

**Jacobians.** For any :math:`x, y`,
:math:`f(x) - f(y) = (I - W^\top \Lambda D W)(x - y)` with :math:`D = \mathrm{diag}(d)`,
:math:`d_i = (\mathrm{relu}(a_i) - \mathrm{relu}(a'_i)) / (a_i - a'_i) \in [0, 1]`
(:math:`a = Wx + b`, :math:`a' = Wy + b`; :math:`d_i = 0` where they are equal). So
:math:`\mathrm{Lip}_p(f) \le \sup_D \|J_D\|_p` over diagonal :math:`0 \preceq D \preceq I`,
:math:`J_D = I - W^\top \Lambda D W`, a **symmetric** matrix.

**l2 rule.** :math:`W^\top \Lambda D W = (\Lambda^{1/2} W)^\top D (\Lambda^{1/2} W)` lies
between :math:`0` and :math:`(\Lambda^{1/2} W)^\top (\Lambda^{1/2} W)` in the Loewner
order, whose largest eigenvalue is :math:`s^2`, :math:`s = \|\Lambda^{1/2} W\|_2`. The
eigenvalues of :math:`J_D` therefore lie in :math:`[1 - s^2, 1]`:
:math:`\|J_D\|_2 \le \max(1, s^2 - 1)`. The rule bounds :math:`s` from above on the
weights as they are: :math:`\Lambda^{1/2}` with every square root rounded up (scaling
rows up never lowers the norm), the rounding of the scaled product charged as a
perturbation, then :func:`wassnet.nn.spectral_norm_upper` (dense) or the ``nn.Conv2d``
rule of :func:`wassnet.nn.lipschitz_bound` on the given input shape (conv; exact FFT norm
for circular padding, a proven upper bound for zeros). CPL: :math:`s^2 = h \|W\|_2^2`,
which is the rule :math:`\max(1, h \sigma^2 - 1)` with :math:`\sigma \ge \|W\|_2` verified.
SLL: :math:`s^2 = 2 \lambda_{\max}(T^{-1/2} W W^\top T^{-1/2}) \le 2` in exact arithmetic
(:math:`W W^\top \preceq T`, weighted Gershgorin), a fact the rule does not use.

**l1 and l-inf rules.** :math:`J_D` is symmetric, so its l1 and l-inf norms are equal:
the largest row abs sum. With :math:`C = |W|^\top \Lambda |W|` (entrywise abs),
:math:`|(W^\top \Lambda D W)_{jk}| \le C_{jk}` and
:math:`(W^\top \Lambda D W)_{jj} \in [0, C_{jj}]`, so for dense layers
:math:`\|J_D\|_\infty \le \max_j \big(\max(1, C_{jj} - 1) + \sum_{k \ne j} C_{jk}\big)`.
For convolutions the rule is the triangle inequality
:math:`\|J_D\|_\infty \le 1 + \max_j \sum_o A_{oj} r_o v_o`, with :math:`A_{oj}` the abs sum
of the taps of kernel entry :math:`(o, j)` and :math:`v_o = \sum_j A_{oj}` (a row of the
conv operator holds each tap at most once, aliased taps add up). Every sum and product
is rounded up (:mod:`wassnet.rounding`). Both are upper bounds (method ``"upper"``).

**Faithfulness.** The forward pass and the rules read the same attributes:
``weight``, ``bias``, ``padding_mode`` and the ``scales()`` method (CPL's reads its
power-iteration buffer, SLL's its ``log_q``): the certificate follows what the layer
computes now, whatever the construction promised. Not covered: rounding inside the
forward pass itself, and a recomputation of ``scales()`` on another device that differs
in its last bits (:meth:`export` freezes them).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wassnet.errors import InputError
from wassnet.nn.lipschitz import LipschitzBoundError, lipschitz_bound, register_lipschitz_rule
from wassnet.nn.spectral import spectral_norm_upper
from wassnet.rounding import nonneg_sum_factor, product_up, up

__all__ = [
    "ConvexResidualConv2d",
    "ConvexResidualLinear",
    "adjoint_kernel",
    "conv_same",
    "register_residual_rules",
]

Shape = tuple[int, ...]
PADDING_MODES = ("zeros", "circular")
_U = 2.0**-53
_ETA = 2.0**-1074  # the absolute rounding error of a product in the subnormal range, x2


def conv_same(
    x: torch.Tensor, kernel: torch.Tensor, padding_mode: str, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Stride-1 convolution by an odd ``kernel`` padded by ``k // 2`` (the size is kept),
    with zero or circular padding."""
    kh, kw = kernel.shape[-2:]
    ph, pw = kh // 2, kw // 2
    if padding_mode == "circular":
        return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="circular"), kernel, bias)
    if padding_mode == "zeros":
        return F.conv2d(x, kernel, bias, padding=(ph, pw))
    raise InputError("padding_mode must be 'zeros' or 'circular', got " + padding_mode)


def adjoint_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel whose :func:`conv_same` is the exact adjoint of ``conv_same(., kernel)``
    (odd sizes, same padding mode): transposed channels, flipped taps."""
    return kernel.transpose(0, 1).flip(-2, -1)


def _odd_kernel(kernel_size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(pair) != 2 or not all(isinstance(k, int) and k >= 1 and k % 2 == 1 for k in pair):
        raise InputError(f"kernel_size must be odd (one int or a pair), got {kernel_size!r}")
    return pair  # type: ignore[return-value]


class _Residual(nn.Module):
    """``x - W^T diag(r) relu(W x + b)``; subclasses define ``scales()`` (``r``, shape
    ``[hidden]``, nonnegative). Kept free of class annotations: the plain subclasses
    compile with ``torch.jit.script``."""

    __jit_unused_properties__ = ("features", "hidden_features", "channels", "hidden_channels")

    def _set_weights(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = nn.Parameter(weight)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias)

    def scales(self) -> torch.Tensor:
        raise NotImplementedError

    def _frozen(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        with torch.no_grad():
            scale = self.scales().detach().contiguous().clone()
        bias = None if self.bias is None else self.bias.detach().clone()
        return self.weight.detach().clone(), bias, scale


def dense_init(
    name: str,
    features: int,
    hidden_features: int | None,
    bias: bool,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The starting ``(weight [hidden, features], bias)`` of a dense residual layer
    (Xavier-normal weight, zero bias; ``hidden_features`` defaults to ``features``)."""
    hidden = features if hidden_features is None else hidden_features
    if features < 1 or hidden < 1:
        raise InputError(f"{name} needs sizes >= 1, got {features} and {hidden}")
    kw = {"device": device, "dtype": dtype}
    weight = nn.init.xavier_normal_(torch.empty(hidden, features, **kw))
    return weight, (torch.zeros(hidden, **kw) if bias else None)


class _DenseResidual(_Residual):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise InputError(f"a dense weight [hidden, features] is 2-D, got {tuple(weight.shape)}")
        self._set_weights(weight, bias)

    @property
    def features(self) -> int:
        return self.weight.shape[1]

    @property
    def hidden_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(F.linear(x, self.weight, self.bias)) * self.scales()
        return x - z @ self.weight

    def export(self) -> ConvexResidualLinear:
        """A :class:`ConvexResidualLinear` with these weights and the scales as they are
        now (frozen): the same function and the same certified bound."""
        return ConvexResidualLinear(*self._frozen())

    def extra_repr(self) -> str:
        return f"features={self.features}, hidden_features={self.hidden_features}"


class _ConvResidual(_Residual):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, padding_mode: str) -> None:
        super().__init__()
        if weight.dim() != 4:
            raise InputError(f"a conv kernel is 4-D, got shape {tuple(weight.shape)}")
        _odd_kernel(tuple(weight.shape[-2:]))
        if padding_mode not in PADDING_MODES:
            raise InputError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        self._set_weights(weight, bias)
        self.padding_mode = padding_mode

    @property
    def channels(self) -> int:
        return self.weight.shape[1]

    @property
    def hidden_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = conv_same(x, self.weight, self.padding_mode, self.bias)
        z = F.relu(hidden) * self.scales()[:, None, None]
        return x - conv_same(z, adjoint_kernel(self.weight), self.padding_mode)

    def export(self) -> ConvexResidualConv2d:
        """A :class:`ConvexResidualConv2d` with these weights and the scales as they are
        now (frozen): the same function and the same certified bound."""
        return ConvexResidualConv2d(*self._frozen(), padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        kernel = tuple(self.weight.shape[-2:])
        return (
            f"channels={self.channels}, hidden_channels={self.hidden_channels}, "
            f"kernel_size={kernel}, padding_mode={self.padding_mode!r}"
        )


class ConvexResidualLinear(_DenseResidual):
    r"""The plain layer :math:`x - W^\top \mathrm{diag}(r)\, \mathrm{relu}(W x + b)` with a
    fixed ``scale`` :math:`r \ge 0` (a buffer): what :class:`wassnet.nn.CPLLinear` and
    :class:`wassnet.nn.SLLLinear` export to. Its certificate is the rule of the module
    docstring; it is 1-Lipschitz in l2 exactly when :math:`\|\mathrm{diag}(r)^{1/2} W\|_2^2
    \le 2`, which nothing here enforces.

    Args:
        weight: ``[hidden, features]``.
        bias: ``[hidden]`` or ``None``.
        scale: ``[hidden]``, nonnegative (the certificate refuses negative entries).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor
    ) -> None:
        super().__init__(weight, bias)
        self.register_buffer("scale", scale)

    def scales(self) -> torch.Tensor:
        return self.scale


class ConvexResidualConv2d(_ConvResidual):
    r"""The plain convolutional layer
    :math:`x - W^\top \mathrm{diag}(r)\, \mathrm{relu}(W x + b)`, :math:`W` a stride-1
    'same' convolution (odd kernel ``[hidden, channels, kh, kw]``, zeros or circular
    padding), :math:`r \ge 0` a fixed ``scale`` per hidden channel (a buffer): what
    :class:`wassnet.nn.CPLConv2d` and :class:`wassnet.nn.SLLConv2d` export to.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        scale: torch.Tensor,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__(weight, bias, padding_mode)
        self.register_buffer("scale", scale)

    def scales(self) -> torch.Tensor:
        return self.scale


# ----------------------------------------------------------------------------- certificate


def _float64(tensor: torch.Tensor, what: str) -> torch.Tensor:
    if isinstance(tensor, nn.parameter.UninitializedParameter):
        raise LipschitzBoundError("uninitialized lazy layer: run one forward pass first")
    out = tensor.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise LipschitzBoundError(f"the layer's {what} has non-finite entries")
    return out


def _parts(module: _Residual, input_shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and the scales as the forward pass reads them (float64), checked."""
    weight = _float64(module.weight, "weight")
    conv = weight.dim() == 4
    expected = (weight.shape[1], *input_shape[1:]) if conv else (weight.shape[1],)
    if tuple(input_shape) != expected or (conv and len(input_shape) != 3):
        raise LipschitzBoundError(
            f"{type(module).__name__} with weight {tuple(weight.shape)} cannot take inputs of "
            f"shape {tuple(input_shape)}"
        )
    if conv and not (weight.shape[-2] % 2 and weight.shape[-1] % 2):
        raise LipschitzBoundError(f"the kernel {tuple(weight.shape)} must have odd sizes")
    if conv and module.padding_mode not in PADDING_MODES:
        raise LipschitzBoundError(f"unsupported padding_mode {module.padding_mode!r}")
    if module.bias is not None:
        _float64(module.bias, "bias")
    with torch.no_grad():
        scale = _float64(module.scales(), "scales()")
    if scale.shape != (weight.shape[0],) or bool((scale < 0).any()):
        raise LipschitzBoundError(
            f"scales() must be nonnegative, one per hidden unit ({weight.shape[0]}); got "
            f"shape {tuple(scale.shape)}, min {float(scale.min()) if scale.numel() else 0:g}"
        )
    return weight, scale


def _scaled_rows(weight: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, float]:
    r"""``(S, e)``: ``S = fl(up(sqrt(r)) * W)`` over the first dimension, and ``e`` with
    :math:`\|S - \mathrm{diag}(\mathrm{up}(\sqrt r)) W\|_F \le e`. Each product is within
    :math:`u |x| + \eta/2` of its exact value ``x``, and :math:`|x| \le (|S| + \eta/2)/(1-u)`,
    so the error is at most :math:`2u |S| + \eta` entrywise; a computed Frobenius norm is
    within a factor 2 of the exact one."""
    root = torch.from_numpy(np.asarray(up(np.sqrt(scale.numpy())), dtype=np.float64))
    scaled = root.reshape(-1, *([1] * (weight.dim() - 1))) * weight
    largest = float(scaled.abs().max()) if scaled.numel() else 0.0
    # relative to the largest entry, so that no square that matters under- or overflows
    frobenius = largest * float(torch.linalg.vector_norm(scaled / largest)) if largest else 0.0
    error = float(up(4 * _U * frobenius + math.sqrt(scaled.numel() + 1) * _ETA))
    if not math.isfinite(error):
        raise LipschitzBoundError("the scaled weight's norm exceeds the float64 range")
    return scaled, error


def _l2_from(s: float, what: str) -> tuple[float, str]:
    square = float(product_up(s, s))
    bound = max(1.0, float(up(square - 1.0)))
    if not math.isfinite(bound):
        raise LipschitzBoundError("the layer's bound exceeds the float64 range")
    return bound, f"upper (verified): max(1, s^2 - 1), s = {what} <= {s:.9g}"


def _dense_l2_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    weight, scale = _parts(module, input_shape)
    scaled, error = _scaled_rows(weight, scale)
    try:
        s = spectral_norm_upper(scaled, error)
    except (ValueError, ArithmeticError, torch.linalg.LinAlgError) as exc:
        raise LipschitzBoundError(f"cannot bound the scaled weight's norm: {exc}") from None
    return _l2_from(s, "||diag(r)^1/2 W||_2")


def _plain_conv(kernel: torch.Tensor, padding_mode: str) -> nn.Conv2d:
    """An ``nn.Conv2d`` computing ``conv_same(., kernel, padding_mode)`` (float64)."""
    out_channels, in_channels, kh, kw = kernel.shape
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        (kh, kw),
        padding=(kh // 2, kw // 2),
        padding_mode=padding_mode,
        bias=False,
        dtype=torch.float64,
    )
    conv.weight = nn.Parameter(kernel, requires_grad=False)
    return conv


def _conv_l2_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    """As the dense rule; the perturbation of the kernel costs at most
    ``sqrt(taps) * e`` in operator norm (each frequency's symbol is a sum over the taps:
    ``||E_hat|| <= sum_t ||E_t||_F <= sqrt(taps) ||E||_F``; zero padding is a crop of it)."""
    weight, scale = _parts(module, input_shape)
    scaled, error = _scaled_rows(weight, scale)
    norm = lipschitz_bound(_plain_conv(scaled, module.padding_mode), input_shape).bound
    taps = weight.shape[-2] * weight.shape[-1]
    s = float(up(norm + float(product_up(float(up(math.sqrt(taps))), error))))
    return _l2_from(s, "||diag(r)^1/2 W||_2 (conv, this input size)")


def _sum_up(terms: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Upper bounds on the exact sums of nonnegative float64 ``terms`` along ``axis``."""
    axes = (axis,) if isinstance(axis, int) else axis
    count = math.prod(terms.shape[a] for a in axes)
    return up(terms.sum(axis=axis) * nonneg_sum_factor(count))


def _dense_p_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    """``max_j (max(1, C_jj - 1) + sum_{k != j} C_jk)``, ``C = |W|^T diag(r) |W|``: with
    ``v_i = sum_k |W_ik|``, ``sum_{k != j} C_jk = sum_i r_i |W_ij| (v_i - |W_ij|)``."""
    weight, scale = _parts(module, input_shape)
    a = weight.abs().numpy()
    ra = product_up(scale.numpy()[:, None], a)  # >= r_i |W_ij|
    others = up(_sum_up(a, 1)[:, None] - a)  # >= sum_{k != j} |W_ik|
    off = _sum_up(product_up(ra, others), 0)
    diagonal = _sum_up(product_up(ra, a), 0)
    rows = up(np.maximum(1.0, up(diagonal - 1.0)) + off)
    return _finite(float(rows.max(initial=1.0))), (
        "upper (verified): max_j max(1, C_jj - 1) + sum_{k != j} C_jk, C = |W|^T diag(r) |W|"
    )


def _conv_p_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    """``1 + max_j sum_o A_oj r_o v_o`` (see the module docstring)."""
    weight, scale = _parts(module, input_shape)
    taps = _sum_up(weight.abs().numpy(), (2, 3))  # A: [hidden, channels]
    rows = _sum_up(taps, 1)  # v: [hidden]
    terms = product_up(product_up(scale.numpy()[:, None], taps), rows[:, None])
    bound = float(up(1.0 + float(_sum_up(terms, 0).max(initial=0.0))))
    return _finite(bound), "upper (verified): 1 + max row abs sum of |W|^T diag(r) |W|"


def _finite(bound: float) -> float:
    if not math.isfinite(bound):
        raise LipschitzBoundError("the layer's bound exceeds the float64 range")
    return bound


def register_residual_rules(cls: type, conv: bool) -> None:
    """Register the l2, l1 and l-inf rules of the module docstring for ``cls`` (a dense
    or convolutional residual layer computing ``x - W^T diag(scales()) relu(W x + b)``)."""
    register_lipschitz_rule(cls, _conv_l2_rule if conv else _dense_l2_rule, 2)
    for p in (1, math.inf):
        register_lipschitz_rule(cls, _conv_p_rule if conv else _dense_p_rule, p)


register_residual_rules(ConvexResidualLinear, conv=False)
register_residual_rules(ConvexResidualConv2d, conv=True)
