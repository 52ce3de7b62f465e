"""Old home of the distributed helpers, now :mod:`rlq.runtime.distributed` (docs/design.md, "The runtime layer").

A re-export only, kept while code written against this path (concurrent branches, docstrings) is updated;
new code imports :mod:`rlq.runtime.distributed` and :func:`rlq.runtime.device.resolve_device`.
"""

from __future__ import annotations

from ..runtime.device import resolve_device
from ..runtime.distributed import (
    DEFAULT_TIMEOUT_MIN,
    TIMEOUT_ENV,
    DistInfo,
    RankFailure,
    all_reduce_flags,
    barrier,
    broadcast_object,
    check_all_ranks,
    cleanup_distributed,
    current_world,
    dist_timeout_min,
    gather_rows,
    init_distributed,
    shard_bounds,
    sync_buffers,
)

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "barrier", "all_reduce_flags", "broadcast_object", "resolve_device",
           "current_world", "dist_timeout_min", "DEFAULT_TIMEOUT_MIN", "TIMEOUT_ENV", "shard_bounds", "gather_rows",
           "check_all_ranks", "sync_buffers", "RankFailure"]
