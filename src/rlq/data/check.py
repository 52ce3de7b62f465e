"""`check-data` logic: layout, per-split counts against docs/datasets.md §3.1, unparsable names, unreadable images.

`check_data` reports a broken dataset instead of raising; only an unknown dataset name raises. Its verdict is
what `rlq train` will do: the same parser with the same `skip_bad` setting decides about file names (train
refuses unparsable or inconsistent files unless --skip-bad), and any unreadable image makes the dataset
NOT USABLE because training and evaluation stop at the first one they read (a DatasetError naming it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from rlq.data.datasets import DATASET_INFO, canonical_name, check_options, layout_missing, load_dataset, suggest_roots
from rlq.data.images import verify_image
from rlq.data.records import Dataset, Sample, canonical_id
from rlq.errors import DatasetError

__all__ = ["CheckReport", "check_data", "compare_stats", "format_report", "MOSTLY_UNREADABLE", "MIN_TRAIN_IDS",
           "require_readable_images"]

#: Kept for compatibility: a dataset with *any* unreadable image is now unusable (training stops at it).
MOSTLY_UNREADABLE = 0.5

_FIELDS = ("images", "ids", "clothes", "cameras")

#: The fewest train identities any training accepts (a PK batch of one identity has no negatives: every loss is 0);
#: `rlq train` asks for data.batch_size / data.num_instances of them (docs/method.md §3.2), at least this many.
MIN_TRAIN_IDS = 2


@dataclass
class CheckReport:
    """Outcome of `check_data` (plain data; `format_report` renders it)."""

    name: str
    root: str
    usable: bool
    layout_ok: bool
    missing: list[str] = field(default_factory=list)
    expected_tree: str = ""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    stats_mismatches: list[str] = field(default_factory=list)
    bad_images: list[str] = field(default_factory=list)
    n_bad_images: int = 0
    unparsable: list[str] = field(default_factory=list)
    n_unparsable: int = 0
    messages: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)  # sub-folders with the full layout ("did you mean")


def _union_counts(samples: Sequence[Sample]) -> dict[str, int]:
    # Identities by raw value: train pids are relabelled, test pids are not, so compare raw ids.
    return {
        "images": len({s.path for s in samples}),
        "ids": len({canonical_id(str(s.meta.get("raw_pid", s.pid))) for s in samples}),
        "clothes": len({s.clothes_id for s in samples}),
        "cameras": len({s.meta.get("camera", s.camid) for s in samples}),
    }


def compare_stats(dataset: Dataset, published: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One warning line per published number (docs/datasets.md §3.1) that the parsed dataset does not reproduce."""
    out = []
    for key, expected in published.items():
        parts = key.split("+")
        absent = [p for p in parts if p not in dataset.splits]
        if absent:
            out.append(f"{key}: split(s) {absent} missing (published {dict(expected)})")
            continue
        got = _union_counts([s for p in parts for s in dataset.splits[p]])
        for f in _FIELDS:
            if f in expected and got[f] != expected[f]:
                out.append(f"{key}: {got[f]:,} {f}, published {expected[f]:,}")
    return out


def _describe_protocols(dataset: Dataset) -> list[str]:
    lines = []
    for pname, proto in dataset.protocols.items():
        specs = ", ".join(f"{s.name} = {s.query} -> {s.gallery} ({s.mode} rule)" for s in proto.specs)
        derived = "; clothes ids derived (evaluation masks only)" if proto.clothes_derived else ""
        lines.append(f"protocol {pname}: {specs}; selection {proto.selection}{derived}")
    return lines


