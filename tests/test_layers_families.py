"""AOL, CPL and SLL layers: certified bounds against exact Jacobians, in l1, l2 and l-inf.

Two references, neither of them wassnet's rules:

* exact rationals: a residual layer's Jacobians are ``J_D = I - W^T diag(r d) W`` for
  the activation slopes ``d`` in ``[0, 1]``; the norm is convex in ``d``, so its worst
  case is a vertex ``d`` in ``{0, 1}``: the bound is checked on all of them (dense) or on
  all-on, all-off and random ones (conv), with ``Fraction`` s on the weights and scales
  exactly as the layer holds them (l2: ``B I -+ J`` positive semidefinite by an exact
  LDL^T); AOL layers: the exact norm of the rescaled weight (operator matrix for convs);
* autograd: ``torch.autograd.functional.jacobian`` of the layer's own forward pass in
  float64 at random points (this ties the forward pass to the formula above).
"""

from __future__ import annotations

import copy
import itertools
import math
from fractions import Fraction

import pytest
import torch
from conftest import examples, operator_matrix
from exact_reference import norm_at_most, psd_exact
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wassnet.errors import InputError
from wassnet.nn import (
    AOLConv2d,
    AOLLinear,
    ConvexResidualConv2d,
    ConvexResidualLinear,
    CPLConv2d,
    CPLLinear,
    LipschitzBoundError,
    SLLConv2d,
    SLLLinear,
    aol,
    export,
    lipschitz_bound,
)
from wassnet.nn.residual import conv_same

P_NORMS = [1, 2, math.inf]
TRAINABLE = (CPLLinear, SLLLinear, CPLConv2d, SLLConv2d, AOLLinear, AOLConv2d)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here is small."""


# ----------------------------------------------------------------------------- builders


def dense_layer(kind: str, n: int, m: int) -> nn.Module:
    if kind == "aol":
        return AOLLinear(n, m)
    if kind == "cpl":
        return CPLLinear(n, m)
    if kind == "sll":
        return SLLLinear(n, m)
    return ConvexResidualLinear(torch.randn(m, n), torch.randn(m), 3 * torch.rand(m))


def conv_layer(kind: str, c: int, m: int, size: int, mode: str) -> nn.Module:
    if kind == "aol":
        return AOLConv2d(c, m, 3, padding=1, padding_mode=mode)
    if kind == "cpl":
        return CPLConv2d(c, 3, input_size=size, hidden_channels=m, padding_mode=mode)
    if kind == "sll":
        return SLLConv2d(c, 3, hidden_channels=m, padding_mode=mode)
    weight = torch.randn(m, c, 3, 3)
    return ConvexResidualConv2d(weight, torch.randn(m), 3 * torch.rand(m), padding_mode=mode)


@torch.no_grad()
def randomize_(layer: nn.Module, seed: int, scale: float, stale_estimate: bool) -> None:
    """Random parameters (weights times ``scale``), and for CPL a random power-iteration
    buffer (an estimate far from the norm) when ``stale_estimate``."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in layer.named_parameters():
        factor = scale if "weight" in name else 1.0
        param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * factor)
    if isinstance(layer, (CPLLinear, CPLConv2d)) and stale_estimate:
        layer.u.copy_(torch.randn(layer.u.shape, generator=gen, dtype=layer.u.dtype))


# ----------------------------------------------------------------------------- references


def induced_norm(matrix: torch.Tensor, p: float) -> float:
    """The lp -> lp norm of a float64 matrix (l2: largest singular value)."""
    if p == 2:
        return float(torch.linalg.matrix_norm(matrix, 2))
    dim = 0 if p == 1 else 1
    return float(matrix.abs().sum(dim).max())


def autograd_lipschitz(layer: nn.Module, shape: tuple[int, ...], p: float, points: int) -> float:
    """The largest lp norm of the float64 Jacobian of ``layer`` at random points."""
    gen = torch.Generator().manual_seed(1)
    n = math.prod(shape)
    worst = 0.0
    for k in range(points):
        spread = 3.0 if k % 2 else 0.3
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * spread
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], x)
        worst = max(worst, induced_norm(jac.reshape(-1, n), p))
    return worst


def fractions(matrix: torch.Tensor) -> list[list[Fraction]]:
    return [[Fraction(float(v)) for v in row] for row in matrix.tolist()]


def exact_residual_jacobian(
    op: list[list[Fraction]], r: list[Fraction], d: tuple[int, ...]
) -> list[list[Fraction]]:
    """``I - W^T diag(r d) W`` exactly (``op`` is W, rows = hidden units)."""
    n = len(op[0])
    active = [(row, ri) for row, ri, di in zip(op, r, d, strict=True) if di and ri]
    return [
        [(1 if i == j else 0) - sum(ri * row[i] * row[j] for row, ri in active) for j in range(n)]
        for i in range(n)
    ]


