"""torchrun / ``torch.distributed`` helpers shared by the jobs (torch-free at import).

Every job runs the same way in one process (``python -m wassnet ...``) and under
``torchrun --nproc-per-node K [--nnodes N --rdzv-endpoint HOST:PORT] -m wassnet ...``.
This module is the one place that knows about the process group:

* :func:`launch` reads what torchrun put in the environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); without
  torchrun it is rank 0 of 1.
* :func:`init` starts the process group when the world has more than one process:
  backend ``nccl`` when the job's device is CUDA, else ``gloo``; with a timeout
  (``WASSNET_DIST_TIMEOUT`` seconds, default 600) so that a peer that died or hangs
  ends every rank instead of hanging them. With one process it does nothing, and every
  helper below is then the identity (a single process needs no collective).
* :func:`rank`, :func:`world_size`, :func:`is_main`, :func:`barrier`, and the small
  collectives the jobs need: :func:`broadcast_object`, :func:`all_gather_arrays`
  (numpy arrays of different lengths), :func:`all_reduce_float`; :func:`shutdown`.
* :class:`peer_failures` (a context manager and decorator for a job's main) turns a
  peer's failure (a gloo/nccl error, a timeout) into one :class:`PeerFailure` line,
  ``wassnet: rank 1 of 2: ...``, on every rank that sees it; the command line prints it
  with a non-zero exit code. Rank 0 alone writes the run folder, atomically, so a
  failure leaves the last complete checkpoint and nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from wassnet.errors import InputError, WassnetError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Launch",
    "PeerFailure",
    "active",
    "all_gather_arrays",
    "all_reduce_float",
    "all_reduce_floats",
    "any_rank",
    "backend",
    "barrier",
    "broadcast_object",
    "die_here",
    "from_main",
    "init",
    "is_main",
    "launch",
    "local_rank",
    "peer_failures",
    "rank",
    "rank_device",
    "replicate",
    "shutdown",
    "start",
    "timeout_s",
    "world_size",
]

#: Seconds a collective waits for a peer before every rank gives up.
DEFAULT_TIMEOUT_S = 600.0
#: The environment variable that overrides :data:`DEFAULT_TIMEOUT_S`.
TIMEOUT_ENV = "WASSNET_DIST_TIMEOUT"
#: Test hook: ``RANK:STEP`` makes that rank exit abruptly after that training step.
DIE_ENV = "WASSNET_TEST_DIE_AT"

T = TypeVar("T")

_PEER_ERROR = re.compile(
    r"gloo|nccl|connection (closed|reset|refused)|broken pipe|timed? ?out|socket", re.I
)

#: the ``[.../pair.cc:561]`` source location gloo puts before its messages
_SOURCE_PREFIX = re.compile(r"^\s*\[[^\]]*\]\s*")


class PeerFailure(WassnetError, RuntimeError):
    """Another process of a distributed job failed or did not answer in time."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands in the job, as torchrun's environment says.

    Attributes:
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: the number of processes in the job (1 without torchrun).
        local_rank: the rank on this machine (picks the GPU).
        local_world_size: the processes on this machine.
        master_addr, master_port: the rendezvous address (empty without torchrun).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = ""
    master_port: str = ""

    @property
    def distributed(self) -> bool:
        """Whether the job has more than one process."""
        return self.world_size > 1


def launch() -> Launch:
    """This process's place in the job, read from the environment torchrun sets.

    Raises:
        InputError: the variables are not integers, or the rank is out of range.
    """
    env = os.environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        here = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", "0"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        raise InputError(
            "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers "
            "(start the job with torchrun)"
        ) from None
    if world < 1 or not 0 <= here < world:
        raise InputError(f"RANK={here} WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return Launch(
        here, world, local, local_world, env.get("MASTER_ADDR", ""), env.get("MASTER_PORT", "")
    )


def timeout_s() -> float:
    """Seconds a collective waits for a peer (``WASSNET_DIST_TIMEOUT``, default 600)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise InputError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise InputError(f"{TIMEOUT_ENV}={text!r} must be > 0 seconds")
    return value


# -- the process group --------------------------------------------------------------------


def _dist() -> Any:
    """``torch.distributed`` if torch is already imported (``None`` otherwise: then no
    process group can exist, and this module stays torch-free)."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() else None


