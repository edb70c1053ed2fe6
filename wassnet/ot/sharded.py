r"""Passes over all pairs split by rows across the ranks of a ``torch.distributed`` job.

A certified W1 bracket between samples (:mod:`wassnet.ot.sparse`) alternates passes
over all ``n m`` pairs with sparse solves. A pass is independent across rows: row
``i``'s certified minimum :math:`\min_j (c_{ij} + p_j)` and its pricing candidates
depend on row ``i`` and the column potential only. :class:`ShardedCost` has the pass
interface of :class:`~wassnet.ot.costs.PairwiseCost` and
:class:`~wassnet.ot.tiles.TiledCost` (``problem``, ``n``, ``m``, ``device``,
``row_pass``, ``col_pass``) and splits each pass into contiguous row ranges, one per
rank (:func:`shard_rows`), cut on whole tiles (or float64 chunks): every rank computes
the very tiles a single process computes, with the same potential and the same
global constants (centre, radii, margins), so the gathered results are **bit for bit**
those of one process; the certification arithmetic is unchanged, only spread out.

How a job runs (:func:`run_sharded`): rank 0 runs the whole computation -- the warm
start, the sparse solves, every decision of the time budget -- and each of its passes
over all pairs is a request: the potential (and the pricing threshold) broadcast,
each rank's rows computed, the row minima (bits of float64) and candidates gathered
to rank 0 in row order. The other ranks serve those requests until rank 0 ends and
broadcasts its result. Hence all ranks stop together, a time budget is decided once,
and a single process is the same code with one shard and no messages.

The column pass (:meth:`ShardedCost.col_pass`) of fused tiles is a row pass of the
transposed costs, split by rows of B. The float64 column pass of
:class:`~wassnet.ot.costs.PairwiseCost` (a maximum over chunks of rows with a running
top-``k`` merge, whose ties a split could reorder) runs on rank 0 alone: one pass per
column generation, on small or non-Euclidean problems.

What is not split: every rank loads both clouds and builds the cost object whole
(``O((n + m) d)`` memory; the shared constants -- scale, centre, radii -- need every
point), a float64 matrix held in memory (up to 64M pairs) on every rank, and the warm
start's subsample solves and their extension to all points run on rank 0 alone.

Traffic: :attr:`ShardedCost.traffic` lists the bytes each pass sent over the network
(potentials broadcast, gathered rows, padded as sent); each pass is also logged at
DEBUG level on the logger ``wassnet.ot.sharded``.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import logging
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from wassnet import distributed
from wassnet.errors import InputError, WassnetError
from wassnet.ot.costs import PairwiseCost
from wassnet.ot.problem import TransportProblem
from wassnet.ot.tiles import TiledCost

__all__ = [
    "ShardedCost",
    "all_gather_objects",
    "job_rank",
    "ranks",
    "run_sharded",
    "shard_rows",
]

T = TypeVar("T")
LOG = logging.getLogger(__name__)
#: How long a rank waits for rank 0's next request: a sparse solve between two passes
#: may outlast the process group's timeout by far (a dead rank 0 still ends the wait at
#: once: its connections close, and torchrun stops the job).
COMMAND_TIMEOUT = datetime.timedelta(days=7)


def shard_rows(n: int, ranks: int, quantum: int) -> list[tuple[int, int]]:
    """``ranks`` contiguous row ranges ``(first, last)`` covering ``0..n`` in order,
    balanced in whole units of ``quantum`` rows (each ``first`` a multiple of
    ``quantum``; ranges may be empty)."""
    units = -(-n // max(quantum, 1))
    cuts = [min(n, quantum * (units * r // ranks)) for r in range(ranks + 1)]
    return list(itertools.pairwise(cuts))


def _fingerprint(problem: TransportProblem) -> str:
    """A digest of the problem's shape, scale and points (sampled rows)."""
    digest = hashlib.sha256(repr((problem.n, problem.m, problem.dim, problem.metric)).encode())
    for points in (problem.x, problem.y):
        step = max(1, len(points) // 4096)
        digest.update(np.ascontiguousarray(points[::step], dtype=np.float64).tobytes())
    return digest.hexdigest()


# -- the channel between rank 0 and the other ranks ----------------------------------------


_COMMAND_GROUPS: dict[int, Any] = {}  # one gloo group for commands per process group


class _Link:
    """Rank 0's requests to the other ranks: commands (pickled, on a gloo group with a
    long timeout) and payloads (tensors, on the job's group: gloo or nccl)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist, self.rank, self.size = dist, dist.get_rank(), dist.get_world_size()
        key = id(dist.group.WORLD)
        if key not in _COMMAND_GROUPS:  # every rank creates it, in the same order
            _COMMAND_GROUPS[key] = dist.new_group(backend="gloo", timeout=COMMAND_TIMEOUT)
        self.commands = _COMMAND_GROUPS[key]
        nccl = distributed.backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else None

    def command(self, message: object = None) -> tuple[Any, int]:
        """Rank 0's ``message`` on every rank (call it on all ranks), and the bytes
        rank 0 sent (its pickle, to each other rank)."""
        box = [message]
        self.dist.broadcast_object_list(box, src=0, group=self.commands)
        sent = len(pickle.dumps(message)) * (self.size - 1) if self.rank == 0 else 0
        return box[0], sent

    def broadcast(self, tensor: torch.Tensor | None, length: int) -> tuple[torch.Tensor, int]:
        """Rank 0's float64 ``tensor`` (``length`` values) on every rank, and the bytes
        sent."""
        device = self.device or torch.device("cpu")
        if tensor is not None:
            buf = tensor.to(device, torch.float64).contiguous()
        else:
            buf = torch.empty(length, dtype=torch.float64, device=device)
        self.dist.broadcast(buf, src=0)
        return buf, 8 * length * (self.size - 1)

    def gather(self, mine: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor | None, int]:
        """Every rank's ``[sizes[r], w]`` int32 rows, concatenated in rank order on
        rank 0 (``None`` elsewhere; each travels padded to the longest), and the bytes
        sent to rank 0."""
        device = self.device or torch.device("cpu")
        padded = torch.zeros((max(sizes), mine.shape[1]), dtype=torch.int32, device=device)
        padded[: len(mine)] = mine.to(device)
        parts = [torch.empty_like(padded) for _ in sizes] if self.rank == 0 else None
        self.dist.gather(padded, parts, dst=0)
        sent = padded.numel() * 4 * (self.size - 1)
        if parts is None:
            return None, sent
        return torch.cat([part[:s] for part, s in zip(parts, sizes, strict=True)]), sent

    def all_gather(self, obj: object) -> list[Any]:
        """Every rank's ``obj`` (pickled), in rank order, on every rank."""
        out: list[Any] = [None] * self.size
        self.dist.all_gather_object(out, obj, group=self.commands)
        return out


_LEADING: list[_Link] = []  # rank 0's link while it runs a sharded computation


def _leading() -> _Link | None:
    return _LEADING[-1] if _LEADING else None


def _job_link() -> _Link | None:
    """The link of a running job of more than one process (``None`` otherwise)."""
    if distributed.world_size() < 2 or not distributed.active():
        return None
    return _Link()


def job_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of a running job of more than one process, else ``(0, 1)``."""
    if distributed.world_size() < 2 or not distributed.active():
        return 0, 1
    return distributed.rank(), distributed.world_size()


def ranks() -> int:
    """How many ranks share the passes of the computation running now (1 outside
    :func:`run_sharded`, or in one process)."""
    link = _leading()
    return 1 if link is None else link.size


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process);
    waits as long as rank 0's commands do (:data:`COMMAND_TIMEOUT`)."""
    link = _job_link()
    return [obj] if link is None else link.all_gather(obj)


# -- the passes --------------------------------------------------------------------------


def _spec(cost: PairwiseCost | TiledCost) -> dict[str, Any]:
    """What another rank needs to build the same cost object."""
    if isinstance(cost, TiledCost):
        return {"kind": "tiled", "backend": cost.backend, "tile": cost.tile}
    return {"kind": "pairwise", "held": cost.held, "chunk_rows": cost.chunk_rows}


def _build(problem: TransportProblem, spec: dict[str, Any], device: torch.device) -> Any:
    """The cost object rank 0 described by :func:`_spec`, built on this rank."""
    if spec["kind"] == "tiled":
        return TiledCost(problem, device=device, backend=spec["backend"], tile=spec["tile"])
    cost = PairwiseCost(problem, device=device, dense_bytes=2**62 if spec["held"] else 0)
    if cost.chunk_rows != spec["chunk_rows"]:
        raise WassnetError("this rank's float64 chunks differ from rank 0's")
    return cost


#: Rows a shard of a held float64 matrix is cut in (any count: each row is read alone).
HELD_QUANTUM = 8


def _quantum(cost: PairwiseCost | TiledCost) -> int:
    """The rows a shard is cut in: whole tiles, or whole float64 chunks (computed ones:
    the same matrix products as one process)."""
    if isinstance(cost, TiledCost):
        return cost.tile
    return HELD_QUANTUM if cost.held else cost.chunk_rows


def _local_pass(
    cost: PairwiseCost | TiledCost,
    side: str,
    p: torch.Tensor,
    k: int,
    below: torch.Tensor | None,
    rows: tuple[int, int],
) -> torch.Tensor:
    """``[rows, 2 + k]`` int32: the bits of the rows' certified float64 minima (two
    words each), then their candidates (column indices, below ``2^31``). ``side``:
    ``"row"`` (rows of A) or ``"col"`` (rows of B, the transposed fused tiles)."""
    target = cost.T if side == "col" else cost  # type: ignore[union-attr]
    p = p.to(cost.device)
    below = None if below is None else below.to(cost.device)
    lower, cand = target.row_pass(p, k, below=below, rows=rows)
    bits = lower.contiguous().view(torch.int32).view(-1, 2)
    return torch.cat([bits, cand.to(torch.int32)], 1)


class ShardedCost:
    """The passes of ``cost`` (a :class:`PairwiseCost` or :class:`TiledCost` of the whole
    problem) with their rows split across the ranks of :func:`run_sharded` (all rows
    here outside it). Same interface, same results bit for bit (module notes).

    Attributes:
        cost: this rank's cost object; ``traffic``: bytes sent over the network, per pass.
    """

    def __init__(self, cost: PairwiseCost | TiledCost) -> None:
        if max(cost.n, cost.m) >= 2**31:
            raise InputError("passes are split for clouds of fewer than 2^31 points")
        self.cost = cost
        self.problem, self.n, self.m = cost.problem, cost.n, cost.m
        self.traffic: list[int] = []
        self._link = _leading()
        if self._link is not None:
            self._link.command(("open", _spec(cost), _fingerprint(cost.problem)))

    @property
    def device(self) -> torch.device:
        return self.cost.device

    @property
    def held(self) -> bool:
        """Whether the float64 matrix is held in memory (passes only read it)."""
        return isinstance(self.cost, PairwiseCost) and self.cost.held

    def row_pass(
        self, p: torch.Tensor, k: int = 0, below: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`TiledCost.row_pass` / :meth:`PairwiseCost.row_pass`, split by rows."""
        return self._pass("row", torch.as_tensor(p, dtype=torch.float64), k, below)

    def col_pass(self, q: torch.Tensor, k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`TiledCost.col_pass` (split by rows of B) / :meth:`PairwiseCost.col_pass`
        (rank 0 alone, see the module notes)."""
        if not isinstance(self.cost, TiledCost):
            self.traffic.append(0)
            return self.cost.col_pass(q, k)
        lower, cand = self._pass("col", -torch.as_tensor(q).to(self.device, torch.float64), k, None)
        return -lower, cand

    def _pass(
        self, side: str, p: torch.Tensor, k: int, below: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        link = self._link
        n = self.n if side == "row" else self.m
        shards = shard_rows(n, 1 if link is None else link.size, _quantum(self.cost))
        if below is not None:
            below = torch.as_tensor(below, dtype=torch.float64)
        sent = 0
        if link is not None:
            sent += link.command(("pass", side, k, below is not None))[1]
            sent += link.broadcast(p, len(p))[1]
            if below is not None:
                sent += link.broadcast(below, len(below))[1]
        packed = _local_pass(self.cost, side, p, k, below, shards[0])
        if link is not None:
            packed, bytes_in = link.gather(packed, [b - a for a, b in shards])
            sent += bytes_in
        assert packed is not None
        packed = packed.to(self.device)
        self.traffic.append(sent)
        LOG.debug("%s pass %d over %d x %d pairs: %d bytes sent", side, len(self.traffic),
                  self.n, self.m, sent)  # fmt: skip
        lower = packed[:, :2].reshape(-1).clone().view(torch.float64)  # clone: stride 1
        return lower, packed[:, 2:].long()


def _serve(link: _Link, problem: TransportProblem, device: torch.device) -> Any:
    """A rank other than 0: build the costs rank 0 opens, compute this rank's rows of
    each pass it asks for, until it ends; returns what it shares."""
    cost: Any = None
    while True:
        message, _ = link.command()
        if message[0] == "done":
            return message[1]
        if message[0] == "failed":
            raise WassnetError(f"rank 0 stopped: {message[1]}")
        if message[0] == "open":
            if message[2] != _fingerprint(problem):
                raise WassnetError("this rank's input differs from rank 0's (the same files?)")
            cost = _build(problem, message[1], device)
            continue
        side, k, has_below = message[1:]
        n, m = (cost.n, cost.m) if side == "row" else (cost.m, cost.n)
        p, _ = link.broadcast(None, m)
        below = link.broadcast(None, n)[0] if has_below else None
        shards = shard_rows(n, link.size, _quantum(cost))
        mine = _local_pass(cost, side, p, k, below, shards[link.rank])
        link.gather(mine, [b - a for a, b in shards])


def run_sharded(
    problem: TransportProblem,
    lead: Callable[[], T],
    *,
    device: torch.device | str = "cpu",
    share: Callable[[T], Any] = lambda result: result,
) -> T:
    """``lead()`` on rank 0, its passes over all pairs of ``problem`` (each
    :class:`ShardedCost` it builds) served by every rank of the job; returns its result
    on rank 0, and ``share(result)`` on the other ranks. In one process: ``lead()``.

    Every rank must call it, with the same ``problem``. A failure on rank 0 ends the
    other ranks with one line (:class:`~wassnet.errors.WassnetError`).
    """
    link = _job_link()
    if link is None:
        return lead()
    if link.rank != 0:
        return _serve(link, problem, torch.device(device))
    _LEADING.append(link)
    try:
        result = lead()
    except BaseException as exc:
        _tell_failure(link, exc)
        raise
    finally:
        _LEADING.pop()
    link.command(("done", share(result)))
    return result


def _tell_failure(link: _Link, exc: BaseException) -> None:
    """Tell the other ranks why rank 0 stopped (nothing if the group itself broke)."""
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        link.command(("failed", why))
    except Exception:  # the peers are gone: the original error says more
        LOG.debug("could not tell the other ranks that rank 0 stopped", exc_info=True)
