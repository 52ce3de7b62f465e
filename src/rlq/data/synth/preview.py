"""Contact sheet of a SynthCC folder: rows = identities, columns = their images across outfits, cameras, quality."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["make_contact_sheet"]

_NAME = re.compile(r"^(\d+)_(\d+)_c(\d+)_(\d+)\.png$")
_SHORT = {"clean": "", "pixelation": "pix", "defocus": "dof", "motion": "mot"}


def _quality(root: Path) -> dict[str, tuple[str, str]]:
    path = root / "quality.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["Image"]: (row["Artifact"], row["Severity"]) for row in csv.DictReader(f)}


def make_contact_sheet(root: str | os.PathLike, n_ids: int = 6, per_id: int = 10, cell_h: int = 128) -> Image.Image:
    """Contact sheet of up to `n_ids` identities (train and test alternately) x `per_id` images."""
    root = Path(root)
    quality = _quality(root)
    by_pid: dict[tuple[str, int], list[tuple[int, int, int, str, Path]]] = {}
    for split in ("train", "query", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            m = _NAME.match(p.name)
            if m:
                group = "train" if split == "train" else "test"
                key = p.stem if split == "train" else f"{split}/{p.stem}"
                by_pid.setdefault((group, int(m[1])), []).append((int(m[2]), int(m[3]), int(m[4]), key, p))
    train = sorted(k for k in by_pid if k[0] == "train")
    test = sorted(k for k in by_pid if k[0] == "test")
    chosen: list[tuple[str, int]] = []
    for i in range(max(len(train), len(test))):
        for lst in (train, test):
            if i < len(lst) and len(chosen) < n_ids:
                chosen.append(lst[i])
    cell_w = cell_h // 2 + 8
    label_w = 70
    cap_h = 14
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (label_w + per_id * cell_w, max(1, len(chosen)) * (cell_h + cap_h + 4)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for row, (group, pid) in enumerate(chosen):
        y = row * (cell_h + cap_h + 4)
        draw.text((4, y + cell_h // 2), f"{group} {pid:03d}", fill=(230, 230, 230), font=font)
        for col, (outfit, cam, _, key, path) in enumerate(_spread(by_pid[(group, pid)], per_id)):
            with Image.open(path) as im:
                im = im.convert("RGB")
                w = max(1, round(im.width * cell_h / im.height))
                im = im.resize((min(w, cell_w - 4), cell_h), Image.Resampling.BILINEAR)
            x = label_w + col * cell_w
            sheet.paste(im, (x, y))
            art, sev = quality.get(key, ("clean", "0"))
            tag = f"o{outfit} c{cam}" + (f" {_SHORT.get(art, art[:3])}{sev}" if art != "clean" else "")
            draw.text((x, y + cell_h + 1), tag, fill=(255, 200, 120) if art != "clean" else (200, 200, 200),
                      font=font)
    return sheet


def _spread(items: list[tuple[int, int, int, str, Path]], n: int) -> list[tuple[int, int, int, str, Path]]:
    """Pick up to `n` images round-robin over outfits, preferring unseen cameras."""
    by_outfit: dict[int, list[tuple[int, int, int, str, Path]]] = {}
    for it in sorted(items):
        by_outfit.setdefault(it[0], []).append(it)
    picked: list[tuple[int, int, int, str, Path]] = []
    seen_cams: set[int] = set()
    while len(picked) < n and any(by_outfit.values()):
        for o in sorted(by_outfit):
            pool = by_outfit[o]
            if not pool or len(picked) >= n:
                continue
            fresh = [it for it in pool if it[1] not in seen_cams]
            it = (fresh or pool)[0]
            pool.remove(it)
            picked.append(it)
            seen_cams.add(it[1])
    return sorted(picked)
