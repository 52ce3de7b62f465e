"""Readers and writers for every side input: annotation CSVs, AlphaPose / COCO keypoints, LIP parsing maps.

Formats are specified in docs/datasets.md §5. Every reader validates what it reads and raises
:class:`rlq.errors.SideInputError` naming the file, the row / line / entry, the bad value and the fix.
Every writer is atomic (``rlq.io``). No torch here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np

from rlq.data.lip import ALL_CLOTHES_IDS, LIP_LABELS, LIP_PALETTE, LOWER_IDS, NUM_LIP, UPPER_IDS
from rlq.data.records import canonical_id
from rlq.errors import ConfigError, SideInputError
from rlq.io import atomic_open, atomic_write_csv, atomic_write_json, csv_cell_value

__all__ = [
    # gender
    "GENDER_HEADER",
    "GENDER_MISSING",
    "read_gender_csv",
    "write_gender_csv",
    "match_gender",
    # pose clusters
    "POSE_CLUSTER_KS",
    "POSE_VECTOR_KINDS",
    "POSE_COLUMNS",
    "read_pose_clusters",
    "write_pose_clusters",
    "check_coverage",
    # faulty lists
    "read_key_list",
    "read_faulty",
    # sizes
    "SIZE_BUCKETS",
    "size_bucket",
    "read_size_csv",
    # quality
    "QUALITY_HEADER",
    "ARTIFACTS",
    "read_quality_csv",
    "write_quality_csv",
    # keypoints
    "Detection",
    "ALPHAPOSE_FILE",
    "read_alphapose",
    "write_alphapose",
    "select_person",
    "read_alphapose_tree",
    "read_coco_keypoints",
    # parsing
    "LIP_LABELS",
    "UPPER_IDS",
    "LOWER_IDS",
    "ALL_CLOTHES_IDS",
    "LIP_PALETTE",
    "LEGACY_PARTS",
    "schp_output_name",
    "parsing_path",
    "read_parsing",
    "write_parsing",
    "lip_region_masks",
    "read_legacy_masks",
    "legacy_masks_to_labels",
]

logger = logging.getLogger(__name__)

_SHOW = 5  # how many offending values an error message lists


def _first(items: Iterable[Any], n: int = _SHOW) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


# --------------------------------------------------------------------------------------------------
# Low-level text / CSV helpers
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Gender CSV (docs/datasets.md §5.3, docs/method.md §3.5)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Pose-cluster CSV (docs/datasets.md §5.3, docs/method.md §3.4)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Faulty-mask key lists (docs/datasets.md §5.3)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Size buckets (docs/datasets.md §5.3)
# --------------------------------------------------------------------------------------------------

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
        if any(v not in (0, 1) for v in vals) or sum(vals) != 1:  # type: ignore[arg-type]
            raise SideInputError(
                f"{what} file {path} line {line}: bucket values {row[2:]} for {key!r} are not one-hot "
                "(exactly one 1, the rest 0); fix the row"
            )
        _put_once(out, first, key, SIZE_BUCKETS[vals.index(1)], row[0], line, path, what)
    return out


# --------------------------------------------------------------------------------------------------
# SynthCC quality CSV (rlq's own format)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Keypoints: AlphaPose results JSON and COCO annotations (docs/datasets.md §5.1, docs/method.md §3.4)
# --------------------------------------------------------------------------------------------------

ALPHAPOSE_FILE = "alphapose-results.json"
_NUM_KPTS = 17


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected person: COCO-17 keypoints (17, 3) as (x, y, confidence), pose score and optional box."""

    keypoints: np.ndarray
    score: float
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        kp = np.array(self.keypoints, dtype=np.float64).reshape(_NUM_KPTS, 3)
        if not np.isfinite(kp).all():
            raise ValueError("Detection keypoints must be finite")
        kp.setflags(write=False)
        score = float(self.score)
        if not math.isfinite(score):
            raise ValueError(f"Detection score must be finite, got {self.score!r}")
        box = self.box
        if box is not None:
            box = tuple(float(v) for v in box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"Detection box must be 4 finite numbers [x, y, w, h], got {self.box!r}")
        object.__setattr__(self, "keypoints", kp)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "box", box)

    @property
    def area(self) -> float:
        """Box area w*h; without a box, the area of the keypoints' bounding box."""
        if self.box is not None:
            return max(self.box[2], 0.0) * max(self.box[3], 0.0)
        xy = self.keypoints[:, :2]
        w, h = xy.max(axis=0) - xy.min(axis=0)
        return float(w * h)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detection):
            return NotImplemented
        return (
            self.score == other.score
            and self.box == other.box
            and np.array_equal(self.keypoints, other.keypoints)
        )

    __hash__ = None  # type: ignore[assignment]


