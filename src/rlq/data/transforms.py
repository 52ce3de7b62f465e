"""Image transforms (docs/method.md §3.1), with every random draw from an explicit ``numpy.random.Generator``.

The loader side does the geometric part on PIL images (resize, 1.125x upscale + random crop, flip)
and only *draws* the random-erasing box; erasing, recolouring and LQ synthesis run batched on the
training device (:mod:`rlq.data.batch_ops`). Images leave the loader as uint8 HxWx3 arrays; the
model normalises its own input (docs/method.md §2.5, docs/design.md boundary 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "ERASE_FILL_NORMALISED",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "GeoParams",
    "draw_geo_params",
    "apply_geo",
    "draw_erase_box",
    "resize_for_test",
    "to_chw_uint8",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: docs/method.md §3.1 step 5: as in CAL, these values are written into the *normalised* tensor.
ERASE_FILL_NORMALISED = (0.4914, 0.4822, 0.4465)

_UPSCALE = 1.125  # §3.1 step 2


@dataclass(frozen=True)
class GeoParams:
    """The geometric draws of one train transform: upscale-and-crop offsets (or None) and the flip."""

    crop: tuple[int, int] | None  # (left, top) in the 1.125x image, or None when not applied
    flip: bool


def draw_geo_params(rng: np.random.Generator, height: int, width: int, p_crop: float = 0.5, p_flip: float = 0.5,
                    flip_rng: np.random.Generator | None = None) -> GeoParams:
    """Draw §3.1 steps 2-3 for an output of ``height`` x ``width``; the flip comes from ``flip_rng`` when given
    (the `official` external stream, whose flips do not repeat across epochs, docs/method.md §6)."""
    crop = None
    if rng.random() < p_crop:
        nw, nh = int(round(width * _UPSCALE)), int(round(height * _UPSCALE))
        left = int(round(rng.uniform(0, nw - width)))
        top = int(round(rng.uniform(0, nh - height)))
        crop = (left, top)
    return GeoParams(crop=crop, flip=bool((rng if flip_rng is None else flip_rng).random() < p_flip))


def apply_geo(img: Image.Image, height: int, width: int, geo: GeoParams, resample: int = Image.BILINEAR) -> Image.Image:
    """Resize to ``height`` x ``width``, then the drawn upscale+crop and flip (label maps: NEAREST)."""
    out = img.resize((width, height), resample)
    if geo.crop is not None:
        nw, nh = int(round(width * _UPSCALE)), int(round(height * _UPSCALE))
        left, top = geo.crop
        out = out.resize((nw, nh), resample).crop((left, top, left + width, top + height))
    if geo.flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def draw_erase_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    min_aspect: float = 0.3,
    attempts: int = 100,
) -> tuple[int, int, int, int]:
    """Random-erasing box (top, left, h, w) per §3.1 step 5, or (-1, -1, 0, 0) for no erasing."""
    if rng.random() >= p:
        return (-1, -1, 0, 0)
    total = height * width
    for _ in range(attempts):
        target = rng.uniform(*area) * total
        aspect = rng.uniform(min_aspect, 1.0 / min_aspect)
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return (top, left, h, w)
    return (-1, -1, 0, 0)


def resize_for_test(img: Image.Image, height: int, width: int) -> Image.Image:
    """Test transform (§2.5 step 1): bilinear resize only."""
    return img.resize((width, height), Image.BILINEAR)


def to_chw_uint8(img: Image.Image) -> np.ndarray:
    """PIL RGB image -> contiguous uint8 array 3 x H x W."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
