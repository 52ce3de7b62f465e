"""Batched LQ synthesis on tensors (CPU or CUDA): the training-step version of the docs/method.md §5.2 artifacts.

The loader draws ``(code, params)`` per image (:func:`rlq.lq.mix.draw_lq`) and hands the device each image
resized to a fixed source size; :func:`synthesize_batch` applies every image's artifact at that source
resolution and resizes the result to the train size, as the per-image path :func:`reference_synthesize`
(PIL / numpy, :mod:`rlq.lq.reference`) does. The reference rounds to uint8 after each stage; the batched path
emulates this with ``round().clamp(0, 255)`` between stages, and resamples width first with a uint8
intermediate as PIL does, so both agree to a grey level or two (Pillow >= 12 resamples height first for some
size pairs, which can move pixels next to clipped bicubic overshoot by up to ~10 levels; see the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rlq.errors import RlqError

from . import reference
from .mix import ARTIFACT_CODES, ARTIFACT_NAMES

__all__ = [
    "pixelated_hw",
    "gaussian_kernels1d",
    "motion_kernels",
    "pixelate_batch",
    "defocus_batch",
    "motion_blur_batch",
    "synthesize_batch",
    "reference_synthesize",
]

_PIX, _DEF, _MOT = ARTIFACT_CODES["pixelation"], ARTIFACT_CODES["defocus"], ARTIFACT_CODES["motion"]


def pixelated_hw(h: int, w: int, s: int) -> tuple[int, int]:
    """(h, w) with the shorter side resized to ``s`` and the other to round(side * (s / short)) (docs/method.md §5.2).

    The ratio is formed first, as in the authors' code; ``side * s / short`` differs at some exact .5 ties."""
    short = min(h, w)
    ratio = s / short
    if h <= w:
        return int(s), max(1, round(w * ratio))
    return max(1, round(h * ratio)), int(s)


def _to_uint8_range(x: torch.Tensor) -> torch.Tensor:
    # The reference stores each blurred image as uint8 (numpy rint: half to even, as torch.round).
    return x.round_().clamp_(0.0, 255.0)


def _round_half_up(x: torch.Tensor) -> torch.Tensor:
    # PIL's fixed-point resampling rounds halves up (frequent for dyadic weights such as a 1.5x bilinear upscale).
    return x.add_(0.5).floor_().clamp_(0.0, 255.0)


def _pil_resize(x: torch.Tensor, out_size: tuple[int, int], mode: str) -> torch.Tensor:
    """PIL-style antialiased resize of a float 0-255 batch: horizontal pass, uint8 rounding, vertical pass, rounding.

    PIL resamples separably, width first, storing the intermediate image as uint8 (clipping the bicubic overshoot);
    doing the same keeps the batched result within a grey level of PIL's.
    """
    h, w = out_size
    if x.shape[-1] != w:
        x = _round_half_up(F.interpolate(x, size=(x.shape[-2], w), mode=mode, align_corners=False, antialias=True))
    if x.shape[-2] != h:
        x = _round_half_up(F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=True))
    return x


