"""``wassnet estimate`` under torch.distributed: world size 2, gloo, CPU.

The passes over all pairs are split by rows across the ranks (wassnet.ot.sharded) and
the population folds fitted in parallel; each result must be the single process's,
bit for bit. Every rank runs in a spawned process joined with a timeout (killed past
it), with a short process-group timeout: a test fails, it never hangs.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from wassnet.ot import TiledCost, TransportProblem
from wassnet.ot.sharded import ShardedCost, shard_rows
from wassnet.w1 import PopulationOptions, SampleOptions, estimate_w1

WORLD = 2
JOIN_TIMEOUT_S = 50.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, port: int, out: str, job: str, args: tuple) -> None:
    """One rank: the process group from torchrun's variables, the job, its result."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
        WASSNET_DIST_TIMEOUT="40",
    )  # fmt: skip
    torch.set_num_threads(1)
    from wassnet import distributed

    distributed.init("cpu")
    try:
        result = _JOBS[job](*args)
    finally:
        distributed.shutdown()
    with open(Path(out) / f"{rank}.pkl", "wb") as f:
        pickle.dump(result, f)


def _in_world(tmp_path: Path, job: str, *args: Any) -> list[Any]:
    """Every rank's result of ``_JOBS[job](*args)`` in a world of :data:`WORLD`
    spawned processes (killed after :data:`JOIN_TIMEOUT_S`)."""
    ctx = mp.start_processes(
        _rank_main, args=(_free_port(), str(tmp_path), job, args), nprocs=WORLD,
        join=False, start_method="spawn",
    )  # fmt: skip
    end = time.monotonic() + JOIN_TIMEOUT_S
    try:
        while not ctx.join(timeout=max(0.1, end - time.monotonic())):
            if time.monotonic() > end:
                pytest.fail(f"the ranks of {job} did not finish in {JOIN_TIMEOUT_S:g} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [pickle.loads((tmp_path / f"{r}.pkl").read_bytes()) for r in range(WORLD)]


# -- jobs (run on every rank) -------------------------------------------------------------


def _clouds(n: int, m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.3


def _set_tiles(pairs: int | None) -> None:
    if pairs is not None:
        from wassnet.w1 import sample as sample_module

        sample_module.DENSE_PASS_MAX_PAIRS = pairs  # fused tiles above this many pairs


def _sample_job(n: int, m: int, d: int, options: SampleOptions, tiles: int | None) -> tuple:
    _set_tiles(tiles)
    a, b = _clouds(n, m, d, 3)
    s = estimate_w1(a, b, target="sample", sample=options, seed=5).sample
    return s.lower, s.upper, s.route, s.passes, s.lower_method


def _passes_job(n: int, m: int, d: int, k: int) -> tuple:
    """Both passes of fused tiles, split by rows: bits, candidates and bytes sent."""
    from wassnet.ot.sharded import run_sharded

    a, b = _clouds(n, m, d, 7)
    problem = TransportProblem.build(a, b)
    p = torch.as_tensor(np.random.default_rng(1).normal(size=m) * 0.1)
    q = torch.as_tensor(np.random.default_rng(2).normal(size=n) * 0.1)

    def lead() -> tuple:
        cost = ShardedCost(TiledCost(problem, backend="eager", tile=64))
        lower, cand = cost.row_pass(p, k, below=q)
        upper, rows = cost.col_pass(q, k)
        return lower.numpy(), cand.numpy(), upper.numpy(), rows.numpy(), cost.traffic

    return run_sharded(problem, lead)


def _population_job(n: int, folds: int) -> tuple:
    a, b = _clouds(n, n, 3, 11)
    options = PopulationOptions(
        folds=folds, critics=("linear", "projection", "transport", "dense"), hidden=(16, 16),
        steps=60, eval_every=20, time_budget=None,
    )  # fmt: skip
    pop = estimate_w1(a, b, target="population", population=options, seed=9).population
    return pop.lower, pop.upper, pop.estimate, [f.dual for f in pop.folds], pop.heldout


def _budget_job(n: int, budget: float) -> tuple:
    """A tiled bracket under a time budget: rank 0 decides, every rank returns with it."""
    _set_tiles(1000)
    a, b = _clouds(n, n, 4, 8)
    options = SampleOptions(route="assignment", warm_start=20, backend="eager", time_budget=budget)
    t0 = time.perf_counter()
    s = estimate_w1(a, b, target="sample", sample=options).sample
    return s.lower, s.upper, time.perf_counter() - t0


def _failing_job() -> str:
    """Rank 0 fails between two passes: every other rank must stop with one line."""
    from wassnet.errors import InputError, WassnetError
    from wassnet.ot.sharded import run_sharded

    a, b = _clouds(200, 200, 3, 1)
    problem = TransportProblem.build(a, b)

    def lead() -> None:
        cost = ShardedCost(TiledCost(problem, backend="eager", tile=64))
        cost.row_pass(torch.zeros(200, dtype=torch.float64), 2)
        raise InputError("something rank 0 could not do")

    try:
        run_sharded(problem, lead)
    except WassnetError as exc:
        return str(exc)
    return "no error"


_JOBS = {
    "sample": _sample_job,
    "passes": _passes_job,
    "population": _population_job,
    "budget": _budget_job,
    "failing": _failing_job,
}


# -- tests ----------------------------------------------------------------------------------


def test_shards_cover_the_rows_in_whole_tiles() -> None:
    for n, ranks, quantum in [(1000, 2, 64), (64, 3, 64), (130, 4, 64), (0, 2, 8), (5, 1, 8)]:
        shards = shard_rows(n, ranks, quantum)
        assert len(shards) == ranks and shards[0][0] == 0 and shards[-1][1] == n
        assert all(a <= b and a % quantum == 0 for a, b in shards)
        assert all(shards[i][1] == shards[i + 1][0] for i in range(ranks - 1))


@pytest.mark.parametrize("n", [1, 3, 70])
def test_one_process_is_world_size_one_of_the_same_passes(n: int) -> None:
    from wassnet.ot import PairwiseCost

    a, b = _clouds(n, 5, 3, 2)
    problem = TransportProblem.build(a, b)
    p, q = torch.linspace(-0.1, 0.1, 5, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for cost in (PairwiseCost(problem), TiledCost(problem, backend="eager", tile=64)):
        sharded = ShardedCost(cost)
        for got, want in [(sharded.row_pass(p, 2), cost.row_pass(p, 2)),
                          (sharded.col_pass(q, 2), cost.col_pass(q, 2))]:  # fmt: skip
            assert got[0].numpy().tobytes() == want[0].numpy().tobytes()
            assert torch.equal(got[1], want[1])
        assert sharded.traffic == [0, 0]


def test_sharded_passes_are_the_single_process_bits(tmp_path: Path) -> None:
    n, m, d, k = 300, 260, 5, 3
    ranks = _in_world(tmp_path, "passes", n, m, d, k)
    single = _passes_job(n, m, d, k)
    lower, cand, upper, rows, traffic = ranks[0]
    assert lower.tobytes() == single[0].tobytes() and np.array_equal(cand, single[1])
    assert upper.tobytes() == single[2].tobytes() and np.array_equal(rows, single[3])
    assert len(traffic) == 2 and all(t > 8 * m for t in traffic)  # rows really gathered
    assert single[4] == [0, 0]  # one process: nothing sent


@pytest.mark.parametrize(
    "case",
    [
        (40, 40, 3, SampleOptions(), None),  # dense
        (120, 120, 4, SampleOptions(route="assignment", warm_start=20), None),
        (120, 90, 4, SampleOptions(route="transport", warm_start=20), None),
        (150, 150, 4, SampleOptions(route="assignment", warm_start=20, backend="eager"), 1000),
        (150, 110, 3, SampleOptions(route="transport", warm_start=20, backend="eager"), 1000),
    ],
    ids=["dense", "assignment", "transport", "tiled-assignment", "tiled-transport"],
)
def test_distributed_bracket_is_the_single_process_one(tmp_path: Path, case: tuple) -> None:
    ranks = _in_world(tmp_path, "sample", *case)
    n, m, d, options, tiles = case
    from wassnet.w1 import sample as sample_module

    old = sample_module.DENSE_PASS_MAX_PAIRS
    try:
        single = _sample_job(n, m, d, options, tiles)
    finally:
        sample_module.DENSE_PASS_MAX_PAIRS = old
    assert ranks[0] == single  # lower, upper: the same floats; the same route and passes
    assert ranks[1][:3] == single[:3]  # every rank returns the bracket
    route = "dense" if options.route == "auto" else options.route
    assert single[2] == route and ("fused float32" in single[4]) == (tiles is not None)


def test_population_folds_in_parallel_are_the_single_process_bracket(tmp_path: Path) -> None:
    ranks = _in_world(tmp_path, "population", 120, 3)
    single = _population_job(120, 3)
    for got in ranks:
        assert got[:4] == single[:4]
        assert all(np.array_equal(x, y) for x, y in zip(got[4], single[4], strict=True))


def test_cli_under_torchrun_prints_once(tmp_path: Path) -> None:
    a, b = _clouds(60, 50, 3, 4)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
        str(WORLD), "-m", "wassnet", "estimate", str(tmp_path / "a.npy"),
        str(tmp_path / "b.npy"), "--target", "sample", "--route", "transport", "--json",
        "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WASSNET_DIST_TIMEOUT": "40"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=55, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    assert done.stdout.count('"target"') == 1  # rank 0 alone prints
    printed = json.loads(done.stdout)["sample"]
    single = estimate_w1(a, b, target="sample", sample=SampleOptions(route="transport")).sample
    assert (printed["lower"], printed["upper"]) == (single.lower, single.upper)


def test_time_budget_is_decided_on_rank_0_for_all(tmp_path: Path) -> None:
    ranks = _in_world(tmp_path, "budget", 300, 3.0)
    assert ranks[0][:2] == ranks[1][:2]  # the same bracket on every rank
    assert 0 <= ranks[0][0] <= ranks[0][1]
    assert all(seconds < 3.0 + 5.0 for *_, seconds in ranks)  # both stopped in time


def test_a_failure_on_rank_0_ends_every_rank_with_one_line(tmp_path: Path) -> None:
    ranks = _in_world(tmp_path, "failing")
    assert ranks[0] == "something rank 0 could not do"
    assert ranks[1] == "rank 0 stopped: something rank 0 could not do"
