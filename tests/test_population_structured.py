"""Critics that look for low-dimensional structure: ``projection`` and ``subspace``.

A planted direction is recovered and its held-out dual stays below the truth; equal
laws give a zero lower end in all but a few draws with the new families in the ladder;
every new family's certified bound is checked against gradients and exact slopes.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from wassnet import estimate_w1
from wassnet.nn import lipschitz_bound
from wassnet.nn.lipschitz import LipschitzBoundError
from wassnet.w1 import PopulationOptions
from wassnet.w1.critic_fit import fit_critic
from wassnet.w1.options import CRITICS, DEFAULT_CRITICS
from wassnet.w1.structured import (
    LinePotential,
    dual_norm,
    line_potential,
    line_w1,
    orthonormal_rows,
    projection_critic,
    subspace_critic,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"hidden": (16, 16), "steps": 60, "eval_every": 20, "patience": 2, "time_budget": 30}


def _planted(n: int, d: int, rng: np.random.Generator):
    """Equal means and variances along ``e_0``: N(0, 1) against +-1 with probability 1/2
    (variance 1); N(0, 1) noise elsewhere. W1 along e_0 = E| |Z| - 1 | (the monotone
    coupling of |Z| with 1, signs shared), and by the subspace lemma that is W1 in R^d."""
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((n, d))
    b[:, 0] = rng.choice([-1.0, 1.0], n)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return a @ q.T, b @ q.T, q[:, 0]


def _truth() -> float:
    """W1(N(0, 1), +-1) = E| |Z| - 1 | (the quantile coupling sends z < 0 to -1)."""
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(1 / math.sqrt(2))  # P(Z > 1)
    # E|(|Z| - 1)| = E(|Z| - 1) + 2 E(1 - |Z|)^+ ; E|Z| = sqrt(2/pi)
    # E(1 - |Z|)^+ = P(|Z| < 1) - E|Z| 1{|Z| < 1} = (1 - 2 tail) - 2 (phi(0) - phi(1))
    phi0 = 1 / math.sqrt(2 * math.pi)
    inner = (1 - 2 * tail) - 2 * (phi0 - phi1)
    return math.sqrt(2 / math.pi) - 1 + 2 * inner


TRUTH = _truth()


def test_truth_of_the_planted_law_by_sampling():
    """The closed form against a large 1-D sample (exact W1 on the line)."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal(400_000)
    assert line_w1(z, rng.choice([-1.0, 1.0], 400_000)) == pytest.approx(TRUTH, abs=3e-3)


def test_registered_and_in_the_default_ladder():
    assert {"projection", "subspace"} <= set(CRITICS)
    assert {"projection", "subspace"} <= set(DEFAULT_CRITICS)
    with pytest.raises(ValueError, match="critics"):
        PopulationOptions(critics=("projections",))


def test_projection_critic_recovers_a_planted_direction():
    rng = np.random.default_rng(1)
    a, b, u = _planted(1500, 6, rng)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    options = PopulationOptions(critics=("linear", "projection"), **SMALL)
    fitted = fit_critic(ta, tb, options, deadline=math.inf, seed=0)
    assert fitted.name == "projection"
    assert fitted.directions.shape == (1, 6)
    assert abs(float(fitted.directions[0] @ u)) > 0.95
    assert fitted.validation["projection"] > 0.6 * TRUTH > fitted.validation["linear"]


def test_projection_held_out_dual_stays_below_the_truth():
    """8 draws: every fold's held-out dual is an unbiased estimate of a number <= W1, so
    the mean dual stays below the truth plus its noise, the lower end below the truth,
    and the direction reported is the planted one (in all but a rare draw)."""
    options = PopulationOptions(critics=("projection",), **SMALL)
    duals, lows, found = [], [], 0
    for draw in range(8):
        a, b, u = _planted(600, 4, np.random.default_rng([2, draw]))
        r = estimate_w1(a, b, target="population", population=options, floor=False, seed=draw)
        p = r.population
        duals.append(np.mean([f.dual for f in p.folds]))
        lows.append(p.lower)
        assert p.lower <= TRUTH
        assert p.critics_kept == ["projection"]
        found += abs(float(np.asarray(p.directions[0]) @ u)) > 0.9 and p.agreement > 0.9
    assert found >= 6, found  # 225 fitting points per side in d = 4: a rare fold misses
    stderr = np.std(duals, ddof=1) / math.sqrt(len(duals))
    assert np.mean(duals) <= TRUTH + 3 * stderr
    assert np.mean(duals) > 0.7 * TRUTH  # and it is found, not just safe
    assert np.mean(lows) > 0.4 * TRUTH


