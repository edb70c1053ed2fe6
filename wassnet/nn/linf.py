r"""l-inf-distance neurons (Zhang et al., ICML 2021) and their training relaxation.

An l-inf-dist neuron computes :math:`u(x) = \|x - w\|_\infty + b` instead of an affine
map followed by an activation. :class:`LinfDistLinear` holds ``out_features`` of them
(one weight row ``w_j`` per output). During training the norm is relaxed to an lp norm,
:math:`\|x - w\|_p` with ``p`` a power of two from 8 upwards, whose gradient reaches
every coordinate (the l-inf norm's reaches one), and ``p`` is annealed to infinity
(:func:`relaxation_p`, :func:`set_relaxation_p_`). :class:`MeanShift` is the paper's
normalization: subtract the batch mean (a running mean in eval mode), never divide by
a variance, so the Lipschitz constant is unchanged.

**Certificates** (registered for :func:`wassnet.nn.lipschitz_bound`, computed from the
layer as it is: its current ``p`` and its input size ``n``):

* l-inf, ``p = inf``: exactly 1. For each output, by the triangle inequality of the
  l-inf norm, :math:`\|x - w\|_\infty \le \|x - y\|_\infty + \|y - w\|_\infty` and the
  same with ``x``, ``y`` swapped, so
  :math:`|u_j(x) - u_j(y)| = |\|x - w_j\|_\infty - \|y - w_j\|_\infty| \le \|x - y\|_\infty`;
  the bias cancels. Every coordinate of ``u(x) - u(y)`` is bounded so, hence
  :math:`\|u(x) - u(y)\|_\infty \le \|x - y\|_\infty` (equality where one coordinate of
  ``x - w_j`` dominates: the constant is exactly 1).
* l-inf, ``p < inf``: :math:`n^{1/p}`, rounded up and verified in exact rational
  arithmetic (``c^p >= n``). The same triangle inequality in lp gives
  :math:`|u_j(x) - u_j(y)| \le \|x - y\|_p \le n^{1/p} \|x - y\|_\infty` (a sum of ``n``
  terms each at most :math:`\|x - y\|_\infty^p`); equality at ``x - y`` constant and
  ``x - w_j`` a multiple of it. A network certified in the middle of the relaxation
  therefore has a bound above 1 (``784^(1/8) = 2.30`` for a first layer at p = 8).
* l2: :math:`\sqrt{m}` for ``m = out_features`` (rounded up): :math:`|u_j(x) - u_j(y)|
  \le \|x - y\|_p \le \|x - y\|_2` for ``p >= 2`` (lp norms decrease in ``p``), and a
  vector of ``m`` coordinates each at most ``t`` has l2 norm at most :math:`\sqrt{m}\,t`.
* l1: ``m``: :math:`\|x - y\|_p \le \|x - y\|_1` and a sum of ``m`` such coordinates.
  The l2 and l1 bounds are honest and large: these networks are built for l-inf.
* :class:`MeanShift` in eval mode: a translation, exactly 1 in every norm. In training
  mode each output depends on the whole batch: refused (certify in eval mode, as
  :func:`wassnet.certify.certified_radius` does).

Not covered: the float32 rounding of the forward pass (as everywhere in wassnet); for
``p < inf`` the compiled kernel computes the lp norm with float32 powers, an
approximation of the function the bound is about.

**Kernels.** float32 tensors on the CPU go through a compiled C kernel (``_linf.c``,
built on first use by :mod:`wassnet.ot.cbuild`): a register-blocked maximum of
``|x - w|`` over 4 x 4 pairs of rows, vectorized, its argmax kept for the backward
pass; for ``p = 2^k`` the powers by ``k`` squarings after dividing by the maximum
(nothing overflows). The backward pass at ``p = inf`` is a scatter: the gradient of
:math:`\max_i |x_i - w_i|` is ``sign(x_i - w_i)`` at the argmax and 0 elsewhere, so it
costs ``O(batch x out)``, not ``O(batch x out x in)``. Other dtypes and devices (and
machines without a C compiler, or ``WASSNET_NO_NATIVE=1``) use a chunked pure-torch
formulation with the same backward. Timings: BENCHMARKS.md, "l-inf-distance layers".

**Export.** Both layers are plain torch modules: :func:`wassnet.nn.export` returns a
frozen copy, and under ``torch.export`` / ``torch.compile`` the forward pass is the
pure-torch formulation (which materializes ``[batch, out, in]``).
"""

