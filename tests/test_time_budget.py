"""``--time-budget`` / ``SampleOptions(time_budget=...)``: a real budget from the call's start.

Behavioural checks of the budget (generous bounds, not speed benchmarks): the answer
comes within the budget plus a generous slack on inputs where the warm start alone
exceeds it, the bracket is valid, and the output says what the budget allowed.
"""

from __future__ import annotations

import json
import time

import numpy as np
import ot
import pytest
from click.testing import CliRunner

from wassnet.cli import main
from wassnet.deadline import Deadline
from wassnet.ot import TransportProblem
from wassnet.ot.quick import quick_bracket
from wassnet.w1 import SampleOptions, estimate_w1


def _slack(budget: float) -> float:
    return 3 * budget + 5


def _exact(x: np.ndarray, y: np.ndarray, wa=None, wb=None, metric: str = "euclidean") -> float:
    a = np.full(len(x), 1 / len(x)) if wa is None else wa / wa.sum()
    b = np.full(len(y), 1 / len(y)) if wb is None else wb / wb.sum()
    return float(ot.emd2(a, b, ot.dist(x, y, metric=metric), numItermax=10**8))


def test_budget_is_kept_where_the_warm_start_alone_exceeds_it() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((200_000, 2)), rng.random((200_000, 2)) + 0.1
    start = time.perf_counter()
    r = estimate_w1(a, b, target="sample", sample=SampleOptions(time_budget=0.5))
    wall = time.perf_counter() - start
    assert wall < _slack(0.5)
    s = r.sample
    assert 0 <= s.lower <= s.upper
    assert s.lower <= np.sqrt(0.02) * 1.02 and s.upper >= np.sqrt(0.02) * 0.98  # W1 ~ |t|
    assert s.budget is not None and "time budget 0.5 s reached" in s.budget
    assert "warm start" in s.budget and "bracket from" in s.budget
    assert r.to_dict()["sample"]["budget"] == s.budget
    assert "time budget 0.5 s reached" in r.summary()


def test_memory_mapped_blockwise_budget(tmp_path) -> None:
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(3_000_000, 2))
    big[:] = np.random.default_rng(1).random((3_000_000, 2), dtype=np.float32)
    big.flush()
    del big
    np.save(tmp_path / "small.npy", np.random.default_rng(2).random((10, 2)))
    args = [
        "estimate", str(path), str(tmp_path / "small.npy"), "--route", "blockwise",
        "--time-budget", "1", "--target", "sample", "--quiet", "--json",
    ]  # fmt: skip
    start = time.perf_counter()
    result = CliRunner().invoke(main, args)
    wall = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert wall < _slack(1.0)
    sample = json.loads(result.output)["sample"]
    assert 0 <= sample["lower"] <= sample["upper"]
    assert sample["budget"].startswith("time budget 1 s")


@pytest.mark.parametrize("route", ["assignment", "blockwise", "dense"])
def test_budgeted_bracket_contains_the_exact_value(route: str) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(400, 3)) * 1.5 + 0.3
    r = estimate_w1(a, b, target="sample", sample=SampleOptions(route=route, time_budget=0.05))
    exact = _exact(a, b)
    assert r.sample.lower <= exact * (1 + 1e-12) and exact <= r.sample.upper * (1 + 1e-12)
    assert r.sample.budget is not None


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "chebyshev"])
@pytest.mark.parametrize("weighted", [False, True])
def test_quick_bracket_contains_the_exact_value(metric: str, weighted: bool) -> None:
    rng = np.random.default_rng(4)
    for scale in (1e-200, 1.0, 1e200):
        x, y = rng.normal(size=(300, 4)) * scale, (rng.normal(size=(200, 4)) + 0.5) * scale
        wa = rng.random(300) if weighted else None
        wb = rng.random(200) if weighted else None
        q = quick_bracket(TransportProblem.build(x, y, wa, wb, metric))
        exact = _exact(x / scale, y / scale, wa, wb, metric) * scale
        assert q.lower <= exact * (1 + 1e-12) and exact <= q.upper * (1 + 1e-12)


def test_without_a_budget_nothing_is_said_and_the_result_is_unchanged() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random((3000, 2)), rng.random((3000, 2))
    r1 = estimate_w1(a, b, target="sample")
    r2 = estimate_w1(a, b, target="sample", deadline=Deadline(None))
    assert r1.sample.budget is None and "budget" not in r1.summary()
    assert (r1.sample.lower, r1.sample.upper) == (r2.sample.lower, r2.sample.upper)


def test_generous_budget_says_everything_fit() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.random((500, 2)), rng.random((400, 2))
    r = estimate_w1(a, b, target="sample", sample=SampleOptions(time_budget=600))
    plain = estimate_w1(a, b, target="sample")
    assert r.sample.budget == "time budget 600 s: everything asked for fit"
    assert r.sample.lower >= plain.sample.lower and r.sample.upper <= plain.sample.upper


def test_deadline_started_earlier_counts() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.random((2000, 2)), rng.random((2000, 2))
    late = Deadline(1.0, time.perf_counter() - 5.0)  # already spent, e.g. by loading
    r = estimate_w1(a, b, target="sample", sample=SampleOptions(time_budget=1.0), deadline=late)
    assert r.sample.lower <= r.sample.upper
    assert "reached" in r.sample.budget