def symmetric_bound_holds(jac: list[list[Fraction]], bound: float, p: float) -> bool:
    """Exactly: is the induced lp norm of the symmetric ``jac`` at most ``bound``?"""
    b = Fraction(bound)
    n = len(jac)
    if p != 2:  # symmetric: l1 = l-inf = the largest row abs sum
        return max(sum(abs(v) for v in row) for row in jac) <= b
    shifted = [[(b if i == j else 0) - jac[i][j] for j in range(n)] for i in range(n)]
    flipped = [[(b if i == j else 0) + jac[i][j] for j in range(n)] for i in range(n)]
    return psd_exact(shifted) and psd_exact(flipped)


def exact_linear_bound_holds(matrix: torch.Tensor, bound: float, p: float) -> bool:
    if p == 2:
        return norm_at_most(matrix.double(), bound)
    rows = fractions(matrix.double())
    sums = (
        [sum(abs(r[j]) for r in rows) for j in range(len(rows[0]))]
        if p == 1
        else [sum(abs(v) for v in r) for r in rows]
    )
    return max(sums) <= Fraction(bound)


def residual_operator(layer: nn.Module, shape: tuple[int, ...]) -> tuple[torch.Tensor, list]:
    """The matrix of ``x -> W x`` (float64, exact: a kernel's taps or the weight) and the
    scales repeated over the hidden pixels."""
    weight = layer.weight.detach().double()
    with torch.no_grad():
        r = layer.scales().detach().double()
    if weight.dim() == 2:
        return weight, [Fraction(float(v)) for v in r]
    op = operator_matrix(lambda x: conv_same(x, weight, layer.padding_mode), shape)
    pixels = shape[1] * shape[2]
    return op, [Fraction(float(v)) for v in r for _ in range(pixels)]


def patterns(units: int, seed: int) -> list[tuple[int, ...]]:
    """Every activation pattern for few units, else all-on, all-off and random ones."""
    if units <= 5:
        return list(itertools.product((0, 1), repeat=units))
    gen = torch.Generator().manual_seed(seed)
    random = [tuple(torch.randint(0, 2, (units,), generator=gen).tolist()) for _ in range(2)]
    return [(1,) * units, (0,) * units, *random]


def check_exactly(layer: nn.Module, shape: tuple[int, ...], bound: float, p: float) -> None:
    """The certified ``bound`` against exact arithmetic on the layer as it is."""
    if isinstance(layer, (AOLLinear, AOLConv2d)):
        plain = export(layer).double()
        matrix = plain.weight.detach() if plain.weight.dim() == 2 else None
        if matrix is None:
            plain.bias = None
            matrix = operator_matrix(plain, shape)
        assert exact_linear_bound_holds(matrix, bound, p)
        return
    op, r = residual_operator(layer, shape)
    rows = fractions(op)
    for d in patterns(len(rows), seed=len(rows)):
        assert symmetric_bound_holds(exact_residual_jacobian(rows, r, d), bound, p), d


def check_layer(layer: nn.Module, shape: tuple[int, ...], points: int = 6) -> dict:
    """Every norm: the bound of the layer (float32) exactly, and of its float64 copy
    against autograd Jacobians. Returns the l2 bounds."""
    bounds = {}
    double = copy.deepcopy(layer).double().eval()
    for p in P_NORMS:
        bound = lipschitz_bound(layer, shape, p=p).bound
        check_exactly(layer, shape, bound, p)
        bound64 = lipschitz_bound(double, shape, p=p).bound
        assert autograd_lipschitz(double, shape, p, points) <= bound64 * (1 + 1e-12)
        bounds[p] = bound
    return bounds


# ----------------------------------------------------------------------------- bounds


