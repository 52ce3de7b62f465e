"""Identity folders from videos, the authors' way (paper Table 8, NTU as the external stream; docs/method.md §12).

One sample per video: the middle frame (``frames[n // 2]`` of the n decoded frames), cropped to the person when a
mask is given (the bounding box of the mask's non-zero pixels; the mask is an image, or a video whose middle
frame is used), at full resolution unless a height is asked for. Without a mask the whole frame is kept (the
authors cropped to the silhouette; rlq cannot invent one). The identity of a video is the first folder below the
videos root (NTU: ``<pid>/<action>/<camera>/<video>``); the output is ``OUT/<identity>/<video path with '__'>.png``
(the layout of ``tad.external_dataset=identity_folders``) plus ``OUT/manifest.csv`` (every image as a `train`
row: the teacher preset's dataset, docs/datasets.md §4).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rlq.errors import DatasetError
from rlq.io import atomic_write_bytes, atomic_write_csv, atomic_write_json, commit_staged_dir

__all__ = ["VIDEO_EXTENSIONS", "MASK_IMAGE_EXTENSIONS", "middle_frame", "mask_box", "prepare_identity_frames"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
MASK_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
INFO_FILE = "frames.json"


def _read_frames(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


def middle_frame(path: str | os.PathLike) -> np.ndarray:
    """The middle frame (index n // 2 of the n decoded frames, as the authors' ``video[len(video) // 2]``), RGB uint8."""
    import cv2

    frames = _read_frames(Path(path))
    if not frames:
        raise DatasetError(f"video {path}: no frame could be decoded (OpenCV); re-encode it or remove it from the videos folder")
    return cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_BGR2RGB)


def _read_mask(path: Path) -> np.ndarray:
    if path.suffix.lower() in MASK_IMAGE_EXTENSIONS:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    else:
        arr = middle_frame(path).max(axis=2)
    return arr


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), right/bottom exclusive, of the non-zero pixels; None when the mask is empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _find_mask(masks: Path, rel: Path) -> Path | None:
    stem = masks / rel.with_suffix("")
    for ext in (*MASK_IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS):
        p = stem.with_suffix(ext)
        if p.is_file():
            return p
    return None


def _videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def prepare_identity_frames(videos: str | os.PathLike, out: str | os.PathLike, *, masks: str | os.PathLike | None = None,
                            height: int = 0, overwrite: bool = False,
                            progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``out/<identity>/<name>.png`` (one middle frame per video) and ``out/manifest.csv``; returns the summary.

    ``height`` = 0 keeps full resolution (the authors'); > 0 resizes each crop to that height (aspect kept, bilinear).
    ``out`` must be new or empty unless ``overwrite`` (the old folder is then moved aside, nothing is deleted).
    The tree is written to a temporary folder beside ``out`` and moved into place when complete.
    """
    from PIL import Image

    src, dst = Path(videos), Path(out).absolute()
    mask_root = Path(masks) if masks is not None else None
    if not src.is_dir():
        raise DatasetError(f"videos folder {src} does not exist; pass a folder holding <identity>/.../<video> files")
    if mask_root is not None and not mask_root.is_dir():
        raise DatasetError(f"--masks {mask_root} is not a folder; pass the folder of person masks mirroring the videos' tree")
    if int(height) < 0:
        raise DatasetError(f"--frame-height {height}: give 0 (full resolution, the authors') or a height in pixels")
    if dst.exists():
        if not dst.is_dir():
            raise DatasetError(f"output {dst} exists and is not a folder; choose another --out")
        if any(dst.iterdir()) and not overwrite:
            raise DatasetError(f"output folder {dst} is not empty; choose an empty or new --out, or pass --overwrite to "
                               f"move it aside to {dst.name}.old-<timestamp> (nothing is deleted)")
    files = _videos(src)
    top_level = [p for p in files if len(p.relative_to(src).parts) < 2]
    if top_level:
        raise DatasetError(f"video {top_level[0]} is not inside an identity folder; put each identity's videos under "
                           f"{src}/<identity>/")
    if not files:
        raise DatasetError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {src}/<identity>/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.frames-", dir=dst.parent))
    rows, uncropped, empty_masks = [], 0, []
    try:
        os.chmod(staging, 0o755)
        for i, video in enumerate(files):
            rel = video.relative_to(src)
            frame = middle_frame(video)
            box = None
            if mask_root is not None:
                mpath = _find_mask(mask_root, rel)
                if mpath is None:
                    raise DatasetError(f"no mask for video {video}: expected {mask_root / rel.with_suffix('')}.<png|jpg|video>; "
                                       "add it, or leave --masks out to keep whole frames")
                mask = _read_mask(mpath)
                if mask.shape[:2] != frame.shape[:2]:
                    raise DatasetError(f"mask {mpath} is {mask.shape[1]}x{mask.shape[0]}, its video frame "
                                       f"{frame.shape[1]}x{frame.shape[0]}; masks must have the frame's size")
                box = mask_box(mask)
                if box is None:
                    empty_masks.append(str(rel))
            if box is None:
                uncropped += 1
                crop = frame
            else:
                crop = frame[box[1]:box[3], box[0]:box[2]]
            img = Image.fromarray(np.ascontiguousarray(crop))
            if height:
                w = max(1, round(img.width * (int(height) / img.height)))
                img = img.resize((w, int(height)), Image.Resampling.BILINEAR)
            ident = rel.parts[0]
            name = "__".join(rel.with_suffix("").parts[1:]) + ".png"
            target = staging / ident / name
            target.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            atomic_write_bytes(target, buf.getvalue(), fsync=False)
            rows.append((target.relative_to(staging).as_posix(), "train", ident, 0, f"{ident}_{i}"))
            if progress is not None:
                progress(i + 1, len(files))
        atomic_write_csv(staging / "manifest.csv", ("path", "split", "pid", "camid", "clothes"), rows)
        info = {"videos": str(src), "masks": None if mask_root is None else str(mask_root),
                "frame": "middle (index n // 2)", "height": int(height) or "full resolution",
                "images": len(rows), "identities": len({r[2] for r in rows}), "uncropped": uncropped,
                "empty_masks": empty_masks}
        atomic_write_json(staging / INFO_FILE, info)
        commit_staged_dir(staging, dst)  # an old folder is kept whole (rlq.io)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if empty_masks:
        logger.warning("%d mask(s) are empty (no person pixels); those frames are kept whole, e.g. %s",
                       len(empty_masks), empty_masks[0])
    return info
