"""The one resumable-trainer mechanism (wassnet.runs.ResumableRun): the same rules and the
same errors for every trainer, and an exact resume after a kill."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from wassnet.certify import TrainConfig, train_classifier
from wassnet.checkpoint import load_checkpoint, save_checkpoint
from wassnet.errors import CheckpointError, InputError
from wassnet.gan import GANConfig, train_gan
from wassnet.runs import (
    LoopOptions,
    MetricsLog,
    ResumableRun,
    ResumeError,
    RunSpec,
    StepReport,
    continued_config,
)

# --------------------------------------------------------------------------- a toy job


@dataclass
class ToyConfig:
    seed: int = 0
    steps: int = 10
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyConfig:
        return cls(**data)


TOY_SPEC = RunSpec(kind="toy", changeable=("steps",), extendable=True, metrics="metrics.jsonl")


class ToyJob:
    """A random walk drawing from the global torch stream and from its own stream;
    checkpoints are also due every 4 steps (an "epoch")."""

    def __init__(self, config: ToyConfig, run: ResumableRun, crash_at: int | None = None):
        self.config, self.run, self.crash_at = config, run, crash_at
        self.step, self.total, self.label = 0, config.steps, "toy"
        self.w = torch.zeros(3)  # drawn after seeding: the seed fixes the start
        self.w += torch.randn(3)
        self.stream = torch.Generator().manual_seed(config.seed + 1)

    def advance(self) -> StepReport:
        if self.step == self.crash_at:
            raise RuntimeError("killed")
        noise = torch.randn(3) * self.config.scale + torch.rand(3, generator=self.stream)
        self.w += noise
        self.step += 1
        assert self.run.metrics is not None
        self.run.metrics.write({"step": self.step, "w0": float(self.w[0])})
        return StepReport({"w0": f"{float(self.w[0]):.3f}"}, checkpoint=self.step % 4 == 0)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "stream": self.stream.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = state["w"].clone()
        self.stream.set_state(state["stream"])


def toy_train(out: Path, config: ToyConfig, crash_at=None, loop=None, resume=True) -> ToyJob:
    with ResumableRun(out, TOY_SPEC, config, config.steps, resume=resume) as run:
        job = ToyJob(config, run, crash_at)
        run.restore(job)
        run.train(job, loop or LoopOptions(checkpoint_every=3, progress=False))
        return job


def _logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_a_kill_is_bit_identical(tmp_path: Path) -> None:
    config = ToyConfig(seed=3)
    straight = toy_train(tmp_path / "a", config)
    with pytest.raises(RuntimeError, match="killed"):  # dies in step 8: last checkpoint 6
        toy_train(tmp_path / "b", config, crash_at=7)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt", kind="toy")["step"] == 6
    assert _logged(tmp_path / "b") == list(range(1, 8))  # step 7 logged after the checkpoint
    torch.manual_seed(12345)  # the resumed run restores every global stream itself
    resumed = toy_train(tmp_path / "b", config)
    assert resumed.step == straight.step == 10
    assert torch.equal(resumed.w, straight.w)
    assert _logged(tmp_path / "b") == list(range(1, 11))  # no duplicate, no gap


def test_checkpoints_at_the_cadence_the_job_and_the_budget(tmp_path: Path) -> None:
    saved: list[int] = []
    real = ResumableRun.checkpoint

    def spy(self, job):
        saved.append(job.step)
        real(self, job)

    ResumableRun.checkpoint = spy  # type: ignore[method-assign]
    try:
        toy_train(tmp_path / "r", ToyConfig(steps=10))
        assert saved == [3, 4, 6, 8, 9, 10]  # every 3, every "epoch" (4), the end
        saved.clear()
        toy_train(tmp_path / "s", ToyConfig(steps=10), loop=LoopOptions(5, 2, False))
        assert saved == [2]  # the budget's end
        saved.clear()
        toy_train(tmp_path / "t", ToyConfig(steps=10), loop=LoopOptions(5, 0, False))
        assert saved == [0]  # a new run stopped before its first step keeps a checkpoint
    finally:
        ResumableRun.checkpoint = real  # type: ignore[method-assign]
    more = toy_train(tmp_path / "s", ToyConfig(steps=10), loop=LoopOptions(5, 3, False))
    assert more.step == 5


def test_ctrl_c_checkpoints_the_step_then_stops_unless_the_run_is_complete(
    tmp_path: Path,
) -> None:
    class Pressed(ToyJob):
        def advance(self) -> StepReport:
            report = super().advance()
            self.run.folder.interrupted = True  # Ctrl-C during this step
            return report

    def run(out: Path, steps: int) -> None:
        config = ToyConfig(steps=steps)
        with ResumableRun(out, TOY_SPEC, config, steps) as r:
            job = Pressed(config, r)
            r.train(job, LoopOptions(100, progress=False))

    with pytest.raises(KeyboardInterrupt, match="checkpoint saved at step 1"):
        run(tmp_path / "a", 5)
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["step"] == 1
    run(tmp_path / "b", 1)  # the last step: the run finishes
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 1


def test_toy_resume_rules(tmp_path: Path) -> None:
    toy_train(tmp_path / "r", ToyConfig(steps=6))
    longer = toy_train(tmp_path / "r", ToyConfig(steps=8))  # steps is changeable
    assert longer.step == 8
    with pytest.raises(ResumeError, match=r"other options \(scale=2\.0 where the run has 1\.0"):
        toy_train(tmp_path / "r", ToyConfig(steps=8, scale=2.0))
    with pytest.raises(ResumeError, match="below the checkpoint's step 8"):
        toy_train(tmp_path / "r", ToyConfig(steps=7))
    fixed = RunSpec(kind="toy")  # not extendable: the total must be the saved one
    other_total = ResumableRun(tmp_path / "r", fixed, ToyConfig(steps=8), 9)
    with pytest.raises(ResumeError, match="8 steps in all, this data gives 9"), other_total:
        pass
    with pytest.raises(ResumeError, match="only steps may change"):
        toy_train(tmp_path / "r", ToyConfig(steps=8, seed=1))


def test_a_checkpoint_that_does_not_fit_the_job_is_one_line(tmp_path: Path) -> None:
    toy_train(tmp_path / "r", ToyConfig(steps=2))
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    del state["stream"]
    save_checkpoint(state, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"cannot resume from .*checkpoint\.pt.*stream"):
        toy_train(tmp_path / "r", ToyConfig(steps=3))
    save_checkpoint({"kind": "toy"}, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="no saved config or step"):
        toy_train(tmp_path / "r", ToyConfig(steps=3))


def test_metrics_log_keeps_the_checkpointed_steps_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 5}\n{"step": 10}\n{"step": 1')  # torn last line
    log = MetricsLog(path, keep_until=5)
    log.write({"step": 6, "x": 1.5})
    log.close()
    assert [json.loads(s)["step"] for s in path.read_text().splitlines()] == [0, 5, 6]
    MetricsLog(path, keep_until=None).close()  # a new run starts an empty log
    assert path.read_text() == ""


def test_loop_options_and_continued_config() -> None:
    with pytest.raises(InputError, match="checkpoint_every must be >= 1"):
        LoopOptions(checkpoint_every=0)
    with pytest.raises(InputError, match="max_steps must be >= 0"):
        LoopOptions(max_steps=-1)
    saved = {"seed": 4, "steps": 10, "scale": 0.5}
    options = {"seed": 0, "steps": 20, "scale": 1.0}
    assert continued_config(ToyConfig, None, options, ()) == ToyConfig(0, 20, 1.0)
    assert continued_config(ToyConfig, saved, options, {"steps"}) == ToyConfig(4, 20, 0.5)


# --------------------------------------------------------------------------- both trainers

GAN_TINY = {
    "dataset": "ring",
    "arch": "dense-small",
    "batch_size": 16,
    "n_critic": 1,
    "latent_dim": 2,
    "generator_width": 8,
    "width": 8,
    "iters": 2,
    "eval_samples": 32,
    "steps": 2,
}


def _gan(out: Path, **changes: Any) -> None:
    train_gan(GANConfig(**{**GAN_TINY, **changes}), out, progress=False)


def _classifier(out: Path, n: int = 64, **changes: Any) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 6, generator=gen), torch.arange(n) % 2
    config = TrainConfig(
        **{"arch": "dense-small", "epochs": 1, "batch_size": 32, "iters": 2, **changes}
    )
    train_classifier(config, out, data=(x, y), device="cpu", progress=False)


def _refusal(train, out: Path, **changes: Any) -> str:
    with pytest.raises(ResumeError) as info:
        train(out, **changes)
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, InputError)
    return str(info.value)


def test_both_trainers_refuse_the_same_mismatch_alike(tmp_path: Path, one_thread) -> None:
    """Other options on a run folder: one error class, one message shape, for both."""
    _gan(tmp_path / "gan")
    _classifier(tmp_path / "clf")
    gan = _refusal(_gan, tmp_path / "gan", seed=3)
    clf = _refusal(_classifier, tmp_path / "clf", seed=3)
    for line, folder in ((gan, "gan"), (clf, "clf")):
        assert line.startswith(f"cannot resume {str(tmp_path / folder)!r}: it was started with")
        assert "other options (seed=3 where the run has 0)" in line
        assert line.endswith("or choose another folder") and "\n" not in line
    assert "only steps, log_every, sample_every, checkpoint_every may change" in gan
    assert "may change" not in clf  # every classifier option is fixed


def test_both_trainers_refuse_a_run_of_another_length_alike(tmp_path: Path, one_thread) -> None:
    _gan(tmp_path / "gan", steps=3)
    _classifier(tmp_path / "clf")
    gan = _refusal(_gan, tmp_path / "gan", steps=2)
    clf = _refusal(_classifier, tmp_path / "clf", n=96)
    assert gan.startswith("cannot resume") and "below the checkpoint's step 3" in gan
    assert clf.startswith("cannot resume") and "2 steps in all, this data gives 3" in clf


def test_both_trainers_refuse_a_checkpoint_that_does_not_fit_alike(
    tmp_path: Path, one_thread
) -> None:
    _gan(tmp_path / "gan")
    _classifier(tmp_path / "clf")
    for folder, key, train in (("gan", "opt_c", _gan), ("clf", "optimizer", _classifier)):
        path = tmp_path / folder / "checkpoint.pt"
        state = load_checkpoint(path)
        del state[key]
        save_checkpoint(state, path)
        with pytest.raises(CheckpointError, match=f"cannot resume from {str(path)!r}: '{key}'"):
            train(tmp_path / folder)
