"""Device choice, seeding and RNG state: what every training entry point shares.

Every function in wassnet that trains takes ``device=`` (default: a GPU when one is
present, else the CPU) and a ``seed``. :func:`rng_state` / :func:`set_rng_state`
capture and restore *all* the random streams a run draws from (Python, NumPy, torch
CPU and CUDA), so that a run resumed from a checkpoint continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from wassnet.errors import InputError, InputTypeError

__all__ = ["resolve_device", "rng_state", "seed_everything", "set_rng_state"]


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
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and all GPUs)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputTypeError(f"seed must be an int, got {type(seed).__name__}")
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
