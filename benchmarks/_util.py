"""Small helpers shared by the benchmark scripts: environment info, peak RSS, timing, JSON output.

Usage pattern of a benchmark script::

    parser = argparse.ArgumentParser(...)
    add_common_args(parser, default_out="benchmarks/results/NAME.json")   # --quick, --out
    args = parser.parse_args()
    ...
    write_json(args.out, {"env": env_info(), "quick": args.quick, ...}, quick=args.quick)

``benchmarks/results/`` holds full runs only, each naming the commit, whether the tree was dirty and the
hash of the script that wrote it (``env_info()``: ``git``, ``git_dirty``, ``script.sha256``;
``tests/test_benchmark_provenance.py`` checks every file there). A ``--quick`` or ``--dry-run`` result goes
to ``runs/bench-quick/NAME.json`` by default, and :func:`write_json` refuses to put one under
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rlq.io import atomic_write_json

__all__ = ["env_info", "rss_bytes", "maxrss_bytes", "PeakRSS", "Timer", "write_json", "add_common_args", "MiB",
           "threads", "alternate", "median_ratio", "peak_in_child", "load", "RESULTS", "QUICK_DIR", "quick_out",
           "check_out", "SmokeResultRefused"]

MiB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Full runs only: every file here names its commit and script hash (tests/test_benchmark_provenance.py).
RESULTS = Path(__file__).resolve().parent / "results"
#: Where ``--quick`` and ``--dry-run`` results go by default (``runs/`` is ignored by git).
QUICK_DIR = Path(__file__).resolve().parent.parent / "runs" / "bench-quick"


class SmokeResultRefused(ValueError):
    """A ``--quick`` / ``--dry-run`` result was about to be written under ``benchmarks/results/``."""


def quick_out(default_out: str | os.PathLike) -> str:
    """The default output of a ``--quick`` / ``--dry-run`` run: ``runs/bench-quick/<name of the full run's file>``."""
    return str(QUICK_DIR / Path(default_out).name)


def _in_results(path: str | os.PathLike) -> bool:
    p = Path(path).resolve()
    if RESULTS == p or RESULTS in p.parents:
        return True
    parts = p.parts  # another checkout's benchmarks/results/ too
    return any(a == "benchmarks" and b == "results" for a, b in zip(parts, parts[1:]))


def check_out(path: str | os.PathLike, quick: bool) -> None:
    """Refuse a smoke run's output path under ``benchmarks/results/`` (there, only full runs), naming the fix."""
    if quick and _in_results(path):
        raise SmokeResultRefused(
            f"refusing to write a --quick / --dry-run result to {path}: benchmarks/results/ holds full runs only "
            f"(the README quotes them). Leave --out out (default {quick_out(path)}) or give a path outside "
            "benchmarks/results/.")


class _QuickAction(argparse.Action):
    """``--quick``: sets ``quick`` and moves a default ``--out`` to :data:`QUICK_DIR` (an explicit ``--out`` wins)."""

    def __init__(self, option_strings, dest, default_out: str = "", **kw: Any) -> None:
        self.default_out = default_out
        kw.pop("default", None)
        super().__init__(option_strings, dest, nargs=0, default=False, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, True)
        if getattr(namespace, "out", None) == self.default_out:
            namespace.out = quick_out(self.default_out)


def add_common_args(parser: argparse.ArgumentParser, default_out: str) -> argparse.ArgumentParser:
    """Add ``--quick`` (tiny sizes, seconds; for CI smoke runs) and ``--out`` (JSON path; with ``--quick`` the
    default becomes ``runs/bench-quick/<name>``, never ``benchmarks/results/``)."""
    parser.add_argument("--quick", action=_QuickAction, default_out=default_out,
                        help="tiny sizes that finish in seconds (smoke test); writes runs/bench-quick/"
                             f"{Path(default_out).name} unless --out is given (never benchmarks/results/)")
    parser.add_argument("--out", default=default_out, help=f"where to write the JSON results (default {default_out})")
    return parser


def _git_hash() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _git_dirty() -> bool | None:
    """True when tracked files differ from the commit (the numbers may not be the commit's)."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _script_hash() -> dict[str, str] | None:
    """The benchmark script's name and SHA-256 (which version of the benchmark wrote the file): the nearest
    caller in benchmarks/ other than the helper modules (so also when a test calls its ``main``), else ``__main__``."""
    import hashlib

    here = Path(__file__).resolve().parent
    path = None
    f = sys._getframe(1)
    while f is not None:
        fn = Path(f.f_code.co_filename)
        if fn.name not in ("_util.py", "_training.py") and fn.suffix == ".py" and fn.resolve().parent == here:
            path = fn
            break
        f = f.f_back
    if path is None:
        path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not Path(path).is_file():
        return None
    return {"path": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def env_info() -> dict[str, Any]:
    """Versions, CPU / thread counts, relevant environment variables, the git hash and dirty flag, the script's hash."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "git": _git_hash(),
        "git_dirty": _git_dirty(),
        "script": _script_hash(),
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

    def __enter__(self) -> PeakRSS:
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

    def __enter__(self) -> Timer:
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0


def _smoke_argv() -> bool:
    main = sys.modules.get("__main__")
    ran_as_script = Path(getattr(main, "__file__", "") or "").resolve().parent == Path(__file__).resolve().parent
    return ran_as_script and any(a in ("--quick", "--dry-run") for a in sys.argv[1:])