def _load_json(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an integer too long to convert
        raise SideInputError(f"{what} file {path} is not valid JSON ({e}); re-run the tool that wrote it") from None
    except RecursionError:
        raise SideInputError(f"{what} file {path} is nested too deeply to be a keypoint file") from None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any, n: int) -> list[float] | None:
    """v as n finite floats, or None."""
    if not isinstance(v, list) or len(v) != n or not all(_is_num(x) for x in v):
        return None
    try:
        out = [float(x) for x in v]
    except OverflowError:
        return None
    return out if all(math.isfinite(x) for x in out) else None


def _bad(path: Path, what: str, idx: int, field: str, value: Any, need: str) -> SideInputError:
    shown = repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return SideInputError(f"{what} file {path} entry {idx}: field {field!r} = {shown} {need}; re-run the pose tool")


def _parse_detection(
    path: Path, what: str, idx: int, entry: dict, box_field: str, score_default: float | None
) -> Detection:
    kp = entry.get("keypoints")
    kp_vals = _numbers(kp, 3 * _NUM_KPTS)
    if kp_vals is None:
        n = len(kp) if isinstance(kp, list) else None
        need = (f"has {n} values, needs {3 * _NUM_KPTS} (17 x (x, y, c))" if n is not None and n != 3 * _NUM_KPTS
                else f"must be a list of {3 * _NUM_KPTS} finite numbers (17 x (x, y, c))")
        raise _bad(path, what, idx, "keypoints", kp, need)
    if "score" not in entry and score_default is not None:
        score = score_default
    else:
        s = entry.get("score")
        sv = _numbers([s], 1)
        if sv is None:
            raise _bad(path, what, idx, "score", s, "must be a finite number")
        score = sv[0]
    box = None
    raw_box = entry.get(box_field)
    if raw_box is None and box_field == "box":
        raw_box = entry.get("bbox")
    if raw_box is not None:
        bv = _numbers(raw_box, 4)
        if bv is None:
            raise _bad(path, what, idx, box_field, raw_box, "must be 4 finite numbers [x, y, w, h]")
        box = (bv[0], bv[1], bv[2], bv[3])
    return Detection(np.asarray(kp_vals).reshape(_NUM_KPTS, 3), score, box)


def read_alphapose(path: str | os.PathLike) -> dict[str, list[Detection]]:
    """Read ``alphapose-results.json`` as {image_id: [Detection, ...]} in file order."""
    path = Path(path)
    what = "AlphaPose results"
    data = _load_json(path, what)
    if not isinstance(data, list):
        raise SideInputError(
            f"{what} file {path} holds a JSON {type(data).__name__}, expected a list of detections "
            "(AlphaPose's default 'coco' output format)"
        )
    out: dict[str, list[Detection]] = {}
    for idx, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise SideInputError(f"{what} file {path} entry {idx}: a JSON {type(entry).__name__}, expected an object")
        img = entry.get("image_id")
        if not isinstance(img, str) or not img.strip():
            raise _bad(path, what, idx, "image_id", img, "must be the image's file name (a non-empty string)")
        out.setdefault(img, []).append(_parse_detection(path, what, idx, entry, "box", None))
    return out


def write_alphapose(path: str | os.PathLike, detections_by_image: Mapping[str, Sequence[Detection]]) -> None:
    """Write detections in AlphaPose's standard results format (category_id 1)."""
    out = []
    for img, dets in detections_by_image.items():
        for d in dets:
            entry: dict[str, Any] = {
                "image_id": str(img),
                "category_id": 1,
                "keypoints": [float(v) for v in d.keypoints.reshape(-1)],
                "score": float(d.score),
            }
            if d.box is not None:
                entry["box"] = [float(v) for v in d.box]
            out.append(entry)
    atomic_write_json(path, out, indent=None)


def select_person(dets: Sequence[Detection]) -> Detection | None:
    """The highest-score detection, ties broken by the larger box (docs/method.md §3.4); None if there is none.

    Without a box the keypoints' bounding box stands in; remaining ties keep the first in file order.
    """
    best: Detection | None = None
    for d in dets:
        if best is None or (d.score, d.area) > (best.score, best.area):
            best = d
    return best


