"""The scalable path: fused float32 passes (TiledCost) and assignment column generation.

Every certified claim is checked against float64 references that do not use wassnet:
costs by direct differences, POT's exact W1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import exact_cost, examples, pot_w1
from hypothesis import given, settings
from hypothesis import strategies as st

import wassnet.ot.native_tiles as native_tiles
import wassnet.ot.tiles as tiles_module
from wassnet.ot import (
    PairwiseCost,
    TiledCost,
    TransportProblem,
    assignment_bracket,
    c_transform_bound,
)
from wassnet.ot.native_tiles import native_tiles_available
from wassnet.ot.sparse import _matching_potentials


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def clouds(seed: int, n: int, m: int, d: int, offset: float = 0.0, spread: float = 1.0):
    """Two clouds, already in a problem's units (largest coordinate in [1/2, 1))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * spread + offset
    y = rng.normal(size=(m, d)) * np.linspace(0.5, 2.0, d) + 0.5 + offset
    p = TransportProblem.build(x, y)
    return rng, p.x, p.y


def problem(x, y) -> TransportProblem:
    """The problem of two clouds (for clouds from ``clouds``, scaled by 2^0: the same)."""
    return TransportProblem.build(x, y)


def true_row_min(x: np.ndarray, y: np.ndarray, p: torch.Tensor) -> torch.Tensor:
    return (t64(exact_cost(x, y)) + p[None, :]).min(1).values


# ----------------------------------------------------------------------------- TiledCost


@pytest.mark.parametrize("backend", ["eager", "native"])
@pytest.mark.parametrize(
    ("n", "m", "d", "offset", "spread", "tile"),
    [
        (70, 50, 3, 0.0, 1.0, 16),  # several tiles, padded rows and columns
        (33, 90, 16, 1e3, 1.0, 32),  # far from the origin: centring matters
        (40, 40, 2, 0.0, 1e-4, 16),  # tiny distances: the margin must still hold
        (25, 31, 64, -5.0, 10.0, 64),  # one tile larger than both clouds
        (20, 70, 300, 0.0, 1.0, 32),  # long vectors (more terms than the C kernel's rows)
    ],
)
def test_row_min_is_a_certified_lower_bound(n, m, d, offset, spread, tile, backend):
    rng, x, y = clouds(1, n, m, d, offset, spread)
    y[:5] = x[:5] + 1e-9  # near-coincident pairs: the worst case of the expansion
    cost = TiledCost(problem(x, y), backend=backend, tile=tile)
    assert cost.backend == backend or not native_tiles_available()
    for scale in (0.0, 1.0, 1e3):
        p = cost.round_potential(rng.normal(size=m) * scale)
        lower, arg = cost.row_min(p, argmin=True)
        true = true_row_min(x, y, p)
        assert lower.dtype == torch.float64 and lower.shape == (n,)
        assert bool((lower <= true).all())
        # tightness: the worst case loses sqrt(kappa) R (coincident points) plus margins
        slack = 2 * (cost.kappa**0.5) * cost.radius + 4 * cost.margin(p)
        assert bool((true - lower <= slack).all())
        # the argmin attains the minimum up to float32 rounding
        attained = t64(exact_cost(x, y))[torch.arange(n), arg] + p[arg]
        assert bool((attained - true <= slack).all())
        values = cost.row_min(p)  # values only: the C pass when native
        assert bool((values <= true).all())
        torch.testing.assert_close(values, lower, rtol=0, atol=4 * cost.margin(p))


def test_transpose_serves_the_other_direction():
    _, x, y = clouds(2, 30, 45, 5)
    cost = TiledCost(problem(x, y), backend="eager", tile=16)
    assert cost.T.n == 45 and cost.T.m == 30 and cost.T.T is cost
    p = cost.T.round_potential(np.linspace(-1, 1, 30))
    lower = cost.T.row_min(p)
    assert bool((lower <= true_row_min(y, x, p)).all())


