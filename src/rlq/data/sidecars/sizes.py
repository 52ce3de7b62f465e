"""Size buckets by image height (docs/datasets.md §5.3)."""

from __future__ import annotations

import os
from pathlib import Path

from rlq.errors import SideInputError

from ._common import _check_header, _check_width, _csv_rows, _parse_count, _put_once

SIZE_BUCKETS = ("<32", "32-64", "64-128", "128-256", ">256")
_SIZE_EDGES = (32, 64, 128, 256)


def size_bucket(height: int) -> str:
    """Resolution bucket of an image height in pixels: <32, [32,64), [64,128), [128,256), >=256 -> ">256".

    These are rlq's own edges (lower edge inclusive). The authors' tables do not say which dimension they
    measured nor whether edges are inclusive, so their ``*_Size.csv`` may differ at exact edge values.
    """
    h = int(height)
    if h < 0:
        raise ValueError(f"image height must be >= 0, got {height!r}")
    for edge, name in zip(_SIZE_EDGES, SIZE_BUCKETS):
        if h < edge:
            return name
    return SIZE_BUCKETS[-1]


def read_size_csv(path: str | os.PathLike) -> dict[str, str]:
    """Read ``Category,Image,<32,...,>256`` (one-hot per row) as {Image: bucket label}."""
    path = Path(path)
    what = "size CSV"
    expected = ("Category", "Image", *SIZE_BUCKETS)
    header, rows = _csv_rows(path, what, ",".join(expected))
    _check_header(path, what, header, expected)
    out: dict[str, str] = {}
    first: dict[str, tuple[int, str]] = {}
    for line, row in rows:
        _check_width(path, what, line, row, len(expected))
        key = row[1]
        if not key:
            raise SideInputError(f"{what} file {path} line {line}: empty Image key")
        vals = [_parse_count(v) for v in row[2:]]
        if any(v not in (0, 1) for v in vals) or sum(vals) != 1:  # type: ignore[arg-type] - a None fails the test on the left first
            raise SideInputError(
                f"{what} file {path} line {line}: bucket values {row[2:]} for {key!r} are not one-hot "
                "(exactly one 1, the rest 0); fix the row"
            )
        _put_once(out, first, key, SIZE_BUCKETS[vals.index(1)], row[0], line, path, what)
    return out
