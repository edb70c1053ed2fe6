"""The fused float32 pass of :class:`~wassnet.ot.tiles.TiledCost` in C (CPU).

``_tiles.c`` computes, for a tile of rows, the minima of
:math:`\\sqrt{\\max(0, \\langle \\tilde x_i, \\tilde y_j \\rangle)} + p_j` over blocks of
columns, with the products, square root and reduction fused in registers (a 6 x 16
micro-kernel of fused multiply-adds) and the rows split over POSIX threads: no
Python call per tile and no ``tile x tile`` matrix written to memory. Measured on this
project's 2-core CPU, a pass takes 1.4-2.2x less time than with the ``torch.compile``
kernels (BENCHMARKS.md, ``bench_passes``).

It is compiled on first use (:mod:`wassnet.ot.cbuild`) with ``-O3 -march=native``
(else ``-O3``), never with ``-ffast-math``: IEEE float32 products and sums in any
order, correctly rounded square roots and additions, subnormals kept -- the
roundings :class:`~wassnet.ot.tiles.TiledCost`'s margin is proven for, which it
also checks on a first tile against float64 before using this code.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import torch

from wassnet.ot.cbuild import NativeLibrary

__all__ = ["PANEL", "block_minima", "block_values", "native_tiles_available", "pack_columns"]

PANEL = 16  # columns per packed panel (two vectors of 8 float32 lanes)
_SOURCE = Path(__file__).with_name("_tiles.c")
_COMMON = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-pthread"]


def _declare(lib: ctypes.CDLL) -> None:
    f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    lib.block_min.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_int, f32p, f32p, f32p, ctypes.c_int, f32p,
        ctypes.c_int,
    ]  # fmt: skip
    i64p = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    lib.block_values.argtypes = [
        ctypes.c_int, i64p, i64p, ctypes.c_int, ctypes.c_int, f32p, f32p, f32p, ctypes.c_int,
        f32p, ctypes.c_int,
    ]  # fmt: skip
    lib.block_min.restype = lib.block_values.restype = ctypes.c_int


_NATIVE = NativeLibrary(_SOURCE, [[*_COMMON, "-march=native"], _COMMON], _declare)


def native_tiles_available() -> bool:
    """Whether the compiled pass loads on this machine (compiling it if needed)."""
    return _NATIVE.get() is not None


def pack_columns(ya_t: torch.Tensor) -> np.ndarray:
    """``[D, cols]`` augmented columns (``cols`` a multiple of :data:`PANEL`) packed as
    ``[cols / PANEL, D, PANEL]``: each panel contiguous."""
    dims, cols = ya_t.shape
    if cols % PANEL:
        raise ValueError(f"columns must come in multiples of {PANEL}, got {cols}")
    a = ya_t.detach().cpu().numpy().astype(np.float32, copy=False)
    return np.ascontiguousarray(a.reshape(dims, cols // PANEL, PANEL).transpose(1, 0, 2))


def block_minima(xa: torch.Tensor, panels: np.ndarray, p: np.ndarray, block: int) -> torch.Tensor:
    """``[rows, cols / block]`` float32: for each row of ``xa`` (``[rows, D]``, the
    augmented rows) and each block of ``block`` consecutive columns of ``panels``
    (:func:`pack_columns`), the minimum of ``sqrt(max(0, xa_i . ya_j)) + p_j``."""
    lib = _NATIVE.get()
    if lib is None:
        raise RuntimeError(f"the compiled pass is not available ({_NATIVE.failed})")
    rows, dims = xa.shape
    cols = panels.shape[0] * PANEL
    x = np.ascontiguousarray(xa.detach().cpu().numpy(), dtype=np.float32)
    pots = np.ascontiguousarray(p, dtype=np.float32)
    if panels.shape[1] != dims or len(pots) != cols or block % PANEL or cols % block:
        raise ValueError("block_minima: inconsistent shapes")
    out = np.empty((rows, cols // block), dtype=np.float32)
    status = lib.block_min(rows, cols, dims, x, panels, pots, block, out, torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"the compiled pass failed (status {status})")
    return torch.from_numpy(out)


def block_values(
    xa: torch.Tensor,
    rows: torch.Tensor,
    blocks: torch.Tensor,
    panels: np.ndarray,
    p: np.ndarray,
    block: int,
) -> torch.Tensor:
    """``[pairs, block]`` float32: ``sqrt(max(0, xa_r . ya_j)) + p_j`` for every column
    ``j`` of block ``blocks[k]`` and row ``r = rows[k]`` of ``xa`` (all rows)."""
    lib = _NATIVE.get()
    if lib is None:
        raise RuntimeError(f"the compiled pass is not available ({_NATIVE.failed})")
    x = np.ascontiguousarray(xa.detach().cpu().numpy(), dtype=np.float32)
    r = np.ascontiguousarray(rows.cpu().numpy(), dtype=np.int64)
    b = np.ascontiguousarray(blocks.cpu().numpy(), dtype=np.int64)
    cols = panels.shape[0] * PANEL
    pots = np.ascontiguousarray(p, dtype=np.float32)
    if len(r) != len(b) or (len(r) and (r.min() < 0 or r.max() >= len(x))):
        raise ValueError("block_values: rows out of range")
    out = np.empty((len(r), block), dtype=np.float32)
    status = lib.block_values(
        len(r), r, b, cols, x.shape[1], x, panels, pots, block, out, torch.get_num_threads()
    )
    if status != 0:
        raise RuntimeError(f"the compiled block values failed (status {status})")
    return torch.from_numpy(out)
