"""Exact, chunked CMC / mAP / mINP with CAL semantics (docs/datasets.md §2), on CPU or GPU.

Definitions (docs/datasets.md §2). For a query, the gallery is sorted by ascending distance; **equal
distances are ordered by ascending gallery index** (what a stable sort gives). Junk items are deleted;
r_1 < ... < r_n are the 1-based ranks of the n good items in the cleaned list; CMC_q(k) = [r_1 <= k],
AP_q = (1/n) sum_i i / r_i (non-interpolated), INP_q = n / r_n. Queries with n = 0 are invalid: they
are counted and excluded from every mean. Good / junk per mode (same-pid items only):

    general  good = same pid, other camera                 junk = same pid, same camera
    cc       good = same pid, other camera, other clothes  junk = same pid, same camera or same clothes
    sc       good = same pid, other camera, same clothes   junk = same pid, same camera or other clothes

The kernel never sorts a gallery row. Per query, the m same-pid gallery items are the only ones that
can be good or junk; with their distances sorted (and each one's float successor, to see exact ties),
one ``torch.searchsorted`` of the whole row into those 2m thresholds plus a per-row histogram gives,
for every same-pid item, the number of gallery items strictly closer and exactly as close. The stable
rank follows; on rows where a same-pid distance is exactly shared with another gallery item, the tied
entries (found from the buckets) are listed as sorted keys and the ones with a smaller gallery index are
counted with two more ``searchsorted`` calls, so ties cost about as much as no ties. One pass over the
distances serves several modes at once (they differ only in which same-pid items are good).
Cost per query: O(G log m) time, O(G) memory (distance + int32 bucket per gallery item).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlq.data.records import MODES
from rlq.errors import RlqError

__all__ = ["evaluate", "evaluate_features", "chunk_size_for", "DEFAULT_MEMORY_BUDGET_MB", "MODES"]

logger = logging.getLogger(__name__)

#: Default working-memory budget of one query chunk (distances + int32 buckets + one gallery block).
DEFAULT_MEMORY_BUDGET_MB = 1024

_ArrayLike = Any  # numpy array, torch tensor or sequence of numbers


# ---------------------------------------------------------------------------------------------------
# input handling


def _as_labels(x: _ArrayLike, name: str, n: int | None = None) -> torch.Tensor:
    """A 1-D int64 CPU tensor of labels (integer-valued floats are accepted)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
    else:
        a = np.asarray(x)
        if a.dtype.kind not in "iuf":
            raise RlqError(f"{name} must be integer labels, got dtype {a.dtype}")
        t = torch.as_tensor(a)
    if t.dim() != 1:
        raise RlqError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise RlqError(f"{name} must be integer labels, got dtype {t.dtype}")
    if t.is_floating_point() and not bool(torch.all(t == torch.round(t))):
        raise RlqError(f"{name} must be integer labels, got non-integer values of dtype {t.dtype}")
    if n is not None and t.numel() != n:
        raise RlqError(f"{name} has {t.numel()} entries, expected {n} (one per row/column of the distances)")
    return t.to(torch.int64)


