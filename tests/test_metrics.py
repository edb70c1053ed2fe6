"""W1 under the cityblock (l1) and chebyshev (l-inf) ground costs.

The sample bracket is checked against the **exact** rational W1 (``exact_reference.py``:
l1 and l-inf costs of float64 inputs are exact rationals) on adversarial problems, on
every route, and against POT's ``ot.dist`` with the same metric on larger ones. The
population critics are checked to be 1-Lipschitz in the metric's norm.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import ot
import pytest
import torch
from click.testing import CliRunner
from conftest import examples
from exact_reference import cost_enclosures, hub_upper_bound, marginal, w1_enclosure
from hypothesis import given, settings
from hypothesis import strategies as st
from test_certificates import above, assert_certified, below, problems, routes_for

import wassnet.ot.metrics as metrics_module
from wassnet.cli import main
from wassnet.errors import InputError
from wassnet.nn import NormPool, lipschitz_bound, norm_ratio
from wassnet.ot import PairwiseCost, TiledCost, TransportProblem, c_transform_bound, plan_bound
from wassnet.ot.costs import direct_cost_bounds
from wassnet.ot.exact import exact_w1
from wassnet.ot.projections import sliced_lower_bound
from wassnet.w1 import PopulationOptions, SampleOptions, estimate_w1
from wassnet.w1.critic_fit import TransportCritic, best_linear_direction, build_critic
from wassnet.w1.population import pair_second_moment

pytestmark = pytest.mark.usefixtures("one_thread")

OTHER = ["cityblock", "chebyshev"]
metrics = st.sampled_from(OTHER)


def as_2d(v: np.ndarray) -> np.ndarray:
    return v.reshape(len(v), -1)


# ----------------------------------------------------------------------------- exact


@settings(max_examples=examples(80), deadline=None)
@given(problems(), metrics)
def test_every_route_brackets_the_exact_w1(problem, metric):
    x, y, wa, wb = problem
    exact = w1_enclosure(x, y, wa, wb, metric)
    for route in routes_for(x, y, wa, wb):
        sample = estimate_w1(
            x,
            y,
            wa,
            wb,
            target="sample",
            metric=metric,
            sample=SampleOptions(route=route, warm_start=3),
        ).sample
        assert_certified(sample.lower, sample.upper, exact)
        assert sample.lower <= sample.upper


@settings(max_examples=examples(60), deadline=None)
@given(problems(max_points=4), metrics)
def test_cost_bounds_enclose_the_exact_costs(problem, metric):
    x, y, _, _ = problem
    p = TransportProblem.build(x, y, metric=metric)
    exact, _ = cost_enclosures(p.x, p.y, metric)
    chunks = torch.cat([c for _, c in PairwiseCost(p).chunks()]).numpy()
    rows, cols = np.meshgrid(np.arange(p.n), np.arange(p.m), indexing="ij")
    lo, hi = direct_cost_bounds(p.x[rows.ravel()], p.y[cols.ravel()], metric=metric)
    for k, (i, j) in enumerate(zip(rows.ravel(), cols.ravel(), strict=True)):
        assert below(lo[k], exact[i][j]) and above(hi[k], exact[i][j])
        assert below(chunks[i, j], exact[i][j])
        if exact[i][j] == 0:
            assert lo[k] == hi[k] == 0


def test_sums_that_round_up_are_bounded_below():
    """fl(0.1 + 0.2) exceeds the exact sum of the two floats: the margin is needed."""
    x = np.array([[0.1, 0.2, 0.3, 0.7, 0.9]])
    y = np.zeros((1, 5))
    exact = sum((Fraction(v) for v in x[0]), Fraction(0))
    assert Fraction(float(torch.cdist(torch.tensor(x), torch.tensor(y), p=1))) != exact
    p = TransportProblem.build(x, y, metric="cityblock")
    lo, hi = direct_cost_bounds(p.x, p.y, metric="cityblock")
    chunk = next(PairwiseCost(p).chunks())[1]
    scale = Fraction(2) ** -p.exponent
    assert Fraction(float(lo[0])) <= exact * scale <= Fraction(float(hi[0]))
    assert Fraction(float(chunk[0, 0])) <= exact * scale


@settings(max_examples=examples(50), deadline=None)
@given(problems(max_points=4), metrics, st.integers(0, 2**32 - 1))
def test_any_potential_gives_a_lower_bound_feasible_on_every_pair(problem, metric, seed):
    x, y, wa, wb = problem
    p = TransportProblem.build(x, y, wa, wb, metric)
    rng = np.random.default_rng(seed)
    u = rng.normal(size=p.n) * rng.choice([1e-12, 1.0, 1e3])
    bound = c_transform_bound(PairwiseCost(p), u)
    assert below(bound.value, w1_enclosure(x, y, wa, wb, metric)[1])
    exact, _ = cost_enclosures(p.x, p.y, metric)
    u_f, v_f = bound.u.numpy(), bound.v.numpy()
    for i in range(p.n):
        for j in range(p.m):
            assert Fraction(float(u_f[i])) - Fraction(float(v_f[j])) <= exact[i][j]


@settings(max_examples=examples(50), deadline=None)
@given(problems(max_points=4), metrics, st.integers(0, 2**32 - 1))
def test_any_nonnegative_plan_gives_an_upper_bound(problem, metric, seed):
    x, y, wa, wb = problem
    p = TransportProblem.build(x, y, wa, wb, metric)
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, p.n * p.m + 1))
    rows, cols = rng.integers(0, p.n, k), rng.integers(0, p.m, k)
    mass = rng.random(k) * rng.choice([1e-17, 1e-3, 1.0, 3.0])
    bound = plan_bound(p, rows, cols, mass, "random")
    assert above(bound.value, w1_enclosure(x, y, wa, wb, metric)[0])


@settings(max_examples=examples(50), deadline=None)
@given(problems(max_points=5), metrics)
def test_sliced_lower_bound_is_below_w1(problem, metric):
    x, y, wa, wb = problem
    p = TransportProblem.build(x, y, wa, wb, metric)
    value, _ = sliced_lower_bound(p)
    lower = p.to_input_units(value, value)[0]
    assert below(lower, w1_enclosure(x, y, wa, wb, metric)[0])


def test_the_sliced_bound_divides_by_the_dual_norm():
    """A translation by t: the sliced bound along t is |t|_2^2 / |t|_* = the metric's
    norm of t only for the right dual norm; dividing by |t|_2 would overstate l-inf."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    t = np.array([1.0, 1.0, 1.0])
    for metric, norm in [("cityblock", 3.0), ("chebyshev", 1.0), ("euclidean", 3**0.5)]:
        p = TransportProblem.build(x, x + t, metric=metric)
        value, _ = sliced_lower_bound(p, directions=t[None, :])
        lower = p.to_input_units(value, value)[0]
        assert lower <= norm and lower == pytest.approx(norm, rel=1e-9), metric


