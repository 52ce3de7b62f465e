"""One code path for one process (CPU or one GPU) and many (torchrun, DDP: gloo on CPU, nccl on GPU).

Sharded evaluation: :func:`shard_bounds` splits N items over the ranks in contiguous, batch-aligned blocks (rank r
extracts exactly the batches a single process would form for those rows, so per-sample outputs match a
one-process run); :func:`gather_rows` puts the shards back together in dataset order on every rank; and
:func:`check_all_ranks` turns a failure on one rank into a clear error on every rank instead of a hang at the
next collective. Every helper is a no-op (or the identity) when torch.distributed is not initialised.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..errors import RankFailure, root_message
from .device import resolve_device

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "barrier", "all_reduce_flags", "broadcast_object",
           "current_world", "dist_timeout_min", "DEFAULT_TIMEOUT_MIN", "TIMEOUT_ENV", "shard_bounds", "gather_rows",
           "check_all_ranks", "sync_buffers", "RankFailure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


# Collective timeout: long enough for the longest sharded evaluation (LaST's 133k test images on one slow rank)
# plus checkpoint writes on rank 0 while the others wait. Change it with train.dist_timeout_min or the env variable.
DEFAULT_TIMEOUT_MIN = 60.0
TIMEOUT_ENV = "RLQ_DIST_TIMEOUT_MIN"


def dist_timeout_min(setting: float | None = None) -> float:
    """The collective timeout in minutes: ``setting`` (e.g. train.dist_timeout_min) when given, else the
    environment variable ``RLQ_DIST_TIMEOUT_MIN``, else :data:`DEFAULT_TIMEOUT_MIN` (60)."""
    from ..errors import ConfigError

    source, value = "train.dist_timeout_min", setting
    if value is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_TIMEOUT_MIN
        source = TIMEOUT_ENV
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number of minutes; e.g. {TIMEOUT_ENV}=120") from None
    if not value > 0:
        raise ConfigError(f"{source} must be a positive number of minutes, got {value!r}")
    return float(value)


def init_distributed(device: str = "auto", timeout_min: float | None = None) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); else a single process.

    ``timeout_min`` bounds every collective (see :func:`dist_timeout_min` for the default)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and str(device).startswith("cuda:"):
        from ..errors import ConfigError

        # every rank would take that one GPU (NCCL then fails or deadlocks): each rank uses its LOCAL_RANK GPU
        raise ConfigError(f"device {device!r} names one GPU, but torchrun started {world} processes; use "
                          "train.device=cuda (or auto: rank r takes GPU LOCAL_RANK) and choose the GPUs with "
                          "CUDA_VISIBLE_DEVICES")
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        minutes = dist_timeout_min(timeout_min)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=minutes))
        log.info("DDP: rank %d/%d on %s (%s), collective timeout %g min", rank, world, dev, backend, minutes)
    return DistInfo(rank, world, local), dev


def current_world() -> DistInfo:
    """Rank and world size of the initialised default process group; one process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_flags(flags: list[bool], device: torch.device) -> list[bool]:
    """Logical OR of boolean flags across replicas (a no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flags
    dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def broadcast_object(obj, src: int = 0):
    """Broadcast a picklable Python object from ``src`` (used only for small trusted control data)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# -- sharded evaluation --------------------------------------------------------------------------------------
def _active(world: DistInfo | None) -> bool:
    """True when ``world`` spans several ranks; then the default process group must be initialised."""
    if world is None or not world.enabled:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world_size {world.world_size} given but torch.distributed is not initialised; "
                           "call init_distributed() first (torchrun sets WORLD_SIZE) or pass world=None")
    if dist.get_world_size() != world.world_size or dist.get_rank() != world.rank:
        raise RuntimeError(f"world {world} does not match the process group (rank {dist.get_rank()} of "
                           f"{dist.get_world_size()})")
    return True


