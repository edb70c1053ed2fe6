"""Every certified W1 number against an **exact** reference (rational arithmetic).

The reference (``exact_reference.py``) never uses wassnet or POT: float64 inputs are
exact rationals, costs are enclosed by integer square roots, and the LP is solved
exactly. A certified ``lower`` must not exceed the exact W1 and a certified ``upper``
must not fall below it -- by any amount, not even one ulp.

Problems are drawn adversarially (hypothesis): duplicates, ties, permuted copies
(W1 = 0), tiny and huge weights, huge offsets, mixed scales, integer grids, n = 1,
d = 1. Every route of the sample engine is forced on every problem.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import examples
from exact_reference import (
    cost_enclosures,
    hub_upper_bound,
    marginal,
    w1_enclosure,
    w1_line_exact,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import wassnet.ot.costs as costs_module
import wassnet.ot.plans as plans_module
import wassnet.ot.sparse as sparse
from wassnet.errors import InputError
from wassnet.ot import (
    PairwiseCost,
    TiledCost,
    TransportProblem,
    c_transform_bound,
    line_bracket,
    monotone_coupling,
    plan_bound,
)
from wassnet.ot.costs import direct_cost_bounds
from wassnet.ot.projections import sliced_lower_bound
from wassnet.w1 import SampleOptions, estimate_w1

pytestmark = pytest.mark.usefixtures("one_thread")


def below(value: float, exact: Fraction) -> bool:
    return Fraction(value) <= exact


def above(value: float, exact: Fraction) -> bool:
    return Fraction(value) >= exact


def assert_certified(lower: float, upper: float, enclosure: tuple[Fraction, Fraction]) -> None:
    lo, hi = enclosure
    assert below(lower, hi), f"lower {lower!r} > exact W1 {float(hi)!r}"
    assert above(upper, lo), f"upper {upper!r} < exact W1 {float(lo)!r}"


# ----------------------------------------------------------------------------- problems

SCALES = [1.0, 0.5, 2.0**-30, 2.0**40, 1e-170, 1e-300, 1e8, 3.3e9, 0.1, 1e150, 1e300]
OFFSETS = [0.0, 1.0, 1e8, 3e9, -1e15, 2.0**52]
TINY = [1e-12, 1e-17, 1e-300]


@st.composite
def weights(draw, n: int):
    kind = draw(st.sampled_from(["uniform", "integers", "random", "tiny", "zeros"]))
    if kind == "uniform":
        return None
    if kind == "integers":
        return np.array(draw(st.lists(st.integers(1, 7), min_size=n, max_size=n)), float)
    w = np.array(draw(st.lists(st.floats(0.05, 3.0), min_size=n, max_size=n)))
    if kind == "tiny":
        w[draw(st.integers(0, n - 1))] = draw(st.sampled_from(TINY))
    if kind == "zeros" and n > 1:
        w[draw(st.integers(0, n - 1))] = 0.0
    return w


@st.composite
def problems(draw, max_points: int = 5):
    d = draw(st.integers(1, 3))
    n = draw(st.integers(1, max_points))
    mode = draw(st.sampled_from(["random", "permuted", "duplicates", "translated", "mixed"]))
    grid = st.lists(st.integers(-4, 4), min_size=d, max_size=d)
    a = np.array(draw(st.lists(grid, min_size=n, max_size=n)), dtype=float)
    if mode == "permuted":
        b = a[np.array(draw(st.permutations(range(n))))]
    elif mode == "duplicates":
        b = np.repeat(a[:1], draw(st.integers(1, max_points)), axis=0)
    elif mode == "translated":
        b = a + np.array(draw(grid), dtype=float) / 4
    else:
        m = draw(st.integers(1, max_points))
        b = np.array(draw(st.lists(grid, min_size=m, max_size=m)), dtype=float)
    scale = draw(st.sampled_from(SCALES))
    offset = draw(st.sampled_from(OFFSETS)) if scale <= 1e150 else 0.0
    if mode == "mixed":  # two magnitudes in one cloud
        b[0] *= draw(st.sampled_from([1e-9, 1e6]))
    x, y = a * scale + offset, b * scale + offset
    wa = draw(weights(len(x)))
    wb = draw(weights(len(y)))
    if mode == "permuted" and wa is not None:  # W1 = 0 when the weights follow
        factor = draw(st.sampled_from([1.0, 3.0, 7.0, 0.1, 0.5]))
        wb = wa * factor
    if d == 1:
        x, y = x[:, 0], y[:, 0]
    return x, y, wa, wb


def routes_for(x: np.ndarray, y: np.ndarray, wa, wb) -> list[str]:
    if x.ndim == 1:
        return ["line"]
    out = ["dense", "transport", "blockwise"]
    if len(x) == len(y) and wa is None and wb is None:
        out.append("assignment")
    return out


# ----------------------------------------------------------------------------- every route


@settings(max_examples=examples(120), deadline=None)
@given(problems())
def test_every_route_brackets_the_exact_w1(problem):
    x, y, wa, wb = problem
    exact = w1_enclosure(x, y, wa, wb)
    for route in routes_for(x, y, wa, wb):
        sample = estimate_w1(
            x, y, wa, wb, target="sample", sample=SampleOptions(route=route, warm_start=3)
        ).sample
        assert_certified(sample.lower, sample.upper, exact)
        assert sample.lower <= sample.upper


@settings(max_examples=examples(60), deadline=None)
@given(problems())
def test_transport_route_with_every_round_warm_started_brackets_the_exact_w1(problem):
    """Rounds after the first by our network simplex from the previous plan's tree (by
    default only near the optimum)."""
    x, y, wa, wb = problem
    if x.ndim == 1:
        return
    exact = w1_enclosure(x, y, wa, wb)
    options = SampleOptions(route="transport", warm_start=2, candidates=1)
    with mock.patch.object(sparse, "SIMPLEX_WARM_GAP", math.inf):
        sample = estimate_w1(x, y, wa, wb, target="sample", sample=options).sample
    assert_certified(sample.lower, sample.upper, exact)


@settings(max_examples=examples(60), deadline=None)
@given(problems(max_points=4), st.integers(0, 2**32 - 1))
def test_any_nonnegative_plan_gives_an_upper_bound(problem, seed):
    """plan_bound charges every marginal residual: random plans, dropped points,
    rounding-level perturbations of an optimal plan."""
    x, y, wa, wb = problem
    p = TransportProblem.build(x, y, wa, wb)
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, p.n * p.m + 1))
    rows, cols = rng.integers(0, p.n, k), rng.integers(0, p.m, k)
    mass = rng.random(k) * rng.choice([1e-17, 1e-3, 1.0, 3.0])
    bound = plan_bound(p, rows, cols, mass, "random")
    assert above(bound.value, w1_enclosure(x, y, wa, wb)[0])


@settings(max_examples=examples(60), deadline=None)
@given(
    problems(max_points=4),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 1.0, 1e8, -3e12, 1e300]),
)
def test_any_potential_gives_a_lower_bound(problem, seed, offset):
    """c-transforms are lower bounds for any potential, offsets included, in float64
    passes and in fused float32 passes."""
    x, y, wa, wb = problem
    p = TransportProblem.build(x, y, wa, wb)
    rng = np.random.default_rng(seed)
    u = rng.normal(size=p.n) * rng.choice([1e-12, 1.0, 1e3]) + offset
    hi = w1_enclosure(x, y, wa, wb)[1]
    bound = c_transform_bound(PairwiseCost(p), u)
    assert below(bound.value, hi)
    tiled = c_transform_bound(TiledCost(p, backend="eager", tile=2), u)
    assert below(tiled.value, hi)
    native = c_transform_bound(TiledCost(p, backend="native", tile=16), u)  # C pass
    assert below(native.value, hi)
    # the pair is feasible on every pair, exactly (scaled units: exact rationals)
    lo_cost, _ = cost_enclosures(p.x, p.y)
    for dual in (bound, tiled, native):
        u_f, v_f = dual.u.numpy(), dual.v.numpy()
        for i in range(p.n):
            for j in range(p.m):
                assert Fraction(float(u_f[i])) - Fraction(float(v_f[j])) <= lo_cost[i][j]


@settings(max_examples=examples(60), deadline=None)
@given(problems(max_points=5))
def test_sliced_lower_bound_is_below_w1(problem):
    x, y, wa, wb = problem
    p = TransportProblem.build(x, y, wa, wb)
    value, _ = sliced_lower_bound(p)
    lower = p.to_input_units(value, value)[0]
    assert below(lower, w1_enclosure(x, y, wa, wb)[1])


@settings(max_examples=examples(80), deadline=None)
@given(problems(max_points=4))
def test_cost_bounds_enclose_the_exact_costs(problem):
    x, y, _, _ = problem
    p = TransportProblem.build(x, y)
    lo_exact, hi_exact = cost_enclosures(p.x, p.y)
    chunks = torch.cat([c for _, c in PairwiseCost(p).chunks()]).numpy()
    rows, cols = np.meshgrid(np.arange(p.n), np.arange(p.m), indexing="ij")
    lo, hi = direct_cost_bounds(p.x[rows.ravel()], p.y[cols.ravel()])
    for k, (i, j) in enumerate(zip(rows.ravel(), cols.ravel(), strict=True)):
        assert below(lo[k], lo_exact[i][j]) and above(hi[k], hi_exact[i][j])
        assert below(chunks[i, j], lo_exact[i][j])


# ----------------------------------------------------------------------------- the line


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=True), min_size=1, max_size=9),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=True), min_size=1, max_size=9),
    st.data(),
)
def test_line_bracket_contains_the_exact_rational_w1(x, y, data):
    x, y = np.array(x), np.array(y)
    wa, wb = data.draw(weights(len(x))), data.draw(weights(len(y)))
    exact = w1_line_exact(x, y, wa, wb)
    p = TransportProblem.build(x, y, wa, wb)
    lower, upper = p.to_input_units(*line_bracket(p))
    assert below(lower, exact) and above(upper, exact)
    assert upper - lower <= 1e-14 * max(upper, 1e-300) or float(exact) < 1e-290


def test_line_two_hundred_random_cases_are_inside_and_a_few_ulps_wide():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y = rng.normal(size=7), rng.normal(size=5) * 2
        exact = w1_line_exact(x, y)
        r = estimate_w1(x, y, target="sample").sample
        assert below(r.lower, exact) and above(r.upper, exact)
        assert r.upper - r.lower <= 16 * np.spacing(r.upper)


@pytest.mark.parametrize(("w", "far"), [(1e-12, 1e12), (1e-17, 1e17), (1e-300, 1.0)])
def test_line_light_far_point_is_exact(w, far):
    x, y = np.array([0.0, far]), np.array([0.0])
    exact = w1_line_exact(x, y, [1.0, w])
    r = estimate_w1(x, y, [1.0, w], target="sample").sample
    assert below(r.lower, exact) and above(r.upper, exact)
    assert r.lower > 0 and r.upper == pytest.approx(float(exact), rel=1e-14)


# ----------------------------------------------------------------------------- regressions


def test_one_point_against_many_duplicates_and_one_far_point():
    """Was: upper 7.8e-11 relative below the exact (2998 + L) / 2999, lower > upper."""
    far = 1e6
    a = np.zeros((1, 2))
    b = np.zeros((2999, 2))
    b[:2998, 0] = 1.0
    b[2998, 0] = far
    exact = Fraction(2998 + int(far), 2999)
    for route in ("dense", "transport", "blockwise"):
        r = estimate_w1(a, b, target="sample", sample=SampleOptions(route=route)).sample
        assert below(r.lower, exact) and above(r.upper, exact), route
    out = CliRunner()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "a.npy", a)
        np.save(Path(tmp) / "b.npy", b)
        from wassnet.cli import main

        res = out.invoke(main, ["estimate", f"{tmp}/a.npy", f"{tmp}/b.npy", "--json", "--quiet"])
        assert res.exit_code == 0, res.output
        sample = json.loads(res.stdout)["sample"]
        assert below(sample["lower"], exact) and above(sample["upper"], exact)


def test_monotone_coupling_k0_with_equal_sizes_is_charged():
    """Was: sparse_transport_upper_bound(k=0) priced float cumsum masses uncharged."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 2))
    y = x[::-1] + np.array([[1e6, 0.0]] + [[0.0, 0.0]] * 4)
    p = TransportProblem.build(x, y)
    u = rng.normal(size=5)
    a, b = p.a.probabilities(), p.b.probabilities()
    plan = plan_bound(p, *monotone_coupling(u, u, a, b), "monotone coupling")
    assert above(plan.value, w1_enclosure(x, y)[0])