def _dir_files(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if e.is_file()}
    except OSError:
        return set()


def read_alphapose_tree(
    pose_root: str | os.PathLike, dataset_root: str | os.PathLike, sample_paths: Sequence[str]
) -> dict[str, Detection | None]:
    """The selected person per sample path from ``<pose_root>/<leaf folder>/alphapose-results.json``.

    ``pose_root`` may also be one JSON file (flat datasets). Images without entries, and leaf folders
    without a results file, give None (null pose, docs/method.md §3.4). An ``image_id`` that is not an image of
    its leaf folder is an error.
    """
    pose_root = Path(pose_root)
    root_abs = os.path.abspath(dataset_root)
    if not pose_root.exists():
        raise SideInputError(
            f"pose root {pose_root} does not exist; run AlphaPose per leaf folder into a tree that mirrors "
            f"the dataset (docs/datasets.md §5.1)"
        )
    flat = pose_root.is_file()
    by_leaf: dict[str, list[tuple[str, str]]] = {}  # leaf rel dir -> [(sample path, basename)]
    for s in sample_paths:
        p = s if os.path.isabs(s) else os.path.join(root_abs, s)
        p = os.path.abspath(p)
        rel = os.path.relpath(p, root_abs)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise SideInputError(f"sample {s} is not under the dataset root {dataset_root}; pass the matching root")
        leaf = "" if flat else os.path.dirname(rel)
        by_leaf.setdefault(leaf, []).append((s, os.path.basename(rel)))

    out: dict[str, Detection | None] = {}
    missing_files: list[Path] = []
    for leaf, items in by_leaf.items():
        json_path = pose_root if flat else pose_root / leaf / ALPHAPOSE_FILE
        names: dict[str, list[str]] = {}
        for s, base in items:
            names.setdefault(base, []).append(s)
        if flat:
            clash = [b for b, ss in names.items() if len({os.path.dirname(x) for x in ss}) > 1]
            if clash:
                raise SideInputError(
                    f"pose file {json_path} is one flat file but image names repeat across folders "
                    f"({_first(clash)}); run AlphaPose per leaf folder and pass the tree's root"
                )
        if not json_path.is_file():
            missing_files.append(json_path)
            for s, _ in items:
                out[s] = None
            continue
        dets = read_alphapose(json_path)
        valid = set(names)
        parents = {os.path.dirname(os.path.abspath(s if os.path.isabs(s) else os.path.join(root_abs, s)))
                   for s, _ in items}
        for folder in parents:
            valid |= _dir_files(Path(folder))
        stray = [k for k in dets if k not in valid]
        if stray:
            where = "the samples" if flat else f"leaf folder {os.path.join(root_abs, leaf)}"
            raise SideInputError(
                f"AlphaPose results file {json_path}: image_id {_first(stray)} is not an image of {where}; "
                "AlphaPose image ids are basenames, so run it once per leaf folder and store the results "
                "under the mirrored path (docs/datasets.md §5.1)"
            )
        for s, base in items:
            out[s] = select_person(dets.get(base, ()))
    if missing_files:
        logger.warning("%d leaf folders have no %s (null pose for their images), e.g. %s",
                       len(missing_files), ALPHAPOSE_FILE, missing_files[0])
    return out


def read_coco_keypoints(path: str | os.PathLike) -> dict[str, list[Detection]]:
    """Read COCO keypoint annotations as {basename of file_name: [Detection, ...]} (every image listed)."""
    path = Path(path)
    what = "COCO keypoints"
    data = _load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise SideInputError(
            f"{what} file {path} must be a JSON object with lists 'images' and 'annotations' (COCO format)"
        )
    by_id: dict[Any, str] = {}
    out: dict[str, list[Detection]] = {}
    for idx, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            raise SideInputError(f"{what} file {path} images[{idx}]: a JSON {type(im).__name__}, expected an object")
        fid, fname = im.get("id"), im.get("file_name")
        if not isinstance(fname, str) or not fname.strip():
            raise SideInputError(f"{what} file {path} images[{idx}]: field 'file_name' = {fname!r} must be a string")
        if not isinstance(fid, (int, str)) or isinstance(fid, bool):
            raise SideInputError(f"{what} file {path} images[{idx}]: field 'id' = {fid!r} must be an int or string")
        base = os.path.basename(fname.strip().replace("\\", "/"))
        if fid in by_id:
            raise SideInputError(f"{what} file {path} images[{idx}]: duplicate image id {fid!r}")
        if base in out:
            raise SideInputError(
                f"{what} file {path} images[{idx}]: file name {base!r} occurs twice; basenames must be unique "
                "(split the file per folder)"
            )
        by_id[fid] = base
        out[base] = []
    for idx, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise SideInputError(
                f"{what} file {path} annotations[{idx}]: a JSON {type(ann).__name__}, expected an object"
            )
        iid = ann.get("image_id")
        if isinstance(iid, (list, dict)) or iid not in by_id:
            raise SideInputError(
                f"{what} file {path} annotations[{idx}]: field 'image_id' = {iid!r} is not an id in 'images'"
            )
        out[by_id[iid]].append(_parse_detection(path, what, idx, ann, "bbox", 1.0))
    return out


