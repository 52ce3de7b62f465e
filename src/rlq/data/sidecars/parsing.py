"""LIP parsing maps: SCHP palette PNGs, grey PNGs, ``.npy`` logits and the authors' legacy masks
(docs/datasets.md §5.2, docs/method.md §3.3). The LIP labels and palette live in :mod:`rlq.data.lip`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rlq.data.lip import ALL_CLOTHES_IDS, LIP_PALETTE, LOWER_IDS, NUM_LIP, UPPER_IDS
from rlq.errors import SideInputError
from rlq.io import atomic_open

from ._common import _first

logger = logging.getLogger(__name__)


#: Parts of the authors' legacy mask layout that the method uses (docs/datasets.md §5.2).
LEGACY_PARTS = ("shirt", "pant", "clothes")
_LEGACY_FILL = 11  # scarf: an all-clothes id outside U and L


def schp_output_name(image_name: str) -> str:
    """SCHP's output name: the input name minus its last 4 characters, plus ``.png`` (``a.jpeg`` -> ``a..png``)."""
    return image_name[:-4] + ".png"


def parsing_path(
    parsing_root: str | os.PathLike, dataset_root: str | os.PathLike, image_path: str | os.PathLike
) -> Path:
    """Where SCHP's map for ``image_path`` lies in a tree under ``parsing_root`` mirroring the dataset."""
    root_abs = os.path.abspath(dataset_root)
    p = os.fspath(image_path)
    p = os.path.abspath(p if os.path.isabs(p) else os.path.join(root_abs, p))
    rel = os.path.relpath(p, root_abs)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or rel == os.curdir:
        raise SideInputError(f"image {image_path} is not under the dataset root {dataset_root}; pass the matching root")
    return Path(parsing_root) / os.path.dirname(rel) / schp_output_name(os.path.basename(rel))


def _check_labels(path: Path, labels: np.ndarray, expected_size: tuple[int, int] | None) -> np.ndarray:
    h, w = labels.shape[:2]
    if expected_size is not None and (w, h) != tuple(expected_size):
        raise SideInputError(
            f"parsing map {path} is {w}x{h} (W x H) but its image is {expected_size[0]}x{expected_size[1]}; "
            "SCHP maps are in the input frame: re-run SCHP on the original images"
        )
    bad = np.unique(labels[labels >= NUM_LIP])
    if bad.size:
        raise SideInputError(
            f"parsing map {path} has label values {_first(bad.tolist())}, but LIP ids are 0..{NUM_LIP - 1}; "
            "use the LIP checkpoint (20 classes) and save the raw label map, not a colour image"
        )
    return labels


