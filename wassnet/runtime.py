"""Device choice, seeding and RNG state: what every training entry point shares.

Every function in wassnet that trains takes ``device=`` (default: a GPU when one is
present, else the CPU) and a ``seed``. :func:`rng_state` / :func:`set_rng_state`
capture and restore *all* the random streams a run draws from (Python, NumPy, torch
CPU and CUDA), so that a run resumed from a checkpoint continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from wassnet.errors import InputError, InputTypeError

__all__ = [
    "check_memory",
    "check_seed",
    "resolve_device",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: ``device`` if given, else ``cuda`` when available, else CPU.

    Raises ``ValueError`` for an unknown device string and for ``cuda`` on a machine
    without a usable GPU (rather than failing later, deep inside a training step).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but no CUDA GPU is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(
            f"device {device!r} requested but this machine has {torch.cuda.device_count()} "
            "CUDA GPU(s)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} requested but no Apple MPS GPU is available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not supported: use cpu, cuda, cuda:N or mps")
    return dev


def check_seed(seed: int) -> int:
    """``seed`` if it is an int in ``[0, 2^63 - 1]`` (what NumPy and torch both take),
    else one clear :class:`InputError`."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputTypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise InputError(f"seed must be an integer from 0 to 2^63 - 1, got {seed}")
    return seed


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def check_memory(nbytes: float, what: str) -> None:
    """Refuse, before any work, a job whose arrays alone would take more than half of
    this machine's memory (``nbytes``: an estimate of what it allocates), with one line
    naming ``what`` and both sizes (rather than an allocation that fails after minutes,
    or swaps the machine to a halt). A machine whose memory cannot be read is trusted."""
    total = _physical_memory()
    if total is not None and nbytes > total / 2:
        raise InputError(
            f"{what} needs about {nbytes / 2**30:.3g} GiB of memory, more than half of this "
            f"machine's {total / 2**30:.3g} GiB"
        )


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and all GPUs);
    ``seed`` in ``[0, 2^63 - 1]`` (:func:`check_seed`)."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """A snapshot of every global RNG stream, storable with ``torch.save``.

    Only tensors, lists, ints and strings are used, so that the snapshot loads with
    ``torch.load(weights_only=True)``.
    """
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [
            np_kind,
            torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
