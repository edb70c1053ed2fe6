"""l-inf-distance neurons (wassnet.nn.linf): exact Lipschitz ratios, the bound rules
against their definitions, the compiled kernel against float64, the relaxation
schedule, refusals, certified points under l-inf PGD, and `classify` on a few MNIST
images."""

from __future__ import annotations

import copy
import json
import math
from fractions import Fraction

import pytest
import torch
from click.testing import CliRunner
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from wassnet import make_critic
from wassnet.certify import TrainConfig, attack_certified, certified_radius, train_classifier
from wassnet.cli import main
from wassnet.nn import (
    LinfDistLinear,
    LipschitzBoundError,
    MeanShift,
    export,
    linf,
    linf_dist,
    lipschitz_bound,
    relaxation_p,
    set_relaxation_p_,
)

pytestmark = pytest.mark.usefixtures("one_thread")

INF = math.inf


def _layer(n: int, m: int, seed: int, p: float = INF, dtype=torch.float64) -> LinfDistLinear:
    torch.manual_seed(seed)
    layer = LinfDistLinear(n, m, p=p).to(dtype)
    with torch.no_grad():
        layer.bias.normal_()
    return layer


def _exact_outputs(layer: LinfDistLinear, x: list[float]) -> list[Fraction]:
    """``||x - w_j||_inf + b_j`` in exact rationals."""
    xs = [Fraction(v) for v in x]
    out = []
    for row, b in zip(layer.weight.tolist(), layer.bias.tolist(), strict=True):
        out.append(
            max(abs(xi - Fraction(wi)) for xi, wi in zip(xs, row, strict=True)) + Fraction(b)
        )
    return out


def _reference(x: torch.Tensor, w: torch.Tensor, p: float) -> torch.Tensor:
    """``||x_b - w_o||_p`` in float64, scaled by the maximum (no overflow at p = 1024)."""
    d = (x.double()[:, None, :] - w.double()[None]).abs()
    top = d.amax(-1)
    if p == INF:
        return top
    safe = torch.where(top > 0, top, torch.ones_like(top))
    return top * ((d / safe[..., None]) ** p).sum(-1) ** (1 / p)


@settings(max_examples=examples(40), deadline=None)
@given(
    n=st.integers(1, 6),
    m=st.integers(1, 5),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_linf_ratios_never_exceed_the_certified_bound_and_reach_it(n, m, seed, scale):
    layer = _layer(n, m, seed)
    bound = lipschitz_bound(layer, (n,), p=INF).bound
    assert bound == 1.0
    gen = torch.Generator().manual_seed(seed)
    for _ in range(5):
        x = (torch.randn(n, generator=gen, dtype=torch.float64) * scale).tolist()
        y = (torch.randn(n, generator=gen, dtype=torch.float64) * scale).tolist()
        gap = max(abs(Fraction(a) - Fraction(b)) for a, b in zip(x, y, strict=True))
        if gap == 0:
            continue
        ux, uy = _exact_outputs(layer, x), _exact_outputs(layer, y)
        ratio = max(abs(a - b) for a, b in zip(ux, uy, strict=True)) / gap
        assert ratio <= Fraction(bound)  # in exact arithmetic
    # the constant is exactly 1: x = w_0 but one coordinate, moved away from w_0 (the
    # largest |x - w_0|): that output moves by exactly the step
    x = layer.weight[0].tolist()
    y = list(x)
    x[0], y[0] = x[0] + 1.0, x[0] + 2.0
    ux, uy = _exact_outputs(layer, x), _exact_outputs(layer, y)
    assert abs(ux[0] - uy[0]) == abs(Fraction(x[0]) - Fraction(y[0])) > 0


@settings(max_examples=examples(30), deadline=None)
@given(
    n=st.integers(1, 40),
    m=st.integers(1, 4),
    k=st.integers(1, 10),
    seed=st.integers(0, 10**6),
)
def test_lp_relaxation_bound_is_the_verified_root_and_holds(n, m, k, seed):
    p = float(2**k)
    layer = _layer(n, m, seed, p=p)
    cert = lipschitz_bound(layer, (n,), p=INF)
    c = cert.bound
    # the definition: the smallest float with c^p >= n, proven in rationals
    assert Fraction(c) ** (2**k) >= n
    below = math.nextafter(c, 0.0)
    assert Fraction(below) ** (2**k) < n or c == 1.0
    # pairwise ratios (float64) stay below it, and x - y constant (with x - w_0 along
    # the same vector) attains it
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, n, generator=gen, dtype=torch.float64)
    y = torch.randn(8, n, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ratio = (layer(x) - layer(y)).abs().amax(1) / (x - y).abs().amax(1)
        assert float(ratio.max()) <= c * (1 + 1e-12)
        x0 = layer.weight[0:1] + 3.0
        tight = (layer(x0 + 1.0) - layer(x0))[0, 0]
    assert float(tight) == pytest.approx(n ** (1 / p), rel=1e-12)


def test_other_norms_get_honest_bounds_and_mean_shift_is_a_translation():
    layer = _layer(5, 7, 0, p=8.0)
    l2 = lipschitz_bound(layer, (5,), p=2).bound
    two_below = math.nextafter(math.nextafter(l2, 0), 0)
    assert Fraction(l2) ** 2 >= 7 and Fraction(two_below) ** 2 < 7  # sqrt(7), rounded up
    assert lipschitz_bound(layer, (5,), p=1).bound == 7.0
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 5, generator=gen).double(), torch.randn(20, 5, generator=gen).double()
    with torch.no_grad():
        diff = layer(x) - layer(y)
    assert bool(((diff.norm(dim=1) / (x - y).norm(dim=1)) <= l2).all())
    assert bool(((diff.abs().sum(1) / (x - y).abs().sum(1)) <= 7).all())
    shift = MeanShift(5).eval()
    for p in (1, 2, INF):
        assert lipschitz_bound(shift, (5,), p=p).bound == 1.0
    with pytest.raises(LipschitzBoundError, match="eval mode"):
        lipschitz_bound(shift.train(), (5,), p=INF)