@pytest.mark.parametrize("w", [1e-12, 1e-17])
@pytest.mark.parametrize("distance", [1.0, 1e12])
def test_tiny_weights_far_away(w, distance):
    """16 equal points per side plus one of weight w at distance D on each side:
    W1 = 2 D w / (16 + w) exactly. Was: upper 1.2e-3 below, lower > upper at D = 1e12,
    half the truth at w = 1e-17."""
    a = np.zeros((17, 2))
    b = np.zeros((17, 2))
    a[16, 0], b[16, 0] = distance, -distance
    weights = np.ones(17)
    weights[16] = w
    exact = 2 * Fraction(distance) * Fraction(w) / (16 + Fraction(w))
    for route in ("dense", "transport", "blockwise"):
        r = estimate_w1(
            a, b, weights, weights, target="sample", sample=SampleOptions(route=route)
        ).sample
        assert below(r.lower, exact) and above(r.upper, exact), route
        assert r.upper <= 2.5 * float(exact), route  # the charge is not the diameter
    tight = estimate_w1(a, b, weights, weights, target="sample").sample
    assert tight.upper == pytest.approx(float(exact), rel=1e-9)


@pytest.mark.parametrize("factor", [3.0, 7.0, 0.5])
@pytest.mark.parametrize("scale", [1.0, 1e8])
def test_zero_distance_gives_lower_at_most_zero(factor, scale):
    """B = A permuted, weights multiplied exactly: W1 = 0, so lower <= 0 exactly.
    Was: lower > 0 in 8 of 12 runs of the LP path, up to 2.2e-8 at scale 1e8."""
    rng = np.random.default_rng(int(factor * 10 + np.log10(scale)))
    a = rng.normal(size=(40, 2)) * scale + scale
    perm = rng.permutation(40)
    w = rng.integers(1, 9, 40).astype(float)
    for route in ("dense", "transport"):
        r = estimate_w1(
            a, a[perm], w, w[perm] * factor, target="sample", sample=SampleOptions(route=route)
        )
        assert r.sample.lower <= 0.0, route
        assert r.sample.upper <= 1e-12 * scale, route


