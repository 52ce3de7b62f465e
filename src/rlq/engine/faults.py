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
- ``disk-full:N``: this process's N-th checkpoint write fails with ``OSError(ENOSPC)`` as a full disk would;
- ``hold:N``: after global step N, the trainer writes ``<run folder>/.rlq-held`` and waits, training nothing, until
  a signal asks it to stop (then it stops as usual, with a resumable checkpoint): a test sends its signal once the
  file exists, so the signal lands mid-training however fast the machine is.

``tests/test_reliability.py`` and ``benchmarks/reliability.py`` use it to prove exact resume after kills.
It is read here only; never set it in real runs.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["ENV", "HOLD_MARKER", "fault_point", "fault_active", "fault_hold"]

ENV = "RLQ_FAULT_INJECT"
POINTS = ("step", "ckpt-write", "eval", "nan-input", "disk-full", "hold")
HOLD_MARKER = ".rlq-held"
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


def fault_hold(folder: str | os.PathLike, stopped: Callable[[], bool], guard_s: float = 600.0) -> None:
    """``hold:N``: write ``folder/.rlq-held`` (this PID), then wait until ``stopped()`` (the trainer's signal flag).
    ``guard_s`` only ends a hold nobody stops, so a broken test fails instead of hanging."""
    from ..io import atomic_write_text

    atomic_write_text(Path(folder) / HOLD_MARKER, str(os.getpid()))
    deadline = time.monotonic() + guard_s
    while not stopped() and time.monotonic() < deadline:
        time.sleep(0.01)
