"""Exact W1 and certified bounds (wassnet.ot) against independent references.

References never use wassnet code: POT's network simplex (``ot.emd2``) on a cost
matrix computed by direct differences, ``scipy.stats.wasserstein_distance`` on the
line, and ``torch.cdist`` without the matrix-product expansion.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from conftest import exact_cost, pot_solve
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from wassnet.ot import (
    ExactSolverError,
    PairwiseCost,
    TransportProblem,
    c_transform_bound,
    exact_w1,
    exact_w1_fits,
    sinkhorn_refine,
    w1_1d,
)

# ----------------------------------------------------------------------------- references


def uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def random_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    w = rng.random(n) + 0.05
    return w / w.sum()


def problem(seed: int, n: int, m: int, d: int = 3, weighted: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * 0.7 + 0.4
    wa = random_weights(rng, n) if weighted else uniform(n)
    wb = random_weights(rng, m) if weighted else uniform(m)
    return rng, x, y, wa, wb


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def check_plan(plan, x, y, wa, wb) -> float:
    """Marginals of a sparse plan and its cost recomputed with NumPy; returns the cost."""
    n, m = len(x), len(y)
    assert len(plan.rows) == len(plan.cols) == len(plan.mass)
    assert np.all(plan.mass >= 0)
    assert plan.rows.min() >= 0 and plan.rows.max() < n
    assert plan.cols.min() >= 0 and plan.cols.max() < m
    row_sums = np.bincount(plan.rows, weights=plan.mass, minlength=n)
    col_sums = np.bincount(plan.cols, weights=plan.mass, minlength=m)
    np.testing.assert_allclose(row_sums, wa, rtol=0, atol=1e-9)
    np.testing.assert_allclose(col_sums, wb, rtol=0, atol=1e-9)
    recomputed = float(np.linalg.norm(x[plan.rows] - y[plan.cols], axis=1) @ plan.mass)
    # the residual is charged at the distance to a hub: value >= cost, and the charge
    # is what plan_bound reports
    assert recomputed <= plan.value * (1 + 1e-12)
    assert plan.value - recomputed <= plan.residual_charge + 1e-12 * plan.value
    return recomputed


def build(x, y, wa=None, wb=None) -> tuple[TransportProblem, PairwiseCost]:
    p = TransportProblem.build(x, y, wa, wb)
    return p, PairwiseCost(p)


def scaled(p: TransportProblem, u) -> torch.Tensor:
    """A potential in the input's units, in the problem's (power-of-two scaled) units."""
    return torch.as_tensor(np.ldexp(np.asarray(u, dtype=np.float64), -p.exponent))


# ----------------------------------------------------------------------------- w1_1d

_values = st.lists(
    st.integers(-6, 6).map(lambda k: k / 2), min_size=1, max_size=12
)  # coarse grid: many ties within and across the two sets


@settings(max_examples=40, deadline=None)
@given(
    x=_values,
    y=_values,
    weighted=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-3, 3, allow_nan=False),
)
def test_w1_1d_matches_scipy(x, y, weighted, seed, shift):
    x = np.array(x)
    y = np.array(y) + shift
    wx = wy = None
    if weighted:
        rng = np.random.default_rng(seed)
        wx, wy = rng.random(len(x)) * 5, rng.random(len(y)) * 5
        wx[rng.random(len(x)) < 0.3] = 0.0  # some zero weights
        wy[rng.random(len(y)) < 0.3] = 0.0
        wx[rng.integers(len(x))] += 0.5  # a positive sum
        wy[rng.integers(len(y))] += 0.5
    expected = wasserstein_distance(x, y, wx, wy)
    assert w1_1d(x, y, wx, wy) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # symmetric, and invariant to the order of the points
    assert w1_1d(y, x, wy, wx) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    perm = np.random.default_rng(seed).permutation(len(x))
    wxp = None if wx is None else wx[perm]
    assert w1_1d(x[perm], y, wxp, wy) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_w1_1d_known_values():
    assert w1_1d(np.array([0.0]), np.array([3.0])) == 3.0
    assert w1_1d(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    # unnormalized weights are normalized: half the mass moves by 2
    assert w1_1d(np.array([0.0, 2.0]), np.array([2.0]), np.array([3.0, 3.0])) == 1.0
    # a translation moves every point by the shift
    x = np.random.default_rng(0).normal(size=57)
    assert w1_1d(x, x + 0.25) == pytest.approx(0.25, rel=1e-12)


# ----------------------------------------------------------------------------- exact_w1


@pytest.mark.parametrize(
    ("n", "m", "d", "weighted"), [(40, 40, 2, False), (50, 30, 3, False), (35, 45, 5, True)]
)
def test_exact_w1_matches_pot(n, m, d, weighted):
    _, x, y, wa, wb = problem(1, n, m, d, weighted)
    reference, _, _ = pot_solve(x, y, wa, wb)
    # unnormalized weights: exact_w1 normalizes them itself
    got = exact_w1(x, y, wa * 7.0, wb * 0.3) if weighted else exact_w1(x, y)
    assert got == pytest.approx(reference, rel=1e-10)
    # the reference recipe of DESIGN.md (ot.dist) agrees on well-separated random data
    via_dist = ot.emd2(wa, wb, ot.dist(x, y, metric="euclidean"), numItermax=10**7)
    assert got == pytest.approx(float(via_dist), rel=1e-10)


def test_exact_w1_1d_inputs_use_sorting():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=30), rng.normal(size=20) + 1
    assert exact_w1(x, y) == pytest.approx(wasserstein_distance(x, y), rel=1e-12)


@pytest.mark.filterwarnings("ignore:numItermax reached before optimality")
def test_exact_w1_raises_when_solver_stops_early():
    _, x, y, _, _ = problem(3, 60, 50)
    with pytest.raises(ExactSolverError, match="num_iter_max"):
        exact_w1(x, y, num_iter_max=5)
    # the same problem solves with the default iteration budget
    assert exact_w1(x, y) == pytest.approx(pot_solve(x, y, uniform(60), uniform(50))[0])


def test_exact_w1_of_identical_clouds_is_zero():
    x = np.random.default_rng(0).normal(size=(80, 3))
    assert exact_w1(x, x.copy()) <= 1e-12


def test_exact_w1_fits():
    assert exact_w1_fits(100, 100)
    assert not exact_w1_fits(10**8, 10**8)


# ----------------------------------------------------------------------------- PairwiseCost


@pytest.mark.parametrize("chunk_bytes", [1, 8 * 23 * 5, 10**9])
def test_pairwise_cost_chunks_match_cdist(chunk_bytes):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(37, 4)), rng.normal(size=(23, 4)) + 0.5
    p = TransportProblem.build(x, y)
    reference = torch.cdist(t64(p.x), t64(p.y), compute_mode="donot_use_mm_for_euclid_dist")
    for dense_bytes in (0, 10**9):  # recomputed chunks, and the stored dense matrix
        cost = PairwiseCost(p, dense_bytes=dense_bytes, chunk_bytes=chunk_bytes)
        chunks = list(cost.chunks())
        starts = [s for s, _ in chunks]
        assert starts == list(range(0, 37, cost.chunk_rows))
        if chunk_bytes == 1:
            assert cost.chunk_rows == 1 and len(chunks) == 37
        full = torch.cat([c for _, c in chunks])
        assert full.dtype == torch.float64 and full.shape == (37, 23)
        torch.testing.assert_close(full, reference, rtol=0, atol=1e-12)
        assert (full <= reference).all()  # certified lower bounds of the costs
    rows, cols = np.array([0, 5, 36, 36]), np.array([0, 22, 3, 22])
    lower, upper = (torch.as_tensor(v) for v in cost.pair_bounds(rows, cols))
    torch.testing.assert_close(upper, reference[rows, cols], rtol=1e-14, atol=0)
    assert (upper >= reference[rows, cols]).all() and (lower <= reference[rows, cols]).all()


def test_pairwise_cost_is_exact_for_coincident_points():
    x = np.random.default_rng(0).normal(size=(80, 3))
    p = TransportProblem.build(x, x.copy())
    cost = PairwiseCost(p, dense_bytes=0, chunk_bytes=1000)
    full = torch.cat([c for _, c in cost.chunks()])
    assert float(full.diagonal().abs().max()) == 0.0  # close pairs: direct differences


def test_close_pairs_are_recomputed_by_direct_differences():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3)) * 1000
    y = x + rng.normal(size=(30, 3)) * 1e-4  # matched pairs 1e-7 of the radius apart
    p = TransportProblem.build(x, y)
    exact = np.diag(exact_cost(p.x, p.y))
    tight = torch.cat([c for _, c in PairwiseCost(p).chunks()]).diagonal().numpy()
    loose = torch.cat([c for _, c in PairwiseCost(p, exact_close_pairs=False).chunks()])
    assert np.all(tight <= exact) and np.allclose(tight, exact, rtol=1e-12)
    lost = loose.diagonal().numpy()
    assert np.all(lost <= exact) and lost.sum() < 0.9 * exact.sum()  # the expansion loses them


# ----------------------------------------------------------------------------- c_transform_bound


def _max_violation(bound, c: np.ndarray) -> float:
    """max_ij (u_i - v_j - c_ij) with the exact dense cost matrix (problem units)."""
    u, v = bound.u.double().numpy(), bound.v.double().numpy()
    return float((u[:, None] - v[None, :] - c).max())


@pytest.mark.parametrize(("n", "m", "weighted"), [(50, 50, False), (60, 40, True)])
def test_c_transform_bound_is_feasible_and_below_w1(n, m, weighted):
    rng, x, y, wa, wb = problem(5, n, m, 3, weighted)
    exact, _, _ = pot_solve(x, y, wa, wb)
    p, cost = build(x, y, wa, wb)
    c = exact_cost(p.x, p.y)
    for scale in (0.1, 1.0, 10.0):
        u = t64(rng.normal(size=n) * scale)
        bound = c_transform_bound(cost, u)
        assert _max_violation(bound, c) <= 0.0
        assert bound.value <= exact * (1 + 1e-12)
        # the value is the dual objective of the returned pair (input units)
        value = np.ldexp(float(wa @ bound.u.numpy() - wb @ bound.v.numpy()), p.exponent)
        assert bound.value == pytest.approx(value, rel=1e-12, abs=1e-14)
    # a 1-Lipschitz potential f(x) = <x, e>: the transforms never lower its dual value
    e = rng.normal(size=3)
    e /= np.linalg.norm(e)
    bound = c_transform_bound(cost, t64(p.x @ e))
    assert bound.value >= float(wa @ (x @ e) - wb @ (y @ e)) - 1e-12
    assert bound.value <= exact * (1 + 1e-12)


@pytest.mark.parametrize(("n", "m", "weighted"), [(50, 50, False), (60, 40, True)])
def test_c_transform_bound_of_optimal_potential_is_exact(n, m, weighted):
    _, x, y, wa, wb = problem(6, n, m, 4, weighted)
    exact, u_pot, _ = pot_solve(x, y, wa, wb)
    p, cost = build(x, y, wa, wb)
    bound = c_transform_bound(cost, scaled(p, u_pot))
    assert bound.value == pytest.approx(exact, rel=1e-10)
    assert _max_violation(bound, exact_cost(p.x, p.y)) <= 0.0


def test_c_transform_bound_of_identical_clouds_is_at_most_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    _, cost = build(x, x.copy())
    worst = max(c_transform_bound(cost, t64(rng.normal(size=80))).value for _ in range(5))
    assert worst <= 0.0


def test_sinkhorn_refined_potentials_stay_certified():
    _, x, y, wa, wb = problem(7, 60, 45, 2, True)
    exact, _, _ = pot_solve(x, y, wa, wb)
    p, cost = build(x, y, wa, wb)
    start = c_transform_bound(cost, t64(p.x[:, 0]))
    eps = [np.ldexp(e, -p.exponent) for e in (0.1, 0.03, 0.01)]
    u, _ = sinkhorn_refine(cost, start.u.clone(), start.v.clone(), epsilons=eps)
    refined = c_transform_bound(cost, u)
    assert refined.value <= exact * (1 + 1e-12)
    assert _max_violation(refined, exact_cost(p.x, p.y)) <= 0.0
    assert refined.value > start.value  # Sinkhorn sweeps improve a crude potential


# ----------------------------------------------------------------------------- upper bound


def _bracket(cost, u, v, **options):
    from wassnet.ot import sparse_bracket

    return sparse_bracket(cost, u, v, **options)


@pytest.mark.parametrize(
    ("n", "m", "weighted"), [(60, 60, False), (70, 50, False), (50, 50, True), (40, 65, True)]
)
@pytest.mark.parametrize("neighbors", [0, 4])
def test_sparse_bracket_from_random_potentials_reaches_the_optimum(n, m, weighted, neighbors):
    """Column generation from poor potentials closes on the exact value from both
    sides, with a plan and a dual that check out against an explicit operator."""
    rng, x, y, wa, wb = problem(9, n, m, 3, weighted)
    exact, _, _ = pot_solve(x, y, wa, wb)
    p, cost = build(x, y, wa, wb)
    u, v = t64(rng.normal(size=n)), t64(rng.normal(size=m))
    solved = _bracket(cost, u, v, k=3, rounds=40, tol=1e-12, neighbors=neighbors)
    recomputed = check_plan(solved.plan, x, y, wa, wb)
    assert solved.plan.value >= exact * (1 - 1e-12)
    assert solved.plan.value >= recomputed * (1 - 1e-12)
    assert solved.plan.value == pytest.approx(exact, rel=1e-10)
    assert solved.dual.value <= exact * (1 + 1e-12)
    assert solved.dual.value == pytest.approx(exact, rel=1e-10)
    assert _max_violation(solved.dual, exact_cost(p.x, p.y)) <= 0.0
    if not weighted and n == m:  # a permutation, read exactly (nothing charged)
        assert sorted(solved.plan.cols) == list(range(n))
        assert solved.plan.residual_charge == 0.0


def test_a_failing_sparse_solver_leaves_a_certified_coupling(monkeypatch):
    import wassnet.ot.sparse as sparse_module

    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    rng, x, y, wa, wb = problem(12, 40, 30, 2, True)
    exact, _, _ = pot_solve(x, y, wa, wb)
    _, cost = build(x, y, wa, wb)
    monkeypatch.setattr(sparse_module, "_solve", broken)
    u, v = t64(rng.normal(size=40)), t64(rng.normal(size=30))
    solved = _bracket(cost, u, v, k=3, rounds=5)
    assert "sparse solver failed: solver exploded" in solved.plan.method
    assert solved.plan.value >= exact * (1 - 1e-12)
    assert solved.dual.value <= exact * (1 + 1e-12)
    check_plan(solved.plan, x, y, wa, wb)


@pytest.mark.parametrize(("n", "m", "weighted"), [(60, 60, False), (70, 50, False), (45, 55, True)])
def test_monotone_coupling_and_its_blocks_are_feasible_couplings(n, m, weighted):
    from wassnet.ot import blockwise_refinement, monotone_coupling, plan_bound

    rng, x, y, wa, wb = problem(11, n, m, 3, weighted)
    exact, _, _ = pot_solve(x, y, wa, wb)
    p, _ = build(x, y, wa, wb)
    u, v = rng.normal(size=n), rng.normal(size=m)
    i, j, mass = monotone_coupling(u, v, p.a.probabilities(), p.b.probabilities())
    monotone = plan_bound(p, i, j, mass, "monotone coupling")
    assert monotone.value == pytest.approx(check_plan(monotone, x, y, wa, wb), rel=1e-12)
    assert monotone.value >= exact * (1 - 1e-12)
    if not weighted and n == m:  # the i-th largest u goes to the i-th largest v
        oa, ob = np.argsort(-u), np.argsort(-v)
        expected = float(np.linalg.norm(x[oa] - y[ob], axis=1).mean())
        assert monotone.value == pytest.approx(expected, rel=1e-12)
    for block in (20, 1000):  # block refinement never raises the cost
        blocks = blockwise_refinement(p, monotone, block)
        check_plan(blocks, x, y, wa, wb)
        assert exact * (1 - 1e-12) <= blocks.value <= monotone.value
