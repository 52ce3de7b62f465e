"""SynthCC quality CSV ``Category,Image,Artifact,Severity,Param`` (rlq's own format; docs/datasets.md, "Side inputs")."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from rlq.errors import SideInputError

from ._common import (
    _check_cell,
    _check_header,
    _check_width,
    _csv_rows,
    _parse_count,
    _parse_float,
    _put_once,
    _write_csv,
)

QUALITY_HEADER = ("Category", "Image", "Artifact", "Severity", "Param")
#: Artifact kinds. Param: pixelation = target shorter side (px), defocus = Gaussian sigma,
#: motion = kernel length (px), clean = 0.
ARTIFACTS = ("clean", "pixelation", "defocus", "motion")
_MAX_SEVERITY = 3


def _quality_problem(artifact: str, severity: int, param: float) -> str | None:
    if artifact not in ARTIFACTS:
        return f"Artifact {artifact!r} is not one of {ARTIFACTS}"
    if not 0 <= severity <= _MAX_SEVERITY:
        return f"Severity {severity} is not in 0..{_MAX_SEVERITY}"
    if (artifact == "clean") != (severity == 0):
        return f"Severity {severity} does not fit Artifact {artifact!r} (severity 0 means clean and only clean)"
    if not math.isfinite(param) or param < 0:
        return f"Param {param!r} must be a finite number >= 0"
    if artifact == "clean" and param != 0:
        return f"Param {param!r} must be 0 for a clean image"
    return None


def read_quality_csv(path: str | os.PathLike) -> dict[str, tuple[str, int, float]]:
    """Read ``Category,Image,Artifact,Severity,Param`` as {Image: (artifact, severity, param)}."""
    path = Path(path)
    what = "quality CSV"
    header, rows = _csv_rows(path, what, ",".join(QUALITY_HEADER))
    _check_header(path, what, header, QUALITY_HEADER)
    out: dict[str, tuple[str, int, float]] = {}
    first: dict[str, tuple[int, str]] = {}
    for line, row in rows:
        _check_width(path, what, line, row, len(QUALITY_HEADER))
        _, key, art, sev_s, par_s = row
        if not key:
            raise SideInputError(f"{what} file {path} line {line}: empty Image key")
        sev = _parse_count(sev_s)
        par = _parse_float(par_s)
        if sev is None or par is None:
            raise SideInputError(
                f"{what} file {path} line {line}: Severity {sev_s!r} must be an integer and Param {par_s!r} a "
                "finite number; regenerate the file"
            )
        problem = _quality_problem(art, sev, par)
        if problem:
            raise SideInputError(f"{what} file {path} line {line}: {problem} (Image {key!r}); regenerate the file")
        _put_once(out, first, key, (art, sev, par), row[0], line, path, what)
    return out


def write_quality_csv(path: str | os.PathLike, rows: Iterable[tuple[str, str, str, int, float]]) -> None:
    """Write (category, key, artifact, severity, param) rows; floats are written with repr (exact round trip)."""
    out = []
    for cat, key, art, sev, par in rows:
        problem = _quality_problem(str(art), int(sev), float(par))
        if problem or int(sev) != sev:
            raise ValueError(f"cannot write quality row for {key!r} to {path}: {problem or 'non-integer severity'}")
        out.append((_check_cell(cat, path, "Category"), _check_cell(key, path, "Image"), str(art), str(int(sev)),
                    repr(float(par))))
    _write_csv(path, QUALITY_HEADER, out)
