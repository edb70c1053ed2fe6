"""The certified W1 bracket of ``estimate_w1`` against POT's exact W1.

The reference is POT's network simplex (``ot.emd2``) on a cost matrix computed by
direct differences, ``scipy.stats.wasserstein_distance`` on the line, and analytic
values (translations); no wassnet code is involved in any reference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import pot_w1
from scipy.stats import wasserstein_distance

from wassnet.estimate import estimate_w1
from wassnet.io import InputError

#: Small critic and short training: the bracket must hold whatever the critic's quality.
FAST = {"hidden": (32, 32), "steps": 100, "batch_size": 128, "progress": False}

#: Slack of the containment checks: the float64 rounding of the reference solver only
#: (the bracket itself charges its own rounding; see ``test_bracket_is_certified_*``).
RTOL = 1e-9

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_bracket(result, exact: float, rtol: float = RTOL) -> None:
    slack = rtol * exact
    assert result.lower <= exact + slack, (result.lower, exact)
    assert exact <= result.upper + slack, (exact, result.upper)
    assert result.lower <= result.estimate <= result.upper
    assert result.estimate == pytest.approx(0.5 * (result.lower + result.upper), rel=1e-12)
    assert result.relative_gap == pytest.approx(
        (result.upper - result.lower) / result.upper, rel=1e-9, abs=1e-15
    )
    assert result.critic_lower <= exact + slack
    assert result.critic_lower <= result.lower
    assert 0.5 < result.lipschitz <= 1 + 1e-4


# ----------------------------------------------------------------------------- problems


def _shifted(rng, n, m, d):
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 1.0


def _anisotropic(rng, n, m, d):
    return rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d), rng.normal(size=(m, d))


def _mixture(rng, n, m, d):
    centers = np.where(rng.random(n) < 0.5, -2.0, 2.0)[:, None]
    return rng.normal(size=(n, d)) + centers, rng.normal(size=(m, d)) * 1.5


def _uniform(rng, n, m, d):
    return rng.uniform(size=(n, d)), rng.uniform(size=(m, d)) + 0.3


SHAPES = {
    "shifted": _shifted,
    "anisotropic": _anisotropic,
    "mixture": _mixture,
    "uniform": _uniform,
}

# (shape, d, n, m, weighted): every shape, every d, n != m, and random weights
CASES = [
    ("shifted", 2, 200, 150, False),
    ("anisotropic", 5, 120, 120, False),
    ("mixture", 16, 160, 120, False),
    ("uniform", 2, 150, 150, False),
    ("shifted", 5, 100, 130, True),
    ("uniform", 16, 100, 100, True),
    ("mixture", 2, 90, 140, True),
]


def make_problem(shape, d, n, m, weighted, seed=0):
    rng = np.random.default_rng([seed, d, n, m])
    a, b = SHAPES[shape](rng, n, m, d)
    wa = wb = None
    if weighted:
        wa, wb = rng.random(n) * 3 + 0.05, rng.random(m) + 0.05
    return a, b, wa, wb


# ----------------------------------------------------------------------------- the bracket


@pytest.mark.parametrize(("shape", "d", "n", "m", "weighted"), CASES)
def test_refined_bracket_contains_exact_w1(shape, d, n, m, weighted):
    a, b, wa, wb = make_problem(shape, d, n, m, weighted)
    exact = pot_w1(a, b, wa, wb)
    result = estimate_w1(a, b, wa, wb, exact="always", **FAST)
    assert result.exact == pytest.approx(exact, rel=1e-9)
    assert result.error == pytest.approx(result.estimate - result.exact, abs=1e-12)
    assert_bracket(result, exact)
    assert (result.n_a, result.n_b, result.dim, result.steps) == (n, m, d, FAST["steps"])
    # measured relative gaps: < 3e-15 on the LP path (n != m or weights: column
    # generation reaches the optimum), 0.34%-0.41% on the uniform n == m assignment path,
    # where the looser side is the c-transformed Sinkhorn dual: 1.5% is a 3.5x margin
    assert result.relative_gap < 0.015
    if result.upper_method.startswith("sparse LP"):
        assert result.relative_gap < 1e-9


@pytest.mark.parametrize(
    ("shape", "d", "n", "m", "weighted"),
    [("shifted", 2, 200, 150, False), ("mixture", 16, 100, 100, True)],
)
def test_unrefined_bracket_contains_exact_w1(shape, d, n, m, weighted):
    a, b, wa, wb = make_problem(shape, d, n, m, weighted)
    exact = pot_w1(a, b, wa, wb)
    result = estimate_w1(a, b, wa, wb, refine=False, exact="never", **FAST)
    assert result.exact is None and result.error is None
    assert_bracket(result, exact)
    # no pass over the pairs: the critic's own bound, and a coupling built from it
    assert result.lower == result.critic_lower
    assert "critic" in result.lower_method
    assert result.upper_method.startswith("monotone coupling")


def test_one_dimensional_inputs_are_exact():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50), rng.normal(size=37) * 2 + 0.5
    wa, wb = rng.random(50), rng.random(37)
    for args, expected in (
        ((a, b), wasserstein_distance(a, b)),
        ((a, b, wa, wb), wasserstein_distance(a, b, wa, wb)),
        ((a[:, None], b), wasserstein_distance(a, b)),  # [n, 1] is the line too
    ):
        result = estimate_w1(*args, **FAST)
        assert result.lower == result.upper == result.estimate == result.exact
        assert result.lower == pytest.approx(expected, rel=1e-12)
        assert result.relative_gap == 0.0 and result.dim == 1
        assert json.loads(json.dumps(result.to_dict()))["lower"] == result.lower


# ----------------------------------------------------------------------------- held-out value


def test_holdout_estimates_the_population_w1_of_a_translation():
    """b = a-distribution shifted by t: population W1 = |t| = 1. The held-out dual of a
    1-Lipschitz critic is unbiased for a value <= |t|. Measured: value 1.047 (se 0.068)."""
    rng = np.random.default_rng(100)
    t = np.array([0.6, -0.8])
    a, b = rng.normal(size=(1500, 2)), rng.normal(size=(1500, 2)) + t
    result = estimate_w1(
        a,
        b,
        hidden=(32, 32),
        steps=200,
        batch_size=256,
        refine=False,
        exact="never",
        holdout=0.3,
        progress=False,
    )
    h = result.holdout
    assert (h.n_a, h.n_b) == (450, 450)
    assert h.value > 0 and h.stderr > 0
    assert h.ci_low <= h.value <= h.ci_high
    assert h.ci_high - h.ci_low == pytest.approx(2 * 1.96 * h.stderr, rel=1e-9)
    assert abs(h.value - 1.0) < 0.3  # ~4.5 standard errors
    assert h.ci_low < 1.0
    # the certified bracket is about all the given points (fitted and held out)
    assert result.lower <= result.upper
    assert 0.7 < result.lower <= result.upper < 1.3
    d = result.to_dict()
    assert set(d["holdout"]) == {"value", "stderr", "ci_low", "ci_high", "n_a", "n_b"}
    assert json.loads(json.dumps(d))["holdout"]["value"] == h.value


# ----------------------------------------------------------------------------- determinism, dict


def test_same_seed_same_result_other_seed_other_critic():
    a, b, _, _ = make_problem("shifted", 3, 80, 60, False)
    kw = dict(FAST, steps=50)
    r1 = estimate_w1(a, b, seed=3, exact="never", **kw)
    r2 = estimate_w1(a, b, seed=3, exact="never", **kw)
    r3 = estimate_w1(a, b, seed=4, exact="never", **kw)
    for field in ("lower", "upper", "critic_lower", "lipschitz", "lower_method", "upper_method"):
        assert getattr(r1, field) == getattr(r2, field), field
    assert r1.history == r2.history
    np.testing.assert_array_equal(r1.potentials[0], r2.potentials[0])
    np.testing.assert_array_equal(r1.potentials[1], r2.potentials[1])
    assert r1.seed == 3 and r3.seed == 4
    assert r3.critic_lower != r1.critic_lower


EXPECTED_KEYS = {
    "lower",
    "upper",
    "estimate",
    "relative_gap",
    "exact",
    "error",
    "critic_lower",
    "lipschitz",
    "lower_method",
    "upper_method",
    "n_a",
    "n_b",
    "dim",
    "steps",
    "seed",
    "device",
    "timings",
    "holdout",
    "floor",
}


def test_to_dict_keys_and_json():
    a, b, wa, wb = make_problem("shifted", 2, 40, 30, True)
    result = estimate_w1(a, b, wa, wb, exact="always", **dict(FAST, steps=20))
    d = result.to_dict()
    assert set(d) == EXPECTED_KEYS
    back = json.loads(json.dumps(d))
    for key in ("lower", "upper", "estimate", "exact", "critic_lower", "lipschitz"):
        assert back[key] == getattr(result, key)
        assert type(back[key]) is float
    assert back["holdout"] is None and back["floor"] is None
    assert back["device"] == "cpu" or back["device"].startswith("cuda")
    assert all(isinstance(v, float) for v in back["timings"].values())
    assert set(estimate_w1(a[:, 0], b[:, 0], **FAST).to_dict()) == EXPECTED_KEYS


# ----------------------------------------------------------------------------- bad input


def _points(n=20, d=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize(
    ("a", "b", "wa", "wb", "match"),
    [
        (np.array([[0.0, np.nan], [1.0, 1.0]]), _points(), None, None, "non-finite"),
        (_points(), np.array([[0.0, np.inf], [1.0, 1.0]]), None, None, "non-finite"),
        (np.zeros((0, 2)), _points(), None, None, "empty"),
        (_points(), [], None, None, "empty"),
        (_points(d=2), _points(d=3), None, None, "dimension mismatch"),
        (_points(d=2), _points(n=5)[:, 0], None, None, "dimension mismatch"),
        (_points(), _points(), np.ones(19), None, "19 entries"),
        (_points(), _points(), None, -np.ones(20), "negative"),
        (_points(), _points(), np.zeros(20), None, "zero"),
        (_points(), _points(), np.r_[np.ones(19), np.nan], None, "non-finite"),
        ([[0.0, 1.0], [2.0]], _points(), None, None, "rectangular"),
        (np.array([["a", "b"]]), _points(), None, None, "dtype"),
    ],
)
def test_bad_input_raises_input_error(a, b, wa, wb, match):
    with pytest.raises(InputError, match=match):
        estimate_w1(a, b, wa, wb, **FAST)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"exact": "bogus"},
        {"exact": True},
        {"holdout": 1.5},
        {"holdout": 1.0},
        {"holdout": 0.0},
        {"holdout": -0.2},
        {"holdout": 0.99},  # leaves fewer than 2 points to fit on
    ],
)
def test_bad_options_raise_value_error(kwargs):
    with pytest.raises(ValueError, match=r"exact|holdout"):
        estimate_w1(_points(), _points(seed=1), **dict(FAST, **kwargs))


# ------------------------------------------------- certification beyond float32 rounding


@pytest.mark.parametrize(
    ("seed", "radius", "shift"),
    [(1, 1.0, 1e-7), (3, 1000.0, 1e-4)],  # measured: lower 6.2% above / upper 6.2% below W1
)
def test_bracket_is_certified_beyond_float32_rounding(seed, radius, shift):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(100, 2)) * radius
    b = a + np.array([shift, 0.0])
    exact = pot_w1(a, b)
    # a translation: the identity coupling is optimal, W1 = |t| (up to float64 rounding)
    assert exact == pytest.approx(shift, rel=1e-6)
    result = estimate_w1(a, b, exact="never", **dict(FAST, steps=30))
    assert_bracket(result, exact, rtol=1e-9)


def test_bracket_is_certified_to_float64_rounding_on_ordinary_data():
    a, b, wa, wb = make_problem("mixture", 2, 90, 140, True)
    exact = pot_w1(a, b, wa, wb)
    result = estimate_w1(a, b, wa, wb, exact="never", **FAST)
    assert_bracket(result, exact, rtol=1e-9)
