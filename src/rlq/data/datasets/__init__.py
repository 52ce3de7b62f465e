"""Dataset registry: `load_dataset(name, root, **options)` and per-dataset metadata (docs/datasets.md §3).

Parsers are pure (no torch): they turn a folder (or a CSV manifest) into a frozen `records.Dataset`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import NamedTuple

from rlq.data.records import Dataset, EvalSpec, Protocol
from rlq.errors import DatasetError

from . import celebreid, deepchange, last, ltcc, manifest, prcc, vcclothes
from .celebreid import load_celebreid
from .deepchange import load_deepchange
from .last import load_last
from .ltcc import load_ltcc, load_synthcc
from .manifest import load_manifest
from .prcc import load_prcc
from .vcclothes import load_vcclothes

__all__ = [
    "DATASET_NAMES",
    "DATASET_INFO",
    "DatasetInfo",
    "load_dataset",
    "layout_missing",
    "canonical_name",
    "dataset_key",
    "check_options",
    "suggest_roots",
    "load_ltcc",
    "load_synthcc",
    "load_prcc",
    "load_last",
    "load_deepchange",
    "load_celebreid",
    "load_vcclothes",
    "load_manifest",
]


class DatasetInfo(NamedTuple):
    """Expected layout tree, published statistics per split (docs/datasets.md §3.1) and a short description.

    `stats` maps a split name, or several joined by '+' (counted over their union), to published
    ``images`` / ``ids`` / ``clothes`` / ``cameras`` numbers; only what §3.1 states is listed.
    """

    tree: str
    stats: Mapping[str, Mapping[str, int]]
    description: str


DATASET_INFO: dict[str, DatasetInfo] = {
    "ltcc": DatasetInfo(
        ltcc.TREE,
        {
            "train": {"ids": 77, "images": 9576, "clothes": 256, "cameras": 12},
            "query": {"ids": 75, "images": 493},
            "gallery": {"ids": 75, "images": 7050},
            "query+gallery": {"clothes": 221},
        },
        "LTCC (Long-Term Cloth-Changing): 12 indoor cameras; general, CC and SC protocols.",
    ),
    "prcc": DatasetInfo(
        prcc.TREE,
        {
            "train": {"ids": 150, "images": 17896, "clothes": 300, "cameras": 3},
            "val": {"ids": 150, "images": 5002},
            "gallery": {"images": 3384},
            "query_b": {"images": 3873},
            "query_c": {"images": 3543},
            "gallery+query_b+query_c": {"ids": 71, "clothes": 142},
        },
        "PRCC: 3 cameras A/B/C; B -> A (same clothes) and C -> A (clothes changed), multi-shot.",
    ),
    "last": DatasetInfo(
        last.TREE,
        {
            "train": {"ids": 5000, "images": 71248, "clothes": 16035},
            "val_query+val_gallery": {"ids": 56, "images": 21379},
            "query+gallery": {"ids": 5806, "images": 135529},
        },
        "LaST: movie frames, no cameras (every image its own camera); general protocol only.",
    ),
    "deepchange": DatasetInfo(
        deepchange.TREE,
        {
            "train": {"ids": 450, "images": 75083, "clothes": 1219, "cameras": 17},
            "val_query": {"images": 4976},
            "val_gallery": {"images": 17865},
            "val_query+val_gallery": {"ids": 150},
            "query": {"images": 17527},
            "gallery": {"images": 62956},
            "query+gallery": {"ids": 521, "clothes": 1336},
        },
        "DeepChange: 17 outdoor cameras over a year; camid is the tracklet id; general protocol only.",
    ),
    "celebreid": DatasetInfo(
        celebreid.TREE,
        {
            "train": {"ids": 632, "images": 20208, "clothes": 20208},
            "query": {"ids": 420, "images": 2972},
            "gallery": {"ids": 420, "images": 11006},
        },
        "Celeb-reID: web images of celebrities, no cameras or clothes labels; general protocol only.",
    ),
    "vcclothes": DatasetInfo(
        vcclothes.TREE,
        {
            "train": {"ids": 256, "images": 9449},
            "query": {"images": 1020},
            "gallery": {"images": 8591},
            "query+gallery": {"ids": 256},
            "train+query+gallery": {"ids": 512, "images": 19060, "cameras": 4},
        },
        "VC-Clothes: synthetic (game engine), 4 cameras; general rule on all / sc / cc camera subsets.",
    ),
    "synthcc": DatasetInfo(
        ltcc.SYNTHCC_TREE,
        {},
        "SynthCC: rlq's synthetic dataset in the LTCC layout and naming (no published statistics).",
    ),
    "manifest": DatasetInfo(
        manifest.TREE,
        {},
        "Custom data described by a CSV manifest (root = the CSV file) and an optional protocol YAML.",
    ),
}

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "ltcc": load_ltcc,
    "prcc": load_prcc,
    "last": load_last,
    "deepchange": load_deepchange,
    "celebreid": load_celebreid,
    "vcclothes": load_vcclothes,
    "manifest": load_manifest,
    "synthcc": load_synthcc,
}

_MISSING: dict[str, Callable[[str | os.PathLike], list[str]]] = {
    "ltcc": ltcc.missing,
    "prcc": prcc.missing,
    "last": last.missing,
    "deepchange": deepchange.missing,
    "celebreid": celebreid.missing,
    "vcclothes": vcclothes.missing,
    "manifest": manifest.missing,
    "synthcc": ltcc.missing,
}

#: Every dataset name `load_dataset` accepts.
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def dataset_key(name: str) -> str:
    """`name` as the registry spells names (case, '-' and '_' ignored: 'Celeb-reID' -> 'celebreid'); not checked."""
    return str(name).strip().lower().replace("-", "").replace("_", "")


def canonical_name(name: str) -> str:
    """Registry name for `name` (case, '-' and '_' ignored: 'Celeb-reID' -> 'celebreid'); DatasetError if unknown."""
    key = dataset_key(name)
    if key not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return key


def layout_missing(name: str, root: str | os.PathLike) -> list[str]:
    """What the dataset's layout needs and `root` lacks (relative paths; folders end in '/'); [] if complete."""
    return _MISSING[canonical_name(name)](os.path.expanduser(os.fspath(root)))