def test_hub_charges_use_the_metric():
    """Residual mass is charged at the metric's distance to a hub (exact reference)."""
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    y = np.array([[1.0, 1.0]])
    for metric in OTHER:
        p = TransportProblem.build(x, y, metric=metric)
        bound = plan_bound(p, np.array([0]), np.array([0]), np.array([0.25]), "partial")
        hubs = [np.concatenate([x, y]).mean(0)]
        # any hub gives an exact upper bound; the certified one must not undercut W1
        assert above(bound.value, w1_enclosure(x, y, None, None, metric)[0])
        exact_hub = hub_upper_bound(x, y, None, None, [(0, 0)], [Fraction(1, 4)], hubs[0])
        assert exact_hub > 0


# ----------------------------------------------------------------------------- POT


@pytest.mark.parametrize("metric", OTHER)
@pytest.mark.parametrize(
    ("n", "m", "d", "weighted", "route"),
    [
        (1300, 1300, 3, False, "assignment"),
        (600, 500, 8, True, "transport"),
        (900, 900, 16, False, "dense"),
        (300, 300, 2, False, "blockwise"),
    ],
)
def test_brackets_contain_pots_value(metric, n, m, d, weighted, route):
    rng = np.random.default_rng(n + d)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) * 1.3 + 0.2
    wa = rng.random(n) if weighted else None
    wb = rng.random(m) if weighted else None
    a = np.full(n, 1 / n) if wa is None else wa / wa.sum()
    b = np.full(m, 1 / m) if wb is None else wb / wb.sum()
    reference = ot.emd2(a, b, ot.dist(x, y, metric=metric), numItermax=10**7)
    result = estimate_w1(
        x,
        y,
        wa,
        wb,
        metric=metric,
        target="sample",
        sample=SampleOptions(route=route, warm_start=60),
    )
    s = result.sample
    slack = 1e-12 * reference  # POT's value is a float64 computation, not exact
    assert s.lower - slack <= reference <= s.upper + slack
    if route != "blockwise":
        assert (s.upper - s.lower) <= 1e-9 * s.upper
    assert exact_w1(x, y, wa, wb, metric=metric) == pytest.approx(reference, rel=1e-12)