def test_weights_times_a_tenth_lower_stays_below_an_exact_upper_bound():
    """0.1 w rounds: W1 is not exactly 0; lower must stay below a rational upper bound."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(12, 2)) * 1e8 + 1e8
    perm = rng.permutation(12)
    w = rng.random(12) + 0.5
    wb = w[perm] * 0.1
    inverse = np.argsort(perm)
    pairs = [(i, int(inverse[i])) for i in range(12)]
    masses = marginal(w, 12)
    bound = hub_upper_bound(a, a[perm], w, wb, pairs, masses, a.mean(0))
    for route in ("dense", "transport"):
        r = estimate_w1(
            a, a[perm], w, wb, target="sample", sample=SampleOptions(route=route)
        ).sample
        assert below(r.lower, bound), route


def test_offset_potentials_do_not_exceed_a_feasible_plan():
    """Was: c_transform_bound(cost, u + C) exceeded a feasible plan's cost by 2.3e-11."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(30, 3)) + 1e4
    y = rng.normal(size=(30, 3)) + 1e4 + 0.1
    p = TransportProblem.build(x, y)
    cost = PairwiseCost(p)
    hi = w1_enclosure(x, y)[1]
    for offset in (0.0, 1e3, 1e9, -1e12):
        u = torch.as_tensor(rng.normal(size=30)) + offset
        assert below(c_transform_bound(cost, u).value, hi)


