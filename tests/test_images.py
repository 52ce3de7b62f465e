"""read_image / verify_image: 8-bit RGB out of every common mode, clear errors naming the file otherwise."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlq.data.images import MAX_PIXELS, read_image, to_rgb, verify_image
from rlq.errors import DatasetError


def save(im: Image.Image, path: Path, fmt: str | None = None) -> Path:
    im.save(path, format=fmt)
    return path


def png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose IHDR declares w x h pixels but which carries almost no data (a decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def arr(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    return np.asarray(im)


@pytest.mark.parametrize("ext,fmt", [("png", "PNG"), ("bmp", "BMP")])
def test_rgb_lossless_roundtrip(tmp_path, ext, fmt):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
    p = save(Image.fromarray(a, "RGB"), tmp_path / f"x.{ext}", fmt)
    np.testing.assert_array_equal(arr(read_image(p)), a)
    assert verify_image(p) is None and verify_image(p, full_decode=False) is None


def test_jpeg_and_tiny_8x4(tmp_path):
    p = save(Image.new("RGB", (8, 4), (200, 40, 90)), tmp_path / "tiny.jpg", "JPEG")
    im = read_image(p)
    assert im.size == (8, 4)
    assert np.abs(arr(im).astype(int) - [200, 40, 90]).max() <= 4


def test_grayscale_and_la(tmp_path):
    g = np.arange(32, dtype=np.uint8).reshape(4, 8) * 7
    p = save(Image.fromarray(g, "L"), tmp_path / "g.png")
    np.testing.assert_array_equal(arr(read_image(p)), np.repeat(g[..., None], 3, axis=2))
    la = Image.merge("LA", [Image.fromarray(g, "L"), Image.new("L", (8, 4), 0)])
    p2 = save(la, tmp_path / "la.png")
    # Alpha is dropped, not composited: fully transparent pixels keep their grey value.
    np.testing.assert_array_equal(arr(read_image(p2)), np.repeat(g[..., None], 3, axis=2))


def test_rgba_drops_alpha(tmp_path):
    a = np.zeros((4, 8, 4), np.uint8)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 10, 20, 30, 0
    a[0, 0] = (250, 5, 128, 255)
    p = save(Image.fromarray(a, "RGBA"), tmp_path / "rgba.png")
    out = arr(read_image(p))
    np.testing.assert_array_equal(out, a[..., :3])


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (8, 4), 1)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.putpixel((0, 0), 2)
    im.info["transparency"] = 1
    p = save(im, tmp_path / "p.png")
    assert Image.open(p).mode == "P"
    out = arr(read_image(p))
    assert tuple(out[0, 0]) == (0, 255, 0) and tuple(out[1, 1]) == (255, 0, 0)


def test_cmyk_tiff(tmp_path):
    p = save(Image.new("CMYK", (8, 4), (255, 0, 0, 0)), tmp_path / "c.tif", "TIFF")
    assert Image.open(p).mode == "CMYK"
    assert tuple(arr(read_image(p))[0, 0]) == (0, 255, 255)  # pure cyan


def test_16bit_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 32768, 65535], [1000, 20000, 40000, 65280]], dtype=np.uint16)
    # Independent reference: round(v * 255 / 65535).
    ref = np.floor(v.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    p = save(Image.fromarray(v), tmp_path / "16.png")
    assert Image.open(p).mode == "I;16"
    out = arr(read_image(p))
    np.testing.assert_array_equal(out[..., 0], ref)
    assert tuple(out[0, :, 0]) == (0, 1, 128, 255)
    # 32-bit "I" (e.g. from TIFF) is read on the same 0..65535 scale.
    p2 = save(Image.fromarray(v.astype(np.int32), "I"), tmp_path / "i.tif", "TIFF")
    assert Image.open(p2).mode == "I"
    np.testing.assert_array_equal(arr(read_image(p2))[..., 0], ref)
    # In-memory big-endian 16-bit ("I;16B") takes the same path.
    be = Image.frombytes("I;16B", (4, 2), v.astype(">u2").tobytes())
    assert be.mode == "I;16B"
    np.testing.assert_array_equal(np.asarray(to_rgb(be))[..., 0], ref)


def test_missing_and_zero_byte(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"zero\.jpg: empty file \(0 bytes\)"):
        read_image(tmp_path / "zero.jpg")
    assert verify_image(tmp_path / "zero.jpg", full_decode=False) == "empty file (0 bytes)"
    assert verify_image(tmp_path) == "not a regular file"


def test_corrupt_bytes(tmp_path):
    p = tmp_path / "garbage.jpg"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError) as ei:
        read_image(p)
    assert str(p) in str(ei.value) and "not a readable image" in str(ei.value)
    assert verify_image(p, full_decode=False) is not None


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated(tmp_path, fmt, ext):
    rng = np.random.default_rng(2)
    full = save(Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)), tmp_path / f"full.{ext}", fmt)
    data = full.read_bytes()
    p = tmp_path / f"cut.{ext}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as ei:
        read_image(p)
    msg = str(ei.value)
    assert str(p) in msg and ("truncated" in msg or "corrupt" in msg)
    assert verify_image(p) is not None


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_sizes(tmp_path):
    huge = png_header_only(tmp_path / "huge.png", 100_000, 100_000)  # > 2x Pillow's limit: Pillow refuses
    with pytest.raises(DatasetError, match=r"huge\.png: decompression bomb"):
        read_image(huge)
    big = png_header_only(tmp_path / "big.png", 10_000, 10_000)  # 1e8 pixels > MAX_PIXELS: refused by rlq
    assert 10_000 * 10_000 > MAX_PIXELS
    with pytest.raises(DatasetError, match=r"big\.png: image too large: 10000x10000"):
        read_image(big)
    assert "too large" in verify_image(big, full_decode=False)
    small = save(Image.new("RGB", (8, 16)), tmp_path / "s.png")
    with pytest.raises(DatasetError, match="too large"):
        read_image(small, max_pixels=100)
    assert read_image(small, max_pixels=None).size == (8, 16)