# --------------------------------------------------------------------------------------------------
# LIP parsing maps (docs/datasets.md §5.2, docs/method.md §3.3)
# --------------------------------------------------------------------------------------------------

#: Parts of the authors' legacy mask layout that the method uses (docs/datasets.md §5.2).
LEGACY_PARTS = ("shirt", "pant", "clothes")
_LEGACY_FILL = 11  # scarf: an all-clothes id outside U and L


def schp_output_name(image_name: str) -> str:
    """SCHP's output name: the input name minus its last 4 characters, plus ``.png`` (``a.jpeg`` -> ``a..png``)."""
    return image_name[:-4] + ".png"


def parsing_path(
    parsing_root: str | os.PathLike, dataset_root: str | os.PathLike, image_path: str | os.PathLike
) -> Path:
    """Where SCHP's map for ``image_path`` lies in a tree under ``parsing_root`` mirroring the dataset."""
    root_abs = os.path.abspath(dataset_root)
    p = os.fspath(image_path)
    p = os.path.abspath(p if os.path.isabs(p) else os.path.join(root_abs, p))
    rel = os.path.relpath(p, root_abs)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or rel == os.curdir:
        raise SideInputError(f"image {image_path} is not under the dataset root {dataset_root}; pass the matching root")
    return Path(parsing_root) / os.path.dirname(rel) / schp_output_name(os.path.basename(rel))


def _check_labels(path: Path, labels: np.ndarray, expected_size: tuple[int, int] | None) -> np.ndarray:
    h, w = labels.shape[:2]
    if expected_size is not None and (w, h) != tuple(expected_size):
        raise SideInputError(
            f"parsing map {path} is {w}x{h} (W x H) but its image is {expected_size[0]}x{expected_size[1]}; "
            "SCHP maps are in the input frame: re-run SCHP on the original images"
        )
    bad = np.unique(labels[labels >= NUM_LIP])
    if bad.size:
        raise SideInputError(
            f"parsing map {path} has label values {_first(bad.tolist())}, but LIP ids are 0..{NUM_LIP - 1}; "
            "use the LIP checkpoint (20 classes) and save the raw label map, not a colour image"
        )
    return labels


