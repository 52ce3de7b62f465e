"""Writers of tiny dataset trees in every supported layout (shared by tests; not a test module).

Each ``write_<layout>(root, files=None, ...)`` writes real tiny images (8x16 RGB by default, PNG/JPEG/BMP by
extension) with the dataset's real file-name patterns under ``root`` and returns the dataset root to pass
to the parser (for the manifest: the CSV path). ``files`` defaults to the module constant of that layout
(paths relative to the dataset root); ``written(root)`` lists what is on disk. Every image gets a distinct,
deterministic colour (``color_for(i)``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

__all__ = [
    "color_for",
    "write_image",
    "written",
    "LTCC_FILES",
    "PRCC_FILES",
    "LAST_FILES",
    "DEEPCHANGE_FILES",
    "CELEB_FILES",
    "VCCLOTHES_FILES",
    "MANIFEST_ROWS",
    "write_ltcc",
    "write_synthcc",
    "write_prcc",
    "write_last",
    "write_deepchange",
    "write_celebreid",
    "write_vcclothes",
    "write_manifest",
    "write_dataset",
    "WRITERS",
]

SIZE = (8, 16)  # (width, height)

LTCC_FILES = (
    "train/001_1_c1_000001.png",
    "train/001_1_c2_000002.png",
    "train/001_2_c3_000003.png",
    "train/003_1_c11_000004.png",
    "train/003_2_c12_000005.png",
    "train/010_1_c1_000006.png",
    "query/002_1_c1_000010.png",
    "query/004_1_c2_000011.png",
    "test/002_1_c2_000020.png",
    "test/002_2_c3_000021.png",
    "test/002_1_c1_000022.png",
    "test/004_3_c4_000023.png",
    "test/005_1_c5_000024.png",
)

# Relative to the PRCC root (prcc/). The same basename occurs in several identity folders, as in PRCC.
PRCC_FILES = (
    "rgb/train/001/A_cropped_rgb001.jpg",
    "rgb/train/001/B_cropped_rgb002.jpg",
    "rgb/train/001/C_cropped_rgb003.jpg",
    "rgb/train/092/A_cropped_rgb001.jpg",
    "rgb/train/092/C_cropped_rgb002.jpg",
    "rgb/val/001/A_cropped_rgb004.jpg",
    "rgb/val/001/C_cropped_rgb005.jpg",
    "rgb/val/092/B_cropped_rgb003.jpg",
    "rgb/test/A/005/cropped_rgb001.jpg",
    "rgb/test/A/012/cropped_rgb001.jpg",
    "rgb/test/A/012/cropped_rgb002.jpg",
    "rgb/test/B/005/cropped_rgb001.jpg",
    "rgb/test/B/012/cropped_rgb003.jpg",
    "rgb/test/C/005/cropped_rgb001.jpg",
    "rgb/test/C/012/cropped_rgb004.jpg",
)

LAST_FILES = (
    "train/000002/000002_000_00009_0134_01_004.jpg",
    "train/000002/000002_001_00009_0135_01_005.jpg",
    "train/000002/000002_002_00009_0185_00_004.jpg",
    "train/000010/000010_000_00001_0001_01_001.jpg",
    "val/query/000100_000_00002_0002_01_001.jpg",
    "val/gallery/000100/000100_001_00002_0003_01_002.jpg",
    "val/gallery/000101/000101_000_00002_0004_01_001.jpg",
    "test/query/000200_000_00003_0001_01_001.jpg",
    "test/query/000201_000_00003_0002_01_001.jpg",
    "test/gallery/000200/000200_001_00003_0003_01_002.jpg",
    "test/gallery/000200/000200_002_00003_0004_01_002.jpg",
    "test/gallery/000201/000201_001_00003_0005_01_003.jpg",
    "test/gallery/000202/000202_000_00003_0006_01_001.jpg",
)

# (path relative to the root, tracklet id); the *-bbox.txt lists are written from these (in reverse order).
DEEPCHANGE_FILES = (
    ("train-set/p0003_c01_20201015_172644_000744_bbox.jpg", 11),
    ("train-set/p0003_c01_20201214_083954_000496_bbox.jpg", 12),
    ("train-set/p0003_c06_20201015_082310_000121_bbox.jpg", 13),
    ("train-set/p0012_c02_20201015_100000_000001_bbox.jpg", 14),
    ("val-set-query/p0501_c03_20210101_100000_000001_bbox.jpg", 21),
    ("val-set-gallery/p0501_c03_20210101_100001_000002_bbox.jpg", 21),
    ("val-set-gallery/p0501_c04_20210102_100000_000003_bbox.jpg", 22),
    ("test-set-query/p0600_c05_20210301_120000_000001_bbox.jpg", 31),
    ("test-set-query/p0601_c05_20210301_120500_000002_bbox.jpg", 32),
    ("test-set-gallery/p0600_c05_20210301_121000_000003_bbox.jpg", 33),
    ("test-set-gallery/p0600_c07_20210305_090000_000004_bbox.jpg", 34),
    ("test-set-gallery/p0601_c05_20210301_120501_000005_bbox.jpg", 32),
)
DEEPCHANGE_FOLDERS = ("train-set", "val-set-query", "val-set-gallery", "test-set-query", "test-set-gallery")

CELEB_FILES = (
    "train/101_25_0.jpg",
    "train/101_26_0.jpg",
    "train/7_3_1.jpg",
    "train/-1_5_0.jpg",
    "query/201_12_0.jpg",
    "query/202_31_0.jpg",
    "gallery/201_15_0.jpg",
    "gallery/201_31_0.jpg",
    "gallery/202_1_0.jpg",
)

VCCLOTHES_FILES = (
    "train/0001-01-01-0001.jpg",
    "train/0001-02-02-0002.jpg",
    "train/0003-03-01-0001.jpg",
    "train/0003-04-01-0002.jpg",
    "query/0010-01-01-0001.jpg",
    "query/0010-02-01-0002.jpg",
    "query/0010-03-01-0003.jpg",
    "query/0011-04-02-0001.jpg",
    "query/0011-03-01-0002.jpg",
    "gallery/0010-02-02-0004.jpg",
    "gallery/0010-03-01-0005.jpg",
    "gallery/0010-04-02-0006.jpg",
    "gallery/0011-01-01-0003.jpg",
    "gallery/0011-02-02-0004.jpg",
    "gallery/0011-04-01-0005.jpg",
)

# "007" and "7" are two different identities in a manifest (exact strings, docs/datasets.md §4).
MANIFEST_ROWS: tuple[dict[str, str], ...] = (
    {"path": "img/train/a1.png", "split": "train", "pid": "007", "camid": "c1", "clothes": "red", "gender": "1", "pose": "3"},
    {"path": "img/train/a2.png", "split": "train", "pid": "007", "camid": "c2", "clothes": "blue", "gender": "1", "pose": "1"},
    {"path": "img/train/b1.png", "split": "train", "pid": "7", "camid": "c1", "clothes": "red", "gender": "0", "pose": "0"},
    {"path": "img/train/c1.png", "split": "train", "pid": "p12", "camid": "c2", "clothes": "", "gender": "", "pose": ""},
    {"path": "img/test/q1.png", "split": "query", "pid": "100", "camid": "c1", "clothes": "x"},
    {"path": "img/test/q2.png", "split": "query", "pid": "101", "camid": "c2", "clothes": "y", "query_set": "night"},
    {"path": "img/test/g1.png", "split": "gallery", "pid": "100", "camid": "c2", "clothes": "x"},
    {"path": "img/test/g2.png", "split": "gallery", "pid": "100", "camid": "c3", "clothes": "z"},
    {"path": "img/test/g3.png", "split": "gallery", "pid": "101", "camid": "c1", "clothes": "y"},
    {"path": "img/test/g4.png", "split": "gallery", "pid": "102", "camid": "", "clothes": "w"},
)


def color_for(i: int) -> tuple[int, int, int]:
    """A distinct, deterministic RGB colour per index."""
    return ((37 * i + 11) % 256, (91 * i + 53) % 256, (173 * i + 97) % 256)


def write_image(path: str | Path, color: tuple[int, int, int] = (200, 30, 60), size: tuple[int, int] = SIZE) -> Path:
    """Write a tiny RGB image (format from the extension; .jpg as JPEG) with a gradient so it is not flat."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, color)
    px = im.load()
    for x in range(size[0]):
        px[x, 0] = (x * 30 % 256, 0, 255 - x * 30 % 256)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    im.save(path, format=fmt)
    return path


