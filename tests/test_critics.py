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


# ------------------------------------------------- one factory, the registry, the set-up


def test_population_families_are_one_registry_matching_the_cli_names():
    from wassnet.w1.critic_fit import POPULATION_FAMILIES
    from wassnet.w1.options import CRITICS

    assert POPULATION_FAMILIES.names() == CRITICS  # the torch-free list offers the same
    with pytest.raises(ValueError, match="unknown critic family 'nope'"):
        POPULATION_FAMILIES["nope"]
    reads = {name for name in CRITICS if POPULATION_FAMILIES[name].reads_subspace}
    assert reads == {"projection", "subspace"}


def test_a_registered_family_is_fitted_through_its_entry(monkeypatch):
    import math

    import numpy as np

    import wassnet.w1.critic_fit as critic_fit
    from wassnet.critics import FamilyRegistry, PopulationFamily
    from wassnet.w1 import PopulationOptions

    calls = []

    def fit(family, fold):
        calls.append((family.name, fold.metric, len(fold.data.fit_a)))
        return family.build(3, fold.options, None), 0.5, 7

    zero = PopulationFamily("zero", fit, build=lambda dim, options, norm: nn.Sequential())
    registry = FamilyRegistry("critic family", [zero])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(zero)
    monkeypatch.setattr(critic_fit, "POPULATION_FAMILIES", registry)
    a, b = torch.randn(40, 3), torch.randn(40, 3)
    data = critic_fit._split(a, b, 0.25, np.random.default_rng(0))
    options = PopulationOptions()
    fitted = critic_fit._fit_family(
        "zero", data, options, math.inf, torch.Generator(), 0, "cityblock"
    )
    assert fitted[1:] == (0.5, 7) and calls == [("zero", "cityblock", 30)]


@pytest.mark.parametrize("metric", ["euclidean", "cityblock"])
def test_population_networks_come_from_the_one_factory(metric):
    """The dense and conv families are make_critic presets: the same layers, made in the
    same order from the same random draws, as the builders called directly."""
    from wassnet.critics import conv_critic
    from wassnet.w1 import PopulationOptions
    from wassnet.w1.critic_fit import build_critic

    plain = {} if metric == "euclidean" else {"constraint": "none"}
    options = PopulationOptions(hidden=(8, 8), image_shape=(1, 4, 4), critics=("dense", "conv"))
    torch.manual_seed(0)
    ours = build_critic("dense", 5, options, metric).state_dict()
    torch.manual_seed(0)
    direct = dense_critic(5, (8, 8), activation="maxmin", iters=options.iters, **plain)
    assert all(torch.equal(ours[k], v) for k, v in direct.state_dict().items())
    assert ours.keys() == direct.state_dict().keys()
    torch.manual_seed(1)
    ours = build_critic("conv", 16, options, metric)
    torch.manual_seed(1)
    direct = conv_critic((1, 4, 4), hidden=(8, 8), iters=options.iters, **plain)
    assert isinstance(ours[0], nn.Unflatten)
    got, want = nn.Sequential(*ours[1:]).state_dict(), direct.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("norm", ["1", "inf", 2])
def test_setup_projected_training_is_permutation_start_then_projection(norm):
    from wassnet.critics import setup_projected_training
    from wassnet.nn.projection import constrain, permutation_init_

    def build():
        torch.manual_seed(3)
        net = make_critic("dense-small", 6, constraint="projection", width=8)
        return net, torch.optim.Adam(net.parameters(), lr=0.1)

    net, opt = build()
    handle = setup_projected_training(net, opt, norm)
    twin, twin_opt = build()
    if norm == "1":
        permutation_init_(twin)
    constrain(twin_opt, twin, norm)
    for (k, v), w in zip(net.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    net(torch.randn(16, 6)).sum().backward()
    opt.step()
    p = {"1": 1, "inf": "inf", 2: 2}[norm]
    assert lipschitz_bound(net, (6,), p=p).bound <= 1 + 1e-5
    handle.remove()


def test_setup_projected_training_draws_like_the_jobs_did():
    """Same global random stream consumed as permutation_init_ + constrain."""
    from wassnet.critics import setup_projected_training

    torch.manual_seed(5)
    net = make_critic("dense-small", 6, constraint="projection", width=8)
    setup_projected_training(net, torch.optim.SGD(net.parameters(), lr=0.1), 1)
    after_setup = torch.rand(3)
    torch.manual_seed(5)
    net = make_critic("dense-small", 6, constraint="projection", width=8)
    from wassnet.nn.projection import permutation_init_

    permutation_init_(net)
    assert torch.equal(torch.rand(3), after_setup)
    kept = make_critic("dense-small", 6, constraint="projection", width=8)
    before = [w.clone() for w in kept.parameters()]
    opt = torch.optim.SGD(kept.parameters(), lr=0.1)
    setup_projected_training(kept, opt, 1, permutation_start=False)
    first = kept[0].weight  # l1-projected in place, not replaced by a permutation
    assert not torch.equal(first, before[0]) and int((first != 0).sum()) > first.shape[0]


def test_dual_step_is_one_ascent_step_with_an_optional_penalty():
    from wassnet.critics import dual_step

    torch.manual_seed(0)
    a, b = torch.randn(8, 3) + 1, torch.randn(8, 3)
    critic = dense_critic(3, hidden=(4,))
    twin = dense_critic(3, hidden=(4,))
    twin.load_state_dict(critic.state_dict())
    opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    step = dual_step(critic, opt, a, b, penalty=lambda: torch.tensor(2.0), penalty_weight=0.5)
    out = twin(torch.cat([a, b])).reshape(-1)
    dual = out[:8].mean() - out[8:].mean()
    assert torch.equal(step.dual.detach(), dual.detach())
    assert float(step.loss) == pytest.approx(float(-dual) + 1.0)
    assert float(step.penalty) == 2.0
    (-dual).backward()
    twin_opt.step()
    for got, want in zip(critic.parameters(), twin.parameters(), strict=True):
        assert torch.equal(got, want)
