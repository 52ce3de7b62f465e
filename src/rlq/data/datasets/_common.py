"""Helpers shared by the dataset parsers: root and layout checks, sorted listing, anchored name parsing,
lenient-mode error collection and relabelling wrappers (docs/datasets.md §1, §6)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlq.data.records import Dataset, Protocol, RawSample, Sample, relabel_test_clothes, relabel_train
from rlq.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTS",
    "IMAGE_LIKE_EXTS",
    "ext_regex",
    "looks_like_image",
    "resolve_root",
    "layout_missing",
    "check_layout",
    "list_dir",
    "Listed",
    "scan_flat",
    "scan_id_folders",
    "Problems",
    "require_nonempty",
    "train_relabel",
    "test_relabel",
    "stem",
    "unique_camids",
    "make_dataset",
]

#: Image extensions the parsers accept (case-insensitively) where a dataset allows them.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
# Files with these extensions look like images: they are never silently ignored. A file that looks like an
# image but does not fit the dataset's pattern is an error (or, with skip_bad, skipped and counted).
IMAGE_LIKE_EXTS = frozenset(
    IMAGE_EXTS + (".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2", ".jfif", ".heic", ".avif")
)

_SKIP_HINT = "Fix or remove them, or pass skip_bad=True (CLI: --skip-bad) to skip and count such {what}."


def ext_regex(exts: Sequence[str] = IMAGE_EXTS) -> str:
    """A regex group matching any of `exts` (without the dot), case-insensitively."""
    return "(?i:" + "|".join(re.escape(e.lstrip(".")) for e in exts) + ")"


def looks_like_image(name: str) -> bool:
    """True when the file name has an image-like extension (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_LIKE_EXTS


def stem(name: str) -> str:
    """Basename without its last extension."""
    return os.path.splitext(os.path.basename(name))[0]


def _with_tree(msg: str, tree: str) -> str:
    return f"{msg}\nExpected layout:\n{tree.rstrip()}"


def resolve_root(root: str | os.PathLike, label: str, tree: str) -> Path:
    """Absolute dataset root; DatasetError naming it (and printing the expected tree) if it is not a folder."""
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not p.exists():
        raise DatasetError(_with_tree(f"{label} root {p} does not exist.", tree))
    if not p.is_dir():
        raise DatasetError(_with_tree(f"{label} root {p} is not a folder.", tree))
    return p


def layout_missing(root: Path, dirs: Iterable[str] = (), files: Iterable[str] = ()) -> list[str]:
    """Relative paths (folders with a trailing '/') that the layout needs and `root` lacks."""
    if not root.is_dir():
        return [str(root)]
    out = [f"{d}/" for d in dirs if not (root / d).is_dir()]
    out += [f for f in files if not (root / f).is_file()]
    return out


def check_layout(root: Path, label: str, tree: str, dirs: Iterable[str] = (), files: Iterable[str] = ()) -> None:
    """Raise DatasetError naming every missing folder / file, with the expected tree."""
    missing = layout_missing(root, dirs, files)
    if missing:
        what = ", ".join(repr(m) for m in missing)
        raise DatasetError(_with_tree(f"{label} root {root} is missing {what}.", tree))


def list_dir(folder: Path) -> tuple[list[str], list[str]]:
    """(file names, sub-folder names) of `folder`, sorted; hidden entries (leading '.') are skipped."""
    files, dirs = [], []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue  # .DS_Store, ._AppleDouble, .ipynb_checkpoints: metadata, never images
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                (dirs if is_dir else files).append(e.name)
    except OSError as exc:
        raise DatasetError(f"cannot list folder {folder}: {exc.strerror or exc}") from exc
    return sorted(files), sorted(dirs)


@dataclass(frozen=True)
class Listed:
    """One image found by a scan: its path relative to the root (POSIX), the regex match, its folders."""

    rel: str
    match: re.Match
    folder: str = ""  # the identity / camera folder name for nested layouts


class Problems:
    """Collects unparsable or inconsistent files; raises at the end unless `skip_bad` (lenient mode)."""

    def __init__(self, label: str, skip_bad: bool, what: str = "file(s)") -> None:
        self.label = label
        self.skip_bad = skip_bad
        self.what = what
        self.items: list[str] = []
        self.hints: list[str] = []

    def add(self, path: str | os.PathLike, reason: str, hint: str = "") -> None:
        self.items.append(f"{os.fspath(path)}: {reason}")
        if hint and hint not in self.hints:
            self.hints.append(hint)

    def finish(self) -> tuple[str, ...]:
        """Return the 'path: reason' lines (lenient mode) or raise DatasetError listing them."""
        if not self.items:
            return ()
        n = len(self.items)
        if not self.skip_bad:
            shown = "\n  ".join(self.items[:10])
            more = f"\n  ... and {n - 10} more" if n > 10 else ""
            hints = "".join(f"\n{h}" for h in self.hints)
            raise DatasetError(f"{self.label}: {n} {self.what} could not be used:\n  {shown}{more}{hints}\n" + _SKIP_HINT.format(what=self.what.replace("(s)", "s")))
        logger.warning("%s: skipped %d %s that could not be used (first: %s)", self.label, n, self.what, self.items[0])
        return tuple(self.items)


def scan_flat(
    root: Path, rel_folder: str, pattern: re.Pattern, problems: Problems, expected: str
) -> list[Listed]:
    """Images directly inside `root/rel_folder` whose basename fully matches `pattern`, sorted by path."""
    files, dirs = list_dir(root / rel_folder)
    for d in dirs:
        logger.warning("%s: ignoring unexpected sub-folder %s", problems.label, root / rel_folder / d)
    out = []
    for name in files:
        if not looks_like_image(name):
            logger.debug("ignoring non-image file %s", root / rel_folder / name)
            continue
        m = pattern.fullmatch(name)
        if m is None:
            problems.add(root / rel_folder / name, "file name does not match the expected pattern", f"Expected names: {expected}.")
            continue
        out.append(Listed(f"{rel_folder}/{name}", m))
    out.sort(key=lambda x: x.rel)
    return out


def scan_id_folders(
    root: Path,
    rel_folder: str,
    folder_pattern: re.Pattern,
    pattern: re.Pattern,
    problems: Problems,
    expected: str,
    folder_expected: str,
) -> list[Listed]:
    """Images in `root/rel_folder/<id folder>/`, id folder and basename fully matched, sorted by path."""
    files, dirs = list_dir(root / rel_folder)
    for name in files:
        if looks_like_image(name):
            problems.add(root / rel_folder / name, f"image outside an identity folder; expected {folder_expected}")
    out = []
    for d in dirs:
        sub_files, sub_dirs = list_dir(root / rel_folder / d)
        images = [f for f in sub_files if looks_like_image(f)]
        if folder_pattern.fullmatch(d) is None:
            if images or sub_dirs:
                problems.add(root / rel_folder / d, f"folder name is not {folder_expected}", f"Expected folders: {folder_expected}.")
            continue
        for sd in sub_dirs:
            logger.warning("%s: ignoring unexpected sub-folder %s", problems.label, root / rel_folder / d / sd)
        for name in images:
            m = pattern.fullmatch(name)
            if m is None:
                problems.add(root / rel_folder / d / name, "file name does not match the expected pattern", f"Expected names: {expected}.")
                continue
            out.append(Listed(f"{rel_folder}/{d}/{name}", m, d))
    out.sort(key=lambda x: x.rel)
    return out


def require_nonempty(label: str, split: str, n: int, folder: str | os.PathLike, expected: str) -> None:
    """DatasetError for an empty split (never a silent empty evaluation)."""
    if n == 0:
        raise DatasetError(
            f"{label} split {split!r} has no usable images in {os.fspath(folder)} (expected files named {expected})."
        )


def train_relabel(label: str, raw: Sequence[RawSample]) -> tuple[tuple[Sample, ...], int, int, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """`records.relabel_train` with its ValueError turned into a DatasetError naming the dataset."""
    try:
        return relabel_train(raw)
    except ValueError as exc:
        raise DatasetError(f"{label} train split: {exc}. Make every identity spelled one way.") from exc


def test_relabel(
    label: str, splits: Mapping[str, Iterable[RawSample]], pid_of: Mapping[str, int] | None = None
) -> dict[str, tuple[Sample, ...]]:
    """`records.relabel_test_clothes` with errors turned into DatasetError."""
    try:
        return relabel_test_clothes(splits, pid_of)
    except (ValueError, KeyError) as exc:
        raise DatasetError(f"{label} test splits: {exc}") from exc


def unique_camids(n_query: int, n_gallery: int) -> tuple[range, range]:
    """Camera ids unique per image: running index over the query list, gallery offset by |query| (§3.5)."""
    return range(n_query), range(n_query, n_query + n_gallery)


def make_dataset(
    name: str,
    root: Path,
    train_raw: Sequence[RawSample],
    eval_splits: Mapping[str, tuple[Sample, ...]],
    protocols: Mapping[str, Protocol],
    skipped: Sequence[str],
    label: str,
    info: Mapping[str, Any] | None = None,
) -> Dataset:
    """Relabel the train split and assemble the Dataset (train first, then the evaluation splits)."""
    samples, n_pids, n_clothes, p2c, pid_names, clothes_names = train_relabel(label, train_raw)
    splits: dict[str, tuple[Sample, ...]] = {}
    if train_raw:
        splits["train"] = samples
    splits.update(eval_splits)
    return Dataset(
        name=name,
        root=str(root),
        splits=splits,
        protocols=dict(protocols),
        num_train_pids=n_pids,
        num_train_clothes=n_clothes,
        pid2clothes=p2c,
        train_pid_names=pid_names,
        train_clothes_names=clothes_names,
        skipped=tuple(skipped),
        info=dict(info or {}),
    )
