"""Lipschitz bounds that cannot be contradicted: faithful modules, verified norms.

* Modules whose function may differ from their type's (hooks, overridden forwards,
  undeclared subclasses) are refused by ``lipschitz_bound`` and ``export`` with a
  ``LipschitzBoundError`` that names the module.
* Bounds are checked in exact rational arithmetic: ``B^2 I - W^T W`` must be positive
  semidefinite for the bound ``B`` of a matrix ``W`` (an exact LDL^T in ``Fraction`` s),
  on the explicit operator matrix for convolutions.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import examples, operator_matrix
from exact_reference import norm_at_most
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wassnet.certify import certified_radius
from wassnet.nn import (
    BjorckLinear,
    GroupSort,
    LipschitzBoundError,
    MaxMin,
    conv2d_operator_norm,
    export,
    lipschitz_bound,
    spectral_norm_upper,
)


@settings(max_examples=examples(60), deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.sampled_from([1.0, 1e-8, 1e8, 1e-150]),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_verified_norm_is_never_below_the_exact_norm(m, n, scale, seed, structured):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(m, n)) * scale
    if structured:  # orthogonal rows/columns: the norm is 1 exactly in exact arithmetic
        q, _ = np.linalg.qr(rng.normal(size=(max(m, n), max(m, n))))
        w = q[:m, :n]
    bound = spectral_norm_upper(torch.as_tensor(w))
    assert norm_at_most(w, bound)
    assert bound <= np.linalg.svd(w, compute_uv=False)[0] * (1 + 1e-12) + 1e-300


def test_the_exact_check_can_fail():
    """The oracle is not vacuous: a value slightly below the norm is rejected."""
    w = np.array([[1.0, 0.0], [0.0, 0.5]])
    assert norm_at_most(w, 1.0)
    assert not norm_at_most(w, math.nextafter(1.0, 0.0))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3))
    bound = spectral_norm_upper(torch.as_tensor(w))
    assert not norm_at_most(w, bound * (1 - 1e-12))


@pytest.mark.parametrize(
    ("cin", "cout", "k", "grid"), [(1, 2, 3, (4, 4)), (2, 2, 2, (3, 5)), (2, 1, 5, (3, 3))]
)
def test_conv_bound_is_above_the_exact_operator_norm(cin, cout, k, grid):
    """Kernels larger than the grid alias: the explicit operator matrix is the reference."""
    torch.manual_seed(cin + 10 * k)
    kernel = torch.randn(cout, cin, k, k, dtype=torch.float64)
    bound = conv2d_operator_norm(kernel, grid)
    pad = (k - 1) // 2, k - 1 - (k - 1) // 2

    def conv(x):
        x = torch.nn.functional.pad(x, (pad[1], pad[0], pad[1], pad[0]), mode="circular")
        return torch.nn.functional.conv2d(x, kernel)

    if k > min(grid):  # circular padding beyond the grid: wrap by tiling

        def conv(x):
            tiled = x.repeat(1, 1, 3, 3)
            h, w = grid
            out = torch.nn.functional.conv2d(tiled, kernel)
            return out[:, :, h - pad[0] : 2 * h - pad[0], w - pad[1] : 2 * w - pad[1]]

    matrix = operator_matrix(conv, (cin, *grid)).numpy()
    assert norm_at_most(matrix, bound)
    assert bound <= np.linalg.svd(matrix, compute_uv=False)[0] * (1 + 1e-12)


def _mutated_conv(draw_padding, padding_mode, kernel, stride, dilation, seed) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(2, 2, kernel, padding=(kernel - 1) // 2, padding_mode=padding_mode)
    conv = conv.double()
    conv.bias = None  # the explicit matrix is that of the linear part
    conv.padding = draw_padding
    conv.stride = stride
    conv.dilation = dilation
    return conv


@settings(max_examples=examples(50), deadline=None)
@given(
    padding=st.one_of(
        st.integers(0, 4),
        st.tuples(st.integers(0, 4), st.integers(0, 4)),
        st.sampled_from(["same", "valid"]),
    ),
    padding_mode=st.sampled_from(["zeros", "circular"]),
    kernel=st.integers(1, 5),
    stride=st.sampled_from([1, 2, (1, 2)]),
    dilation=st.sampled_from([1, 2]),
    seed=st.integers(0, 10**6),
    p=st.sampled_from([1, 2, math.inf]),
)
def test_conv_attributes_changed_after_construction_are_bounded_as_they_run(
    padding, padding_mode, kernel, stride, dilation, seed, p
):
    """Regression: the bound followed the constructor's padding (a 5x5 conv certified
    12.08 for an operator of norm 12.54). ``padding``, ``stride`` and ``dilation``
    changed later are read as the forward pass reads them, in every norm."""
    conv = _mutated_conv(padding, padding_mode, kernel, stride, dilation, seed)
    shape = (2, 5, 6)
    try:
        matrix = operator_matrix(conv, shape).numpy()
    except RuntimeError:  # a geometry torch itself cannot run (e.g. 'same' with stride 2)
        with pytest.raises(LipschitzBoundError):
            lipschitz_bound(conv, shape, p=p)
        return
    try:
        bound = lipschitz_bound(conv, shape, p=p).bound
    except LipschitzBoundError:  # refused (e.g. circular padding wider than the kernel)
        return
    if p == 2:
        assert norm_at_most(matrix, bound)
    else:
        rows = [[Fraction(float(v)) for v in row] for row in matrix]
        sums = (
            [sum(abs(r[j]) for r in rows) for j in range(len(rows[0]))]
            if p == 1
            else [sum(abs(v) for v in r) for r in rows]
        )
        assert Fraction(bound) >= max(sums)


def test_a_padding_widened_after_construction_raises_the_bound():
    """The issue's case in miniature: the constructor's padding (0) gave a bound 30%
    below the operator the layer computes once its padding is widened to 4."""
    torch.manual_seed(181)
    conv = nn.Conv2d(1, 1, 5, padding=0, bias=False).double()
    before = lipschitz_bound(conv, (1, 5, 5)).bound
    conv.padding = (4, 4)
    exact = float(np.linalg.svd(operator_matrix(conv, (1, 5, 5)).numpy(), compute_uv=False)[0])
    after = lipschitz_bound(conv, (1, 5, 5)).bound
    assert before * 1.3 < exact <= after
    assert norm_at_most(operator_matrix(conv, (1, 5, 5)).numpy(), after)
    exported = export(conv)
    x = torch.randn(3, 1, 5, 5, dtype=torch.float64)
    assert torch.equal(exported(x), conv(x))
    assert lipschitz_bound(exported, (1, 5, 5)).bound == after


def test_circular_padding_changed_after_construction_exports_as_it_runs():
    """Circular convs pad by the list the constructor set: the export copies it."""
    conv = nn.Conv2d(2, 3, 5, padding=2, padding_mode="circular").double()
    conv.padding = (0, 0)  # not read by a circular forward
    exported = export(conv)
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    assert torch.equal(exported(x), conv(x))
    assert lipschitz_bound(exported, (2, 7, 7)).bound == lipschitz_bound(conv, (2, 7, 7)).bound


def test_layer_bounds_and_products_round_up():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    cert = lipschitz_bound(net, (3,))
    for layer, module in zip(cert.layers[::2], (net[0], net[2]), strict=True):
        assert norm_at_most(module.weight.detach().double().numpy(), layer.bound)
    assert Fraction(cert.bound) >= Fraction(cert.layers[0].bound) * Fraction(cert.layers[2].bound)


# ----------------------------------------------------------------------------- refusals


class Linear10(nn.Linear):
    def forward(self, x):
        return 10 * super().forward(x)


class Bjorck10(BjorckLinear):
    lipschitz_inherits_rule = True

    def forward(self, x):
        return 10 * super().forward(x)


class Sort5(GroupSort):
    def forward(self, x):
        return 5 * super().forward(x)


class DeclaredLinear(nn.Linear):
    """Same function as nn.Linear, and says so."""

    lipschitz_inherits_rule = True


class UndeclaredLinear(nn.Linear):
    pass


def _hooked_bjorck():
    layer = BjorckLinear(4, 4)
    layer.register_forward_hook(lambda m, i, o: 100 * o)
    return layer


def _pre_hooked_linear():
    layer = nn.Linear(4, 4)
    layer.register_forward_pre_hook(lambda m, args: (50 * args[0],))
    return layer


def _hooked_sequential():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    net.register_forward_hook(lambda m, i, o: 30 * o)
    return net


def _instance_forward():
    layer = nn.Linear(4, 4)
    plain = layer.forward
    layer.forward = lambda x: 7 * plain(x)
    return layer


def _train_dropout_p1():
    return nn.Sequential(nn.Linear(4, 4), nn.Dropout(p=1.0)).train()


def _compiled_instance():
    """What ``nn.Module.compile()`` leaves: calls run ``_compiled_call_impl``, not forward."""
    layer = nn.Linear(4, 4)
    layer._compiled_call_impl = lambda x: 100 * x
    return nn.Sequential(layer, nn.ReLU())


def _module_compile():
    layer = nn.Linear(4, 4)
    layer.compile()  # lazy: nothing is compiled before the first call
    return nn.Sequential(layer, nn.ReLU())


REFUSED = {
    "Linear subclass x10": (lambda: Linear10(4, 4), "Linear10"),
    "BjorckLinear subclass x10": (lambda: Bjorck10(4, 4), "overrides forward"),
    "GroupSort subclass x5": (lambda: nn.Sequential(nn.Linear(4, 4), Sort5(2)), "Sort5"),
    "undeclared subclass": (lambda: UndeclaredLinear(4, 4), "lipschitz_inherits_rule"),
    "forward hook": (_hooked_bjorck, "forward hooks"),
    "forward pre-hook": (_pre_hooked_linear, "forward pre-hooks"),
    "hook on a Sequential": (_hooked_sequential, "forward hooks"),
    "instance forward": (_instance_forward, "on the instance"),
    "dropout p=1 in training": (_train_dropout_p1, "p = 1"),
    "uninitialized lazy layer": (lambda: nn.LazyLinear(4), "LazyLinear|lazy"),
    "compiled call on the instance": (_compiled_instance, "compiled"),
    "nn.Module.compile()": (_module_compile, "compiled"),
}


def measured_ratio(model: nn.Module, dim: int, pairs: int = 200) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(pairs, dim, generator=gen)
    y = x + torch.randn(pairs, dim, generator=gen) * 0.1
    with torch.no_grad():
        return float(((model(x) - model(y)).norm(dim=1) / (x - y).norm(dim=1)).max())


@pytest.mark.parametrize("case", list(REFUSED))
def test_unfaithful_modules_are_refused_by_bound_and_export(case):
    build, message = REFUSED[case]
    model = build()
    with pytest.raises(LipschitzBoundError, match=message):
        lipschitz_bound(model, (4,))
    if case not in ("uninitialized lazy layer", "dropout p=1 in training"):  # export: same function
        with pytest.raises(LipschitzBoundError):
            export(model)


@pytest.mark.parametrize(
    "case",
    [
        "Linear subclass x10",
        "forward hook",
        "forward pre-hook",
        "hook on a Sequential",
        "instance forward",
        "compiled call on the instance",
    ],
)
def test_refused_modules_really_exceed_their_types_bound(case):
    """The refusals are not cosmetic: each of these modules is far from 1-Lipschitz."""
    build, _ = REFUSED[case]
    assert measured_ratio(build(), 4) > 2.0


def test_global_forward_hooks_are_refused():
    from torch.nn.modules.module import register_module_forward_hook

    handle = register_module_forward_hook(lambda m, i, o: o)
    try:
        with pytest.raises(LipschitzBoundError, match="global forward hooks"):
            lipschitz_bound(nn.Linear(3, 3), (3,))
    finally:
        handle.remove()
    lipschitz_bound(nn.Linear(3, 3), (3,))


def test_declared_subclasses_and_backward_hooks_are_accepted():
    layer = DeclaredLinear(4, 4)
    layer.register_full_backward_hook(lambda m, gi, go: None)  # does not change the function
    net = nn.Sequential(layer, MaxMin(), BjorckLinear(4, 4))
    cert = lipschitz_bound(net, (4,))
    assert cert.bound >= measured_ratio(net, 4)
    plain = export(net)
    x = torch.randn(5, 4)
    assert torch.allclose(plain(x), net(x), atol=1e-6)


def test_lazy_layer_after_a_forward_pass_is_a_linear():
    layer = nn.LazyLinear(3)
    layer(torch.zeros(1, 5))
    assert lipschitz_bound(layer, (5,)).bound >= measured_ratio(layer, 5)


def test_certified_radius_rounds_down():
    """radius = margin / (sqrt(2) L): the division by an upward-rounded denominator
    and a downward step keep it below the exact quotient."""
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    x = torch.tensor([[0.3, 0.1]])
    radius = float(certified_radius(net, x)[0])
    margin = Fraction(float(np.float32(0.3))) - Fraction(float(np.float32(-0.1)))
    bound = Fraction(lipschitz_bound(net, (2,)).bound)
    # radius <= margin / (sqrt(2) L)  <=>  radius^2 * 2 * L^2 <= margin^2 (all exact)
    assert Fraction(radius) ** 2 * 2 * bound**2 <= margin**2


# ----------------------------------------------------------------------------- red-team


def test_tiny_and_huge_weights_are_bounded_exactly():
    for s in (1e-200, 3.4e-162, 1e200, 5e-324):
        w = np.array([[s, -s / 3], [s / 7, s]])
        assert norm_at_most(w, spectral_norm_upper(torch.as_tensor(w)))
    lin = nn.Linear(1, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1e-170], [-1e-170]], dtype=torch.float64))
        lin.bias.copy_(torch.tensor([1e-160, 0.0], dtype=torch.float64))
    assert lipschitz_bound(lin, (1,)).bound >= math.sqrt(2) * 1e-170
    radius = float(certified_radius(lin, torch.zeros(1, 1, dtype=torch.float64))[0])
    assert radius < 1e11  # at -1e11 the prediction changes


@pytest.mark.parametrize("fill", [1e160, float("inf"), float("nan")])
def test_huge_or_non_finite_kernels_are_bounded_or_refused(fill):
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular").double()
    with torch.no_grad():
        conv.weight.fill_(fill)
    if math.isfinite(fill):
        assert lipschitz_bound(conv, (1, 4, 4)).bound >= 9 * fill  # the all-ones frequency
    else:
        with pytest.raises(LipschitzBoundError, match="non-finite"):
            lipschitz_bound(conv, (1, 4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        spectral_norm_upper(
            torch.tensor([[fill, 0.0]]) * (0 if math.isfinite(fill) else 1) + float("nan")
        )


def test_hooks_inside_a_bcop_layer_and_fake_parametrizations_are_refused():
    from wassnet.nn import BCOPConv2d

    layer = BCOPConv2d(2, 2, 3)
    layer.conv.register_forward_hook(lambda m, i, o: 100 * o)
    with pytest.raises(LipschitzBoundError, match="forward hooks"):
        lipschitz_bound(layer, (2, 6, 6))

    evil = Linear10(2, 2)
    evil.parametrizations = nn.ModuleDict({"weight": nn.ModuleList([nn.Identity()])})
    with pytest.raises(LipschitzBoundError, match="Linear10"):
        lipschitz_bound(evil, (2,))
    with pytest.raises(LipschitzBoundError):
        export(evil)


def test_nan_slopes_and_unrunnable_shapes_are_refused():
    with pytest.raises(LipschitzBoundError, match="non-finite slope"):
        lipschitz_bound(nn.LeakyReLU(float("nan")), (2,))
    with pytest.raises(LipschitzBoundError, match="cannot run"):
        lipschitz_bound(nn.Linear(3, 2), (4,))


# ----------------------------------------------------------------------------- red team (A1-A5)


def _doubler() -> nn.Linear:
    layer = nn.Linear(2, 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(2 * torch.eye(2, dtype=torch.float64))
    return layer


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_a_module_repeated_in_a_sequential_counts_each_time(p):
    """``named_children`` drops repeats; the forward pass runs every entry."""
    layer = _doubler()
    for net in (nn.Sequential(layer, layer), nn.Sequential(nn.Sequential(layer), layer)):
        cert = lipschitz_bound(net, (2,), p=p)
        assert len(cert.layers) == 2 and cert.bound >= 4.0
        x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        assert torch.equal(export(net)(x), net(x))  # 4x, not 2x


def test_hidden_children_and_overridden_exports_are_not_trusted():
    from wassnet.nn import AOLLinear, SLLLinear

    big = nn.Linear(2, 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        big.weight.copy_(10 * torch.eye(2, dtype=torch.float64))

    class Hiding(nn.Sequential):
        def named_children(self):
            return ((n, m) for n, m in super().named_children() if m is not big)

    net = Hiding(SLLLinear(2, dtype=torch.float64), big)
    assert lipschitz_bound(net, (2,)).bound >= 10.0  # every layer the forward runs
    layer = AOLLinear(3, 3, dtype=torch.float64)
    tiny = nn.Linear(3, 3, dtype=torch.float64)
    layer.export = lambda: tiny
    with pytest.raises(LipschitzBoundError, match="export"):
        lipschitz_bound(layer, (3,))
    with pytest.raises(LipschitzBoundError, match="export"):
        export(layer)

    class Declared(AOLLinear):
        lipschitz_inherits_rule = True

        def export(self):
            return tiny

    with pytest.raises(LipschitzBoundError, match="overrides export"):
        lipschitz_bound(Declared(3, 3, dtype=torch.float64), (3,))


def test_random_or_hooked_parametrizations_are_refused():
    from torch.nn.utils import parametrize

    from wassnet.nn import AOLLinear

    layer = nn.Linear(2, 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2, dtype=torch.float64))
    parametrize.register_parametrization(layer, "weight", nn.Dropout(0.5))  # training mode
    state = torch.get_rng_state()
    with pytest.raises(LipschitzBoundError, match="different weight"):
        lipschitz_bound(layer, (2,))
    assert torch.equal(torch.get_rng_state(), state)  # the check draws on a forked stream
    layer.parametrizations.weight[0].eval()  # dropout in eval mode: the identity
    assert lipschitz_bound(layer, (2,)).bound >= 1.0
    hooked = AOLLinear(3, 3, dtype=torch.float64)
    hooked.parametrizations.weight[0].register_forward_hook(lambda m, i, o: 10 * o)
    with pytest.raises(LipschitzBoundError, match="parametrization"):
        lipschitz_bound(hooked, (3,))
    with pytest.raises(LipschitzBoundError, match="parametrization"):
        export(hooked)


def test_layers_whose_state_a_rule_cannot_read_are_refused_in_one_line():
    from torch.nn.utils import parametrize

    from wassnet.nn import AOLConv2d, AOLLinear, CPLLinear

    conv = AOLConv2d(2, 2, 3)
    conv.stride, conv.padding = (2, 2), "same"  # torch cannot run (nor rebuild) this
    for module, shape in ((conv, (2, 6, 6)),):
        with pytest.raises(LipschitzBoundError):
            lipschitz_bound(module, shape)
        with pytest.raises(LipschitzBoundError):
            export(module)
    cpl = CPLLinear(3, 3)
    cpl.u = torch.ones(4, dtype=torch.float64)  # another shape and dtype than the weight's
    with pytest.raises(LipschitzBoundError):
        lipschitz_bound(cpl, (3,))
    removed = AOLLinear(3, 3)
    parametrize.remove_parametrizations(removed, "weight")
    with pytest.raises(LipschitzBoundError):
        lipschitz_bound(removed, (3,))
