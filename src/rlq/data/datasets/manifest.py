"""Generic CSV manifest for custom data (docs/datasets.md §4), with an optional `<manifest>.protocol.yaml`."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import yaml

from rlq.data.records import MODES, Dataset, EvalSpec, Protocol, RawSample, Sample
from rlq.errors import DatasetError
from rlq.safe_yaml import load_yaml

from ._common import Problems, test_relabel

__all__ = ["load_manifest", "TREE", "SPLITS", "COLUMNS", "CAMERA_KEYS", "missing", "protocol_path"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery", "val_query", "val_gallery")
REQUIRED = ("path", "split", "pid")
COLUMNS = REQUIRED + ("camid", "clothes", "query_set", "tracklet", "gender", "pose", "parsing", "key")
CAMERA_KEYS = ("camid", "tracklet", "none")
PROTOCOL_KEYS = ("modes", "camera_key", "selection_metric", "lq_mix")
QUERY_SET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)

TREE = """\
<folder>/manifest.csv                 UTF-8 CSV, header row, one row per image:
    path,split,pid[,camid,clothes,query_set,tracklet,gender,pose,parsing,key]
    path   relative to the manifest's folder (no absolute paths, no '..')
    split  train | query | gallery | val_query | val_gallery
    pid    identity key, compared as an exact string ("007" != "7")
<folder>/manifest.protocol.yaml       optional: modes, camera_key (camid|tracklet|none),
                                      selection_metric, lq_mix