def active() -> bool:
    """Whether a process group is running (started by :func:`init` or by the caller)."""
    dist = _dist()
    return bool(dist is not None and dist.is_initialized())


def init(device: str | None = None) -> Launch:
    """Start the process group when the job has more than one process; return its place.

    ``device`` is the job's device (``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``None``: CUDA
    when present): ``nccl`` for CUDA, else ``gloo``. Under nccl this process's GPU
    becomes ``cuda:LOCAL_RANK``. Idempotent: a group already running is kept. With one
    process nothing is started.
    """
    where = launch()
    if not where.distributed or active():
        return where
    import datetime

    import torch
    import torch.distributed as dist

    cuda = _is_cuda(device)
    if cuda:
        torch.cuda.set_device(where.local_rank)
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        timeout=datetime.timedelta(seconds=timeout_s()),
        rank=where.rank,
        world_size=where.world_size,
    )
    return where


def start(device: Any = None, batch_size: int | None = None) -> Any:
    """A trainer's start: its device resolved (:func:`wassnet.runtime.resolve_device`),
    the process group started under torchrun (:func:`init`; nothing in one process), and
    this rank's device returned (:func:`rank_device`, a ``torch.device``).

    Raises:
        InputError: ``batch_size`` (the global batch) does not divide by the world size
            (each rank trains on an equal part of every batch).
    """
    import torch

    from wassnet.runtime import resolve_device

    dev = resolve_device(device)
    where = init(str(dev))
    if batch_size is not None and batch_size % where.world_size:
        raise InputError(
            f"batch size {batch_size} does not divide among {where.world_size} processes: "
            f"choose a multiple of {where.world_size} (each rank trains on an equal part of "
            "every batch)"
        )
    return torch.device(rank_device(dev))


def _is_cuda(device: str | None) -> bool:
    import torch

    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def rank_device(device: Any) -> Any:
    """The device this rank uses for the job's ``device`` (a string or ``torch.device``):
    under an nccl group a CUDA device without an index becomes ``cuda:LOCAL_RANK`` (one
    GPU per process); otherwise ``device`` unchanged."""
    if not active() or backend() != "nccl":
        return device
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank())
    return device


def replicate(module: Any, device: Any = None) -> Any:
    """``module`` wrapped in ``DistributedDataParallel`` under a process group (its
    initial parameters and buffers are broadcast from rank 0; gradients are averaged
    over the ranks in backward), else ``module`` itself. ``device``: where it lives."""
    if not active():
        return module
    import warnings

    import torch
    from torch.nn.parallel import DistributedDataParallel

    # a [1, n] weight's gradient may come with strides [1, 1]: the same memory layout as
    # DDP's bucket view, [n, 1], but DDP warns on every backward pass
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    dev = torch.device(device) if device is not None else next(module.parameters()).device
    if dev.type != "cuda":
        return DistributedDataParallel(module)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return DistributedDataParallel(module, device_ids=[index])


def backend() -> str | None:
    """The running group's backend (``"gloo"``, ``"nccl"``), ``None`` without one."""
    return str(_dist().get_backend()) if active() else None


def rank() -> int:
    """This process's rank (0 without a process group or torchrun)."""
    return int(_dist().get_rank()) if active() else launch().rank


def world_size() -> int:
    """The number of processes in the job (1 without a process group or torchrun)."""
    return int(_dist().get_world_size()) if active() else launch().world_size


