"""The WGAN trainer on tiny 2-D runs: certified critic, falling exact W1, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from wassnet.checkpoint import load_checkpoint
from wassnet.cli import main
from wassnet.gan import GANConfig, build_critic, gradient_penalty, train_gan
from wassnet.nn import lipschitz_bound

#: A 2-D configuration where W1(samples, data) falls clearly within 100 steps (seed 0).
TOY = {
    "dataset": "8gaussians",
    "arch": "dense-small",
    "batch_size": 128,
    "n_critic": 3,
    "lr_g": 2e-3,
    "lr_c": 2e-3,
    "latent_dim": 4,
    "generator_width": 64,
    "width": 64,
    "iters": 5,
    "eval_samples": 256,
}
#: Smaller still, for the resume tests (exactness does not need a good model).
TINY = {**TOY, "batch_size": 32, "n_critic": 2, "generator_width": 16, "width": 16}


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("toy") / "run"
    config = GANConfig(**TOY, steps=100, log_every=5, sample_every=25, checkpoint_every=50)
    train_gan(config, out, progress=False)
    return out


def test_critic_certified_lipschitz_throughout(toy_run: Path) -> None:
    rows = _rows(toy_run)
    assert [r["step"] for r in rows] == list(range(0, 101, 5))
    for r in rows:
        assert r["critic_lipschitz_bound"] <= 1 + 1e-4, r
        assert r["critic_lipschitz_bound"] > 0.5  # a real number, not a placeholder
    # the logged bound is the one computed from the final weights
    state = load_checkpoint(toy_run / "checkpoint.pt", kind="gan")
    critic = build_critic("dense-small", (2,), width=TOY["width"], iters=TOY["iters"])
    critic.load_state_dict(state["critic"])
    assert lipschitz_bound(critic, (2,)).bound == pytest.approx(rows[-1]["critic_lipschitz_bound"])


def test_exact_w1_falls_on_8gaussians(toy_run: Path) -> None:
    w1 = [(r["step"], r["exact_w1"]) for r in _rows(toy_run) if "exact_w1" in r]
    assert [s for s, _ in w1] == [0, 25, 50, 75, 100]
    first, last = w1[0][1], w1[-1][1]
    assert first > 1.5  # the untrained generator sits near the origin, radius-2 modes
    assert last < 0.5 * first, w1


def test_run_folder_contents(toy_run: Path) -> None:
    for name in ("curves.png", "level_sets.png", "samples_000000.png", "samples_000100.png"):
        assert (toy_run / name).stat().st_size > 1000, name
    summary = json.loads((toy_run / "summary.json").read_text())
    assert summary["steps"] == 100 and summary["step_time_s"] > 0
    assert summary["critic_lipschitz_bound"] <= 1 + 1e-4


def test_bcop_critic_certified_on_mnist(tmp_path: Path, mnist_root: Path, one_thread) -> None:
    config = GANConfig(
        dataset="mnist",
        arch="conv-small",
        steps=3,
        batch_size=8,
        n_critic=1,
        generator_width=8,
        width=16,
        iters=5,
        limit=64,
        log_every=1,
        sample_every=3,
    )
    result = train_gan(config, tmp_path / "run", data_root=mnist_root, progress=False)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["critic_lipschitz_bound"] <= 1 + 1e-4 for r in rows)
    assert result.exact_w1 is None
    assert (tmp_path / "run" / "samples_000003.png").stat().st_size > 200


def test_gradient_penalty_matches_definition() -> None:
    critic = torch.nn.Linear(3, 1)
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    eps = torch.rand(5)
    # f linear: grad = w everywhere, so the penalty is (|w| - 1)^2 exactly
    expected = (critic.weight.norm() - 1) ** 2
    assert gradient_penalty(critic, real, fake, eps).item() == pytest.approx(expected.item())


def test_relu_baseline_logs_penalty(tmp_path: Path, one_thread) -> None:
    config = GANConfig(**{**TINY, "constraint": "none"}, steps=4, log_every=2)
    assert config.gp == 10.0
    train_gan(config, tmp_path, progress=False)
    rows = _rows(tmp_path)
    assert all("gradient_penalty" in r for r in rows[1:])
    assert all(r["critic_lipschitz_bound"] > 0 for r in rows)


def _params(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path, kind="gan")
    flat = {f"generator.{k}": v for k, v in state["generator"].items()}
    flat.update({f"critic.{k}": v for k, v in state["critic"].items()})
    for opt in ("opt_g", "opt_c"):
        for idx, s in state[opt]["state"].items():
            flat.update({f"{opt}.{idx}.{k}": v for k, v in s.items()})
    flat["stream"] = state["stream"]
    return flat


def _assert_identical(a: Path, b: Path) -> None:
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key


@pytest.mark.parametrize("constraint", ["orthogonal", "none"])
def test_resume_equals_uninterrupted(tmp_path: Path, constraint: str, one_thread) -> None:
    options = {**TINY, "constraint": constraint, "log_every": 5, "checkpoint_every": 5}
    train_gan(GANConfig(**options, steps=20), tmp_path / "straight", progress=False)
    train_gan(GANConfig(**options, steps=10), tmp_path / "split", progress=False)
    train_gan(GANConfig(**options, steps=20), tmp_path / "split", resume=True, progress=False)
    _assert_identical(tmp_path / "straight" / "checkpoint.pt", tmp_path / "split" / "checkpoint.pt")
    assert [r["step"] for r in _rows(tmp_path / "split")] == [0, 5, 10, 15, 20]


def _start_run(out: Path, steps: int, every: int = 5) -> subprocess.Popen:
    """`wassnet gan train` on TINY in a real process (1 thread)."""
    args = ["gan", "train", "--out", str(out), "--quiet", "--threads", "1"]
    args += ["--steps", str(steps), "--checkpoint-every", str(every), "--log-every", "5"]
    args += ["--sample-every", "1000"]
    for key, value in TINY.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "wassnet.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> bool:
    """Wait until ``path`` exists; whether ``proc`` is still running then."""
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.poll() is None


def _straight(tmp_path: Path, steps: int, every: int = 5) -> Path:
    config = GANConfig(**TINY, steps=steps, checkpoint_every=every, log_every=5, sample_every=1000)
    train_gan(config, tmp_path / "straight", progress=False)
    return tmp_path / "straight" / "checkpoint.pt"


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, one_thread) -> None:
    steps, every = 150, 5
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    proc = _start_run(tmp_path / "killed", steps, every)
    still_running = _wait_for(ckpt, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert still_running, "the run ended before it could be killed"
    killed_at = load_checkpoint(ckpt, kind="gan")["step"]
    assert 0 < killed_at < steps
    (tmp_path / "killed" / ".checkpoint.pt.stale.tmp").write_bytes(b"torn write")

    runner = CliRunner()
    resumed = runner.invoke(
        main, ["gan", "train", "--out", str(tmp_path / "killed"), "--resume", "--quiet"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed from step {killed_at}" in resumed.output
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # stale temp files removed

    _assert_identical(_straight(tmp_path, steps, every), ckpt)
    logged = [r["step"] for r in _rows(tmp_path / "killed")]
    assert logged == list(range(0, steps + 1, 5))  # no duplicates, no gaps after the kill


def test_ctrl_c_checkpoints_then_resume_equals_uninterrupted(tmp_path: Path, one_thread) -> None:
    """SIGINT: the step in progress finishes, is checkpointed, exit code 130, then resume."""
    steps = 400
    out = tmp_path / "interrupted"
    proc = _start_run(out, steps, every=1000)  # no periodic checkpoint before the end
    running = _wait_for(out / "samples_000000.png", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert running and proc.returncode == 130, err
    stopped_at = load_checkpoint(out / "checkpoint.pt", kind="gan")["step"]
    assert 0 < stopped_at < steps
    assert f"checkpoint saved at step {stopped_at}" in err and "Traceback" not in err
    resumed = CliRunner().invoke(main, ["gan", "train", "--out", str(out), "--quiet"])
    assert resumed.exit_code == 0 and f"resumed from step {stopped_at}" in resumed.output
    _assert_identical(_straight(tmp_path, steps, every=1000), out / "checkpoint.pt")


def test_second_process_on_a_run_folder_is_refused(tmp_path: Path, one_thread) -> None:
    out = tmp_path / "busy"
    first = _start_run(out, steps=100000)
    try:
        assert _wait_for(out / "metrics.jsonl", first)
        second = _start_run(out, steps=100000)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), err
        assert f"in use by process {first.pid}" in lines[0]
        assert first.poll() is None  # the holder is untouched
    finally:
        first.kill()
        first.communicate()
    rows = _rows(out)
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})  # not interleaved


def test_configs_of_wassnet_0_1_still_load() -> None:
    """Old checkpoints name the critic `critic` (e.g. relu-conv), `critic_width`, ..."""
    old = {"dataset": "mnist", "critic": "relu-conv", "critic_width": 32, "bjorck_iters": 3}
    config = GANConfig.from_dict({**old, "data_limit": 10, "gp": None})
    assert (config.arch, config.constraint, config.width) == ("conv-small", "none", 32)
    assert (config.iters, config.limit, config.gp) == (3, 10, 10.0)
    with pytest.raises(ValueError, match="unknown critic"):
        GANConfig.from_dict({**old, "critic": "resnet"})
    with pytest.raises(ValueError, match="unknown GAN config fields: colour"):
        GANConfig.from_dict({**old, "colour": "red"})


@pytest.mark.parametrize("dataset", ["8gaussians", "mnist"])
def test_projection_critic_stays_certified(tmp_path: Path, dataset: str, mnist_root, one_thread):
    """constraint="projection": plain layers, l2-projected after every critic step."""
    options = {**TINY, "constraint": "projection", "log_every": 1, "steps": 4}
    if dataset == "mnist":
        options.update(dataset="mnist", arch="conv-small", limit=64, batch_size=8, n_critic=1)
    result = train_gan(GANConfig(**options), tmp_path, data_root=mnist_root, progress=False)
    rows = _rows(tmp_path)
    assert len(rows) == 5 and all(r["critic_lipschitz_bound"] <= 1 + 1e-6 for r in rows)
    assert result.config["gp"] == 0.0
    state = load_checkpoint(tmp_path / "checkpoint.pt", kind="gan")
    assert not any("parametrizations" in key for key in state["critic"])  # plain layers


def test_load_generator_returns_its_run(tmp_path: Path, one_thread) -> None:
    from wassnet.gan import LoadedGenerator, generate, load_generator

    train_gan(GANConfig(**TINY, steps=2, log_every=1), tmp_path, progress=False)
    loaded = load_generator(tmp_path)
    assert isinstance(loaded, LoadedGenerator) and not loaded.generator.training
    assert (loaded.step, loaded.data_shape, loaded.config.arch) == (2, (2,), "dense-small")
    assert loaded.path == tmp_path / "checkpoint.pt"
    assert generate(loaded.generator, 5).shape == (5, 2)
