"""``estimate_w1(target="sample")``: the certified bracket on W1 between two samples.

References: POT's network simplex (``ot.emd2``) on a cost matrix computed by direct
differences, ``scipy.stats.wasserstein_distance`` on the line; the exact rational
references of ``test_certificates.py`` cover the adversarial inputs. Every route is
exercised by forcing it on small inputs; the automatic choice is checked separately.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import pot_w1
from scipy.stats import wasserstein_distance

import wassnet
from wassnet.errors import InputError
from wassnet.ot import TransportProblem
from wassnet.w1 import SampleOptions, choose_route, estimate_w1

#: Containment slack: the float64 rounding of the *reference* solver only (the bracket
#: itself is exact; see test_certificates.py).
RTOL = 1e-12

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_bracket(sample, exact: float, rtol: float = RTOL) -> None:
    slack = rtol * exact
    assert sample.lower <= exact + slack, (sample.lower, exact)
    assert exact <= sample.upper + slack, (exact, sample.upper)
    assert sample.lower <= sample.estimate <= sample.upper


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


def routes(n: int, m: int, weighted: bool) -> list[str]:
    out = ["dense", "transport", "blockwise"]
    if n == m and not weighted:
        out.append("assignment")
    return out


# ----------------------------------------------------------------------------- every route


@pytest.mark.parametrize(("shape", "d", "n", "m", "weighted"), CASES)
def test_every_route_brackets_pots_value(shape, d, n, m, weighted):
    a, b, wa, wb = make_problem(shape, d, n, m, weighted)
    exact = pot_w1(a, b, wa, wb)
    for route in routes(n, m, weighted):
        result = estimate_w1(
            a, b, wa, wb, target="sample", sample=SampleOptions(route=route, warm_start=50)
        )
        sample = result.sample
        assert sample.route == route
        assert_bracket(sample, exact)
        if route != "blockwise":  # column generation and POT close the bracket
            assert sample.relative_width < 1e-9, (route, sample.relative_width)
        assert (result.n_a, result.n_b, result.dim) == (n, m, d)


def test_routes_work_on_float32_passes():
    """Uniform n == m above the dense-matrix limit use fused float32 screens (forced low)."""
    import wassnet.w1.sample as sample_module

    a, b, _, _ = make_problem("shifted", 4, 300, 300, False)
    exact = pot_w1(a, b)
    old = sample_module.DENSE_PASS_MAX_PAIRS
    sample_module.DENSE_PASS_MAX_PAIRS = 1000
    try:
        sample = estimate_w1(
            a, b, target="sample", sample=SampleOptions(route="assignment", warm_start=50)
        ).sample
    finally:
        sample_module.DENSE_PASS_MAX_PAIRS = old
    assert_bracket(sample, exact)
    assert "float32" in sample.lower_method
    assert sample.relative_width < 1e-12  # float32 screens, exact float64 recomputation


def test_plan_and_potentials_are_what_they_claim():
    a, b, wa, wb = make_problem("mixture", 2, 90, 140, True)
    sample = estimate_w1(a, b, wa, wb, target="sample").sample
    rows, cols, mass = sample.plan
    pa, pb = wa / wa.sum(), wb / wb.sum()
    np.testing.assert_allclose(np.bincount(rows, mass, len(a)), pa, atol=1e-15)
    np.testing.assert_allclose(np.bincount(cols, mass, len(b)), pb, atol=1e-15)
    cost = np.linalg.norm(a[rows] - b[cols], axis=1) @ mass
    assert cost <= sample.upper * (1 + 1e-14)
    u, v = sample.potentials
    c = np.linalg.norm(a[:, None] - b[None], axis=2)
    assert (u[:, None] - v[None, :] - c).max() <= 1e-12
    assert pa @ u - pb @ v >= sample.lower * (1 - 1e-14)


def test_route_table():
    opts = SampleOptions()
    rng = np.random.default_rng(0)

    def route(n, m, d=2, weighted=False):
        x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d))
        w = rng.random(n) + 0.1 if weighted else None
        return choose_route(TransportProblem.build(x, y, w), opts)

    assert route(10, 10, d=1) == "line"
    assert route(1000, 800) == "dense"
    assert route(3000, 3000) == "assignment"
    assert route(3000, 2900, d=4) == "transport"
    assert route(3000, 3000, d=4, weighted=True) == "transport"
    # weighted in low dimension: dense up to four times dense_max_pairs
    assert route(3000, 2900) == "dense"
    assert route(6000, 6000, weighted=True) == "transport"
    assert SampleOptions().candidates_for(2) == 16
    assert SampleOptions().candidates_for(16) == 8
    assert SampleOptions(candidates=5).candidates_for(2) == 5
    tiny = SampleOptions(pass_max_pairs=1e6)
    x = rng.normal(size=(3000, 2))
    assert choose_route(TransportProblem.build(x, x), tiny) == "blockwise"


def test_one_dimensional_inputs_use_the_line():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50), rng.normal(size=37) * 2 + 0.5
    wa, wb = rng.random(50), rng.random(37)
    for args, expected in (
        ((a, b), wasserstein_distance(a, b)),
        ((a, b, wa, wb), wasserstein_distance(a, b, wa, wb)),
        ((a[:, None], b), wasserstein_distance(a, b)),  # [n, 1] is the line too
    ):
        result = estimate_w1(*args, target="sample")
        s = result.sample
        assert s.route == "line" and result.dim == 1
        assert s.lower <= s.upper and s.upper - s.lower <= 16 * np.spacing(s.upper)
        assert s.estimate == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="line"):
        estimate_w1(
            np.zeros((3, 2)), np.ones((3, 2)), target="sample", sample=SampleOptions(route="line")
        )


def test_identical_clouds_bracket_zero_closed():
    a = np.random.default_rng(1).normal(size=(40, 3))
    s = estimate_w1(a, a[::-1].copy(), target="sample").sample
    assert s.lower <= 0.0 <= s.upper <= 1e-14
    assert s.relative_width == 0.0 or s.upper < 1e-14
    assert "100" not in f"{s.relative_width:.3%}"


def test_time_budget_returns_a_certified_bracket():
    a, b, _, _ = make_problem("shifted", 3, 400, 400, False)
    exact = pot_w1(a, b)
    for route in ("assignment", "transport"):
        opts = SampleOptions(route=route, time_budget=1e-3, warm_start=20)
        assert_bracket(estimate_w1(a, b, target="sample", sample=opts).sample, exact)


def test_floor_brackets_w1_between_two_halves_of_a():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(81, 2)), rng.normal(size=(60, 2)) + 2
    result = estimate_w1(a, b, target="sample", floor=True, seed=2)
    perm = np.random.default_rng([2, 1]).permutation(81)
    first, second = np.sort(perm[:40]), np.sort(perm[40:80])
    assert_bracket(result.floor, pot_w1(a[first], a[second]))
    assert result.floor.upper < result.sample.lower  # the shift is far above the floor


# ----------------------------------------------------------------------------- results


def test_same_seed_same_result():
    a, b, _, _ = make_problem("shifted", 3, 300, 300, False)
    opts = SampleOptions(route="assignment", warm_start=30)
    r1 = estimate_w1(a, b, target="sample", sample=opts, seed=3).sample
    r2 = estimate_w1(a, b, target="sample", sample=opts, seed=3).sample
    assert (r1.lower, r1.upper, r1.passes) == (r2.lower, r2.upper, r2.passes)
    np.testing.assert_array_equal(r1.potentials[0], r2.potentials[0])


SAMPLE_KEYS = {
    "lower",
    "upper",
    "estimate",
    "relative_width",
    "route",
    "lower_method",
    "upper_method",
    "seconds",
    "passes",
    "rounds",
    "exact",
    "budget",
}
RESULT_KEYS = {
    "target",
    "metric",
    "n_a",
    "n_b",
    "dim",
    "sample",
    "floor",
    "population",
    "notes",
    "seed",
    "device",
    "timings",
}


def test_to_dict_schema_is_stable_and_strict_json():
    a, b, wa, wb = make_problem("shifted", 2, 40, 30, True)
    result = estimate_w1(a, b, wa, wb, target="sample", exact="always", floor=True)
    d = result.to_dict()
    assert set(d) == RESULT_KEYS
    assert set(d["sample"]) == SAMPLE_KEYS and set(d["floor"]) == SAMPLE_KEYS
    back = json.loads(json.dumps(d, allow_nan=False))
    for key in ("lower", "upper", "estimate", "exact"):
        assert back["sample"][key] == getattr(result.sample, key)
        assert type(back["sample"][key]) is float
    assert back["target"] == "sample" and back["metric"] == "euclidean"
    assert set(back["sample"]["rounds"][0]) == {"round", "lower", "upper", "seconds"}
    assert set(estimate_w1(a[:, 0], b[:, 0], target="sample").to_dict()) == RESULT_KEYS


def test_top_level_export_is_lazy():
    import subprocess
    import sys

    code = "import sys, wassnet; assert 'torch' not in sys.modules; wassnet.estimate_w1"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert wassnet.estimate_w1 is estimate_w1


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
        estimate_w1(a, b, wa, wb, target="sample")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"exact": "bogus"}, "exact"),
        ({"target": "nope"}, "target"),
        ({"metric": "cosine"}, "metric"),
        ({"sample": "fast"}, "SampleOptions"),
        ({"population": "fast", "target": "both"}, "PopulationOptions"),
    ],
)
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate_w1(_points(), _points(seed=1), **{"target": "sample", **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"route": "magic"},
        {"time_budget": float("nan")},
        {"time_budget": -1.0},
        {"tol": float("inf")},
        {"rounds": 0},
        {"backend": "gpu"},
    ],
)
def test_bad_sample_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        SampleOptions(**kwargs)


def test_time_budget_too_short_for_two_passes_falls_back_to_blockwise(monkeypatch):
    """A budget that cannot pay for the two passes of the first bracket returns a
    cheaper certified bracket at once (and says why); a generous one does not."""
    import wassnet.w1.sample as sample_module

    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) + 0.5
    monkeypatch.setattr(sample_module, "DENSE_PASS_MAX_PAIRS", 1000)  # fused tiles
    monkeypatch.setattr(sample_module, "CALIBRATION_PAIRS", 300 * 60)
    exact = pot_w1(x, y)
    tight = SampleOptions(route="assignment", time_budget=1e-6, backend="eager")
    s = estimate_w1(x, y, target="sample", sample=tight).sample
    assert s.passes == 0 and "time budget 1e-06 s reached" in s.budget
    assert s.lower <= exact <= s.upper
    roomy = SampleOptions(route="assignment", time_budget=600, backend="eager")
    s = estimate_w1(x, y, target="sample", sample=roomy).sample
    assert s.route == "assignment" and s.passes >= 2
    assert s.lower <= exact * (1 + 1e-12) and exact <= s.upper * (1 + 1e-12)


def test_a_failing_sparse_solver_is_named_in_the_result(monkeypatch):
    import wassnet.ot.sparse as sparse_module

    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(50, 3))
    monkeypatch.setattr(sparse_module, "_solve", broken)
    s = estimate_w1(x, y, target="sample", sample=SampleOptions(route="transport")).sample
    assert "sparse solver failed: solver exploded" in s.upper_method
    exact = pot_w1(x, y)
    assert s.lower <= exact * (1 + 1e-12) and exact <= s.upper * (1 + 1e-12)
