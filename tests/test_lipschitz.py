import math

import pytest
import torch
import torch.nn.functional as F
from conftest import exact_norm
from torch import nn

from wassnet import make_critic
from wassnet.nn import (
    BCOPConv2d,
    BjorckLinear,
    GroupSort,
    LipschitzBoundError,
    conv2d_operator_norm,
    lipschitz_bound,
    power_iteration_norm,
    register_lipschitz_rule,
)

TOL = 1e-4


def _conv_map(conv: nn.Conv2d):
    weight = conv.weight.detach().double()
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=False,
        padding_mode=conv.padding_mode,
    ).double()
    plain.weight = nn.Parameter(weight)
    return plain


def test_dense_bound_is_exact_svd():
    layer = nn.Linear(7, 5)
    cert = lipschitz_bound(layer, (7,))
    sigma = float(torch.linalg.svdvals(layer.weight.detach().double())[0])
    assert cert.bound == pytest.approx(sigma, rel=1e-8)
    assert cert.bound >= sigma
    assert cert.exact


@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [(4, 4), (5, 7), (3, 3)])
def test_circular_conv_bound_equals_exact_operator_norm(kernel, size):
    conv = nn.Conv2d(3, 4, kernel, padding="same", padding_mode="circular", bias=False)
    cert = lipschitz_bound(conv, (3, *size))
    exact = exact_norm(_conv_map(conv), (3, *size))
    assert cert.bound == pytest.approx(exact, rel=1e-7)
    assert cert.bound >= exact * (1 - 1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": 5, "padding": 2},
        {"kernel_size": 3, "padding": 0},
        {"kernel_size": 4, "padding": 1, "stride": 2},
        {"kernel_size": 3, "padding": 2, "dilation": 2},
        {"kernel_size": 3, "padding": 1, "stride": (2, 1)},
    ],
)
def test_zero_padded_conv_bound_is_an_upper_bound(kwargs):
    conv = nn.Conv2d(2, 3, bias=False, **kwargs)
    cert = lipschitz_bound(conv, (2, 6, 6))
    exact = exact_norm(_conv_map(conv), (2, 6, 6))
    assert cert.bound >= exact * (1 - 1e-12)
    assert cert.bound <= 1.5 * exact  # and not vacuous
    assert not cert.exact


