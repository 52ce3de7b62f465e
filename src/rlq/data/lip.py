"""The LIP human-parsing label set (docs/datasets.md §5.2): its 20 labels, the clothes regions the method uses
(docs/method.md §3.3) and SCHP's display palette. The one copy: parsing-map readers and writers
(:mod:`rlq.data.sidecars`), recolouring (:mod:`rlq.data.recolor`) and the SynthCC generator import it.
"""

from __future__ import annotations

__all__ = ["LIP_LABELS", "NUM_LIP", "UPPER_IDS", "LOWER_IDS", "ALL_CLOTHES_IDS", "LIP_PALETTE", "schp_palette", "lip_palette"]

#: LIP labels; index = label id (pixel value of a parsing map).
LIP_LABELS = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
    "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
    "right-shoe",
)
NUM_LIP = len(LIP_LABELS)
# docs/method.md §3.3 regions
UPPER_IDS = (5, 7, 10)
LOWER_IDS = (9, 12)
ALL_CLOTHES_IDS = (1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 18, 19)


def schp_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """The first ``n`` colours (RGB) of SCHP's ``get_palette``: the PASCAL VOC bit-interleaving colour map."""
    out = []
    for j in range(n):
        lab, r, g, b, i = j, 0, 0, 0, 0
        while lab:
            r |= ((lab >> 0) & 1) << (7 - i)
            g |= ((lab >> 1) & 1) << (7 - i)
            b |= ((lab >> 2) & 1) << (7 - i)
            i += 1
            lab >>= 3
        out.append((r, g, b))
    return tuple(out)


#: Display colours (RGB) of the LIP labels, as SCHP writes them; index = label id.
LIP_PALETTE = schp_palette(NUM_LIP)


def lip_palette(num_classes: int = NUM_LIP) -> list[int]:
    """The SCHP / LIP display palette as PIL's ``putpalette`` takes it: 3 values per class, flat."""
    return [c for rgb in schp_palette(num_classes) for c in rgb]
