"""Test-only fault injection: SIGKILL this process (or make a fault happen) at a chosen point, whatever the
machine's speed.

Set ``RLQ_FAULT_INJECT`` to one point; unset (always, outside tests), nothing happens. Kill points:

- ``step:N``: right after the optimizer update of global step N (before it is logged or checkpointed);
- ``ckpt-write:N``: during this process's N-th checkpoint write (every checkpoint folder counts, ``best``
  included), after its weights and state files are written, before its manifest and the rename;
- ``eval:N``: during this process's N-th evaluation, after the new best weights are saved, before the
  results and the checkpoint that records it.

Fault points (the process goes on, and must cope):

- ``nan-input:N``: the images of global step N (the step that ``step:N`` would kill after, counting from 1) are
  made NaN before the forward pass;
- ``disk-full:N``: this process's N-th checkpoint write fails with ``OSError(ENOSPC)`` as a full disk would.

``tests/test_reliability.py`` and ``benchmarks/reliability.py`` use it to prove exact resume after kills.
It is read here only; never set it in real runs.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "fault_point", "fault_active"]

ENV = "RLQ_FAULT_INJECT"
POINTS = ("step", "ckpt-write", "eval", "nan-input", "disk-full")
_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    kind, _, n = raw.partition(":")
    if kind not in POINTS or not n.isdigit():
        raise ValueError(f"{ENV}={raw!r}: expected one of {', '.join(p + ':N' for p in POINTS)} (test-only)")
    return kind, int(n)


def fault_active(kind: str, value: int | None = None) -> bool:
    """True if ``RLQ_FAULT_INJECT`` names this point now. ``value``: the global step for ``step`` and
    ``nan-input``; other points count their own occurrences in this process (only while a fault is set)."""
    target = _target()
    if target is None:
        return False
    if value is None:
        value = _counts[kind] = _counts.get(kind, 0) + 1
    return target == (kind, value)


def fault_point(kind: str, value: int | None = None) -> None:
    """Kill the process here if ``RLQ_FAULT_INJECT`` names this point (see :func:`fault_active`)."""
    if fault_active(kind, value):
        os.kill(os.getpid(), signal.SIGKILL)
