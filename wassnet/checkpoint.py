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

from wassnet.errors import CheckpointError

__all__ = ["CheckpointError", "load_checkpoint", "load_torch_file", "save_checkpoint"]


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
    state = load_torch_file(p, "wassnet checkpoint", map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(p)!r} is not a wassnet checkpoint (not a dict)")
    if kind is not None and state.get("kind") != kind:
        found = state.get("kind", "unknown")
        raise CheckpointError(
            f"{str(p)!r} is a {found!r} checkpoint, expected a {kind!r} checkpoint"
        )
    return state


def load_torch_file(path: Path, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear line when it fails.

    Torch's own messages for a bad file are long and misleading (a truncated file is
    an "internal miniz error"; a foreign pickle ends in advice to turn the safe loader
    off). Here: ``cannot read <what> 'PATH': the file is empty`` / ``is truncated or
    corrupt`` / ``is not a torch file`` / ``holds Python objects ... not a file wassnet
    wrote``. The safe loader is never turned off.
    """
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the refused objects, then raises
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        foreign = "global" in str(exc).lower()
        reason = (
            "it holds Python objects beyond tensors, which wassnet never executes: not a "
            "file wassnet wrote"
            if foreign
            else "it is not a torch file (corrupt, or another format)"
        )
    except EOFError:
        empty = path.stat().st_size == 0
        reason = "the file is empty" if empty else "the file is truncated or corrupt"
    except OSError:
        raise
    except Exception as exc:  # torch's unpickler raises many types for a foreign file
        zipped = "zip archive" in str(exc) or "PytorchStreamReader" in str(exc)
        reason = (
            "the file is truncated or corrupt"
            if zipped
            else "it is not a torch file (corrupt, or another format)"
        )
    raise CheckpointError(f"cannot read {what} {str(path)!r}: {reason}")


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