from __future__ import annotations

import ctypes
import math
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from wassnet.errors import InputError
from wassnet.nn.lipschitz import (
    NORMS,
    LipschitzBoundError,
    norm_ratio,
    register_lipschitz_rule,
)
from wassnet.ot.cbuild import NativeLibrary

__all__ = [
    "RELAX_P_END",
    "RELAX_P_START",
    "LinfDistLinear",
    "MeanShift",
    "check_p",
    "linf_dist",
    "native_linf_available",
    "relaxation_p",
    "set_relaxation_p_",
]

#: The first and last finite ``p`` of :func:`relaxation_p` (then ``inf``).
RELAX_P_START, RELAX_P_END = 8.0, 1024.0
_MAX_K = 10  # p = 2^k, k <= 10: the bound n^(1/p) is verified exactly (see _root_up)
_LANES = 16  # the C kernel's inputs have a multiple of 16 columns (zero padding)
_CHUNK = 1 << 22  # elements of [rows, out, in] per chunk of the torch formulation

_SOURCE = Path(__file__).with_name("_linf.c")
_COMMON = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-pthread"]


def _declare(lib: ctypes.CDLL) -> None:
    i, ptr = ctypes.c_int, ctypes.c_void_p
    lib.linf_max.argtypes = [i, i, i, ptr, ptr, ptr, ptr, i]
    lib.lp_norm.argtypes = [i, i, i, i, ptr, ptr, ptr, i]
    lib.lp_grad.argtypes = [i, i, i, i, ptr, ptr, ptr, ptr, ptr, ptr, i]
    lib.linf_max.restype = lib.lp_norm.restype = lib.lp_grad.restype = ctypes.c_int


_NATIVE = NativeLibrary(_SOURCE, [[*_COMMON, "-march=native"], _COMMON], _declare)


def native_linf_available() -> bool:
    """Whether the compiled kernel loads on this machine (compiling it if needed)."""
    return _NATIVE.get() is not None


def check_p(p: float) -> float:
    """``p`` as a float if it is ``inf`` or ``2^k`` with ``1 <= k <= 10``; else ``InputError``."""
    value = float(p)
    if value == math.inf:
        return value
    k = _log2(value)
    if k is None:
        raise InputError(f"p must be inf or a power of two from 2 to 1024, got {p!r}")
    return value


def _log2(p: float) -> int | None:
    if not math.isfinite(p) or p < 2:
        return None
    mantissa, exponent = math.frexp(p)
    k = exponent - 1
    return k if mantissa == 0.5 and 1 <= k <= _MAX_K else None


# --- the kernels -------------------------------------------------------------------


def _use_native(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and not torch.compiler.is_compiling()
        and _NATIVE.get() is not None
    )