def local_rank() -> int:
    """The rank on this machine (``LOCAL_RANK``; 0 without torchrun)."""
    return launch().local_rank


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files and prints)."""
    return rank() == 0


def shutdown() -> None:
    """End the process group (nothing when none runs). Call it on every rank."""
    if active():
        _dist().destroy_process_group()


# -- collectives ------------------------------------------------------------------------


def barrier() -> None:
    """Wait until every rank is here (nothing without a process group)."""
    if active():
        dist = _dist()
        if backend() == "nccl":
            import torch

            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled; for small objects). Without a
    process group, ``obj`` itself."""
    if not active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def from_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` computed on rank 0 only and sent to every rank (e.g. what
    a run folder holds: rank 0 reads it). An error ``fn`` raises on rank 0 (a
    :class:`~wassnet.errors.WassnetError` or ``OSError``) is raised on every rank.
    Without a process group, simply ``fn(*args, **kwargs)``."""
    if not active():
        return fn(*args, **kwargs)
    value: Any = None
    error: BaseException | None = None
    if is_main():
        try:
            value = fn(*args, **kwargs)
        except (WassnetError, OSError) as exc:
            error = exc
    error, value = broadcast_object((error, value))
    if error is not None:
        raise error
    return value


def all_reduce_float(value: float, op: str = "sum") -> float:
    """``value`` reduced over every rank (``op``: ``"sum"``, ``"max"``, ``"min"``), in
    float64; the same result on every rank. Without a process group, ``value``."""
    return all_reduce_floats([value], op)[0]


def all_reduce_floats(values: Any, op: str = "sum") -> list[float]:
    """Each of ``values`` reduced over every rank, in one collective (float64; ``op`` as
    for :func:`all_reduce_float`). Without a process group, ``values`` as floats."""
    values = [float(v) for v in values]
    ops = ("sum", "max", "min")
    if op not in ops:
        raise InputError(f"op must be one of {', '.join(ops)}, got {op!r}")
    if not active() or not values:
        return values
    import torch

    dist = _dist()
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=reduce_op[op])
    return [float(v) for v in tensor.tolist()]


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (the same answer on every rank)."""
    return all_reduce_float(1.0 if flag else 0.0, "max") > 0


def all_gather_arrays(array: Any) -> list[Any]:
    """Every rank's numpy ``array``, in rank order, on every rank.

    The arrays may differ in length (axis 0) but must agree in dtype and in their other
    axes; they travel as tensors (padded to the longest), not pickled. Without a process
    group, ``[array]``.
    """
    import numpy as np

    array = np.ascontiguousarray(array)
    if not active():
        return [array]
    import torch

    dist, device = _dist(), _collective_device()
    mine = torch.tensor([array.shape[0] if array.ndim else 1], dtype=torch.int64, device=device)
    lengths = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(lengths, mine)
    counts = [int(n.item()) for n in lengths]
    flat = array.reshape((array.shape[0] if array.ndim else 1), -1)
    padded = torch.zeros((max(counts), flat.shape[1]), dtype=_torch_dtype(flat), device=device)
    padded[: flat.shape[0]] = torch.from_numpy(flat).to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    rest = array.shape[1:] if array.ndim else ()
    return [
        part[:n].cpu().numpy().reshape((n, *rest) if array.ndim else ())
        for part, n in zip(parts, counts, strict=True)
    ]


def _torch_dtype(array: Any) -> Any:
    import torch

    return torch.from_numpy(array[:0]).dtype


def _collective_device() -> Any:
    """Where the collectives' tensors live: the current GPU under nccl, else the CPU."""
    import torch

    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- failures -----------------------------------------------------------------------------


def _is_peer_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective's failure (a peer died, hung, or was unreachable)."""
    dist = _dist()
    if dist is not None and isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and bool(_PEER_ERROR.search(str(exc)))


class peer_failures(contextlib.ContextDecorator):
    """Turn a peer's failure into one :class:`PeerFailure` line naming this rank.

    ``with peer_failures():`` (or ``@peer_failures()`` on a job's main): in a job of
    more than one process, a gloo/nccl error or a collective's timeout leaves as
    ``PeerFailure("wassnet: rank R of W: ...")``; wassnet's own errors and anything
    else pass unchanged. In a single process nothing is changed.
    """

    def __enter__(self) -> peer_failures:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, WassnetError) or world_size() < 2:
            return False
        if not _is_peer_error(exc):
            return False
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        sentence = _SOURCE_PREFIX.sub("", first).split(". ")[0]
        reason = " ".join(sentence.split())[:160]
        raise PeerFailure(
            f"wassnet: rank {rank()} of {world_size()}: a peer process failed or did not "
            f"answer within {timeout_s():g} s ({reason}); the run folder keeps its last "
            "complete checkpoint: run the same command to continue"
        ) from None


def die_here(step: int) -> None:
    """Test hook: exit this process abruptly (no clean-up) after training step ``step``
    when ``WASSNET_TEST_DIE_AT`` is ``RANK:STEP`` for this rank and step."""
    spec = os.environ.get(DIE_ENV)
    if not spec:
        return
    who, _, when = spec.partition(":")
    if who.strip() == str(rank()) and when.strip() == str(step):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(17)
