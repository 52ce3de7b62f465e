"""Atomic file writing: every file rlq writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["save_figure", "replace_dir", "aside_name", "commit_staged_dir", "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "sha256_file",
           "json_dumps", "strict_json_value", "csv_cell", "csv_cell_value", "atomic_write_csv"]


def _umask_mode() -> int:
    """0o666 minus the process umask (what open() would give a new file; mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file next to `path`; on success rename it over `path`, on error delete it."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def strict_json_value(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` as plain JSON types, every non-finite float (NaN, +-inf) replaced by None.

    Recurses into dicts, lists and tuples; NumPy scalars and arrays become Python numbers and lists (their
    NaN too), paths strings, sets sorted lists. Any other object goes through ``default`` (and its result
    through this function); without ``default`` it is a TypeError. JSON has no NaN: strict parsers reject
    the bare ``NaN`` that ``json.dumps`` writes by default (docs/design.md, Habits).
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):  # also numpy.float64, a float subclass
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {_json_key(k): strict_json_value(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json_value(v, default) for v in obj]
    np = sys.modules.get("numpy")  # a NumPy object exists only once NumPy is imported
    if np is not None:
        if isinstance(obj, np.ndarray):
            return strict_json_value(obj.tolist(), default)
        if isinstance(obj, np.generic):
            return strict_json_value(obj.item(), default)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return [strict_json_value(v, default) for v in sorted(obj)]
    if default is not None:
        return strict_json_value(default(obj))
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_key(k: Any) -> Any:
    np = sys.modules.get("numpy")
    return k.item() if np is not None and isinstance(k, np.generic) else k


def json_dumps(obj: Any, *, indent: int | None = None, default: Callable[[Any], Any] | None = None, **kw: Any) -> str:
    """Strict JSON text of ``obj`` (see :func:`strict_json_value`): non-finite floats are ``null``, and
    ``allow_nan=False`` guarantees no bare NaN / Infinity is ever written."""
    return json.dumps(strict_json_value(obj, default), indent=indent, allow_nan=False, **kw)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, fsync: bool = True) -> None:
    """Write `obj` as strict JSON to `path` atomically (NumPy scalars and arrays allowed; NaN and infinities
    are written as ``null``, see :func:`json_dumps`)."""
    atomic_write_text(path, json_dumps(obj, indent=indent) + "\n", fsync=fsync)


# -- CSV files for spreadsheets: formula injection (OWASP "CSV injection") ------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def csv_cell(value: Any) -> str:
    """``value`` as a CSV cell that a spreadsheet shows as text, never runs as a formula.

    A cell starting with ``= + - @``, tab or carriage return gets a leading ``'`` (the OWASP rule); so does
    one that already starts with quotes before such a character, which keeps :func:`csv_cell_value` its exact
    inverse. Plain numbers (``-1``, ``-0.5``, ``1e-05``) are left alone: they stay numbers.
    """
    s = str(value)
    if _NUMBER.fullmatch(s):
        return s
    return "'" + s if s.lstrip("'")[:1] in _FORMULA_START and s.lstrip("'") else s


def csv_cell_value(cell: str) -> str:
    """The value written by :func:`csv_cell` (the guarding quote dropped); other cells unchanged. A cell
    that a spreadsheet saved back without the quote reads the same."""
    return cell[1:] if cell.startswith("'") and cell.lstrip("'")[:1] in _FORMULA_START and cell.lstrip("'") else cell


def atomic_write_csv(path: str | os.PathLike, header: Sequence[Any], rows: Iterable[Sequence[Any]], *,
                     fsync: bool = True) -> None:
    """Write a CSV file atomically (``\n`` line ends), every cell through :func:`csv_cell`; rlq's CSV readers
    (``rlq.data.sidecars``) undo it with :func:`csv_cell_value`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(c) for c in header])
    w.writerows([csv_cell(c) for c in row] for row in rows)
    atomic_write_text(path, buf.getvalue(), fsync=fsync)


def aside_name(path: str | os.PathLike) -> Path:
    """Where an earlier folder is kept when a command starts anew in it: ``<name>.old-<UTC timestamp>`` (with a
    counter when that exists already). Run folders, SynthCC and frame folders all use it."""
    import time

    p = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    cand = p.with_name(f"{p.name}.old-{stamp}")
    i = 1
    while cand.exists():
        cand = p.with_name(f"{p.name}.old-{stamp}-{i}")
        i += 1
    return cand


def commit_staged_dir(staging: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """Move the finished folder ``staging`` to ``out``. An ``out`` that holds files is first renamed whole to
    :func:`aside_name` (nothing is deleted; the caller has checked that starting anew was asked for); an empty one is
    replaced. Returns where the old folder went, or None."""
    import logging

    staging, out = Path(staging), Path(out)
    aside = None
    if out.exists() and any(out.iterdir()):
        aside = aside_name(out)
        os.replace(out, aside)  # one atomic rename: the old folder is kept whole under its new name
        logging.getLogger(__name__).warning("--overwrite: moved the earlier %s aside to %s (remove it yourself when no "
                                            "longer needed)", out, aside)
    os.replace(staging, out)  # an empty folder is simply replaced (rename onto it, POSIX)
    _fsync_dir(out.parent)
    return aside


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the complete folder ``tmp`` to ``final``, replacing an existing ``final`` (the old one is removed
    only after the new one is in place)."""
    import shutil

    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Render a matplotlib Figure to PNG and write it atomically; returns the path."""
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
