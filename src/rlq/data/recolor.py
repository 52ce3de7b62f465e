"""Clothes recolouring from LIP parsing maps (docs/method.md §3.3), the synthetic clothes labels and the
positive-clothes sets they imply.

Colour draws happen in the loader (explicit generator); the blend itself is a batched tensor op
(:func:`recolor_batch`) that runs on the training device inside the step.
"""

from __future__ import annotations

import numpy as np
import torch

from .lip import ALL_CLOTHES_IDS, LOWER_IDS, UPPER_IDS  # docs/method.md §3.3 regions (LIP ids)

__all__ = [
    "PALETTES",
    "UPPER_IDS",
    "LOWER_IDS",
    "ALL_CLOTHES_IDS",
    "palette_for",
    "draw_recolor",
    "synthetic_label",
    "num_clothes_classes",
    "positive_clothes_matrix",
    "recolor_batch",
]


_COLOURS = {
    "green": (0, 128, 0), "blue": (0, 0, 255), "purple": (128, 0, 128), "red": (255, 0, 0),
    "black": (0, 0, 0), "white": (255, 255, 255), "orange": (255, 165, 0), "yellow": (255, 255, 0),
    "pink": (255, 192, 203),
}
#: Palettes in index order (docs/method.md §3.3 table): P = 9 (M = 81) by default, P = 6 (M = 36) for LaST.
PALETTES = {
    "default": tuple(_COLOURS[c] for c in ("green", "blue", "purple", "red", "black", "white", "orange", "yellow", "pink")),
    "last": tuple(_COLOURS[c] for c in ("green", "blue", "purple", "red", "yellow", "pink")),
}


def palette_for(dataset: str) -> str:
    """Palette name the method uses for a dataset (LaST has its own six colours)."""
    return "last" if dataset.lower() == "last" else "default"


def draw_recolor(rng: np.random.Generator, faulty: bool, palette_size: int) -> tuple[int, int]:
    """Draw (i_lower, i_upper). Faulty images get one colour for all clothes: (c, c) (§3.3 step 1)."""
    if faulty:
        c = int(rng.integers(palette_size))
        return c, c
    i_upper = int(rng.integers(palette_size))
    i_lower = int(rng.integers(palette_size))
    return i_lower, i_upper


def synthetic_label(num_real_clothes: int, pid: int, i_lower: int, i_upper: int, palette_size: int) -> int:
    """N_cl + pid·M + (P·i_lower + i_upper) (§3.3 'Synthetic label')."""
    m = palette_size * palette_size
    return num_real_clothes + pid * m + palette_size * i_lower + i_upper


def num_clothes_classes(num_real_clothes: int, num_ids: int, palette_size: int | None) -> int:
    """N_cl + M·C with recolouring, N_cl without (palette_size None)."""
    if palette_size is None:
        return num_real_clothes
    return num_real_clothes + palette_size * palette_size * num_ids


def positive_clothes_matrix(pid2clothes: np.ndarray, palette_size: int | None) -> torch.Tensor:
    """Bool (C, N_cl + M·C): an identity's real outfits plus its whole synthetic block (§3.3)."""
    c, n_cl = pid2clothes.shape
    total = num_clothes_classes(n_cl, c, palette_size)
    out = torch.zeros((c, total), dtype=torch.bool)
    out[:, :n_cl] = torch.from_numpy(np.asarray(pid2clothes, dtype=bool))
    if palette_size is not None:
        m = palette_size * palette_size
        for p in range(c):
            out[p, n_cl + p * m : n_cl + (p + 1) * m] = True
    return out


def _isin(labels: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    return torch.isin(labels, torch.tensor(ids, dtype=labels.dtype, device=labels.device))


def recolor_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    upper_rgb: torch.Tensor,
    lower_rgb: torch.Tensor,
    faulty: torch.Tensor,
    enabled: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blend palette colours into the clothes regions of a uint8 batch (N,3,H,W) given label maps (N,H,W).

    Non-faulty images: upper region U gets ``upper_rgb``, lower region L gets ``lower_rgb``; faulty
    images: the all-clothes region A gets ``upper_rgb`` (the draw makes upper == lower). Inside a
    region pixel = trunc(0.3·original + 0.7·colour), computed exactly in integers as (3·x + 7·c) // 10
    (§3.3 step 3, α = 0.7); outside unchanged. ``enabled`` False leaves an image untouched (lenient
    mode without a parsing map).
    """
    if images.dtype != torch.uint8:
        raise TypeError("recolor_batch expects uint8 images")
    lab = labels.long()
    up = _isin(lab, UPPER_IDS)
    lo = _isin(lab, LOWER_IDS)
    al = _isin(lab, ALL_CLOTHES_IDS)
    f = faulty.view(-1, 1, 1).bool()
    region_u = torch.where(f, al, up)
    region_l = lo & ~f
    if enabled is not None:
        e = enabled.view(-1, 1, 1).bool()
        region_u = region_u & e
        region_l = region_l & e
    colour = torch.where(
        region_u.unsqueeze(1),
        upper_rgb.view(-1, 3, 1, 1).to(torch.int32),
        lower_rgb.view(-1, 3, 1, 1).to(torch.int32),
    )
    x = images.to(torch.int32)
    blended = torch.div(3 * x + 7 * colour, 10, rounding_mode="floor")
    return torch.where((region_u | region_l).unsqueeze(1), blended, x).to(torch.uint8)
