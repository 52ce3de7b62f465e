"""A corruption-benchmark severity grid (ImageNet-C's severities 1-5) for the robustness evaluation (docs/method.md §12).

The corruption ReID benchmark (Market-1501-C and its siblings) evaluates a model with ImageNet-C's corruptions at
five severities, on the query only, the gallery only, or both. rlq runs the four ImageNet-C corruptions it has
artifacts for: pixelate, defocus blur, motion blur and JPEG compression. Their severity parameters are
ImageNet-C's published ones (:data:`CORRUPTION_GRID`); the operations are rlq's own (torch; JPEG through PIL's
libjpeg as :mod:`rlq.lq.severity`), applied to the test-resized uint8 images at the evaluation resolution:

* **pixelate** ``c``: box-average down to ``int(H c) x int(W c)``, rounded to uint8, nearest-neighbour back up.
* **defocus** ``(radius, alias_sigma)``: a disk of ``radius`` px (the pixels with x^2 + y^2 <= radius^2), smoothed
  by a Gaussian of std ``alias_sigma`` and normalised; reflect-101 border.
* **motion** ``(radius, sigma)``: a one-sided streak: the mean of the image sampled (bilinear, reflected border) at
  distances 0, 1, ..., ``radius`` px along an angle, weighted ``exp(-d^2 / (2 sigma^2))``; the angle is drawn
  per image, uniform in [-45, 45) degrees, from (seed, image index).
* **jpeg** ``quality``: encode and decode at that quality.

Blur radii are pixels of the evaluation-size image, as published for ImageNet-C's 224 x 224 images: at
256 x 128 (or the demo's 128 x 64) a blur covers a larger share of the person than on ImageNet. Level 0 is the
clean image; the grid is a different protocol from rlq's own graded grid (:mod:`rlq.lq.severity`) and from the
authors' LQ test protocol (:mod:`rlq.lq.official_test`); results carry its label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlq.errors import ConfigError

from .severity import _jpeg

__all__ = ["CORRUPTION_ARTIFACTS", "CORRUPTION_GRID", "CORRUPTION_MAX_LEVEL", "CORRUPTION_SOURCE", "IMAGENET_C_NAMES",
           "disk_kernel", "motion_angles", "corrupt_batch"]

CORRUPTION_ARTIFACTS = ("pixelation", "defocus", "motion", "jpeg")  # rlq's artifact names
CORRUPTION_MAX_LEVEL = 5
#: ImageNet-C's name of each artifact.
IMAGENET_C_NAMES = {"pixelation": "pixelate", "defocus": "defocus_blur", "motion": "motion_blur",
                    "jpeg": "jpeg_compression"}
CORRUPTION_SOURCE = ("ImageNet-C severities 1-5 (Hendrycks & Dietterich, 'Benchmarking Neural Network Robustness to "
                     "Common Corruptions and Perturbations', ICLR 2019), as the corruption ReID benchmark "
                     "Market-1501-C (Chen, Wang & Zheng, 'Benchmarks for Corruption Invariant Person "
                     "Re-identification', NeurIPS 2021 Datasets and Benchmarks) uses them")

#: CORRUPTION_GRID[artifact][level] = parameters; level 0 = clean ({}), levels 1-5 = ImageNet-C's severities 1-5.
#: Source: ImageNet-C's published severity parameters (CORRUPTION_SOURCE); numbers only, rlq's own operations.
CORRUPTION_GRID: dict[str, list[dict[str, Any]]] = {
    # pixelate: side scale factor c
    "pixelation": [{}] + [{"c": c} for c in (0.6, 0.5, 0.4, 0.3, 0.25)],
    # defocus_blur: (disk radius px, Gaussian std of the disk's anti-aliasing)
    "defocus": [{}] + [{"radius": r, "alias_sigma": a} for r, a in ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))],
    # motion_blur: (streak length px, Gaussian std of its weights); angle per image in [-45, 45) degrees
    "motion": [{}] + [{"radius": r, "sigma": s} for r, s in ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))],
    # jpeg_compression: quality
    "jpeg": [{}] + [{"quality": q} for q in (25, 18, 15, 10, 7)],
}


def disk_kernel(radius: float, alias_sigma: float) -> torch.Tensor:
    """(K, K) float64 defocus kernel, sum 1: the disk x^2 + y^2 <= radius^2, smoothed by a Gaussian of std alias_sigma."""
    g_half = max(1, math.ceil(3.0 * float(alias_sigma)))
    half = int(math.floor(radius)) + g_half
    ax = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((ax[:, None] ** 2 + ax[None, :] ** 2) <= float(radius) ** 2).to(torch.float64)
    disk /= disk.sum()
    ga = torch.arange(-g_half, g_half + 1, dtype=torch.float64)
    g = torch.exp(-(ga**2) / (2.0 * float(alias_sigma) ** 2))
    g /= g.sum()
    # separable Gaussian over the (zero-bordered) disk; the disk sits g_half px inside the grid, so nothing spills out
    k = F.conv2d(disk[None, None], g.view(1, 1, -1, 1), padding=(g_half, 0))
    k = F.conv2d(k, g.view(1, 1, 1, -1), padding=(0, g_half))[0, 0]
    return k / k.sum()


def motion_angles(seed: int, indices: Sequence[int]) -> np.ndarray:
    """Each image's motion angle in degrees, uniform in [-45, 45), a pure function of (seed, image index)."""
    return np.array([np.random.default_rng([int(seed) & ((1 << 63) - 1), int(i)]).uniform(-45.0, 45.0) for i in indices],
                    dtype=np.float64)