def test_weighted_large_offsets_finish_quickly_and_are_certified():
    """Was: 46 weighted points near 3e9 (B = A permuted, weights x0.1) hung in HiGHS."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(46, 2)) + 3e9
    perm = rng.permutation(46)
    w = rng.random(46) + 0.1
    r = estimate_w1(
        a, a[perm], w, w[perm] * 0.1, target="sample", sample=SampleOptions(route="transport")
    )
    inverse = np.argsort(perm)
    pairs = [(i, int(inverse[i])) for i in range(46)]
    bound = hub_upper_bound(a, a[perm], w, w[perm] * 0.1, pairs, marginal(w, 46), a.mean(0))
    assert below(r.sample.lower, bound)
    assert r.sample.seconds < 60


# ----------------------------------------------------------------------------- inputs


def test_integers_beyond_2_53_are_refused_and_exact_ones_accepted():
    big = np.array([[2**53 + 1, 0]], dtype=np.int64)
    with pytest.raises(InputError, match=r"cannot be represented exactly in float64"):
        estimate_w1(big, np.array([[2**53, 0]], dtype=np.int64), target="sample")
    ok = estimate_w1(
        np.array([[2**60, 0]], dtype=np.int64), np.array([[2**60 + 2**8, 0]]), target="sample"
    )
    assert ok.sample.lower <= 256.0 <= ok.sample.upper
    assert ok.sample.upper - ok.sample.lower <= 1e-12 * 256


def test_extended_precision_is_refused_unless_exact():
    x = np.array([[1.0], [2.0]], dtype=np.longdouble)
    if np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("longdouble is float64 on this platform")
    x[0, 0] += np.longdouble(2) ** -60
    with pytest.raises(InputError, match="cannot be represented exactly"):
        estimate_w1(x, np.array([[0.0], [1.0]]), target="sample")
    exact = np.array([1.0, 3.0], dtype=np.longdouble)
    assert estimate_w1(exact, np.array([1.0, 1.0]), target="sample").sample.upper == 1.0


@pytest.mark.parametrize("scale", [1e-170, 1e-300, 2.0**-1060, 1e300])
def test_tiny_and_huge_magnitudes_are_exact(scale):
    a = np.array([[0.0, 0.0], [3.0, 4.0]]) * scale
    b = np.array([[3.0, 0.0], [3.0, 4.0]]) * scale
    exact = w1_enclosure(a, b)
    r = estimate_w1(a, b, target="sample").sample
    assert_certified(r.lower, r.upper, exact)
    assert r.upper > 0 and r.lower == pytest.approx(r.upper, rel=1e-12)


def test_distances_beyond_float64_are_refused():
    with pytest.raises(InputError, match="exceeds the float64 range"):
        estimate_w1(np.array([[1.7e308, 0.0]]), np.array([[-1.7e308, 0.0]]), target="sample")


def test_magnitudes_too_far_apart_for_an_exact_scale_are_charged():
    """A subnormal coordinate next to 1e300 loses bits when scaled: the bracket is
    widened by the displacement instead, and still contains the exact value."""
    a = np.array([[1e300, 5e-324], [3.0, 2.0**-1074 * 3]])
    b = np.array([[1e300, 0.0], [0.0, 0.0]])
    r = estimate_w1(a, b, target="sample").sample
    assert_certified(r.lower, r.upper, w1_enclosure(a, b))


def test_weights_too_far_apart_for_an_exact_scale_are_refused():
    with pytest.raises(InputError, match="span too wide a range"):
        estimate_w1(np.zeros((2, 2)), np.ones((2, 2)), [1e300, 1e-300], target="sample")


# ----------------------------------------------------------------------------- margins


def test_the_outward_rounding_of_c_transforms_is_needed(monkeypatch):
    """u'_i - v_j <= c_ij must hold exactly against the cost bounds the passes use
    (which are themselves below the true costs). Without rounding v up and u' down,
    round-to-nearest breaks it for some pairs: the margin is not decorative."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 3))
    y = rng.normal(size=(12, 3))
    p = TransportProblem.build(x, y)

    def violations() -> int:
        count = 0
        for seed in range(30):
            cost = PairwiseCost(p)
            c = torch.cat([ch for _, ch in cost.chunks()]).numpy()
            u = torch.as_tensor(np.random.default_rng(seed).normal(size=12) * 0.3)
            d = c_transform_bound(cost, u)
            uu, vv = d.u.numpy(), d.v.numpy()
            count += sum(
                Fraction(float(uu[i])) - Fraction(float(vv[j])) > Fraction(float(c[i, j]))
                for i in range(12)
                for j in range(12)
            )
        return count

    assert violations() == 0
    monkeypatch.setattr(costs_module, "up_t", lambda t: t)
    monkeypatch.setattr(costs_module, "down_t", lambda t: t)
    assert violations() > 0


