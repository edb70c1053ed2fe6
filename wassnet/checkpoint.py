"""Atomic checkpoints that load safely, with one clear error when they cannot.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (model and
optimizer ``state_dict``s, RNG snapshots from :mod:`wassnet.runtime`, counters). It is
written to a temporary file in the target folder, flushed to disk and renamed over the
target, so a run killed at any moment (even by SIGKILL mid-write) leaves either the
previous complete checkpoint or the new complete one, never a torn file. It is loaded
with ``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, corrupt, or not the kind that was expected."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def load_checkpoint(
    path: str | os.PathLike[str], kind: str | None = None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    If ``kind`` is given, the checkpoint must carry ``state["kind"] == kind`` (e.g.
    ``"gan"`` or ``"classifier"``), so that a classifier checkpoint handed to the GAN
    sampler is refused with a clear message rather than failing on a missing key.

    Raises :class:`CheckpointError` (a ``ValueError``) for a missing file, a file that is
    not a torch checkpoint, a truncated/corrupt one, or one of the wrong kind.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {str(p)!r} is a folder, not a file")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(p)!r} is not a wassnet checkpoint (not a dict)")
    if kind is not None and state.get("kind") != kind:
        found = state.get("kind", "unknown")
        raise CheckpointError(
            f"{str(p)!r} is a {found!r} checkpoint, expected a {kind!r} checkpoint"
        )
    return state


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