def _pixelate(x: torch.Tensor, c: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area").round_().clamp_(0, 255)
    return F.interpolate(small, size=(h, w), mode="nearest-exact")


def _defocus(x: torch.Tensor, radius: float, alias_sigma: float) -> torch.Tensor:
    k = disk_kernel(radius, alias_sigma).to(x.device, x.dtype)
    p = k.shape[-1] // 2
    n, c, h, w = x.shape
    # reflect-101 as the other blurs; a kernel wider than the image (tiny test sizes) falls back to edge replication
    mode = "reflect" if p < min(h, w) else "replicate"
    y = F.pad(x.reshape(1, n * c, h, w), (p, p, p, p), mode=mode)
    return F.conv2d(y, k.expand(n * c, 1, *k.shape).contiguous(), groups=n * c).view(n, c, h, w)


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-101 coordinates into [0, size - 1] (any distance)."""
    if size == 1:
        return torch.zeros_like(coord)
    period = 2.0 * (size - 1)
    r = torch.remainder(coord, period)
    return torch.where(r > size - 1, period - r, r)


def _motion(x: torch.Tensor, radius: int, sigma: float, angles_deg: np.ndarray) -> torch.Tensor:
    n, _, h, w = x.shape
    th = torch.from_numpy(np.deg2rad(angles_deg)).to(x.device, x.dtype)
    dx, dy = torch.cos(th).view(n, 1, 1), torch.sin(th).view(n, 1, 1)
    ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    dist = torch.arange(int(radius) + 1, dtype=torch.float64)
    wts = torch.exp(-(dist**2) / (2.0 * float(sigma) ** 2))
    wts = (wts / wts.sum()).tolist()
    out = torch.zeros_like(x)
    for d, wt in zip(dist.tolist(), wts):
        sx, sy = torch.broadcast_tensors(_reflect(xs + d * dx, w), _reflect(ys + d * dy, h))  # (n, h, w) each
        grid = torch.stack([2.0 * sx / max(w - 1, 1) - 1.0, 2.0 * sy / max(h - 1, 1) - 1.0], dim=-1)
        out += wt * F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out


def _check(images: torch.Tensor, artifact: str, level: int) -> None:
    if artifact not in CORRUPTION_GRID:
        raise ConfigError(f"unknown corruption artifact {artifact!r}; expected one of {CORRUPTION_ARTIFACTS}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= int(level) <= CORRUPTION_MAX_LEVEL:
        raise ConfigError(f"corruption severity {level!r} out of range for {artifact!r}; expected 0..{CORRUPTION_MAX_LEVEL} "
                          "(0 = clean, 1-5 = ImageNet-C's severities)")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"corrupt_batch expects uint8 images of shape N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")


def corrupt_batch(images: torch.Tensor, artifact: str, level: int, seed: int,
                  indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Apply severity ``level`` of ``artifact`` (:data:`CORRUPTION_GRID`) to uint8 N x 3 x H x W images; same shape out.

    ``indices`` are the images' running indices in their split (default 0..N-1): image i's motion angle depends
    only on (``seed``, ``indices[i]``), so batching does not change a result. Level 0 returns the input.
    """
    _check(images, artifact, level)
    level = int(level)
    if level == 0 or images.shape[0] == 0:
        return images
    spec = CORRUPTION_GRID[artifact][level]
    if artifact == "jpeg":
        return torch.stack([_jpeg(img, int(spec["quality"])) for img in images.cpu()]).to(images.device)
    idx = list(range(images.shape[0])) if indices is None else [int(i) for i in torch.as_tensor(indices).tolist()]
    if len(idx) != images.shape[0]:
        raise ConfigError(f"corrupt_batch: {len(idx)} indices for {images.shape[0]} images")
    x = images.to(torch.float32)
    if artifact == "pixelation":
        y = _pixelate(x, float(spec["c"]))
    elif artifact == "defocus":
        y = _defocus(x, float(spec["radius"]), float(spec["alias_sigma"]))
    else:
        y = _motion(x, int(spec["radius"]), float(spec["sigma"]), motion_angles(seed, idx))
    return y.round_().clamp_(0, 255).to(torch.uint8)
