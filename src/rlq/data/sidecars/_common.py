"""Shared helpers of the side-input readers and writers: reading text and CSV rows with line numbers, header and
number checks, atomic CSV writing (docs/datasets.md §5.3)."""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rlq.errors import SideInputError
from rlq.io import atomic_write_csv, csv_cell_value

_SHOW = 5  # how many offending values an error message lists


def _first(items: Iterable[Any], n: int = _SHOW) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SideInputError(f"{what} file {path} does not exist; check the path (docs/datasets.md §5)") from None
    except IsADirectoryError:
        raise SideInputError(f"{what} path {path} is a directory; pass the file itself") from None
    except OSError as e:
        raise SideInputError(f"cannot read {what} file {path}: {e}") from None


def _read_text(path: Path, what: str) -> str:
    data = _read_bytes(path, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SideInputError(
            f"{what} file {path} is not UTF-8 text (bad byte at offset {e.start}); "
            "re-save it as UTF-8 or check that this is the right file"
        ) from None


def _csv_rows(path: Path, what: str, expected_header: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, stripped fields), ...]) with blank lines skipped."""
    text = _read_text(path, what)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            rows.append((reader.line_num, [csv_cell_value(c.strip()) for c in row]))  # '=x written by rlq -> =x
    except csv.Error as e:
        raise SideInputError(f"{what} file {path} line {reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise SideInputError(f"{what} file {path} is empty; expected the header {expected_header!r} and data rows")
    return rows[0][1], rows[1:]


def _check_header(path: Path, what: str, header: list[str], expected: Sequence[str]) -> None:
    if list(header) != list(expected):
        raise SideInputError(
            f"{what} file {path} line 1: header is {','.join(header)!r}, expected {','.join(expected)!r}; "
            "check that this is the right file (docs/datasets.md §5.3)"
        )


def _check_width(path: Path, what: str, line: int, row: list[str], n: int) -> None:
    if len(row) != n:
        raise SideInputError(
            f"{what} file {path} line {line}: {len(row)} fields {','.join(row)[:200]!r}, expected {n} as in the header"
        )


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _parse_float(s: str) -> float | None:
    """A finite float from a plain decimal string, or None."""
    if not _NUMBER.fullmatch(s):
        return None
    v = float(s)
    return v if math.isfinite(v) else None


def _parse_count(s: str) -> int | None:
    """A non-negative integer written as "3" or "3.0", or None."""
    v = _parse_float(s)
    if v is None or v < 0 or not v.is_integer():
        return None
    return int(v)


def _put_once(
    out: dict[str, Any], first: dict[str, tuple[int, str]], key: str, value: Any, cat: str, line: int,
    path: Path, what: str,
) -> None:
    """out[key] = value; a key may repeat only under another Category with an equal value.

    (PRCC_Size.csv lists one image under both train and val.)
    """
    if key in out:
        pline, pcat = first[key]
        kind = "an equal" if out[key] == value else "a conflicting"
        if out[key] != value or pcat == cat:
            raise SideInputError(
                f"{what} file {path} line {line}: duplicate Image key {key!r} with {kind} value "
                f"({value!r} here, {out[key]!r} on line {pline}, category {pcat!r}); keep one row per image"
            )
        return
    out[key] = value
    first[key] = (line, cat)


def _check_cell(value: Any, path: str | os.PathLike, field: str) -> str:
    """A CSV cell written by us must be a non-empty single-line string without surrounding spaces."""
    s = str(value)
    if not s or s != s.strip() or "\n" in s or "\r" in s:
        raise ValueError(f"cannot write {field} {value!r} to {path}: empty, padded or multi-line")
    return s


def _write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    # cells that a spreadsheet would run as formulas are quoted; _csv_rows reads them back exactly
    atomic_write_csv(path, header, rows)