def _comm_device() -> torch.device:
    """Where collective tensors live: the current GPU for nccl, CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_bounds(n: int, world_size: int, rank: int, batch_size: int = 1) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` that ``rank`` handles: contiguous blocks of whole batches.

    The ``ceil(n / batch_size)`` batches a single process would form are split into ``world_size`` contiguous
    runs of ``ceil(batches / world_size)`` batches (the last runs may be shorter or empty), so every rank sees
    exactly the single-process batches of its rows, and the slowest rank extracts the fewest batches possible.
    """
    if n < 0 or world_size < 1 or not 0 <= rank < world_size or batch_size < 1:
        raise ValueError(f"shard_bounds(n={n}, world_size={world_size}, rank={rank}, batch_size={batch_size}) is invalid")
    batches = -(-n // batch_size)
    per = -(-batches // world_size) * batch_size
    start = min(rank * per, n)
    return start, min(start + per, n)


def gather_rows(local: np.ndarray, world: DistInfo | None, *, chunk_rows: int = 16384) -> np.ndarray:
    """Concatenate every rank's ``local`` (rows_r, D) in rank order, on every rank (identity in one process).

    Shards may have different lengths (including 0 rows); each is padded to the longest, all-gathered in blocks
    of ``chunk_rows`` rows (bounding the extra memory, on the GPU with nccl) and the padding dropped.
    """
    if not _active(world):
        return local
    local = np.ascontiguousarray(local)
    dev = _comm_device()
    head = torch.tensor([local.shape[0], local.shape[1] if local.ndim == 2 else -1], dtype=torch.int64, device=dev)
    heads = [torch.zeros_like(head) for _ in range(world.world_size)]
    dist.all_gather(heads, head)
    counts = [int(h[0]) for h in heads]
    dims = {int(h[1]) for h, c in zip(heads, counts) if c > 0}
    if len(dims) > 1 or -1 in dims:
        raise RuntimeError(f"gather_rows: ranks hold arrays of different widths {sorted(dims)}; expected (rows, D) everywhere")
    d = dims.pop() if dims else (local.shape[1] if local.ndim == 2 else 0)
    if local.shape[0] == 0:
        local = np.zeros((0, d), dtype=local.dtype)
    out = np.empty((sum(counts), d), dtype=local.dtype)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    longest = max(counts)
    t_local = torch.from_numpy(local)
    for s in range(0, longest, chunk_rows):
        e = min(s + chunk_rows, longest)
        block = torch.zeros((e - s, d), dtype=t_local.dtype, device=dev)
        mine = t_local[s:min(e, local.shape[0])]
        if len(mine):
            block[: len(mine)] = mine.to(dev)
        parts = [torch.empty_like(block) for _ in range(world.world_size)]
        dist.all_gather(parts, block)
        for r, p in enumerate(parts):
            take = min(e, counts[r]) - s
            if take > 0:
                out[offsets[r] + s: offsets[r] + s + take] = p[:take].cpu().numpy()
    return out


def check_all_ranks(error: BaseException | None, what: str, world: DistInfo | None) -> None:
    """Collective failure check: every rank calls it after a step, with the exception it caught (or None).

    In one process a caught error is re-raised as is. Across ranks the flags are all-gathered, and if any rank
    failed, every rank raises :class:`RankFailure` naming the failing ranks (the failing rank's own message
    included on that rank), so the others stop with a message instead of waiting for the collective timeout.
    """
    if not _active(world):
        if error is not None:
            raise error
        return
    dev = _comm_device()
    flag = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=dev)
    flags = [torch.zeros_like(flag) for _ in range(world.world_size)]
    dist.all_gather(flags, flag)
    failed = [r for r, f in enumerate(flags) if int(f.item())]
    if not failed:
        return
    if error is not None:
        log.error("rank %d: %s failed", world.rank, what, exc_info=error)
    mine = f"; here: {type(error).__name__}: {root_message(error).rstrip('.')}" if error is not None else ""
    raise RankFailure(f"{what} failed on rank {', '.join(map(str, failed))} of {world.world_size} (this is rank "
                      f"{world.rank}){mine}. Every rank stops; the failing rank's log has the cause.") from error


def sync_buffers(module: torch.nn.Module, world: DistInfo | None, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every rank.

    Under DDP each rank updates its BN statistics with its own last batch, so before a sharded evaluation
    the ranks must agree on rank 0's (the ones the checkpoints save)."""
    if not _active(world):
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=src)
