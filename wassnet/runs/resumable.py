"""The one resumable-trainer mechanism: what every trainer's run folder does the same way.

A trainer opens ``with ResumableRun(out, spec, config, total) as run:``, builds its
:class:`Job` (models, optimizers, data), then calls ``run.restore(job)`` and
``run.train(job, loop)``. :class:`ResumableRun` owns everything the jobs share:

* the run folder and its lock (:class:`~wassnet.runs.folder.RunFolder`);
* the resume rules, one set for every kind of run, each refused with a
  :class:`ResumeError` of one line that starts ``cannot resume 'FOLDER':``:

  - the saved config must equal this call's, except the fields ``spec.changeable``
    names (``it was started with other options (...)``);
  - the run's length must be the saved one (``spec.extendable=False``: the same data
    and options give the same number of steps), or may grow (``extendable=True``) but
    never fall below the checkpoint's step (``below the checkpoint's step``);
  - a checkpoint that is missing, damaged or of another kind is refused by
    :func:`wassnet.checkpoint.load_checkpoint` (:class:`~wassnet.errors.CheckpointError`),
    one whose contents do not fit the job with ``cannot resume from 'FILE': ...``;

* the global random streams: seeded from ``config.seed`` before the job is built,
  saved in every checkpoint and restored from it, so that a continued run is
  bit-identical to an uninterrupted one (same device and thread count);
* the step loop: a step budget, checkpoints every ``checkpoint_every`` steps, when the
  job asks (an epoch's end), at the end of the call, and on Ctrl-C (then
  ``KeyboardInterrupt``, unless the run is complete), with a progress bar;
* ``metrics.jsonl`` (when ``spec.metrics`` names it): appended and flushed line by
  line, truncated on resume to the checkpoint's step (the dropped lines are recomputed);
* under torchrun (:mod:`wassnet.distributed`, a process group of several ranks), rank 0
  alone holds the folder: the lock, the resume checks, the checkpoints and the metrics
  log. It sends the checkpoint being continued (or the error that refused it, raised
  then on every rank) to the other ranks; every rank seeds the same streams, so the
  models start identical; checkpoints are written by rank 0 while the others wait at a
  barrier; a Ctrl-C on any rank stops every rank at the same step. The checkpoint does
  not depend on the number of ranks: a run may continue with another world size.

Importing this module does not import torch (the checkpoint and RNG helpers are
imported when used).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from wassnet import distributed
from wassnet.errors import CheckpointError, InputError, WassnetError
from wassnet.jsonio import strict_json
from wassnet.runs.folder import RunFolder

__all__ = [
    "Job",
    "LoopOptions",
    "MetricsLog",
    "ResumableRun",
    "ResumeError",
    "RunSpec",
    "StepReport",
    "continued_config",
]


class ResumeError(CheckpointError, InputError):
    """A run folder's run cannot be continued with this call's options or data.

    Both a :class:`~wassnet.errors.CheckpointError` and an
    :class:`~wassnet.errors.InputError` (hence a ``ValueError``): the checkpoint is
    fine, the call does not fit it.
    """


class RunConfig(Protocol):
    """What :class:`ResumableRun` needs of a trainer's config (a dataclass)."""

    seed: int

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig: ...


C = TypeVar("C", bound=RunConfig)


@dataclass(frozen=True)
class RunSpec:
    """What kind of run a trainer keeps; the rules are the same for every kind.

    Attributes:
        kind: the checkpoint's ``kind`` (``"gan"``, ``"classifier"``).
        changeable: config fields a continued run may change (e.g. the step count).
        extendable: whether a continued run may have more steps in all than the saved
            one (the GAN's ``steps``); otherwise the total must be the saved one.
        metrics: the file name of the run's ``metrics.jsonl`` (``None``: none).
    """

    kind: str
    changeable: tuple[str, ...] = ()
    extendable: bool = False
    metrics: str | None = None


@dataclass(frozen=True)
class LoopOptions:
    """How one call steps a run: checkpoint cadence, step budget, progress bar.

    Attributes:
        checkpoint_every: checkpoint every this many steps (also at the end of the
            call, when the job asks, and on Ctrl-C).
        max_steps: stop after this many steps in *this call* (``None``: run to the
            end); a later call continues exactly where this one stopped.
        progress: show a tqdm progress bar.
    """

    checkpoint_every: int = 200
    max_steps: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.max_steps is not None and self.max_steps < 0:
            raise InputError(f"max_steps must be >= 0, got {self.max_steps}")


