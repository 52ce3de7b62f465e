"""Open-set identification: thresholds at a target false-accept rate, DIR@FAR, with bootstrap intervals.

Definitions (docs/open-set.md; the open-set identification measures of the face recognition literature: Phillips
et al., FRVT 2002 "open-set identification" / watch list; Grother & Ngan, FRVT Part 2 "DIR" and "FPIR"). Each query
has a **rank-1 distance** ``d`` (the smallest distance to the gallery after the protocol's junk items of that query
are removed, docs/datasets.md §2) and a rank-1 gallery item. A threshold ``t`` **accepts** a query when ``d < t``
(strictly). Queries are **known** (their identity has a good gallery item in the mode) or **unknown** (no gallery
image of their identity).

* FAR (= FPIR, false positive identification rate) at ``t``: the fraction of unknown queries accepted.
* DIR (detection and identification rate) at ``t``: the fraction of known queries whose rank-1 item is a true
  match AND whose rank-1 distance is below ``t``.
* The threshold at a target FAR ``f`` (:func:`threshold_at_far`) is the **largest** ``t`` with FAR(t) <= f on the
  given unknown queries: with the unknowns' distances sorted ``u_1 <= ... <= u_N`` and ``m`` the largest integer
  with ``m / N <= f``, it is ``u_{m+1}`` (+inf when ``m = N``). Then FAR(t) <= f exactly, and no larger threshold
  keeps that.

Everything here is a pure function of arrays (docs/design.md: evaluation is a pure function).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlq.errors import RlqError

__all__ = [
    "threshold_at_far",
    "open_set_rates",
    "rank1_outcomes",
    "open_set_split",
    "dir_at_far",
    "parse_fars",
    "CURVE_FARS",
    "evaluate_open_set",
]

#: FAR targets of the open-set curve (DIR at each, with intervals).
CURVE_FARS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def parse_fars(text: str | Sequence[float], where: str = "--far") -> list[float]:
    """``"0.01,0.001"`` -> [0.01, 0.001]; every value in [0, 1]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[float] = []
    for it in items:
        try:
            v = float(it)
        except (TypeError, ValueError):
            raise RlqError(f"{where}: {it!r} is not a number; give false-accept rates in [0, 1], e.g. 0.01,0.001") from None
        if not 0.0 <= v <= 1.0 or v != v:
            raise RlqError(f"{where}: {v} is not in [0, 1]; give false-accept rates as fractions, e.g. 0.01")
        out.append(v)
    if not out:
        raise RlqError(f"{where}: no false-accept rate given; e.g. 0.01,0.001")
    return out


def threshold_at_far(unknown_distances: Any, far: float) -> float:
    """The largest threshold ``t`` with (#unknown ``d < t``) / N <= ``far`` (see the module doc); +inf when every
    unknown may be accepted, NaN with no unknown query."""
    u = np.sort(np.asarray(unknown_distances, dtype=np.float64).reshape(-1))
    n = u.size
    if n == 0:
        return math.nan
    if not 0.0 <= far <= 1.0:
        raise RlqError(f"target FAR must be in [0, 1], got {far}")
    m = min(n, int(math.floor(far * n)))
    while m + 1 <= n and (m + 1) / n <= far:  # float rounding of far * n, both ways
        m += 1
    while m > 0 and m / n > far:
        m -= 1
    return math.inf if m >= n else float(u[m])


def open_set_rates(rank1_distance: Any, rank1_correct: Any, known: Any, threshold: float) -> tuple[float, float]:
    """(DIR, FAR) at ``threshold``: DIR over the known queries (``known`` True), FAR over the others. NaN for an
    empty group."""
    d = np.asarray(rank1_distance, dtype=np.float64).reshape(-1)
    ok = np.asarray(rank1_correct, dtype=bool).reshape(-1)
    kn = np.asarray(known, dtype=bool).reshape(-1)
    acc = d < threshold
    dir_ = float((acc & ok)[kn].mean()) if kn.any() else math.nan
    far = float(acc[~kn].mean()) if (~kn).any() else math.nan
    return dir_, far


