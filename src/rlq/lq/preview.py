"""A PNG contact sheet of the LQ artifacts at graded severities (paper Fig. 14 style), for eyeballing the synthesis."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from rlq.errors import ConfigError
from rlq.io import atomic_write_bytes

from .severity import SEVERITY_ARTIFACTS, SEVERITY_GRID, degrade_batch

__all__ = ["PREVIEW_PAD", "PREVIEW_LABEL_H", "ARTIFACT_TITLES", "preview_tile_width", "lq_preview_sheet"]

#: Layout: a PAD-pixel margin around every tile; each artifact block starts with two LABEL_H-pixel text lines
#: (block title, column labels), then one row of tiles per image. Sheet size:
#: width = PAD + (1 + len(levels)) * (tile_w + PAD), height = PAD + 4 * (2 * LABEL_H + n_images * (height + PAD)).
PREVIEW_PAD = 4
PREVIEW_LABEL_H = 14
ARTIFACT_TITLES = {"pixelation": "pixelation", "defocus": "out-of-focus", "motion": "motion blur", "jpeg": "jpeg"}


def preview_tile_width(first: Image.Image, height: int) -> int:
    """Tile width: the first image's aspect ratio at the given tile height."""
    return max(1, round(height * first.width / first.height))


def _level_label(artifact: str, level: int) -> str:
    spec = SEVERITY_GRID[artifact][level]
    return f"L{level} " + " ".join(f"{k}={v:g}" for k, v in spec.items())


def lq_preview_sheet(
    images: Sequence[Image.Image], out_path: str | os.PathLike, levels: Sequence[int] = (1, 2, 3, 4), height: int = 256, seed: int = 0
) -> Path:
    """Write a PNG grid: one block per artifact, columns = clean + ``levels``, rows = ``images``; returns the path."""
    if not images:
        raise ConfigError("lq_preview_sheet needs at least one image")
    for lv in levels:
        if not (isinstance(lv, int) and 1 <= lv < len(SEVERITY_GRID["pixelation"])):
            raise ConfigError(f"preview level {lv!r} out of range; expected 1..{len(SEVERITY_GRID['pixelation']) - 1}")
    tile_h, tile_w = int(height), preview_tile_width(images[0], int(height))
    tiles = np.stack([np.asarray(im.convert("RGB").resize((tile_w, tile_h), Image.Resampling.BILINEAR)) for im in images])
    batch = torch.from_numpy(tiles).permute(0, 3, 1, 2).contiguous()
    pad, lab = PREVIEW_PAD, PREVIEW_LABEL_H
    cols, rows = 1 + len(levels), len(images)
    block_h = 2 * lab + rows * (tile_h + pad)
    sheet = Image.new("RGB", (pad + cols * (tile_w + pad), pad + len(SEVERITY_ARTIFACTS) * block_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for b, artifact in enumerate(SEVERITY_ARTIFACTS):
        top = pad + b * block_h
        draw.text((pad, top), ARTIFACT_TITLES[artifact], fill="black", font=font)
        for c, lv in enumerate((0, *levels)):
            x = pad + c * (tile_w + pad)
            draw.text((x, top + lab), "clean" if lv == 0 else _level_label(artifact, lv), fill="black", font=font)
            out = degrade_batch(batch, artifact, lv, seed).permute(0, 2, 3, 1).numpy()
            for r in range(rows):
                sheet.paste(Image.fromarray(out[r]), (x, top + 2 * lab + r * (tile_h + pad)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    out_path = Path(out_path)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path
