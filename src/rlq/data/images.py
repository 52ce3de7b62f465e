"""Image reading: every image leaves as 8-bit RGB, or a DatasetError that names the file and the reason.

No retries and no tolerance for truncated files (PIL's LOAD_TRUNCATED_IMAGES is left untouched):
a broken image is reported, never silently padded with grey.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rlq.errors import DatasetError

__all__ = ["MAX_PIXELS", "IMAGE_EXTENSIONS", "image_files", "read_image", "verify_image", "to_rgb"]

#: Largest image accepted (width x height); Pillow's own default decompression-bomb limit.
MAX_PIXELS = 89_478_485

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La", "RGBX")


class _BadImage(Exception):
    """Internal: the short reason an image cannot be used."""


def to_rgb(im: Image.Image) -> Image.Image:
    """A new 8-bit RGB copy of `im`: alpha dropped, palette expanded, 16-bit scaled 0..65535 -> 0..255."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode in _SIXTEEN_BIT or mode == "I":
        # 16-bit greyscale (PNG/TIFF): scale the full range, do not clip at 255. "I" holds the same data.
        a = np.asarray(im).astype(np.int64)
        a = np.clip(a, 0, 65535)
        g = ((a * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "P":
        # Palettes may carry transparency; go through RGBA so Pillow expands it cleanly, then drop alpha.
        return im.convert("RGBA").convert("RGB")
    if mode == "La":
        return im.convert("LA").convert("RGB")
    if mode in _WITH_ALPHA:
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, F


def _load(path: str | os.PathLike, max_pixels: int | None, decode: bool = True) -> Image.Image | None:
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise _BadImage("file not found") from None
    except (OSError, ValueError) as exc:
        raise _BadImage(f"cannot access file ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _BadImage("not a regular file")
    if st.st_size == 0:
        raise _BadImage("empty file (0 bytes)")
    try:
        # Between MAX_IMAGE_PIXELS and twice that, Pillow only warns; rlq refuses below (max_pixels).
        # (warnings.catch_warnings is not thread-safe, so the warning is left alone.)
        im = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise _BadImage(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise _BadImage("not a readable image (unknown format or corrupt header)") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt headers
        raise _BadImage(f"corrupt image ({type(exc).__name__}: {exc})") from None
    with im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise _BadImage(f"zero-size image ({w}x{h})")
        if max_pixels is not None and w * h > max_pixels:
            raise _BadImage(f"image too large: {w}x{h} = {w * h} pixels > limit {max_pixels} (decompression bomb?)")
        try:
            if not decode:
                im.verify()
                return None
            im.load()
            return to_rgb(im)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt or truncated data
            msg = str(exc)
            if "truncated" in msg.lower() or isinstance(exc, EOFError):
                raise _BadImage(f"truncated image ({msg})") from None
            raise _BadImage(f"corrupt image data ({type(exc).__name__}: {msg})") from None


def read_image(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Decode `path` into an 8-bit RGB PIL image; DatasetError naming the file if it is unusable."""
    try:
        im = _load(path, max_pixels)
    except _BadImage as exc:
        raise DatasetError(
            f"cannot read image {os.fspath(path)}: {exc}. Replace or remove it "
            "(`rlq check-data` lists every unreadable image)."
        ) from None
    assert im is not None
    return im


def verify_image(path: str | os.PathLike, full_decode: bool = True, *, max_pixels: int | None = MAX_PIXELS) -> str | None:
    """None if `path` is a usable image, else a short reason; header/CRC check only unless `full_decode`."""
    try:
        _load(path, max_pixels, decode=full_decode)
    except _BadImage as exc:
        return str(exc)
    return None


#: Image files read from plain folders (`rlq extract --images`, `rlq search --query DIR`, TAD's `folder` stream).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def image_files(folder: str | os.PathLike) -> list[str]:
    """The image files under ``folder`` (recursive), sorted by path."""
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
