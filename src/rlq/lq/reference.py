"""Per-image reference implementations of the three LQ artifacts (docs/method.md §5.2), numpy/PIL/scipy only.

These are the slow, obviously-correct versions: the batched implementation is tested against them, and
the SynthCC generator uses them to degrade its images. The tests compare them with OpenCV.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from rlq.errors import ConfigError

__all__ = [
    "ARTIFACTS",
    "pixelate",
    "pixelated_size",
    "gaussian_kernel1d",
    "defocus",
    "motion_kernel",
    "motion_blur",
    "apply_artifact",
]

ARTIFACTS = ("pixelation", "defocus", "motion")


def _rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float64)


def _to_uint8_image(arr: np.ndarray, mode: str) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode=mode)


def pixelated_size(size: tuple[int, int], s: int) -> tuple[int, int]:
    """(w, h) after resizing `size` so that the shorter side is `s` and the other keeps the aspect ratio."""
    w, h = size
    if not (isinstance(s, (int, np.integer)) and s >= 1):
        raise ConfigError(f"pixelation size s={s!r} must be an integer >= 1")
    short = min(w, h)
    # docs/method.md §5.2: the other side is round(side * (s / short)) with Python's round, the ratio formed
    # first as in the authors' code (side * s / short rounds the other way at some exact .5 ties).
    ratio = s / short
    if w <= h:
        return int(s), max(1, round(h * ratio))
    return max(1, round(w * ratio)), int(s)


def pixelate(img: Image.Image, s: int, restore_size: tuple[int, int] | None = None) -> Image.Image:
    """Downsample so the shorter side is `s` (bicubic, PIL's default); optionally resize back bilinearly."""
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    small = img.resize(pixelated_size(img.size, s), Image.Resampling.BICUBIC)
    if restore_size is None:
        return small
    return small.resize((int(restore_size[0]), int(restore_size[1])), Image.Resampling.BILINEAR)


def gaussian_kernel1d(k: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of odd size `k` on x = -(k-1)/2 .. (k-1)/2 (torchvision / OpenCV kernel)."""
    if not (isinstance(k, (int, np.integer)) and k >= 1 and k % 2 == 1):
        raise ConfigError(f"Gaussian kernel size k={k!r} must be an odd integer >= 1")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"Gaussian sigma={sigma!r} must be a finite number > 0")
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
    pdf = np.exp(-(x**2) / (2.0 * float(sigma) ** 2))
    return pdf / pdf.sum()


def defocus(img: Image.Image, k: int, sigma: float) -> Image.Image:
    """Separable Gaussian blur (odd size `k`, std `sigma`), reflect-101 border, rounded to uint8."""
    kern = gaussian_kernel1d(k, sigma)
    arr = _rgb_array(img)
    # scipy's 'mirror' mode is reflect-101 (d c b | a b c d | c b a), OpenCV's BORDER_REFLECT_101.
    out = ndimage.correlate1d(arr, kern, axis=0, mode="mirror")
    out = ndimage.correlate1d(out, kern, axis=1, mode="mirror")
    return _to_uint8_image(out, "RGB" if arr.ndim == 3 else "L")


def _rotation_matrix(center: tuple[float, float], angle: float) -> np.ndarray:
    # cv2.getRotationMatrix2D(center, angle, scale=1): positive angle = counter-clockwise with y down.
    a = math.cos(math.radians(angle))
    b = math.sin(math.radians(angle))
    cx, cy = center
    return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]], dtype=np.float64)


def _warp_affine_bilinear(src: np.ndarray, m: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(src, m, src size) with INTER_LINEAR and a zero constant border, in exact arithmetic."""
    h, w = src.shape
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]  # destination -> source
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    padded = np.zeros((h + 2, w + 2), dtype=np.float64)  # one ring of zeros = the constant border
    padded[1:-1, 1:-1] = src
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    fx = sx - x0
    fy = sy - y0
    inside = (x0 >= -1) & (x0 <= w - 1) & (y0 >= -1) & (y0 <= h - 1)
    xi = np.where(inside, x0, -1).astype(np.int64) + 1
    yi = np.where(inside, y0, -1).astype(np.int64) + 1
    val = (
        padded[yi, xi] * (1 - fx) * (1 - fy)
        + padded[yi, xi + 1] * fx * (1 - fy)
        + padded[yi + 1, xi] * (1 - fx) * fy
        + padded[yi + 1, xi + 1] * fx * fy
    )
    return np.where(inside, val, 0.0)


def motion_kernel(n: int, angle: float) -> np.ndarray:
    """n x n line kernel: row floor((n-1)/2) of ones, rotated by `angle` degrees about the centre, sum 1."""
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ConfigError(f"motion-blur kernel size n={n!r} must be an integer >= 1")
    if not math.isfinite(angle):
        raise ConfigError(f"motion-blur angle={angle!r} must be finite")
    n = int(n)
    kernel = np.zeros((n, n), dtype=np.float64)
    kernel[(n - 1) // 2, :] = 1.0
    center = (n / 2 - 0.5, n / 2 - 0.5)  # docs/method.md §5.2
    rotated = _warp_affine_bilinear(kernel, _rotation_matrix(center, float(angle)))
    total = rotated.sum()
    if total <= 0:  # cannot happen: the centre row always passes through the rotation centre
        raise ConfigError(f"motion-blur kernel n={n}, angle={angle} is empty after rotation")
    return rotated / total


def motion_blur(img: Image.Image, n: int, angle: float) -> Image.Image:
    """2-D correlation of each channel with :func:`motion_kernel`, reflect-101 border, rounded to uint8."""
    kernel = motion_kernel(n, angle)
    arr = _rgb_array(img)
    # ndimage.correlate centres the kernel on index n // 2, as cv2.filter2D's default anchor does.
    if arr.ndim == 2:
        out = ndimage.correlate(arr, kernel, mode="mirror")
    else:
        out = np.stack([ndimage.correlate(arr[..., c], kernel, mode="mirror") for c in range(arr.shape[2])], -1)
    return _to_uint8_image(out, "RGB" if arr.ndim == 3 else "L")


_PARAMS = {
    "pixelation": (pixelate, {"s"}, {"restore_size"}),
    "defocus": (defocus, {"k", "sigma"}, set()),
    "motion": (motion_blur, {"n", "angle"}, set()),
}


def apply_artifact(img: Image.Image, artifact: str, params: Mapping[str, Any]) -> Image.Image:
    """Apply one artifact; `params` are the keyword arguments of its function (pixelation: s[, restore_size])."""
    if artifact not in _PARAMS:
        raise ConfigError(f"unknown LQ artifact {artifact!r}; expected one of {ARTIFACTS}")
    fn, required, optional = _PARAMS[artifact]
    keys = set(params)
    if not required <= keys or not keys <= required | optional:
        raise ConfigError(
            f"LQ artifact {artifact!r} takes parameters {sorted(required)} (optional {sorted(optional)}), "
            f"got {sorted(keys)}"
        )
    return fn(img, **params)
