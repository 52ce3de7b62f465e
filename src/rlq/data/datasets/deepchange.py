"""DeepChange parser (docs/datasets.md §3.6): the *-bbox.txt lists define split membership and tracklet ids."""

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
    list_dir,
    looks_like_image,
    make_dataset,
    require_nonempty,
    resolve_root,
    stem,
    test_relabel,
)

__all__ = ["load_deepchange", "TREE", "missing"]

logger = logging.getLogger(__name__)

# p<pid>_c<camera>_<date>_<time>_<frame>_bbox.jpg, e.g. p0003_c01_20201015_172644_000744_bbox.jpg
NAME_RE = re.compile(r"(p([0-9]+))_c([0-9]+)_([0-9]+)_([0-9]+)_([0-9]+)_bbox\." + ext_regex(), re.ASCII)
NAME_PATTERN = "pPPPP_cCC_YYYYMMDD_HHMMSS_FFFFFF_bbox.jpg (e.g. p0003_c01_20201015_172644_000744_bbox.jpg)"
LINE_RE = re.compile(r"([^,]+),\s*(-?[0-9]+)", re.ASCII)

#: split name -> image folder; the list is "<folder>-bbox.txt" beside it.
FOLDERS = {
    "train": "train-set",
    "val_query": "val-set-query",
    "val_gallery": "val-set-gallery",
    "query": "test-set-query",
    "gallery": "test-set-gallery",
}

TREE = """\
DeepChangeDataset/
├── train-set/*.jpg         train-set-bbox.txt          450 IDs, 75,083
├── val-set-query/*.jpg     val-set-query-bbox.txt      4,976
├── val-set-gallery/*.jpg   val-set-gallery-bbox.txt    17,865
├── test-set-query/*.jpg    test-set-query-bbox.txt     17,527
└── test-set-gallery/*.jpg  test-set-gallery-bbox.txt   62,956
(each list line: <basename>,<tracklet_id>)
"""


def missing(root: str | os.PathLike) -> list[str]:
    """Folders and lists of the DeepChange layout that `root` lacks."""
    return layout_missing(Path(os.path.abspath(root)), FOLDERS.values(), [f"{f}-bbox.txt" for f in FOLDERS.values()])


def _read_list(path: Path, problems: Problems) -> dict[str, int]:
    """basename -> tracklet id from one *-bbox.txt list; malformed or repeated lines go to `problems`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read DeepChange list {path}: {exc}") from exc
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = LINE_RE.fullmatch(line)
        if m is None or "/" in m.group(1) or "\\" in m.group(1):
            problems.add(f"{path}:{n}", f"malformed line {line[:80]!r}; expected '<basename>,<tracklet_id>'")
            continue
        name, tracklet = m.group(1).strip(), int(m.group(2))
        if name in out:
            problems.add(f"{path}:{n}", f"{name} is listed twice")
            continue
        out[name] = tracklet
    return out


def load_deepchange(root: str | os.PathLike, *, skip_bad: bool = False) -> Dataset:
    """Parse a DeepChangeDataset folder; camid := tracklet id (real camera in meta['camera'])."""
    label = "DeepChange"
    r = resolve_root(root, label, TREE)
    check_layout(r, label, TREE, FOLDERS.values(), [f"{f}-bbox.txt" for f in FOLDERS.values()])
    problems = Problems(label, skip_bad)
    raw: dict[str, list[RawSample]] = {}
    for split, folder in FOLDERS.items():
        list_path = r / f"{folder}-bbox.txt"
        listed = _read_list(list_path, problems)
        files, dirs = list_dir(r / folder)
        for d in dirs:
            logger.warning("DeepChange: ignoring unexpected sub-folder %s", r / folder / d)
        on_disk = {f for f in files if looks_like_image(f)}
        for name in sorted(set(listed) - on_disk):
            problems.add(r / folder / name, f"listed in {list_path.name} but missing on disk")
        for name in sorted(on_disk - set(listed)):
            problems.add(r / folder / name, f"on disk but not listed in {list_path.name}")
        items = []
        for name in sorted(on_disk & set(listed)):
            m = NAME_RE.fullmatch(name)
            if m is None:
                problems.add(r / folder / name, "file name does not match the expected pattern", f"Expected names: {NAME_PATTERN}.")
                continue
            pid_s, _pid_digits, cam_s, date, _time, _frame = m.groups()
            if int(cam_s) < 1:
                problems.add(r / folder / name, f"camera c{cam_s}: cameras are numbered from 1")
                continue
            tracklet = listed[name]
            # §3.6: camid := tracklet id (only same-pid, same-tracklet items are junk); outfit = pid + date.
            meta = {"camera": int(cam_s) - 1, "tracklet": tracklet}
            items.append(RawSample(str(r / folder / name), pid_s, tracklet, f"{pid_s}_{date}", stem(name), meta))
        raw[split] = items
    skipped = problems.finish()
    for split, folder in FOLDERS.items():
        require_nonempty(label, split, len(raw[split]), r / folder, NAME_PATTERN)

    # "p0003" -> 3; two spellings of one number ("p3", "p0003") would merge identities silently.
    pid_of: dict[str, int] = {}
    by_value: dict[int, str] = {}
    for rs in raw.values():
        for s in rs:
            v = int(s.raw_pid[1:])
            if by_value.setdefault(v, s.raw_pid) != s.raw_pid:
                raise DatasetError(f"DeepChange: identity {v} is spelled both {by_value[v]!r} and {s.raw_pid!r}; rename the files.")
            pid_of[s.raw_pid] = v
    eval_splits = {}
    eval_splits.update(test_relabel(label, {"val_query": raw["val_query"], "val_gallery": raw["val_gallery"]}, pid_of))
    eval_splits.update(test_relabel(label, {"query": raw["query"], "gallery": raw["gallery"]}, pid_of))
    notes = "camid is the tracklet id; the real camera is in meta['camera']"
    protocols = {
        "test": Protocol((EvalSpec("general", "query", "gallery", "general"),), "general", notes=notes),
        "val": Protocol((EvalSpec("general", "val_query", "val_gallery", "general"),), "general", notes=notes),
    }
    return make_dataset("deepchange", r, raw["train"], eval_splits, protocols, skipped, label)
