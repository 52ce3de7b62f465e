"""LTCC parser (docs/datasets.md §3.3); SynthCC is written in the same layout and parsed here too."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rlq.data.records import Dataset, EvalSpec, Protocol, RawSample

from ._common import (
    Problems,
    check_layout,
    layout_missing,
    make_dataset,
    require_nonempty,
    resolve_root,
    scan_flat,
    stem,
    test_relabel,
)

__all__ = ["load_ltcc", "load_synthcc", "TREE", "SYNTHCC_TREE", "NAME_PATTERN", "missing"]

# pid, per-person outfit index, camera 1-12, frame. ASCII digits only; the extension is matched
# case-insensitively (".PNG" is accepted) — the only liberty taken with the published pattern.
NAME_RE = re.compile(r"([0-9]+)_([0-9]+)_c([0-9]+)_([0-9]+)\.(?i:png)", re.ASCII)
NAME_PATTERN = r"PPP_O_cCC_FFFFFF.png (regex ^(\d+)_(\d+)_c(\d+)_(\d+)\.png$, extension in any case)"

#: split name -> folder under the root
FOLDERS = {"train": "train", "query": "query", "gallery": "test"}

TREE = """\
LTCC_ReID/
├── train/   PPP_O_cCC_FFFFFF.png    9,576   (e.g. 001_1_c11_015833.png)
├── query/   …                         493
├── test/    …                       7,050   (the gallery)
└── info/    optional id lists (unused)
"""

SYNTHCC_TREE = """\
SynthCC/                 (the LTCC layout and naming)
├── train/   PPP_O_cCC_FFFFFF.png
├── query/   …
└── test/    …           (the gallery)
"""


def missing(root: str | os.PathLike) -> list[str]:
    """Folders of the LTCC layout that `root` lacks."""
    return layout_missing(Path(os.path.abspath(root)), FOLDERS.values())


def _load(root: str | os.PathLike, skip_bad: bool, name: str, label: str) -> Dataset:
    tree = SYNTHCC_TREE if name == "synthcc" else TREE
    r = resolve_root(root, label, tree)
    check_layout(r, label, tree, FOLDERS.values())
    problems = Problems(label, skip_bad)
    raw: dict[str, list[RawSample]] = {}
    for split, folder in FOLDERS.items():
        items = []
        for it in scan_flat(r, folder, NAME_RE, problems, NAME_PATTERN):
            pid_s, outfit_s, cam_s, _frame = it.match.groups()
            cam = int(cam_s)
            if cam < 1:
                problems.add(r / it.rel, f"camera c{cam_s}: cameras are numbered from 1")
                continue
            s = stem(it.rel)
            # docs/datasets.md §1: train key = stem, test key = "<split folder>/<stem>".
            key = s if split == "train" else f"{folder}/{s}"
            items.append(RawSample(str(r / it.rel), pid_s, cam - 1, f"{pid_s}_{outfit_s}", key))
        raw[split] = items
    skipped = problems.finish()
    for split, folder in FOLDERS.items():
        require_nonempty(label, split, len(raw[split]), r / folder, NAME_PATTERN)
    test = test_relabel(label, {"query": raw["query"], "gallery": raw["gallery"]})
    # §3.3 / pitfall 6: "general" applies only the camera rule; CC and SC use the real outfit keys.
    protocol = Protocol(
        specs=(
            EvalSpec("general", "query", "gallery", "general"),
            EvalSpec("cc", "query", "gallery", "cc"),
            EvalSpec("sc", "query", "gallery", "sc"),
        ),
        selection="cc",
    )
    return make_dataset(name, r, raw["train"], test, {"test": protocol}, skipped, label)


def load_ltcc(root: str | os.PathLike, *, skip_bad: bool = False) -> Dataset:
    """Parse an LTCC_ReID folder into train / query / gallery splits with the general, CC and SC protocol."""
    return _load(root, skip_bad, "ltcc", "LTCC")


def load_synthcc(root: str | os.PathLike, *, skip_bad: bool = False) -> Dataset:
    """Parse a SynthCC folder (LTCC layout and naming) into a Dataset named 'synthcc'."""
    return _load(root, skip_bad, "synthcc", "SynthCC")