def _write_files(root: Path, files: Iterable[str], size: tuple[int, int]) -> None:
    for i, rel in enumerate(files):
        write_image(root / rel, color_for(i), size)


def written(root: str | Path) -> list[str]:
    """Every file under `root`, as sorted relative POSIX paths."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _junk(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Thumbs.db").write_bytes(b"\x00junk")
    (folder / ".DS_Store").write_bytes(b"\x00junk")
    (folder / "notes.txt").write_text("not an image\n")


def write_ltcc(
    root: str | Path, files: Sequence[str] | None = None, *, size: tuple[int, int] = SIZE, junk: bool = True
) -> Path:
    """An LTCC_ReID tree (train/, query/, test/, info/); returns its root."""
    root = Path(root)
    _write_files(root, LTCC_FILES if files is None else files, size)
    for d in ("train", "query", "test"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if junk:
        _junk(root / "train")
        (root / "info").mkdir(exist_ok=True)
        (root / "info" / "cloth-change_id_test.txt").write_text("2\n4\n")
    return root


def write_synthcc(root: str | Path, files: Sequence[str] | None = None, *, size: tuple[int, int] = SIZE) -> Path:
    """A SynthCC tree (the LTCC layout and naming); returns its root."""
    return write_ltcc(root, files, size=size, junk=False)


def write_prcc(root: str | Path, files: Sequence[str] | None = None, *, size: tuple[int, int] = SIZE) -> Path:
    """A PRCC tree (prcc/rgb/{train,val,test/{A,B,C}}); returns the prcc/ root."""
    root = Path(root)
    _write_files(root, PRCC_FILES if files is None else files, size)
    _junk(root / "rgb" / "train" / "001")
    return root


def write_last(root: str | Path, files: Sequence[str] | None = None, *, size: tuple[int, int] = SIZE) -> Path:
    """A LaST tree (train/<pid>/, {val,test}/query/, {val,test}/gallery/<pid>/); returns its root."""
    root = Path(root)
    _write_files(root, LAST_FILES if files is None else files, size)
    return root


def write_deepchange(
    root: str | Path,
    files: Sequence[tuple[str, int]] | None = None,
    *,
    size: tuple[int, int] = SIZE,
    extra_list_lines: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """A DeepChangeDataset tree with its five *-bbox.txt lists ("<basename>,<tracklet>"); returns its root."""
    root = Path(root)
    files = DEEPCHANGE_FILES if files is None else files
    _write_files(root, [f for f, _ in files], size)
    for folder in DEEPCHANGE_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        lines = [f"{Path(f).name},{t}" for f, t in files if f.split("/")[0] == folder][::-1]
        lines += list((extra_list_lines or {}).get(folder, ()))
        (root / f"{folder}-bbox.txt").write_text("".join(ln + "\n" for ln in lines))
    return root


def write_celebreid(root: str | Path, files: Sequence[str] | None = None, *, size: tuple[int, int] = SIZE) -> Path:
    """A Celeb-reID tree (train/, query/, gallery/ of x_y_z.jpg); returns its root."""
    root = Path(root)
    _write_files(root, CELEB_FILES if files is None else files, size)
    return root


def write_vcclothes(root: str | Path, files: Sequence[str] | None = None, *, size: tuple[int, int] = SIZE) -> Path:
    """A VC-Clothes tree (train/, query/, gallery/ of PPPP-CC-LL-FFFF.jpg); returns its root."""
    root = Path(root)
    _write_files(root, VCCLOTHES_FILES if files is None else files, size)
    return root


def write_manifest(
    root: str | Path,
    rows: Sequence[Mapping[str, Any]] | None = None,
    *,
    protocol: Mapping[str, Any] | None = None,
    name: str = "manifest.csv",
    columns: Sequence[str] | None = None,
    images: bool = True,
    size: tuple[int, int] = SIZE,
) -> Path:
    """A manifest CSV in `root` (+ `<stem>.protocol.yaml` if `protocol`), writing the images of safe relative
    paths when `images`; returns the CSV path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = MANIFEST_ROWS if rows is None else rows
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.writer(buf)  # "\r\n" rows: fields holding \r or \n get quoted
    w.writerow(columns)
    for r in rows:
        w.writerow([r.get(c, "") for c in columns])
    csv_path = root / name
    csv_path.write_bytes(buf.getvalue().encode("utf-8"))
    if images:
        for i, r in enumerate(rows):
            p = str(r.get("path", ""))
            if p and not p.startswith("/") and ".." not in p.split("/"):
                write_image(root / p, color_for(i), size)
    if protocol is not None:
        (root / (Path(name).stem + ".protocol.yaml")).write_text(yaml.safe_dump(dict(protocol)))
    return csv_path


WRITERS = {
    "ltcc": write_ltcc,
    "synthcc": write_synthcc,
    "prcc": write_prcc,
    "last": write_last,
    "deepchange": write_deepchange,
    "celebreid": write_celebreid,
    "vcclothes": write_vcclothes,
    "manifest": write_manifest,
}


def write_dataset(name: str, root: str | Path) -> Path:
    """The default tiny tree of dataset `name` under `root`; returns what `load_dataset(name, ...)` takes."""
    return WRITERS[name](root)
