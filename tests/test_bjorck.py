import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from wassnet.nn import BjorckLinear, GroupSort, bjorck, bjorck_orthonormalize


@pytest.mark.parametrize("shape", [(16, 16), (8, 24), (24, 8)])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_orthonormal_rows_or_columns(shape, order):
    w = torch.randn(shape, dtype=torch.float64)
    q = bjorck_orthonormalize(w, iters=60, order=order)
    gram = q @ q.T if shape[0] <= shape[1] else q.T @ q
    torch.testing.assert_close(gram, torch.eye(min(shape), dtype=torch.float64), atol=1e-8, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 20),
    cols=st.integers(1, 20),
    iters=st.integers(0, 6),
    order=st.integers(1, 4),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 10_000),
)
def test_safe_scaling_never_exceeds_one(rows, cols, iters, order, scale, seed):
    """Even far from convergence, safe scaling keeps every singular value <= 1."""
    gen = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    q = bjorck_orthonormalize(w, iters=iters, order=order)
    assert torch.linalg.svdvals(q)[0] <= 1 + 1e-12


def test_unsafe_scaling_can_diverge_and_bad_arguments_raise():
    w = 3 * torch.eye(4)
    assert not torch.isfinite(bjorck_orthonormalize(w, iters=8, scaling="none")).all()
    assert torch.isfinite(bjorck_orthonormalize(w, iters=8)).all()
    with pytest.raises(ValueError, match="scaling"):
        bjorck_orthonormalize(w, scaling="bogus")
    with pytest.raises(ValueError, match="matrix"):
        bjorck_orthonormalize(torch.ones(3))
    with pytest.raises(ValueError, match="iters"):
        bjorck_orthonormalize(w, iters=-1)
    with pytest.raises(ValueError, match="2-D"):
        bjorck(nn.Conv2d(2, 2, 3))


def test_bjorck_parametrization_on_plain_linear():
    layer = bjorck(nn.Linear(6, 6))
    assert isinstance(layer, nn.Linear)
    assert parametrize.is_parametrized(layer, "weight")
    torch.testing.assert_close(layer.weight @ layer.weight.T, torch.eye(6), atol=1e-5, rtol=0)
    with parametrize.cached():
        first = layer.weight
        assert layer.weight is first  # computed once per cached block


def test_square_layers_with_groupsort_preserve_gradient_norm():
    torch.set_default_dtype(torch.float64)
    try:
        net = nn.Sequential(
            BjorckLinear(32, 32),
            GroupSort(4),
            BjorckLinear(32, 32),
            GroupSort(2),
            BjorckLinear(32, 32),
        )
        x = torch.randn(8, 32, requires_grad=True)
        v = torch.randn(8, 32)
        (g,) = torch.autograd.grad(net(x), x, grad_outputs=v)
        torch.testing.assert_close(g.norm(dim=1), v.norm(dim=1), rtol=1e-6, atol=0)
    finally:
        torch.set_default_dtype(torch.float32)


def test_rectangular_layers_are_isometry_or_coisometry():
    tall = BjorckLinear(8, 20, bias=False)
    x = torch.randn(5, 8)
    torch.testing.assert_close(tall(x).norm(dim=1), x.norm(dim=1), rtol=1e-5, atol=0)
    wide = BjorckLinear(20, 8, bias=False)
    v = torch.randn(5, 8)
    torch.testing.assert_close((v @ wide.weight).norm(dim=1), v.norm(dim=1), rtol=1e-5, atol=0)
