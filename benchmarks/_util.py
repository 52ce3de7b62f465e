"""Small helpers shared by the benchmark scripts: environment info, peak RSS, timing, JSON output.

Usage pattern of a benchmark script::

    parser = argparse.ArgumentParser(...)
    add_common_args(parser, default_out="benchmarks/results/NAME.json")   # --quick, --out
    args = parser.parse_args()
    ...
    write_json(args.out, {"env": env_info(), ...})
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rlq.io import atomic_write_json

__all__ = ["env_info", "rss_bytes", "maxrss_bytes", "PeakRSS", "Timer", "write_json", "add_common_args", "MiB"]

MiB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def add_common_args(parser: argparse.ArgumentParser, default_out: str) -> argparse.ArgumentParser:
    """Add ``--quick`` (tiny sizes, seconds; for CI smoke runs) and ``--out`` (JSON path)."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes that finish in seconds (smoke test)")
    parser.add_argument("--out", default=default_out, help=f"where to write the JSON results (default {default_out})")
    return parser


def _git_hash() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def env_info() -> dict[str, Any]:
    """Versions, CPU / thread counts, relevant environment variables and the git hash."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "git": _git_hash(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_", "MKL_", "OPENBLAS_"))},
    }
    try:
        import numpy as np

        info["numpy"] = np.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - non-Linux
        return maxrss_bytes()


def maxrss_bytes() -> int:
    """Peak resident set size of this process since it started (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Context manager: peak RSS while inside, sampled every ``interval`` s and checked against ru_maxrss.

    ``extra`` = peak - RSS at entry (bytes). A sampler thread can miss spikes shorter than the interval;
    when the process-wide ru_maxrss rose inside the block, that exact value is used as the peak.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._maxrss0 = maxrss_bytes()
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        m = maxrss_bytes()
        if m > self._maxrss0:
            self.peak = max(self.peak, m)

    @property
    def extra(self) -> int:
        return max(0, self.peak - self.start)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock) and ``t.cpu`` (process CPU time)."""

    def __enter__(self) -> "Timer":
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write benchmark results atomically (NumPy scalars allowed)."""
    atomic_write_json(path, obj)