<folder>/<images named by the path column>
"""


def missing(root: str | os.PathLike) -> list[str]:
    """[the manifest path] when the CSV file does not exist, else []."""
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    return [] if p.is_file() else [str(p)]


def _sort_key(s: str) -> tuple[int, int, str]:
    """Numeric order for plain ASCII-digit keys, then string order; exact strings stay distinct."""
    return (0, int(s), s) if s.isascii() and s.isdigit() else (1, 0, s)


def _rank_map(values: Sequence[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(sorted(set(values), key=_sort_key))}


@dataclass
class _Row:
    line: int
    split: str  # the Dataset split name (query sets become "query_<name>")
    rel: str
    path: str
    pid: str
    camid: str | None
    clothes: str | None
    tracklet: str | None
    key: str
    query_set: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def protocol_path(manifest: str | os.PathLike) -> Path | None:
    """The `<manifest>.protocol.yaml` beside the manifest (`x.protocol.yaml` or `x.csv.protocol.yaml`), if any."""
    m = Path(os.path.abspath(os.fspath(manifest)))
    cands = list(dict.fromkeys([m.with_suffix(".protocol.yaml"), m.with_name(m.name + ".protocol.yaml")]))
    found = [c for c in cands if c.is_file()]
    if len(found) > 1:
        raise DatasetError(f"manifest {m}: both {found[0].name} and {found[1].name} exist; keep one protocol file.")
    return found[0] if found else None


def _read_protocol(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), path)  # refuses alias bombs (rlq/safe_yaml.py)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot read manifest protocol file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DatasetError(f"manifest protocol file {path} must be a mapping with keys {PROTOCOL_KEYS}")
    unknown = sorted(str(k) for k in data if k not in PROTOCOL_KEYS)
    if unknown:
        raise DatasetError(f"manifest protocol file {path}: unknown key(s) {unknown}; valid keys: {list(PROTOCOL_KEYS)}")
    out: dict[str, Any] = {"lq_mix": data.get("lq_mix")}
    modes = data.get("modes")
    if modes is not None:
        if isinstance(modes, str):
            modes = [modes]
        if not isinstance(modes, list) or not modes or any(not isinstance(m, str) or m.lower() not in MODES for m in modes):
            raise DatasetError(f"manifest protocol file {path}: modes must be a non-empty list drawn from {list(MODES)}, got {modes!r}")
        modes = list(dict.fromkeys(m.lower() for m in modes))
    out["modes"] = modes
    ck = data.get("camera_key", "camid")
    if ck not in CAMERA_KEYS:
        raise DatasetError(f"manifest protocol file {path}: camera_key must be one of {list(CAMERA_KEYS)}, got {ck!r}")
    out["camera_key"] = ck
    sel = data.get("selection_metric")
    if sel is not None and not isinstance(sel, str):
        raise DatasetError(f"manifest protocol file {path}: selection_metric must be a string, got {sel!r}")
    out["selection_metric"] = sel
    return out


def _real_inside(full: str, base: Path, cache: dict[str, str]) -> str | None:
    """None when ``full`` (lexically under ``base``) really lies under ``base`` once symlinks are resolved,
    else its real path. ``cache`` maps folders to their real paths (one lstat per row for a large manifest)."""
    real_base = cache.get("")
    if real_base is None:
        real_base = cache[""] = os.path.realpath(base)
    parent, name = os.path.split(full)
    real_parent = cache.get(parent)
    if real_parent is None:
        real_parent = cache[parent] = os.path.realpath(parent)
    # a file symlink is followed too; a plain (or missing) file adds nothing to its folder's real path
    real = os.path.realpath(full) if os.path.islink(full) else os.path.join(real_parent, name)
    try:
        inside = os.path.commonpath([real, real_base]) == real_base
    except ValueError:  # different drives (Windows)
        inside = False
    return None if inside else real


def _resolve_path(value: str, base: Path, allow_outside: bool, where: str, what: str = "path",
                  real_cache: dict[str, str] | None = None) -> tuple[str, str]:
    """(normalised relative POSIX path, absolute path) of a manifest path; refuses escapes (§4, security):
    absolute paths, '..', and symlinks inside the folder that point out of it (compared as real paths)."""
    v = value.replace("\\", "/")  # manifests written on Windows
    win = PureWindowsPath(value)
    if v.startswith("/") or win.drive:
        if not allow_outside:
            raise DatasetError(
                f"{where}: {what} {value!r} is absolute; manifest paths must be relative to the manifest's folder "
                f"{base}. Pass allow_outside_root=True to allow paths outside it."
            )
        full = os.path.normpath(value)
        return full.replace(os.sep, "/"), full
    rel = posixpath.normpath(v)
    if rel == ".." or rel.startswith("../"):
        if not allow_outside:
            raise DatasetError(
                f"{where}: {what} {value!r} escapes the manifest's folder {base} via '..'. "
                f"Move the images under that folder or pass allow_outside_root=True."
            )
    full = os.path.normpath(os.path.join(base, rel))
    if not allow_outside:
        real = _real_inside(full, base, {} if real_cache is None else real_cache)
        if real is not None:
            raise DatasetError(
                f"{where}: {what} {value!r} leaves the manifest's folder {base} through a symlink (it resolves to "
                f"{real}). Copy the images under that folder or pass allow_outside_root=True."
            )
    return rel, full


def _read_csv(mpath: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        text = mpath.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read manifest {mpath}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"manifest {mpath} is not UTF-8 (bad byte at offset {exc.start}); save it as UTF-8.") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        header = next(reader, None)
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DatasetError(f"manifest {mpath} line {reader.line_num}: malformed CSV ({exc})") from exc
    if header is None or not any(h.strip() for h in header):
        raise DatasetError(f"manifest {mpath} is empty; expected a header row with columns {list(REQUIRED)}\n{TREE}")
    return [h.strip().lower() for h in header], rows


def _relabel_train_exact(raw: Sequence[RawSample]) -> tuple[tuple[Sample, ...], int, int, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Like records.relabel_train, but identities are exact strings ("007" and "7" are two people, §4)."""
    pid_names = sorted({r.raw_pid for r in raw}, key=_sort_key)
    outfit_names = sorted({r.outfit for r in raw})
    pid_of = {p: i for i, p in enumerate(pid_names)}
    clo_of = {c: i for i, c in enumerate(outfit_names)}
    p2c = np.zeros((len(pid_names), len(outfit_names)), dtype=bool)
    samples = []
    for r in raw:
        p, c = pid_of[r.raw_pid], clo_of[r.outfit]
        p2c[p, c] = True
        samples.append(Sample(r.path, p, r.camid, c, r.key, {"raw_pid": r.raw_pid, "outfit": r.outfit, **r.meta}))
    return tuple(samples), len(pid_names), len(outfit_names), p2c, tuple(pid_names), tuple(outfit_names)


def _outfit(row: _Row) -> str:
    # Clothes are scoped to the pid; a row without clothes is its own outfit. JSON keeps the pair injective.
    return json.dumps([row.pid, row.clothes] if row.clothes is not None else [row.pid, None, row.key], ensure_ascii=False)