def read_parsing(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """A LIP label map (uint8, H x W) from a palette / grey PNG or an H x W x 20 logits ``.npy``.

    ``expected_size`` is the image's (W, H).
    """
    path = Path(path)
    if not path.is_file():
        raise SideInputError(f"parsing map {path} does not exist; run SCHP on this image's folder (docs/datasets.md §5.2)")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # ValueError, OSError, EOFError, ...: any unreadable file
            raise SideInputError(f"parsing logits {path} cannot be read as .npy ({type(e).__name__}: {e})") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive renamed .npy
            arr.close()
            raise SideInputError(f"parsing logits {path} are an .npz archive; save one H x W x 20 array with np.save")
        if arr.ndim != 3 or arr.shape[2] != NUM_LIP \
                or arr.dtype.kind not in "fiu" or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise SideInputError(
                f"parsing logits {path} have shape {getattr(arr, 'shape', None)} dtype "
                f"{getattr(arr, 'dtype', None)}; expected float H x W x {NUM_LIP} (SCHP --logits)"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise SideInputError(f"parsing logits {path} contain NaN or infinite values; re-run SCHP")
        labels = np.argmax(arr, axis=2).astype(np.uint8)
        return _check_labels(path, labels, expected_size)
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ("P", "L"):
                raise SideInputError(
                    f"parsing map {path} is a {mode!r} image; expected SCHP's palette ('P') PNG whose pixel index "
                    "is the LIP id, or a grey ('L') label PNG, not a colour rendering"
                )
            labels = np.array(img, dtype=np.uint8)
    except SideInputError:
        raise
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise SideInputError(f"parsing map {path} cannot be read as an image ({type(e).__name__}: {e})") from None
    if labels.ndim != 2 or labels.size == 0:
        raise SideInputError(f"parsing map {path} has shape {labels.shape}; expected H x W")
    return _check_labels(path, labels, expected_size)


def write_parsing(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a LIP label map as a palette PNG with ``LIP_PALETTE`` (pixel index = label id)."""
    from PIL import Image

    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"cannot write parsing map {path}: need a non-empty integer H x W array, got "
                         f"{arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() >= NUM_LIP:
        raise ValueError(f"cannot write parsing map {path}: labels must be in 0..{NUM_LIP - 1}")
    img = Image.fromarray(arr.astype(np.uint8))
    img.putpalette([c for rgb in LIP_PALETTE for c in rgb])  # "L" becomes "P"
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")


def lip_region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Recolouring regions of a label map (docs/method.md §3.3): ``upper`` U, ``lower`` L, ``all`` A (bool H x W)."""
    labels = np.asarray(labels)
    return {
        "upper": np.isin(labels, UPPER_IDS),
        "lower": np.isin(labels, LOWER_IDS),
        "all": np.isin(labels, ALL_CLOTHES_IDS),
    }


def read_legacy_masks(mask_dir: str | os.PathLike, key: str) -> dict[str, np.ndarray]:
    """The authors' ``<key>_shirt/_pant/_clothes.png`` masks (3-channel 0/255) as bool H x W arrays."""
    from PIL import Image

    mask_dir = Path(mask_dir)
    out: dict[str, np.ndarray] = {}
    for part in LEGACY_PARTS:
        p = mask_dir / f"{key}_{part}.png"
        if not p.is_file():
            raise SideInputError(
                f"legacy mask {p} ({part!r} part of {key!r}) does not exist; the legacy layout needs "
                f"{', '.join(f'<key>_{q}.png' for q in LEGACY_PARTS)} per image, or use SCHP label maps"
            )
        try:
            with Image.open(p) as img:
                arr = np.asarray(img.convert("RGB"))
        except Exception as e:  # any undecodable file
            raise SideInputError(f"legacy mask {p} cannot be read as an image ({type(e).__name__}: {e})") from None
        if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise SideInputError(f"legacy mask {p} has shape {arr.shape}; expected H x W x 3")
        out[part] = arr.max(axis=2) >= 128
    shapes = {k: v.shape for k, v in out.items()}
    if len(set(shapes.values())) != 1:
        raise SideInputError(
            f"legacy masks of {key!r} in {mask_dir} differ in size {shapes}; regenerate them from one label map"
        )
    return out


def legacy_masks_to_labels(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """A LIP label map whose U / L / A regions equal the shirt / pant / clothes masks (5, 9, else 11 = scarf)."""
    missing = [p for p in LEGACY_PARTS if p not in masks]
    if missing:
        raise SideInputError(f"legacy masks lack the parts {missing}; need {LEGACY_PARTS}")
    shirt, pant, clothes = (np.asarray(masks[p], dtype=bool) for p in LEGACY_PARTS)
    if not shirt.shape == pant.shape == clothes.shape or shirt.ndim != 2:
        raise SideInputError(
            f"legacy masks differ in shape: shirt {shirt.shape}, pant {pant.shape}, clothes {clothes.shape}"
        )
    overlap = int((shirt & pant).sum())
    outside = int(((shirt | pant) & ~clothes).sum())
    if overlap or outside:
        # Masks cut from one label map are disjoint and nested; anything else cannot be one label map.
        logger.warning("legacy masks are inconsistent (%d shirt/pant overlap px, %d shirt/pant px outside clothes); "
                       "shirt wins over pant, and shirt/pant pixels join the all-clothes region", overlap, outside)
    labels = np.zeros(shirt.shape, dtype=np.uint8)
    labels[clothes] = _LEGACY_FILL
    labels[pant] = LOWER_IDS[0]
    labels[shirt] = UPPER_IDS[0]
    return labels
