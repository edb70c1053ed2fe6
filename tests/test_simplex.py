"""The warm-startable network simplex in C (wassnet.ot.simplex) and its use in column
generation: optimal plans and potentials against POT's solver, warm starts from its own
trees and from POT's plans, refused warm starts, and certified brackets on the
transport route when every round after the first is warm-started."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import ot
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

import wassnet.ot.sparse as sparse
from wassnet import SampleOptions, estimate_w1
from wassnet.ot.simplex import SimplexBasis, forest_basis, simplex_available, transport_simplex

pytestmark = pytest.mark.skipif(not simplex_available(), reason="no C compiler")


@st.composite
def transport_problems(draw):
    """Small dense problems: ties (integer costs), zero and unequal masses."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n, m = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    cost = cdist(rng.standard_normal((n, 2)), rng.standard_normal((m, 2)))
    if draw(st.booleans()):
        cost = np.round(2 * cost)  # many ties: degenerate pivots
    a, b = rng.uniform(0.1, 1.0, n), rng.uniform(0.1, 1.0, m)
    if draw(st.booleans()):
        a, b = np.ones(n), np.ones(m)
    if draw(st.booleans()):
        a[rng.integers(n)] = 0.0
        b[rng.integers(m)] = 0.0
    if a.sum() == 0 or b.sum() == 0:
        a, b = np.ones(n), np.ones(m)
    cost = cost * draw(st.sampled_from([1.0, 1e-150, 2.0**-1000, 1e150]))
    return cost, a / a.sum(), b / b.sum(), rng