def _as_tensor(x: _ArrayLike) -> torch.Tensor:
    """Share memory with a numpy array where possible (read-only arrays are never written)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise RlqError(f"expected a numeric array, got dtype {a.dtype}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-writable arrays: we only read them
        return torch.as_tensor(a)


def _float_dtype(t: torch.Tensor) -> torch.dtype:
    """Distances are compared in float32 or float64 (half / int inputs are widened exactly)."""
    if t.dtype == torch.float64:
        return torch.float64
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32):
        return torch.float32
    return torch.float64


def _check_modes(mode: str, modes: Sequence[str] | None, clothes_given: bool) -> tuple[str, ...]:
    ms = (mode,) if modes is None else tuple(modes)
    if not ms:
        raise RlqError("modes must name at least one of " + ", ".join(MODES))
    for m in ms:
        if m not in MODES:
            raise RlqError(f"unknown evaluation mode {m!r}; expected one of {MODES}")
        if m != "general" and not clothes_given:
            raise RlqError(
                f"mode {m!r} needs clothes ids: pass q_clothes_ids and g_clothes_ids (docs/datasets.md §2)"
            )
    if len(set(ms)) != len(ms):
        raise RlqError(f"duplicate modes in {ms}")
    return ms


# ---------------------------------------------------------------------------------------------------
# the ranking kernel


@dataclass
class _Gallery:
    """Gallery labels on the compute device plus a pid -> same-pid positions lookup."""

    camids: torch.Tensor
    clothes: torch.Tensor | None
    order: torch.Tensor  # gallery indices sorted by pid (stable: ascending index within a pid)
    uniq: torch.Tensor  # sorted distinct pids
    start: torch.Tensor  # first position of each distinct pid in `order`
    count: torch.Tensor  # images per distinct pid

    @classmethod
    def build(cls, pids: torch.Tensor, camids: torch.Tensor, clothes: torch.Tensor | None, device: torch.device) -> _Gallery:
        order = torch.sort(pids, stable=True).indices
        uniq, count = torch.unique_consecutive(pids[order], return_counts=True)
        start = torch.cumsum(count, 0) - count
        def to(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return cls(to(camids), to(clothes), to(order), to(uniq), to(start), to(count))

    def same_pid(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (c, m) gallery indices of each query's same-pid items (pad = 0) and their mask."""
        c = q_pids.numel()
        dev = q_pids.device
        if self.uniq.numel() == 0:
            return torch.zeros(c, 0, dtype=torch.int64, device=dev), torch.zeros(c, 0, dtype=torch.bool, device=dev)
        pos = torch.searchsorted(self.uniq, q_pids).clamp_max(self.uniq.numel() - 1)
        found = self.uniq[pos] == q_pids
        cnt = torch.where(found, self.count[pos], torch.zeros_like(pos))
        m = int(cnt.max()) if c else 0
        ar = torch.arange(m, device=dev)
        valid = ar[None, :] < cnt[:, None]
        slot = torch.where(valid, self.start[pos][:, None] + ar[None, :], torch.zeros_like(ar)[None, :])
        return self.order[slot], valid


@dataclass
class _ChunkResult:
    ap: torch.Tensor  # float64, NaN where invalid
    inp: torch.Tensor
    first: torch.Tensor  # int64, 0 where invalid
    n_good: torch.Tensor  # int64


