"""Gender CSV ``Category,ID,Gender`` (docs/datasets.md §5.3, docs/method.md §3.5)."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlq.data.records import canonical_id
from rlq.errors import ConfigError, SideInputError

from ._common import _check_cell, _check_header, _check_width, _csv_rows, _first, _write_csv

logger = logging.getLogger(__name__)


GENDER_HEADER = ("Category", "ID", "Gender")
#: What a train identity without a gender label gets (docs/method.md §3.5): refused, ignored, or a fixed label.
GENDER_MISSING = ("error", "ignore", "male", "female")


def read_gender_csv(path: str | os.PathLike, categories: Collection[str] | None = None) -> dict[int | str, int]:
    """Read ``Category,ID,Gender`` (1 male, 0 female) into {canonical_id(ID): gender}; IDs are never auto-cast.

    ``categories`` keeps only rows of those categories (e.g. ``("query",)`` for LTCC's test file). An id
    repeated within one category is an error; the same id in two categories must agree (LTCC's test file
    lists each identity under both ``query`` and ``test``).
    """
    path = Path(path)
    what = "gender CSV"
    header, rows = _csv_rows(path, what, ",".join(GENDER_HEADER))
    _check_header(path, what, header, GENDER_HEADER)
    cats = None if categories is None else {str(c) for c in categories}
    out: dict[int | str, int] = {}
    seen: dict[int | str, tuple[int, str, str, int]] = {}  # canon -> (line, category, raw id, gender)
    present: set[str] = set()
    for line, row in rows:
        _check_width(path, what, line, row, 3)
        cat, raw, g = row
        present.add(cat)
        if cats is not None and cat not in cats:
            continue
        if not raw:
            raise SideInputError(f"{what} file {path} line {line}: empty ID; every row needs an identity")
        if g not in ("0", "1"):
            raise SideInputError(
                f"{what} file {path} line {line}: Gender {g!r} for ID {raw!r} is not 0 or 1 (1 = male, 0 = female); "
                "fix the row (doubtful identities are labelled 0, docs/method.md §3.5)"
            )
        gender = int(g)
        key = canonical_id(raw)
        if key in seen:
            pline, pcat, praw, pg = seen[key]
            if pg != gender:
                raise SideInputError(
                    f"{what} file {path} line {line}: duplicate ID {raw!r} with a conflicting value "
                    f"(Gender {gender} here, {pg} for {praw!r} on line {pline}); keep one row per identity"
                )
            if pcat == cat:
                raise SideInputError(
                    f"{what} file {path} line {line}: duplicate ID {raw!r} with an equal value "
                    f"(Gender {gender}, also {praw!r} on line {pline}, category {cat!r}); remove the repeated row"
                )
            continue
        seen[key] = (line, cat, raw, gender)
        out[key] = gender
    if not out:
        if cats is None:
            raise SideInputError(f"{what} file {path} has a header but no data rows; add rows 'train,<ID>,<0|1>'")
        raise SideInputError(
            f"{what} file {path} has no rows with Category in {sorted(cats)}; the file has categories "
            f"{sorted(present)}; pass one of those"
        )
    return out


def write_gender_csv(path: str | os.PathLike, rows: Iterable[tuple[str, str, int]]) -> None:
    """Write (category, raw id, gender) rows as ``Category,ID,Gender``; ids are written exactly as given."""
    out = []
    for cat, raw, g in rows:
        if int(g) not in (0, 1) or int(g) != g:
            raise ValueError(f"cannot write gender {g!r} for ID {raw!r} to {path}: must be 0 or 1")
        out.append((_check_cell(cat, path, "Category"), _check_cell(raw, path, "ID"), str(int(g))))
    _write_csv(path, GENDER_HEADER, out)


def match_gender(
    pid_names: Sequence[str], table: Mapping[Any, int], *, missing: str = "error"
) -> tuple[np.ndarray, list[str]]:
    """Gender per relabelled pid (index = pid): 1 male, 0 female, -1 unknown; plus the raw ids not in the table.

    ``missing``: "error" raises, "ignore" labels -1 (the loss must mask it), "male" / "female" fill 1 / 0.
    Table ids that are not in ``pid_names`` are logged as a warning.
    """
    if missing not in GENDER_MISSING:
        raise ConfigError(f"gender missing-id policy {missing!r} is not one of {GENDER_MISSING}")
    canon_table: dict[int | str, int] = {}
    for k, v in table.items():
        ck = canonical_id(k) if isinstance(k, str) else k
        if v not in (0, 1):
            raise SideInputError(f"gender table value {v!r} for ID {k!r} is not 0 or 1; fix the gender CSV")
        if ck in canon_table and canon_table[ck] != v:
            raise SideInputError(f"gender table has conflicting values for ID {k!r} (equal by value to another key)")
        canon_table[ck] = int(v)
    fill = {"error": -1, "ignore": -1, "male": 1, "female": 0}[missing]
    labels = np.full(len(pid_names), fill, dtype=np.int64)
    missed: list[str] = []
    wanted: set[int | str] = set()
    for i, name in enumerate(pid_names):
        c = canonical_id(str(name))
        wanted.add(c)
        if c in canon_table:
            labels[i] = canon_table[c]
        else:
            missed.append(str(name))
    if missed and missing == "error":
        raise SideInputError(
            f"gender table lacks {len(missed)} of {len(pid_names)} identities: {_first(missed)}; add rows "
            "'train,<ID>,<0|1>' to the gender CSV, or pass missing='ignore' (masked in the loss), "
            "'male' or 'female'"
        )
    if missed:
        logger.warning("gender table lacks %d of %d identities (%s); filled by policy %r",
                       len(missed), len(pid_names), _first(missed), missing)
    extra = [k for k in canon_table if k not in wanted]
    if extra:
        logger.warning("gender table has %d ids that are not in the dataset (ignored): %s", len(extra), _first(extra))
    return labels, missed
