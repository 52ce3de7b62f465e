"""Atomic file writing: every file rlq writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

__all__ = ["save_figure", "replace_dir", "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "sha256_file",
           "json_dumps", "strict_json_value"]


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