def _rank_chunk(
    D: torch.Tensor,
    q_pids: torch.Tensor,
    q_cam: torch.Tensor,
    q_clo: torch.Tensor | None,
    gal: _Gallery,
    modes: tuple[str, ...],
    scratch: dict[str, torch.Tensor] | None = None,
) -> dict[str, _ChunkResult]:
    """Exact stable ranks of the good items of each row of D (c x G), for each mode.

    ``scratch``: a dict kept across the chunks of one evaluation; the (c x G) int32 bucket buffer is
    allocated once in it and reused, so that a fresh block of that size is not allocated (and, after
    small allocations land in the freed one, faulted in anew) for every chunk.
    """
    c, G = D.shape
    dev = D.device
    idx, valid = gal.same_pid(q_pids)  # (c, m); rows pad with index 0 and valid=False
    m = idx.shape[1]
    inf = torch.tensor(math.inf, dtype=D.dtype, device=dev)
    s = torch.where(valid, D.gather(1, idx), inf)
    # Stable sort by distance: indices within a row ascend and padding comes last, so equal distances
    # keep ascending gallery index and padding stays behind any real +inf.
    s, perm = torch.sort(s, dim=1, stable=True)
    idx = idx.gather(1, perm)
    valid = valid.gather(1, perm)
    s_up = torch.nextafter(s, inf)  # d <= s  <=>  d < s_up for finite s

    before = torch.zeros(c, m, dtype=torch.int64, device=dev)  # gallery items ahead of each same-pid item
    if m:
        T = torch.sort(torch.cat([s, s_up], 1), dim=1).values.contiguous()
        nb = 2 * m + 1
        wide = c * nb >= 2**31 - 1
        # bucket[k] = #{t in T : t <= d_k};  d_k < T[a]  <=>  bucket[k] <= a  (T sorted, duplicates allowed)
        if wide or scratch is None:
            bucket = torch.searchsorted(T, D, right=True, out_int32=not wide)
        else:
            buf = scratch.get("bucket")
            if buf is None or buf.shape[0] < c or buf.shape[1] != G or buf.device != dev:
                scratch.pop("bucket", None)
                buf = scratch["bucket"] = torch.empty(c, G, dtype=torch.int32, device=dev)
            bucket = torch.searchsorted(T, D, right=True, out_int32=True, out=buf[:c])
        bucket += (torch.arange(c, device=dev, dtype=bucket.dtype) * nb)[:, None]
        cum = torch.bincount(bucket.view(-1), minlength=c * nb).view(c, nb).cumsum(1)
        n_lt = cum.gather(1, torch.searchsorted(T, s))  # #{d < s_j}
        n_le = cum.gather(1, torch.searchsorted(T, s_up))  # #{d <= s_j}
        del cum
        # Ties inside the same-pid set are resolved from s alone; ties with other items need the row.
        first_eq = torch.searchsorted(s, s)
        n_eq_own = torch.searchsorted(s, s, right=True) - first_eq
        pos = torch.arange(m, device=dev)[None, :]
        before = n_lt + (pos - first_eq)
        foreign_tie = (n_le - n_lt) != n_eq_own
        tied = torch.nonzero(((foreign_tie | torch.isposinf(s)) & valid).any(1)).flatten()
        if tied.numel():
            before[tied] = _before_tied(D, bucket, nb, T, s, idx, valid, n_lt, tied)
        del bucket

    cam = gal.camids[idx]
    same_cam = cam == q_cam[:, None]
    same_clo = None
    if gal.clothes is not None and q_clo is not None:
        same_clo = gal.clothes[idx] == q_clo[:, None]

    out: dict[str, _ChunkResult] = {}
    for mode in modes:
        if mode == "general":
            good = valid & ~same_cam
        elif mode == "cc":
            good = valid & ~same_cam & ~same_clo
        else:  # "sc"
            good = valid & ~same_cam & same_clo
        junk = valid & ~good  # every same-pid item is good or junk in every mode
        junk_ahead = torch.cumsum(junk, 1) - junk.long()
        rank = (before - junk_ahead + 1).to(torch.float64)
        i = torch.cumsum(good, 1).to(torch.float64)
        n = good.sum(1)
        ok = n > 0
        nf = n.to(torch.float64)
        # A running (sequential) sum: padding adds exact zeros, so AP does not depend on the chunking.
        terms = torch.where(good, i / rank, torch.zeros_like(rank))
        ap_sum = terms.cumsum(1)[:, -1] if m else torch.zeros(c, dtype=torch.float64, device=dev)
        big = torch.full_like(rank, math.inf)
        r1 = torch.where(good, rank, big).amin(1) if m else torch.full((c,), math.inf, dtype=torch.float64, device=dev)
        rn = torch.where(good, rank, -big).amax(1) if m else torch.full((c,), math.inf, dtype=torch.float64, device=dev)
        nan = torch.full((c,), math.nan, dtype=torch.float64, device=dev)
        out[mode] = _ChunkResult(
            ap=torch.where(ok, ap_sum / nf.clamp_min(1), nan),
            inp=torch.where(ok, nf / rn, nan),
            first=torch.where(ok, r1, torch.zeros_like(r1)).to(torch.int64),
            n_good=n.to(torch.int64),
        )
    return out


