"""Faulty-mask key lists (docs/datasets.md §5.3)."""

from __future__ import annotations

import os
from pathlib import Path

from rlq.errors import SideInputError

from ._common import _read_text


def read_key_list(path: str | os.PathLike) -> set[str]:
    """One key per line, no header; tolerates CRLF, blank lines and a missing final newline."""
    path = Path(path)
    what = "key list"
    text = _read_text(path, what)
    out: set[str] = set()
    for i, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key:
            continue
        if "," in key:
            raise SideInputError(
                f"{what} file {path} line {i}: {key[:200]!r} contains a comma; a faulty list has one key per line "
                "and no header (is this a CSV table?)"
            )
        out.add(key)
    return out


def read_faulty(pant_path: str | os.PathLike | None, shirt_path: str | os.PathLike | None) -> set[str]:
    """Union of the pant- and shirt-faulty key lists (docs/method.md §3.3); a None path contributes nothing."""
    out: set[str] = set()
    for p in (pant_path, shirt_path):
        if p is not None:
            out |= read_key_list(p)
    return out