def test_row_candidates_contain_each_rows_minimizer():
    rng, x, y = clouds(3, 60, 200, 4)
    cost = TiledCost(problem(x, y), backend="eager", tile=64)
    p = cost.round_potential(rng.normal(size=200))
    cand = cost.row_candidates(p, k=6, block=8)
    assert cand.shape == (60, 6) and int(cand.min()) >= 0 and int(cand.max()) < 200
    best = (t64(exact_cost(x, y)) + p[None, :]).argmin(1)
    assert all(int(b) in set(c.tolist()) for b, c in zip(best, cand, strict=True))
    assert all(len(set(c.tolist())) == 6 for c in cand)  # distinct columns


def test_bad_potentials_and_shapes_are_refused():
    _, x, y = clouds(4, 10, 12, 3)
    cost = TiledCost(problem(x, y), backend="eager")
    with pytest.raises(ValueError, match="shape"):
        cost.row_min(torch.zeros(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or inf"):
        cost.row_min(torch.full((12,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="backend"):
        TiledCost(problem(x, y), backend="fast")


def test_compiled_kernels_agree_with_eager_or_fall_back():
    """``backend="compiled"`` must give certified values; where this machine cannot
    compile, the fallback to eager torch is taken with a warning, not an error."""
    _, x, y = clouds(5, 100, 80, 6)
    eager = TiledCost(problem(x, y), backend="eager", tile=32)
    compiled = TiledCost(problem(x, y), backend="compiled", tile=32)
    p = eager.round_potential(np.linspace(0, 2, 80))
    with _maybe_warns():
        got = compiled.row_min(p)
    assert bool((got <= true_row_min(x, y, p)).all())
    torch.testing.assert_close(got, eager.row_min(p), rtol=0, atol=1e-4)


class _maybe_warns:
    """Accept a RuntimeWarning about the compiled kernel (no compiler), or none."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._log = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        for w in self._log:
            assert issubclass(w.category, RuntimeWarning) and "eager" in str(w.message)


def _broken(*args, **kwargs):
    raise RuntimeError("no C++ compiler")


def _too_large(xa, ya_t, p):  # pretends costs are larger than they are
    return tiles_module._tile_min(xa, ya_t, p) + 1.0


@pytest.mark.parametrize(("kernel", "why"), [(_broken, "eager"), (_too_large, "margin")])
def test_a_failing_compiled_kernel_falls_back_to_eager(monkeypatch, kernel, why):
    """No compiler, or a compiled kernel that breaks the margin on its first tile:
    warned, not used, and the values stay certified."""
    monkeypatch.setattr(tiles_module, "_COMPILED", {"min": kernel})
    monkeypatch.setattr(tiles_module, "_BROKEN", set())
    _, x, y = clouds(6, 20, 20, 3)
    cost = TiledCost(problem(x, y), backend="compiled", tile=8)
    p = cost.round_potential(np.zeros(20))
    with pytest.warns(RuntimeWarning, match=why):
        lower = cost.row_min(p)
    assert bool((lower <= true_row_min(x, y, p)).all())
    assert "min" in tiles_module._BROKEN


# ----------------------------------------------------------------------------- native pass


needs_native = pytest.mark.skipif(
    not native_tiles_available(), reason="no C compiler: the native pass is not built here"
)


@needs_native
@settings(max_examples=examples(25), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    m=st.integers(1, 200),  # beyond row_pass's max_columns: recomputed within the budget
    d=st.sampled_from([1, 2, 3, 7, 16, 64, 130]),
    offset=st.sampled_from([0.0, 1e3, -1e6]),
    spread=st.sampled_from([1e-6, 1.0, 100.0]),
    near=st.booleans(),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 1e4]),
)
def test_native_row_pass_is_certified_and_agrees_with_eager(
    seed, n, m, d, offset, spread, near, scale
):
    """The C pass: its row minima and its exact-recomputation pass are lower bounds of
    the exact costs (direct differences) for any shape, offset, spread and potential,
    and agree with the eager torch kernels to float32 rounding."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * spread + offset
    y = rng.normal(size=(m, d)) * spread + offset
    if near:
        k = min(n, m)
        y[:k] = x[:k] + rng.normal(size=(k, d)) * 1e-9 * spread
    prob = problem(x, y)
    native = TiledCost(prob, backend="native", tile=16)
    eager = TiledCost(prob, backend="eager", tile=16)
    assert native.backend == "native"
    p = native.round_potential(rng.normal(size=m) * scale)
    true = true_row_min(prob.x, prob.y, p)
    got = native.row_min(p)
    assert bool((got <= true).all())
    torch.testing.assert_close(got, eager.row_min(p), rtol=0, atol=4 * native.margin(p))
    lower, cand = native.row_pass(p, k=3)
    assert bool((lower <= true).all()) and cand.shape == (n, 3)
    # tight to float64: the exact recomputation finds the minimum
    assert bool((true - lower <= 1e-12 * (1 + true.abs())).all())


@needs_native
def test_native_block_values_match_torch():
    rng, x, y = clouds(21, 50, 130, 9)
    native = TiledCost(problem(x, y), backend="native", tile=64)
    eager = TiledCost(problem(x, y), backend="eager", tile=64)
    pots = torch.cat(native._padded_potential(native.round_potential(rng.normal(size=130))))
    rows = torch.as_tensor(rng.integers(0, 50, 40))
    blocks = torch.as_tensor(rng.integers(0, 4, 40))
    got = native._within(rows, blocks, pots, 32)
    want = eager._within(rows, blocks, pots, 32)
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)
    with pytest.raises(ValueError, match="rows"):
        native_tiles.block_values(
            native._xa, rows + 10**6, blocks, native._panels, pots.numpy(), 32
        )


def test_native_backend_is_chosen_where_it_runs_and_replaced_where_it_cannot(monkeypatch):
    _, x, y = clouds(22, 20, 20, 3)
    auto = TiledCost(problem(x, y))
    assert auto.backend == ("native" if native_tiles_available() else "eager")
    # tiles that are not panels of 16 columns, or no compiled library: torch kernels
    assert TiledCost(problem(x, y), tile=8).backend == "eager"
    with pytest.warns(RuntimeWarning, match="native pass is not available"):
        assert TiledCost(problem(x, y), backend="native", tile=8).backend == "eager"
    monkeypatch.setattr(native_tiles._NATIVE, "lib", None)
    monkeypatch.setattr(native_tiles._NATIVE, "failed", "forced")
    assert TiledCost(problem(x, y)).backend == "eager"
    with pytest.warns(RuntimeWarning, match="native pass is not available"):
        cost = TiledCost(problem(x, y), backend="native")
    p = cost.round_potential(np.zeros(20))
    assert bool((cost.row_min(p) <= true_row_min(x, y, p)).all())


def test_a_missing_compiler_leaves_the_torch_kernels(monkeypatch, tmp_path):
    monkeypatch.setattr(native_tiles._NATIVE, "lib", None)
    monkeypatch.setattr(native_tiles._NATIVE, "failed", None)
    monkeypatch.setenv("WASSNET_RUNTIME_BUILD", "1")  # as if not built at install time
    monkeypatch.setenv("WASSNET_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert not native_tiles_available()
    assert "no-such-compiler" in str(native_tiles._NATIVE.failed) or "compiler" in str(
        native_tiles._NATIVE.failed
    )
    _, x, y = clouds(23, 20, 20, 3)
    assert TiledCost(problem(x, y)).backend == "eager"


@needs_native
def test_a_native_pass_that_breaks_the_margin_is_dropped(monkeypatch):
    """A C pass that reports values above the exact minima (a miscompiled kernel) is
    caught on its first tile, warned about, and not used: the values stay certified."""
    real = native_tiles.block_minima
    monkeypatch.setattr(tiles_module, "block_minima", lambda *a: real(*a) + 1.0)
    monkeypatch.setattr(tiles_module, "_BROKEN", set())
    _, x, y = clouds(24, 40, 40, 3)
    cost = TiledCost(problem(x, y), backend="native", tile=16)
    p = cost.round_potential(np.zeros(40))
    with pytest.warns(RuntimeWarning, match="native pass is not used"):
        lower = cost.row_min(p)
    assert cost.backend == "eager" and "native" in tiles_module._BROKEN
    assert bool((lower <= true_row_min(x, y, p)).all())
    lower, _ = cost.row_pass(p, k=2)
    assert bool((lower <= true_row_min(x, y, p)).all())


def ring_around(centre: np.ndarray, m: int, seed: int, jitter: float = 1e-10):
    """``m`` points at distance ~1 from ``centre`` (d = 2): near ties that the float32
    screen cannot order (its margin is far above ``jitter``)."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, m)
    radius = 1.0 + jitter * rng.integers(0, 1000, m)
    return centre + np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_row_pass_is_tight_on_rows_with_hundreds_of_near_ties(backend):
    """Rows whose float32 screen leaves far more than ``max_columns`` near columns are
    still recomputed exactly (tight to float64), and their first candidate is the exact
    minimizer, which the float32 ranking cannot tell from its neighbours."""
    x = np.array([[0.1, -0.2], [5.3, 4.25]])
    y = np.concatenate([ring_around(x[0], 300, 1), ring_around(x[1], 300, 2)])
    prob = problem(x, y)
    cost = TiledCost(prob, backend=backend, tile=32)
    p = cost.round_potential(np.zeros(len(y)))
    true = true_row_min(prob.x, prob.y, p)
    lower, cand = cost.row_pass(p, k=4, max_columns=8)
    assert bool((lower <= true).all())
    assert bool((true - lower <= 1e-14 * true).all())
    values = t64(exact_cost(prob.x, prob.y)) + p[None, :]
    assert torch.equal(values[torch.arange(2), cand[:, 0]], true)


def test_row_pass_past_the_exact_budget_keeps_certified_float32_bounds(monkeypatch):
    """With the exact recomputation's budget exhausted, rows keep the float32 bound:
    looser, still below the exact minimum."""
    monkeypatch.setattr(tiles_module, "EXACT_PAIR_VALUES", 2 * 20)
    x = np.array([[0.1, -0.2], [5.3, 4.25]])
    y = np.concatenate([ring_around(x[0], 300, 3), ring_around(x[1], 300, 4)])
    prob = problem(x, y)
    cost = TiledCost(prob, backend="eager", tile=32)
    p = cost.round_potential(np.zeros(len(y)))
    true = true_row_min(prob.x, prob.y, p)
    lower, _ = cost.row_pass(p, k=2, max_columns=8)
    assert bool((lower <= true).all())
    assert bool((true - lower > 1e-12).all())  # the float32 bound: not tight


# ----------------------------------------------------------------------------- c-transforms


@pytest.mark.parametrize(("n", "m"), [(50, 50), (64, 37)])
def test_tiled_c_transform_is_feasible_below_w1_and_close_to_float64(n, m):
    rng, x, y = clouds(8, n, m, 4)
    exact = pot_w1(x, y)
    c = exact_cost(x, y)
    tiles = TiledCost(problem(x, y), backend="eager", tile=16)
    for u in (t64(rng.normal(size=n)), t64(x[:, 0])):
        bound = c_transform_bound(tiles, u)
        violation = (bound.u[:, None] - bound.v[None, :]).numpy() - c
        assert violation.max() <= 0.0
        assert bound.value <= exact
        reference = c_transform_bound(PairwiseCost(problem(x, y)), u).value
        assert bound.value == pytest.approx(reference, abs=1e-4)


# ----------------------------------------------------------------------------- assignment


def test_matching_potentials_are_tight_on_the_matching_and_feasible_on_the_graph():
    from scipy.optimize import linear_sum_assignment

    _, x, y = clouds(9, 40, 40, 3)
    c = exact_cost(x, y)
    rows, cols = np.nonzero(c < np.quantile(c, 0.3))
    r, s = linear_sum_assignment(np.where(c < np.quantile(c, 0.3), c, 1e6))
    keys = np.union1d(rows * 40 + cols, r * 40 + s)
    rows, cols = keys // 40, keys % 40
    match = np.empty(40, dtype=np.int64)
    match[r] = s
    u, v = _matching_potentials(rows, cols, c[rows, cols], match, 40)
    assert np.allclose(u - v[match], c[np.arange(40), match], atol=1e-12)
    assert (u[rows] - v[cols] - c[rows, cols]).max() <= 1e-9


@pytest.mark.parametrize(
    ("seed", "n", "d", "start", "fused"),
    [
        (10, 120, 2, "zero", True),
        (11, 150, 16, "linear", True),
        (12, 90, 5, "random", True),
        (12, 90, 5, "random", "native"),
        (11, 150, 16, "linear", "native"),
        (10, 120, 2, "zero", False),
        (11, 150, 16, "linear", False),
    ],
)
def test_assignment_bracket_contains_and_reaches_exact_w1(seed, n, d, start, fused):
    rng, x, y = clouds(seed, n, n, d)
    exact = pot_w1(x, y)
    u0 = {
        "zero": np.zeros(n),
        "linear": x[:, 0],
        "random": rng.normal(size=n),
    }[start]
    v0 = np.zeros(n) if start != "linear" else y[:, 0]
    p = problem(x, y)
    if fused:
        passes = TiledCost(p, backend="native" if fused == "native" else "eager", tile=32)
    else:
        passes = PairwiseCost(p)
    result = assignment_bracket(passes, t64(u0), t64(v0), k=4, rounds=30)
    plan, dual = result.plan, result.dual
    assert dual.value <= exact <= plan.value
    assert sorted(plan.cols.tolist()) == list(range(n))  # a permutation
    assert plan.value == pytest.approx(exact_cost(x, y)[plan.rows, plan.cols].mean(), rel=1e-12)
    assert plan.value == pytest.approx(exact, rel=1e-9)  # column generation converged
    # float64 passes, and float32 screens with exact recomputation: both to rounding
    assert dual.value == pytest.approx(exact, rel=1e-12)
    assert result.passes - 2 in (len(result.rounds) - 1, len(result.rounds))  # then one a round
    assert [r["round"] for r in result.rounds] == list(range(1, len(result.rounds) + 1))
    assert all(r["lower"] <= r["upper"] for r in result.rounds)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 40),
    d=st.integers(1, 6),
    rounds=st.integers(1, 3),
)
def test_assignment_bracket_is_always_certified(seed, n, d, rounds):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x[rng.permutation(n)] + rng.normal(size=(n, d)) * rng.choice([0.0, 1e-6, 1.0])
    exact = pot_w1(x, y)
    z = t64(rng.normal(size=n))
    p = problem(x, y)
    backend, tile = ("eager", 8) if seed % 4 == 1 else ("native", 16)
    passes = TiledCost(p, backend=backend, tile=tile) if seed % 2 else PairwiseCost(p)
    result = assignment_bracket(passes, z, z, k=2, rounds=rounds)
    assert result.dual.value <= exact + 1e-12
    assert exact <= result.plan.value * (1 + 1e-12) + 1e-15


def test_assignment_bracket_refuses_unequal_sizes_and_respects_its_time_budget():
    _, x, y = clouds(13, 30, 31, 2)
    with pytest.raises(ValueError, match="same size"):
        assignment_bracket(TiledCost(problem(x, y)), t64(np.zeros(30)), t64(np.zeros(31)))
    _, x, y = clouds(13, 60, 60, 2)
    result = assignment_bracket(
        TiledCost(problem(x, y), backend="eager"),
        t64(np.zeros(60)),
        t64(np.zeros(60)),
        time_budget=0.0,
    )
    assert len(result.rounds) == 1
    assert result.dual.value <= pot_w1(x, y) <= result.plan.value


@pytest.mark.parametrize("n", [1, 2, 40])
def test_assignment_route_on_identical_clouds_brackets_zero(n):
    from wassnet.w1 import SampleOptions, estimate_w1

    x = np.random.default_rng(n).normal(size=(n, 3))
    r = estimate_w1(
        x, x[::-1].copy(), target="sample", sample=SampleOptions(route="assignment"), progress=True
    )
    assert r.sample.upper_method.startswith("optimal assignment")
    assert r.sample.lower <= 0.0 <= r.sample.upper == 0.0
