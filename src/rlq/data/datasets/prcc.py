"""PRCC parser (docs/datasets.md §3.4)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from rlq.data.records import Dataset, EvalSpec, Protocol, RawSample, Sample, canonical_id

from ._common import (
    Problems,
    check_layout,
    ext_regex,
    layout_missing,
    make_dataset,
    require_nonempty,
    resolve_root,
    scan_id_folders,
    stem,
    test_relabel,
)

__all__ = ["load_prcc", "TREE", "missing"]

logger = logging.getLogger(__name__)

TRAIN_RE = re.compile(r"([ABC])_cropped_rgb([0-9]+)\." + ext_regex(), re.ASCII)
TEST_RE = re.compile(r"cropped_rgb([0-9]+)\." + ext_regex(), re.ASCII)
PID_DIR_RE = re.compile(r"[0-9]+", re.ASCII)
TRAIN_PATTERN = "{A,B,C}_cropped_rgbNNN.jpg (regex ^([ABC])_cropped_rgb(\\d+)\\.(jpg|jpeg|png|bmp)$)"
TEST_PATTERN = "cropped_rgbNNN.jpg (regex ^cropped_rgb(\\d+)\\.(jpg|jpeg|png|bmp)$)"
PID_DIR = "an identity number (e.g. 092)"
CAMS = {"A": 0, "B": 1, "C": 2}
#: test split name per camera folder (B -> A is "SC", C -> A is "CC").
TEST_SPLITS = {"A": "gallery", "B": "query_b", "C": "query_c"}

TREE = """\
prcc/rgb/
├── train/<pid>/{A,B,C}_cropped_rgbNNN.jpg     150 IDs, 17,896
├── val/<pid>/…                                same 150 IDs, 5,002
└── test/{A,B,C}/<pid>/cropped_rgbNNN.jpg      71 IDs: A 3,384 · B 3,873 · C 3,543
(the root may be prcc/ or prcc/rgb/)
"""

_DIRS = ("train", "val", "test/A", "test/B", "test/C")


def _base(root: Path) -> tuple[Path, str]:
    """The folder holding train/val/test: `root/rgb`, or `root` itself when given prcc/rgb directly."""
    if (root / "rgb").is_dir():
        return root / "rgb", "rgb/"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root, ""
    return root / "rgb", "rgb/"


def missing(root: str | os.PathLike) -> list[str]:
    """Folders of the PRCC layout that `root` lacks."""
    r = Path(os.path.abspath(root))
    if not r.is_dir():
        return [str(r)]
    base, prefix = _base(r)
    if prefix and not base.is_dir():
        return ["rgb/"]
    return [prefix + m for m in layout_missing(base, _DIRS)]


def load_prcc(root: str | os.PathLike, *, skip_bad: bool = False) -> Dataset:
    """Parse a PRCC folder: train / val, and test gallery A with query sets B ("sc") and C ("cc")."""
    label = "PRCC"
    r = resolve_root(root, label, TREE)
    base, prefix = _base(r)
    if prefix and not base.is_dir():
        check_layout(r, label, TREE, ["rgb"])
    check_layout(base, label, TREE, _DIRS)
    problems = Problems(label, skip_bad)

    trainval: dict[str, list[RawSample]] = {}
    for split in ("train", "val"):
        items = []
        for it in scan_id_folders(base, split, PID_DIR_RE, TRAIN_RE, problems, TRAIN_PATTERN, PID_DIR):
            cam = it.match.group(1)
            pid_s = it.folder
            # §3.4: outfit <pid> for cameras A and B, <pid>C for camera C; key "<pid folder>_<stem>".
            outfit = pid_s + "C" if cam == "C" else pid_s
            items.append(RawSample(str(base / it.rel), pid_s, CAMS[cam], outfit, f"{pid_s}_{stem(it.rel)}"))
        trainval[split] = items

    test: dict[str, list[tuple[str, str, int]]] = {}
    for cam, split in TEST_SPLITS.items():
        listed = scan_id_folders(base, f"test/{cam}", PID_DIR_RE, TEST_RE, problems, TEST_PATTERN, PID_DIR)
        test[split] = [(str(base / it.rel), it.folder, CAMS[cam]) for it in listed]
    skipped = problems.finish()
    for split in ("train", "val"):
        require_nonempty(label, split, len(trainval[split]), base / split, TRAIN_PATTERN)
    for cam, split in TEST_SPLITS.items():
        require_nonempty(label, split, len(test[split]), base / "test" / cam, "<pid>/" + TEST_PATTERN)

    # §3.4: derived clothes 2j (A, B) / 2j+1 (C), j = the pid's rank among test-A identities.
    a_pids = sorted({int(p) for _, p, _ in test["gallery"]})
    rank = {p: j for j, p in enumerate(a_pids)}
    extra = sorted({int(p) for s in ("query_b", "query_c") for _, p, _ in test[s]} - set(rank))
    if extra:
        logger.warning("PRCC: %d query identities have no gallery (test/A) images: %s", len(extra), extra[:10])
        rank.update({p: len(a_pids) + i for i, p in enumerate(extra)})
    cam_letter = {v: k for k, v in CAMS.items()}
    eval_splits: dict[str, tuple[Sample, ...]] = {}
    val = test_relabel(label, {"val": trainval["val"]})["val"]
    eval_splits["val"] = val
    for split, rows in test.items():
        samples = []
        for path, pid_s, camid in rows:
            pid = canonical_id(pid_s)
            assert isinstance(pid, int)
            is_c = camid == CAMS["C"]
            clothes = 2 * rank[pid] + (1 if is_c else 0)
            key = f"{cam_letter[camid]}/{pid_s}_{stem(path)}"
            meta = {"raw_pid": pid_s, "outfit": pid_s + ("C" if is_c else "")}
            samples.append(Sample(path, pid, camid, clothes, key, meta))
        eval_splits[split] = tuple(samples)

    protocol = Protocol(
        specs=(EvalSpec("sc", "query_b", "gallery", "general"), EvalSpec("cc", "query_c", "gallery", "general")),
        selection="cc",
        clothes_derived=True,
        notes="multi-shot (full gallery A); clothes ids derived from identities (2j / 2j+1): evaluation masks only",
    )
    # No "val" protocol: PRCC's val split reuses the train identities (§3.4).
    return make_dataset("prcc", r, trainval["train"], eval_splits, {"test": protocol}, skipped, label)