def test_chunked_passes_match_held_ones():
    """Beyond the held matrix, chunks are recomputed on every pass: same bounds."""
    rng = np.random.default_rng(3)
    p = TransportProblem.build(
        rng.normal(size=(300, 5)), rng.normal(size=(200, 5)), metric="cityblock"
    )
    held = PairwiseCost(p)
    chunked = PairwiseCost(p, dense_bytes=0, chunk_bytes=8 * 200 * 7)
    assert held.held and not chunked.held
    u = torch.as_tensor(rng.normal(size=300))
    assert c_transform_bound(held, u).value == c_transform_bound(chunked, u).value


def test_a_cdist_that_breaks_the_margin_is_not_trusted(monkeypatch):
    """If torch.cdist computed something else than the margin assumes, the bounds come
    from wassnet's own differences."""
    monkeypatch.setattr(metrics_module, "_CDIST_CHECKED", {})
    real = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda x, y, p=2.0, **kw: real(x, y, p=p, **kw) * 1.01)
    x = np.random.default_rng(0).normal(size=(20, 4))
    p = TransportProblem.build(x, x + 0.5, metric="cityblock")
    chunk = next(PairwiseCost(p).chunks())[1].numpy()
    exact, _ = cost_enclosures(p.x, p.y, "cityblock")
    assert all(Fraction(float(chunk[i, j])) <= exact[i][j] for i in range(20) for j in range(20))
    assert metrics_module._CDIST_CHECKED[("cityblock", "cpu")] is False


def test_fused_tiles_refuse_other_metrics():
    p = TransportProblem.build(np.zeros((3, 2)), np.ones((3, 2)), metric="chebyshev")
    with pytest.raises(InputError, match="Euclidean costs"):
        TiledCost(p)


def test_unknown_metric_is_refused_with_one_line():
    with pytest.raises(InputError, match="metric must be one of euclidean, cityblock, chebyshev"):
        estimate_w1(np.zeros((3, 2)), np.ones((3, 2)), metric="minkowski")
    with pytest.raises(InputError, match="metric must be one of"):
        TransportProblem.build(np.zeros((3, 2)), np.ones((3, 2)), metric="cosine")
    with pytest.raises(InputError, match="metric must be one of"):
        exact_w1(np.zeros((3, 2)), np.ones((3, 2)), metric="l1")


def test_metrics_agree_on_the_line():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=40)
    values = {
        m: estimate_w1(x, y, metric=m, target="sample").sample.upper
        for m in ("euclidean", "cityblock", "chebyshev")
    }
    assert len(set(values.values())) == 1


# ----------------------------------------------------------------------------- critics


