"""VC-Clothes parser (docs/datasets.md §3.8)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rlq.data.records import Dataset, EvalSpec, Protocol, RawSample

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
)

__all__ = ["load_vcclothes", "TREE", "SUBSETS", "missing"]

NAME_RE = re.compile(r"([0-9]+)-([0-9]+)-([0-9]+)-([0-9]+)\." + ext_regex(), re.ASCII)
NAME_PATTERN = "PPPP-CC-LL-FFFF.jpg (pid, camera, outfit, frame; e.g. 0001-01-01-0001.jpg)"
FOLDERS = {"train": "train", "query": "query", "gallery": "gallery"}
#: §3.8: camera subsets (1-based camera numbers) evaluated with the general rule.
SUBSETS = {"sc": (2, 3), "cc": (3, 4)}

TREE = """\
VC-Clothes/
├── train/*.jpg      PPPP-CC-LL-FFFF.jpg   256 IDs, 9,449
├── query/*.jpg      …                     256 IDs, 1,020
└── gallery/*.jpg    …                     256 IDs, 8,591
"""


def missing(root: str | os.PathLike) -> list[str]:
    """Folders of the VC-Clothes layout that `root` lacks."""
    return layout_missing(Path(os.path.abspath(root)), FOLDERS.values())


def load_vcclothes(root: str | os.PathLike, *, skip_bad: bool = False) -> Dataset:
    """Parse a VC-Clothes folder; test evaluated on all cameras and on the sc (2, 3) / cc (3, 4) subsets."""
    label = "VC-Clothes"
    r = resolve_root(root, label, TREE)
    check_layout(r, label, TREE, FOLDERS.values())
    problems = Problems(label, skip_bad)
    raw: dict[str, list[RawSample]] = {}
    for split, folder in FOLDERS.items():
        items = []
        for it in scan_flat(r, folder, NAME_RE, problems, NAME_PATTERN):
            pid_s, cam_s, outfit_s, _frame = it.match.groups()
            cam = int(cam_s)
            if cam < 1:
                problems.add(r / it.rel, f"camera {cam_s}: cameras are numbered from 1")
                continue
            s = stem(it.rel)
            key = s if split == "train" else f"{folder}/{s}"
            items.append(RawSample(str(r / it.rel), pid_s, cam - 1, f"{pid_s}-{outfit_s}", key))
        raw[split] = items
    skipped = problems.finish()
    for split, folder in FOLDERS.items():
        require_nonempty(label, split, len(raw[split]), r / folder, NAME_PATTERN)

    test = test_relabel(label, {"query": raw["query"], "gallery": raw["gallery"]})
    eval_splits = dict(test)
    for subset, cams in SUBSETS.items():
        camids = {c - 1 for c in cams}
        for split in ("query", "gallery"):
            name = f"{split}_{subset}"
            eval_splits[name] = tuple(s for s in test[split] if s.camid in camids)
            require_nonempty(label, name, len(eval_splits[name]), r / split, f"cameras {cams}: {NAME_PATTERN}")
    protocol = Protocol(
        specs=(
            EvalSpec("general", "query", "gallery", "general"),
            EvalSpec("sc", "query_sc", "gallery_sc", "general"),
            EvalSpec("cc", "query_cc", "gallery_cc", "general"),
        ),
        selection="general",
        notes="sc = cameras 2, 3; cc = cameras 3, 4; all with the general rule",
    )
    return make_dataset("vcclothes", r, raw["train"], eval_splits, {"test": protocol}, skipped, label)