def _resolve_selection(sel: str, specs: Sequence[EvalSpec], where: str) -> str:
    names = [s.name for s in specs]
    if sel in names:
        return sel
    mode = sel if sel in MODES else sel.rsplit("_", 1)[-1]
    for s in specs:
        if s.mode == mode:
            return s.name
    raise DatasetError(f"{where}: selection_metric {sel!r} is not one of the evaluations {names}")


def _no_match_counts(specs: Sequence[EvalSpec], splits: Mapping[str, Sequence[Sample]]) -> list[str]:
    """Warnings for queries without any true match in a mode (docs/datasets.md §2 good sets)."""
    out = []
    for spec in specs:
        by_pid: dict[int, list[tuple[int, int]]] = {}
        for g in splits[spec.gallery]:
            by_pid.setdefault(g.pid, []).append((g.camid, g.clothes_id))
        n_bad = 0
        for q in splits[spec.query]:
            cands = by_pid.get(q.pid, [])
            if spec.mode == "general":
                ok = any(c != q.camid for c, _ in cands)
            elif spec.mode == "cc":
                ok = any(c != q.camid and cl != q.clothes_id for c, cl in cands)
            else:
                ok = any(c != q.camid and cl == q.clothes_id for c, cl in cands)
            n_bad += not ok
        if n_bad:
            out.append(f"{n_bad} of {len(splits[spec.query])} queries of {spec.query!r} have no valid match in {spec.name!r} ({spec.mode} rule)")
    return out