@pytest.mark.parametrize("kernel, stride, size", [(4, 2, (6, 8)), (3, 2, (4, 4)), (5, 3, (6, 9))])
def test_strided_circular_conv_is_exact_by_polyphase(kernel, stride, size):
    conv = nn.Conv2d(2, 3, kernel, stride=stride, padding="valid", bias=False)
    conv.padding_mode = "circular"
    conv.padding = ((kernel - 1) // 2, (kernel - 1) // 2)
    conv._reversed_padding_repeated_twice = [kernel // 2, (kernel - 1) // 2] * 2
    cert = lipschitz_bound(conv, (2, *size))
    assert cert.exact
    assert cert.bound == pytest.approx(exact_norm(_conv_map_asym(conv), (2, *size)), rel=1e-7)


def _conv_map_asym(conv):
    weight = conv.weight.detach().double()
    pad = conv._reversed_padding_repeated_twice
    return lambda x: F.conv2d(F.pad(x, pad, mode="circular"), weight, stride=conv.stride)


def test_kernel_larger_than_input_is_folded_exactly():
    conv = nn.Conv2d(2, 2, 5, padding=2, padding_mode="circular", bias=False)
    cert = lipschitz_bound(conv, (2, 3, 3))
    assert cert.bound == pytest.approx(exact_norm(_conv_map(conv), (2, 3, 3)), rel=1e-7)


@pytest.mark.parametrize("mode", ["circular", "zeros"])
@pytest.mark.parametrize("kernel", [2, 3, 4, 6])
def test_bcop_bound_at_most_one_and_never_below_power_iteration(mode, kernel):
    layer = BCOPConv2d(3, 5, kernel, padding_mode=mode)
    cert = lipschitz_bound(layer, (3, 9, 9))
    assert cert.bound <= 1 + TOL
    power = power_iteration_norm(_conv_map(layer.conv), (3, 9, 9), iters=300)
    assert power <= cert.bound
    if mode == "circular":
        assert power == pytest.approx(1.0, abs=1e-6)


def _random_critics():
    return [
        ("dense", make_critic("dense-small", (10,), hidden=(32, 32)), (10,)),
        (
            "dense-img",
            make_critic("dense-small", (1, 8, 8), hidden=(64,), out_features=3),
            (1, 8, 8),
        ),
        (
            "conv",
            make_critic(
                "conv-small",
                (2, 8, 8),
                out_features=4,
                channels=((8, 3, 1), (8, 4, 2)),
                hidden=(16,),
            ),
            (2, 8, 8),
        ),
        (
            "conv-zeros",
            make_critic(
                "conv-small",
                (1, 8, 8),
                padding_mode="zeros",
                channels=((4, 5, 1), (8, 3, 2)),
                hidden=(8,),
            ),
            (1, 8, 8),
        ),
    ]


@pytest.mark.parametrize("index", range(4))
def test_whole_networks_stay_certified_through_training(index):
    name, critic, shape = _random_critics()[index]
    opt = torch.optim.Adam(critic.parameters(), lr=0.05)
    bounds = [lipschitz_bound(critic, shape).bound]
    for _ in range(10):
        opt.zero_grad()
        x = torch.randn(16, *shape)
        loss = -(critic(x) ** 2).mean()  # pushes towards the largest possible slope
        loss.backward()
        opt.step()
        bounds.append(lipschitz_bound(critic, shape).bound)
    assert max(bounds) <= 1 + TOL, (name, bounds)
    cert = lipschitz_bound(critic, shape)
    assert cert.bound == pytest.approx(math.prod(layer.bound for layer in cert.layers))
    # an empirical slope can never beat the certificate
    x, y = torch.randn(64, *shape), torch.randn(64, *shape)
    with torch.no_grad():
        slopes = (critic(x) - critic(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert slopes.max() <= cert.bound


def test_breakdown_names_and_shapes():
    net = nn.Sequential(
        BCOPConv2d(1, 4, 3, stride=2), GroupSort(2), nn.Flatten(), BjorckLinear(64, 10)
    )
    cert = lipschitz_bound(net, (1, 8, 8))
    assert [layer.name for layer in cert.layers] == ["0", "1", "2", "3"]
    assert [layer.layer for layer in cert.layers] == [
        "BCOPConv2d",
        "GroupSort",
        "Flatten",
        "BjorckLinear",
    ]
    assert cert.layers[0].output_shape == (4, 4, 4)
    assert cert.layers[3].input_shape == (64,)
    assert set(cert.to_dict()) == {"bound", "norm", "input_shape", "layers"}
    assert cert.to_dict()["norm"] == "l2"
    assert "certified" in cert.summary()


def test_unconstrained_layers_are_reported_not_assumed():
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.copy_(3 * torch.eye(4))
    net = nn.Sequential(layer, nn.ReLU(), nn.LeakyReLU(2.0), nn.Sigmoid())
    assert lipschitz_bound(net, (4,)).bound == pytest.approx(3 * 2 * 0.25, rel=1e-8)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 3)

    def forward(self, x):
        return x + self.inner(x)


@pytest.mark.parametrize(
    "model, message",
    [
        (nn.Sequential(nn.Linear(3, 3), nn.ELU()), "ELU"),
        (_Residual(), "_Residual"),
        (nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "padding_mode"),
        (nn.Conv2d(2, 2, 3, padding=1, groups=2), "groups"),
        (nn.Conv2d(1, 1, 3, padding=2, padding_mode="circular"), "keeps the spatial size"),
    ],
)
def test_unknown_layers_raise(model, message):
    shape = (3,) if not isinstance(model, nn.Conv2d) else (model.in_channels, 6, 6)
    with pytest.raises(LipschitzBoundError, match=message):
        lipschitz_bound(model, shape)


def test_register_rule_for_new_layer():
    class Halve(nn.Module):
        def forward(self, x):
            return x / 2

    register_lipschitz_rule(Halve, lambda m, s: (0.5, "exact: scaling"))
    assert lipschitz_bound(nn.Sequential(Halve(), Halve()), (3,)).bound == 0.25


def test_conv2d_operator_norm_matches_explicit_matrix():
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    norm = conv2d_operator_norm(kernel, (5, 6), chunk=7)  # tiny chunks exercise the loop
    explicit = exact_norm(
        lambda x: F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), kernel), (2, 5, 6)
    )
    assert norm == pytest.approx(explicit, rel=1e-9)