def write_json(path: str | os.PathLike, obj: Any, *, quick: bool | None = None) -> None:
    """Write benchmark results atomically (NumPy scalars allowed).

    ``quick``: the result of a ``--quick`` / ``--dry-run`` run (None: read from ``obj["quick"]`` /
    ``obj["dry_run"]`` and from the command line of a benchmark script); such a result is refused under
    ``benchmarks/results/`` (:class:`SmokeResultRefused`).
    """
    if quick is None:
        quick = (isinstance(obj, Mapping) and bool(obj.get("quick") or obj.get("dry_run"))) or _smoke_argv()
    check_out(path, quick)
    atomic_write_json(path, obj)


# ---------------------------------------------------------------------------------------------------
# fair comparisons: equal threads, alternating rounds, memory measured in a process of its own


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Run torch, NumPy's BLAS and OpenCV (when loaded) with ``n`` threads each, so both sides get the same."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    cv2 = sys.modules.get("cv2")
    old_cv = cv2.getNumThreads() if cv2 is not None else None
    torch.set_num_threads(n)
    if cv2 is not None:
        cv2.setNumThreads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        torch.set_num_threads(old)
        if cv2 is not None:
            cv2.setNumThreads(old_cv)


def load() -> dict[str, Any]:
    """Machine load right now (1/5/15-minute load averages and the CPU count), for the JSON."""
    return {"loadavg": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count()}


def alternate(sides: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 1,
              sync: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Time every side once per round, the order rotating from round to round (A B C, B C A, ...).

    A change in machine load then hits all sides of a round alike; compare sides with :func:`median_ratio`
    (the median of per-round ratios). ``warmup`` untimed calls of each side come first. Returns per-side
    lists of wall seconds (``runs``), their medians (``median_s``), the rounds and the load before/after.
    """
    names = list(sides)
    for _ in range(warmup):
        for n in names:
            sides[n]()
    sync()
    runs: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    load0 = os.getloadavg()
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            sides[n]()
            sync()
            runs[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    return {"rounds": rounds, "order": "rotating per round", "runs": runs,
            "median_s": {n: statistics.median(v) for n, v in runs.items()},
            "cpu_runs": cpu, "median_cpu_s": {n: statistics.median(v) for n, v in cpu.items()},
            "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()]}


def median_ratio(timing: Mapping[str, Any], num: str, den: str, key: str = "runs") -> float:
    """Median over rounds of runs[num] / runs[den] from :func:`alternate` (``key="cpu_runs"``: process CPU
    time, which time-slicing by other processes does not inflate; it counts every thread of this process)."""
    a, b = timing[key][num], timing[key][den]
    return statistics.median(x / y for x, y in zip(a, b))


def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


class _Mark:
    """Given to the child's function: call it once the inputs (features) exist."""

    def __init__(self) -> None:
        self.rss = None
        self.reset = False
        self.peak = None

    def stop(self) -> None:
        """Optional: end the measured stretch here (work after it, e.g. dumping outputs, is not counted)."""
        self.peak = _proc_status()["VmHWM"]

    def __call__(self) -> None:
        self.rss = _proc_status()["VmRSS"]
        try:  # reset the peak (VmHWM) to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = _proc_status()["VmHWM"] <= self.rss + 16 * MiB
        except OSError:
            self.reset = False
        self._t0 = time.perf_counter()


def _child(fn: Callable[..., dict[str, Any]], args: tuple, kwargs: dict, nthreads: int | None) -> dict[str, Any]:
    mark = _Mark()
    ctx = threads(nthreads) if nthreads else contextlib.nullcontext()
    with ctx:
        out = fn(mark, *args, **kwargs)
    st = _proc_status()
    if mark.rss is None:
        raise RuntimeError(f"{fn.__name__} never called mark() once its inputs existed")
    peak = st["VmHWM"] if mark.peak is None else mark.peak
    return {**out, "memory": {
        "rss_after_inputs_bytes": mark.rss, "peak_rss_bytes": peak, "peak_above_inputs_bytes": peak - mark.rss,
        "peak_above_inputs_mib": round((peak - mark.rss) / MiB, 1), "peak_reset_at_mark": mark.reset,
        "how": "own process; peak = VmHWM (reset at mark via /proc/self/clear_refs) - VmRSS at mark"}}


def peak_in_child(fn: Callable[..., dict[str, Any]], *args: Any, nthreads: int | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """Run ``fn(mark, *args, **kwargs)`` in a fresh process and add its peak memory above its inputs.

    ``fn`` (a module-level function) builds its inputs, calls ``mark()`` once they exist, does the work
    and returns a JSON-able dict; the result gains ``memory``: the process's peak RSS after ``mark`` minus
    its RSS at ``mark``. A fresh (spawned) process per measurement, so nothing an earlier measurement left
    resident is counted or reused; it inherits the environment (set the ``MALLOC_*`` variables there).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as ex:
        return ex.submit(_child, fn, args, kwargs, nthreads).result()


_CTX: Any = None


def _context() -> Any:
    """A fork server that has imported torch and rlq once (no threads started): children fork from it
    cheaply and start with a fresh heap, none of this process's memory and no thread pools."""
    global _CTX
    if _CTX is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CTX = multiprocessing.get_context("forkserver")
            _CTX.set_forkserver_preload(["numpy", "torch", "rlq.evaluation"])
        else:  # pragma: no cover - platforms without fork
            _CTX = multiprocessing.get_context("spawn")
    return _CTX