def _before_tied(
    D: torch.Tensor, bucket: torch.Tensor, nb: int, T: torch.Tensor, s: torch.Tensor, idx: torch.Tensor,
    valid: torch.Tensor, n_lt: torch.Tensor, rows: torch.Tensor,
) -> torch.Tensor:
    """Gallery items ahead of each same-pid item on rows whose distances tie with other gallery items.

    Stable order: ahead = strictly closer (``n_lt``) + exactly as close with a smaller gallery index. An
    item at distance exactly s_j falls in bucket #{T <= s_j} (T holds s_j and its float successor, so
    that bucket holds d == s_j and nothing else). A lookup table over the chunk's (row, bucket) pairs marks
    the buckets of the tied rows' same-pid distances; the entries that fall in them (few) are listed once as
    sorted keys (row, bucket, gallery index), and two ``searchsorted`` calls per same-pid item count those
    with a smaller index. Rows go in groups of 1/16 of the chunk, so the mask stays within the 1 byte per
    distance of headroom that :func:`chunk_size_for` reserves. ``bucket`` holds row * nb + bucket.
    """
    c, G = D.shape
    dev = D.device
    kb = torch.searchsorted(T[rows], s[rows], right=True)  # bucket of d == s_j, per tied row
    qkey = (rows[:, None] * nb + kb) * G  # the key of gallery index 0 in that bucket
    lut = torch.zeros(c * nb, dtype=torch.bool, device=dev)
    lut[(rows[:, None] * nb + kb)[valid[rows]]] = True
    # all rows in slices (no copies) when most rows are tied, else only the tied rows
    groups = ([slice(a, min(c, a + max(1, c // 16))) for a in range(0, c, max(1, c // 16))]
              if 2 * rows.numel() >= c else [rows[a : a + max(1, c // 16)] for a in range(0, rows.numel(), max(1, c // 16))])
    keys = []
    for grp in groups:
        bk = bucket[grp].reshape(-1)
        # index_select, not lut[bk]: advanced indexing with an int32 index is ~10x slower on CPU
        flat = torch.nonzero(lut.index_select(0, bk)).squeeze(1)
        keys.append(bk[flat].long() * G + flat % G)
    key = torch.sort(torch.cat(keys)).values
    return n_lt[rows] + torch.searchsorted(key, qkey + idx[rows]) - torch.searchsorted(key, qkey)


class _Accumulator:
    """Collects per-query results of each mode over the chunks."""

    def __init__(self, modes: tuple[str, ...]):
        self.modes = modes
        self.parts: dict[str, list[_ChunkResult]] = {m: [] for m in modes}

    def add(self, res: dict[str, _ChunkResult]) -> None:
        for m, r in res.items():
            self.parts[m].append(_ChunkResult(r.ap.cpu(), r.inp.cpu(), r.first.cpu(), r.n_good.cpu()))

    def finish(self, max_rank: int, gallery_size: int) -> dict[str, dict[str, Any]]:
        out = {}
        for m in self.modes:
            ps = self.parts[m]
            def cat(f: str, dt: type, ps: list = ps) -> np.ndarray:
                return torch.cat([getattr(p, f) for p in ps]).numpy() if ps else np.zeros(0, dtype=dt)

            out[m] = _summarise(
                m, cat("ap", np.float64), cat("inp", np.float64), cat("first", np.int64),
                cat("n_good", np.int64), max_rank, gallery_size,
            )
        return out


def no_match_note(mode: str, num_queries: int) -> str:
    """Why the metrics of an evaluation are NaN (``null`` in JSON): no query has a true match."""
    return (f"none of the {num_queries} queries has a true match in the gallery under the {mode} rule, so rank-k, mAP "
            "and mINP are undefined (NaN; null in JSON)")


def _summarise(
    mode: str, ap: np.ndarray, inp: np.ndarray, first: np.ndarray, n_good: np.ndarray, max_rank: int, gallery_size: int
) -> dict[str, Any]:
    valid = n_good > 0
    nv, nq = int(valid.sum()), int(valid.size)
    if nv == 0:
        logger.warning("%s evaluation: none of the %d queries has a true match in the gallery; metrics are NaN", mode, nq)
        cmc = np.full(max_rank, np.nan)
        mAP = mINP = math.nan
        rk = {k: math.nan for k in (1, 5, 10, 20)}
    else:
        if nv < nq:
            logger.info("%s evaluation: %d of %d queries have no true match and are skipped", mode, nq - nv, nq)
        fr = first[valid]
        # first ranks never exceed the gallery size, so for k > G this is the last value repeated
        hits = np.bincount(np.minimum(fr, max_rank + 1), minlength=max_rank + 2)[1 : max_rank + 1]
        cmc = np.cumsum(hits) / nv
        mAP = float(ap[valid].mean())
        mINP = float(inp[valid].mean())
        rk = {k: float(np.count_nonzero(fr <= k) / nv) for k in (1, 5, 10, 20)}
    extra = {} if nv else {"note": no_match_note(mode, nq)}
    return {
        **extra,
        "mode": mode,
        "mAP": mAP,
        "mINP": mINP,
        "cmc": cmc.astype(np.float64),
        "rank1": rk[1],
        "rank5": rk[5],
        "rank10": rk[10],
        "rank20": rk[20],
        "num_valid_queries": nv,
        "num_queries": nq,
        "num_gallery": int(gallery_size),
        "max_rank": int(max_rank),
        "ap": ap,
        "inp": inp,
        "first_rank": first,
        "num_matches": n_good,
        "valid": valid,
    }


# ---------------------------------------------------------------------------------------------------
# public entry points


def chunk_size_for(num_gallery: int, dist_itemsize: int = 4, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                   reserved_bytes: int = 0) -> int:
    """Query rows per chunk: max(1, floor((B - reserved) / (G * (s + 5)))), B = budget in bytes.

    Per query row and gallery item the kernel holds the distance (s = 4 or 8 bytes) and its int32 bucket
    (4 bytes), plus 1 byte of headroom (a mask built only to locate NaNs); ``reserved_bytes`` is what else the caller keeps (the
    normalised gallery block of :func:`evaluate_features`). Small per-row terms (O(m)) are ignored.
    """
    budget = int(memory_budget_mb * 2**20) - int(reserved_bytes)
    return max(1, budget // (max(1, num_gallery) * (dist_itemsize + 5)))


def _labels(q_pids, g_pids, q_camids, g_camids, q_clothes_ids, g_clothes_ids, nq, ng):
    qp, gp = _as_labels(q_pids, "q_pids", nq), _as_labels(g_pids, "g_pids", ng)
    qc, gc = _as_labels(q_camids, "q_camids", nq), _as_labels(g_camids, "g_camids", ng)
    if (q_clothes_ids is None) != (g_clothes_ids is None):
        raise RlqError("pass both q_clothes_ids and g_clothes_ids, or neither")
    qcl = None if q_clothes_ids is None else _as_labels(q_clothes_ids, "q_clothes_ids", nq)
    gcl = None if g_clothes_ids is None else _as_labels(g_clothes_ids, "g_clothes_ids", ng)
    return qp, gp, qc, gc, qcl, gcl


def _run(
    chunks: Iterator[tuple[int, int, torch.Tensor]],
    labels: tuple,
    modes: tuple[str, ...],
    ng: int,
    max_rank: int,
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    qp, gp, qc, gc, qcl, gcl = labels
    gal = _Gallery.build(gp, gc, gcl, device)
    qp, qc = qp.to(device), qc.to(device)
    qcl = None if qcl is None else qcl.to(device)
    acc = _Accumulator(modes)
    scratch: dict[str, torch.Tensor] = {}
    for a, b, D in chunks:
        res = _rank_chunk(D, qp[a:b], qc[a:b], None if qcl is None else qcl[a:b], gal, modes, scratch)
        del D
        acc.add(res)
    scratch.clear()
    return acc.finish(max_rank, ng)


def _check_max_rank(max_rank: int) -> int:
    if int(max_rank) < 1:
        raise RlqError(f"max_rank must be >= 1, got {max_rank}")
    return int(max_rank)


def evaluate(
    distmat: _ArrayLike,
    q_pids: _ArrayLike,
    g_pids: _ArrayLike,
    q_camids: _ArrayLike,
    g_camids: _ArrayLike,
    q_clothes_ids: _ArrayLike | None = None,
    g_clothes_ids: _ArrayLike | None = None,
    mode: str = "general",
    max_rank: int = 50,
    *,
    modes: Sequence[str] | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    progress: bool = False,
) -> dict[str, Any]:
    """CMC / mAP / mINP of a query x gallery distance matrix (smaller = closer), docs/datasets.md §2.

    Returns fractions: ``mAP``, ``mINP``, ``cmc`` (float64, length ``max_rank``; past the gallery size
    it repeats its last value), ``rank1/5/10/20``, ``num_valid_queries``, ``num_queries``,
    ``num_gallery``, and per query ``ap``/``inp`` (NaN if invalid), ``first_rank`` (1-based, 0 if
    invalid), ``num_matches`` and ``valid``. With ``modes=(...)`` returns ``{mode: result}`` from one
    pass. Rows are streamed in chunks (``chunk_size`` or derived from ``memory_budget_mb``) onto
    ``device`` (default: the matrix's device).
    """
    max_rank = _check_max_rank(max_rank)
    ms = _check_modes(mode, modes, q_clothes_ids is not None and g_clothes_ids is not None)
    dm = _as_tensor(distmat)
    if dm.dim() != 2:
        raise RlqError(f"distmat must be 2-D (queries x gallery), got shape {tuple(dm.shape)}")
    nq, ng = dm.shape
    labels = _labels(q_pids, g_pids, q_camids, g_camids, q_clothes_ids, g_clothes_ids, nq, ng)
    dev = torch.device(device) if device is not None else dm.device
    dt = _float_dtype(dm)
    cs = int(chunk_size) if chunk_size else chunk_size_for(ng, torch.finfo(dt).bits // 8, memory_budget_mb)
    if cs < 1:
        raise RlqError(f"chunk_size must be >= 1, got {chunk_size}")

    def chunks() -> Iterator[tuple[int, int, torch.Tensor]]:
        from tqdm.auto import tqdm

        for a in tqdm(range(0, nq, cs), desc="evaluate", unit="chunk", disable=not progress):
            b = min(nq, a + cs)
            D = dm[a:b].to(device=dev, dtype=dt).contiguous()
            # one allocation-free reduction; only a NaN (or +inf and -inf together) makes the sum NaN
            if bool(torch.isnan(D.sum())) and bool(torch.isnan(D).any()):
                bad = a + int(torch.nonzero(torch.isnan(D).any(1))[0])
                raise RlqError(f"distance matrix row {bad} contains NaN; check the features for NaN/inf")
            yield a, b, D
            del D  # free this chunk before the next one is built

    res = _run(chunks(), labels, ms, ng, max_rank, dev)
    for r in res.values():
        r["chunk_size"] = cs
    return res if modes is not None else res[ms[0]]


def _raise_bad_features(q: torch.Tensor, g: torch.Tensor, a: int, b: int) -> None:
    """Name the first non-finite query (in rows a..b-1) or gallery feature row."""
    bad_q = torch.nonzero(~torch.isfinite(q[a:b]).all(1)).flatten()
    if bad_q.numel():
        raise RlqError(f"query features row {a + int(bad_q[0])} contains NaN or inf")
    for ga in range(0, g.shape[0], 4096):
        bad_g = torch.nonzero(~torch.isfinite(g[ga : ga + 4096]).all(1)).flatten()
        if bad_g.numel():
            raise RlqError(f"gallery features row {ga + int(bad_g[0])} contains NaN or inf")
    raise RlqError("features overflow: cosine similarities are NaN; check the feature scale")


def evaluate_features(
    query_feats: _ArrayLike,
    gallery_feats: _ArrayLike,
    q_pids: _ArrayLike,
    g_pids: _ArrayLike,
    q_camids: _ArrayLike,
    g_camids: _ArrayLike,
    q_clothes_ids: _ArrayLike | None = None,
    g_clothes_ids: _ArrayLike | None = None,
    mode: str = "general",
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    *,
    modes: Sequence[str] | None = None,
    progress: bool = False,
    rerank: Any = None,
    rerank_form: str = "auto",
) -> dict[str, Any]:
    """Evaluate with distance = -cos of L2-normalised features; same result as ``evaluate(-(qn @ gn.T))``.

    ``rerank``: a :class:`~rlq.evaluation.rerank.RerankSettings` ranks by the k-reciprocal re-ranked
    distance instead (each result then carries ``rerank``: its settings). ``rerank_form``: ``dense`` (the
    exact (N x N) form), ``sparse`` (kNN graph, streamed) or ``auto`` (dense when it fits the budget).

    Features (numpy or torch, N x d) are normalised here (``F.normalize``, eps 1e-12) and never
    combined into a full query x gallery matrix: each query chunk's distances are built gallery block
    by gallery block on ``device`` (default: the features' device). half/bfloat16 are computed in
    float32. ``modes=(...)`` returns ``{mode: result}`` from one pass; see :func:`evaluate`.
    """
    max_rank = _check_max_rank(max_rank)
    ms = _check_modes(mode, modes, q_clothes_ids is not None and g_clothes_ids is not None)
    q, g = _as_tensor(query_feats), _as_tensor(gallery_feats)
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise RlqError(f"features must be 2-D with equal widths, got query {tuple(q.shape)} and gallery {tuple(g.shape)}")
    nq, ng = q.shape[0], g.shape[0]
    dim = q.shape[1]
    labels = _labels(q_pids, g_pids, q_camids, g_camids, q_clothes_ids, g_clothes_ids, nq, ng)
    dev = torch.device(device) if device is not None else q.device
    if rerank is not None:
        return _evaluate_reranked(q, g, labels, ms, modes is not None, ng, max_rank, dev, rerank, rerank_form,
                                  chunk_size, memory_budget_mb)
    dt = torch.float64 if (q.dtype == torch.float64 or g.dtype == torch.float64) else torch.float32
    isz = torch.finfo(dt).bits // 8
    budget = int(memory_budget_mb * 2**20)
    # The normalised gallery block takes at most a quarter of the budget (at least 256 rows).
    g_block = max(1, min(ng, max(256, budget // 4 // max(1, dim * isz))))
    if chunk_size:
        cs = int(chunk_size)
    else:
        cs = chunk_size_for(ng, isz, memory_budget_mb, reserved_bytes=min(g_block * dim * isz, budget // 4))
    g_dev = g if g.device == dev else g.to(dev)  # one copy when moving features to another device
    # F.normalize(x) is x / ||x||.clamp_min(eps): the gallery norms are computed once, not per query chunk
    g_norm = torch.cat([
        torch.linalg.vector_norm(g_dev[a : a + g_block].to(dtype=dt), dim=1).clamp_min(1e-12)
        for a in range(0, ng, g_block)
    ]) if ng else torch.zeros(0, dtype=dt, device=dev)

    def chunks() -> Iterator[tuple[int, int, torch.Tensor]]:
        from tqdm.auto import tqdm

        # buffers reused across chunks (fresh allocations would be page-faulted in every time)
        d_buf = torch.empty(min(cs, nq), ng, dtype=dt, device=dev)
        g_buf = torch.empty(min(g_block, ng), dim, dtype=dt, device=dev)
        for a in tqdm(range(0, nq, cs), desc="evaluate", unit="chunk", disable=not progress):
            b = min(nq, a + cs)
            qn = F.normalize(q[a:b].to(device=dev, dtype=dt), dim=1)
            D = d_buf[: b - a]
            for ga in range(0, ng, g_block):
                gb = min(ng, ga + g_block)
                gn = torch.div(g_dev[ga:gb].to(dtype=dt), g_norm[ga:gb, None], out=g_buf[: gb - ga])
                torch.mm(qn, gn.T, out=D[:, ga:gb])
            D.neg_()
            # NaN / inf features make NaN cosines; one allocation-free reduction finds them
            if bool(torch.isnan(D.sum())):
                _raise_bad_features(q, g_dev, a, b)
            yield a, b, D

    res = _run(chunks(), labels, ms, ng, max_rank, dev)
    for r in res.values():
        r["chunk_size"] = cs
    return res if modes is not None else res[ms[0]]


def _evaluate_reranked(q, g, labels, ms, several, ng, max_rank, dev, settings, form, chunk_size, memory_budget_mb):
    """evaluate_features on k-reciprocal re-ranked distances (rlq.evaluation.rerank)."""
    from rlq.evaluation.rerank import (
        RerankSettings,
        dense_fits,
        dense_peak_bytes,
        rerank_chunks,
        rerank_dense,
        sparse_peak_bytes,
    )

    if not isinstance(settings, RerankSettings):
        raise RlqError(f"rerank must be a RerankSettings, got {type(settings).__name__}")
    if form not in ("auto", "dense", "sparse"):
        raise RlqError(f"rerank_form must be auto, dense or sparse, got {form!r}")
    nq, dim = q.shape
    if form == "auto":
        form = "dense" if dense_fits(nq, ng, memory_budget_mb, dim) else "sparse"
    need = dense_peak_bytes(nq, ng, dim) if form == "dense" else sparse_peak_bytes(nq, ng, dim, memory_budget_mb, settings)
    if need > memory_budget_mb * 2**20:
        # A warning, not an error: the sparse form's linear terms cannot shrink with the budget, and
        # callers (rlq eval --rerank on LaST) have run past the budget before; say so loudly instead.
        logger.warning(
            "re-ranking %d x %d x %d-d features with rerank_form=%r needs about %.0f MiB above the features, "
            "more than memory_budget_mb=%g%s", nq, ng, dim, form, need / 2**20, memory_budget_mb,
            " (rerank_form='sparse' would need about %.0f MiB)" % (sparse_peak_bytes(nq, ng, dim, memory_budget_mb,
                                                                                      settings) / 2**20)
            if form == "dense" else "; raise memory_budget_mb or expect the process to use more")
    qd, gd = q.to(dev), g.to(dev)
    if form == "dense":
        D = rerank_dense(qd, gd, settings)
        # rank in chunks, as the other paths do: the kernel's scratch then stays within the budget
        cs = int(chunk_size) if chunk_size else chunk_size_for(ng, 4, memory_budget_mb)
        chunks = ((a, min(nq, a + cs), D[a : a + cs]) for a in range(0, nq, cs))
    else:
        chunks = rerank_chunks(qd, gd, settings, chunk_size=chunk_size, memory_budget_mb=memory_budget_mb)
    res = _run(chunks, labels, ms, ng, max_rank, dev)
    for r in res.values():
        r["rerank"] = settings.as_dict()
        r["rerank_form"] = form
    return res if several else res[ms[0]]