def test_equal_laws_rarely_give_a_positive_lower_end():
    """P == Q: with linear, projection and subspace in the ladder (the direction search
    and the choice both on the training folds), the lower end is 0 in >= 14 of 16."""
    options = PopulationOptions(
        critics=("linear", "projection", "subspace"),
        hidden=(8, 8),
        steps=20,
        eval_every=10,
        patience=1,
        iters=5,
    )
    positive = 0
    for draw in range(16):
        rng = np.random.default_rng([3, draw])
        a, b = rng.standard_normal((150, 5)), rng.standard_normal((150, 5))
        p = estimate_w1(a, b, target="population", population=options, floor=False, seed=draw)
        positive += p.population.lower > 0
        assert set(p.population.folds[0].validation) == {"linear", "projection", "subspace"}
    assert positive <= 2, positive


# ----------------------------------------------------------------------------- bounds


def _exact_max_slope(knots: np.ndarray, values: np.ndarray) -> Fraction:
    return max(
        abs(
            (Fraction(values[i + 1]) - Fraction(values[i]))
            / (Fraction(knots[i + 1]) - Fraction(knots[i]))
        )
        for i in range(len(knots) - 1)
    )


def test_line_potential_bound_is_the_exact_largest_slope():
    rng = np.random.default_rng(4)
    knots = np.cumsum(rng.uniform(0.01, 1.0, 50))
    values = np.cumsum(rng.uniform(-0.9, 0.9, 49) * np.diff(knots))
    values = np.concatenate([[0.0], values])
    module = LinePotential(torch.from_numpy(knots), torch.from_numpy(values))
    bound = lipschitz_bound(module, (1,)).bound
    exact = _exact_max_slope(knots, values)
    assert Fraction(bound) >= exact
    assert bound == pytest.approx(float(exact), rel=1e-15)
    for p in (1, math.inf):
        assert lipschitz_bound(module, (1,), p=p).bound == bound
    # the function: linear between knots, constant beyond
    t = torch.tensor([knots[0] - 5, knots[0], 0.5 * (knots[3] + knots[4]), knots[-1] + 5])
    out = module(t.reshape(-1, 1)).reshape(-1).numpy()
    assert out[0] == out[1] == values[0] and out[3] == values[-1]
    assert out[2] == pytest.approx(0.5 * (values[3] + values[4]), rel=1e-12)
    # difference quotients on random pairs never exceed the bound
    x = torch.from_numpy(rng.uniform(knots[0] - 2, knots[-1] + 2, 2000))
    y = torch.from_numpy(rng.uniform(knots[0] - 2, knots[-1] + 2, 2000))
    gap = (module(x.unsqueeze(1)) - module(y.unsqueeze(1))).abs().reshape(-1)
    assert torch.all(gap <= bound * (x - y).abs() * (1 + 1e-12) + 1e-15)


def test_line_potential_refuses_bad_knots():
    with pytest.raises(ValueError, match="increasing"):
        LinePotential(torch.tensor([0.0, 0.0, 1.0]), torch.zeros(3))
    module = LinePotential(torch.tensor([0.0, 1.0]), torch.zeros(2))
    with torch.no_grad():
        module.knots[1] = 0.0
    with pytest.raises(LipschitzBoundError, match="increasing"):
        lipschitz_bound(module, (1,))
    with pytest.raises(LipschitzBoundError, match="line"):
        lipschitz_bound(LinePotential(torch.tensor([0.0, 1.0]), torch.zeros(2)), (2,))


def test_line_potential_of_samples_has_slopes_in_unit_interval():
    rng = np.random.default_rng(5)
    pa, pb = rng.standard_normal(700), rng.choice([-1.0, 1.0], 500) + 0.1 * rng.standard_normal(500)
    g = line_potential(pa, pb)
    knots, values = g.knots.numpy(), g.values.numpy()
    assert _exact_max_slope(knots, values) <= 1 + 1e-12
    held_a, held_b = rng.standard_normal(20000), rng.choice([-1.0, 1.0], 20000)
    ga = g(torch.from_numpy(held_a).unsqueeze(1)).mean()
    gb = g(torch.from_numpy(held_b).unsqueeze(1)).mean()
    truth = TRUTH  # the same pair of laws on the line, without the small noise
    assert 0.6 * truth < float(ga - gb) <= truth + 0.03


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "chebyshev"])
def test_projection_critic_is_certified_in_the_metrics_norm(metric):
    """Bound ~1 from the Linear's weight u / |u|_* and the potential's exact slopes;
    gradients (dual norm) and difference quotients (the metric) never exceed it."""
    rng = np.random.default_rng(6)
    d = 7
    u = rng.standard_normal(d)
    a, b = rng.standard_normal((300, d)), rng.standard_normal((300, d)) * 1.5
    critic = projection_critic(u, a, b, metric)
    p = {"euclidean": 2, "cityblock": 1, "chebyshev": math.inf}[metric]
    bound = lipschitz_bound(critic, (d,), p=p).bound
    assert 0.5 < bound <= 1 + 1e-12
    w = critic[0].weight.detach().numpy()[0]
    assert dual_norm(w, metric) == pytest.approx(1.0, rel=1e-14)
    x = torch.from_numpy(rng.standard_normal((500, d)) * 2).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    q = {2: 2, 1: math.inf, math.inf: 1}[p]  # the dual norm of the gradient
    assert torch.linalg.vector_norm(grad, ord=q, dim=1).max().item() <= bound * (1 + 1e-12)
    y = torch.from_numpy(rng.standard_normal((500, d)) * 2)
    gap = (critic(x.detach()) - critic(y)).abs().reshape(-1)
    dist = torch.linalg.vector_norm(x.detach() - y, ord=p, dim=1)
    assert torch.all(gap <= bound * dist * (1 + 1e-12))