def pot_on_graph(keys: np.ndarray, costs: np.ndarray, m: int, a: np.ndarray, b: np.ndarray):
    """POT's network simplex on the sparse graph itself (a dense matrix with a large cost
    outside the graph is no reference: POT moves rounding residues, ~1e-16, onto those
    pairs, 3e-7 off at a cost of 1e9)."""
    from ot.lp.emd_wrap import emd_c_sparse

    rows, cols = (keys // m).astype(np.uint64), (keys % m).astype(np.uint64)
    *_, value, _, _, status = emd_c_sparse(
        a, b * (a.sum() / b.sum()), rows, cols, np.ascontiguousarray(costs), 10**7
    )
    assert status == 1  # optimal
    return value


def check_optimal(cost: np.ndarray, keys: np.ndarray, plan, a: np.ndarray, b: np.ndarray) -> None:
    """Plan cost = POT's optimum = dual value, masses match, duals feasible on the graph."""
    n, m = cost.shape
    scale = float(cost.max()) or 1.0  # POT's own solver is wrong on tiny costs: unit scale
    flat = cost.reshape(-1) / scale
    reference = pot_on_graph(keys, flat[keys], m, a, b)
    value = float(flat[plan.rows * m + plan.cols] @ plan.mass)
    assert value == pytest.approx(reference, rel=1e-12, abs=1e-12)
    dual = float(a @ plan.u - b @ plan.v) / scale
    assert dual == pytest.approx(reference, rel=1e-12, abs=1e-12)
    reduced = flat[keys] - (plan.u[keys // m] - plan.v[keys % m]) / scale
    assert reduced.min() >= -1e-12
    units = (n + m) * 2.0**-50  # masses are solved in integer units of 2^-50
    assert np.allclose(np.bincount(plan.rows, plan.mass, n), a, rtol=0, atol=units)
    assert np.allclose(np.bincount(plan.cols, plan.mass, m), b, rtol=0, atol=units)
    assert plan.mass.min(initial=1.0) > 0


def scrambled_plan(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A basic feasible plan of POT's, optimal for scrambled costs (with POT's rounding
    residues): some feasible plan, unrelated to the problem's costs."""
    return ot.emd(a, b, rng.permutation(len(a) * len(b)).reshape(len(a), len(b)).astype(float))


@settings(max_examples=examples(150), deadline=None)
@given(transport_problems())
def test_cold_and_warm_solves_are_optimal(problem):
    cost, a, b, rng = problem
    n, m = cost.shape
    # a sparse graph that holds a feasible plan, then the full graph from its tree
    feasible = scrambled_plan(a, b, rng)
    keys = np.flatnonzero((rng.random(n * m) < 0.4) | (feasible.reshape(-1) > 0))
    sub = transport_simplex(keys, cost.reshape(-1)[keys], m, a, b)
    assert not sub.warm
    check_optimal(cost, keys, sub, a, b)
    full = np.arange(n * m)
    warm = transport_simplex(full, cost.reshape(-1), m, a, b, sub.basis)
    assert warm.warm
    check_optimal(cost, full, warm, a, b)


@settings(max_examples=examples(100), deadline=None)
@given(transport_problems())
def test_warm_start_from_a_pot_plan(problem):
    cost, a, b, rng = problem
    n, m = cost.shape
    plan = scrambled_plan(a, b, rng)
    rows, cols = np.nonzero(plan)
    basis = forest_basis(rows, cols, plan[rows, cols], m, a, b)
    solved = transport_simplex(np.arange(n * m), cost.reshape(-1), m, a, b, basis)
    assert solved.warm
    check_optimal(cost, np.arange(n * m), solved, a, b)


def test_warm_start_is_few_pivots_from_the_optimum():
    rng = np.random.default_rng(0)
    n, m = 300, 240
    cost = cdist(rng.standard_normal((n, 3)), rng.standard_normal((m, 3)))
    a, b = rng.uniform(0.1, 1.1, n), rng.uniform(0.1, 1.1, m)
    a, b = a / a.sum(), b / b.sum()
    full = np.arange(n * m)
    cold = transport_simplex(full, cost.reshape(-1), m, a, b)
    again = transport_simplex(full, cost.reshape(-1), m, a, b, cold.basis)
    assert again.warm and again.pivots == 0
    check_optimal(cost, full, again, a, b)
    assert cold.pivots > 100


def test_warm_starts_that_do_not_fit_are_refused():
    cost = np.array([[1.0, 2.0], [2.0, 1.0]])
    a = b = np.array([0.5, 0.5])
    keys = np.arange(4)
    solved = transport_simplex(keys, cost.reshape(-1), 2, a, b)
    with pytest.raises(RuntimeError, match="not all in the graph"):
        transport_simplex(keys[:1], cost.reshape(-1)[:1], 2, a, b, solved.basis)
    # every node's tree arc inside one 4-cycle: no node hangs from the root
    cycle = SimplexBasis(np.array([0, 3, 2, 1]), None)
    with pytest.raises(RuntimeError, match="strongly feasible spanning tree"):
        transport_simplex(keys, cost.reshape(-1), 2, a, b, cycle)
    with pytest.raises(RuntimeError, match="strongly feasible spanning tree"):
        negative = SimplexBasis(solved.basis.keys, -np.abs(solved.basis.flows) - 1)
        transport_simplex(keys, cost.reshape(-1), 2, a, b, negative)


def test_a_degenerate_tree_from_a_cyclic_support_is_refused():
    """A support with a cycle gives a spanning tree whose flows leave a zero-flow arc
    pointing away from the root: not strongly feasible, refused (callers use POT)."""
    cost = np.array([[1.0, 2.0], [2.0, 1.0]])
    a = b = np.array([0.5, 0.5])
    rows, cols = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    basis = forest_basis(rows, cols, np.full(4, 0.25), 2, a, b)
    with pytest.raises(RuntimeError, match="strongly feasible spanning tree"):
        transport_simplex(np.arange(4), cost.reshape(-1), 2, a, b, basis)


def weighted_problem(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, 5)), rng.standard_normal((4 * n // 5, 5)) + 0.3
    return x, y, rng.uniform(0.1, 1.1, n), rng.uniform(0.1, 1.1, 4 * n // 5)


def test_transport_route_warm_rounds_close_the_bracket_around_pot():
    x, y, wa, wb = weighted_problem()
    exact = ot.emd2(wa / wa.sum(), wb / wb.sum(), cdist(x, y), numItermax=10**7)
    calls = []
    original = sparse.transport_simplex

    def counting(*args, **kwargs):
        plan = original(*args, **kwargs)
        calls.append(plan.warm)
        return plan

    options = SampleOptions(route="transport", warm_start=20, candidates=2)
    with (
        mock.patch.object(sparse, "transport_simplex", counting),
        mock.patch.object(sparse, "SIMPLEX_WARM_GAP", math.inf),
    ):
        s = estimate_w1(x, y, wa, wb, target="sample", sample=options).sample
    assert calls and all(calls)  # every round after the first was warm-started
    assert s.lower <= exact * (1 + 1e-12) and s.upper >= exact * (1 - 1e-12)
    assert s.upper - s.lower <= 1e-9 * s.upper
    with mock.patch.object(sparse, "simplex_available", lambda: False):
        cold = estimate_w1(x, y, wa, wb, target="sample", sample=options).sample
    assert cold.upper == pytest.approx(s.upper, rel=1e-9)