@settings(max_examples=examples(40), deadline=None)
@given(
    st.sampled_from([1.0, 2.0, math.inf]),
    st.sampled_from([1.0, 2.0, math.inf]),
    st.integers(1, 9),
    st.integers(0, 2**32 - 1),
)
def test_norm_pool_bound_holds_and_is_attained(q, p, g, seed):
    pool = NormPool(g, q).double()
    bound = lipschitz_bound(pool, (2 * g,), p).bound
    assert bound == norm_ratio(q, p, g)
    rng = np.random.default_rng(seed)
    x, y = torch.tensor(rng.normal(size=(64, 2 * g))), torch.tensor(rng.normal(size=(64, 2 * g)))
    num = torch.linalg.vector_norm(pool(x) - pool(y), ord=p, dim=1)
    den = torch.linalg.vector_norm(x - y, ord=p, dim=1)
    assert bool((num <= bound * den * (1 + 1e-12)).all())
    # attained: the vector of ones against zero (ratio of the norms on a group)
    ones = torch.ones(1, g, dtype=torch.float64)
    zero = torch.zeros(1, g, dtype=torch.float64)
    pool1 = NormPool(g, q).double()
    attained = float(pool1(ones) - pool1(zero)) / float(torch.linalg.vector_norm(ones, ord=p))
    if norm_ratio(q, p, g) > 1:
        assert attained == pytest.approx(bound, rel=1e-12) and attained <= bound


def test_norm_ratio_is_rounded_up():
    for dim in (2, 3, 5, 10, 784, 1000):
        r = norm_ratio(2, math.inf, dim)
        assert Fraction(r) ** 2 >= dim
        assert norm_ratio(1, 2, dim) == r
        assert norm_ratio(1, math.inf, dim) == dim
    assert norm_ratio(2, math.inf, 16) == 4.0


@pytest.mark.parametrize("metric", OTHER)
def test_best_linear_direction_has_dual_norm_one_and_is_optimal(metric):
    rng = np.random.default_rng(0)
    diff = torch.tensor(rng.normal(size=7))
    w = best_linear_direction(diff, metric)
    dual = 1 if metric == "chebyshev" else math.inf
    assert float(torch.linalg.vector_norm(w, ord=dual)) == 1.0
    for _ in range(200):
        r = torch.tensor(rng.normal(size=7))
        r = r / torch.linalg.vector_norm(r, ord=dual)
        assert float(r @ diff) <= float(w @ diff) + 1e-12
    assert best_linear_direction(torch.zeros(3), metric) is None


@pytest.mark.parametrize("metric", OTHER)
def test_transport_critic_is_one_lipschitz_in_its_metric(metric):
    rng = np.random.default_rng(1)
    a, b = torch.tensor(rng.normal(size=(30, 4))), torch.tensor(rng.normal(size=(30, 4)) + 1)
    critic = TransportCritic(
        a, torch.tensor(rng.normal(size=30)), b, torch.tensor(rng.normal(size=30)), metric
    )
    p = 1.0 if metric == "cityblock" else math.inf
    assert lipschitz_bound(torch.nn.Sequential(critic), (4,), p).bound == 1.0
    assert lipschitz_bound(torch.nn.Sequential(critic), (4,), 2).bound == norm_ratio(p, 2, 4)
    x, y = torch.tensor(rng.normal(size=(500, 4))), torch.tensor(rng.normal(size=(500, 4)))
    gap = (critic(x) - critic(y)).abs().squeeze(1)
    assert bool((gap <= torch.linalg.vector_norm(x - y, ord=p, dim=1) * (1 + 1e-12)).all())


