"""The trainers under torch.distributed: world size 2, gloo on the CPU, each rank a
process started by ``torch.multiprocessing`` (spawn), as torchrun would start it (the
same environment variables). Every test joins its processes with a timeout that kills
them, and every process group has a short timeout: nothing here can hang.

* DDP training with 2 ranks x half the batch equals 1 process x the whole batch (same
  ``batch_size``), for the classifier and the WGAN;
* the replicas stay identical under each constraint style (Björck, projection, SLL);
* a rank that dies mid-run ends the other rank with one clear line and a non-zero exit,
  and the run then continues from its last checkpoint in one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
import torch

from wassnet import distributed

#: Seconds a whole multi-process test may take before its processes are killed.
JOIN_TIMEOUT = 50.0
#: The process groups' timeout (WASSNET_DIST_TIMEOUT) in the children.
GROUP_TIMEOUT = "20"
#: ... in the test of a peer that does not answer.
SHORT_TIMEOUT = "6"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun sets for one rank (one machine)."""
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        distributed.TIMEOUT_ENV: GROUP_TIMEOUT,
    }


# -- the jobs each rank runs (module level: spawn pickles them by name) -------------------


def _classifier_data() -> tuple[torch.Tensor, torch.Tensor]:
    """60 random 1x8x8 inputs of 3 classes: batches of 16, the epoch's last one of 12."""
    gen = torch.Generator().manual_seed(5)
    return torch.rand(60, 1, 8, 8, generator=gen), torch.randint(0, 3, (60,), generator=gen)


def _classifier_job(out: str, **options: Any) -> dict[str, np.ndarray]:
    from wassnet.certify import TrainConfig, train_classifier

    config = TrainConfig(dataset="synthetic", batch_size=16, lr=1e-2, seed=3, **options)
    result = train_classifier(config, out, data=_classifier_data(), device="cpu", progress=False)
    params = {k: v.detach().numpy().copy() for k, v in result.model.state_dict().items()}
    params["history"] = np.array([[h["loss"], h["accuracy"]] for h in result.history])
    return params


_CLASSIFIERS = {
    "orthogonal": {"arch": "dense-small", "epochs": 2, "iters": 8},
    "projection": {"arch": "dense-small", "epochs": 2, "norm": "inf", "constraint": "projection"},
    "sll": {"arch": "sll-small", "epochs": 1},
}


#: How far 2 ranks may land from 1 process (relative l2 over all weights). SLL is the
#: most sensitive to rounding: one process that only splits each batch's forward pass in
#: two halves lands 3.6e-4 away; a wrong gradient (each rank on its half alone, i.e.
#: batch 8) lands 0.3 away.
_TOLERANCE = {"orthogonal": 1e-4, "projection": 1e-4, "sll": 1e-3}


def _classifiers_job(out: str) -> dict[str, dict[str, np.ndarray]]:
    return {
        style: _classifier_job(os.path.join(out, style), **options)
        for style, options in _CLASSIFIERS.items()
    }


def _gan_job(out: str, **options: Any) -> dict[str, np.ndarray]:
    """A tiny WGAN; this rank's final generator and critic weights (kept in memory as
    training finishes: each rank's own replica)."""
    from unittest import mock

    import wassnet.gan.trainer as trainer

    config = trainer.GANConfig(
        dataset="8gaussians", batch_size=32, n_critic=2, width=32, generator_width=16,
        latent_dim=4, iters=5, log_every=3, sample_every=1000, eval_samples=64, **options,
    )  # fmt: skip
    kept: dict[str, np.ndarray] = {}
    finish = trainer._GANJob.finish

    def keep(job: Any) -> Any:
        for name, model in (("g", job.generator), ("c", job.critic)):
            kept.update({f"{name}.{k}": v.numpy().copy() for k, v in model.state_dict().items()})
        return finish(job)

    with mock.patch.object(trainer._GANJob, "finish", keep):
        trainer.train_gan(config, out, device="cpu", progress=False)
    return kept


_GANS = {
    "orthogonal": {"steps": 6},
    "gradient-penalty": {"steps": 4, "constraint": "none", "arch": "dense-small"},
}


def _gans_job(out: str) -> dict[str, dict[str, np.ndarray]]:
    return {style: _gan_job(os.path.join(out, style), **opts) for style, opts in _GANS.items()}