@torch.no_grad()
def rank1_outcomes(q_feats: Any, g_feats: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                   q_clothes: Any = None, g_clothes: Any = None, *, mode: str = "general", rerank: Any = None,
                   chunk_size: int = 1024) -> dict[str, np.ndarray]:
    """Per query: ``distance`` (rank-1 distance: 1 - cosine of L2-normalised features, or the k-reciprocal
    re-ranked distance with ``rerank``), ``index`` (rank-1 gallery item; equal distances: the lower index),
    ``correct`` (that item is a good match), ``known`` (the query has a good gallery item in ``mode``) and
    ``unknown`` (no gallery item of the query's identity). Junk items of each query (same identity, same camera;
    in ``cc`` also same clothes) are left out before taking the rank-1, as in the closed-set protocol. Queries
    neither known nor unknown (their identity has only junk in the gallery) are in neither mask."""
    from rlq.evaluation.rerank import rerank_chunks

    q = torch.as_tensor(np.asarray(q_feats, dtype=np.float32))
    g = torch.as_tensor(np.asarray(g_feats, dtype=np.float32))
    qp, gp = np.asarray(q_pids).reshape(-1), np.asarray(g_pids).reshape(-1)
    qc, gc = np.asarray(q_camids).reshape(-1), np.asarray(g_camids).reshape(-1)
    if mode not in ("general", "cc"):
        raise RlqError(f"open-set mode must be general or cc, got {mode!r}")
    if mode == "cc" and (q_clothes is None or g_clothes is None):
        raise RlqError("mode 'cc' needs clothes ids of the queries and the gallery")
    qo = None if q_clothes is None else np.asarray(q_clothes).reshape(-1)
    go = None if g_clothes is None else np.asarray(g_clothes).reshape(-1)
    nq = q.shape[0]
    out = {"distance": np.full(nq, math.inf), "index": np.full(nq, -1, np.int64), "correct": np.zeros(nq, bool),
           "known": np.zeros(nq, bool), "unknown": np.zeros(nq, bool)}
    if rerank is not None:
        chunks = ((a, b, D.double().cpu()) for a, b, D in rerank_chunks(q, g, rerank, chunk_size=chunk_size))
    else:
        chunks = ((a, min(a + chunk_size, nq), (1.0 - q[a:a + chunk_size] @ g.T).double())
                  for a in range(0, nq, chunk_size))
    for a, b, D in chunks:
        same = torch.as_tensor(qp[a:b, None] == gp[None, :])
        junk = same & torch.as_tensor(qc[a:b, None] == gc[None, :])
        if mode == "cc":
            junk |= same & torch.as_tensor(qo[a:b, None] == go[None, :])
        good = same & ~junk
        Dm = D.masked_fill(junk, math.inf)
        if Dm.shape[1]:
            dmin, imin = Dm.min(1)  # ties: torch.min returns the first (lowest) index
            imin = torch.where(torch.isfinite(dmin), imin, torch.full_like(imin, -1))
            out["distance"][a:b] = dmin.numpy()
            out["index"][a:b] = imin.numpy()
            out["correct"][a:b] = (good.gather(1, imin.clamp_min(0)[:, None])[:, 0] & (imin >= 0)).numpy()
        out["known"][a:b] = good.any(1).numpy()
        out["unknown"][a:b] = (~same.any(1)).numpy()
    return out


def open_set_split(query_pids: Sequence[int], fraction: float = 0.5, seed: int = 0) -> list[int]:
    """The query identities made unknown (their gallery images are removed): ``round(fraction * #ids)`` of the
    distinct query identities, drawn with ``random.Random(seed)`` from the sorted list; at least one and at most
    all but one."""
    ids = sorted({int(p) for p in query_pids})
    if len(ids) < 2:
        raise RlqError(f"an open-set split needs queries of at least 2 identities, got {len(ids)}")
    if not 0.0 < fraction < 1.0:
        raise RlqError(f"--unknown-fraction must be in (0, 1), got {fraction}")
    k = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    return sorted(random.Random(seed).sample(ids, k))


def _ci(stats: np.ndarray, level: float) -> list[float]:
    s = stats[np.isfinite(stats)]
    if s.size == 0:
        return [math.nan, math.nan]
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return [float(lo), float(hi)]


