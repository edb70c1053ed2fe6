"""W1 between the distributions: the confidence bracket, its critics, its coverage.

Coverage is checked on small known-truth families over many independent draws, with
a tolerance a broken bracket fails (a lower end scored on the critics' training
points, a missing margin, a critic that is not 1-Lipschitz).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import wassnet.w1.population as population_module
from wassnet import dense_critic, estimate_w1
from wassnet.nn import NormPool, Translate, lipschitz_bound
from wassnet.w1 import PopulationOptions
from wassnet.w1.critic_fit import TransportCritic, build_critic, fit_critic

pytestmark = pytest.mark.usefixtures("one_thread")

#: Small and fast: few steps, a tiny dense critic.
QUICK = PopulationOptions(hidden=(16, 16), steps=120, eval_every=20, patience=2, time_budget=30)


def _translation(n: int, d: int, rng: np.random.Generator, shift: float = 1.0):
    t = np.zeros(d)
    t[0] = shift
    return rng.uniform(-1, 1, (n, d)), rng.uniform(-1, 1, (n, d)) + t


def _spheres(n: int, d: int, rng: np.random.Generator):
    def sphere(r: float) -> np.ndarray:
        g = rng.standard_normal((n, d))
        return r * g / np.linalg.norm(g, axis=1, keepdims=True)

    return sphere(1.0), sphere(2.0)


def _bracket(a, b, options=QUICK, seed=0):
    return estimate_w1(a, b, target="population", population=options, floor=False, seed=seed)


# ----------------------------------------------------------------------------- coverage


def test_coverage_on_translations():
    """30 draws, W1 = 0.5 exactly: the 95% bracket must hold in at least 26 (binomial
    tail P(X <= 25 | p = 0.95) < 1%), and the estimate be close."""
    options = PopulationOptions(critics=("linear",))
    hits, ratios = 0, []
    for draw in range(30):
        a, b = _translation(200, 3, np.random.default_rng([1, draw]), shift=0.5)
        p = _bracket(a, b, options, seed=draw).population
        hits += p.lower <= 0.5 <= p.upper
        ratios.append(p.estimate / 0.5)
        assert p.lower <= p.estimate <= p.upper
    assert hits >= 26, hits
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.08)


def test_lower_end_on_equal_laws_is_not_fooled_by_overfitting():
    """P == Q (W1 = 0): a dense critic fitted and scored on the same points would show a
    positive dual every time; held out, the lower end stays at 0 in >= 10 of 12 draws."""
    options = PopulationOptions(
        critics=("dense",), hidden=(16, 16), steps=60, eval_every=20, patience=10
    )
    positive = 0
    for draw in range(12):
        rng = np.random.default_rng([2, draw])
        a, b = rng.standard_normal((80, 4)), rng.standard_normal((80, 4))
        p = _bracket(a, b, options, seed=draw).population
        positive += p.lower > 0
        assert p.upper > 0
    assert positive <= 2, positive


def test_radial_critic_recovers_concentric_spheres():
    """Spheres of radius 1 and 2 in d = 8: W1 = 1, reached by the radial critic."""
    a, b = _spheres(400, 8, np.random.default_rng(3))
    p = _bracket(a, b).population
    assert {f.critic for f in p.folds} == {"radial"}
    assert p.lower <= 1.0 <= p.upper
    assert p.estimate == pytest.approx(1.0, rel=0.02)
    # the sample value overstates W1 between the distributions
    assert p.sample_upper > 1.2


def test_lower_end_never_exceeds_the_truth_by_more_than_its_margin():
    """Per fold, ``dual - lower`` is the stated margin; on a translation of W1 = 1 the
    fold duals stay below the truth plus a few margins (an unbiased estimate of <= W1)."""
    a, b = _translation(500, 2, np.random.default_rng(4))
    p = _bracket(a, b, PopulationOptions(critics=("linear",))).population
    for fold in p.folds:
        margin = fold.dual - fold.lower
        assert margin > 0
        assert fold.dual <= 1.0 + 3 * margin
        assert fold.stderr > 0


# ----------------------------------------------------------------------------- the two ends


def test_upper_end_is_the_sample_bracket_plus_the_cantelli_margin():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((120, 3)), 2.0 * rng.standard_normal((90, 3))
    r = _bracket(a, b)
    alpha = 0.025
    variance = a.var(0, ddof=1).sum() / 120 + b.var(0, ddof=1).sum() / 90
    margin = math.sqrt(variance * (1 - alpha) / alpha)
    assert r.population.deviation == pytest.approx(margin, rel=1e-12)
    assert r.population.upper == pytest.approx(r.sample.upper + margin, rel=1e-12)
    assert r.population.sample_upper == r.sample.upper


def test_confidence_widens_the_bracket():
    a, b = _translation(300, 2, np.random.default_rng(6))
    options = PopulationOptions(critics=("linear",))
    p95 = _bracket(a, b, options).population
    p99 = _bracket(a, b, PopulationOptions(critics=("linear",), confidence=0.99)).population
    assert p99.lower < p95.lower and p99.upper > p95.upper
    assert p99.estimate == p95.estimate
    assert p99.confidence == 0.99


def test_every_point_is_scored_by_a_critic_that_never_saw_it(monkeypatch):
    """Cross-fitting: each fold's critic is fitted on the other folds only, and every
    point is scored exactly once."""
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((60, 2)), rng.standard_normal((50, 2)) + 1.0
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording_fit(ta, tb, options, **kwargs):
        seen.append((ta.clone(), tb.clone()))
        return fit_critic(ta, tb, options, **kwargs)

    monkeypatch.setattr(population_module, "fit_critic", recording_fit)
    options = PopulationOptions(critics=("linear",), folds=3)
    p = population_module.population_bracket(a, b, 10.0, options, seed=1)
    assert len(seen) == 3 and len(p.folds) == 3
    assert sum(f.n_a for f in p.folds) == 60 and sum(f.n_b for f in p.folds) == 50
    rows = {row.tobytes(): i for i, row in enumerate(a.astype(np.float32))}
    scored = np.zeros(60, dtype=int)
    for (ta, _), fold, fitted in zip(seen, p.folds, p.critics, strict=True):
        trained = {rows[row.tobytes()] for row in ta.numpy()}
        held = np.array(sorted(set(range(60)) - trained))
        assert len(trained) == 60 - fold.n_a and len(held) == fold.n_a
        scored[held] += 1
        values = fitted.module(torch.from_numpy(a[held])).reshape(-1).detach().numpy()
        np.testing.assert_allclose(p.heldout[0][held], values / fitted.lipschitz, rtol=1e-12)
    assert np.all(scored == 1)


def test_fitted_critics_are_certified_one_lipschitz():
    rng = np.random.default_rng(8)
    a = torch.from_numpy(rng.standard_normal((200, 5))).float()
    b = torch.from_numpy(2 * rng.standard_normal((200, 5))).float()
    for name in ("linear", "radial", "transport", "dense"):
        options = PopulationOptions(critics=(name,), hidden=(16, 16), steps=60, eval_every=20)
        fitted = fit_critic(a, b, options, deadline=math.inf, seed=0)
        assert fitted.name == name
        x = torch.from_numpy(rng.standard_normal((300, 5)) * 3).requires_grad_(True)
        (grad,) = torch.autograd.grad(fitted.module(x).sum(), x)
        assert grad.norm(dim=1).max().item() <= fitted.lipschitz * (1 + 1e-9)
        assert fitted.lipschitz == lipschitz_bound(fitted.module, (5,)).bound


def test_transport_critic_extends_a_feasible_pair():
    """Exact check against the definition: 1-Lipschitz on random pairs whatever the
    offsets, and >= u_i at a_i, <= v_j at b_j for a feasible pair."""
    rng = np.random.default_rng(14)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(25, 3)) + 1
    cost = np.linalg.norm(a[:, None] - b[None], axis=2)
    v = rng.normal(size=25)
    u = (cost + v).min(axis=1)  # the c-transform: u_i - v_j <= |a_i - b_j|
    t = torch.from_numpy
    critic = TransportCritic(t(a), t(u), t(b), t(v))
    fa, fb = critic(t(a)).reshape(-1).numpy(), critic(t(b)).reshape(-1).numpy()
    assert np.all(fa >= u - 1e-12) and np.all(fb <= v + 1e-12)
    x, y = rng.normal(size=(500, 3)) * 3, rng.normal(size=(500, 3)) * 3
    gap = (critic(t(x)) - critic(t(y))).abs().reshape(-1).numpy()
    assert np.all(gap <= np.linalg.norm(x - y, axis=1) * (1 + 1e-12))
    noisy = TransportCritic(t(a), t(rng.normal(size=30) * 50), t(b), t(v))
    gap = (noisy(t(x)) - noisy(t(y))).abs().reshape(-1).numpy()
    assert np.all(gap <= np.linalg.norm(x - y, axis=1) * (1 + 1e-12))
    assert lipschitz_bound(critic, (3,)).bound == 1.0


def test_transport_critic_wins_in_low_dimension_and_is_skipped_on_the_line():
    rng = np.random.default_rng(15)
    angle = rng.uniform(0, 2 * np.pi, 600)
    ring = np.c_[np.cos(angle), np.sin(angle)] * 2
    blobs = rng.normal(size=(600, 2)) * 0.3 + rng.choice([-1.5, 1.5], size=(600, 2))
    options = PopulationOptions(critics=("linear", "radial", "transport"))
    p = _bracket(ring, blobs, options).population
    assert {f.critic for f in p.folds} == {"transport"}
    line = _bracket(rng.normal(size=100), rng.normal(size=100) + 1, options).population
    assert all("transport" not in f.validation for f in line.folds)
    with pytest.raises(ValueError, match="transport"):
        _bracket(
            rng.normal(size=40), rng.normal(size=40), PopulationOptions(critics=("transport",))
        )


# ----------------------------------------------------------------------------- layers


def test_norm_pool_is_one_lipschitz_and_preserves_gradient_norms():
    pool = NormPool(3)
    x = torch.randn(50, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(50, 6, dtype=torch.float64)
    assert torch.all((pool(x) - pool(y)).norm(dim=1) <= (x - y).norm(dim=1) + 1e-12)
    v = torch.randn(50, 2, dtype=torch.float64)
    (grad,) = torch.autograd.grad((pool(x) * v).sum(), x)
    assert torch.allclose(grad.norm(dim=1), v.norm(dim=1))
    with pytest.raises(ValueError, match="divisible"):
        pool(torch.randn(4, 5))
    with pytest.raises(ValueError, match="positive integer"):
        NormPool(0)


def test_radial_critic_is_distance_to_a_center_and_certified():
    critic = build_critic("radial", 4, PopulationOptions()).double()
    center = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    with torch.no_grad():
        critic[0].offset.copy_(-center)
    x = torch.randn(20, 4, dtype=torch.float64)
    values = critic(x).reshape(-1) - critic[2].bias
    assert torch.allclose(values.abs(), (x - center).norm(dim=1))
    cert = lipschitz_bound(critic, (4,))
    assert [layer.layer for layer in cert.layers] == ["Translate", "NormPool", "BjorckLinear"]
    assert cert.bound == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive integer"):
        Translate(0)


# ----------------------------------------------------------------------------- API and JSON


def test_json_schema_is_stable():
    a, b = _translation(60, 2, np.random.default_rng(9))
    r = estimate_w1(a, b, population=QUICK)
    out = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert out["target"] == "both"
    assert set(out["population"]) == {
        "lower",
        "upper",
        "estimate",
        "confidence",
        "lower_method",
        "upper_method",
        "sample_upper",
        "deviation",
        "seconds",
        "folds",
        "critics_kept",
        "directions",
        "agreement",
    }
    assert set(out["population"]["folds"][0]) == {
        "fold",
        "n_a",
        "n_b",
        "critic",
        "lipschitz",
        "dual",
        "stderr",
        "lower",
        "validation",
        "directions",
    }
    assert out["floor"] is not None  # the sampling floor comes with the population
    assert out["notes"] == []
    assert "population W1" in r.summary() and "sample W1" in r.summary()


def test_sampling_noise_sentence_in_high_dimension():
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((150, 32)), rng.standard_normal((150, 32)) + 0.05
    r = estimate_w1(a, b, population=QUICK)
    assert r.sampling_noise_sentence() is not None
    assert "sampling noise" in r.summary()
    near = estimate_w1(*_translation(150, 2, rng, shift=5.0), population=QUICK)
    assert near.sampling_noise_sentence() is None


def test_weights_refuse_the_population_question():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((40, 2)), rng.standard_normal((30, 2))
    w = np.ones(40)
    with pytest.raises(ValueError, match="unweighted"):
        estimate_w1(a, b, w, target="population")
    r = estimate_w1(a, b, w, population=QUICK)
    assert r.population is None and r.sample is not None
    assert "unweighted" in r.notes[0] and "unweighted" in r.summary()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"confidence": 1.0}, "confidence"),
        ({"folds": 1}, "folds"),
        ({"critics": ("linear", "cnn")}, "critics"),
        ({"critics": ()}, "critics"),
        ({"activation": "elu"}, "activation"),
        ({"lr": float("nan")}, "lr"),
        ({"validation": 1.0}, "validation"),
        ({"time_budget": float("inf")}, "time_budget"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_population_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PopulationOptions(**kwargs)


def test_too_few_points_for_the_folds():
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((6, 2)), rng.standard_normal((20, 2))
    with pytest.raises(ValueError, match="at least 8 points"):
        _bracket(a, b)
    both = estimate_w1(a, b)  # the sample question is still answered
    assert both.population is None and "at least 8 points" in both.notes[0]
    assert both.sample.lower <= both.sample.upper


def test_points_on_the_line():
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal(300), rng.standard_normal(300) + 1.0
    p = _bracket(a, b, PopulationOptions(critics=("linear",))).population
    assert p.lower <= 1.0 <= p.upper
    assert p.estimate == pytest.approx(1.0, abs=0.2)


def test_conv_critic_on_flattened_images():
    """8x8 images, B brighter in one quadrant: the BCOP critic is built, certified and
    scored like the others."""
    rng = np.random.default_rng(16)
    a = rng.uniform(0, 1, (120, 1, 8, 8))
    b = rng.uniform(0, 1, (120, 1, 8, 8))
    b[:, :, :4, :4] += 0.5
    options = PopulationOptions(
        critics=("conv",), image_shape=(1, 8, 8), hidden=(16,), steps=40, eval_every=20
    )
    p = _bracket(a, b, options).population
    assert {f.critic for f in p.folds} == {"conv"}
    assert all(f.lipschitz == pytest.approx(1.0, abs=1e-4) for f in p.folds)
    assert p.lower <= p.estimate <= p.upper
    with pytest.raises(ValueError, match="image_shape"):
        PopulationOptions(critics=("conv",))
    with pytest.raises(ValueError, match="does not hold"):
        _bracket(a[:, :, :4], b[:, :, :4], options)


# ------------------------------------------------------------------------ train_dual


def test_train_dual_from_tensors_keeps_the_best_validation_state():
    from wassnet.w1 import DualTrainingOptions, train_dual
    from wassnet.w1.dual_training import dual_and_stderr

    torch.manual_seed(0)
    a, b = torch.randn(400, 2) + torch.tensor([2.0, 0.0]), torch.randn(400, 2)
    val = (torch.randn(200, 2) + torch.tensor([2.0, 0.0]), torch.randn(200, 2))
    critic = dense_critic(2, hidden=(8, 8), iters=5)
    before = dual_and_stderr(critic, *val)[0]
    options = DualTrainingOptions(steps=200, batch_size=32, lr=0.01, eval_every=10, patience=3)
    fit = train_dual(
        critic, a, b, options, generator=torch.Generator().manual_seed(1), validation=val
    )
    assert not critic.training
    assert 1 <= fit.steps <= 200 and len(fit.history) == fit.steps
    assert fit.best_validation >= before  # the initial state competes: never worse
    assert dual_and_stderr(critic, *val)[0] == pytest.approx(fit.best_validation, abs=1e-6)
    assert fit.best_validation > 1.5  # W1 = 2 (a translation by 2)


def test_train_dual_from_samplers_with_linear_decay_is_reproducible():
    from wassnet.w1 import DualTrainingOptions, train_dual

    def sample_p(n, gen):
        return torch.randn(n, 3, generator=gen) + 1.0

    def sample_q(n, gen):
        return torch.randn(n, 3, generator=gen)

    options = DualTrainingOptions(steps=30, batch_size=16, decay="linear", patience=None)
    runs = []
    for _ in range(2):
        torch.manual_seed(4)
        critic = dense_critic(3, hidden=(8,), iters=4)
        fit = train_dual(
            critic, sample_p, sample_q, options, generator=torch.Generator().manual_seed(2)
        )
        runs.append((fit, critic))
    assert runs[0][0].history == runs[1][0].history and runs[0][0].steps == 30
    assert runs[0][0].best_validation is None
    for p, q in zip(runs[0][1].parameters(), runs[1][1].parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "bad", [{"steps": 0}, {"lr": 0.0}, {"decay": "cosine"}, {"patience": 0}, {"eval_every": 0}]
)
def test_train_dual_options_are_checked(bad):
    from wassnet.w1 import DualTrainingOptions

    with pytest.raises(ValueError):
        DualTrainingOptions(**bad)
