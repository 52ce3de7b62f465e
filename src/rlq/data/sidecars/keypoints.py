"""Keypoints: AlphaPose results JSON and COCO annotations (docs/datasets.md §5.1, docs/method.md §3.4)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlq.errors import SideInputError
from rlq.io import atomic_write_json

from ._common import _first, _read_text

logger = logging.getLogger(__name__)


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

    __hash__ = None  # type: ignore[assignment] - unhashable: __eq__ compares arrays


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