def read_parsing(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """A LIP label map (uint8, H x W) from a palette / grey PNG or an H x W x 20 logits ``.npy``.

    ``expected_size`` is the image's (W, H).
    """
    path = Path(path)
    if not path.is_file():
        raise SideInputError(f"parsing map {path} does not exist; run SCHP on this image's folder (docs/datasets.md §5.2)")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - ValueError, OSError, EOFError, ...: any unreadable file
            raise SideInputError(f"parsing logits {path} cannot be read as .npy ({type(e).__name__}: {e})") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive renamed .npy
            arr.close()
            raise SideInputError(f"parsing logits {path} are an .npz archive; save one H x W x 20 array with np.save")
        if arr.ndim != 3 or arr.shape[2] != NUM_LIP \
                or arr.dtype.kind not in "fiu" or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise SideInputError(
                f"parsing logits {path} have shape {getattr(arr, 'shape', None)} dtype "
                f"{getattr(arr, 'dtype', None)}; expected float H x W x {NUM_LIP} (SCHP --logits)"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise SideInputError(f"parsing logits {path} contain NaN or infinite values; re-run SCHP")
        labels = np.argmax(arr, axis=2).astype(np.uint8)
        return _check_labels(path, labels, expected_size)
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in ("P", "L"):
                raise SideInputError(
                    f"parsing map {path} is a {mode!r} image; expected SCHP's palette ('P') PNG whose pixel index "
                    "is the LIP id, or a grey ('L') label PNG, not a colour rendering"
                )
            labels = np.array(img, dtype=np.uint8)
    except SideInputError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise SideInputError(f"parsing map {path} cannot be read as an image ({type(e).__name__}: {e})") from None
    if labels.ndim != 2 or labels.size == 0:
        raise SideInputError(f"parsing map {path} has shape {labels.shape}; expected H x W")
    return _check_labels(path, labels, expected_size)


def write_parsing(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a LIP label map as a palette PNG with ``LIP_PALETTE`` (pixel index = label id)."""
    from PIL import Image

    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"cannot write parsing map {path}: need a non-empty integer H x W array, got "
                         f"{arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() >= NUM_LIP:
        raise ValueError(f"cannot write parsing map {path}: labels must be in 0..{NUM_LIP - 1}")
    img = Image.fromarray(arr.astype(np.uint8))
    img.putpalette([c for rgb in LIP_PALETTE for c in rgb])  # "L" becomes "P"
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")


def lip_region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Recolouring regions of a label map (docs/method.md §3.3): ``upper`` U, ``lower`` L, ``all`` A (bool H x W)."""
    labels = np.asarray(labels)
    return {
        "upper": np.isin(labels, UPPER_IDS),
        "lower": np.isin(labels, LOWER_IDS),
        "all": np.isin(labels, ALL_CLOTHES_IDS),
    }


def read_legacy_masks(mask_dir: str | os.PathLike, key: str) -> dict[str, np.ndarray]:
    """The authors' ``<key>_shirt/_pant/_clothes.png`` masks (3-channel 0/255) as bool H x W arrays."""
    from PIL import Image

    mask_dir = Path(mask_dir)
    out: dict[str, np.ndarray] = {}
    for part in LEGACY_PARTS:
        p = mask_dir / f"{key}_{part}.png"
        if not p.is_file():
            raise SideInputError(
                f"legacy mask {p} ({part!r} part of {key!r}) does not exist; the legacy layout needs "
                f"{', '.join(f'<key>_{q}.png' for q in LEGACY_PARTS)} per image, or use SCHP label maps"
            )
        try:
            with Image.open(p) as img:
                arr = np.asarray(img.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - any undecodable file
            raise SideInputError(f"legacy mask {p} cannot be read as an image ({type(e).__name__}: {e})") from None
        if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise SideInputError(f"legacy mask {p} has shape {arr.shape}; expected H x W x 3")
        out[part] = arr.max(axis=2) >= 128
    shapes = {k: v.shape for k, v in out.items()}
    if len(set(shapes.values())) != 1:
        raise SideInputError(
            f"legacy masks of {key!r} in {mask_dir} differ in size {shapes}; regenerate them from one label map"
        )
    return out


def legacy_masks_to_labels(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """A LIP label map whose U / L / A regions equal the shirt / pant / clothes masks (5, 9, else 11 = scarf)."""
    missing = [p for p in LEGACY_PARTS if p not in masks]
    if missing:
        raise SideInputError(f"legacy masks lack the parts {missing}; need {LEGACY_PARTS}")
    shirt, pant, clothes = (np.asarray(masks[p], dtype=bool) for p in LEGACY_PARTS)
    if not shirt.shape == pant.shape == clothes.shape or shirt.ndim != 2:
        raise SideInputError(
            f"legacy masks differ in shape: shirt {shirt.shape}, pant {pant.shape}, clothes {clothes.shape}"
        )
    overlap = int((shirt & pant).sum())
    outside = int(((shirt | pant) & ~clothes).sum())
    if overlap or outside:
        # Masks cut from one label map are disjoint and nested; anything else cannot be one label map.
        logger.warning("legacy masks are inconsistent (%d shirt/pant overlap px, %d shirt/pant px outside clothes); "
                       "shirt wins over pant, and shirt/pant pixels join the all-clothes region", overlap, outside)
    labels = np.zeros(shirt.shape, dtype=np.uint8)
    labels[clothes] = _LEGACY_FILL
    labels[pant] = LOWER_IDS[0]
    labels[shirt] = UPPER_IDS[0]
    return labels