def check_data(
    name: str,
    root: str | os.PathLike,
    *,
    verify_images: bool = True,
    full_decode: bool = True,
    max_list: int = 10,
    progress: bool = False,
    skip_bad: bool = False,
    **options: Any,
) -> CheckReport:
    """Check dataset `name` at `root`: layout, counts vs §3.1, unparsable names and unreadable images.

    ``skip_bad`` is the training setting to judge against (`rlq train --skip-bad`, data.skip_bad): without
    it, any unparsable or inconsistent file makes the dataset NOT USABLE, as training would refuse it.
    """
    key = canonical_name(name)  # unknown names raise DatasetError
    info = DATASET_INFO[key]
    root_s = os.path.abspath(os.path.expanduser(os.fspath(root)))
    report = CheckReport(name=key, root=root_s, usable=False, layout_ok=False, expected_tree=info.tree)
    check_options(key, options)  # a wrong option is the caller's error, not the dataset's

    report.missing = layout_missing(key, root_s)
    if report.missing:
        report.messages.append(f"layout: missing {', '.join(report.missing)}")
        report.suggestions = suggest_roots(key, root_s)
        for s in report.suggestions:
            report.messages.append(f"did you mean {s}? It has the {key} layout.")
        return report
    report.layout_ok = True

    try:  # lenient here to count every bad file; the verdict below applies the training setting
        ds = load_dataset(key, root_s, skip_bad=True, **options)
    except DatasetError as exc:
        report.messages.append(f"cannot parse the dataset: {exc}")
        return report
    report.counts = ds.counts()
    report.n_unparsable = len(ds.skipped)
    report.unparsable = list(ds.skipped[:max_list])
    report.stats_mismatches = compare_stats(ds, info.stats)
    report.messages += _describe_protocols(ds)
    for w in ds.info.get("warnings", ()) or ():
        report.messages.append(f"warning: {w}")
    if key == "last":
        report.messages.append("LaST query/gallery sub-split of the current release is unconfirmed (docs/datasets.md §3.1)")

    usable = True
    if ds.skipped:
        n = len(ds.skipped)
        if skip_bad:
            report.messages.append(f"training with --skip-bad (data.skip_bad=true) skips and counts these {n} file(s)")
        else:
            usable = False
            report.messages.append(f"training refuses these {n} unparsable or inconsistent file(s); fix or remove them, "
                                   "or pass --skip-bad (`rlq train --skip-bad`, data.skip_bad=true) to skip and count them")
    empty = [s for s, samples in ds.splits.items() if not samples]
    if empty:
        usable = False
        report.messages.append(f"empty split(s): {empty}")
    n_ids = len({s.pid for s in ds.train})
    if ds.train and n_ids < MIN_TRAIN_IDS:  # as `rlq train` refuses it (rlq.engine.recipe)
        usable = False
        report.messages.append(
            f"split 'train' has {n_ids} identity: training needs at least {MIN_TRAIN_IDS} (one PK batch needs "
            "data.batch_size / data.num_instances identities, 8 with the defaults 32 / 4; with one identity every "
            "loss is exactly 0); add identities to the train split")

    if verify_images:
        paths = list(dict.fromkeys(s.path for samples in ds.splits.values() for s in samples))
        bad: dict[str, str] = {}
        for p in tqdm(paths, desc=f"checking {key} images", unit="img", disable=not progress):
            reason = verify_image(p, full_decode=full_decode)
            if reason is not None:
                bad[p] = reason
        report.n_bad_images = len(bad)
        report.bad_images = [f"{p}: {r}" for p, r in list(bad.items())[:max_list]]
        if bad:
            usable = False
            report.messages.append(f"{len(bad)} of {len(paths)} images are unreadable: training and evaluation stop at the "
                                   "first one they read; replace or remove them (no option skips unreadable images)")
        for split, samples in ds.splits.items():
            if samples and all(s.path in bad for s in samples):
                usable = False
                report.messages.append(f"split {split!r}: no readable image")
    report.usable = usable
    return report


def require_readable_images(ds: Dataset, *, progress: bool = False) -> int:
    """Before training: every image of every split (train, query, gallery, the val splits of the protocols) exists
    and its header (PNG: also its chunk checksums) reads, without a full decode; returns the number checked.

    Raises a one-line DatasetError naming the first bad file, its split and the fix, so that a broken query or
    gallery image stops the run before its first epoch rather than at its first evaluation. Files that
    ``skip_bad`` skipped are not in the splits; no option skips an unreadable image (as in :func:`check_data`)."""
    seen: set[str] = set()
    for split, samples in ds.splits.items():
        for s in tqdm(samples, desc=f"checking {split} images", unit="img", disable=not progress, leave=False):
            if s.path in seen:
                continue
            seen.add(s.path)
            reason = verify_image(s.path, full_decode=False)
            if reason is not None:
                raise DatasetError(f"cannot read image {s.path}: {reason} (split {split!r} of {ds.root}). Replace or "
                                   f"remove it (`rlq check-data {ds.name} {ds.root}` lists every unreadable image)")
    return len(seen)


def format_report(report: CheckReport) -> str:
    """Plain-text rendering of a CheckReport."""
    lines = [f"Dataset {report.name} at {report.root}: {'USABLE' if report.usable else 'NOT USABLE'}"]
    if not report.layout_ok:
        lines.append("Layout: missing " + ", ".join(report.missing))
        lines.append("Expected layout:")
        lines += ["  " + ln for ln in report.expected_tree.rstrip().splitlines()]
    else:
        lines.append("Layout: ok")
    if report.counts:
        lines.append("")
        w = max(len("split"), *(len(s) for s in report.counts))
        lines.append(f"  {'split':<{w}}  {'images':>9}  {'ids':>7}  {'clothes':>8}  {'cameras':>8}")
        for split, c in report.counts.items():
            lines.append(
                f"  {split:<{w}}  {c['images']:>9,}  {c['ids']:>7,}  {c['clothes']:>8,}  {c['cameras']:>8,}"
            )
    if report.layout_ok and report.counts:
        if report.stats_mismatches:
            lines.append("")
            lines.append(f"Differences from the published statistics ({len(report.stats_mismatches)}, warnings):")
            lines += [f"  {m}" for m in report.stats_mismatches]
        elif DATASET_INFO[report.name].stats:
            lines.append("Published statistics (docs/datasets.md §3.1): all match")
        else:
            lines.append("Published statistics: none for this dataset")
    for title, items, n in (
        ("Unparsable or inconsistent files", report.unparsable, report.n_unparsable),
        ("Unreadable images", report.bad_images, report.n_bad_images),
    ):
        if n:
            lines.append("")
            lines.append(f"{title}: {n}")
            lines += [f"  {x}" for x in items]
            if n > len(items):
                lines.append(f"  ... and {n - len(items)} more")
    if report.messages:
        lines.append("")
        lines += report.messages
    return "\n".join(lines) + "\n"
