"""Batched, device-side parts of the train pipeline: random erasing and geometric transforms of tensors.

These run inside the training step (on the GPU when there is one), from parameters the loader drew.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transforms import ERASE_FILL_NORMALISED, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["to_float", "erase_fill_01", "apply_erasing", "geo_batch"]

_UPSCALE = 1.125


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def erase_fill_01() -> tuple[float, float, float]:
    """The CAL fill values of the normalised tensor, expressed in the 0-1 input space of the model."""
    r, g, b = (v * s + m for v, s, m in zip(ERASE_FILL_NORMALISED, IMAGENET_STD, IMAGENET_MEAN))
    return r, g, b


def apply_erasing(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Fill the (top, left, h, w) box of each image with the erase value; top < 0 means no box."""
    n, _, h, w = x.shape
    boxes = boxes.to(x.device).long()
    top, left, bh, bw = boxes[:, 0:1, None], boxes[:, 1:2, None], boxes[:, 2:3, None], boxes[:, 3:4, None]
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    mask = (top >= 0) & (ys >= top) & (ys < top + bh) & (xs >= left) & (xs < left + bw)
    fill = torch.tensor(erase_fill_01(), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.where(mask.unsqueeze(1), fill, x)


def geo_batch(x: torch.Tensor, height: int, width: int, crops: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Tensor version of the §3.1 geometric steps for a float batch: resize, optional 1.125x + crop, flip.

    ``crops`` is (N, 2) (left, top) with -1 for "not applied"; ``flips`` is (N,) bool.
    """
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    crops = crops.to(x.device).long()
    apply = crops[:, 0] >= 0
    if bool(apply.any()):
        nh, nw = int(round(height * _UPSCALE)), int(round(width * _UPSCALE))
        up = F.interpolate(x[apply], size=(nh, nw), mode="bilinear", align_corners=False)
        sel = crops[apply]
        rows = sel[:, 1:2] + torch.arange(height, device=x.device).view(1, -1)  # (k, H)
        cols = sel[:, 0:1] + torch.arange(width, device=x.device).view(1, -1)  # (k, W)
        k = up.shape[0]
        bidx = torch.arange(k, device=x.device).view(k, 1, 1)
        cropped = up.permute(0, 2, 3, 1)[bidx, rows.view(k, height, 1), cols.view(k, 1, width)].permute(0, 3, 1, 2)
        x = x.clone()
        x[apply] = cropped
    flips = flips.to(x.device).bool().view(-1, 1, 1, 1)
    return torch.where(flips, torch.flip(x, dims=[3]), x)