@settings(max_examples=examples(60), deadline=None)
@given(
    kind=st.sampled_from(["aol", "cpl", "sll", "plain"]),
    n=st.integers(1, 4),
    m=st.integers(1, 4),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    stale=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_dense_bounds_hold_exactly_and_against_jacobians(kind, n, m, scale, stale, seed):
    torch.manual_seed(seed)
    layer = dense_layer(kind, n, m)
    randomize_(layer, seed, scale, stale)
    bounds = check_layer(layer, (n,))
    if kind in ("aol", "sll"):  # 1-Lipschitz for any weights (up to float32 rounding)
        assert bounds[2] <= 1 + 1e-6


@settings(max_examples=examples(16), deadline=None)
@given(
    kind=st.sampled_from(["aol", "cpl", "sll", "plain"]),
    m=st.integers(1, 2),
    mode=st.sampled_from(["zeros", "circular"]),
    scale=st.sampled_from([1e-2, 1.0]),
    stale=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_conv_bounds_hold_exactly_and_against_jacobians(kind, m, mode, scale, stale, seed):
    torch.manual_seed(seed)
    shape = (2, 3, 3)
    layer = conv_layer(kind, 2, m, 3, mode)
    randomize_(layer, seed, scale, stale)
    bounds = check_layer(layer, shape, points=3)
    if kind in ("aol", "sll"):
        assert bounds[2] <= 1 + 1e-6


def test_cpl_certificate_does_not_trust_the_estimate():
    """A buffer on the smallest singular direction: h is far too large, and the bound
    says so (tight: every unit active gives the Jacobian I - h W^T W)."""
    torch.manual_seed(3)
    layer = CPLLinear(4, 4).double()
    with torch.no_grad():
        _, sv, vh = torch.linalg.svd(layer.weight)
        layer.u.copy_(vh[-1])
        layer.bias.fill_(100.0)
    bound = lipschitz_bound(layer, (4,)).bound
    expected = float(2 * sv[0] ** 2 / sv[-1] ** 2 - 1)
    assert bound > 2 and bound == pytest.approx(expected, rel=1e-9)
    assert autograd_lipschitz(layer, (4,), 2, 2) == pytest.approx(bound, rel=1e-9)
    check_exactly(layer, (4,), bound, 2)
    layer.refine_norm_estimate_(500)
    assert lipschitz_bound(layer, (4,)).bound <= 1 + 1e-9


@pytest.mark.parametrize(
    ("magnitude", "largest_scale"), [(1e-154, 1e308), (1e-3, 3e6), (1e150, 3e-300)]
)
def test_extreme_magnitudes_are_bounded_exactly(magnitude, largest_scale):
    """Weights whose squares are subnormal or huge, scales that bring ``r w^2`` back to
    about 1: every rounding in the rules must still go up."""
    torch.manual_seed(7)
    weight = torch.randn(3, 3, dtype=torch.float64) * magnitude
    scale = torch.rand(3, dtype=torch.float64) * largest_scale
    layer = ConvexResidualLinear(weight, torch.randn(3, dtype=torch.float64), scale)
    for p in P_NORMS:
        bound = lipschitz_bound(layer, (3,), p=p).bound
        check_exactly(layer, (3,), bound, p)
        assert bound < 100


# ----------------------------------------------------------------------------- training


def _families() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    return [
        ("aol", AOLLinear(6, 6), (6,)),
        ("cpl", CPLLinear(6, 5), (6,)),
        ("sll", SLLLinear(6, 7), (6,)),
        ("aol-conv", AOLConv2d(2, 3, 3, padding=1), (2, 4, 4)),
        ("cpl-conv", CPLConv2d(2, 3, input_size=4, hidden_channels=3), (2, 4, 4)),
        ("sll-conv", SLLConv2d(2, 3, padding_mode="circular"), (2, 4, 4)),
    ]


def _l2_after_refining(layer: nn.Module, shape: tuple[int, ...]) -> float:
    if isinstance(layer, (CPLLinear, CPLConv2d)):
        layer.refine_norm_estimate_(300)  # the layer's own normalization, made exact
    return lipschitz_bound(layer, shape).bound


@pytest.mark.parametrize("index", range(6))
def test_one_lipschitz_at_init_and_after_training(index):
    torch.manual_seed(index)
    name, layer, shape = _families()[index]
    assert _l2_after_refining(layer, shape) <= 1 + 1e-6, name
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    x, target = torch.randn(32, *shape), torch.randn(32, *layer(torch.zeros(1, *shape)).shape[1:])
    for _ in range(5):
        optimizer.zero_grad()
        ((layer(x) - target) ** 2).mean().backward()
        optimizer.step()
    check_layer(layer, shape, points=3)  # before refining: the bound holds as it is
    assert _l2_after_refining(layer, shape) <= 1 + 1e-6, name


def test_weights_changed_by_hand_are_certified_as_they_run():
    torch.manual_seed(5)
    cpl = CPLLinear(3, 3)
    with torch.no_grad():  # a direction the buffer does not see: the estimate stays
        away = torch.randn(3)
        away -= (away @ cpl.u) * cpl.u
        cpl.weight[0] += 5 * away / away.norm()
    bound = check_layer(cpl, (3,))[2]
    assert bound > 10
    dense = AOLLinear(3, 2)
    before = lipschitz_bound(dense, (3,), p=1).bound
    with torch.no_grad():
        dense.parametrizations.weight.original.copy_(torch.tensor([[1.0, 1, 1], [0, 0, 5]]))
    assert check_layer(dense, (3,))[1] != before
    plain = ConvexResidualLinear(torch.eye(2), None, torch.ones(2))
    plain.scale = torch.tensor([1.0, 5.0])  # a new buffer: x - 5 x in the second unit
    bounds = check_layer(plain, (2,))  # attained: all units active
    assert bounds[2] == pytest.approx(4.0, rel=1e-14)
    assert bounds[math.inf] == pytest.approx(4.0, rel=1e-14)


def test_cpl_training_forward_refines_the_buffer_and_certification_does_not():
    torch.manual_seed(6)
    layer = CPLLinear(5, 5, power_iterations=0)
    start = layer.u.clone()
    lipschitz_bound(layer.train(), (5,))
    with torch.no_grad():
        layer(torch.randn(2, 5))
    layer.eval()(torch.randn(2, 5))
    assert torch.equal(layer.u, start)
    layer.train()(torch.randn(2, 5)).sum().backward()  # one power step, after the forward
    assert not torch.equal(layer.u, start)
    assert layer.weight.grad is not None


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("index", range(6))
def test_export_is_plain_with_the_same_outputs_and_bounds(index):
    torch.manual_seed(10 + index)
    name, layer, shape = _families()[index]
    randomize_(layer, index, 1.0, stale_estimate=True)
    layer.eval()
    exported = export(layer)
    assert type(exported) in (nn.Linear, nn.Conv2d, ConvexResidualLinear, ConvexResidualConv2d)
    assert not any(isinstance(m, TRAINABLE) for m in exported.modules())
    x = torch.randn(5, *shape)
    assert torch.equal(exported(x), layer(x)), name
    for p in P_NORMS:
        bound = lipschitz_bound(layer, shape, p=p).bound
        assert lipschitz_bound(exported, shape, p=p).bound == bound
    reloaded = copy.deepcopy(exported)
    reloaded.load_state_dict(exported.state_dict())
    assert torch.equal(torch.jit.script(reloaded)(x), layer(x))


def test_a_network_of_new_layers_is_certified_and_exported():
    torch.manual_seed(12)
    net = nn.Sequential(
        SLLConv2d(2, 3, padding_mode="circular"),
        CPLConv2d(2, 3, input_size=4),
        AOLConv2d(2, 4, 3, padding=1),
        nn.Flatten(),
        AOLLinear(64, 8),
        SLLLinear(8),
        CPLLinear(8, 6),
        nn.ReLU(),
    ).eval()
    for p in P_NORMS:
        cert = lipschitz_bound(net, (2, 4, 4), p=p)
        assert lipschitz_bound(export(net), (2, 4, 4), p=p).bound == cert.bound
    assert cert.layers[0].method.startswith("upper")  # residual rules are upper bounds


# ----------------------------------------------------------------------------- refusals


def _all_layers() -> list[tuple[nn.Module, tuple[int, ...]]]:
    return [(layer, shape) for _, layer, shape in _families()] + [
        (ConvexResidualLinear(torch.randn(2, 3), None, torch.ones(2)), (3,)),
        (ConvexResidualConv2d(torch.randn(2, 2, 3, 3), None, torch.ones(2)), (2, 4, 4)),
    ]


@pytest.mark.parametrize("what", ["nan weight", "inf bias", "wrong shape"])
def test_refusals(what):
    for layer, shape in _all_layers():
        with torch.no_grad():
            params = dict(layer.named_parameters())
            if what == "nan weight":
                next(v for k, v in params.items() if "weight" in k).view(-1)[0] = math.nan
            elif what == "inf bias" and layer.bias is not None:
                layer.bias.view(-1)[0] = math.inf
            elif what == "inf bias":
                continue
        if what == "wrong shape":
            shape = (shape[0] + 1, *shape[1:])
        for p in P_NORMS:
            with pytest.raises(LipschitzBoundError):
                lipschitz_bound(layer, shape, p=p)


def test_negative_scales_and_bad_configurations_are_refused():
    plain = ConvexResidualLinear(torch.randn(2, 3), None, torch.tensor([1.0, -0.5]))
    for p in P_NORMS:
        with pytest.raises(LipschitzBoundError, match="nonnegative"):
            lipschitz_bound(plain, (3,), p=p)
    with pytest.raises(InputError, match="odd"):
        SLLConv2d(2, 2)
    with pytest.raises(InputError, match="odd"):
        CPLConv2d(2, 4, input_size=8)
    with pytest.raises(InputError, match="padding_mode"):
        SLLConv2d(2, 3, padding_mode="reflect")
    with pytest.raises(InputError, match="grouped"):
        aol(nn.Conv2d(4, 4, 3, groups=2))
    sll = SLLConv2d(2, 3)
    sll.padding_mode = "reflect"  # changed after construction: refused, not misread
    with pytest.raises(LipschitzBoundError, match="padding_mode"):
        lipschitz_bound(sll, (2, 4, 4))
    sll = SLLConv2d(2, 3)
    sll.weight = nn.Parameter(torch.randn(2, 2, 2, 2))  # even: the forward cannot keep the size
    for p in P_NORMS:
        with pytest.raises(LipschitzBoundError, match="odd"):
            lipschitz_bound(sll, (2, 4, 4), p=p)