def _helpers_job(out: str) -> dict[str, Any]:
    """The collectives, a refusal on rank 0 raised on every rank, then a peer that does
    not answer (rank 1 sleeps past the group's timeout)."""
    from wassnet.certify import TrainConfig, train_classifier
    from wassnet.errors import InputError, RunFolderError

    distributed.init("cpu")
    me = distributed.rank()
    found: dict[str, Any] = {
        "place": (me, distributed.world_size(), distributed.is_main(), distributed.backend()),
        "object": distributed.broadcast_object({"from": me}),
        "sum": distributed.all_reduce_float(me + 0.5),
        "max": distributed.all_reduce_floats([me, -me], "max"),
        "any": (distributed.any_rank(me == 1), distributed.any_rank(False)),
        "gathered": distributed.all_gather_arrays(np.full((me + 1, 2), me, dtype=np.int32)),
    }
    config = TrainConfig(dataset="synthetic", arch="dense-small", batch_size=16, epochs=1)
    with pytest.raises(RunFolderError) as refused:  # rank 0 finds a file: the folder's place
        train_classifier(config, out, data=_classifier_data(), device="cpu", progress=False)
    found["refused"] = str(refused.value)
    with pytest.raises(InputError) as odd:
        train_classifier(
            TrainConfig(dataset="synthetic", arch="dense-small", batch_size=15),
            out,
            data=_classifier_data(),
            progress=False,
        )
    found["odd"] = str(odd.value)
    t0 = time.monotonic()
    if me == 1:
        time.sleep(1.5 * float(SHORT_TIMEOUT))  # rank 0 waits for it in vain
    else:
        with pytest.raises(distributed.PeerFailure) as failure, distributed.peer_failures():
            distributed.barrier()
        found["failure"] = (str(failure.value), time.monotonic() - t0)
    return found


_JOBS = {"classifiers": _classifiers_job, "gans": _gans_job, "helpers": _helpers_job}


def _rank_main(
    rank: int, world: int, port: int, job: str, args: tuple, env: dict[str, str], queue: Any
) -> None:
    os.environ.update({**_rank_env(rank, world, port), **env})
    torch.set_num_threads(1)
    try:
        result = _JOBS[job](*args)
    except Exception as exc:  # reported to the test, which fails with it
        queue.put((rank, "error", f"{type(exc).__name__}: {exc}"))
        return
    distributed.shutdown()
    queue.put((rank, "ok", result))


def _spawn(job: str, *args: Any, world: int = 2, **env: str) -> list[Any]:
    """Run ``_JOBS[job](*args)`` on ``world`` ranks (``env`` added to torchrun's
    environment); their results in rank order."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(r, world, port, job, args, env, queue))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    results: dict[int, Any] = {}
    try:
        while len(results) < world:
            rank, status, value = queue.get(timeout=max(0.1, deadline - time.monotonic()))
            assert status == "ok", f"rank {rank}: {value}"
            results[rank] = value
    finally:
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
    return [results[r] for r in range(world)]


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _relative_gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """``|a - b| / |b|`` over all the tensors together, in l2 (Adam may turn a
    rounding-sized gradient into a step of one learning rate on a few entries, so
    entrywise tolerances would not be the right measure)."""
    assert a.keys() == b.keys()
    gap = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    size = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in a)
    return (gap / size) ** 0.5


# -- the helpers ------------------------------------------------------------------------


def test_collectives_refusals_and_a_silent_peer(tmp_path):
    """broadcast, reductions and gathers of arrays of different lengths; rank 0's
    refusal (a file where the run folder goes) raised on both ranks; a batch that does not
    divide among the ranks refused on both; a peer that does not answer ends rank 0 with
    one PeerFailure line after the group's timeout."""
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    ranks = _spawn("helpers", str(out), **{distributed.TIMEOUT_ENV: SHORT_TIMEOUT})
    for me, found in enumerate(ranks):
        assert found["place"] == (me, 2, me == 0, "gloo")
        assert found["object"] == {"from": 0}
        assert found["sum"] == 2.0 and found["max"] == [1.0, 0.0]
        assert found["any"] == (True, False)
        np.testing.assert_array_equal(found["gathered"][0], np.zeros((1, 2), np.int32))
        np.testing.assert_array_equal(found["gathered"][1], np.ones((2, 2), np.int32))
        assert "is a file, not a run folder" in found["refused"]
        assert "batch size 15 does not divide among 2 processes" in found["odd"]
    message, waited = ranks[0]["failure"]
    assert message.startswith("wassnet: rank 0 of 2: a peer process failed or did not answer")
    assert "\n" not in message and float(SHORT_TIMEOUT) - 1 < waited < JOIN_TIMEOUT


# -- the classifier ---------------------------------------------------------------------


