"""Graded severity levels of single LQ artifacts, for the robustness evaluation (docs/method.md §12, paper Fig. 8 left).

This grid is our own protocol definition (docs/method.md §12 asks for it to be labelled as such): level 0 is the
clean image, levels 1-4 grow in severity. Pixelation, defocus and motion blur reuse the training-path
operators of :mod:`rlq.lq.batched`; JPEG compression is added as a fourth, unseen artifact.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from rlq.errors import ConfigError

from .batched import synthesize_batch
from .mix import ARTIFACT_CODES

__all__ = ["SEVERITY_ARTIFACTS", "SEVERITY_GRID", "MAX_LEVEL", "defocus_kernel_size", "degrade_batch"]

SEVERITY_ARTIFACTS = ("pixelation", "defocus", "motion", "jpeg")
MAX_LEVEL = 4


def defocus_kernel_size(sigma: float, cap: int = 21) -> int:
    """Smallest odd k >= 6 sigma + 1 (covers +-3 sigma), capped at the largest training kernel (21)."""
    k = math.ceil(6.0 * sigma + 1.0)
    k += 1 - k % 2
    return min(k, cap)


_SIGMAS = (1.0, 2.0, 3.0, 4.0)  # 2.0 is the top of the training range (docs/method.md §5.2); 3 and 4 go beyond it

#: SEVERITY_GRID[artifact][level] = parameters of that level; level 0 = clean ({}).
SEVERITY_GRID: dict[str, list[dict]] = {
    # shorter side after downsampling (training: 16..63)
    "pixelation": [{}] + [{"s": s} for s in (48, 32, 24, 16)],
    "defocus": [{}] + [{"sigma": sg, "k": defocus_kernel_size(sg)} for sg in _SIGMAS],
    # kernel size (training: 8..19); the angle is drawn per image from the seed
    "motion": [{}] + [{"n": n} for n in (11, 14, 17, 19)],
    "jpeg": [{}] + [{"quality": q} for q in (50, 30, 15, 5)],
}


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    # PIL's libjpeg (4:2:0 subsampling, as torchvision.io.encode_jpeg, whose codec is deprecated since 0.29).
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as dec:
        return torch.from_numpy(np.asarray(dec.convert("RGB")).copy()).permute(2, 0, 1)


def _check(images: torch.Tensor, artifact: str, level: int) -> None:
    if artifact not in SEVERITY_GRID:
        raise ConfigError(f"unknown robustness artifact {artifact!r}; expected one of {SEVERITY_ARTIFACTS}")
    if not (isinstance(level, int) and 0 <= level < len(SEVERITY_GRID[artifact])):
        raise ConfigError(f"severity level {level!r} out of range for {artifact!r}; expected 0..{len(SEVERITY_GRID[artifact]) - 1}")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"degrade_batch expects uint8 images of shape N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")


def degrade_batch(images: torch.Tensor, artifact: str, level: int, seed: int, start: int = 0) -> torch.Tensor:
    """Apply one severity level of one artifact to every image (uint8 N x 3 x H x W in, same out); level 0 = input.

    Motion-blur angles are integers in 0..179 from ``torch.Generator().manual_seed(seed)``; image i of this
    batch gets draw ``start + i``, so passing the running image index as ``start`` makes each image's angle
    independent of how a set is split into batches.
    """
    _check(images, artifact, level)
    if level == 0 or images.shape[0] == 0:
        return images
    spec = SEVERITY_GRID[artifact][level]
    n = images.shape[0]
    if artifact == "jpeg":
        return torch.stack([_jpeg(img, int(spec["quality"])) for img in images.cpu()]).to(images.device)
    params = torch.zeros(n, 3, dtype=torch.float32)
    if artifact == "pixelation":
        if min(images.shape[-2:]) <= spec["s"]:
            raise ConfigError(
                f"pixelation level {level} (shorter side s={spec['s']}) needs images whose shorter side exceeds {spec['s']}, "
                f"got {tuple(images.shape[-2:])}; degrade the images at the evaluation size (e.g. 256 x 128)"
            )
        params[:, 0] = spec["s"]
    elif artifact == "defocus":
        params[:, 0] = spec["k"]
        params[:, 1] = spec["sigma"]
    else:
        gen = torch.Generator().manual_seed(int(seed))
        params[:, 0] = spec["n"]
        angles = torch.randint(0, 180, (int(start) + n,), generator=gen)[int(start) :]
        params[:, 1] = angles.float()  # integer degrees, as in training
    codes = torch.full((n,), ARTIFACT_CODES[artifact], dtype=torch.int64)
    out = synthesize_batch(images, codes, params, tuple(images.shape[-2:]))
    return out.mul_(255.0).round_().to(torch.uint8)
