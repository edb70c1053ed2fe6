import pytest
import torch
from torch import nn

from wassnet import conv_critic, dense_critic, make_critic
from wassnet.critics import PRESETS
from wassnet.nn import BCOPConv2d, BjorckLinear, lipschitz_bound


@pytest.mark.parametrize("arch", sorted(PRESETS))
def test_presets_are_certified_one_lipschitz(arch):
    shape = (1, 28, 28)
    critic = make_critic(arch, shape, out_features=10)
    assert critic(torch.randn(2, *shape)).shape == (2, 10)
    p = "inf" if arch == "linf-dist" else 2  # l-inf-distance neurons: built for l-inf
    assert lipschitz_bound(critic.eval(), shape, p=p).bound <= 1 + 1e-4


def test_dense_critic_structure_and_activations():
    critic = dense_critic(3, hidden=(12, 12), activation="fullsort")
    assert sum(isinstance(m, BjorckLinear) for m in critic) == 3
    assert critic(torch.randn(5, 3)).shape == (5, 1)
    relu = dense_critic(3, hidden=(8,), activation="relu")
    assert any(isinstance(m, nn.ReLU) for m in relu)


def test_unconstrained_baseline_uses_plain_layers():
    critic = conv_critic(
        (1, 8, 8), channels=((4, 3, 2),), hidden=(8,), constraint="none", activation="relu"
    )
    assert not any(isinstance(m, (BCOPConv2d, BjorckLinear)) for m in critic.modules())
    assert critic(torch.randn(2, 1, 8, 8)).shape == (2, 1)
    lipschitz_bound(critic, (1, 8, 8))  # still certifiable (the bound is just not 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_critic("nope", 3), "unknown architecture"),
        (lambda: make_critic("dense", 3, constraint="lipschitz"), "unknown constraint"),
        (lambda: dense_critic(3, hidden=(7,)), "divisible"),
        (lambda: dense_critic(0), "input_shape"),
        (lambda: dense_critic(3, activation="elu"), "unknown activation"),
        (lambda: dense_critic(3, constraint="spectral"), "unknown constraint"),
        (lambda: conv_critic((1, 7, 7), channels=((4, 3, 2),)), "even size"),
        (lambda: conv_critic((28, 28)), "C, H, W"),
        (lambda: conv_critic((1, 8, 8), channels=((4, 3, 3),)), "stride"),
    ],
)
def test_bad_configurations_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
