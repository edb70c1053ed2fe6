r"""Fast passes over all ``n x m`` Euclidean costs: float32 tiles, certified margins.

A pass computes, for every row ``i``, :math:`\min_j (c_{ij} + p_j)` for a potential
``p`` on the columns (and, for pricing, a few columns attaining small values). It is
the one primitive behind c-transforms at scale; the transposed instance
(:attr:`TiledCost.T`) serves the other direction,
:math:`\max_i (u_i - c_{ij}) = -\min_i (c_{ij} - u_i)`.

Speed: squared distances are dot products of augmented vectors,
:math:`[x, (1-\kappa)|x|^2, 1] \cdot [-2y, 1, (1-\kappa)|y|^2]`, followed by the square
root, the potential and the reduction. On a CPU a small C kernel
(:mod:`wassnet.ot.native_tiles`) fuses all of it in registers, with no Python call per
tile (``backend="native"``); elsewhere each ``tile x tile`` block is one matrix product
whose epilogue ``torch.compile`` fuses (Triton on a GPU), or plain torch operations
(``backend="eager"``). Measured on 2 CPU cores with the C kernel: the float32 screen
alone about 4 s per ``10^10`` pairs in ``d = 16`` and 10 s in ``d = 64``; a whole
:meth:`row_pass` up to twice that, and 1.4-2.2x faster than with the compiled kernels
(BENCHMARKS.md, ``bench_passes``).

Certification: the values returned by :meth:`TiledCost.row_min` are **proven lower
bounds** of :math:`\min_j (c_{ij} + p_j)` for the exact costs of the float64 input
points and the potential as rounded to float32 (:meth:`TiledCost.round_potential`):

* the points are centred in float64 and rounded to float32, which moves each distance
  by at most :math:`u (|x_i| + |y_j|)` (:math:`u = 2^{-24}`);
* the product's rounding is at most :math:`\gamma_{d+2}` times the sum of the terms'
  magnitudes, :math:`\le 2 (|x|^2 + |y|^2)` (any summation order, fused or not), so
  subtracting :math:`\kappa (|x|^2 + |y|^2)` with :math:`\kappa = 4 (d + 4) u` makes the
  computed square a lower bound of the true one;
* the square root and the addition of :math:`p_j` round by a relative :math:`u` each:
  one uniform margin :math:`\Delta = 2u (3R + P)` (``R`` the two clouds' radii summed,
  ``P = max |p|``) subtracted in float64 covers all of it.

The loss of tightness is about :math:`\kappa |x|^2 / c + \Delta`, a few ``1e-6``
relative on ordinary data. Before a C or compiled kernel is trusted, its first tile is
checked against float64 arithmetic; a kernel that breaks the margin is not used. The
C kernel keeps subnormals (it clears flush-to-zero while it runs): the margin charges
an underflowing product at most ``2^-150``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch

from wassnet.errors import InputError
from wassnet.ot.costs import direct_cost_bounds_torch
from wassnet.ot.native_tiles import (
    PANEL,
    block_minima,
    block_values,
    native_tiles_available,
    pack_columns,
)
from wassnet.ot.problem import TransportProblem

__all__ = ["BACKENDS", "TiledCost"]

Backend = Literal["auto", "native", "compiled", "eager"]
#: The ways a pass can run, fastest first on a CPU (see :class:`TiledCost`).
BACKENDS: tuple[str, ...] = ("auto", "native", "compiled", "eager")

_UNIT = 2.0**-24  # float32 unit roundoff
_PAD = 1e30  # potential of padding columns: never a minimum (finite: fast-math safe)


def _tile_min(xa: torch.Tensor, ya_t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    sq = xa @ ya_t
    return (sq.clamp_min(0).sqrt() + p).amin(1)


def _tile_argmin(
    xa: torch.Tensor, ya_t: torch.Tensor, p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    sq = xa @ ya_t
    return (sq.clamp_min(0).sqrt() + p).min(1)


def _tile_block_min(
    xa: torch.Tensor, ya_t: torch.Tensor, p: torch.Tensor, block: int
) -> torch.Tensor:
    sq = xa @ ya_t
    r = sq.clamp_min(0).sqrt() + p
    return r.view(r.shape[0], r.shape[1] // block, block).amin(-1)  # values only: 2x faster


_KERNELS: dict[str, Callable] = {
    "min": _tile_min,
    "argmin": _tile_argmin,
    "block_min": _tile_block_min,
}
_COMPILED: dict[str, Callable] = {}
_BROKEN: set[str] = set()


def _compiled(name: str) -> Callable | None:
    """The ``torch.compile``-d kernel ``name``, or None where compiling is unavailable."""
    if name in _BROKEN or os.environ.get("WASSNET_NO_COMPILE"):
        return None
    if name not in _COMPILED:
        import logging

        # compiling on a CPU-only machine logs a harmless "No CUDA runtime" warning
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        try:
            _COMPILED[name] = torch.compile(_KERNELS[name], dynamic=False)
        except Exception:  # no compiler, unsupported platform: eager is correct
            _BROKEN.add(name)
            return None
    return _COMPILED[name]


def _mark_broken(name: str, why: str) -> None:
    _BROKEN.add(name)
    _COMPILED.pop(name, None)
    warnings.warn(
        f"wassnet: the compiled {name!r} kernel is not used ({why}); running eager "
        "torch instead (correct, slower)",
        RuntimeWarning,
        stacklevel=3,
    )


def _resolve_backend(backend: str, device: torch.device, tile: int, pairs: int) -> str:
    """The backend a :class:`TiledCost` runs: ``auto`` resolved, ``native`` where it
    cannot run replaced (with a warning when it was asked for)."""
    native_fits = device.type == "cpu" and tile % PANEL == 0 and "native" not in _BROKEN
    if backend == "auto" and native_fits and native_tiles_available():
        return "native"
    if backend == "native":
        if native_fits and native_tiles_available():
            return "native"
        warnings.warn(
            "wassnet: the native pass is not available here (it needs a CPU, a C compiler "
            f"and tiles of a multiple of {PANEL}); running torch kernels instead",
            RuntimeWarning,
            stacklevel=3,
        )
    if backend in ("auto", "native"):
        return "compiled" if pairs >= 2**27 else "eager"
    return backend


def _augment(points32: torch.Tensor, kappa: float, first: bool) -> torch.Tensor:
    """``[x, (1-k)|x|^2, 1]`` (first cloud) or ``[-2y, 1, (1-k)|y|^2]`` (second)."""
    sq = (points32.double() ** 2).sum(1) * (1.0 - kappa)
    ones = torch.ones_like(sq)
    if first:
        cols = [points32, sq.float()[:, None], ones.float()[:, None]]
    else:
        cols = [-2.0 * points32, ones.float()[:, None], sq.float()[:, None]]
    return torch.cat(cols, 1).contiguous()


class TiledCost:
    """Euclidean costs of a :class:`TransportProblem` (scaled units), passed over in tiles.

    Args:
        problem: the two clouds ``x`` ``[n, d]`` and ``y`` ``[m, d]``.
        device: where the passes run (default CPU).
        backend: ``"native"`` (the C pass of :mod:`wassnet.ot.native_tiles`, CPU
            only, tiles a multiple of 16), ``"compiled"`` (``torch.compile``-fused
            tiles), ``"eager"`` (plain torch), or ``"auto"``: native on a CPU where it
            compiles, else compiled when ``n m >= 2^27`` (below, compiling costs more
            than it saves), else eager. A native or compiled kernel that cannot be
            built, or breaks the certified margin on its first tile, is replaced by
            the next one with a warning. ``WASSNET_NO_NATIVE=1`` and
            ``WASSNET_NO_COMPILE=1`` rule those out.
        tile: rows and columns per tile (default 1024 on CPU, 4096 on a GPU).

    Memory: ``O((n + m) d)`` plus one tile.
    """

    def __init__(
        self,
        problem: TransportProblem,
        *,
        device: torch.device | str | None = None,
        backend: Backend = "auto",
        tile: int | None = None,
        _center: torch.Tensor | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if not problem.norm.is_euclidean:
            raise InputError(
                f"fused tiles compute Euclidean costs; the {problem.metric} metric is "
                "served by PairwiseCost (float64 chunks)"
            )
        self.problem = problem
        dev = torch.device(device) if device is not None else torch.device("cpu")
        x64 = torch.as_tensor(problem.x, dtype=torch.float64, device=dev)
        y64 = torch.as_tensor(problem.y, dtype=torch.float64, device=dev)
        center = torch.cat([x64, y64]).mean(0) if _center is None else _center
        self._center = center
        self.device = dev
        self.n, self.m, self.dim = len(x64), len(y64), x64.shape[1]
        self.tile = tile or (4096 if dev.type == "cuda" else 1024)
        self.backend = _resolve_backend(backend, dev, self.tile, self.n * self.m)
        self._x64, self._y64 = x64, y64  # exact scaled points, for exact recomputation
        x32, y32 = (x64 - center).float(), (y64 - center).float()
        self.kappa = 4.0 * (self.dim + 4) * _UNIT
        # float32 products below the normal range err by up to 2^-150 each (absolute):
        # at most (d + 4) 2^-149 on a square, so 2^-70 sqrt(d + 4) on a distance
        self._underflow = 2.0**-70 * float(np.sqrt(self.dim + 4))
        # R: the radii of both float32 clouds, summed (rounded up generously)
        radius_x, radius_y = x32.double().norm(dim=1).max(), y32.double().norm(dim=1).max()
        self.radius = float(radius_x + radius_y) * (1 + 1e-6)
        t = self.tile
        self._xa = self._pad(_augment(x32, self.kappa, first=True), t)
        self._ya_t = [
            block.T.contiguous()
            for block in self._pad(_augment(y32, self.kappa, first=False), t).split(t)
        ]
        self._ya_full = torch.cat(self._ya_t, 1)  # [d + 2, padded m], for block gathers
        self._panels = pack_columns(self._ya_full) if self.backend == "native" else None
        self._checked: set[str] = set()
        self._transposed: TiledCost | None = None

    @staticmethod
    def _pad(a: torch.Tensor, t: int) -> torch.Tensor:
        extra = (-len(a)) % t
        return torch.cat([a, a.new_zeros(extra, a.shape[1])]) if extra else a

    @property
    def T(self) -> TiledCost:
        """The same costs with the roles of the clouds swapped (built once, kept)."""
        if self._transposed is None:
            self._transposed = TiledCost(
                self.problem.transposed(),
                device=self.device,
                backend=self.backend,
                tile=self.tile,
                _center=self._center,
            )
            self._transposed._transposed = self
        return self._transposed

    def round_potential(self, p: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``p`` (length ``m``) rounded to float32 and returned as float64: the exact
        potential that :meth:`row_min` certifies against."""
        p = torch.as_tensor(p).to(device=self.device)
        if p.shape != (self.m,):
            raise InputError(f"potential must have shape ({self.m},), got {tuple(p.shape)}")
        if not torch.isfinite(p).all():
            raise InputError("potential contains NaN or inf")
        return p.float().double()

    def margin(self, p: torch.Tensor) -> float:
        """The uniform rounding margin for potential ``p`` (see the module docstring)."""
        relative = 2.0 * _UNIT * (3.0 * self.radius + float(p.abs().max())) * (1 + 1e-6)
        return relative + self._underflow

    def _padded_potential(self, p64: torch.Tensor) -> list[torch.Tensor]:
        t = self.tile
        p = torch.full((len(self._ya_t) * t,), _PAD, dtype=torch.float32, device=self.device)
        p[: self.m] = p64.float()
        return list(p.split(t))

    def _kernel(self, name: str) -> Callable:
        if self.backend == "compiled":
            fn = _compiled(name)
            if fn is not None:
                return fn
        return _KERNELS[name]

    def _verified(
        self, name: str, fn: Callable, delta: float, *args: object
    ) -> tuple[Callable, object]:
        """Run ``fn`` on a first tile; a compiled kernel must compile, run, and respect
        the certified inequality against float64 arithmetic on that tile."""
        eager = _KERNELS[name]
        if fn is eager or name in self._checked:
            return fn, fn(*args)
        try:
            out = fn(*args)
        except Exception as exc:  # no working compiler: eager is correct
            _mark_broken(name, f"{type(exc).__name__} while compiling")
            return eager, eager(*args)
        got = out if name in ("min", "block_min") else out[0]
        block = args[3] if name == "block_min" else None
        if not self._respects_margin(got, args[0], args[1], args[2], block, delta):
            _mark_broken(name, "its first tile broke the certified rounding margin")
            return eager, eager(*args)
        self._checked.add(name)
        return fn, out

    def _respects_margin(
        self,
        got: torch.Tensor,
        xa: torch.Tensor,
        ya_t: torch.Tensor,
        p: torch.Tensor,
        block: int | None,
        delta: float,
    ) -> bool:
        """Whether ``got - delta`` is below the float64 minima of ``c_ij + p_j`` over the
        tile's columns (in blocks of ``block``, or all of them)."""
        d = self.dim
        x, y = xa[:, :d].double(), -0.5 * ya_t[:d].T.double()  # the float32 points, exactly
        true = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") + p.double()
        true = true.amin(1) if block is None else true.view(len(x), -1, block).amin(-1)
        return bool((got.double().view_as(true) - delta <= true).all())

    def _native_ready(self, pots: torch.Tensor, delta: float) -> bool:
        """Whether the native pass serves this instance: once per instance, its first
        tile must respect the certified margin (else it is dropped, with a warning,
        for the torch kernels)."""
        if self.backend != "native":
            return False
        if "native" in self._checked:
            return True
        t = self.tile
        got = block_minima(self._xa[:t], self._panels[: t // PANEL], pots[:t].numpy(), t)
        if not self._respects_margin(got, self._xa[:t], self._ya_t[0], pots[:t], t, delta):
            _BROKEN.add("native")
            warnings.warn(
                "wassnet: the native pass is not used (its first tile broke the certified "
                "rounding margin); running torch kernels instead (correct, slower)",
                RuntimeWarning,
                stacklevel=3,
            )
            self.backend = "compiled" if self.n * self.m >= 2**27 else "eager"
            return False
        self._checked.add("native")
        return True

    @torch.no_grad()
    def row_min(
        self, p: torch.Tensor, *, argmin: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r"""Certified lower bounds of :math:`\min_j (c_{ij} + p_j)` for every row.

        ``p`` must already be float32-representable (:meth:`round_potential`); the
        result is float64 and at most the exact value for every row. With
        ``argmin=True`` also returns the column attaining the float32 minimum.
        """
        p64 = self.round_potential(p)
        delta = self.margin(p64)
        pots = self._padded_potential(p64)
        full = torch.cat(pots)
        if not argmin and self._native_ready(full, delta):
            width = len(full)  # one block: the whole row
            values = block_minima(self._xa[: self.n], self._panels, full.numpy(), width)[:, 0]
            return values.double() - delta  # (the C pass needs no padded rows)
        name = "argmin" if argmin else "min"
        fn = self._kernel(name)
        t = self.tile
        values = torch.empty(len(self._xa), dtype=torch.float32, device=self.device)
        index = torch.empty(len(self._xa), dtype=torch.long, device=self.device)
        with _full_float32():
            for r0 in range(0, self.n, t):
                xa = self._xa[r0 : r0 + t]
                best = torch.full((t,), float("inf"), device=self.device)
                best_j = torch.zeros(t, dtype=torch.long, device=self.device)
                for c, (ya_t, pc) in enumerate(zip(self._ya_t, pots, strict=True)):
                    if r0 == 0 and c == 0:
                        fn, out = self._verified(name, fn, delta, xa, ya_t, pc)
                    else:
                        out = fn(xa, ya_t, pc)
                    if argmin:
                        val, idx = out
                        better = val < best
                        best = torch.where(better, val, best)
                        best_j = torch.where(better, idx + c * t, best_j)
                    else:
                        best = torch.minimum(best, out)
                values[r0 : r0 + t] = best
                index[r0 : r0 + t] = best_j
        lower = values[: self.n].double() - delta
        return (lower, index[: self.n]) if argmin else lower

    def _block_size(self, block: int) -> int:
        t = self.tile
        block = max(1, min(block, t))
        while t % block:
            block //= 2
        return block

    def _block_minima(
        self, p32: torch.Tensor, block: int, rows: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """For each tile of rows (of ``rows = (first, last)`` when given): ``(first_row,
        vals)``, the float32 minima of ``c_ij + p_j`` over consecutive blocks of
        ``block`` columns (padded columns included, never minimal)."""
        first, last = (0, self.n) if rows is None else rows
        pots = self._padded_potential(p32)
        t = self.tile
        fn = self._kernel("block_min")
        per = t // block
        n_blocks = len(self._ya_t) * per
        delta = self.margin(p32)
        full = torch.cat(pots)
        if block % PANEL == 0 and self._native_ready(full, delta):
            full_np = full.numpy()
            for r0 in range(first, last, t):  # the C pass needs no padded rows
                yield (
                    r0,
                    block_minima(self._xa[r0 : min(r0 + t, last)], self._panels, full_np, block),
                )
            return
        with _full_float32():
            for r0 in range(first, last, t):
                xa = self._xa[r0 : r0 + t]
                vals = torch.empty((t, n_blocks), dtype=torch.float32, device=self.device)
                for c, (ya_t, pc) in enumerate(zip(self._ya_t, pots, strict=True)):
                    if r0 == 0 and c == 0:
                        fn, v = self._verified("block_min", fn, delta, xa, ya_t, pc, block)
                    else:
                        v = fn(xa, ya_t, pc, block)
                    vals[:, c * per : (c + 1) * per] = v
                yield r0, vals[: min(t, last - r0)]

    def _within(
        self, rows: torch.Tensor, blocks: torch.Tensor, pots: torch.Tensor, block: int
    ) -> torch.Tensor:
        """``[len(rows), block]`` float32 values of ``c_ij + p_j`` for every column of
        block ``blocks[k]`` of row ``rows[k]`` (the same certified inequality as the
        fused pass: any evaluation order). Pairs are grouped by block, so each block's
        columns are read once: one batched product of ``[groups, rows, d + 2]`` by
        ``[groups, d + 2, block]``."""
        out = torch.empty((len(rows), block), dtype=torch.float32, device=self.device)
        if len(rows) == 0:
            return out
        if self.backend == "native" and block % PANEL == 0:
            return block_values(self._xa, rows, blocks, self._panels, pots.numpy(), block)
        order = torch.argsort(blocks)
        r_sorted, b_sorted = rows[order], blocks[order]
        groups, counts = torch.unique_consecutive(b_sorted, return_counts=True)
        group = torch.repeat_interleave(torch.arange(len(groups), device=self.device), counts)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(rows), device=self.device) - first[group]
        x = torch.zeros(
            (len(groups), int(counts.max()), self.dim + 2), dtype=torch.float32, device=self.device
        )
        x[group, slot] = self._xa[r_sorted]
        ya_blocks = self._ya_full.view(self.dim + 2, -1, block).permute(1, 0, 2)
        with _full_float32():
            sq = torch.bmm(x, ya_blocks[groups])[group, slot]
        out[order] = sq.clamp_min(0).sqrt() + pots.view(-1, block)[b_sorted]
        return out

    @staticmethod
    def _ranked(vals: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's ``k`` (at least 1) smallest block minima, ascending, and their blocks."""
        kk = min(max(k, 1), vals.shape[1])
        ranked = vals.topk(kk, dim=1, largest=False)
        return ranked.values, ranked.indices

    def _top_blocks(
        self,
        r0: int,
        best: torch.Tensor,
        pots: torch.Tensor,
        block: int,
        wanted: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each row of a tile: its best blocks ``best`` (``[t, kk]``, ascending, from
        :meth:`_ranked`), the float32 values of their columns, and each block's
        minimizing column. Only the best block is evaluated for rows not ``wanted``
        (their other columns repeat the first). Returns ``(blocks [t, kk], values
        [pairs, block], owners [pairs], cols [t, kk])`` with the best block of every row
        first among the pairs."""
        t, kk = best.shape
        rows = torch.arange(t, device=self.device)
        more = rows if wanted is None else rows[wanted]
        more_rows = more.repeat_interleave(kk - 1)
        owners = torch.cat([rows, more_rows])
        blocks = torch.cat([best[:, 0], best[more, 1:].reshape(-1)])
        values = self._within(owners + r0, blocks, pots, block)
        minimizers = blocks * block + values.argmin(1)
        cols = minimizers[:t, None].repeat(1, kk)
        cols[more_rows, torch.arange(1, kk, device=self.device).repeat(len(more))] = minimizers[t:]
        return blocks, values, owners, cols.clamp_max_(self.m - 1)

    @torch.no_grad()
    def row_candidates(self, p: torch.Tensor, k: int, block: int = 32) -> torch.Tensor:
        r"""``[n, k]`` columns with small :math:`c_{ij} + p_j` for every row (heuristic).

        The minima of consecutive blocks of ``block`` columns are ranked and the ``k``
        best blocks' minimizers returned: ``k`` distinct columns near the ``k``
        smallest (exactly the ``k`` smallest when they lie in distinct blocks). Used
        to choose candidate pairs; nothing certified rests on it.
        """
        p64 = self.round_potential(p)
        block = self._block_size(block)
        k = max(1, min(k, self.m))
        pots = torch.cat(self._padded_potential(p64))
        out = torch.empty((self.n, k), dtype=torch.long, device=self.device)
        for r0, vals in self._block_minima(p64, block):
            *_, cols = self._top_blocks(r0, self._ranked(vals, k)[1], pots, block)
            out[r0 : r0 + len(vals)] = _pad_columns(cols, k)
        return out

    def _float64_potential(self, p: torch.Tensor) -> torch.Tensor:
        """``p`` as a float64 tensor on this device, checked (length ``m``, finite)."""
        p64 = torch.as_tensor(p).to(device=self.device, dtype=torch.float64)
        if p64.shape != (self.m,):
            raise InputError(f"potential must have shape ({self.m},), got {tuple(p64.shape)}")
        if not bool(torch.isfinite(p64).all()):
            raise InputError("potential contains NaN or inf")
        return p64

    def tile_rows(self, rows: tuple[int, int] | None) -> tuple[int, int]:
        """``rows = (first, last)`` checked to start and end on tiles (``last`` may be
        ``n``; an empty range anywhere); ``None``: all rows."""
        first, last = (0, self.n) if rows is None else rows
        whole = first % self.tile == 0 and (last % self.tile == 0 or last == self.n)
        if not 0 <= first <= last <= self.n or (first < last and not whole):
            raise InputError(f"rows {first}:{last} do not start and end on tiles of {self.tile}")
        return first, last

    @torch.no_grad()
    def row_pass(
        self,
        p: torch.Tensor,
        k: int = 0,
        below: torch.Tensor | None = None,
        block: int = 64,
        max_columns: int = 64,
        rows: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Certified lower bounds of :math:`\min_j (c_{ij} + p_j)`, **tight to float64**,
        at the speed of a float32 pass, and ``[n, k]`` pricing candidates.

        The float32 pass (potential rounded to float32) is a screen. Every float32
        evaluation :math:`f_{ij}` of :math:`c_{ij} + p_j`, in any order, is a certified
        lower bound once :math:`\Delta' = \Delta + \max_j |p_j - \mathrm{fl}_{32}(p_j)|`
        is subtracted (:meth:`margin`); it may be *far* below the exact value (the
        expansion loses digits on close pairs), never above it by more than that. Let
        :math:`U_i` be a certified upper bound of the exact value at the float32
        minimizer (direct differences, float64). A column with
        :math:`f_{ij} - \Delta' > U_i` cannot be the exact minimizer. Blocks of ``block``
        columns whose float32 minimum passes the test are re-evaluated column by column
        in float32, and the columns that pass are recomputed exactly: certified float64
        lower bounds of the costs (:func:`~wassnet.ot.costs.direct_cost_bounds_torch`)
        plus the float64 potential, the minimum rounded down. Rows with more than
        ``max_columns`` such columns are recomputed too while a tile's exact pairs stay
        within :data:`EXACT_PAIR_VALUES` values; past that a row keeps the float32
        bound: its minimum minus :math:`\Delta'`.

        Candidates: the minimizers of the row's ``k`` best blocks. With ``below``, only
        rows whose float32 minimum may be below ``below_i`` get them (the others repeat
        their minimizer): pricing needs only rows with a negative reduced cost.

        ``rows = (first, last)``: those rows only, on whole tiles (:meth:`tile_rows`):
        the same values and candidates as a pass over all rows (``below`` still indexed
        over all ``n`` rows); :mod:`wassnet.ot.sharded` splits passes across ranks so.
        """
        p64 = self._float64_potential(p)
        p32 = p64.float().double()
        delta = (self.margin(p32) + float((p64 - p32).abs().max())) * (1 + 1e-6)
        block = self._block_size(block)
        first, last = self.tile_rows(rows)
        lower = torch.empty(last - first, dtype=torch.float64, device=self.device)
        cand = torch.empty((last - first, k), dtype=torch.long, device=self.device)
        pots = torch.cat(self._padded_potential(p32))
        offsets = torch.arange(block, device=self.device)
        for r0, vals in self._block_minima(p32, block, (first, last)):
            local = torch.arange(len(vals), device=self.device)
            ranked, best = self._ranked(vals, k)
            row_min = ranked[:, 0].double()
            wanted = None
            if below is not None:
                wanted = row_min - delta < below[r0 : r0 + len(vals)].to(self.device)
            blocks, values, owners, cols = self._top_blocks(r0, best, pots, block, wanted)
            j_star = cols[:, 0]  # the minimizer of the best block: the float32 minimizer
            _, hi = direct_cost_bounds_torch(self._x64[r0 + local], self._y64[j_star])
            upper = torch.nextafter(hi + p64[j_star], torch.full_like(hi, torch.inf))
            threshold = upper + delta
            # compared in float32 against the threshold rounded up: a superset of blocks
            up32 = torch.nextafter(threshold.float(), torch.tensor(torch.inf, device=self.device))
            near = vals <= up32[:, None]
            near[owners, blocks] = False  # those blocks are evaluated already
            r_idx, b_idx = near.nonzero(as_tuple=True)
            values = torch.cat([values, self._within(r_idx + r0, b_idx, pots, block)])
            owners = torch.cat([owners, r_idx])
            start = torch.cat([blocks, b_idx]) * block
            pair, offset = (values.double() <= threshold[owners, None]).nonzero(as_tuple=True)
            rr, cc = owners[pair], start[pair] + offsets[offset]
            exact_rows = _exact_rows(torch.bincount(rr, minlength=len(vals)), max_columns, self.dim)
            keep = exact_rows[rr] & (cc < self.m)
            rr, cc = rr[keep], cc[keep]
            lo, _ = direct_cost_bounds_torch(self._x64[rr + r0], self._y64[cc])
            exact, argmin = _exact_minima(rr, cc, lo + p64[cc], len(vals))
            bound = torch.where(exact_rows, exact, row_min - delta)
            at = slice(r0 - first, r0 - first + len(vals))
            lower[at] = torch.nextafter(bound, torch.full_like(bound, -torch.inf))
            if k:  # the exact minimizer first: the float32 ranking misses it on near ties
                first_col = torch.where(argmin >= 0, argmin, cols[:, 0])
                cand[at] = _pad_columns(torch.cat([first_col[:, None], cols], 1), k)
        return lower, cand

    @torch.no_grad()
    def col_pass(
        self, q: torch.Tensor, k: int = 0, cols: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Certified upper bounds of :math:`\max_i (q_i - c_{ij})` (tight to float64) and
        ``[m, k]`` rows of largest :math:`q_i - c_{ij}`: :meth:`row_pass` on the
        transposed costs with potential ``-q`` (for the columns ``cols`` only, when given)."""
        q64 = -torch.as_tensor(q).to(self.device, torch.float64)
        lower, cand = self.T.row_pass(q64, k, rows=cols)
        return -lower, cand


#: Per tile of rows, the exact recomputation of :meth:`TiledCost.row_pass` serves rows
#: with more than ``max_columns`` near columns while their pairs times the dimension stay
#: under this many (float64 values gathered: 256 MB). Measured: in d = 2 the float32
#: margin leaves hundreds of near columns on many rows once the potentials are nearly
#: optimal; keeping their float32 bounds stalled brackets at ~2e-7 relative.
EXACT_PAIR_VALUES = 2**25


def _exact_rows(counts: torch.Tensor, max_columns: int, dim: int) -> torch.Tensor:
    """Which rows of a tile are recomputed exactly, given each row's near-column count:
    those with at most ``max_columns``, then the others, fewest first, while the total
    stays within :data:`EXACT_PAIR_VALUES` (the rest keep their float32 bound)."""
    exact = counts <= max_columns
    budget = EXACT_PAIR_VALUES // max(dim, 1) - int(counts[exact].sum())
    rest = torch.nonzero(~exact).flatten()
    if len(rest) and budget > 0:
        ordered = rest[torch.argsort(counts[rest])]
        exact[ordered[torch.cumsum(counts[ordered], 0) <= budget]] = True
    return exact


def _exact_minima(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the minimum of ``values`` over its pairs (``inf`` without any) and a
    column attaining it (``-1`` without any)."""
    exact = torch.full((n_rows,), torch.inf, dtype=values.dtype, device=values.device)
    exact.scatter_reduce_(0, rows, values, "amin")
    argmin = torch.full((n_rows,), -1, dtype=torch.long, device=values.device)
    at_min = values == exact[rows]
    argmin[rows[at_min]] = cols[at_min]
    return exact, argmin


def _pad_columns(cols: torch.Tensor, k: int) -> torch.Tensor:
    """``[rows, k]``: the columns, the first repeated when fewer than ``k`` exist."""
    if cols.shape[1] >= k:
        return cols[:, :k]
    return torch.cat([cols, cols[:, :1].expand(-1, k - cols.shape[1])], 1)


class _full_float32:
    """Disable reduced-precision float32 matmuls (TF32, bf16) for certified passes."""

    def __enter__(self) -> None:
        self._precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        self._tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        torch.set_float32_matmul_precision(self._precision)
        torch.backends.cuda.matmul.allow_tf32 = self._tf32