@pytest.mark.parametrize("p", [INF, 2.0, 8.0, 1024.0])
@pytest.mark.parametrize("shape", [(7, 50, 13), (33, 784, 20)])
def test_kernel_matches_float64(p, shape):
    b, n, m = shape
    torch.manual_seed(0)
    x = torch.rand(b, n, dtype=torch.float64)
    w = torch.randn(m, n, dtype=torch.float64)
    g = torch.randn(b, m, dtype=torch.float64)
    ref_x, ref_w = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = _reference(ref_x, ref_w, p)
    gx, gw = torch.autograd.grad((ref * g).sum(), (ref_x, ref_w))
    # float32 (the C kernel): powers r^(p-1) carry p times the relative error of r
    tol32 = 2e-6 * (8 if p == INF else max(8, p))
    for dtype, tol in ((torch.float32, tol32), (torch.float64, 1e-12)):  # C kernel, torch
        xs, ws = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
        out = linf_dist(xs, ws, p)
        hx, hw = torch.autograd.grad((out * g.to(dtype)).sum(), (xs, ws))
        scale = float(ref.detach().abs().max())
        assert float((out.detach().double() - ref.detach()).abs().max()) <= tol * scale
        assert float((hx.double() - gx).abs().max()) <= tol * max(1.0, float(gx.abs().max()))
        assert float((hw.double() - gw).abs().max()) <= tol * max(1.0, float(gw.abs().max()))


def test_kernel_maximum_is_exact_in_float32():
    if not linf.native_linf_available():
        pytest.skip(f"no compiled kernel: {linf._NATIVE.failed}")
    torch.manual_seed(1)
    x, w = torch.rand(37, 100), torch.randn(45, 100)
    exact = (x[:, None, :] - w[None]).abs().amax(-1)  # the same float32 operations
    assert torch.equal(linf_dist(x, w, INF), exact)


def test_relaxation_schedule():
    assert [relaxation_p(s, 16) for s in range(18)] == [
        8.0, 8.0, 16.0, 16.0, 32.0, 32.0, 64.0, 64.0, 128.0, 128.0, 256.0, 256.0,
        512.0, 512.0, 1024.0, 1024.0, INF, INF,
    ]  # fmt: skip
    assert relaxation_p(0, 0) == INF and relaxation_p(5, 3) == INF
    values = [relaxation_p(s, 100) for s in range(101)]
    assert values == sorted(values) and values[0] == 8.0 and values[-2] == 1024.0
    net = make_critic("linf-dist", (4,), 3, hidden=(8, 8))
    assert set_relaxation_p_(net, 32.0) == 3
    assert all(float(m.p) == 32.0 for m in net.modules() if isinstance(m, LinfDistLinear))
    with pytest.raises(ValueError):
        relaxation_p(-1, 4)


@pytest.mark.parametrize("bad", [3.0, 1.0, 0.5, 2048.0, float("nan"), -INF])
def test_refusals(bad):
    with pytest.raises(ValueError, match="power of two"):
        LinfDistLinear(3, 2, p=bad)
    layer = LinfDistLinear(3, 2)
    with pytest.raises(ValueError, match="power of two"):
        layer.set_p_(bad)
    layer.p.fill_(bad)  # behind the setter's back: the certificate still refuses
    with pytest.raises(LipschitzBoundError, match="uncertified p"):
        lipschitz_bound(layer, (3,), p=INF)