def dir_at_far(rank1_distance: Any, rank1_correct: Any, known: Any, unknown: Any, fars: Sequence[float], *,
               thresholds: Sequence[float] | None = None, num_resamples: int = 1000, seed: int = 0,
               level: float = 0.95) -> list[dict[str, Any]]:
    """One row per target FAR: ``far_target``, ``threshold``, ``dir``, ``far`` and their 95 % percentile bootstrap
    intervals (``dir_ci``, ``far_ci``) over the queries (known and unknown resampled together, with the draws of
    :func:`rlq.evaluation.bootstrap.bootstrap_indices`).

    ``thresholds`` None: each threshold is chosen on these unknown queries (:func:`threshold_at_far`) and chosen
    again in every resample, so the interval includes the choice. Given (e.g. a calibration's): they are fixed.
    Queries in neither ``known`` nor ``unknown`` are left out."""
    from rlq.evaluation.bootstrap import bootstrap_indices

    kn = np.asarray(known, dtype=bool).reshape(-1)
    un = np.asarray(unknown, dtype=bool).reshape(-1)
    keep = kn | un
    d = np.asarray(rank1_distance, dtype=np.float64).reshape(-1)[keep]
    ok = np.asarray(rank1_correct, dtype=bool).reshape(-1)[keep]
    kn = kn[keep]
    fixed = thresholds is not None
    ts = [float(t) for t in thresholds] if fixed else [threshold_at_far(d[~kn], f) for f in fars]
    if len(ts) != len(fars):
        raise RlqError(f"{len(ts)} thresholds for {len(fars)} FAR targets")
    rows = []
    n = d.size
    stats = np.full((int(num_resamples), len(fars), 2), math.nan)
    if n:
        r = 0
        for idx in bootstrap_indices(n, num_resamples, seed, block=64):
            for row in idx:
                dd, oo, kk = d[row], ok[row], kn[row]
                for j, f in enumerate(fars):
                    t = ts[j] if fixed else threshold_at_far(dd[~kk], f)
                    stats[r, j] = open_set_rates(dd, oo, kk, t)
                r += 1
    for j, f in enumerate(fars):
        dir_, far = open_set_rates(d, ok, kn, ts[j])
        rows.append({"far_target": float(f), "threshold": ts[j], "dir": dir_, "far": far,
                     "dir_ci": _ci(stats[:, j, 0], level), "far_ci": _ci(stats[:, j, 1], level),
                     "num_known": int(kn.sum()), "num_unknown": int((~kn).sum()),
                     "threshold_from": "given" if fixed else "these unknown queries"})
    return rows


def evaluate_open_set(features: Any, protocol: Any, fars: Sequence[float], *, unknown_fraction: float = 0.5,
                      seed: int = 0, rerank: Any = None, num_resamples: int = 1000, ci_seed: int = 0,
                      calibration: tuple[Sequence[float], Sequence[float]] | None = None, curve_fars: Sequence[float] = CURVE_FARS
                      ) -> dict[str, dict[str, Any]]:
    """Open-set figures of every general / cc evaluation of ``protocol``, from ``features`` (split ->
    ``(feats, samples or SplitLabels)``, as :func:`~rlq.evaluation.protocols.evaluate_protocol`).

    Per evaluation: the unknown identities (:func:`open_set_split` of the query identities with gallery images;
    their gallery rows removed), ``rows`` (DIR@FAR at ``fars``, thresholds set on these unknowns), ``curve`` (the
    same at ``curve_fars``) and, with ``calibration`` (a calibration's target FARs and thresholds), ``calibrated``
    (DIR and FAR at those fixed thresholds)."""
    from rlq.evaluation.protocols import _labels_of

    out: dict[str, dict[str, Any]] = {}
    for spec in protocol.specs:
        if spec.mode not in ("general", "cc"):
            continue
        qf, ql = features[spec.query][0], _labels_of(features[spec.query][1])
        gf, gl = features[spec.gallery][0], _labels_of(features[spec.gallery][1])
        g_ids = set(np.asarray(gl.pids).tolist())
        unknown = open_set_split([p for p in np.asarray(ql.pids).tolist() if p in g_ids], unknown_fraction, seed)
        keep = ~np.isin(np.asarray(gl.pids), np.asarray(unknown, dtype=np.int64))
        gfa = np.asarray(gf.detach().cpu() if isinstance(gf, torch.Tensor) else gf, dtype=np.float32)[keep]
        qfa = np.asarray(qf.detach().cpu() if isinstance(qf, torch.Tensor) else qf, dtype=np.float32)
        o = rank1_outcomes(qfa, gfa, ql.pids, gl.pids[keep], ql.camids, gl.camids[keep], ql.clothes_ids,
                           gl.clothes_ids[keep], mode=spec.mode, rerank=rerank)
        args = (o["distance"], o["correct"], o["known"], o["unknown"])
        kw = dict(num_resamples=num_resamples, seed=ci_seed)
        res: dict[str, Any] = {
            "mode": spec.mode, "query": spec.query, "gallery": spec.gallery, "unknown_ids": unknown,
            "unknown_fraction": unknown_fraction, "seed": seed, "num_gallery": int(keep.sum()),
            "num_known": int(o["known"].sum()), "num_unknown": int(o["unknown"].sum()),
            "num_excluded": int((~(o["known"] | o["unknown"])).sum()),
            "rows": dir_at_far(*args, list(fars), **kw), "curve": dir_at_far(*args, list(curve_fars), **kw),
        }
        if calibration is not None:
            res["calibrated"] = dir_at_far(*args, list(calibration[0]), thresholds=list(calibration[1]), **kw)
        out[spec.name] = res
    return out