def test_classifier_two_ranks_match_one_and_replicas_stay_identical(tmp_path, one_thread):
    """2 ranks x half of each batch of 16 (the epoch's last batch of 12 split 6 + 6) give
    the weights of 1 process x the whole batch, under Björck layers, l-inf projection
    and SLL layers; both ranks hold bit-identical weights."""
    ranks = _spawn("classifiers", str(tmp_path / "ddp"))
    single = _classifiers_job(str(tmp_path / "one"))
    for style in _CLASSIFIERS:
        _assert_identical(ranks[0][style], ranks[1][style])
        assert _relative_gap(ranks[0][style], single[style]) < _TOLERANCE[style], style
    assert len(single["orthogonal"]["history"]) == 2


# -- the WGAN -----------------------------------------------------------------------------


def test_gan_two_ranks_match_one(tmp_path, one_thread):
    """A WGAN on 8gaussians, 2 ranks x 16 points of each batch of 32 (critic and
    generator steps), ends at 1 process's weights: with the orthogonal critic and with
    the WGAN-GP baseline (its gradient penalty through the critic); both ranks hold
    bit-identical generators and critics."""
    ranks = _spawn("gans", str(tmp_path / "ddp"))
    single = _gans_job(str(tmp_path / "one"))
    for style in _GANS:
        _assert_identical(ranks[0][style], ranks[1][style])
        assert _relative_gap(ranks[0][style], single[style]) < 1e-4, style
    metrics = (tmp_path / "ddp" / "orthogonal" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [0, 3, 6]  # rank 0 wrote once


# -- a rank that dies -------------------------------------------------------------------

_GAN_OPTIONS = {
    "dataset": "8gaussians", "steps": 6, "batch_size": 32, "n_critic": 2, "width": 32,
    "generator_width": 16, "latent_dim": 4, "iters": 5, "log_every": 2,
    "sample_every": 1000, "eval_samples": 64, "checkpoint_every": 2,
}  # fmt: skip
_GAN_ARGS = [
    "gan", "train", "--dataset", "8gaussians", "--steps", "6", "--batch-size", "32",
    "--n-critic", "2", "--width", "32", "--generator-width", "16", "--latent-dim", "4",
    "--bjorck-iters", "5", "--log-every", "2", "--sample-every", "1000",
    "--eval-samples", "64", "--checkpoint-every", "2", "--device", "cpu", "--threads", "1",
    "--quiet",
]  # fmt: skip


def _wassnet_ranks(args: list[str], world: int, **env: str) -> list[tuple[int, str]]:
    """``python -m wassnet ARGS`` as ``world`` ranks (torchrun's environment); each
    rank's exit code and stderr. Killed past :data:`JOIN_TIMEOUT`."""
    port = _free_port()
    base = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "wassnet", *args],
            env={**base, **_rank_env(r, world, port)} if world > 1 else base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]
    deadline = time.monotonic() + JOIN_TIMEOUT
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a rank did not end within the timeout")
        results.append((p.returncode, err))
    return results


def test_a_dead_rank_ends_the_job_with_one_line_and_the_run_continues(tmp_path, one_thread):
    """Rank 1 dies (os._exit) after step 3 of 6, checkpoints every 2 steps: rank 0 ends
    with one line naming itself and exit code 1; the folder holds the step-2 checkpoint
    and no temp file; one process then continues the run (another world size, the same
    global batch) to the weights of an uninterrupted run."""
    from wassnet.gan import GANConfig, train_gan
    from wassnet.runs import RunFolder

    out = tmp_path / "run"
    (rc0, err0), (rc1, _) = _wassnet_ranks(
        [*_GAN_ARGS, "--out", str(out)], 2, **{distributed.DIE_ENV: "1:3"}
    )
    assert rc1 == 17  # the hook's abrupt exit
    assert rc0 == 1
    lines = err0.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: wassnet: rank 0 of 2: "), err0
    assert RunFolder(out).load("gan")["step"] == 2
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".lock"]

    [(rc, err)] = _wassnet_ranks([*_GAN_ARGS, "--out", str(out)], 1)
    assert rc == 0, err
    train_gan(GANConfig(**_GAN_OPTIONS), tmp_path / "whole", device="cpu", progress=False)
    continued, whole = RunFolder(out).load("gan"), RunFolder(tmp_path / "whole").load("gan")
    assert continued["step"] == whole["step"] == 6
    for part in ("generator", "critic"):
        a = {k: v.numpy() for k, v in continued[part].items()}
        b = {k: v.numpy() for k, v in whole[part].items()}
        assert _relative_gap(a, b) < 1e-4, part