def test_config_and_factory_refusals():
    with pytest.raises(ValueError, match="norm inf"):
        TrainConfig(arch="linf-dist")  # built for l-inf
    with pytest.raises(ValueError, match="norm inf"):
        TrainConfig(arch="linf-dist", norm="inf", constraint="projection")
    with pytest.raises(ValueError, match="linf-dist"):
        TrainConfig(relax_epochs=1)
    with pytest.raises(ValueError, match="exceeds"):
        TrainConfig(arch="linf-dist", norm="inf", epochs=2, relax_epochs=3)
    config = TrainConfig(arch="linf-dist", norm="inf", epochs=5)
    assert config.constraint == "orthogonal" and config.relax_epochs == 2
    old = TrainConfig(norm="inf").to_dict()
    del old["relax_epochs"]  # a config saved before the field existed
    assert TrainConfig.from_dict(old) == TrainConfig(norm="inf")
    with pytest.raises(ValueError, match="l-inf-distance"):
        make_critic("linf-dist", (4,), 2, constraint="projection")


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=gen)
    y = (x[:, 0] > 0.5).long() + 2 * (x[:, 1] > 0.5).long()
    return x, y


def test_trained_model_certificates_survive_linf_pgd(tmp_path, monkeypatch):
    x, y = _toy(512, 0)
    config = TrainConfig(
        arch="linf-dist", norm="inf", eps=0.05, epochs=20, relax_epochs=10, batch_size=64,
        lr=0.02,
    )  # fmt: skip
    from wassnet.certify import train as train_module

    original = train_module.make_classifier  # a small network: widths 32
    monkeypatch.setattr(
        train_module,
        "make_classifier",
        lambda arch, shape, k, **kw: original(arch, shape, k, hidden=(32, 32), **kw),
    )
    result = train_classifier(config, tmp_path / "run", data=(x, y), progress=False)
    model = result.model
    assert all(float(m.p) == INF for m in model.modules() if isinstance(m, LinfDistLinear))
    assert lipschitz_bound(model, (6,), p=INF).bound == 1.0
    xt, yt = _toy(300, 1)
    pred = certified_radius(model, xt, return_prediction=True, p=INF)[0]
    assert float((pred == yt).double().mean()) > 0.6
    # in float64: PGD reaches these tight certificates to within 1e-4 of the radius, where
    # a float32 forward pass (logits ~2, ulp 2e-7) may round across the boundary of a
    # point with a tiny margin (rounding of the forward pass is not certified)
    wide = copy.deepcopy(model).double()
    check = attack_certified(wide, xt.double(), p=INF, steps=30, restarts=2, beyond=3.0)
    assert check.attacked > 20 and check.broken == 0 and check.broken_beyond > 0
    plain = export(model)
    assert lipschitz_bound(plain, (6,), p=INF).bound == 1.0
    assert torch.equal(plain(xt), model(xt))


def test_cli_train_certify_export(mnist_root, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    trained = runner.invoke(
        main,
        [
            "classify", "train", "--arch", "linf-dist", "--norm", "inf", "--eps", "0.1",
            "--epochs", "2", "--limit", "128", "--batch-size", "64", "--lr", "0.02",
            "--eval-limit", "50", "--data-root", str(mnist_root), "--out", str(out),
            "--quiet", "--json",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    data = json.loads(trained.output)
    assert data["finished"] and data["config"]["relax_epochs"] == 1
    assert data["config"]["constraint"] == "orthogonal"
    assert data["test"]["lipschitz_bound"] == 1.0
    certified = runner.invoke(
        main,
        [
            "classify", "certify", "--checkpoint", str(out / "checkpoint.pt"), "--limit", "60",
            "--attack-limit", "20", "--attack-steps", "10", "--data-root", str(mnist_root),
            "--json",
        ],
    )  # fmt: skip
    assert certified.exit_code == 0, certified.output
    result = json.loads(certified.stdout)
    assert set(result["certified_accuracy"]) == {"0.1", "0.3"}  # the l-inf defaults
    assert result["attack"]["broken"] == 0
    exported = runner.invoke(
        main,
        [
            "classify", "export", "--checkpoint", str(out / "checkpoint.pt"), "--out",
            str(tmp_path / "m.pt2"), "--json",
        ],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    meta = json.loads(exported.output)
    assert meta["lipschitz_bound"] == 1.0 and meta["norm"] == "inf"
    program = torch.export.load(tmp_path / "m.pt2").module()
    assert program(torch.rand(3, 1, 28, 28)).shape == (3, 10)
