import pytest
import torch
import torch.nn.functional as F

from wassnet.nn import BCOPConv2d
from wassnet.nn.bcop import compose_kernels


def _norm_ratios(module, x):
    with torch.no_grad():
        y = module(x)
    return y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5, 6, 7, 9])
@pytest.mark.parametrize("channels", [(4, 4), (3, 8), (1, 1), (5, 6)])
@pytest.mark.parametrize("size", [(8, 8), (7, 12)])
def test_circular_bcop_preserves_every_norm(kernel_size, channels, size):
    cin, cout = channels
    conv = BCOPConv2d(cin, cout, kernel_size, bias=False).double()
    x = torch.randn(6, cin, *size, dtype=torch.float64)
    torch.testing.assert_close(
        _norm_ratios(conv, x), torch.ones(6, dtype=torch.float64), rtol=1e-9, atol=0
    )
    assert conv(x).shape == (6, cout, *size)


@pytest.mark.parametrize("kernel_size", [2, 3, 4, 5])
def test_fewer_outputs_is_coisometry(kernel_size):
    conv = BCOPConv2d(8, 3, kernel_size, bias=False).double()
    x = torch.randn(4, 8, 6, 6, dtype=torch.float64)
    ratios = _norm_ratios(conv, x)
    assert (ratios <= 1 + 1e-9).all() and (ratios < 0.99).any()
    # the adjoint of a co-isometry is an isometry
    y = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (adj,) = torch.autograd.grad(conv(xr), xr, grad_outputs=y)
    torch.testing.assert_close(
        adj.flatten(1).norm(dim=1), y.flatten(1).norm(dim=1), rtol=1e-9, atol=0
    )


@pytest.mark.parametrize("kernel_size", [3, 4, 5])
def test_zero_padding_never_increases_norm(kernel_size):
    conv = BCOPConv2d(4, 4, kernel_size, padding_mode="zeros", bias=False).double()
    ratios = _norm_ratios(conv, torch.randn(16, 4, 6, 6, dtype=torch.float64))
    assert (ratios <= 1 + 1e-9).all()


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
def test_stride_two_uses_invertible_downsampling(kernel_size):
    conv = BCOPConv2d(3, 12, kernel_size, stride=2, bias=False).double()
    x = torch.randn(5, 3, 8, 10, dtype=torch.float64)
    assert conv(x).shape == (5, 12, 4, 5)
    torch.testing.assert_close(
        _norm_ratios(conv, x), torch.ones(5, dtype=torch.float64), rtol=1e-9, atol=0
    )
    with pytest.raises(ValueError, match="even spatial size"):
        conv(torch.randn(1, 3, 7, 8, dtype=torch.float64))


def test_gradients_reach_bcop_parameters_and_stay_orthogonal_after_steps():
    conv = BCOPConv2d(4, 4, 3, bias=False)
    opt = torch.optim.Adam(conv.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        loss = -conv(torch.randn(8, 4, 6, 6)).pow(2).mean()
        loss.backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())
    x = torch.randn(8, 4, 6, 6)
    torch.testing.assert_close(_norm_ratios(conv, x), torch.ones(8), rtol=2e-5, atol=0)


def test_compose_kernels_equals_sequential_application():
    k1 = torch.randn(5, 3, 2, 3, dtype=torch.float64)
    k2 = torch.randn(4, 5, 3, 2, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    sequential = F.conv2d(F.conv2d(x, k1), k2)
    composed = F.conv2d(x, compose_kernels(k1, k2))
    torch.testing.assert_close(composed, sequential)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": 3, "stride": 3}, "stride"),
        ({"kernel_size": 3, "padding_mode": "reflect"}, "padding_mode"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BCOPConv2d(2, 2, **kwargs)
