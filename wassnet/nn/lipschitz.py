r"""Certified upper bounds on the Lipschitz constant of a network, in l2, l1 or l-inf.

:func:`lipschitz_bound` walks a network made of ``nn.Sequential`` containers and
layers it knows, computes a bound for each layer **from its weights as they are
now**, and multiplies them (the Lipschitz constant of a composition is at most the
product). Per layer:

* ``nn.Linear`` (Björck or not): the largest singular value, by a verified float64
  bound (:func:`wassnet.nn.spectral.spectral_norm_upper`: a few ``1e-15`` above the
  exact value, proven, never below it).
* ``nn.Conv2d`` with circular padding that keeps the spatial size, stride 1: the
  exact operator norm on the given input size, from the singular values of the
  kernel's 2-D DFT at every frequency of the ``H x W`` grid (Sedghi, Gupta & Long,
  ICLR 2019). The DFT is summed directly over the kernel's taps, so its rounding
  error has an explicit bound that is charged to each frequency's verified norm.
* ``nn.Conv2d`` with zero padding (any padding): the zero-padded convolution is a
  crop of the circular convolution on the padded grid ``(H + pad_h) x (W + pad_w)``
  applied to the zero-extended input; both the crop and the extension have norm 1,
  so the exact norm of that circular convolution is a proven **upper bound**.
* Strides: a stride-``s`` convolution is rewritten as a stride-1 convolution over
  the ``s x s`` polyphase components of its input (a permutation), so strided
  circular convolutions keep an exact norm when ``s`` divides the input size.
* GroupSort / MaxMin / FullSort, pixel (un)shuffle, flatten, identity: exactly 1 (a
  permutation); ReLU, Tanh: 1; LeakyReLU: ``max(1, |slope|)``; Sigmoid: 1/4.

**Other norms** (``p=1`` or ``p=inf``: the bound on ``|f(x) - f(y)|_p / |x - y|_p``, the
induced lp -> lp norm, the same norm on every layer's input and output):

* ``nn.Linear``: the exact induced norm, max column abs sum (l1) or max row abs sum
  (l-inf), summed in float64 with a proven rounding factor.
* ``nn.Conv2d`` (any padding, stride, dilation): each output is a sum over at most
  ``in x kh x kw`` distinct inputs, each input feeds at most ``out x kh x kw`` outputs,
  so l-inf <= the largest abs sum over an output channel's kernel and l1 <= the
  largest abs sum over an input channel's slice (exact for circular padding, stride 1,
  kernel within the grid; an upper bound otherwise).
* BCOP and Björck layers: those norms of their current weights (an orthogonal matrix
  has l1 and l-inf norms up to ``sqrt(n)``: computed, never assumed 1).
* Sorting activations (GroupSort, MaxMin, FullSort): 1 in every lp (sorting is
  non-expansive in every lp, by the rearrangement inequality); fixed permutations and
  coordinatewise activations (ReLU, Tanh, LeakyReLU, Sigmoid, dropout): as in l2.
  NormPool (lq norm of each group of ``g``): 1 in lp for ``p <= q``, else the norms'
  ratio ``g^(1/q - 1/p)`` (:func:`norm_ratio`: ``sqrt(g)`` for l2 groups in l-inf).

A layer it does not know raises :class:`LipschitzBoundError` instead of being
assumed 1-Lipschitz. A custom container with its own ``forward`` is not walked for
the same reason (its forward may add skip connections). Register rules for new
layers with :func:`register_lipschitz_rule`.

**Faithfulness.** A rule describes what its class computes. A module whose function
may differ from its type's is refused with :class:`LipschitzBoundError` naming it
(:func:`check_faithful`): forward hooks or forward pre-hooks (the module's own or
global ones), an instance-level ``forward`` (or ``_call_impl``), and a subclass of a
class with a rule, unless the subclass declares ``lipschitz_inherits_rule = True``
in its own body and overrides none of the methods the forward pass goes through.
Backward hooks do not change the function and are allowed.

**Rounding.** Every factor is a proven upper bound in exact arithmetic on the weights
as they are (float32 or float64 values, exactly), and the product is rounded up.
Not covered: the rounding of the network's own forward pass (a certificate is about
the function the weights define, not about a float32 evaluation of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from wassnet import norms
from wassnet.errors import WassnetError
from wassnet.nn.activations import GroupSort, NormPool, Translate
from wassnet.nn.spectral import spectral_norm_upper
from wassnet.norms import Norm, by_p
from wassnet.rounding import nonneg_sum_factor, product_up, up

__all__ = [
    "NORMS",
    "LayerBound",
    "LipschitzBoundError",
    "LipschitzCertificate",
    "check_faithful",
    "conv2d_operator_norm",
    "lipschitz_bound",
    "norm_key",
    "norm_name",
    "norm_p",
    "norm_ratio",
    "power_iteration_norm",
    "register_lipschitz_rule",
    "registered_rule",
    "sequence_items",
]

Shape = tuple[int, ...]
Rule = Callable[[nn.Module, Shape], tuple[float, str]]


class LipschitzBoundError(WassnetError, TypeError):
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
    p: float = 2.0

    @property
    def norm(self) -> str:
        """``"l1"``, ``"l2"`` or ``"linf"``: the norm on inputs and outputs."""
        return norm_name(self.p)

    @property
    def exact(self) -> bool:
        return all(not layer.method.startswith("upper") for layer in self.layers)

    def __float__(self) -> float:
        return self.bound

    def to_dict(self) -> dict:
        return {
            "bound": self.bound,
            "norm": self.norm,
            "input_shape": list(self.input_shape),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def summary(self) -> str:
        """A readable table of the breakdown."""
        label = by_p(self.p).label
        lines = [f"certified {label} Lipschitz bound: {self.bound:.8f} (input {self.input_shape})"]
        for layer in self.layers:
            lines.append(f"  {layer.name:<24} {layer.layer:<14} {layer.bound:.8f}  {layer.method}")
        return "\n".join(lines)


#: The norms :func:`lipschitz_bound` certifies, by ``p`` (the table is :mod:`wassnet.norms`).
NORMS: tuple[float, ...] = norms.NORMS
#: One table of rules per norm, filled by :func:`register_lipschitz_rule`: here for
#: torch's layers, in each layer module for wassnet's (so no rule imports a layer
#: module). :func:`check_faithful` reads the l2 table.
_TABLES: dict[float, dict[type, Rule]] = {p: {} for p in NORMS}


def norm_name(p: float | int | str | Norm) -> str:
    """``"l1"``, ``"l2"`` or ``"linf"`` for ``p`` (:func:`wassnet.norms.by_p`)."""
    return by_p(p).name


def norm_key(p: float | int | str | Norm) -> str:
    """``p`` as the string configs and the CLI store: ``"1"``, ``"2"`` or ``"inf"``
    (JSON has no infinity)."""
    return by_p(p).cli


def norm_p(p: float | int | str | Norm) -> float:
    """``p`` as one of :data:`NORMS` (``1``, ``2``, ``inf``; also ``"inf"``, ``"l1"``...)."""
    return by_p(p).p


#: Methods a forward pass goes through: a subclass that overrides one of them may
#: compute another function than its registered parent.
FORWARD_METHODS = (
    "forward",
    "_conv_forward",
    "__call__",
    "_call_impl",
    "_wrapped_call_impl",
    "__iter__",
    "export",  # rules and wassnet.nn.export may read the layer through it
)


def register_lipschitz_rule(cls: type, rule: Rule, p: float | str = 2) -> None:
    """Teach :func:`lipschitz_bound` a layer type (this exact class), for the norm ``p``.

    ``rule(module, input_shape)`` returns ``(bound, method)``, where ``bound`` must be a
    proven upper bound on the module's Lipschitz constant in the lp norm for inputs of
    ``input_shape`` (no batch dimension) and ``method`` says how it was obtained
    (start it with ``"upper"`` when it is not the exact constant). A subclass of
    ``cls`` uses the rule only if it declares ``lipschitz_inherits_rule = True`` in
    its own body and overrides none of :data:`FORWARD_METHODS`.
    """
    _TABLES[norm_p(p)][cls] = rule


def registered_rule(cls: type, p: float | str = 2) -> Rule:
    """The rule registered for exactly ``cls`` in the lp norm (for a layer whose rule
    is another layer's on a rearranged input, such as BCOP's inner convolution).

    Raises:
        LipschitzBoundError: no rule is registered for ``cls`` in that norm.
    """
    rule = _TABLES[norm_p(p)].get(cls)
    if rule is None:
        raise LipschitzBoundError(f"no {norm_name(p)} Lipschitz rule is registered for {cls}")
    return rule


def _declared_class(module: nn.Module) -> type:
    """The module's class, seen through the class that ``torch.nn.utils.parametrize``
    generates (``Parametrized<Name>``, a direct subclass that only adds properties);
    any other class is taken as it is."""
    cls = type(module)
    bases = cls.__bases__
    generated = (
        parametrize.is_parametrized(module)
        and len(bases) == 1
        and cls.__name__ == f"Parametrized{bases[0].__name__}"
        and not any(name in vars(cls) for name in FORWARD_METHODS)
        and isinstance(getattr(module, "parametrizations", None), nn.ModuleDict)
        and all(
            isinstance(p, parametrize.ParametrizationList) for p in module.parametrizations.values()
        )
    )
    return bases[0] if generated else cls


def _overridden(cls: type, base: type) -> list[str]:
    """Forward methods that a class between ``cls`` and ``base`` (exclusive) redefines."""
    found = []
    for klass in cls.__mro__:
        if klass is base:
            break
        found += [name for name in FORWARD_METHODS if name in vars(klass)]
    return found


def _hook_kinds(forward_hooks: dict, pre_hooks: dict, prefix: str = "") -> list[str]:
    """Names of the kinds of hooks present (``[]`` when none)."""
    kinds = [f"{prefix}forward hooks"] if forward_hooks else []
    return kinds + ([f"{prefix}forward pre-hooks"] if pre_hooks else [])


def _hooks(module: nn.Module) -> list[str]:
    return _hook_kinds(module._forward_hooks, module._forward_pre_hooks)


def check_faithful(module: nn.Module, name: str = "") -> None:
    """Refuse a module whose function may differ from what its type computes.

    Raises:
        LipschitzBoundError: forward hooks or pre-hooks on the module, an instance-level
            ``forward`` (or call method), or a class that overrides a forward method of
            a class with a registered rule without declaring ``lipschitz_inherits_rule``.
    """
    label = name or "<model>"
    where = f"layer {label} ({type(module).__name__})"
    hooks = _hooks(module)
    if hooks:
        raise LipschitzBoundError(
            f"{where} has {' and '.join(hooks)}: they may change its function; remove them "
            "before certifying or exporting"
        )
    own = [m for m in FORWARD_METHODS if m in vars(module)]
    if own:
        raise LipschitzBoundError(
            f"{where} overrides {', '.join(own)} on the instance: its function is not its type's"
        )
    if getattr(module, "_compiled_call_impl", None) is not None:
        raise LipschitzBoundError(
            f"{where} is compiled (nn.Module.compile sets _compiled_call_impl, which its calls "
            "run instead of forward): certify and export the module before compiling it"
        )
    if parametrize.is_parametrized(module):
        _check_parametrizations(module, where)
    _rule_for(module, label)


def _check_parametrizations(module: nn.Module, where: str) -> None:
    """A parametrization computes the weight that rules read: refuse hooks, instance
    forwards or compiled calls inside it, and a weight that differs between two
    evaluations (e.g. dropout in training mode) unless every module of the
    parametrization declares ``lipschitz_deterministic = True`` in its own class body
    (wassnet's Björck, BCOP and AOL parametrizations do)."""
    for tensor_name, chain in module.parametrizations.items():
        if not isinstance(chain, parametrize.ParametrizationList):
            continue  # not torch's: the class is then taken as it is (see _declared_class)
        for inner in chain.modules():
            inner_where = f"{where}, parametrization of {tensor_name!r} ({type(inner).__name__})"
            hooks = _hooks(inner)
            own = [m for m in FORWARD_METHODS if m in vars(inner)]
            if hooks or own or getattr(inner, "_compiled_call_impl", None) is not None:
                changed = " and ".join(hooks + [f"an instance-level {m}" for m in own])
                raise LipschitzBoundError(
                    f"{inner_where} has {changed or 'a compiled call'}: it may change the "
                    "weight the certificate reads; remove it"
                )
        trusted = all(
            isinstance(inner, parametrize.ParametrizationList)
            or vars(type(inner)).get("lipschitz_deterministic") is True
            for inner in chain.modules()
        )
        if not trusted and not _same_twice(chain):
            raise LipschitzBoundError(
                f"{where}: its parametrization of {tensor_name!r} gives a different weight at "
                "each evaluation (random, e.g. dropout in training mode): no certificate "
                "holds for all of them"
            )


def _same_twice(chain: nn.Module) -> bool:
    """Whether a parametrization evaluates to the same tensor twice in a row (the global
    random state is restored afterwards)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        first, second = chain(), chain()
    return bool(first.shape == second.shape and torch.equal(first, second))


def _global_hooks() -> list[str]:
    from torch.nn.modules import module as module_impl

    return _hook_kinds(
        module_impl._global_forward_hooks, module_impl._global_forward_pre_hooks, "global "
    )


def _rule_for(module: nn.Module, label: str = "<model>", p: float = 2.0) -> Rule | None:
    """The lp rule of the module's exact class, or an inherited one that the subclass
    declares safe; ``None`` when no class in its MRO has a rule."""
    table = _TABLES[p]
    cls = _declared_class(module)
    if cls in table:
        return table[cls]
    base = next((k for k in cls.__mro__[1:] if k in table), None)
    if base is None:
        return None
    between = [k for k in cls.__mro__[: cls.__mro__.index(base)]]
    undeclared = [k.__name__ for k in between if not vars(k).get("lipschitz_inherits_rule")]
    if undeclared:
        raise LipschitzBoundError(
            f"layer {label}: {cls.__name__} subclasses {base.__name__} without declaring "
            "lipschitz_inherits_rule = True (a subclass may compute another function); "
            "declare it in the class body if its function is its parent's"
        )
    overridden = _overridden(cls, base)
    if overridden:
        raise LipschitzBoundError(
            f"layer {label}: {cls.__name__} overrides {', '.join(sorted(set(overridden)))} of "
            f"{base.__name__}: its function may differ from the rule's"
        )
    return table[base]


def _linear_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    weight = module.weight
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise LipschitzBoundError("uninitialized lazy layer: run one forward pass first")
    weight = weight.detach().to("cpu", torch.float64)
    try:
        bound = spectral_norm_upper(weight)
    except (ValueError, ArithmeticError, torch.linalg.LinAlgError) as exc:
        raise LipschitzBoundError(f"cannot bound the weight's norm: {exc}") from None
    return bound, "exact (verified): spectral norm"


_U = 2.0**-53


def _dft_error_factor(taps: int) -> float:
    """``c`` with ``|K_hat - K| <= c * sum_t |k_t|`` entrywise for the direct DFT:
    twiddles within ``64 u`` (angle ``2 pi r / N`` to ``3 u`` relative, libm's cos/sin
    to an ulp), and a complex-by-real sum of ``taps`` products (``2 sqrt(2) gamma``)."""
    gamma = 2.0 * (taps + 2) * _U
    return math.nextafter(64 * _U + 3.0 * gamma, math.inf)


def conv2d_operator_norm(kernel: torch.Tensor, grid: Shape, chunk: int = 2**22) -> float:
    """Operator norm of the circular (periodic) convolution by ``kernel`` on ``grid``,
    a proven upper bound a few ``1e-15`` above the exact value.

    The circular convolution is block-diagonalized by the 2-D DFT: its singular values
    are those of the ``[out, in]`` matrices ``K_hat(u, v)`` over all frequencies of the
    grid (Sedghi et al. 2019). Padding offsets only change phases, not singular values;
    taps beyond the grid alias (the phase is taken modulo the grid). ``K_hat`` is
    summed directly over the taps (float64), its rounding bounded entrywise
    (:func:`_dft_error_factor`) and charged to each frequency's verified norm
    (:func:`wassnet.nn.spectral.spectral_norm_upper`). Conjugate symmetry of a real
    kernel halves the frequencies; ``chunk`` bounds the memory per batch of them.
    """
    k = kernel.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(k).all()):
        raise LipschitzBoundError("the convolution kernel has non-finite entries")
    if not bool((k != 0).any()):
        return 0.0
    # one exact power-of-two scale (largest tap in [1/2, 1)); taps pushed into the
    # subnormal range move by at most 2^-1075 each, charged below
    exponent = math.frexp(float(k.abs().max()))[1]
    scaled = torch.ldexp(k, torch.tensor(-exponent))
    moved = 0.0 if bool((torch.ldexp(scaled, torch.tensor(exponent)) == k).all()) else 1.0
    k = scaled
    o, i, kh, kw = k.shape
    gh, gw = grid
    taps = k.reshape(o * i, kh * kw).T  # [T, o * i]
    a = torch.arange(kh).repeat_interleave(kw)
    b = torch.arange(kw).repeat(kh)
    u = torch.arange(gh).repeat_interleave(gw // 2 + 1)
    v = torch.arange(gw // 2 + 1).repeat(gh)
    period = gh * gw
    # exact integer phases: angle = -2 pi ((u a gw + v b gh) mod (gh gw)) / (gh gw)
    phase = (u[:, None] * a[None, :] * gw + v[:, None] * b[None, :] * gh) % period
    absolute = taps.abs().sum(0).reshape(o, i)  # sum_t |k_t| per entry
    error = _dft_error_factor(kh * kw) * float(absolute.pow(2).sum().sqrt()) * (1 + 1e-12)
    error += moved * kh * kw * math.sqrt(o * i) * 2.0**-1074  # the scale's rounding
    per_chunk = max(1, chunk // max(1, kh * kw + o * i))
    best = 0.0
    for start in range(0, len(phase), per_chunk):
        angle = phase[start : start + per_chunk].to(torch.float64) * (-2.0 * math.pi / period)
        twiddle = torch.polar(torch.ones_like(angle), angle)  # [F, T]
        spectrum = (twiddle @ taps.to(torch.complex128)).reshape(-1, o, i)
        best = max(best, spectral_norm_upper(spectrum, error))
    result = math.nextafter(math.ldexp(best, exponent), math.inf)
    if not math.isfinite(result):
        raise LipschitzBoundError("the convolution's norm exceeds the float64 range")
    return result


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


@dataclass(frozen=True)
class _ConvGeometry:
    """What ``nn.Conv2d._conv_forward`` reads, read the way it reads it.

    The attributes are read **now**, not as the constructor left them: a layer whose
    ``padding``, ``stride`` or ``dilation`` was changed after construction is bounded
    as it computes. With ``padding_mode="zeros"`` the forward pass hands ``padding``
    (ints or ``"same"`` / ``"valid"``) to ``F.conv2d``; any other mode pads by
    ``_reversed_padding_repeated_twice`` (set by the constructor, never updated) and
    convolves without padding.
    """

    kernel: torch.Tensor  # dilated, float as stored
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # left, right, top, bottom

    @property
    def padding_text(self) -> str:
        left, right, top, bottom = self.padding
        return f"(left {left}, right {right}, top {top}, bottom {bottom})"


def _pair_of_ints(value: object, what: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise LipschitzBoundError(f"Conv2d has an unsupported {what} {value!r}")
    return pair  # type: ignore[return-value]


def _forward_padding(conv: nn.Conv2d, kh: int, kw: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` as the forward pass pads (see :class:`_ConvGeometry`)."""
    if conv.padding_mode != "zeros":
        padding = tuple(conv._reversed_padding_repeated_twice)
        if len(padding) != 4 or not all(isinstance(v, int) for v in padding):
            raise LipschitzBoundError(f"Conv2d has an unsupported padding {padding!r}")
    elif conv.padding == "valid":
        padding = (0, 0, 0, 0)
    elif conv.padding == "same":  # F.conv2d: total k - 1, the odd one on the far side
        padding = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
    else:
        ph, pw = _pair_of_ints(conv.padding, "padding")
        padding = (pw, pw, ph, ph)
    if min(padding) < 0:
        raise LipschitzBoundError(f"Conv2d has a negative padding {padding}")
    return padding  # type: ignore[return-value]


def _conv_geometry(conv: nn.Conv2d, input_shape: Shape) -> _ConvGeometry:
    """Refuse what no conv rule certifies (grouped convs, other padding modes, no
    ``[C, H, W]``), and read the geometry the forward pass uses."""
    if len(input_shape) != 3:
        raise LipschitzBoundError(f"Conv2d needs an input shape [C, H, W], got {input_shape}")
    if conv.groups != 1:
        raise LipschitzBoundError("Conv2d with groups != 1 is not supported by lipschitz_bound")
    if conv.padding_mode not in ("zeros", "circular"):
        raise LipschitzBoundError(
            f"Conv2d with padding_mode={conv.padding_mode!r} is not certified "
            "(use 'circular' or 'zeros')"
        )
    stride = _pair_of_ints(conv.stride, "stride")
    dilation = _pair_of_ints(conv.dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise LipschitzBoundError(f"Conv2d has stride {stride} and dilation {dilation}")
    kernel = _dilated(conv.weight.detach(), dilation)
    padding = _forward_padding(conv, *kernel.shape[-2:])
    return _ConvGeometry(kernel, stride, padding)


def _conv2d_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    conv: nn.Conv2d = module  # type: ignore[assignment]
    geometry = _conv_geometry(conv, input_shape)
    kernel = geometry.kernel
    kh, kw = kernel.shape[-2:]
    left, right, top, bottom = geometry.padding
    _, h, w = input_shape
    sh, sw = geometry.stride
    if conv.padding_mode == "circular":
        if top + bottom != kh - 1 or left + right != kw - 1:
            raise LipschitzBoundError(
                "circular Conv2d is certified only when its padding keeps the spatial size "
                f"(total padding kernel-1); got padding {geometry.padding_text} "
                f"for kernel {(kh, kw)}"
            )
        if h % sh == 0 and w % sw == 0:
            grid, exact = (h // sh, w // sw), "exact: FFT, circular"
        else:  # striding is a crop of the stride-1 circular convolution
            grid, exact, sh, sw = (h, w), "upper: FFT, circular, stride ignored", 1, 1
    else:  # zeros: a crop of a circular convolution on the zero-extended grid
        hp, wp = -(-(h + top + bottom) // sh) * sh, -(-(w + left + right) // sw) * sw
        grid, exact = (hp // sh, wp // sw), f"upper: FFT on zero-padded grid {hp}x{wp}"
    norm = conv2d_operator_norm(_polyphase(kernel, (sh, sw)), grid)
    if (sh, sw) != (1, 1):
        exact += f", polyphase stride {sh}x{sw}"
    return norm, exact


def _constant(value: float, method: str) -> Rule:
    return lambda module, shape: (value, method)


def _leaky_relu_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    slope = float(module.negative_slope)
    if not math.isfinite(slope):
        raise LipschitzBoundError(f"LeakyReLU with a non-finite slope {slope}")
    return max(1.0, abs(slope)), "exact: max(1, |slope|)"


def _dropout_rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
    if module.training and module.p >= 1:
        raise LipschitzBoundError(
            "training-mode dropout with p = 1 is not certified (it zeroes every input); "
            "certify the model in eval mode"
        )
    if module.training and module.p > 0:
        bound = math.nextafter(1.0 / (1.0 - module.p), math.inf)
        return bound, "upper: training-mode dropout rescaling"
    return 1.0, "exact: identity in eval mode"


def _abs_sum_bound(weight: torch.Tensor, dims: tuple[int, ...]) -> float:
    """A proven upper bound on ``max`` of the abs sums of ``weight`` over ``dims``."""
    w = weight.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise LipschitzBoundError("the weight has non-finite entries")
    if w.numel() == 0:
        return 0.0
    terms = math.prod(w.shape[d] for d in dims)
    largest = float(w.abs().sum(dim=dims).max())
    bound = float(up(largest * nonneg_sum_factor(terms)))  # any summation order
    if not math.isfinite(bound):
        raise LipschitzBoundError("the weight's norm exceeds the float64 range")
    return bound


def _linear_p_rule(p: float) -> Rule:
    """l1: max column abs sum; l-inf: max row abs sum (``weight`` is ``[out, in]``)."""
    dims, what = ((0,), "column") if p == 1 else ((1,), "row")

    def rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
        weight = module.weight
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise LipschitzBoundError("uninitialized lazy layer: run one forward pass first")
        return _abs_sum_bound(weight, dims), f"exact (verified): max {what} abs sum"

    return rule


def _conv2d_p_rule(p: float) -> Rule:
    """l-inf: max over output channels of the kernel's abs sum; l1: over input channels."""
    dims, what = ((1, 2, 3), "output") if p == math.inf else ((0, 2, 3), "input")

    def rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
        conv: nn.Conv2d = module  # type: ignore[assignment]
        geometry = _conv_geometry(conv, input_shape)
        kh, kw = geometry.kernel.shape[-2:]
        left, right, top, bottom = geometry.padding
        if conv.padding_mode == "circular" and (top + bottom > kh - 1 or left + right > kw - 1):
            # wider circular padding repeats input pixels: each feeds several outputs per tap
            raise LipschitzBoundError(
                "circular Conv2d is certified only when its total padding is at most "
                f"kernel - 1; got padding {geometry.padding_text} for kernel {(kh, kw)}"
            )
        bound = _abs_sum_bound(conv.weight, dims)
        fits = kh <= input_shape[1] and kw <= input_shape[2]
        if conv.padding_mode == "circular" and geometry.stride == (1, 1) and fits:
            return bound, f"exact (verified): max {what}-channel abs sum, circular"
        return bound, f"upper: max {what}-channel abs sum"

    return rule


def norm_ratio(q: float, p: float, dim: int) -> float:
    """The smallest ``C`` with ``|v|_q <= C |v|_p`` for all ``v`` in ``R^dim``, rounded
    up: 1 when ``q >= p``, else ``dim ** (1/q - 1/p)`` (``q, p`` in 1, 2, inf)."""
    q, p = norm_p(q), norm_p(p)
    if q >= p:
        return 1.0
    if (q, p) == (1.0, math.inf):
        return float(dim)
    if math.isqrt(dim) ** 2 == dim:  # exponent 1/2: an exact integer root
        return float(math.isqrt(dim))
    return math.nextafter(math.sqrt(dim), math.inf)  # sqrt is correctly rounded


def _norm_pool_rule(p: float) -> Rule:
    """|‖x_g‖q - ‖y_g‖q| <= ‖x_g - y_g‖q <= C(q, p, g) ‖x_g - y_g‖p, group by group."""

    def rule(module: nn.Module, input_shape: Shape) -> tuple[float, str]:
        q = float(getattr(module, "p", 2.0))
        bound = norm_ratio(q, p, int(module.group_size))
        if bound == 1.0:
            return 1.0, f"exact: {norm_name(q)} norm of each group"
        ratio = f"|v|_{norm_name(q)[1:]} <= {bound:.6g} |v|_{norm_name(p)[1:]}"
        return bound, f"exact: {ratio} on a group"

    return rule


def _register_every_norm(cls: type, rule: Rule) -> None:
    """``rule`` holds in every lp (permutations, coordinatewise maps, sorting)."""
    for p in NORMS:
        register_lipschitz_rule(cls, rule, p)


register_lipschitz_rule(nn.Linear, _linear_rule)
register_lipschitz_rule(nn.Conv2d, _conv2d_rule)
for _p in (1.0, math.inf):
    register_lipschitz_rule(nn.Linear, _linear_p_rule(_p), _p)
    register_lipschitz_rule(nn.Conv2d, _conv2d_p_rule(_p), _p)
for _p in NORMS:
    register_lipschitz_rule(NormPool, _norm_pool_rule(_p), _p)
_register_every_norm(GroupSort, _constant(1.0, "exact: sorting (non-expansive in every lp)"))
for _cls in (nn.PixelUnshuffle, nn.PixelShuffle, nn.Flatten, nn.Unflatten, nn.Identity):
    _register_every_norm(_cls, _constant(1.0, "exact: permutation"))
for _cls in (nn.ReLU, nn.Tanh):
    _register_every_norm(_cls, _constant(1.0, "exact: 1-Lipschitz activation"))
_register_every_norm(Translate, _constant(1.0, "exact: translation"))
_register_every_norm(nn.Sigmoid, _constant(0.25, "exact: max slope 1/4"))
_register_every_norm(nn.LeakyReLU, _leaky_relu_rule)
_register_every_norm(nn.Dropout, _dropout_rule)


def sequence_items(module: nn.Module, name: str = "") -> list[tuple[str, nn.Module]]:
    """The layers of an ``nn.Sequential`` as its forward pass runs them: every entry of
    ``_modules`` in order, **repeats included** (``named_children`` drops a module that
    appears twice, and can be overridden)."""
    items = list(module._modules.items())
    missing = [key for key, child in items if child is None]
    if missing:
        raise LipschitzBoundError(f"{name or '<model>'}: entry {missing[0]!r} is None")
    return items  # type: ignore[return-value]


def _apply(rule: Rule, module: nn.Module, shape: Shape, name: str) -> tuple[float, str]:
    """``rule(module, shape)``, a rule that cannot read the module (a buffer swapped for
    one of another shape or dtype, a meta tensor, a removed parametrization) refused
    with one line instead of its traceback."""
    try:
        return rule(module, shape)
    except LipschitzBoundError:
        raise
    except (RuntimeError, ValueError, TypeError, AttributeError, NotImplementedError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise LipschitzBoundError(
            f"layer {name or '<model>'} ({type(module).__name__}) cannot be bounded: {text}"
        ) from None


def is_plain_sequential(module: nn.Module) -> bool:
    """An ``nn.Sequential`` whose class overrides none of the forward methods."""
    cls = _declared_class(module)
    return issubclass(cls, nn.Sequential) and not _overridden(cls, nn.Sequential)


def _walk(
    module: nn.Module,
    name: str,
    shape: Shape,
    out: list[LayerBound],
    probe: torch.Tensor,
    p: float = 2.0,
) -> torch.Tensor:
    """Append the bounds of ``module``'s layers to ``out``; return the output probe."""
    check_faithful(module, name)
    rule = _rule_for(module, name or "<model>", p)
    if rule is None and is_plain_sequential(module):
        for child_name, child in sequence_items(module, name):
            child_label = f"{name}.{child_name}" if name else child_name
            probe = _walk(child, child_label, shape, out, probe, p)
            shape = tuple(probe.shape[1:])
        return probe
    if rule is None:
        raise LipschitzBoundError(
            f"cannot certify layer {name or '<model>'} of type {type(module).__name__}: "
            f"no {norm_name(p)} Lipschitz rule is registered for it "
            "(see wassnet.nn.register_lipschitz_rule)"
        )
    bound, method = _apply(rule, module, shape, name)
    if not math.isfinite(bound):
        raise LipschitzBoundError(f"layer {name} has a non-finite bound {bound}")
    try:
        result = module(probe)
    except RuntimeError as exc:
        raise LipschitzBoundError(
            f"layer {name or '<model>'} cannot run on input shape {shape}: {exc}"
        ) from None
    out.append(
        LayerBound(
            name or "<model>",
            _declared_class(module).__name__,
            shape,
            tuple(result.shape[1:]),
            bound,
            method,
        )
    )
    return result


def _product_up(factors: Sequence[float]) -> float:
    """The product of nonnegative factors, each multiplication rounded up (exact
    products stay exact)."""
    total = 1.0
    for f in factors:
        total = float(product_up(total, f))
    return total


@torch.no_grad()
def lipschitz_bound(
    model: nn.Module, input_shape: Sequence[int], p: float | str = 2
) -> LipschitzCertificate:
    """A certified upper bound on the Lipschitz constant of ``model`` in the lp norm.

    Args:
        model: an ``nn.Sequential`` (nested freely) of layers with a registered rule,
            or one such layer.
        input_shape: the shape of one input, without the batch dimension (e.g.
            ``(784,)`` or ``(1, 28, 28)``). Convolution bounds depend on it.
        p: ``2`` (default), ``1`` or ``inf`` (``math.inf`` or ``"inf"``): the bound is
            on ``|f(x) - f(y)|_p / |x - y|_p``, the same norm on inputs and outputs.

    Returns:
        A :class:`LipschitzCertificate`; ``float(cert)`` is the bound. It is computed
        from the current weights (Björck/BCOP parametrizations are evaluated as they
        are), never assumed from the construction.

    Raises:
        LipschitzBoundError: for a layer without a rule, an unsupported configuration
            (grouped convolutions, reflect padding, ...), or a module whose function may
            differ from its type's (:func:`check_faithful`).
    """
    shape = tuple(int(s) for s in input_shape)
    norm = norm_p(p)
    hooks = _global_hooks()
    if hooks:
        raise LipschitzBoundError(
            f"{' and '.join(hooks)} are registered: they may change every module's function"
        )
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    param = next(
        (p for p in tensors if not isinstance(p, nn.parameter.UninitializedParameter)), None
    )
    probe = torch.zeros(
        (1, *shape),
        device=None if param is None else param.device,
        dtype=None if param is None else param.dtype,
    )
    layers: list[LayerBound] = []
    with parametrize.cached():
        _walk(model, "", shape, layers, probe, norm)
    bound = _product_up([layer.bound for layer in layers])
    return LipschitzCertificate(bound=bound, input_shape=shape, layers=layers, p=norm)


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
