"""Bootstrap confidence intervals for rank-1 and mAP (docs/datasets.md, "Confidence intervals").

Rank-1 and mAP are means over the valid queries of a per-query hit (0/1: the first true match is at rank 1)
and a per-query AP. Their interval is the **percentile bootstrap** over queries: the valid queries are
resampled with replacement ``num_resamples`` times (default 1000, seed 0), each resample's mean is
computed, and the interval is the (1 - level)/2 and (1 + level)/2 quantiles of those means (numpy's
default linear interpolation). The gallery is fixed; only the query set is treated as a sample.

The draws are defined so that a plain loop reproduces them: resample r takes the r-th block of n
uniforms u of ``numpy.random.default_rng(seed).random`` and picks query ``floor(u * n)``. Blocks are
drawn in chunks of resamples sized to ``memory_budget_mb``, which does not change the draws.

A comparison of two runs uses the **paired** bootstrap: the same resampled query indices for both
runs, so the interval is that of the mean per-query difference. Pairing needs the query keys
(:class:`PerQuery`): two runs are paired only on the same query set with the same valid queries.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlq.errors import CheckpointError, RlqError
from rlq.io import atomic_open

__all__ = [
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "DEFAULT_LEVEL",
    "CI_METHOD",
    "PerQuery",
    "bootstrap_indices",
    "bootstrap_means",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "compare_runs",
    "add_intervals",
    "with_intervals",
    "ci_info",
    "save_per_query",
    "load_per_query",
]

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
CI_METHOD = "percentile bootstrap over queries"
_DEFAULT_BUDGET_MB = 64.0
PER_QUERY_FORMAT = "rlq-per-query"
PER_QUERY_VERSION = 1


def _check(num_resamples: int, level: float) -> None:
    if int(num_resamples) < 1:
        raise RlqError(f"num_resamples must be >= 1, got {num_resamples} (the reported intervals use 1000 or more)")
    if not 0.0 < float(level) < 1.0:
        raise RlqError(f"level must be in (0, 1), got {level} (0.95 for a 95 % interval)")


def bootstrap_indices(n: int, num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, *,
                      block: int | None = None) -> Iterator[np.ndarray]:
    """Resampled query indices as int64 blocks of shape (b, n), ``num_resamples`` rows in all.

    Row r is ``floor(u * n)`` for the r-th block of n uniforms of ``default_rng(seed).random``; ``block``
    (rows per chunk, default all) only changes the memory used, never the indices.
    """
    rng = np.random.default_rng(seed)
    b = max(1, int(block or num_resamples))
    for a in range(0, int(num_resamples), b):
        rows = min(b, int(num_resamples) - a)
        u = rng.random((rows, n))
        u *= n
        idx = u.astype(np.int64)
        np.minimum(idx, n - 1, out=idx)  # u * n rounds up to n only for n beyond 2**52
        yield idx


def bootstrap_means(values: Any, num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, *,
                    memory_budget_mb: float = _DEFAULT_BUDGET_MB) -> np.ndarray:
    """Means of each row of ``values`` (k x n, or n) over each resample of the n columns: (num_resamples, k)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise RlqError(f"values must be 1-D or 2-D (metrics x queries), got shape {v.shape}")
    k, n = v.shape
    if n == 0:
        return np.full((int(num_resamples), k), math.nan)
    # per resample row: n uniforms + n indices + k * n gathered values, 8 bytes each
    block = max(1, int(memory_budget_mb * 2**20) // (8 * n * (k + 2)))
    out = np.empty((int(num_resamples), k))
    r = 0
    for idx in bootstrap_indices(n, num_resamples, seed, block=block):
        out[r : r + idx.shape[0]] = v[:, idx].mean(axis=2).T
        r += idx.shape[0]
    return out


def _interval(stats: np.ndarray, level: float) -> np.ndarray:
    """(2, k): percentile interval of each column."""
    if stats.size == 0 or np.isnan(stats).all():
        return np.full((2, stats.shape[1]), math.nan)
    a = (1.0 - level) / 2.0
    return np.quantile(stats, [a, 1.0 - a], axis=0)


def _per_query(ap: Any, hit: Any) -> tuple[np.ndarray, np.ndarray]:
    ap_a, hit_a = np.asarray(ap, dtype=np.float64).reshape(-1), np.asarray(hit, dtype=np.float64).reshape(-1)
    if ap_a.shape != hit_a.shape:
        raise RlqError(f"per-query AP ({ap_a.size}) and hits ({hit_a.size}) must have one entry per valid query each")
    if not (np.isfinite(ap_a).all() and np.isfinite(hit_a).all()):
        raise RlqError("per-query AP and hits must be finite: pass the valid queries only (result['valid'])")
    return ap_a, hit_a


def bootstrap_ci(ap: Any, hit: Any, *, num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                 level: float = DEFAULT_LEVEL, memory_budget_mb: float = _DEFAULT_BUDGET_MB) -> dict[str, Any]:
    """Percentile bootstrap intervals of rank-1 and mAP from the valid queries' AP and rank-1 hit (0/1).

    Returns fractions: ``rank1``, ``mAP`` (the point estimates), ``rank1_ci`` and ``mAP_ci`` as
    ``[low, high]`` (NaN with no query), and ``num_queries``.
    """
    _check(num_resamples, level)
    ap_a, hit_a = _per_query(ap, hit)
    n = ap_a.size
    stats = bootstrap_means(np.stack([hit_a, ap_a]), num_resamples, seed, memory_budget_mb=memory_budget_mb)
    iv = _interval(stats, level)
    mean = (float(hit_a.mean()), float(ap_a.mean())) if n else (math.nan, math.nan)
    return {"rank1": mean[0], "mAP": mean[1], "rank1_ci": [float(iv[0, 0]), float(iv[1, 0])],
            "mAP_ci": [float(iv[0, 1]), float(iv[1, 1])], "num_queries": int(n)}


@dataclass(frozen=True)
class PerQuery:
    """Per-query results of one evaluation: every query's key, AP (NaN if invalid), rank-1 hit and validity."""

    keys: np.ndarray  # str, one per query (the query split's order)
    ap: np.ndarray  # float64
    hit: np.ndarray  # bool (False where invalid)
    valid: np.ndarray  # bool

    @classmethod
    def from_result(cls, result: Mapping[str, Any], keys: Any = None) -> PerQuery:
        """From an :func:`~rlq.evaluation.ranking.evaluate` result (``keys``: default ``result['query_keys']``)."""
        if keys is None:
            keys = result.get("query_keys")
        if keys is None:
            raise RlqError("per-query results need the query keys: pass keys= or evaluate through evaluate_protocol")
        k = np.asarray(keys).astype(np.str_)
        valid = np.asarray(result["valid"], dtype=bool)
        if k.shape != valid.shape:
            raise RlqError(f"{k.size} query keys for {valid.size} evaluated queries")
        first = np.asarray(result["first_rank"])
        return cls(keys=k, ap=np.asarray(result["ap"], dtype=np.float64), hit=valid & (first == 1), valid=valid)

    def subset(self, mask: Any) -> PerQuery:
        """The queries selected by ``mask`` (a boolean mask, indices or a slice)."""
        m = mask if isinstance(mask, slice) else np.asarray(mask)
        return PerQuery(self.keys[m], self.ap[m], self.hit[m], self.valid[m])

    def ci(self, **kw: Any) -> dict[str, Any]:
        """:func:`bootstrap_ci` over the valid queries."""
        return bootstrap_ci(self.ap[self.valid], self.hit[self.valid], **kw)


def _align(a: PerQuery, b: PerQuery, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Valid-query positions of a and b in a common key order; refuse different query sets."""
    if len(set(a.keys.tolist())) != a.keys.size or len(set(b.keys.tolist())) != b.keys.size:
        raise RlqError(f"{what}: query keys are not unique, so queries cannot be paired")
    ka, kb = set(a.keys.tolist()), set(b.keys.tolist())
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        raise RlqError(
            f"{what}: the two runs were evaluated on different query sets ({a.keys.size} vs {b.keys.size} queries; "
            f"{len(only_a)} only in the first, e.g. {only_a[:3]}, {len(only_b)} only in the second, e.g. {only_b[:3]}); "
            "a paired comparison needs the same dataset and protocol for both"
        )
    pos_b = {k: i for i, k in enumerate(b.keys.tolist())}
    ib = np.array([pos_b[k] for k in a.keys.tolist()], dtype=np.int64)
    if not np.array_equal(a.valid, b.valid[ib]):
        bad = a.keys[a.valid != b.valid[ib]]
        raise RlqError(
            f"{what}: the runs disagree on which queries have a true match (e.g. {bad[:3].tolist()}); they were "
            "evaluated against different galleries or labels and cannot be paired"
        )
    ia = np.flatnonzero(a.valid)
    return ia, ib[ia]


def paired_bootstrap_ci(a: PerQuery, b: PerQuery, *, num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                        level: float = DEFAULT_LEVEL, memory_budget_mb: float = _DEFAULT_BUDGET_MB,
                        what: str = "paired bootstrap") -> dict[str, Any]:
    """Interval of ``a - b`` for rank-1 and mAP, resampling the same queries for both runs (matched by key).

    Returns fractions ``rank1_diff``, ``mAP_diff``, ``rank1_diff_ci``, ``mAP_diff_ci`` and ``num_queries``.
    Raises when the query sets (or their valid queries) differ.
    """
    _check(num_resamples, level)
    ia, ib = _align(a, b, what)
    d_hit = a.hit[ia].astype(np.float64) - b.hit[ib].astype(np.float64)
    d_ap = a.ap[ia] - b.ap[ib]
    stats = bootstrap_means(np.stack([d_hit, d_ap]), num_resamples, seed, memory_budget_mb=memory_budget_mb)
    iv = _interval(stats, level)
    n = ia.size
    return {"rank1_diff": float(d_hit.mean()) if n else math.nan, "mAP_diff": float(d_ap.mean()) if n else math.nan,
            "rank1_diff_ci": [float(iv[0, 0]), float(iv[1, 0])], "mAP_diff_ci": [float(iv[0, 1]), float(iv[1, 1])],
            "num_queries": int(n)}


def compare_runs(per_query: Mapping[str, Mapping[str, PerQuery]], pairs: Any, names: Any = None,
                 **boot: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Paired differences ``{"a-b": {evaluation: paired_bootstrap_ci(a, b)}}`` for each ``(a, b)`` in ``pairs``.

    ``per_query`` maps a run name to its {evaluation name: PerQuery}; ``names`` picks the evaluations (default:
    those both runs have). ``boot`` goes to :func:`paired_bootstrap_ci` (num_resamples, seed, level).
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a, b in pairs:
        for run in (a, b):
            if run not in per_query:
                raise RlqError(f"no per-query results for run {run!r}; have {sorted(per_query)}")
        pa, pb = per_query[a], per_query[b]
        evs = [n for n in pa if n in pb] if names is None else list(names)
        for n in evs:
            if n not in pa or n not in pb:
                raise RlqError(f"evaluation {n!r} is missing from run {a if n not in pa else b!r}")
            out.setdefault(f"{a}-{b}", {})[n] = paired_bootstrap_ci(pa[n], pb[n], what=f"{a} vs {b} ({n})", **boot)
    return out


def ci_info(num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """How the ``*_ci`` fields were computed (written once next to them)."""
    return {"method": CI_METHOD, "interval": "percentile", "level": float(level), "resamples": int(num_resamples),
            "seed": int(seed), "unit": "fraction (x100 for percent)"}


def add_intervals(results: Mapping[str, Mapping[str, Any]], *, num_resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL) -> dict[str, dict[str, Any]]:
    """Copies of evaluation results (with per-query ``ap``/``first_rank``/``valid``) plus ``rank1_ci`` and ``mAP_ci``."""
    out: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        valid = np.asarray(r["valid"], dtype=bool)
        hit = valid & (np.asarray(r["first_rank"]) == 1)
        c = bootstrap_ci(np.asarray(r["ap"])[valid], hit[valid], num_resamples=num_resamples, seed=seed, level=level)
        out[name] = {**r, "rank1_ci": c["rank1_ci"], "mAP_ci": c["mAP_ci"]}
    return out


def with_intervals(results: Mapping[str, Mapping[str, Any]], *, groups: Mapping[str, str] | None = None,
                   source: str = "the quality table", num_resamples: int | None = DEFAULT_RESAMPLES,
                   seed: int = DEFAULT_SEED) -> dict[str, dict[str, Any]]:
    """Results plus, with ``groups`` ({query key: group}, e.g. clean / LQ), a ``<name>/<group>`` row per evaluation
    and group (:func:`rlq.evaluation.protocols.query_group_results`; ``source`` names the table in its errors), then
    :func:`add_intervals` on every row (``num_resamples`` None: no intervals)."""
    out = dict(results)
    if groups is not None:
        from .protocols import query_group_results

        out.update(query_group_results(results, groups, source=source))
    return out if num_resamples is None else add_intervals(out, num_resamples=num_resamples, seed=seed)


# ---------------------------------------------------------------------------------------------------
# per-query file: lets two runs be compared (paired) after the fact


def save_per_query(path: str | os.PathLike, per_query: Mapping[str, PerQuery], extra: Mapping[str, Any] | None = None) -> None:
    """Write {evaluation name: PerQuery} to an ``.npz`` (atomically; entries ``e<i>/keys|ap|hit|valid`` + JSON ``meta``)."""
    arrays: dict[str, np.ndarray] = {}
    names = list(per_query)
    for i, name in enumerate(names):
        pq = per_query[name]
        arrays.update({f"e{i}/keys": pq.keys.astype(np.str_), f"e{i}/ap": pq.ap, f"e{i}/hit": pq.hit, f"e{i}/valid": pq.valid})
    meta = {"format": PER_QUERY_FORMAT, "version": PER_QUERY_VERSION, "evaluations": names, "extra": dict(extra or {})}
    arrays["meta"] = np.array(json.dumps(meta), dtype=np.str_)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_per_query(path: str | os.PathLike) -> dict[str, PerQuery]:
    """Read a file written by :func:`save_per_query`."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CheckpointError(f"per-query file {p!r} does not exist; it is written with each evaluation (per_query/)")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if meta.get("format") != PER_QUERY_FORMAT or meta.get("version") != PER_QUERY_VERSION:
                raise CheckpointError(f"per-query file {p!r} is not an {PER_QUERY_FORMAT} v{PER_QUERY_VERSION} file")
            return {name: PerQuery(z[f"e{i}/keys"], z[f"e{i}/ap"].astype(np.float64), z[f"e{i}/hit"].astype(bool),
                                   z[f"e{i}/valid"].astype(bool)) for i, name in enumerate(meta["evaluations"])}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"per-query file {p!r} is unreadable or torn ({type(e).__name__}: {e}); re-run the evaluation") from None