@pytest.mark.parametrize("metric", ["euclidean", "cityblock"])
def test_fitted_structured_critics_are_certified(metric):
    """Both families as fitted: the certified bound is what lipschitz_bound says, and
    no gradient on random points exceeds it (dual norm of the metric's norm)."""
    rng = np.random.default_rng(7)
    a, b, _ = _planted(400, 5, rng)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    p = 2 if metric == "euclidean" else 1
    for name in ("projection", "subspace"):
        options = PopulationOptions(critics=(name,), **SMALL)
        fitted = fit_critic(ta, tb, options, deadline=math.inf, seed=0, metric=metric)
        assert fitted.name == name
        assert fitted.lipschitz == lipschitz_bound(fitted.module, (5,), p=p).bound
        k = 1 if name == "projection" else fitted.directions.shape[0]
        assert fitted.directions.shape == (k, 5) and k in (1, 2, 3)
        assert np.allclose(np.linalg.norm(fitted.directions, axis=1), 1.0)
        x = torch.from_numpy(rng.standard_normal((400, 5)) * 3).requires_grad_(True)
        (grad,) = torch.autograd.grad(fitted.module(x).sum(), x)
        q = 2 if p == 2 else math.inf
        assert torch.linalg.vector_norm(grad, ord=q, dim=1).max().item() <= fitted.lipschitz * (
            1 + 1e-9
        )


def test_subspace_critic_starts_from_the_given_rows():
    rng = np.random.default_rng(8)
    rows = orthonormal_rows([np.eye(6)[2], np.eye(6)[4]], 3, rng)
    assert np.allclose(rows @ rows.T, np.eye(3), atol=1e-12)
    assert np.allclose(rows[:2], np.eye(6)[[2, 4]])
    critic = subspace_critic(rows, (16, 16), 10).double()
    weight = critic[0].weight.detach().numpy()
    assert np.allclose(weight, rows, atol=1e-6)  # Björck keeps orthonormal rows
    assert lipschitz_bound(critic, (6,)).bound == pytest.approx(1.0, abs=1e-4)


# ----------------------------------------------------------------------------- output


def test_output_says_where_the_laws_differ(tmp_path):
    from wassnet.w1.plots import plot_estimate

    rng = np.random.default_rng(9)
    a, b, u = _planted(600, 4, rng)
    options = PopulationOptions(critics=("linear", "projection"), **SMALL)
    r = estimate_w1(a, b, population=options, floor=False, seed=1)
    out = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    pop = out["population"]
    assert pop["critics_kept"] == ["projection"]
    assert len(pop["directions"]) == 1 and len(pop["directions"][0]) == 4
    assert abs(float(np.asarray(pop["directions"][0]) @ u)) > 0.9
    assert 0.8 < pop["agreement"] <= 1.0
    assert all(len(f["directions"][0]) == 4 for f in pop["folds"])
    assert "where they differ: along the direction u = (" in r.summary()
    path = plot_estimate(r, a, b, tmp_path / "p.png")
    assert path.stat().st_size > 0
    # without a structured critic: no direction, no sentence
    plain = estimate_w1(a, b, population=PopulationOptions(critics=("linear",)), floor=False)
    assert plain.population.directions is None and "where they differ" not in plain.summary()


def test_line_potential_slope_survives_overflowing_and_subnormal_screens():
    """The float64 screen overflows (inf / inf) or loses the relative accuracy of
    subnormal quotients: those slopes are computed exactly, never skipped."""
    import torch

    from wassnet.w1.structured import LinePotential, line_potential_slope

    def slope(knots, values):
        t = torch.tensor(knots, dtype=torch.float64)
        return line_potential_slope(LinePotential(t, torch.tensor(values, dtype=torch.float64)))

    assert slope([-1e308, 1e308], [-1e308, 1e308]) == 1.0
    assert slope([0.0, 1.0, 2.0], [0.0, 5e-324, 0.0]) == 5e-324
    assert slope([0.0, 3.0, 4.0], [0.0, 1e-320, 0.0]) >= 1e-320
