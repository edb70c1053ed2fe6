"""Atomic checkpoints that load safely, with one clear error when they cannot.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (model and
optimizer ``state_dict``s, RNG snapshots from :mod:`wassnet.runtime`, counters). It is
written to a temporary file in the target folder, flushed to disk and renamed over the
target, so a run killed at any moment (even by SIGKILL mid-write) leaves either the
previous complete checkpoint or the new complete one, never a torn file; a write that
fails (a full disk, a file size limit) raises one ``OSError`` line that says the
previous checkpoint is intact. It is loaded with ``torch.load(weights_only=True)``: no
pickled code is ever executed.

**Integrity.** Torch's zip container does not verify its checksums on load, so a
checkpoint whose bytes were damaged would load as other numbers. Every checkpoint
carries ``state["digest"]``, a SHA-256 over everything else in it (each tensor's dtype,
shape and bytes, each other value's type and ``repr``, in order), verified on load: a
mismatch is refused with one line naming the file. A checkpoint written before the
digest existed loads with a :class:`~wassnet.errors.WassnetWarning` saying it cannot
be verified.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from wassnet.errors import CheckpointError, WassnetWarning

__all__ = [
    "DIGEST_KEY",
    "CheckpointError",
    "load_checkpoint",
    "load_torch_file",
    "save_checkpoint",
    "state_digest",
    "write_atomic",
]

#: The key of the integrity digest in a checkpoint's top-level dict.
DIGEST_KEY = "digest"
_DIGEST_SCHEME = "sha256-v1"


def _feed(h: Any, value: Any) -> None:
    """Hash ``value`` canonically: containers in order, tensors by dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _feed(h, key)
            _feed(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__[0]}{len(value)}".encode())
        for item in value:
            _feed(h, item)
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


def state_digest(state: dict[str, Any]) -> str:
    """The SHA-256 (hex) of a checkpoint's contents, the digest entry excluded."""
    h = hashlib.sha256(_DIGEST_SCHEME.encode())
    _feed(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` with its digest to ``path`` atomically (:func:`write_atomic`);
    return the path. ``state`` itself is not modified.

    Raises:
        OSError: the write failed (full disk, file size limit, permissions): one line
            naming the file; the previous checkpoint at ``path``, if any, is intact.
    """
    stamped = {**state, DIGEST_KEY: {"scheme": _DIGEST_SCHEME, "value": state_digest(state)}}
    buffer = io.BytesIO()  # serialized in memory: torch's C++ writer never meets the disk
    torch.save(stamped, buffer)
    return write_atomic(buffer.getbuffer(), path, "checkpoint")


def write_atomic(data: bytes | memoryview, path: str | os.PathLike[str], what: str) -> Path:
    """Write ``data`` to ``path`` through a temp file in its folder, fsync and rename, so
    that ``path`` holds either its old content or all of ``data``, whenever the process
    dies. Returns the path.

    Raises:
        OSError: one line naming ``what`` and the file, and saying whether an older file
            is kept (a full disk or a file size limit, the temp file removed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        kept = f"the previous {what} is kept" if target.exists() else "nothing was written"
        error = OSError(f"cannot write {what} {str(target)!r} ({kept}): {exc.strerror or exc}")
        error.errno = exc.errno
        raise error from None
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
    _verify(state, p)
    if kind is not None and state.get("kind") != kind:
        found = state.get("kind", "unknown")
        raise CheckpointError(
            f"{str(p)!r} is a {found!r} checkpoint, expected a {kind!r} checkpoint"
        )
    return state


def _verify(state: dict[str, Any], path: Path) -> None:
    """Check the digest (see the module doc); an old checkpoint without one gets a note.
    The digest entry is removed from ``state``."""
    saved = state.pop(DIGEST_KEY, None)
    if saved is None:
        warnings.warn(
            f"{str(path)!r} has no integrity digest (written before wassnet 0.3): its "
            "contents cannot be verified",
            WassnetWarning,
            stacklevel=3,
        )
        return
    scheme = saved.get("scheme") if isinstance(saved, dict) else None
    if scheme != _DIGEST_SCHEME:
        raise CheckpointError(
            f"{str(path)!r} has an integrity digest of unknown scheme {scheme!r}: written "
            "by a newer wassnet, or damaged"
        )
    if saved.get("value") != state_digest(state):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupted: its contents do not match the digest "
            "saved with them (restore it from a copy, or start a new run)"
        )


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