@dataclass
class StepReport:
    """What a job says after one step.

    Attributes:
        note: shown beside the progress bar (empty: keep the last note).
        checkpoint: a checkpoint is due now besides the cadence (an epoch's end).
    """

    note: dict[str, Any] = field(default_factory=dict)
    checkpoint: bool = False


class Job(Protocol):
    """What a trainer supplies to :class:`ResumableRun` (what differs between jobs).

    ``step`` is the number of steps done (set by :meth:`ResumableRun.restore` on
    resume), ``total`` the steps of the whole run, ``label`` the progress bar's name.
    """

    step: int
    total: int
    label: str

    def advance(self) -> StepReport:
        """Train one step (``step`` grows by one), with its logs and evaluations."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The job's part of a checkpoint (models, optimizers, its own streams)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load the job's part of a checkpoint (``step`` is already set)."""
        ...


class MetricsLog:
    """``metrics.jsonl``: appended and flushed line by line; truncated to a step on resume."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        """Open ``path``; keep only the records up to step ``keep_until`` (``None``:
        none, a new run). A line torn by a kill ends what is kept."""
        self.path = path
        kept: list[str] = []
        if keep_until is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= keep_until:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    break  # a line torn by a kill: everything after it is recomputed
        path.write_text("".join(line + "\n" for line in kept))
        self.file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (strict JSON: NaN and inf are refused) and flush it."""
        self.file.write(json.dumps(strict_json(record), allow_nan=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def continued_config(
    config_type: type[C],
    saved: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    given: Collection[str],
) -> C:
    """The config of a run: ``options`` for a new run (``saved`` is ``None``); for a run
    being continued, its ``saved`` config (read with ``from_dict``, so old spellings
    load) with the ``given`` options on top. :class:`ResumableRun` then refuses the
    changes a run cannot take."""
    if saved is None:
        return config_type(**options)
    base = config_type.from_dict(dict(saved)).to_dict()
    return config_type(**{**base, **{k: v for k, v in options.items() if k in given}})


class ResumableRun:
    """One call on a run folder: checks, restores, steps and checkpoints a :class:`Job`.

    ``with ResumableRun(out, spec, config, total, resume=resume) as run:`` locks the
    folder, loads and checks the run it holds (see the module doc), seeds every global
    random stream from ``config.seed`` and opens ``metrics.jsonl``; on exit the log is
    closed and the lock released.

    Attributes:
        folder: the locked :class:`RunFolder`.
        state: the checkpoint being continued (``None``: a new run).
        start: the step this call starts from.
        metrics: the run's :class:`MetricsLog` (``None`` when ``spec.metrics`` is).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        spec: RunSpec,
        config: RunConfig,
        total: int,
        *,
        resume: bool = True,
    ) -> None:
        self.folder = RunFolder(out)
        self.spec, self.config, self.total, self.resume = spec, config, total, resume
        self.state: dict[str, Any] | None = None
        self.metrics: MetricsLog | None = None
        self._stack = contextlib.ExitStack()

    @property
    def resumed(self) -> bool:
        """Whether this call continues a run."""
        return self.state is not None

    @property
    def start(self) -> int:
        return 0 if self.state is None else int(self.state["step"])

    @property
    def owner(self) -> bool:
        """Whether this process holds the folder (rank 0; the only process without torchrun)."""
        return distributed.is_main()

    def __enter__(self) -> ResumableRun:
        from wassnet.runtime import seed_everything

        refused: BaseException | None = None
        with contextlib.ExitStack() as stack:
            if self.owner:
                try:
                    self._open(stack)
                except (WassnetError, OSError) as exc:
                    refused = exc
            if distributed.active():  # the other ranks learn rank 0's outcome
                refused, self.state = distributed.broadcast_object((refused, self.state))
            if refused is not None:
                raise refused
            seed_everything(self.config.seed)
            self._stack = stack.pop_all()
        return self

    def _open(self, stack: contextlib.ExitStack) -> None:
        """Lock the folder, load and check its run, open the metrics log (rank 0)."""
        stack.enter_context(self.folder)
        self.state = self.folder.previous_run(self.spec.kind, self.resume)
        if self.state is not None:
            self._check(self.state)
        if self.spec.metrics is not None:
            keep = self.start if self.resumed else None
            self.metrics = MetricsLog(self.folder.path / self.spec.metrics, keep)
            stack.callback(self.metrics.close)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self._stack.__exit__(exc_type, exc, tb)

    # -- the resume rules ---------------------------------------------------------------

    def _refuse(self, reason: str) -> ResumeError:
        return ResumeError(f"cannot resume {str(self.folder.path)!r}: {reason}")

    def _check(self, state: dict[str, Any]) -> None:
        """Refuse a checkpoint this call cannot continue (see the module doc)."""
        saved = state.get("config")
        if not isinstance(saved, dict) or "step" not in state:
            raise CheckpointError(
                f"{str(self.folder.checkpoint)!r} has no saved config or step: not a wassnet run"
            )
        self._check_config(type(self.config).from_dict(saved))
        saved_total, step = state.get("total_steps"), int(state["step"])
        if not self.spec.extendable and saved_total != self.total:
            raise self._refuse(
                f"it was trained on {saved_total} steps in all, this data gives "
                f"{self.total}: continue with the same training data or choose another folder"
            )
        if self.total < step:
            raise self._refuse(
                f"{self.total} steps in all is below the checkpoint's step {step}: give at "
                f"least {step} steps"
            )

    def _check_config(self, saved: RunConfig) -> None:
        changes = [
            f"{f.name}={getattr(self.config, f.name)!r} where the run has "
            f"{getattr(saved, f.name)!r}"
            for f in fields(self.config)  # type: ignore[arg-type]
            if f.name not in self.spec.changeable
            and getattr(saved, f.name) != getattr(self.config, f.name)
        ]
        if changes:
            only = self.spec.changeable
            may = f" (only {', '.join(only)} may change)" if only else ""
            raise self._refuse(
                f"it was started with other options ({', '.join(changes)}): continue with "
                f"the same options{may} or choose another folder"
            )

    # -- restore, step, checkpoint ------------------------------------------------------

    def restore(self, job: Job) -> None:
        """Load the checkpoint being continued into ``job`` (nothing for a new run): its
        step, its part (:meth:`Job.load_state_dict`), then every global random stream.

        Raises:
            CheckpointError: the checkpoint's contents do not fit the job (one line).
        """
        if self.state is None:
            return
        from wassnet.runtime import set_rng_state

        try:
            job.step = int(self.state["step"])
            job.load_state_dict(self.state)
            set_rng_state(self.state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise CheckpointError(
                f"cannot resume from {str(self.folder.checkpoint)!r}: {reason}"
            ) from None

    def checkpoint(self, job: Job) -> None:
        """Write the checkpoint atomically: kind, config, step, total, the job's part,
        every global random stream (rank 0 writes; every rank calls it, the others wait
        until the file is complete)."""
        from wassnet.runtime import rng_state

        if self.owner:
            self.folder.save(
                {
                    "kind": self.spec.kind,
                    "config": self.config.to_dict(),
                    "step": job.step,
                    "total_steps": job.total,
                    **job.state_dict(),
                    "rng": rng_state(),
                }
            )
        distributed.barrier()

    def train(self, job: Job, loop: LoopOptions) -> None:
        """Step ``job`` to its end (or ``loop.max_steps`` steps), checkpointing as the
        module doc says. A new run stopped before its first step is checkpointed too.

        Raises:
            KeyboardInterrupt: Ctrl-C before the run's last step (after the checkpoint).
        """
        end = job.total if loop.max_steps is None else min(job.total, job.step + loop.max_steps)
        show = loop.progress and self.owner
        with self.folder.interrupts(), _progress(job, end, show) as bar:
            while job.step < end:
                report = job.advance()
                if bar is not None:
                    bar.update(1)
                    if report.note:
                        bar.set_postfix(report.note)
                self._after_step(job, report, end, loop.checkpoint_every)
                distributed.die_here(job.step)
        if self.state is None and job.step == 0:  # a new run that took no step
            self.checkpoint(job)

    def _after_step(self, job: Job, report: StepReport, end: int, every: int) -> None:
        interrupted = self.folder.interrupted
        if distributed.active():  # every rank stops at the same step
            interrupted = self.folder.interrupted = distributed.any_rank(interrupted)
        if report.checkpoint or job.step % every == 0 or job.step == end or interrupted:
            self.checkpoint(job)
        if interrupted and job.step < job.total:  # after the last step: finish instead
            raise self.folder.stop(job.step)


@contextlib.contextmanager
def _progress(job: Job, end: int, show: bool) -> Iterator[Any]:
    """A tqdm bar over the run's steps (``None`` when hidden or nothing is to be done)."""
    if not show or job.step >= end:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=job.total, initial=job.step, desc=job.label) as bar:
        yield bar
