"""LaST parser (docs/datasets.md §3.5)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rlq.data.records import Dataset, EvalSpec, Protocol, RawSample, Sample

from ._common import (
    Listed,
    Problems,
    check_layout,
    ext_regex,
    layout_missing,
    make_dataset,
    require_nonempty,
    resolve_root,
    scan_flat,
    scan_id_folders,
    stem,
    unique_camids,
)

__all__ = ["load_last", "TREE", "missing"]

# Stem split on "_": field 0 is the pid, the last field the outfit index; at least two fields.
NAME_RE = re.compile(r"([0-9]+)(?:_[0-9A-Za-z]+)*_([0-9A-Za-z]+)\." + ext_regex(), re.ASCII)
NAME_PATTERN = "PPPPPP_…_OOO.jpg, fields separated by '_' (e.g. 000002_000_00009_0134_01_004.jpg)"
PID_DIR_RE = re.compile(r"[0-9]+", re.ASCII)
PID_DIR = "an identity number (e.g. 000002)"

TREE = """\
last/
├── train/<pid>/<pid>_….jpg                        5,000 IDs, 71,248
├── val/query/*.jpg   val/gallery/<pid>/*.jpg      56 IDs, 21,379 in total
└── test/query/*.jpg  test/gallery/<pid>/*.jpg     5,806 IDs, 135,529 in total
"""

_DIRS = ("train", "val/query", "val/gallery", "test/query", "test/gallery")
#: evaluation split name -> folder
EVAL_FOLDERS = {"val_query": "val/query", "val_gallery": "val/gallery", "query": "test/query", "gallery": "test/gallery"}


def missing(root: str | os.PathLike) -> list[str]:
    """Folders of the LaST layout that `root` lacks."""
    return layout_missing(Path(os.path.abspath(root)), _DIRS)


def _pid_matches_folder(r: Path, it: Listed, problems: Problems) -> bool:
    if it.folder and int(it.match.group(1)) != int(it.folder):
        problems.add(r / it.rel, f"identity {it.match.group(1)} in the file name differs from its folder {it.folder}")
        return False
    return True


def load_last(root: str | os.PathLike, *, skip_bad: bool = False) -> Dataset:
    """Parse a LaST folder: train, val and test query/gallery with unique per-image cameras."""
    label = "LaST"
    r = resolve_root(root, label, TREE)
    check_layout(r, label, TREE, _DIRS)
    problems = Problems(label, skip_bad)

    train = []
    for it in scan_id_folders(r, "train", PID_DIR_RE, NAME_RE, problems, NAME_PATTERN, PID_DIR):
        if not _pid_matches_folder(r, it, problems):
            continue
        pid_s, last = it.match.group(1), it.match.group(2)
        # §3.5: outfit key = field 0 + "_" + last field; key "<pid folder>_<stem>". LaST has no cameras: camid 0.
        train.append(RawSample(str(r / it.rel), pid_s, 0, f"{pid_s}_{last}", f"{it.folder}_{stem(it.rel)}"))

    listed: dict[str, list[Listed]] = {}
    for split, folder in EVAL_FOLDERS.items():
        if folder.endswith("query"):
            items = scan_flat(r, folder, NAME_RE, problems, NAME_PATTERN)
        else:
            items = scan_id_folders(r, folder, PID_DIR_RE, NAME_RE, problems, NAME_PATTERN, PID_DIR)
        listed[split] = [it for it in items if _pid_matches_folder(r, it, problems)]
    skipped = problems.finish()
    require_nonempty(label, "train", len(train), r / "train", "<pid>/" + NAME_PATTERN)
    for split, folder in EVAL_FOLDERS.items():
        require_nonempty(label, split, len(listed[split]), r / folder, NAME_PATTERN)

    eval_splits: dict[str, tuple[Sample, ...]] = {}
    for q, g in (("val_query", "val_gallery"), ("query", "gallery")):
        # §3.5: camid = running index over the sorted query list, gallery offset by |query|;
        # clothes id = pid (an evaluation-only placeholder: LaST has no test clothes labels).
        q_cam, g_cam = unique_camids(len(listed[q]), len(listed[g]))
        for split, cams in ((q, q_cam), (g, g_cam)):
            samples = []
            for it, camid in zip(listed[split], cams):
                pid_s = it.match.group(1)
                base = stem(it.rel)
                key = f"{EVAL_FOLDERS[split]}/{it.folder}_{base}" if it.folder else f"{EVAL_FOLDERS[split]}/{base}"
                pid = int(pid_s)
                samples.append(Sample(str(r / it.rel), pid, camid, pid, key, {"raw_pid": pid_s, "outfit": pid_s}))
            eval_splits[split] = tuple(samples)

    notes = "every image is its own camera; clothes ids are the pids (placeholder, evaluation masks only)"

    def protocol(q: str, g: str) -> Protocol:
        return Protocol((EvalSpec("general", q, g, "general"),), "general", clothes_derived=True, notes=notes)

    protocols = {"test": protocol("query", "gallery"), "val": protocol("val_query", "val_gallery")}
    return make_dataset("last", r, train, eval_splits, protocols, skipped, label)
