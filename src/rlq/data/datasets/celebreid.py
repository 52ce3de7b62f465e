"""Celeb-reID parser (docs/datasets.md §3.7)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from rlq.data.records import Dataset, EvalSpec, Protocol, RawSample
from rlq.errors import DatasetError

from ._common import (
    Problems,
    check_layout,
    ext_regex,
    layout_missing,
    make_dataset,
    require_nonempty,
    resolve_root,
    scan_flat,
    stem,
    test_relabel,
    unique_camids,
)

__all__ = ["load_celebreid", "TREE", "CAMERA_RULES", "missing"]

logger = logging.getLogger(__name__)

# x_y_z.jpg: x = pid (-1 occurs and is skipped), y = image index, z undocumented.
NAME_RE = re.compile(r"(-?[0-9]+)_([0-9]+)_([0-9]+)\." + ext_regex(), re.ASCII)
NAME_PATTERN = "x_y_z.jpg with x = pid, y = image index (e.g. 101_25_0.jpg)"
FOLDERS = {"train": "train", "query": "query", "gallery": "gallery"}
CAMERA_RULES = ("unique", "official")

TREE = """\
Celeb-reID/
├── train/*.jpg      632 IDs, 20,208
├── query/*.jpg      420 IDs, 2,972
└── gallery/*.jpg    420 IDs, 11,006      (128×256 images)
"""


def missing(root: str | os.PathLike) -> list[str]:
    """Folders of the Celeb-reID layout that `root` lacks."""
    return layout_missing(Path(os.path.abspath(root)), FOLDERS.values())


def _official_camid(y: str) -> int:
    # §3.7: the authors' artefact, camid = (first digit of the image index) - 1 ("101_25_0" -> 1).
    return int(y[0]) - 1


def load_celebreid(root: str | os.PathLike, *, skip_bad: bool = False, camera_rule: str = "unique") -> Dataset:
    """Parse a Celeb-reID folder; every image is its own clothes class, camid unique per image by default."""
    label = "Celeb-reID"
    if camera_rule not in CAMERA_RULES:
        raise DatasetError(f"Celeb-reID camera_rule must be one of {CAMERA_RULES}, got {camera_rule!r}")
    r = resolve_root(root, label, TREE)
    check_layout(r, label, TREE, FOLDERS.values())
    problems = Problems(label, skip_bad)
    parsed: dict[str, list[tuple[str, str, str, str]]] = {}
    n_ignored = 0
    for split, folder in FOLDERS.items():
        rows = []
        for it in scan_flat(r, folder, NAME_RE, problems, NAME_PATTERN):
            pid_s, y, _z = it.match.groups()
            if pid_s.startswith("-"):
                if pid_s == "-1":
                    n_ignored += 1  # §3.7: pid -1 (junk) is skipped
                else:
                    problems.add(r / it.rel, f"negative identity {pid_s}")
                continue
            rows.append((str(r / it.rel), pid_s, y, stem(it.rel)))
        parsed[split] = rows
    skipped = problems.finish()
    if n_ignored:
        logger.info("Celeb-reID: ignored %d images with pid -1", n_ignored)
    for split, folder in FOLDERS.items():
        require_nonempty(label, split, len(parsed[split]), r / folder, NAME_PATTERN)

    official = camera_rule == "official"
    # No camera annotations: train camid 0 unless the official preset is asked for.
    train = [
        RawSample(path, pid_s, _official_camid(y) if official else 0, s, s)
        for path, pid_s, y, s in parsed["train"]
    ]
    q_cam, g_cam = unique_camids(len(parsed["query"]), len(parsed["gallery"]))
    raw_test: dict[str, list[RawSample]] = {}
    for split, cams in (("query", q_cam), ("gallery", g_cam)):
        # Each image is its own clothes class (CC equals general, SC is empty); key "<split>/<stem>".
        raw_test[split] = [
            RawSample(path, pid_s, _official_camid(y) if official else cam, f"{split}/{s}", f"{split}/{s}")
            for (path, pid_s, y, s), cam in zip(parsed[split], cams)
        ]
    test = test_relabel(label, raw_test)
    notes = "one clothes class per image (derived); camid " + (
        "= first digit of the image index - 1 (authors' artefact)" if official else "unique per image"
    )
    protocol = Protocol((EvalSpec("general", "query", "gallery", "general"),), "general", clothes_derived=True, notes=notes)
    info = {"camera_rule": camera_rule, "ignored_pid_minus_1": n_ignored}
    return make_dataset("celebreid", r, train, test, {"test": protocol}, skipped, label, info)