@pytest.mark.parametrize("metric", OTHER)
def test_population_critics_are_certified_in_the_metric(metric):
    """Cross-fitted critics (every family) divided by their certified bound are
    1-Lipschitz in the metric's norm; the bracket holds the true W1 of a translation
    (the metric's norm of the shift)."""
    rng = np.random.default_rng(5)
    shift = np.array([0.6, -0.3, 0.0])
    a = rng.normal(size=(800, 3))
    b = rng.normal(size=(800, 3)) + shift
    options = PopulationOptions(
        time_budget=20, steps=150, critics=("linear", "radial", "transport", "dense")
    )
    result = estimate_w1(a, b, metric=metric, target="population", population=options)
    pop = result.population
    p = 1.0 if metric == "cityblock" else math.inf
    truth = float(np.linalg.norm(shift, ord=p))
    assert pop.lower <= truth <= pop.upper
    assert f"certified 1-Lipschitz in {'l1' if p == 1 else 'linf'}" in pop.lower_method
    x, y = torch.tensor(rng.normal(size=(2000, 3))), torch.tensor(rng.normal(size=(2000, 3)))
    for fitted in pop.critics:
        assert lipschitz_bound(fitted.module, (3,), p).bound == fitted.lipschitz
        gap = (fitted.module(x) - fitted.module(y)).abs().squeeze(1) / fitted.lipschitz
        assert bool((gap <= torch.linalg.vector_norm(x - y, ord=p, dim=1) * (1 + 1e-9)).all())


@pytest.mark.parametrize("metric", OTHER)
def test_projected_dense_critic_stays_within_its_bound(metric):
    """The dense family is trained with a projection after every step: its certified
    bound in the metric's norm is 1 up to float32 rounding of the weights."""
    from wassnet.w1.critic_fit import _fit_family, _split

    rng = np.random.default_rng(0)
    a, b = torch.randn(400, 5), torch.randn(400, 5) * 2
    options = PopulationOptions(steps=60, eval_every=20)
    data = _split(a, b, 0.25, rng)
    critic, _, steps = _fit_family("dense", data, options, math.inf, torch.Generator(), 0, metric)
    assert steps > 0
    p = 1.0 if metric == "cityblock" else math.inf
    assert lipschitz_bound(critic.double(), (5,), p).bound <= 1 + 1e-6
    assert isinstance(build_critic("dense", 5, options, metric)[0], torch.nn.Linear)


def test_second_moment_of_the_metric():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(6000, 10)).astype(float)  # |X - X'|_1 ~ Binomial(10, 1/2)
    assert pair_second_moment(x, "cityblock") == pytest.approx(10 / 4 + 100 / 4, rel=0.03)
    assert pair_second_moment(x, "euclidean") == pytest.approx(5.0, rel=0.03)  # 2 tr Cov
    # l-inf: |X - X'|_inf is 1 unless X == X' (probability 2^-10)
    assert pair_second_moment(x, "chebyshev") == pytest.approx(1 - 2.0**-10, rel=0.01)


# ----------------------------------------------------------------------------- CLI