def _resize(x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """The train Resize (PIL BILINEAR; a no-op at the same size)."""
    return _pil_resize(x, out_size, "bilinear")


def gaussian_kernels1d(k: torch.Tensor, sigma: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """(N, size) normalised 1-D Gaussians of odd sizes ``k``, centred and zero-padded to the common odd ``size``."""
    k = k.detach().to("cpu", torch.int64)
    sigma = sigma.detach().to("cpu", torch.float64)
    kmax = int(k.max()) if k.numel() else 1
    size = kmax if size is None else int(size)
    if size % 2 == 0 or size < kmax:
        raise RlqError(f"Gaussian kernel padding size {size} must be odd and >= the largest kernel ({kmax})")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    pdf = torch.exp(-(x[None] ** 2) / (2.0 * sigma[:, None] ** 2))
    pdf = torch.where(x[None].abs() <= (k[:, None] - 1) // 2, pdf, 0.0)
    return pdf / pdf.sum(dim=1, keepdim=True)


def motion_kernels(n: torch.Tensor, angle: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """(N, size, size) motion-blur correlation kernels, centred on index size // 2 (float64, CPU).

    Kernel i is the n x n line kernel of docs/method.md §5.2 (row floor((n-1)/2) of ones, rotated by ``angle`` degrees
    about (n/2 - 0.5, n/2 - 0.5) as cv2.getRotationMatrix2D + warpAffine do: bilinear, zero border, sum 1)
    placed so that its correlation anchor (n // 2, n // 2), cv2.filter2D's default, lands on the centre; an even
    n therefore sits one pixel off-centre inside the odd ``size``. Bilinear weights are exact (OpenCV quantises
    sampling positions to 1/32 px).
    """
    n = n.detach().to("cpu", torch.int64)
    rad = torch.deg2rad(angle.detach().to("cpu", torch.float64))
    half = int((n // 2).max()) if n.numel() else 0
    size = 2 * half + 1 if size is None else int(size)
    if size % 2 == 0 or size < 2 * half + 1:
        raise RlqError(f"motion kernel padding size {size} must be odd and >= {2 * half + 1}")
    p = size // 2
    grid = torch.arange(size, dtype=torch.int64)
    off = (p - n // 2)[:, None]  # where kernel index 0 lands in the padded grid
    xs = (grid[None] - off)[:, None, :]  # (N, 1, size): kernel column of each padded column
    ys = (grid[None] - off)[:, :, None]  # (N, size, 1)
    valid = (xs >= 0) & (xs < n[:, None, None]) & (ys >= 0) & (ys < n[:, None, None])
    # cv2.getRotationMatrix2D(c, angle, 1) = [[a, b, (1-a)cx - b cy], [-b, a, b cx + (1-a)cy]]; warpAffine samples
    # the source at its inverse applied to each destination pixel.
    a, b = torch.cos(rad)[:, None, None], torch.sin(rad)[:, None, None]
    c = (n.to(torch.float64) / 2 - 0.5)[:, None, None]
    tx, ty = (1 - a) * c - b * c, b * c + (1 - a) * c
    det = a * a + b * b
    dx, dy = xs.to(torch.float64) - tx, ys.to(torch.float64) - ty
    sx = (a * dx - b * dy) / det
    sy = (b * dx + a * dy) / det
    x0, y0 = torch.floor(sx), torch.floor(sy)
    fx, fy = sx - x0, sy - y0
    row = ((n - 1) // 2).to(torch.float64)[:, None, None]  # the line of ones
    nf = n.to(torch.float64)[:, None, None]
    wx = (1 - fx) * ((x0 >= 0) & (x0 < nf)) + fx * ((x0 + 1 >= 0) & (x0 + 1 < nf))
    wy = (1 - fy) * (y0 == row) + fy * (y0 + 1 == row)
    k = torch.where(valid, wx * wy, 0.0)
    return k / k.sum(dim=(1, 2), keepdim=True)


def pixelate_batch(x: torch.Tensor, s: Sequence[int], out_size: tuple[int, int]) -> torch.Tensor:
    """Pixelate a float 0-255 batch: bicubic (antialiased) to shorter side s[i], uint8 rounding, bilinear to out_size."""
    out = x.new_empty((x.shape[0], x.shape[1], *out_size))
    s_arr = np.asarray(s, dtype=np.int64)
    h0, w0 = x.shape[-2:]
    for value in np.unique(s_arr):  # one interpolate per distinct size
        idx = torch.from_numpy(np.flatnonzero(s_arr == value)).to(x.device)
        small = _pil_resize(x.index_select(0, idx), pixelated_hw(h0, w0, int(value)), "bicubic")
        out.index_copy_(0, idx, _resize(small, out_size))
    return out


def defocus_batch(x: torch.Tensor, k: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of a float 0-255 batch, per-image odd size k[i] and std sigma[i], reflect-101 border."""
    n, c, h, w = x.shape
    kern = gaussian_kernels1d(k, sigma).to(x.device, x.dtype)  # (n, K)
    size = kern.shape[1]
    p = size // 2
    weight = kern.repeat_interleave(c, dim=0)  # one depthwise filter per (image, channel)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (0, 0, p, p), mode="reflect"), weight.view(n * c, 1, size, 1), groups=n * c)
    y = F.conv2d(F.pad(y, (p, p, 0, 0), mode="reflect"), weight.view(n * c, 1, 1, size), groups=n * c)
    return y.view(n, c, h, w)


def motion_blur_batch(x: torch.Tensor, n_px: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Motion blur of a float 0-255 batch: per-image kernel (n_px[i], angle[i]) correlated with reflect-101 border."""
    n, c, h, w = x.shape
    kern = motion_kernels(n_px, angle).to(x.device, x.dtype)  # (n, M, M)
    size = kern.shape[-1]
    p = size // 2
    weight = kern.repeat_interleave(c, dim=0).view(n * c, 1, size, size)
    y = F.pad(x.reshape(1, n * c, h, w), (p, p, p, p), mode="reflect")  # torch 'reflect' = reflect-101
    return F.conv2d(y, weight, groups=n * c).view(n, c, h, w)


def _check_inputs(src: torch.Tensor, codes: torch.Tensor, params: torch.Tensor) -> None:
    if src.dim() != 4 or src.shape[1] != 3:
        raise RlqError(f"synthesize_batch expects src of shape N x 3 x H x W, got {tuple(src.shape)}")
    n = src.shape[0]
    if tuple(codes.shape) != (n,) or tuple(params.shape) != (n, 3):
        raise RlqError(
            f"synthesize_batch expects codes of shape ({n},) and params of shape ({n}, 3) for {n} images, "
            f"got {tuple(codes.shape)} and {tuple(params.shape)}"
        )
    bad = sorted(set(codes.tolist()) - set(ARTIFACT_NAMES))
    if bad:
        raise RlqError(f"unknown LQ artifact code(s) {bad}; expected {ARTIFACT_CODES}")
    codes_cpu, p = codes.detach().cpu(), params.detach().cpu().double()
    short = min(src.shape[-2:])
    size = p[:, 0].round()
    blur = codes_cpu != _PIX
    if bool(((size < 1) | ((codes_cpu == _DEF) & (size % 2 == 0)) | (blur & (size // 2 >= short))).any()):
        i = int(torch.nonzero((size < 1) | ((codes_cpu == _DEF) & (size % 2 == 0)) | (blur & (size // 2 >= short)))[0])
        raise RlqError(
            f"image {i}: invalid LQ parameters {p[i].tolist()} for artifact {ARTIFACT_NAMES[int(codes_cpu[i])]!r} on a "
            f"{tuple(src.shape[-2:])} source (sizes must be >= 1, Gaussian kernels odd, blur kernels < 2x the shorter side)"
        )
    if bool(((codes_cpu == _DEF) & ~(p[:, 1] > 0)).any()):
        raise RlqError(f"defocus sigma must be > 0, got {p[codes_cpu == _DEF, 1].tolist()}")


def synthesize_batch(
    src: torch.Tensor, codes: torch.Tensor, params: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Apply each image's artifact at source resolution and resize to ``out_size`` (H, W): float32 N x 3 x H x W in [0, 1].

    ``src`` is uint8 (0-255) or float (0-1); ``codes`` are :data:`~rlq.lq.mix.ARTIFACT_CODES`; ``params`` rows
    are pixelation (s, 0, 0), defocus (k, sigma, 0), motion (n, angle_degrees, 0).
    """
    _check_inputs(src, codes, params)
    out_size = (int(out_size[0]), int(out_size[1]))
    x = src.to(torch.float32) if src.dtype == torch.uint8 else src.to(torch.float32) * 255.0
    out = x.new_empty((x.shape[0], 3, *out_size))
    codes_cpu = codes.detach().to("cpu", torch.int64)
    params_cpu = params.detach().to("cpu", torch.float32)
    for code in (_PIX, _DEF, _MOT):
        sel = torch.nonzero(codes_cpu == code).flatten()
        if sel.numel() == 0:
            continue
        p = params_cpu.index_select(0, sel)
        idx = sel.to(x.device)
        xs = x.index_select(0, idx)
        if code == _PIX:
            y = pixelate_batch(xs, p[:, 0].round().to(torch.int64).tolist(), out_size)
        elif code == _DEF:
            y = _resize(_to_uint8_range(defocus_batch(xs, p[:, 0].round().to(torch.int64), p[:, 1])), out_size)
        else:
            y = _resize(_to_uint8_range(motion_blur_batch(xs, p[:, 0].round().to(torch.int64), p[:, 1])), out_size)
        out.index_copy_(0, idx, y)
    return out.div_(255.0)  # every branch ends on a rounded uint8-range stage


def reference_synthesize(img: Image.Image, code: int, params: Sequence[float], out_size: tuple[int, int]) -> np.ndarray:
    """Per-image PIL / numpy path of :func:`synthesize_batch` (uint8 H x W x 3), built on :mod:`rlq.lq.reference`."""
    if int(code) not in ARTIFACT_NAMES:
        raise RlqError(f"unknown LQ artifact code {code!r}; expected {ARTIFACT_CODES}")
    h, w = int(out_size[0]), int(out_size[1])
    img = img.convert("RGB")
    artifact = ARTIFACT_NAMES[int(code)]
    if artifact == "pixelation":
        out = reference.pixelate(img, int(round(float(params[0]))), restore_size=(w, h))
    else:
        if artifact == "defocus":
            lq = reference.defocus(img, int(round(float(params[0]))), float(params[1]))
        else:
            lq = reference.motion_blur(img, int(round(float(params[0]))), float(params[1]))
        out = lq if lq.size == (w, h) else lq.resize((w, h), Image.Resampling.BILINEAR)  # the train Resize
    return np.asarray(out, dtype=np.uint8).copy()