def check_options(name: str, options: Mapping[str, object]) -> None:
    """DatasetError naming any option the dataset's parser does not take."""
    key = canonical_name(name)
    params = inspect.signature(_LOADERS[key]).parameters
    bad = sorted(k for k in options if k not in params or k == "root")
    if bad:
        valid = [p for p in params if p != "root"]
        raise DatasetError(f"dataset {key!r} does not take option(s) {bad}; it takes {valid}")


def suggest_roots(name: str, root: str | os.PathLike) -> list[str]:
    """Sub-folders of `root` that have the dataset's full layout (e.g. `…/LTCC_ReID` when pointed at its
    parent); [] when `root` itself has it, or for `manifest` (whose root is a CSV file)."""
    key = canonical_name(name)
    r = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if key == "manifest" or not os.path.isdir(r) or not layout_missing(key, r):
        return []
    try:
        children = sorted(e.path for e in os.scandir(r) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
    return [c for c in children if not layout_missing(key, c)]


def load_dataset(name: str, root: str | os.PathLike, **options) -> Dataset:
    """Parse dataset `name` at `root` (for 'manifest': the CSV file); options go to the parser (e.g. skip_bad)."""
    key = canonical_name(name)
    check_options(key, options)
    try:
        return _LOADERS[key](root, **options)
    except DatasetError as exc:
        hint = suggest_roots(key, root)
        if hint:
            raise DatasetError(f"did you mean {' or '.join(hint)}? {exc}") from None
        raise


def standard_protocols(name: str) -> dict[str, Protocol]:
    """The protocols a dataset's parser attaches, without reading the dataset (for saved feature files).

    Not available for `manifest`, whose protocol lives in its `<manifest>.protocol.yaml`.
    """
    key = canonical_name(name)

    def general(q: str = "query", g: str = "gallery", derived: bool = False) -> Protocol:
        return Protocol((EvalSpec("general", q, g, "general"),), "general", clothes_derived=derived)

    if key in ("ltcc", "synthcc"):
        return {"test": Protocol(tuple(EvalSpec(m, "query", "gallery", m) for m in ("general", "cc", "sc")), "cc")}
    if key == "prcc":
        return {"test": Protocol((EvalSpec("sc", "query_b", "gallery", "general"),
                                  EvalSpec("cc", "query_c", "gallery", "general")), "cc", clothes_derived=True)}
    if key == "last":
        return {"test": general(derived=True), "val": general("val_query", "val_gallery", derived=True)}
    if key == "deepchange":
        return {"test": general(), "val": general("val_query", "val_gallery")}
    if key == "celebreid":
        return {"test": general(derived=True)}
    if key == "vcclothes":
        return {"test": Protocol((EvalSpec("general", "query", "gallery", "general"),
                                  EvalSpec("sc", "query_sc", "gallery_sc", "general"),
                                  EvalSpec("cc", "query_cc", "gallery_cc", "general")), "general")}
    raise DatasetError(f"dataset {key!r} keeps its protocol next to its manifest: pass --root MANIFEST.csv")