def test_the_residual_charge_is_needed(monkeypatch):
    """Without charging marginal residuals, a plan that drops a point of weight 1e-12
    far away prices below the exact W1."""
    a, b = np.zeros((17, 2)), np.zeros((17, 2))
    a[16, 0], b[16, 0] = 1e12, -1e12
    w = np.ones(17)
    w[16] = 1e-12
    p = TransportProblem.build(a, b, w, w)
    rows = cols = np.arange(16)
    mass = np.full(16, 1 / 16)
    exact = w1_enclosure(a, b, w, w)[0]
    assert above(plan_bound(p, rows, cols, mass, "dropped").value, exact)
    monkeypatch.setattr(plans_module, "_residual_charge", lambda *args: 0.0)
    assert not above(plan_bound(p, rows, cols, mass, "dropped").value, exact)


def test_the_expansion_margin_is_needed(monkeypatch):
    """PairwiseCost's kappa margin: without it some lower bound exceeds its exact cost."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 8)) * 1e3
    y = x + rng.normal(size=(30, 8)) * 10.0  # close, but not close enough to be recomputed
    p = TransportProblem.build(x, y)
    lo_exact, _ = cost_enclosures(p.x, p.y)

    def worst(cost: PairwiseCost) -> bool:
        c = torch.cat([ch for _, ch in cost.chunks()]).numpy()
        return any(Fraction(float(c[i, j])) > lo_exact[i][j] for i in range(30) for j in range(30))

    assert not worst(PairwiseCost(p))
    monkeypatch.setattr(costs_module, "UNIT", 0.0)
    monkeypatch.setattr(costs_module, "gamma", lambda k: 0.0)
    assert worst(PairwiseCost(p, exact_close_pairs=False))


# ----------------------------------------------------------------------------- red-team


def test_tiny_direction_does_not_inflate_the_sliced_bound():
    """Was: a direction whose squared norm is subnormal made the sliced lower bound
    1.63 against an exact 1.41 (its norm was underestimated)."""
    d, c = 8, np.sqrt(1.49) * 2.0**-537
    x = np.array([np.full(d, 0.5), np.full(d, -0.5)])
    y = np.array([np.full(d, c), np.full(d, c)])
    r = estimate_w1(x, y, target="sample", sample=SampleOptions(route="blockwise")).sample
    assert_certified(r.lower, r.upper, w1_enclosure(x, y))
    p = TransportProblem.build(np.full((1, 8), 0.5), np.full((1, 8), -0.5))
    value, _ = sliced_lower_bound(p, np.full((1, 8), c))
    assert below(p.to_input_units(value, value)[0], w1_enclosure(p.x * 2, p.y * 2)[1])


@pytest.mark.parametrize("route", ["dense", "transport", "assignment"])
def test_potentials_stay_feasible_in_input_units_when_subnormal(route):
    t = 2.0**-1074
    x, y = np.array([[2 * t, 2 * t]]), np.array([[0.0, 0.0]])
    u, v = estimate_w1(x, y, target="sample", sample=SampleOptions(route=route)).sample.potentials
    lo, _ = cost_enclosures(x, y)
    assert Fraction(float(u[0])) - Fraction(float(v[0])) <= lo[0][0]


def test_potentials_that_overflow_are_not_reported():
    r = estimate_w1(
        np.array([[-1.7e308, 0.0], [1.7e308, 0.0]]), np.array([[-1.7e308, 0.0]]), target="sample"
    )
    assert r.sample.potentials is None
    assert_certified(
        r.sample.lower,
        r.sample.upper,
        w1_enclosure(np.array([[-1.7e308, 0.0], [1.7e308, 0.0]]), np.array([[-1.7e308, 0.0]])),
    )


def test_huge_potentials_and_absurd_plans_are_handled():
    p = TransportProblem.build(np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 0.0]]))
    exact = w1_enclosure(p.x * 2, p.y * 2)
    for cost in (PairwiseCost(p), TiledCost(p, backend="eager"), TiledCost(p, backend="native")):
        assert below(c_transform_bound(cost, np.array([1e308, -1e308])).value, exact[1])
    with pytest.raises(ValueError, match="overflow"):
        plan_bound(p, np.array([0, 1]), np.array([0, 0]), np.array([1e308, 1e308]), "big")
    with pytest.raises(ValueError, match="finite"):
        plan_bound(p, np.array([0]), np.array([0]), np.array([np.inf]), "inf")


def test_python_integers_beyond_2_53_in_lists_and_text_are_refused(tmp_path):
    with pytest.raises(InputError, match="2\\^53"):
        estimate_w1([[2**53 + 1, 0.5]], [[2**53, 0.5]], target="sample")
    path = tmp_path / "big.csv"
    path.write_text("9007199254740993,1\n1,2\n")
    from wassnet.w1.io import load_points, validate_points

    with pytest.raises(InputError, match="line 1"):
        load_points(path)
    exact = validate_points(np.array([-(2**63), 0], dtype=np.int64))  # representable
    assert exact[0] == -(2.0**63)
