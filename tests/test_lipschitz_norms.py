"""lipschitz_bound(p=1 | inf): against exact operator norms (rationals, explicit matrices)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wassnet import make_critic
from wassnet.nn import (
    BCOPConv2d,
    BjorckLinear,
    FullSort,
    GroupSort,
    LipschitzBoundError,
    NormPool,
    lipschitz_bound,
    register_lipschitz_rule,
)

P_NORMS = [1, math.inf]


def _exact_matrix_norm(matrix: torch.Tensor, p: float) -> Fraction:
    """The induced lp norm of a float matrix, in exact rationals (max column / row sum)."""
    rows = [[Fraction(float(v)) for v in row] for row in matrix.tolist()]
    if p == 1:
        return max(sum(abs(r[j]) for r in rows) for j in range(len(rows[0])))
    return max(sum(abs(v) for v in r) for r in rows)


def _operator(module: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The explicit matrix of a bias-free linear module on inputs of ``shape`` (float64)."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    with torch.no_grad():
        return module.double()(basis).reshape(n, -1).T.contiguous()


@settings(max_examples=examples(60), deadline=None)
@given(
    out_f=st.integers(1, 7),
    in_f=st.integers(1, 7),
    scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]),
    seed=st.integers(0, 10**6),
    p=st.sampled_from(P_NORMS),
)
def test_dense_bound_is_the_exact_rational_norm_rounded_up(out_f, in_f, scale, seed, p):
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_f, out_f, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_f, in_f, generator=gen) * scale)
    cert = lipschitz_bound(layer, (in_f,), p=p)
    exact = _exact_matrix_norm(layer.weight.detach(), p)
    assert Fraction(cert.bound) >= exact  # never below, in exact arithmetic
    assert cert.bound <= float(exact) * (1 + 1e-13) + 1e-300
    assert cert.exact and cert.norm == ("l1" if p == 1 else "linf")


@settings(max_examples=examples(40), deadline=None)
@given(
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    kernel=st.integers(1, 3),
    size=st.integers(3, 5),
    stride=st.sampled_from([1, 2]),
    padding_mode=st.sampled_from(["zeros", "circular"]),
    seed=st.integers(0, 10**6),
    p=st.sampled_from(P_NORMS),
)
def test_conv_bound_is_above_the_explicit_operator_norm(
    c_in, c_out, kernel, size, stride, padding_mode, seed, p
):
    torch.manual_seed(seed)
    pad = (kernel - 1) // 2 if padding_mode == "zeros" else "same"
    if padding_mode == "circular" and (kernel % 2 == 0 or stride != 1):
        pad = (kernel - 1) // 2
        if kernel % 2 == 0:
            kernel += 1
            pad = (kernel - 1) // 2
    conv = nn.Conv2d(
        c_in, c_out, kernel, stride=stride, padding=pad, padding_mode=padding_mode, bias=False
    )
    shape = (c_in, size, size)
    cert = lipschitz_bound(conv, shape, p=p)
    exact = _exact_matrix_norm(_operator(conv, shape), p)
    assert Fraction(cert.bound) >= exact * (1 - Fraction(1, 10**12))
    if cert.exact:  # circular, stride 1, kernel within the grid: equal up to rounding
        assert cert.bound <= float(exact) * (1 + 1e-12)


@pytest.mark.parametrize("p", P_NORMS)
def test_sorting_and_coordinatewise_layers_are_1_lipschitz_in_every_norm(p):
    torch.manual_seed(0)
    x, y = torch.randn(2000, 8, dtype=torch.float64), torch.randn(2000, 8, dtype=torch.float64)
    order = {1: 1, math.inf: math.inf}[p]
    for layer in (GroupSort(2), GroupSort(4), FullSort(), nn.ReLU(), nn.Tanh()):
        assert lipschitz_bound(layer, (8,), p=p).bound == 1.0
        ratio = (layer(x) - layer(y)).norm(p=order, dim=1) / (x - y).norm(p=order, dim=1)
        assert float(ratio.max()) <= 1 + 1e-12, layer


def test_norm_pool_in_l1_and_linf():
    pool = NormPool(4)
    assert lipschitz_bound(pool, (8,), p=1).bound == 1.0
    assert lipschitz_bound(pool, (8,), p=math.inf).bound == 2.0  # sqrt(4), exact
    three = lipschitz_bound(NormPool(3), (6,), p="inf").bound
    assert three >= math.sqrt(3) and three == math.nextafter(math.sqrt(3), math.inf)
    x = torch.ones(1, 8, dtype=torch.float64)  # attains sqrt(4) in l-inf
    ratio = (pool(x) - pool(0 * x)).abs().max() / x.abs().max()
    assert float(ratio) == 2.0


@pytest.mark.parametrize("p", P_NORMS)
def test_orthogonal_layers_are_computed_not_assumed(p):
    torch.manual_seed(1)
    layer = BjorckLinear(16, 16, iters=30)
    cert = lipschitz_bound(layer, (16,), p=p)
    assert cert.bound > 1.2  # an orthogonal 16 x 16 matrix: l1 / l-inf norm up to 4
    exact = _exact_matrix_norm(layer.weight.detach(), p)
    assert Fraction(cert.bound) >= exact
    conv = BCOPConv2d(2, 4, 3, stride=2, iters=20)
    bound = lipschitz_bound(conv, (2, 6, 6), p=p).bound
    inner = conv.conv
    frozen = nn.Conv2d(  # the weights as certified (float32), as a plain layer
        inner.in_channels,
        inner.out_channels,
        inner.kernel_size,
        padding=inner.padding,
        padding_mode=inner.padding_mode,
        bias=False,
    )
    with torch.no_grad():
        frozen.weight.copy_(inner.weight)
    matrix = _operator(nn.Sequential(nn.PixelUnshuffle(2), frozen), (2, 6, 6))
    assert Fraction(bound) >= _exact_matrix_norm(matrix, p) * (1 - Fraction(1, 10**12))


@pytest.mark.parametrize("p", P_NORMS)
def test_whole_critic_never_below_measured_ratio(p):
    torch.manual_seed(2)
    critic = make_critic("conv-small", (1, 8, 8), out_features=3).double()
    cert = lipschitz_bound(critic, (1, 8, 8), p=p)
    x = torch.randn(256, 1, 8, 8, dtype=torch.float64)
    y = x + 1e-3 * torch.randn_like(x)
    order = 1 if p == 1 else math.inf
    with torch.no_grad():
        num = (critic(x) - critic(y)).norm(p=order, dim=1)
    den = (x - y).flatten(1).norm(p=order, dim=1)
    assert float((num / den).max()) <= cert.bound
    assert "L1" in cert.summary() or "L-inf" in cert.summary()
    assert cert.to_dict()["norm"] in ("l1", "linf")


def test_bad_norms_and_missing_rules_are_refused():
    with pytest.raises(ValueError, match="p must be 1, 2 or inf"):
        lipschitz_bound(nn.Linear(2, 2), (2,), p=3)

    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    register_lipschitz_rule(Scale, lambda m, s: (2.0, "exact: scale"))  # l2 only
    assert lipschitz_bound(Scale(), (3,)).bound == 2.0
    with pytest.raises(LipschitzBoundError, match="no l1 Lipschitz rule"):
        lipschitz_bound(Scale(), (3,), p=1)
    register_lipschitz_rule(Scale, lambda m, s: (2.0, "exact: scale"), p="inf")
    assert lipschitz_bound(Scale(), (3,), p=math.inf).bound == 2.0


@pytest.mark.parametrize("p", [1, math.inf, 2])
def test_circular_padding_wider_than_the_kernel_is_refused(p):
    """Was: p=1 certified 1.0 for an operator of l1 norm 4 (pixels repeated by the padding)."""
    conv = nn.Conv2d(1, 1, 1, padding=1, padding_mode="circular", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert _exact_matrix_norm(_operator(conv, (1, 2, 2)), 1) == 4
    with pytest.raises(LipschitzBoundError, match="circular Conv2d"):
        lipschitz_bound(conv, (1, 2, 2), p=p)
