"""The run folder: locked by one process, atomic checkpoints, temp files cleaned, Ctrl-C
deferred to a step boundary (the rules are in :mod:`wassnet.runs`).

Torch-free: the checkpoint functions are imported when used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from wassnet.errors import RunFolderError

__all__ = ["CHECKPOINT_NAME", "LOCK_NAME", "RunFolder"]

CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = ".lock"
#: Patterns of the temporary files an interrupted write can leave behind.
_TEMP_PATTERNS = (".*.tmp", ".*.partial.pt2")


class RunFolder:
    """A run folder held by this process (use as a context manager).

    ``with RunFolder(out) as run:`` creates the folder, takes the lock, removes stale
    temp files; ``run.checkpoint`` is the checkpoint path, :meth:`load` /
    :meth:`save` read and write it. The lock is released on exit.
    """

    def __init__(self, path: str | os.PathLike[str], checkpoint_name: str = CHECKPOINT_NAME):
        self.path = Path(path)
        self.checkpoint = self.path / checkpoint_name
        self.interrupted = False
        self._lock: IO[str] | None = None

    # -- lock ---------------------------------------------------------------------------

    def __enter__(self) -> RunFolder:
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{str(self.path)!r} is a file, not a run folder")
        self.path.mkdir(parents=True, exist_ok=True)
        lock = open(self.path / LOCK_NAME, "a+")
        if not _try_lock(lock):
            holder = _read_holder(lock)
            lock.close()
            raise RunFolderError(
                f"run folder {str(self.path)!r} is in use by {holder}: wait for it to "
                "finish (or stop it), or choose another folder"
            )
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps(_holder_record()) + "\n")
        lock.flush()
        self._lock = lock
        self.clean_stale()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.seek(0)
                self._lock.truncate()
            _unlock(self._lock)
            self._lock.close()
            self._lock = None
        if isinstance(exc, OSError) and self.has_checkpoint() and "checkpoint" not in str(exc):
            # e.g. a full disk while writing a plot: say what the folder still holds
            what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            error = OSError(
                f"{what} (the run folder keeps its last checkpoint: free space and run the "
                "same command to continue)"
            )
            error.errno = exc.errno
            raise error from None

    def clean_stale(self) -> list[Path]:
        """Remove temp files a killed write left in the folder; return what was removed."""
        removed = []
        for pattern in _TEMP_PATTERNS:
            for path in self.path.glob(pattern):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
        return removed

    # -- checkpoint ---------------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        """Whether the folder holds a run to continue."""
        return self.checkpoint.exists()

    def previous_run(self, kind: str, resume: bool = True) -> dict[str, Any] | None:
        """The checkpoint of the run this folder holds, or None for a new folder.

        With ``resume=False`` a folder holding a run is refused (never overwritten).
        """
        if not self.has_checkpoint():
            return None
        if not resume:
            raise RunFolderError(
                f"{str(self.path)!r} already holds a run ({self.checkpoint.name}): continue "
                "it (resume=True, the default) or choose another folder"
            )
        return self.load(kind)

    def load(self, kind: str) -> dict[str, Any]:
        """The checkpoint (see :func:`wassnet.checkpoint.load_checkpoint`)."""
        from wassnet.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint, kind=kind)

    def save(self, state: dict[str, Any]) -> Path:
        """Write the checkpoint atomically (the lock must be held)."""
        from wassnet.checkpoint import save_checkpoint

        if self._lock is None:
            raise RunFolderError(f"run folder {str(self.path)!r} is not locked by this process")
        return save_checkpoint(state, self.checkpoint)

    # -- Ctrl-C -------------------------------------------------------------------------

    @contextlib.contextmanager
    def interrupts(self) -> Iterator[None]:
        """Defer the first Ctrl-C to the trainer's next step boundary (see the module doc).

        Off the main thread (where signal handlers cannot be set) this does nothing:
        Ctrl-C then raises at once and the last periodic checkpoint stays valid.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def defer(signum: int, frame: FrameType | None) -> None:
            if self.interrupted:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.interrupted = True

        previous = signal.signal(signal.SIGINT, defer)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def stop(self, step: int) -> KeyboardInterrupt:
        """The exception a trainer raises after checkpointing an interrupted run."""
        return KeyboardInterrupt(
            f"interrupted: checkpoint saved at step {step} in {str(self.path)!r}; "
            "run the same command to continue"
        )


def _holder_record() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }


def _read_holder(lock: IO[str]) -> str:
    try:
        lock.seek(0)
        record = json.loads(lock.readline())
        return (
            f"process {record['pid']} on {record['host']} (started {record['started']}: "
            f"{record['command']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


try:  # POSIX
    import fcntl

    def _try_lock(f: IO[str]) -> bool:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(f: IO[str]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(f: IO[str]) -> bool:
        try:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(f: IO[str]) -> None:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
