"""Run folders and the one resumable-trainer mechanism both trainers use.

One rule for every job (``wassnet gan train``, ``wassnet classify train``,
:func:`wassnet.gan.train_gan`, :func:`wassnet.certify.train_classifier`):

* **A folder holds one run.** An empty or new folder starts one; a folder that holds a
  checkpoint is *continued* from it (the options must agree with the saved ones,
  except those the trainer lists as changeable, such as the number of steps). Nothing
  in the folder is ever overwritten by a different run: to start over, choose another
  folder.
* **One process at a time.** :class:`RunFolder` takes an exclusive lock on
  ``FOLDER/.lock`` (an OS file lock, released by the OS when the process dies, so a
  killed run never leaves a stale lock). A second process is refused with one line
  naming the holder (process id, host, start time, command).
* **Checkpoints are atomic** (:func:`wassnet.checkpoint.save_checkpoint`: temp file,
  fsync, rename); temp files left by a killed process are removed when the folder is
  next opened.
* **Ctrl-C checkpoints first.** Inside :meth:`RunFolder.interrupts` the first SIGINT
  only sets :attr:`RunFolder.interrupted`; the trainer finishes its current step,
  checkpoints, and raises ``KeyboardInterrupt`` (the CLI exits with code 130). A second
  Ctrl-C stops at once (the last checkpoint stays valid).
* **One mechanism continues a run** (:class:`ResumableRun`): the same checks, the same
  errors (:class:`ResumeError`) and the same step loop for every trainer; a job
  supplies only its models, its step and what its checkpoint holds (:class:`Job`).

Modules: :mod:`wassnet.runs.folder` (the folder: lock, atomic saves, Ctrl-C),
:mod:`wassnet.runs.resumable` (the mechanism, ``metrics.jsonl``). Importing this
package does not import torch.
"""

from wassnet.runs.folder import CHECKPOINT_NAME, LOCK_NAME, RunFolder
from wassnet.runs.resumable import (
    Job,
    LoopOptions,
    MetricsLog,
    ResumableRun,
    ResumeError,
    RunSpec,
    StepReport,
    continued_config,
)

__all__ = [
    "CHECKPOINT_NAME",
    "LOCK_NAME",
    "Job",
    "LoopOptions",
    "MetricsLog",
    "ResumableRun",
    "ResumeError",
    "RunFolder",
    "RunSpec",
    "StepReport",
    "continued_config",
]
