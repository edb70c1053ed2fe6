"""The sparse assignment solver (C, built at install or first use) against SciPy's, and
its fallback.

Reference: ``scipy.optimize.linear_sum_assignment`` on the dense matrix with missing
edges priced out (an independent exact solver).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import wassnet.ot.native as native


def sparse_problem(seed: int, n: int, k: int, ties: bool = False):
    """Keys of a sparse graph that has a perfect matching, with costs."""
    rng = np.random.default_rng(seed)
    cost = rng.random((n, n))
    if ties:  # many equal costs: the hard case for augmenting-path solvers
        cost = np.round(cost * 4) / 4
    cols = np.argsort(cost, axis=1)[:, :k]
    keys = np.repeat(np.arange(n, dtype=np.int64), k) * n + cols.reshape(-1)
    perm = rng.permutation(n)  # guarantees a perfect matching
    keys = np.union1d(keys, np.arange(n, dtype=np.int64) * n + perm)
    return keys, cost[keys // n, keys % n], cost


def optimum(keys: np.ndarray, n: int, dense: np.ndarray) -> float:
    masked = np.full((n, n), 1e6)
    masked[keys // n, keys % n] = dense[keys // n, keys % n]
    r, c = linear_sum_assignment(masked)
    return float(masked[r, c].sum())


def check(solution, keys, costs, n, best):
    match = solution.match
    assert sorted(match.tolist()) == list(range(n))  # a permutation
    pos = np.searchsorted(keys, np.arange(n) * n + match)
    assert np.array_equal(keys[pos], np.arange(n) * n + match)  # along graph edges
    assert costs[pos].sum() == pytest.approx(best, rel=1e-10, abs=1e-10)
    reduced = costs - solution.u[keys // n] + solution.v[keys % n]
    assert reduced.min() >= -1e-9  # dual feasible on the graph (to the solver's tolerance)


@pytest.mark.parametrize(
    ("seed", "n", "k", "ties"), [(0, 50, 3, False), (1, 300, 5, False), (2, 200, 4, True)]
)
def test_native_assignment_is_optimal_cold_and_warm(seed, n, k, ties):
    if not native.native_available():
        pytest.skip("no C compiler here: the fallback is tested below")
    keys, costs, dense = sparse_problem(seed, n, k, ties)
    best = optimum(keys, n, dense)
    cold = native.assign(keys, costs, n, np.zeros(n))
    check(cold, keys, costs, n, best)
    # warm: more edges, started from the previous matching and potentials
    more, more_costs, _ = sparse_problem(seed, n, k + 3, ties)
    assert np.isin(keys, more).all()
    warm = native.assign(more, more_costs, n, cold.v, cold.match)
    check(warm, more, more_costs, n, optimum(more, n, dense))


def test_fallback_gives_the_same_optimum(monkeypatch):
    keys, costs, dense = sparse_problem(3, 120, 4)
    monkeypatch.setattr(native._NATIVE, "lib", None)
    monkeypatch.setattr(native._NATIVE, "failed", "forced")
    solution = native.assign(keys, costs, 120, np.zeros(120))
    assert "SciPy" in solution.method
    check(solution, keys, costs, 120, optimum(keys, 120, dense))


def test_a_missing_compiler_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native._NATIVE, "lib", None)
    monkeypatch.setattr(native._NATIVE, "failed", None)
    monkeypatch.setenv("WASSNET_RUNTIME_BUILD", "1")  # as if not built at install time
    monkeypatch.setenv("WASSNET_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="SciPy"):
        assert not native.native_available()
    keys, costs, dense = sparse_problem(4, 60, 3)
    check(native.assign(keys, costs, 60, np.zeros(60)), keys, costs, 60, optimum(keys, 60, dense))


def test_cbuild_takes_the_first_flag_set_that_compiles(monkeypatch, tmp_path):
    """A flag set the compiler refuses is skipped; libraries tuned to this machine
    (-march=native) are cached under a name that depends on the machine."""
    import shutil

    from wassnet.ot import cbuild

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("WASSNET_RUNTIME_BUILD", "1")  # ignore the library built at install
    monkeypatch.setenv("WASSNET_CACHE", str(tmp_path))
    source = Path(native.__file__).with_name("_assign.c")
    lib = cbuild.load_library(source, [["-fno-such-flag-for-wassnet"], ["-O1"]])
    assert hasattr(lib, "sparse_assign")
    assert len(list(tmp_path.glob("assign-*.so"))) == 1
    monkeypatch.setattr(cbuild, "_machine", lambda: "another cpu")
    cbuild.load_library(source, [["-O1", "-march=native"]])
    monkeypatch.setattr(cbuild, "_machine", lambda: "yet another cpu")
    cbuild.load_library(source, [["-O1", "-march=native"]])
    assert len(list(tmp_path.glob("assign-*.so"))) == 3
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(OSError):
        cbuild.load_library(source, [["-O2"]])