def test_cli_metric_json_and_exact_reference(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "a.npy", rng.normal(size=(200, 3)))
    np.save(tmp_path / "b.npy", rng.normal(size=(150, 3)) + 1)
    runner = CliRunner()
    args = [str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--target", "sample"]
    out = runner.invoke(
        main, ["estimate", *args, "--metric", "chebyshev", "--exact", "always", "--json", "--quiet"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["metric"] == "chebyshev"
    s = data["sample"]
    assert s["lower"] <= s["exact"] * (1 + 1e-12) and s["exact"] <= s["upper"] * (1 + 1e-12)
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    exact = w1_enclosure(a[:40], b[:30], None, None, "chebyshev")[0]
    assert exact > 0
    bad = runner.invoke(main, ["estimate", *args, "--metric", "cosine"])
    assert bad.exit_code == 2 and "cosine" in bad.output
    text = runner.invoke(main, ["estimate", *args, "--metric", "cityblock", "--quiet"])
    assert text.exit_code == 0 and "cityblock" in text.output


def test_marginal_helper_is_exact():
    assert sum(marginal(None, 3)) == 1
    assert as_2d(np.zeros(3)).shape == (3, 1)


# ----------------------------------------------------------------------------- red team


def test_l1_sums_that_overflow_keep_a_valid_lower_bound():
    """The float l1 sum can overflow where the exact one does not (each difference
    rounded up): the lower bound falls back on the l-inf one instead of DBL_MAX."""
    x = np.array(
        [[float.fromhex(h) for h in ("0x1.4p+1022", "0x1.4p+1022", "0x1.7fffffffffffcp+1022")]]
    )
    y = -np.full((1, 3), float.fromhex("0x1.0000000001p+969"))
    exact = sum((Fraction(a) - Fraction(b) for a, b in zip(x[0], y[0], strict=True)), Fraction(0))
    with np.errstate(over="ignore"):
        lo, hi = direct_cost_bounds(x, y, metric="cityblock")
    chunk = metrics_module.lower_bound_matrix(torch.tensor(x), torch.tensor(y), "cityblock")
    assert Fraction(float(lo[0])) <= exact and Fraction(float(chunk[0, 0])) <= exact
    assert float(lo[0]) > 1e307 and math.isinf(hi[0])


@pytest.mark.parametrize("route", ["dense", "transport", "assignment"])
def test_potentials_are_feasible_when_the_scale_moved_subnormals(route):
    """The scale rounds subnormal coordinates (perturbation > 0): the potentials in
    input units are shifted by it, so u_i - v_j <= c_ij holds exactly again."""
    eta = 5e-324
    x = np.array([[1.0] + [3 * eta] * 4])
    y = np.array([[1.0] + [-3 * eta] * 4])
    s = estimate_w1(
        x, y, target="sample", metric="cityblock", sample=SampleOptions(route=route, warm_start=3)
    ).sample
    u, v = s.potentials
    exact = 24 * Fraction(eta)
    assert Fraction(float(u[0])) - Fraction(float(v[0])) <= exact
    assert Fraction(s.lower) <= exact <= Fraction(s.upper)


def test_overflowing_bounds_are_refused_with_a_true_sentence():
    x = np.array([[1e308, 1e308], [-1e308, -1e308]])
    with pytest.raises(
        InputError, match="W1 or its certified upper bound exceeds the float64 range"
    ):
        estimate_w1(
            x,
            x[::-1].copy(),
            target="sample",
            metric="cityblock",
            sample=SampleOptions(route="blockwise", warm_start=3),
        )
    s = estimate_w1(x, x[::-1].copy(), target="sample", metric="cityblock").sample
    assert s.lower == s.upper == 0.0


# ----------------------------------------------------------------------------- routes


def test_low_dimensional_l1_and_linf_take_the_dense_route_further():
    from wassnet.w1.sample import DENSE_FALLBACK_FACTOR, choose_route

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    options = SampleOptions(dense_max_pairs=100)  # 900 pairs: 9x the dense limit
    assert DENSE_FALLBACK_FACTOR * 100 >= 900
    for metric, route in [
        ("euclidean", "assignment"),
        ("cityblock", "dense"),
        ("chebyshev", "dense"),
    ]:
        assert choose_route(TransportProblem.build(x, y, metric=metric), options) == route
    high = TransportProblem.build(
        rng.normal(size=(30, 8)), rng.normal(size=(30, 8)), metric="cityblock"
    )
    assert choose_route(high, options) == "assignment"


def test_an_open_column_generation_is_finished_by_the_dense_solver():
    """Pixels on a grid of quarters in l-inf: costs take 5 values (ties everywhere); one
    round of column generation leaves the bracket open, POT's dense solver closes it."""
    rng = np.random.default_rng(0)
    x = np.round(rng.random((80, 20)) * 4) / 4
    y = np.round(rng.random((80, 20)) ** 2 * 4) / 4
    options = SampleOptions(route="assignment", rounds=1, warm_start=10)
    s = estimate_w1(x, y, metric="chebyshev", target="sample", sample=options).sample
    assert "left the bracket open" in s.lower_method
    reference = ot.emd2(np.full(80, 1 / 80), np.full(80, 1 / 80), ot.dist(x, y, metric="chebyshev"))
    assert s.lower <= reference * (1 + 1e-12) and reference <= s.upper * (1 + 1e-12)
    assert s.upper - s.lower <= 1e-9 * s.upper
    exact = w1_enclosure(x[:6], y[:6], None, None, "chebyshev")[0]
    assert exact >= 0
