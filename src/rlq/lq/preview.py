"""A PNG contact sheet of the LQ artifacts at graded severities (paper Fig. 14 style), for eyeballing the synthesis."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from rlq.errors import ConfigError
from rlq.io import atomic_write_bytes

from .severity import SEVERITY_ARTIFACTS, SEVERITY_GRID, degrade_batch

__all__ = ["PREVIEW_PAD", "PREVIEW_LABEL_H", "PREVIEW_BLOCK_GAP", "PREVIEW_MAX_COLUMNS", "preview_grid", "ARTIFACT_TITLES", "preview_tile_width", "lq_preview_sheet"]

#: Layout: a PAD-pixel margin around every tile; each artifact block starts with two LABEL_H-pixel text lines
#: (block title, column labels), then one row of tiles per image; a block has cols = 1 + len(levels) columns.
#: Blocks sit side by side, at most max(1, max_columns // cols) per row (rows wrap), so the sheet fits a screen.
#: Sheet size, with B = blocks per row and R = ceil(4 / B) block rows:
#: width = PAD + B * cols * (tile_w + PAD) + (B - 1) * BLOCK_GAP,
#: height = PAD + R * (2 * LABEL_H + n_images * (height + PAD)).
PREVIEW_PAD = 4
PREVIEW_LABEL_H = 14
PREVIEW_BLOCK_GAP = 12
PREVIEW_MAX_COLUMNS = 10
ARTIFACT_TITLES = {"pixelation": "pixelation", "defocus": "out-of-focus", "motion": "motion blur", "jpeg": "jpeg"}


def preview_tile_width(first: Image.Image, height: int) -> int:
    """Tile width: the first image's aspect ratio at the given tile height."""
    return max(1, round(height * first.width / first.height))


def _level_label(artifact: str, level: int) -> str:
    spec = SEVERITY_GRID[artifact][level]
    # the defocus kernel size k follows from sigma; leaving it out keeps the label within a tile
    return f"L{level} " + " ".join(f"{k}={v:g}" for k, v in spec.items() if not (artifact == "defocus" and k == "k"))


def preview_grid(n_levels: int, max_columns: int = PREVIEW_MAX_COLUMNS) -> tuple[int, int]:
    """(blocks per row, block rows) of the artifact blocks in :func:`lq_preview_sheet`."""
    per_row = max(1, int(max_columns) // (1 + int(n_levels)))
    per_row = min(per_row, len(SEVERITY_ARTIFACTS))
    return per_row, -(-len(SEVERITY_ARTIFACTS) // per_row)


def lq_preview_sheet(
    images: Sequence[Image.Image], out_path: str | os.PathLike, levels: Sequence[int] = (1, 2, 3, 4), height: int = 256,
    seed: int = 0, max_columns: int = PREVIEW_MAX_COLUMNS,
) -> Path:
    """Write a PNG grid: one block per artifact, columns = clean + ``levels``, rows = ``images``; returns the path.

    Blocks are laid side by side while the sheet has at most ``max_columns`` tile columns, then wrap."""
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
    per_row, block_rows = preview_grid(len(levels), max_columns)
    block_w, block_h = cols * (tile_w + pad), 2 * lab + rows * (tile_h + pad)
    gap = PREVIEW_BLOCK_GAP
    sheet = Image.new("RGB", (pad + per_row * block_w + (per_row - 1) * gap, pad + block_rows * block_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for b, artifact in enumerate(SEVERITY_ARTIFACTS):
        top = pad + (b // per_row) * block_h
        left = pad + (b % per_row) * (block_w + gap)
        draw.text((left, top), ARTIFACT_TITLES[artifact], fill="black", font=font)
        for c, lv in enumerate((0, *levels)):
            x = left + c * (tile_w + pad)
            draw.text((x, top + lab), "clean" if lv == 0 else _level_label(artifact, lv), fill="black", font=font)
            out = degrade_batch(batch, artifact, lv, seed).permute(0, 2, 3, 1).numpy()
            for r in range(rows):
                sheet.paste(Image.fromarray(out[r]), (x, top + 2 * lab + r * (tile_h + pad)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    out_path = Path(out_path)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path
