"""Pose-cluster CSV (docs/datasets.md §5.3, docs/method.md §3.4) and the coverage check of a side table."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlq.errors import SideInputError

from ._common import _check_cell, _check_width, _csv_rows, _first, _parse_count, _put_once, _write_csv

POSE_CLUSTER_KS = (5, 10, 15, 20, 25, 30, 35, 40)
POSE_VECTOR_KINDS = ("R_LA", "R_LAC", "R_A", "N_LA", "N_LAC", "N_A")
#: The authors' 48 label columns, in file order.
POSE_COLUMNS = tuple(f"{kind}_{k}" for k in POSE_CLUSTER_KS for kind in POSE_VECTOR_KINDS)


def read_pose_clusters(path: str | os.PathLike, column: str = "R_LA_15") -> dict[str, int]:
    """Read one label column of a pose-cluster CSV as {Image key: label}; ``3.0`` -> 3."""
    path = Path(path)
    what = "pose-cluster CSV"
    header, rows = _csv_rows(path, what, "Category,Image,R_LA_5,...")
    if header[:2] != ["Category", "Image"]:
        raise SideInputError(
            f"{what} file {path} line 1: header starts {','.join(header[:2])!r}, expected 'Category,Image'; "
            "check that this is a pose-cluster file (docs/datasets.md §5.3)"
        )
    label_cols = [h for h in header[2:] if h]
    if column not in header[2:]:
        raise SideInputError(
            f"{what} file {path} has no column {column!r}; available columns: {label_cols}; "
            "pass one of those (the paper uses 'R_LA_15') or regenerate the file with that K"
        )
    j = header.index(column)
    out: dict[str, int] = {}
    first: dict[str, tuple[int, str]] = {}
    for line, row in rows:
        _check_width(path, what, line, row, len(header))
        key = row[1]
        if not key:
            raise SideInputError(f"{what} file {path} line {line}: empty Image key")
        v = _parse_count(row[j])
        if v is None:
            raise SideInputError(
                f"{what} file {path} line {line}: {column} = {row[j]!r} for {key!r} is not a non-negative integer "
                "(written as '3' or '3.0'); regenerate the file"
            )
        _put_once(out, first, key, v, row[0], line, path, what)
    if not out:
        raise SideInputError(f"{what} file {path} has a header but no data rows")
    return out


def write_pose_clusters(
    path: str | os.PathLike,
    keys: Sequence[str],
    categories: Sequence[str],
    columns: Mapping[str, Sequence[int]],
) -> None:
    """Write pose-cluster labels in the authors' layout (values as ``3.0``; columns in the given order)."""
    n = len(keys)
    if len(categories) != n:
        raise ValueError(f"write_pose_clusters({path}): {len(categories)} categories for {n} keys")
    if not columns:
        raise ValueError(f"write_pose_clusters({path}): no label columns given")
    names = [_check_cell(c, path, "column name") for c in columns]
    if {"Category", "Image"} & set(names):
        raise ValueError(f"write_pose_clusters({path}): column names may not be 'Category' or 'Image'")
    cols = []
    for name in names:
        vals = [int(v) for v in columns[name]]
        if len(vals) != n:
            raise ValueError(f"write_pose_clusters({path}): column {name!r} has {len(vals)} values for {n} keys")
        if any(v < 0 for v in vals):
            raise ValueError(f"write_pose_clusters({path}): column {name!r} has negative labels")
        cols.append(vals)
    if len(set(keys)) != n:
        raise ValueError(f"write_pose_clusters({path}): duplicate keys")
    rows = (
        [_check_cell(categories[i], path, "Category"), _check_cell(keys[i], path, "Image")]
        + [f"{c[i]}.0" for c in cols]
        for i in range(n)
    )
    _write_csv(path, ["Category", "Image", *names], rows)


def check_coverage(keys: Iterable[str], table: Mapping[str, Any], what: str, path: str | os.PathLike) -> None:
    """Raise if any key is missing from a side table (docs/datasets.md §6 pitfall 9: cover 100 % of the keys)."""
    keys = list(keys)
    missing = [k for k in keys if k not in table]
    if missing:
        raise SideInputError(
            f"{what} {path} lacks {len(missing)} of {len(keys)} keys: {_first(missing)}; the table's keys look "
            f"like {_first(list(table)[:3], 3)}; regenerate the table for this dataset or check the key "
            "convention (docs/datasets.md §1)"
        )