def load_manifest(
    root: str | os.PathLike,
    *,
    skip_bad: bool = False,
    allow_overlap: bool = False,
    allow_outside_root: bool = False,
    protocol_file: str | os.PathLike | None = None,
    check_files: bool = True,
) -> Dataset:
    """Parse a CSV manifest (`root` is the CSV file) and its optional protocol YAML into a Dataset."""
    mpath = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not mpath.is_file():
        raise DatasetError(f"manifest {mpath} does not exist (pass the path of the CSV file).\nExpected layout:\n{TREE}")
    base = mpath.parent
    columns, raw_rows = _read_csv(mpath)
    dup_cols = sorted({c for c in columns if columns.count(c) > 1})
    if dup_cols:
        raise DatasetError(f"manifest {mpath}: duplicate column(s) {dup_cols} in the header")
    missing_cols = [c for c in REQUIRED if c not in columns]
    if missing_cols:
        raise DatasetError(f"manifest {mpath}: missing required column(s) {missing_cols}; the header is {columns}")
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        logger.warning("manifest %s: ignoring unknown column(s) %s (known: %s)", mpath, unknown, list(COLUMNS))

    ppath = Path(os.path.abspath(protocol_file)) if protocol_file is not None else protocol_path(mpath)
    if ppath is not None and not ppath.is_file():
        raise DatasetError(f"manifest protocol file {ppath} does not exist")
    proto = _read_protocol(ppath)
    camera_key = proto.get("camera_key", "camid")
    if camera_key == "tracklet" and "tracklet" not in columns:
        raise DatasetError(f"manifest {mpath}: camera_key is 'tracklet' but the manifest has no 'tracklet' column")

    problems = Problems(f"manifest {mpath}", skip_bad, "row(s)")
    rows: list[_Row] = []
    real_cache: dict[str, str] = {}  # folder -> real path, for the symlink containment check
    for row_no, (line, cells) in enumerate(raw_rows, 1):
        if not any(c.strip() for c in cells):
            continue
        where = f"{mpath} row {row_no} (line {line})"
        if len(cells) != len(columns):
            problems.add(where, f"row has {len(cells)} fields, the header has {len(columns)}")
            continue
        v = {c: cell.strip() for c, cell in zip(columns, cells)}
        opt = {c: (v.get(c) or None) for c in COLUMNS}
        split = v["split"]
        if split not in SPLITS:
            problems.add(where, f"unknown split {split!r}; expected one of {list(SPLITS)}")
            continue
        if not v["path"] or not v["pid"]:
            problems.add(where, "empty path or pid")
            continue
        rel, full = _resolve_path(v["path"], base, allow_outside_root, where, real_cache=real_cache)
        if rel in (".", ""):
            problems.add(where, f"path {v['path']!r} names the manifest's folder, not an image")
            continue
        if check_files and not os.path.isfile(full):
            problems.add(where, f"image not found: {full}")
            continue
        meta: dict[str, Any] = {}
        reasons: list[str] = []  # one skipped line per row, whatever number of bad fields
        if opt["gender"] is not None:
            if opt["gender"] not in ("0", "1"):
                reasons.append(f"gender {opt['gender']!r} must be 0 or 1")
            else:
                meta["gender"] = int(opt["gender"])
        if opt["pose"] is not None:
            try:
                pose_f = float(opt["pose"])
                ok = pose_f >= 0 and pose_f.is_integer()
            except ValueError:
                ok = False
            if not ok:
                reasons.append(f"pose {opt['pose']!r} must be a cluster number 0, 1, 2, ...")
            else:
                meta["pose"] = int(pose_f)
        if opt["parsing"] is not None:
            meta["parsing"] = _resolve_path(opt["parsing"], base, allow_outside_root, where, "parsing path",
                                            real_cache)[1]
        if opt["tracklet"] is not None:
            meta["tracklet"] = opt["tracklet"]
        qs = opt["query_set"]
        name = split
        if split == "query" and qs is not None and qs != "query":
            if QUERY_SET_RE.fullmatch(qs) is None:
                reasons.append(f"query_set {qs!r} must be letters, digits, '_', '.' or '-'")
            name = f"query_{qs}"
        elif qs is not None and split != "query":
            logger.warning("%s: query_set %r ignored on a %s row", where, qs, split)
        if reasons:
            problems.add(where, "; ".join(reasons))
            continue
        key = opt["key"] or posixpath.splitext(rel)[0]
        rows.append(
            _Row(line, name, rel, full, v["pid"], opt["camid"], opt["clothes"], opt["tracklet"], key,
                 (qs or "query") if split == "query" else None, meta)
        )
    skipped = problems.finish()
    if not rows:
        raise DatasetError(f"manifest {mpath} has no usable rows")

    for attr, what in (("path", "path"), ("key", "key")):
        seen: dict[str, int] = {}
        dups = []
        for r in rows:
            k = getattr(r, attr)
            if k in seen:
                dups.append(f"{k!r} (lines {seen[k]} and {r.line})")
            else:
                seen[k] = r.line
        if dups:
            raise DatasetError(f"manifest {mpath}: duplicate {what}(s): " + "; ".join(dups[:10]) + (f"; ... {len(dups)} in all" if len(dups) > 10 else ""))

    by_split: dict[str, list[_Row]] = {}
    for r in rows:
        by_split.setdefault(r.split, []).append(r)
    for rs in by_split.values():
        rs.sort(key=lambda r: r.rel)
    query_splits = sorted((s for s in by_split if s == "query" or s.startswith("query_")), key=lambda s: (s != "query", s))
    has_test = bool(query_splits) or "gallery" in by_split
    if has_test and not (query_splits and "gallery" in by_split):
        raise DatasetError(f"manifest {mpath}: query rows need gallery rows and vice versa (has {sorted(by_split)})")
    has_val = "val_query" in by_split or "val_gallery" in by_split
    if has_val and not ("val_query" in by_split and "val_gallery" in by_split):
        raise DatasetError(f"manifest {mpath}: val_query rows need val_gallery rows and vice versa")

    train_pids = {r.pid for r in by_split.get("train", [])}
    test_pids = {r.pid for s in [*query_splits, "gallery"] for r in by_split.get(s, [])}
    overlap = sorted(train_pids & test_pids, key=_sort_key)
    if overlap and not allow_overlap:
        raise DatasetError(
            f"manifest {mpath}: {len(overlap)} train identities also appear in query/gallery: {overlap[:10]}. "
            "Train and test identities must be disjoint; pass allow_overlap=True if this is intended."
        )

    eval_names = [*query_splits, "gallery", "val_query", "val_gallery"]
    eval_rows = [r for s in eval_names for r in by_split.get(s, [])]
    clothes_complete = all(r.clothes is not None for r in eval_rows)
    modes = proto.get("modes") or (["general", "cc", "sc"] if clothes_complete and eval_rows else ["general"])
    if any(m in ("cc", "sc") for m in modes) and not clothes_complete:
        lacking = [r.line for r in eval_rows if r.clothes is None]
        raise DatasetError(
            f"manifest {mpath}: modes {modes} need a clothes value on every query and gallery row; "
            f"{len(lacking)} rows lack one (lines {lacking[:10]}). Fill the clothes column or use modes: [general]."
        )

    # Camera ids: camera keys ranked over the whole manifest; an empty key is a camera of its own (§4).
    ordered = [r for s in ["train", *eval_names] for r in by_split.get(s, [])]
    src = {"camid": lambda r: r.camid, "tracklet": lambda r: r.tracklet, "none": lambda r: None}[camera_key]
    cam_map = _rank_map([src(r) for r in ordered if src(r) is not None])
    real_cam = _rank_map([r.camid for r in ordered if r.camid is not None])
    next_unique = len(cam_map)
    camid_of: dict[int, int] = {}
    for r in ordered:
        s = src(r)
        if s is None:
            camid_of[id(r)] = next_unique
            next_unique += 1
        else:
            camid_of[id(r)] = cam_map[s]
        if camera_key != "camid" and r.camid is not None:
            r.meta["camera"] = real_cam[r.camid]

    def raw(r: _Row) -> RawSample:
        meta = dict(r.meta)
        if r.query_set is not None:
            meta["query_set"] = r.query_set
        return RawSample(r.path, r.pid, camid_of[id(r)], _outfit(r), r.key, meta)

    train_rows = by_split.get("train", [])
    n_no_clothes = sum(r.clothes is None for r in train_rows)
    if n_no_clothes:
        logger.warning("manifest %s: %d train rows have no clothes value; each is its own outfit", mpath, n_no_clothes)
    train, n_pids, n_clothes, p2c, pid_names, clothes_names = _relabel_train_exact([raw(r) for r in train_rows])

    # Test pids stay exact strings: map them injectively to ints (their value when all are plain numbers).
    eval_pids = sorted({r.pid for r in eval_rows}, key=_sort_key)
    numeric = all(p.isascii() and p.isdigit() for p in eval_pids) and len({int(p) for p in eval_pids}) == len(eval_pids)
    pid_of = {p: int(p) for p in eval_pids} if numeric else {p: i for i, p in enumerate(eval_pids)}

    splits: dict[str, tuple[Sample, ...]] = {}
    if train:
        splits["train"] = train
    protocols: dict[str, Protocol] = {}
    warnings: list[str] = []
    sel = proto.get("selection_metric") or ("cc" if "cc" in modes else modes[0])
    groups = []
    if has_test:
        groups.append(("test", query_splits, "gallery"))
    if has_val:
        groups.append(("val", ["val_query"], "val_gallery"))
    for pname, qsplits, gsplit in groups:
        names = [*qsplits, gsplit]
        relabelled = test_relabel(f"manifest {mpath}", {s: [raw(r) for r in by_split[s]] for s in names}, pid_of)
        splits.update(relabelled)
        specs = []
        for q in qsplits:
            prefix = "" if q in ("query", "val_query") else q[len("query_"):] + "_"
            specs += [EvalSpec(f"{prefix}{m}", q, gsplit, m) for m in modes]
        derived = any(r.clothes is None for s in names for r in by_split[s])
        protocols[pname] = Protocol(tuple(specs), _resolve_selection(sel, specs, str(ppath or mpath)), clothes_derived=derived)
        g_pids = {r.pid for r in by_split[gsplit]}
        for q in qsplits:
            lost = sorted({r.pid for r in by_split[q]} - g_pids, key=_sort_key)
            if lost:
                warnings.append(f"{len(lost)} identities of {q!r} have no image in {gsplit!r}: {lost[:10]}")
        warnings += _no_match_counts(specs, relabelled)
    for w in warnings:
        logger.warning("manifest %s: %s", mpath, w)

    info = {
        "manifest": str(mpath),
        "protocol_file": str(ppath) if ppath else None,
        "camera_key": camera_key,
        "modes": list(modes),
        "selection_metric": sel,
        "lq_mix": proto.get("lq_mix"),
        "query_sets": [r for r in query_splits],
        "warnings": warnings,
    }
    return Dataset(
        name="manifest",
        root=str(base),
        splits=splits,
        protocols=protocols,
        num_train_pids=n_pids,
        num_train_clothes=n_clothes,
        pid2clothes=p2c,
        train_pid_names=pid_names,
        train_clothes_names=clothes_names,
        skipped=skipped,
        info=info,
    )
