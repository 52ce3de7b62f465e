"""Pure dataset records (docs/design.md boundary 2): frozen samples per split plus the evaluation protocol.

Nothing here imports torch. A parser turns a folder into a :class:`Dataset`; everything downstream
(samplers, loaders, side tables, evaluation) indexes the one sorted sample order it defines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MODES",
    "Sample",
    "EvalSpec",
    "Protocol",
    "Dataset",
    "RawSample",
    "canonical_id",
    "relabel_train",
    "relabel_test_clothes",
]

#: Evaluation rules (docs/datasets.md §2): which same-pid gallery items are good and which are junk.
MODES = ("general", "cc", "sc")


@dataclass(frozen=True, slots=True)
class Sample:
    """One image: absolute path, identity, camera, clothes id, side-table key and optional metadata.

    ``meta`` may hold ``raw_pid`` (the identity as written in the file name or folder), ``camera``
    (the real camera when ``camid`` means something else, e.g. a DeepChange tracklet), ``tracklet``,
    ``outfit`` (the outfit key), ``gender``, ``pose`` and ``parsing``. Treat it as read-only.
    """

    path: str
    pid: int
    camid: int
    clothes_id: int
    key: str
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class EvalSpec:
    """One reported evaluation: ``query`` split against ``gallery`` split under rule ``mode``.

    ``name`` is what the result is reported as: for LTCC the mode itself, for PRCC "sc" (B -> A) and
    "cc" (C -> A), both under the general rule (docs/datasets.md §3.4).
    """

    name: str
    query: str
    gallery: str
    mode: str = "general"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"EvalSpec mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True, slots=True)
class Protocol:
    """How a dataset's test (or val) splits are evaluated, and which result selects models."""

    specs: tuple[EvalSpec, ...]
    selection: str
    clothes_derived: bool = False
    notes: str = ""

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate evaluation names in protocol: {names}")
        if self.selection not in names:
            raise ValueError(f"selection {self.selection!r} is not one of the protocol's evaluations {names}")

    @property
    def split_names(self) -> tuple[str, ...]:
        """Every split the protocol reads, query splits first, in first-use order."""
        out: list[str] = []
        for s in self.specs:
            for n in (s.query, s.gallery):
                if n not in out:
                    out.append(n)
        return tuple(out)

    def spec(self, name: str) -> EvalSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True)
class Dataset:
    """A parsed dataset: samples per split, protocols, and train label bookkeeping."""

    name: str
    root: str
    splits: Mapping[str, tuple[Sample, ...]]
    protocols: Mapping[str, Protocol]
    num_train_pids: int
    num_train_clothes: int
    #: bool array (num_train_pids, num_train_clothes): pid2clothes[p, c] is True iff identity p wears outfit c.
    pid2clothes: np.ndarray
    #: raw identity string per relabelled train pid (joins gender CSVs by value).
    train_pid_names: tuple[str, ...] = ()
    #: outfit key per relabelled train clothes id.
    train_clothes_names: tuple[str, ...] = ()
    #: files skipped in lenient mode, as "path: reason" lines.
    skipped: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> tuple[Sample, ...]:
        return self.splits.get("train", ())

    def split(self, name: str) -> tuple[Sample, ...]:
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}") from None

    def counts(self) -> dict[str, dict[str, int]]:
        """Images, identities, outfits and cameras per split."""
        out = {}
        for name, samples in self.splits.items():
            out[name] = {
                "images": len(samples),
                "ids": len({s.pid for s in samples}),
                "clothes": len({s.clothes_id for s in samples}),
                "cameras": len({s.meta.get("camera", s.camid) for s in samples}),
            }
        return out


@dataclass(frozen=True, slots=True)
class RawSample:
    """A sample before relabelling: identity and outfit are still the strings from the file system."""

    path: str
    raw_pid: str
    camid: int
    outfit: str
    key: str
    meta: Mapping[str, Any] = field(default_factory=dict)


def canonical_id(raw: str) -> int | str:
    """Identity key compared by value: all-digit strings become ints ("000" == "0"), others stay text."""
    raw = raw.strip()
    return int(raw) if (raw.isascii() and raw.isdigit()) else raw


def _id_sort_key(raw: str) -> tuple[int, int | str]:
    c = canonical_id(raw)
    return (0, c) if isinstance(c, int) else (1, c)


def relabel_train(raw: Sequence[RawSample]) -> tuple[tuple[Sample, ...], int, int, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Relabel train samples (docs/datasets.md §1).

    pids -> 0..C-1 in ascending raw-id order (numeric when numeric); outfit keys -> 0..N_cl-1 in
    ascending string order. Returns (samples, C, N_cl, pid2clothes, pid names, outfit names).
    """
    pid_names = sorted({r.raw_pid for r in raw}, key=_id_sort_key)
    # Two raw spellings of one numeric id ("7" and "007") would silently merge or split identities.
    canon = [canonical_id(p) for p in pid_names]
    if len(set(canon)) != len(canon):
        raise ValueError("identity names that differ only by zero padding: " + ", ".join(pid_names))
    outfit_names = sorted({r.outfit for r in raw})
    pid_of = {p: i for i, p in enumerate(pid_names)}
    clo_of = {c: i for i, c in enumerate(outfit_names)}
    pid2clothes = np.zeros((len(pid_names), len(outfit_names)), dtype=bool)
    samples = []
    for r in raw:
        p, c = pid_of[r.raw_pid], clo_of[r.outfit]
        pid2clothes[p, c] = True
        meta = {"raw_pid": r.raw_pid, "outfit": r.outfit, **r.meta}
        samples.append(Sample(r.path, p, r.camid, c, r.key, meta))
    return tuple(samples), len(pid_names), len(outfit_names), pid2clothes, tuple(pid_names), tuple(outfit_names)


def relabel_test_clothes(
    splits: Mapping[str, Iterable[RawSample]], pid_of: Mapping[str, int] | None = None
) -> dict[str, tuple[Sample, ...]]:
    """Turn raw test splits into samples; outfit keys relabelled jointly over all given splits.

    pids stay raw (``canonical_id`` value when numeric; ``pid_of`` maps other spellings, e.g. "p0003" -> 3).
    """
    splits = {k: list(v) for k, v in splits.items()}
    outfits = sorted({r.outfit for rs in splits.values() for r in rs})
    clo_of = {c: i for i, c in enumerate(outfits)}
    out = {}
    for name, rs in splits.items():
        samples = []
        for r in rs:
            if pid_of is not None:
                pid = pid_of[r.raw_pid]
            else:
                c = canonical_id(r.raw_pid)
                if not isinstance(c, int):
                    raise ValueError(f"non-numeric test identity {r.raw_pid!r} needs a pid_of mapping")
                pid = c
            meta = {"raw_pid": r.raw_pid, "outfit": r.outfit, **r.meta}
            samples.append(Sample(r.path, pid, r.camid, clo_of[r.outfit], r.key, meta))
        out[name] = tuple(samples)
    return out
