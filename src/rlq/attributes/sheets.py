"""Contact sheets: a grid of sample images per pose cluster, optionally with the skeleton drawn on top
(the style of the paper's Figures 16-18)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rlq.attributes.pose import BODY_LINES
from rlq.errors import DatasetError
from rlq.io import atomic_write_bytes

__all__ = ["cluster_contact_sheet"]

logger = logging.getLogger(__name__)

_PAD = 4
_LABEL_W = 76
_BG = (255, 255, 255)
_TEXT = (0, 0, 0)
# Person's left limbs, right limbs and the head / shoulder lines get different colours.
_LEFT = {(1, 3), (5, 7), (7, 9), (11, 13), (13, 15), (0, 1)}
_RIGHT = {(2, 4), (6, 8), (8, 10), (12, 14), (14, 16), (0, 2)}


def _line_colour(line: tuple[int, int]) -> tuple[int, int, int]:
    if line in _LEFT:
        return (0, 200, 255)
    if line in _RIGHT:
        return (255, 80, 0)
    return (255, 230, 0)


def _thumbnail(path: str, thumb: tuple[int, int], keypoints: np.ndarray | None):  # -> PIL.Image.Image
    from PIL import Image, ImageDraw

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many types for unreadable files
        raise DatasetError(
            f"contact sheet: cannot read image {path} ({type(e).__name__}: {e}); check the path or the file"
        ) from None
    w, h = img.size
    out = img.resize(thumb, Image.Resampling.BILINEAR)
    if keypoints is not None:
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.ndim != 2 or kp.shape[0] != 17 or kp.shape[1] not in (2, 3):
            raise ValueError(f"keypoints for {path} must have shape (17, 2|3), got {kp.shape}")
        sx, sy = thumb[0] / w, thumb[1] / h  # keypoints are in original-image pixels
        draw = ImageDraw.Draw(out)
        for s, e in BODY_LINES:
            draw.line([(kp[s, 0] * sx, kp[s, 1] * sy), (kp[e, 0] * sx, kp[e, 1] * sy)],
                      fill=_line_colour((s, e)), width=max(1, thumb[0] // 32))
    return out


def cluster_contact_sheet(
    paths_by_cluster: Mapping[int, Sequence[str]],
    out_png: str | os.PathLike,
    per_cluster: int = 8,
    thumb: tuple[int, int] = (48, 96),
    seed: int = 0,
    keypoints: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """One row per cluster (ascending label; 0 = "no pose") of up to ``per_cluster`` seeded random images.

    ``keypoints`` maps an image path to its (17, 2|3) keypoints in original pixels; those images get their
    body lines drawn. The sample of a cluster depends only on ``seed`` and its label.
    """
    from PIL import Image, ImageDraw, ImageFont

    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    tw, th = int(thumb[0]), int(thumb[1])
    if tw < 1 or th < 1:
        raise ValueError(f"thumb must be a positive (width, height), got {thumb}")
    clusters = sorted(int(c) for c in paths_by_cluster)
    if not clusters:
        raise ValueError("cluster_contact_sheet: no clusters given")
    if clusters[0] < 0:
        raise ValueError(f"cluster labels must be >= 0, got {clusters[0]}")
    width = _LABEL_W + per_cluster * (tw + _PAD) + _PAD
    height = len(clusters) * (th + _PAD) + _PAD
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, c in enumerate(clusters):
        paths = list(paths_by_cluster[c])
        top = _PAD + row * (th + _PAD)
        name = "no pose" if c == 0 else f"cluster {c}"
        draw.text((_PAD, top + 2), f"{name}\nn={len(paths)}", fill=_TEXT, font=font)
        rng = np.random.default_rng([seed, c])  # per-cluster stream: rows do not depend on each other
        chosen = rng.choice(len(paths), size=min(per_cluster, len(paths)), replace=False) if paths else []
        for col, i in enumerate(chosen):
            p = paths[int(i)]
            kp = None if keypoints is None else keypoints.get(p)
            sheet.paste(_thumbnail(p, (tw, th), kp), (_LABEL_W + col * (tw + _PAD), top))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    out = Path(out_png)
    atomic_write_bytes(out, buf.getvalue())
    logger.info("wrote contact sheet %s (%d clusters)", out, len(clusters))
    return out