def _padded(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    extra = -t.shape[1] % _LANES
    return torch.nn.functional.pad(t, (0, extra)) if extra else t


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _check_status(status: int, what: str) -> None:
    if status == 3:
        raise MemoryError(f"{what}: out of memory")
    if status:
        raise RuntimeError(f"{what}: bad shapes (status {status})")


def _native_forward(
    x: torch.Tensor, w: torch.Tensor, p: float, need_arg: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    lib = _NATIVE.get()
    assert lib is not None
    xp, wp = _padded(x), _padded(w)
    (b, n), o = xp.shape, wp.shape[0]
    out = torch.empty(b, o, dtype=torch.float32)
    threads = torch.get_num_threads()
    if p == math.inf:
        arg = torch.empty(b, o, dtype=torch.int64) if need_arg else None
        status = lib.linf_max(
            b, o, n, _ptr(xp), _ptr(wp), _ptr(out), None if arg is None else _ptr(arg), threads
        )
        _check_status(status, "linf_max")
        return out, arg
    k = _log2(p)
    _check_status(lib.lp_norm(b, o, n, k, _ptr(xp), _ptr(wp), _ptr(out), threads), "lp_norm")
    return out, None


def _native_lp_backward(
    x: torch.Tensor, w: torch.Tensor, norm: torch.Tensor, grad: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    lib = _NATIVE.get()
    assert lib is not None
    xp, wp = _padded(x), _padded(w)
    (b, n), o = xp.shape, wp.shape[0]
    gx, gw = torch.empty_like(xp), torch.empty_like(wp)
    g = grad.detach().to(torch.float32).contiguous()
    nm = norm.detach().contiguous()
    status = lib.lp_grad(
        b, o, n, _log2(p), _ptr(xp), _ptr(wp), _ptr(nm), _ptr(g), _ptr(gx), _ptr(gw),
        torch.get_num_threads(),
    )  # fmt: skip
    _check_status(status, "lp_grad")
    return gx[:, : x.shape[1]], gw[:, : w.shape[1]]


def _rows_per_chunk(o: int, n: int) -> int:
    return max(1, _CHUNK // max(1, o * n))


def _torch_forward(
    x: torch.Tensor, w: torch.Tensor, p: float, need_arg: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``||x_b - w_o||_p`` in chunks of rows (no ``[batch, out, in]`` tensor at once)."""
    if torch.compiler.is_compiling():  # one traced expression (torch.export)
        return _lp_of_diff(x[:, None, :] - w[None], p)[0], None
    outs, args = [], []
    step = _rows_per_chunk(*w.shape)
    for start in range(0, len(x), step):
        value, arg = _lp_of_diff(x[start : start + step, None, :] - w[None], p)
        outs.append(value)
        args.append(arg)
    out = torch.cat(outs) if outs else x.new_zeros(0, w.shape[0])
    if not need_arg or p != math.inf:
        return out, None
    return out, torch.cat(args) if args else torch.zeros(0, w.shape[0], dtype=torch.int64)


def _lp_of_diff(diff: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    top, arg = diff.abs().max(-1)
    if p == math.inf:
        return top, arg
    scale = torch.where(top > 0, top, torch.ones_like(top))
    total = ((diff.abs() / scale[..., None]) ** p).sum(-1)
    return torch.where(top > 0, top * total ** (1.0 / p), top), arg


def _torch_lp_backward(
    x: torch.Tensor, w: torch.Tensor, norm: torch.Tensor, grad: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gw = torch.zeros_like(x), torch.zeros_like(w)
    step = _rows_per_chunk(*w.shape)
    for start in range(0, len(x), step):
        rows = slice(start, start + step)
        diff = x[rows, None, :] - w[None]
        n = norm[rows][..., None]
        ratio = torch.where(n > 0, diff.abs() / torch.where(n > 0, n, torch.ones_like(n)), 0)
        t = grad[rows][..., None] * ratio ** (p - 1) * diff.sign()
        gx[rows] = t.sum(1)
        gw -= t.sum(0)
    return gx, gw


def _scatter_backward(
    x: torch.Tensor, w: torch.Tensor, arg: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of ``max_i |x_i - w_i|``: ``sign(x_i - w_i)`` at the argmax."""
    diff = x.gather(1, arg) - w.gather(1, arg.T).T  # [batch, out] at each pair's argmax
    t = grad * diff.sign()
    gx = torch.zeros_like(x).scatter_add_(1, arg, t)
    gw = torch.zeros_like(w).scatter_add_(1, arg.T, -t.T)
    return gx, gw


class _LinfDist(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, p: float) -> torch.Tensor:
        need_arg = p == math.inf and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        native = _use_native(x, w)
        forward = _native_forward if native else _torch_forward
        out, arg = forward(x, w, p, need_arg)
        ctx.p, ctx.native = p, native
        ctx.save_for_backward(x, w, out, arg if arg is not None else out.new_zeros(0))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w, out, arg = ctx.saved_tensors
        grad = grad.contiguous()
        if ctx.p == math.inf:
            gx, gw = _scatter_backward(x, w, arg, grad)
        elif ctx.native:
            gx, gw = _native_lp_backward(x, w, out, grad, ctx.p)
        else:
            gx, gw = _torch_lp_backward(x, w, out, grad, ctx.p)
        return gx, gw, None


def linf_dist(x: torch.Tensor, weight: torch.Tensor, p: float = math.inf) -> torch.Tensor:
    """``[batch, out]``: ``||x_b - weight_o||_p`` for ``x`` ``[batch, in]`` and ``weight``
    ``[out, in]`` (``p`` = ``inf`` or a power of two from 2 to 1024), differentiable.

    Under ``torch.compile`` / ``torch.export`` it is one pure-torch expression.
    """
    p = check_p(p)
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise InputError(
            f"linf_dist needs x [batch, n] and weight [out, n], got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if torch.compiler.is_compiling():
        return _lp_of_diff(x[:, None, :] - weight[None], p)[0]
    return _LinfDist.apply(x, weight, p)


# --- the layers --------------------------------------------------------------------


class LinfDistLinear(nn.Module):
    r"""``out_features`` l-inf-dist neurons: :math:`u_j(x) = \|x - w_j\|_p + b_j`.

    ``p`` is ``inf`` (the certified neuron) or, during the training relaxation, a power
    of two from 2 to 1024 (:func:`set_relaxation_p_`). It is a buffer: a checkpoint
    holds the ``p`` its weights were trained at, and the certificate reads it (1 in
    l-inf at ``p = inf``, ``in_features^(1/p)`` below; see the module docstring).

    Args:
        in_features, out_features: sizes of ``x`` and ``u``.
        bias: learn ``b`` (else ``b = 0``).
        p: the starting norm (default ``inf``).
        negate: output :math:`-u(x)` (the logits of the paper's last layer: the class
            whose prototype is nearest wins); the Lipschitz constant is unchanged.

    Inputs with more than two dimensions are flattened after the batch dimension.
    Weights start standard normal, biases at zero.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        p: float = math.inf,
        negate: bool = False,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise InputError(f"sizes must be >= 1, got {in_features} -> {out_features}")
        self.in_features, self.out_features, self.negate = in_features, out_features, negate
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer("p", torch.tensor(check_p(p), dtype=torch.float64))
        self._traced_p = check_p(p)  # what torch.export / torch.compile read (no tensor read)

    @property
    def norm_p(self) -> float:
        """The current ``p`` (checked)."""
        return check_p(float(self.p))

    def set_p_(self, p: float) -> LinfDistLinear:
        """Set the norm in place (``inf`` or ``2^k``, ``1 <= k <= 10``); returns ``self``."""
        self.p.fill_(check_p(p))
        self._traced_p = float(self.p)
        return self

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._traced_p = check_p(float(self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) if x.dim() > 2 else x
        p = self._traced_p if torch.compiler.is_compiling() else self.norm_p
        u = linf_dist(x, self.weight, p)
        if self.bias is not None:
            u = u + self.bias
        return -u if self.negate else u

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, p={float(self.p)}, negate={self.negate}"
        )

    @torch.no_grad()
    def export(self) -> LinfDistLinear:
        """A frozen copy (same weights, ``p``, mode and device): already plain torch."""
        copy = LinfDistLinear(
            self.in_features, self.out_features, self.bias is not None, self.norm_p, self.negate
        )
        copy.load_state_dict(self.state_dict())
        return copy.to(self.weight.device).train(self.training)


class MeanShift(nn.Module):
    """The paper's normalization: subtract the mean of each feature.

    Training mode: the batch mean (and a running mean is updated with ``momentum``);
    eval mode: the running mean, a fixed translation (Lipschitz constant 1 in every
    norm). No division by a variance (it would rescale the constant) and no learned
    affine map (the next l-inf-dist layer's weights absorb a shift).
    """

    def __init__(self, num_features: int, momentum: float = 0.1) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise InputError(f"momentum must be in (0, 1], got {momentum}")
        self.num_features, self.momentum = num_features, momentum
        self.register_buffer("running_mean", torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise InputError(
                f"MeanShift expects [batch, {self.num_features}], got {tuple(x.shape)}"
            )
        if not self.training:
            return x - self.running_mean
        mean = x.mean(0)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
        return x - mean

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}"

    @torch.no_grad()
    def export(self) -> MeanShift:
        """A frozen copy (same running mean, mode and device)."""
        copy = MeanShift(self.num_features, self.momentum)
        copy.load_state_dict(self.state_dict())
        return copy.to(self.running_mean.device).train(self.training)


# --- the relaxation schedule -------------------------------------------------------


def relaxation_p(step: int, steps: int) -> float:
    """``p`` at optimizer step ``step`` of a relaxation lasting ``steps`` steps.

    ``p`` grows geometrically from :data:`RELAX_P_START` (8) to :data:`RELAX_P_END`
    (1024) in equal stages, doubling at each (8, 16, ..., 1024: 8 stages of
    ``steps / 8``), and is ``inf`` from step ``steps`` on (and always when ``steps`` is
    0). The powers of two keep the compiled kernel exact in its powers (squarings).
    """
    if steps < 0 or step < 0:
        raise InputError(f"step and steps must be >= 0, got {step} and {steps}")
    if step >= steps:
        return math.inf
    stages = int(math.log2(RELAX_P_END / RELAX_P_START)) + 1
    return RELAX_P_START * 2.0 ** (step * stages // steps)


def set_relaxation_p_(model: nn.Module, p: float) -> int:
    """Set ``p`` of every :class:`LinfDistLinear` in ``model``; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, LinfDistLinear)]
    for layer in layers:
        layer.set_p_(p)
    return len(layers)


# --- certificates ------------------------------------------------------------------


@lru_cache(maxsize=256)
def _root_up(n: int, k: int) -> float:
    """The smallest float ``c`` found with ``c^(2^k) >= n`` in exact rationals, i.e. an
    upper bound on ``n^(1/2^k)`` (a few ulps above it at most)."""
    c = float(n) ** (1.0 / 2**k)
    c = math.nextafter(c, 0.0)  # start below pow's result: it need not be correctly rounded
    while True:
        power = Fraction(c)
        for _ in range(k):
            power *= power
        if power >= n:
            return c
        c = math.nextafter(c, math.inf)


def _layer_p(module: nn.Module) -> float:
    try:
        return check_p(float(module.p))
    except InputError as exc:
        raise LipschitzBoundError(f"LinfDistLinear with an uncertified p: {exc}") from None


def _linf_rule(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, str]:
    p = _layer_p(module)
    n = math.prod(input_shape)
    if n != module.in_features:
        raise LipschitzBoundError(f"LinfDistLinear takes {module.in_features} inputs, got {n}")
    if p == math.inf:
        return 1.0, "exact: | |x-w|_inf - |y-w|_inf | <= |x-y|_inf per neuron"
    k = _log2(p)
    return _root_up(n, k), f"exact (verified): n^(1/p) = {n}^(1/{int(p)}), |v|_p <= that |v|_inf"


def _l2_l1_rule(q: float):
    def rule(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, str]:
        _layer_p(module)  # p >= 2: |v|_p <= |v|_2 <= |v|_1
        m = module.out_features
        bound = norm_ratio(q, math.inf, m)
        name = "sqrt(out)" if q == 2 else "out"
        return bound, f"upper: {name}; each neuron 1-Lipschitz from l{int(q)} (p >= 2)"

    return rule


def _mean_shift_rule(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, str]:
    if module.training:
        raise LipschitzBoundError(
            "MeanShift in training mode subtracts the batch mean (each output depends on "
            "the whole batch): certify the model in eval mode"
        )
    return 1.0, "exact: translation by the running mean"


register_lipschitz_rule(LinfDistLinear, _linf_rule, math.inf)
for _q in (1.0, 2.0):
    register_lipschitz_rule(LinfDistLinear, _l2_l1_rule(_q), _q)
for _p in NORMS:
    register_lipschitz_rule(MeanShift, _mean_shift_rule, _p)
