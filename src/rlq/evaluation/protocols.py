"""Evaluate a dataset :class:`~rlq.data.records.Protocol` from features, and the features file format.

Features file (``.npz``, written atomically, loaded with ``allow_pickle=False``): per split
``<split>/feats`` (N x d float), and when labels are saved ``<split>/pids``, ``<split>/camids``,
``<split>/clothes_ids`` (int64), ``<split>/keys``, ``<split>/paths`` (fixed-width unicode); plus ``meta``,
a JSON string ``{"format": "rlq-features", "version": 1, "splits": {name: {"num", "dim", "labels"}},
"extra": {...}}``. Metrics in results and summaries are fractions in [0, 1]; the CLI formats percent.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlq.data.records import EvalSpec, Protocol, Sample
from rlq.errors import CheckpointError, RlqError
from rlq.evaluation.ranking import DEFAULT_MEMORY_BUDGET_MB, evaluate_features, no_match_note
from rlq.io import atomic_open
from rlq.report_format import fixed, pct

__all__ = [
    "SplitLabels",
    "evaluate_protocol",
    "evaluate_features_file",
    "summarize",
    "query_group_results",
    "format_table",
    "save_features",
    "load_features",
    "features_meta",
    "FEATURES_FORMAT",
    "FEATURES_VERSION",
]

FEATURES_FORMAT = "rlq-features"
FEATURES_VERSION = 1
_LABEL_FIELDS = ("pids", "camids", "clothes_ids", "keys", "paths")


@dataclass(frozen=True)
class SplitLabels:
    """Evaluation labels of one split, in feature-row order."""

    pids: np.ndarray
    camids: np.ndarray
    clothes_ids: np.ndarray
    keys: np.ndarray
    paths: np.ndarray

    @classmethod
    def from_samples(cls, samples: Sequence[Sample]) -> SplitLabels:
        """Labels of a split's samples (the dataset's single sample order)."""
        return cls(
            pids=np.array([s.pid for s in samples], dtype=np.int64),
            camids=np.array([s.camid for s in samples], dtype=np.int64),
            clothes_ids=np.array([s.clothes_id for s in samples], dtype=np.int64),
            keys=np.array([s.key for s in samples], dtype=np.str_),
            paths=np.array([s.path for s in samples], dtype=np.str_),
        )

    def __len__(self) -> int:
        return int(self.pids.shape[0])


def _labels_of(x: Sequence[Sample] | SplitLabels) -> SplitLabels:
    return x if isinstance(x, SplitLabels) else SplitLabels.from_samples(x)


def _num_rows(feats: Any) -> int:
    shape = getattr(feats, "shape", None)
    if shape is None or len(shape) != 2:
        raise RlqError(f"features must be a 2-D array (images x dims), got shape {shape}")
    return int(shape[0])


def evaluate_protocol(
    features: Mapping[str, tuple[Any, Sequence[Sample] | SplitLabels]],
    protocol: Protocol,
    *,
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: Any = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    progress: bool = False,
    rerank: Any = None,
) -> dict[str, dict[str, Any]]:
    """One :func:`~rlq.evaluation.ranking.evaluate_features` result per ``EvalSpec`` name.

    ``rerank``: a :class:`~rlq.evaluation.rerank.RerankSettings` ranks by k-reciprocal re-ranked distances
    (each result then carries ``rerank``); None (default, and the paper's protocol) ranks by cosine.

    ``features`` maps each split the protocol reads to ``(feats, samples)`` (``feats``: numpy or torch,
    one row per sample in the split's order) or ``(feats, SplitLabels)``. Specs that share a query and
    gallery split are computed in one pass over the distances. Each result also carries ``name``,
    ``query``, ``gallery`` and ``query_keys`` (the query split's keys, for per-query pairing).
    """
    missing = [s for s in protocol.split_names if s not in features]
    if missing:
        raise RlqError(f"features are missing split(s) {missing} needed by the protocol; given {sorted(features)}")
    labels: dict[str, SplitLabels] = {}
    for split in protocol.split_names:
        feats, lab = features[split]
        labels[split] = _labels_of(lab)
        if _num_rows(feats) != len(labels[split]):
            raise RlqError(
                f"split {split!r}: {_num_rows(feats)} feature rows but {len(labels[split])} samples; "
                "features must follow the dataset's sample order"
            )
    groups: dict[tuple[str, str], list[EvalSpec]] = {}
    for spec in protocol.specs:
        groups.setdefault((spec.query, spec.gallery), []).append(spec)
    results: dict[str, dict[str, Any]] = {}
    for (qs, gs), specs in groups.items():
        ql, gl = labels[qs], labels[gs]
        modes = tuple(dict.fromkeys(s.mode for s in specs))
        per_mode = evaluate_features(
            features[qs][0], features[gs][0], ql.pids, gl.pids, ql.camids, gl.camids,
            ql.clothes_ids, gl.clothes_ids, max_rank=max_rank, chunk_size=chunk_size, device=device,
            memory_budget_mb=memory_budget_mb, modes=modes, progress=progress, rerank=rerank,
        )
        for spec in specs:
            results[spec.name] = {**per_mode[spec.mode], "name": spec.name, "query": qs, "gallery": gs,
                                  "query_keys": ql.keys}
    return {s.name: results[s.name] for s in protocol.specs}


_SUMMARY_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_valid_queries", "num_queries")
_CI_KEYS = ("rank1_ci", "mAP_ci")


def summarize(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per evaluation name: rank1/5/10/20, mAP, mINP as fractions, valid and total query counts, and
    ``rank1_ci`` / ``mAP_ci`` ([low, high] fractions) when the results carry them (:func:`add_intervals`).
    When no query has a true match the rates are NaN (``null`` in JSON) and ``note`` says why."""
    out: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        out[name] = {k: (int(r[k]) if k.startswith("num_") else float(r[k])) for k in _SUMMARY_KEYS}
        out[name].update({k: [float(x) for x in r[k]] for k in _CI_KEYS if k in r})
        if not out[name]["num_valid_queries"]:  # the metrics are NaN (null in JSON): say why
            out[name]["note"] = r.get("note") or no_match_note(str(r.get("mode", name)), out[name]["num_queries"])
        if r.get("rerank"):
            out[name]["rerank"] = dict(r["rerank"])
    return out


def query_group_results(
    results: Mapping[str, Mapping[str, Any]],
    groups: Mapping[str, str],
    *,
    order: Sequence[str] = ("clean", "LQ"),
    source: str = "the quality table",
) -> dict[str, dict[str, Any]]:
    """Each evaluation restricted to the queries of each group (gallery unchanged): ``{"<name>/<group>": result}``.

    ``groups`` maps query keys to a group label (e.g. ``clean`` / ``LQ`` from SynthCC's quality.csv); results need
    ``query_keys`` (from :func:`evaluate_protocol`). Queries are independent, so a restricted result equals
    evaluating the query subset on its own. Every query must have a group.
    """
    from rlq.evaluation.ranking import _summarise

    out: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        if "query_keys" not in r:
            raise RlqError(f"evaluation {name!r} has no query_keys; evaluate it with evaluate_protocol")
        keys = np.asarray(r["query_keys"])
        lab = np.array([groups.get(str(k), "") for k in keys.tolist()], dtype=object)
        missing = keys[lab == ""]
        if missing.size:
            raise RlqError(f"{source} has no entry for {missing.size} of {keys.size} queries of {name!r}, e.g. "
                           f"{missing[:3].tolist()}; it must describe every query image of this dataset")
        for g in order:
            m = lab == g
            sub = _summarise(r["mode"], np.asarray(r["ap"])[m], np.asarray(r["inp"])[m], np.asarray(r["first_rank"])[m],
                             np.asarray(r["num_matches"])[m], int(r["max_rank"]), int(r["num_gallery"]))
            out[f"{name}/{g}"] = {**sub, "name": f"{name}/{g}", "query": r.get("query"), "gallery": r.get("gallery"),
                                  "query_keys": keys[m], "query_group": g}
    return out


def _cell(v: float, ci: Sequence[float] | None, percent: bool) -> str:
    def f(x: float) -> str:
        if x != x:  # NaN
            return "nan"
        return pct(x) if percent else fixed(x, 4)

    return f(v) if ci is None else f"{f(v)} [{f(ci[0])}, {f(ci[1])}]"


#: What the ``*`` after an evaluation name means in :func:`format_table` (docs/datasets.md, "Protocols and metrics").
SELECTION_NOTE = ("the protocol's selection: the evaluation that picks the best checkpoint (checkpoints/best) and "
                  "gives the headline number")


def format_table(results: Mapping[str, Mapping[str, Any]], *, percent: bool = True, selection: str | None = None) -> str:
    """A markdown table of :func:`summarize` (percent with one decimal by default); ``*`` marks ``selection``.

    A line under the table says what the star means. With ``rank1_ci`` / ``mAP_ci`` in the results, the R1 and mAP cells read ``41.2 [38.1, 44.0]`` (95 % bootstrap).
    """
    head = ["eval", "mode", "R1", "R5", "R10", "R20", "mAP", "mINP", "valid/queries"]
    rows = [head, ["---"] * len(head)]
    for name, r in results.items():
        s = summarize({name: r})[name]
        label = f"{name}*" if name == selection else name
        cells = [_cell(s[k], s.get(f"{k}_ci") if k in ("rank1", "mAP") else None, percent) for k in _SUMMARY_KEYS[:6]]
        rows.append([label, str(r.get("mode", "")), *cells, f"{s['num_valid_queries']}/{s['num_queries']}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    if selection is not None and selection in results:  # say what the star means under every table that shows it
        lines.append(f"({selection}*: {SELECTION_NOTE})")
    rr = next((r["rerank"] for r in results.values() if r.get("rerank")), None)
    if rr:  # the paper's numbers use no re-ranking: say so next to every re-ranked table
        lines.append(f"(re-ranked: k-reciprocal, k1={rr['k1']}, k2={rr['k2']}, lambda={rr['lambda']}; "
                     "not comparable with the paper's numbers, which use none)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# features file


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def save_features(
    path: str | os.PathLike,
    split_feats: Mapping[str, Any],
    split_samples: Mapping[str, Sequence[Sample] | SplitLabels] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write features (and labels, when samples are given) per split to an ``.npz`` file, atomically."""
    arrays: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, Any]] = {}
    for split, f in split_feats.items():
        if not split or not isinstance(split, str):
            raise RlqError(f"split names must be non-empty strings, got {split!r}")
        a = _to_numpy(f)
        if a.ndim != 2 or a.dtype.kind != "f":
            raise RlqError(f"features of split {split!r} must be a 2-D float array, got {a.dtype} {a.shape}")
        arrays[f"{split}/feats"] = a
        has = split_samples is not None and split in split_samples
        if has:
            lab = _labels_of(split_samples[split])  # type: ignore[index] - `has` checked it is not None
            if len(lab) != a.shape[0]:
                raise RlqError(f"split {split!r}: {a.shape[0]} feature rows but {len(lab)} samples")
            for k in _LABEL_FIELDS:
                arrays[f"{split}/{k}"] = getattr(lab, k)
        info[split] = {"num": int(a.shape[0]), "dim": int(a.shape[1]), "labels": has}
    if split_samples is not None:
        unknown = sorted(set(split_samples) - set(split_feats))
        if unknown:
            raise RlqError(f"samples given for split(s) {unknown} without features")
    meta = {"format": FEATURES_FORMAT, "version": FEATURES_VERSION, "splits": info, "extra": dict(extra or {})}
    try:
        meta_text = json.dumps(meta, allow_nan=True)
    except TypeError as e:
        raise RlqError(f"features file 'extra' must be JSON-serialisable: {e}") from None
    arrays["meta"] = np.array(meta_text, dtype=np.str_)
    # Streamed into the temporary file (no in-memory copy of several GB), then renamed.
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _open_npz(path: str | os.PathLike) -> Any:
    if not os.path.isfile(path):
        raise CheckpointError(f"features file {os.fspath(path)!r} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"features file {os.fspath(path)!r} is not a readable .npz archive ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CheckpointError(f"features file {os.fspath(path)!r} is a single .npy array, not an rlq .npz archive")
    return z


def _read(z: Any, path: str | os.PathLike, key: str) -> np.ndarray:
    if key not in z.files:
        raise CheckpointError(f"features file {os.fspath(path)!r} has no entry {key!r}; it is torn or not written by rlq")
    try:
        return z[key]
    except ValueError as e:  # object arrays need pickle, which we never allow
        raise CheckpointError(f"features file {os.fspath(path)!r}: entry {key!r} cannot be loaded safely ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"features file {os.fspath(path)!r}: entry {key!r} is corrupt ({e})") from None


def _meta(z: Any, path: str | os.PathLike) -> dict[str, Any]:
    raw = _read(z, path, "meta")
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, TypeError, IndexError) as e:
        raise CheckpointError(f"features file {os.fspath(path)!r}: 'meta' is not a JSON string ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FEATURES_FORMAT or not isinstance(meta.get("splits"), dict):
        raise CheckpointError(f"features file {os.fspath(path)!r}: 'meta' does not describe an {FEATURES_FORMAT} file")
    if meta.get("version") != FEATURES_VERSION:
        raise CheckpointError(
            f"features file {os.fspath(path)!r} has format version {meta.get('version')}, this rlq reads {FEATURES_VERSION}"
        )
    return meta


def features_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` record of a features file (format, version, splits, extra)."""
    with _open_npz(path) as z:
        return _meta(z, path)


def load_features(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, SplitLabels]]:
    """Features per split and labels per split (only splits saved with labels) from a features file."""
    p = os.fspath(path)
    feats: dict[str, np.ndarray] = {}
    labels: dict[str, SplitLabels] = {}
    with _open_npz(path) as z:
        meta = _meta(z, path)
        for split, info in meta["splits"].items():
            f = _read(z, path, f"{split}/feats")
            if f.ndim != 2 or f.dtype.kind != "f":
                raise CheckpointError(f"features file {p!r}: '{split}/feats' must be a 2-D float array, got {f.dtype} {f.shape}")
            if isinstance(info, dict) and "num" in info and info["num"] != f.shape[0]:
                raise CheckpointError(f"features file {p!r}: '{split}/feats' has {f.shape[0]} rows, meta says {info['num']}")
            feats[split] = f
            if not (isinstance(info, dict) and info.get("labels")):
                continue
            vals = {}
            for k in _LABEL_FIELDS:
                a = _read(z, path, f"{split}/{k}")
                want = "U" if k in ("keys", "paths") else "iu"
                if a.ndim != 1 or a.shape[0] != f.shape[0] or a.dtype.kind not in want:
                    raise CheckpointError(
                        f"features file {p!r}: '{split}/{k}' must be a 1-D {'string' if want == 'U' else 'integer'} "
                        f"array of length {f.shape[0]}, got {a.dtype} {a.shape}"
                    )
                vals[k] = a.astype(np.int64) if want == "iu" else a
            labels[split] = SplitLabels(**vals)
    return feats, labels


def evaluate_features_file(
    path: str | os.PathLike,
    protocol: Protocol,
    *,
    samples: Mapping[str, Sequence[Sample]] | None = None,
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: Any = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    progress: bool = False,
    rerank: Any = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate a saved features file against ``protocol`` (splits matched by name).

    Labels come from ``samples`` (the dataset's splits) when given, otherwise from the file. When both
    exist, the file's keys must equal the samples' keys in order (else the features belong to another
    sample order or dataset version).
    """
    p = os.fspath(path)
    feats, labels = load_features(path)
    inputs: dict[str, tuple[Any, SplitLabels]] = {}
    for split in protocol.split_names:
        if split not in feats:
            raise CheckpointError(f"features file {p!r} has no split {split!r} (it has {sorted(feats)}); re-extract features")
        if samples is not None and split in samples:
            lab = SplitLabels.from_samples(samples[split])
            if len(lab) != feats[split].shape[0]:
                raise CheckpointError(
                    f"features file {p!r}: split {split!r} has {feats[split].shape[0]} rows but the dataset has {len(lab)} samples"
                )
            if split in labels and not np.array_equal(labels[split].keys, lab.keys):
                bad = int(np.flatnonzero(labels[split].keys != lab.keys)[0])
                raise CheckpointError(
                    f"features file {p!r}: split {split!r} row {bad} is {str(labels[split].keys[bad])!r} but the dataset "
                    f"has {str(lab.keys[bad])!r}; the features were extracted from another sample order"
                )
        elif split in labels:
            lab = labels[split]
        else:
            raise CheckpointError(
                f"features file {p!r} has no labels for split {split!r}; pass the dataset's samples (samples=...)"
            )
        inputs[split] = (feats[split], lab)
    return evaluate_protocol(
        inputs, protocol, max_rank=max_rank, chunk_size=chunk_size, device=device,
        memory_budget_mb=memory_budget_mb, progress=progress, rerank=rerank,
    )
