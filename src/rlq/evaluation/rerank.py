"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), exact (dense) and sparse, in torch on CPU or GPU.

The paper's numbers (docs/method.md §11) use no re-ranking; every output that uses it says so
(:meth:`RerankSettings.label`). Definitions, with N = query + gallery samples and features L2-normalised:

* base distance d(i, j) = ||x_i - x_j||² = 2 - 2 cos(x_i, x_j), divided by the largest d of row i
  (the released implementation's per-row normalisation), written d̂;
* N(i, k): the k + 1 nearest samples of i over query ∪ gallery (i itself included), ordered by d and
  then by index;
* R(i, k) = {j ∈ N(i, k) : i ∈ N(j, k)} (k-reciprocal neighbours);
* R*(i, k1) = R(i, k1) ∪ R(c, round(k1 / 2)) for every c ∈ R(i, k1) with
  |R(c, k1/2) ∩ R(i, k1)| > 2/3 |R(c, k1/2)|;
* V_i,j = exp(-d̂(i, j)) / Σ_{j' ∈ R*(i)} exp(-d̂(i, j')) on R*(i), 0 elsewhere (rows sum to 1);
* local query expansion (k2 > 1): V_i ← mean of V_t over t ∈ N(i, k2 - 1) (the k2 nearest);
* Jaccard distance d_J(q, g) = 1 - Σ_j min(V_q,j, V_g,j) / Σ_j max(V_q,j, V_g,j), where the max-sum is
  2 - min-sum because every row sums to 1;
* final distance d*(q, g) = (1 - λ) d_J(q, g) + λ d̂(q, g). Defaults k1 = 20, k2 = 6, λ = 0.3.

The dense form holds (query + gallery)² distances; the sparse form holds only the k-nearest-neighbour
graph (built in chunks), V as padded rows and the gallery's V by column, and streams the final distances
query chunk by query chunk into the exact ranking kernel, so it fits LaST-size problems. Both give the
same V up to float rounding (tests/test_rerank.py checks them against each other and against a slow
loop written from the equations above).

Memory, in bytes above the caller's features (N = nq + G, d = feature width, B = ``memory_budget_mb``
in bytes; peak RSS of a fresh process measured by benchmarks/rerank_memory.py, docs/benchmarks.md):

* dense (:func:`dense_peak_bytes`): d̂ (N x N) and V (N x (N + 1)) side by side, then V's query expansion
  written over d̂ next to d̂'s query x gallery block: 8 N² + 4 nq G, plus the normalised features 4 N d
  and 64 MiB-blocks of work space. Measured 11-13 N² in all at N = 6,000-8,000 (query = gallery);
  the estimate adds a 50 % margin: 1.5 (8 N (N + 1) + 4 nq G + 4 N d) + 48 MiB + min(64 MiB, 40 KiB N).
  ``rerank_form="auto"`` takes the dense form only where this fits B (:func:`dense_fits`).
* sparse (:func:`sparse_peak_bytes`): linear terms that no budget shrinks, N (4 d + 8 w + 8 k2 + 28) +
  8 e G (the normalised features; V's rows, w = max |R*(i)| slots of int32 column + float32 value; the
  k2 nearest; d's row maxima and the column index's offsets; the gallery's query-expanded V by column,
  e = its mean nonzeros per row), plus one stage's work space, each stage sizing its chunks to B / 4
  (measured at most about 0.5 B in all). Estimate: N (4 d + 8 w + 8 k2 + 28) + 8 e G + 0.55 B + 48 MiB
  with the typical w = 2 (k1 + 1), e = 4 (k1 + 1) (measured 31-42 and 31-73 at the defaults; the worst
  cases are w = (k1 + 1)(round(k1 / 2) + 2), e = k2 w). The budget is therefore kept while the linear
  terms stay below about 0.45 B - 48 MiB; above that ``evaluate_features`` logs a warning with the estimate
  (it does not refuse: existing callers with LaST-size galleries keep working, at the stated cost).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from rlq.errors import RlqError

__all__ = ["RerankSettings", "dense_fits", "dense_peak_bytes", "knn_graph", "rerank_chunks", "rerank_dense",
           "sparse_peak_bytes", "topk_rows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankSettings:
    """k-reciprocal re-ranking settings (the defaults are the paper's and both ReID toolboxes')."""

    k1: int = 20
    k2: int = 6
    lam: float = 0.3

    def __post_init__(self) -> None:
        if int(self.k1) < 1 or int(self.k2) < 1:
            raise RlqError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={self.k1}, k2={self.k2}")
        if not 0.0 <= float(self.lam) <= 1.0:
            raise RlqError(f"re-ranking lambda must lie in [0, 1], got {self.lam}")

    @property
    def k_half(self) -> int:
        return int(round(self.k1 / 2))  # round-half-to-even, as numpy's around

    def label(self) -> str:
        return f"k-reciprocal re-ranking (k1={self.k1}, k2={self.k2}, lambda={self.lam})"

    def as_dict(self) -> dict[str, Any]:
        return {"method": "k-reciprocal", "k1": int(self.k1), "k2": int(self.k2), "lambda": float(self.lam)}


# ---------------------------------------------------------------------------------------------------
# nearest neighbours


def topk_rows(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest scores of each row and their column indices; equal scores go to the lower index."""
    n = s.shape[1]
    k = min(k, n)
    extra = 1 if k < n else 0
    vals, idx = torch.topk(s, k + extra, dim=1, largest=True, sorted=True)
    # Where the (k+1)-th score equals the k-th, the cut is a tie that topk resolves arbitrarily:
    # redo those rows with a full stable sort (lower index first among equal scores).
    if extra:
        amb = vals[:, k] == vals[:, k - 1]
        vals, idx = vals[:, :k], idx[:, :k]
        if bool(amb.any()):
            rows = amb.nonzero().squeeze(1)
            sv, si = torch.sort(s[rows], dim=1, descending=True, stable=True)
            vals[rows], idx[rows] = sv[:, :k], si[:, :k]
    # inside the top k, order equal scores by index: sort by index, then stably by score
    idx, perm = torch.sort(idx, dim=1)
    vals = vals.gather(1, perm)
    vals, perm = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm)


def _rows_per_chunk(n_cols: int, bytes_per_entry: int, budget_bytes: int) -> int:
    return max(1, budget_bytes // max(1, n_cols * bytes_per_entry))


_SCRATCH = 64 * 2**20  # the dense form's working blocks (bytes), next to its (N x N) matrices


def _normalised(query_feats: torch.Tensor, gallery_feats: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One float32 (N x d) copy of query ∪ gallery, rows L2-normalised in place; and the query count.

    The values are F.normalize's (x / max(||x||, 1e-12)), without its second full-size copy.
    """
    nq, ng = query_feats.shape[0], gallery_feats.shape[0]
    x = torch.empty(nq + ng, query_feats.shape[1], dtype=torch.float32, device=query_feats.device)
    x[:nq].copy_(query_feats)
    x[nq:].copy_(gallery_feats)
    x.div_(x.norm(2, 1, keepdim=True).clamp_min(1e-12))
    return x, nq


def _set_row_bytes(st: RerankSettings, n: int, dim: int) -> int:
    """Working memory of one row of :func:`_v_rows` / the dense V loop: the gathered member features
    (L x d floats), the set arithmetic (K1 x (Kh+1) x K1 booleans, several alive) and the L-wide int64 /
    float rows (candidates, sort, weights)."""
    K1 = min(st.k1 + 1, n)
    Kh = min(st.k_half + 1, n)
    L = K1 + K1 * Kh
    return L * (4 * dim + 64) + 4 * K1 * K1 * Kh + 16 * K1 * Kh


@torch.no_grad()
def knn_graph(x: torch.Tensor, k: int, *, memory_budget_mb: float = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(N x k) nearest-neighbour indices of L2-normalised rows x (self included) and each row's largest d.

    Distances are d = 2 - 2 cos; neighbours are ordered by d, then by index. Built chunk by chunk: at most
    ``memory_budget_mb`` of scores exist at a time.
    """
    n = x.shape[0]
    cs = _rows_per_chunk(n, 4 * 4, int(memory_budget_mb * 2**20))  # scores + topk/sort work space
    nbr = torch.empty(n, min(k, n), dtype=torch.int64, device=x.device)
    dmax = torch.empty(n, dtype=x.dtype, device=x.device)
    buf = torch.empty(min(cs, n) * n, dtype=x.dtype, device=x.device)  # one score block, reused
    for a in range(0, n, cs):
        s = torch.mm(x[a : a + cs], x.T, out=buf[: min(cs, n - a) * n].view(-1, n))
        dmax[a : a + cs] = 2 - 2 * s.amin(1)
        nbr[a : a + cs] = topk_rows(s, k)[1]
        del s
    return nbr, dmax.clamp_min(torch.finfo(x.dtype).tiny)


def _reciprocal(nbr: torch.Tensor, k: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R(i, k) for rows i: candidates N(i, k) (c x k+1) and the mask of those that have i in N(j, k)."""
    f = nbr[rows, : k + 1]
    back = nbr[f, : k + 1]  # (c, k+1, k+1)
    return f, (back == rows[:, None, None]).any(-1)


def _expanded_sets(nbr: torch.Tensor, st: RerankSettings, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R*(i, k1) for rows i as (c x L) member indices and a mask of distinct members."""
    n = nbr.shape[0]
    f, fm = _reciprocal(nbr, st.k1, rows)  # (c, K1)
    kh = st.k_half
    c, K1 = f.shape
    hf, hm = _reciprocal(nbr, kh, f.reshape(-1))  # R(cand, k1/2): (c*K1, Kh)
    hf, hm = hf.view(c, K1, -1), hm.view(c, K1, -1)
    # |R(cand, k/2) ∩ R(i, k)|: members of the candidate's set that are reciprocal members of i's set
    member = ((hf[..., None] == f[:, None, None, :]) & fm[:, None, None, :]).any(-1) & hm
    inter = member.sum(-1)
    accept = fm & (3 * inter > 2 * hm.sum(-1))  # strictly more than 2/3, in integers
    cand = torch.cat([torch.where(fm, f, n), torch.where(accept[..., None] & hm, hf, n).view(c, -1)], 1)
    cand = torch.sort(cand, dim=1).values
    first = torch.ones_like(cand, dtype=torch.bool)
    first[:, 1:] = cand[:, 1:] != cand[:, :-1]
    keep = first & (cand < n)
    return cand, keep


def _v_rows(x: torch.Tensor, dmax: torch.Tensor, nbr: torch.Tensor, st: RerankSettings, rows: torch.Tensor,
            buf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of V (before query expansion) as padded (c x L) columns (pad = N) and values (pad = 0).

    ``buf``: optional flat float tensor reused for the gathered member features (c x L x d), so that
    the largest block of this stage is not allocated afresh for every chunk.
    """
    n = x.shape[0]
    cand, keep = _expanded_sets(nbr, st, rows)
    safe = torch.where(keep, cand, 0)
    if buf is not None and buf.numel() >= safe.numel() * x.shape[1]:
        members = torch.index_select(x, 0, safe.view(-1), out=buf[: safe.numel() * x.shape[1]].view(-1, x.shape[1]))
        members = members.view(*safe.shape, x.shape[1])
    else:
        members = x[safe]
    cos = torch.einsum("cd,cld->cl", x[rows], members)
    del members
    dn = (2 - 2 * cos) / dmax[rows][:, None]
    w = torch.where(keep, torch.exp(-dn), 0)
    w = w / w.sum(1, keepdim=True)
    cols, order = torch.sort(torch.where(keep, cand, n), dim=1)  # members first, padding (N) last
    return cols, w.gather(1, order)


def _merge_rows(cols: torch.Tensor, vals: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the values of equal columns within each row of padded (c x L) rows; pad column = n."""
    cols, perm = torch.sort(cols, dim=1)
    vals = vals.gather(1, perm)
    c, L = cols.shape
    new = torch.ones_like(cols, dtype=torch.bool)
    new[:, 1:] = cols[:, 1:] != cols[:, :-1]
    seg = torch.cumsum(new, 1) - 1  # segment id within the row
    out_v = torch.zeros(c, L, dtype=vals.dtype, device=vals.device).scatter_add_(1, seg, vals)
    out_c = torch.full((c, L), n, dtype=cols.dtype, device=cols.device).scatter_(1, seg, cols)
    return out_c, out_v


class _SparseV:
    """V (after query expansion) of any rows, computed on demand from the padded V rows of every sample.

    Holds V's rows padded to the widest |R*(i)| (int32 columns, float32 values: 8 bytes per slot), the
    k2 nearest of every sample (int64) and d's row maxima; the full kNN graph is dropped once V is built.
    """

    def __init__(self, x: torch.Tensor, st: RerankSettings, memory_budget_mb: float):
        self.n = n = x.shape[0]
        self.st = st
        budget = int(memory_budget_mb * 2**20) // 4  # each stage's working memory
        k = max(st.k1, st.k2 - 1) + 1
        nbr, dmax = knn_graph(x, k, memory_budget_mb=memory_budget_mb / 4)
        cs = max(1, budget // _set_row_bytes(st, n, x.shape[1]))
        idx = torch.int32 if n < 2**31 - 1 else torch.int64
        cols, vals = [], []
        L = min(st.k1 + 1, n) * (1 + min(st.k_half + 1, n))
        buf = torch.empty(min(cs, n) * L * x.shape[1], dtype=x.dtype, device=x.device)
        for a in range(0, n, cs):
            rows = torch.arange(a, min(n, a + cs), device=x.device)
            c, v = _v_rows(x, dmax, nbr, st, rows, buf)
            # members are sorted, padding (N) last: keep this chunk's used columns only, int32 indices
            w = int((c < n).sum(1).max()) if c.numel() else 0
            cols.append(c[:, :w].to(idx))
            vals.append(v[:, :w].clone())
            del c, v
        del buf
        width = max((c.shape[1] for c in cols), default=0)
        self.cols = torch.empty(n, width, dtype=idx, device=x.device)
        self.vals = torch.empty(n, width, dtype=x.dtype, device=x.device)
        a = 0
        for i in range(len(cols)):  # assemble, padding each chunk to the widest row (column N, value 0)
            c, v = cols[i], vals[i]
            cols[i] = vals[i] = None  # type: ignore[call-overload] - freed as soon as used (peak memory)
            b, w = a + c.shape[0], c.shape[1]
            self.cols[a:b, :w], self.vals[a:b, :w] = c, v
            self.cols[a:b, w:], self.vals[a:b, w:] = n, 0
            a = b
        c = v = None  # type: ignore[assignment] - freed before the next stage (peak memory)
        self.nbr = nbr[:, : st.k2].contiguous()  # query expansion needs only the k2 nearest
        self.dmax = dmax

    def rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query-expanded V rows (padded columns, values)."""
        if self.st.k2 == 1:
            return self.cols[rows], self.vals[rows]
        t = self.nbr[rows, : self.st.k2]  # the k2 nearest, self included
        c = self.cols[t].reshape(rows.numel(), -1).long()
        v = self.vals[t].reshape(rows.numel(), -1) / self.st.k2
        return _merge_rows(c, v, self.n)

    def row_bytes(self) -> int:
        """Working memory of one query-expanded row from :meth:`rows` (an underestimate kept for the query
        chunks, whose size changes float rounding; :meth:`merge_bytes` is the measured one)."""
        return max(1, self.cols.shape[1] * max(1, self.st.k2) * 40)

    def merge_bytes(self) -> int:
        """Peak working memory of one query-expanded row, including :class:`_ColumnIndex`'s placement."""
        return max(1, self.cols.shape[1] * max(1, self.st.k2) * 80)


class _ColumnIndex:
    """The gallery rows' query-expanded V, by column: for column j, the gallery rows with V[g, j] > 0.

    Column j's entries are ``rows[start[j] : start[j] + count[j]]`` (gallery rows, ascending, int32) and
    ``vals[...]`` (8 bytes per entry). Built by a counting sort in two passes over the gallery (one
    counts, one places), so that besides the result only one chunk of rows exists at a time.
    """

    def __init__(self, sv: _SparseV, g_rows: torch.Tensor, chunk: int):
        n, G, dev = sv.n, g_rows.numel(), g_rows.device
        count = torch.zeros(n, dtype=torch.int64, device=dev)
        for a in range(0, G, chunk):
            c = sv.rows(g_rows[a : a + chunk])[0]
            count += torch.bincount(c[c < n].long(), minlength=n)
            del c
        self.count = count
        self.start = torch.cumsum(count, 0) - count
        nnz = int(count.sum())
        self.rows = torch.empty(nnz, dtype=torch.int32, device=dev)
        self.vals = torch.empty(nnz, dtype=sv.vals.dtype, device=dev)
        fill = self.start.clone()  # next free slot of each column
        for a in range(0, G, chunk):
            r = g_rows[a : a + chunk]
            c, v = sv.rows(r)
            keep = c < n
            loc = torch.arange(a, a + r.numel(), device=dev, dtype=torch.int32)[:, None].expand_as(c)[keep]
            vv = v[keep]
            cc, order = torch.sort(c[keep].long(), stable=True)  # by column; within a column by gallery row
            del c, v, keep
            k = torch.bincount(cc, minlength=n)
            first = torch.cumsum(k, 0) - k  # where each column's run starts in cc
            pos = fill[cc] + (torch.arange(cc.numel(), device=dev) - first[cc])
            self.rows[pos] = loc[order]
            self.vals[pos] = vv[order]
            fill += k
            del loc, vv, cc, order, pos


def _jaccard_min_sum(qc: torch.Tensor, qv: torch.Tensor, ci: _ColumnIndex, n: int, G: int,
                     max_pairs: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_j min(V_q,j, V_g,j) for each query row (padded cols/vals) and every gallery row: (c x G).

    Works through (query entry, gallery entry) pairs in pieces of at most ``max_pairs`` (about 40 bytes
    each); the pieces are added in the same order whatever their size.
    """
    c = qc.shape[0]
    if out is None:
        out = torch.zeros(c * G, dtype=qv.dtype, device=qv.device)
    else:  # a reused buffer of at least c * G elements
        out = out.view(-1)[: c * G].zero_()
    keep = qc < n
    qi = torch.arange(c, device=qc.device)[:, None].expand_as(qc)[keep]
    qj, qval = qc[keep], qv[keep]
    del keep
    cnt = ci.count[qj]
    ends = torch.cumsum(cnt, 0)
    a = 0
    while a < qj.numel():  # pieces of at most max_pairs (query entry, gallery entry) pairs
        base = int(ends[a - 1]) if a else 0
        b = max(a + 1, int(torch.searchsorted(ends, base + max_pairs, right=True)))
        b = min(b, qj.numel())
        k = cnt[a:b]
        rep = torch.repeat_interleave(torch.arange(a, b, device=qc.device), k)
        if rep.numel():
            pos = torch.arange(rep.numel(), device=qc.device)
            pos -= (torch.cumsum(k, 0) - k).repeat_interleave(k)  # offset within the column's run
            pos += ci.start[qj[rep]]
            m = torch.minimum(qval[rep], ci.vals[pos])
            dst = qi[rep].mul_(G)
            dst += ci.rows[pos]
            del pos
            out.index_add_(0, dst, m)
            del dst, m
        del rep
        a = b
    return out.view(c, G)


@torch.no_grad()
def rerank_chunks(
    query_feats: torch.Tensor, gallery_feats: torch.Tensor, settings: RerankSettings = RerankSettings(), *,
    chunk_size: int | None = None, memory_budget_mb: float = 1024,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Sparse form: yield (a, b, final distances of queries a..b-1 to the whole gallery), float32.

    Memory (see :func:`sparse_peak_bytes`): one L2-normalised float32 copy of the features, V's padded
    rows, the gallery's V by column (all linear in N) and one stage's working memory, at most about a
    quarter of ``memory_budget_mb`` (kNN score blocks, gathered member features, one (chunk x G) block of
    distances); nothing of size N² exists. Features are L2-normalised here, on their device.
    """
    st = settings
    x, nq = _normalised(query_feats, gallery_feats)
    n = x.shape[0]
    q, g = x[:nq], x[nq:]
    G = n - nq
    sv = _SparseV(x, st, memory_budget_mb)
    budget = int(memory_budget_mb * 2**20) // 4  # each stage's working memory
    ci = _ColumnIndex(sv, torch.arange(nq, n, device=x.device), max(1, budget // sv.merge_bytes()))
    # per query row: the min-sums, Jaccard, cosine and final distances over the gallery
    cs = int(chunk_size) if chunk_size else max(1, min(budget // max(1, G * 16), budget // sv.row_bytes()))
    max_pairs = max(1 << 16, budget // 192)  # pieces of about 40 bytes per pair: a sixteenth of the budget
    # two (chunk x G) blocks reused from chunk to chunk (min-sums, then d̂) and the yielded one
    work = torch.empty(2, min(cs, nq) * G, dtype=x.dtype, device=x.device)
    for a in range(0, nq, cs):
        b = min(nq, a + cs)
        D = torch.empty(b - a, G, dtype=x.dtype, device=x.device)  # first: the same hole every chunk
        qc, qv = sv.rows(torch.arange(a, b, device=x.device))
        ms = _jaccard_min_sum(qc, qv, ci, n, G, max_pairs, out=work[0])
        del qc, qv
        # d_J = 1 - ms / (2 - ms) and d* = (1 - λ) d_J + λ d̂, in place
        D.copy_(ms).neg_().add_(2)  # 2 - ms
        torch.div(ms, D, out=D)
        D.neg_().add_(1).mul_(1 - st.lam)
        dn = torch.mm(q[a:b], g.T, out=work[1, : (b - a) * G].view(b - a, G))
        dn.mul_(-2).add_(2).div_(sv.dmax[a:b, None])  # d̂ = (2 - 2 cos) / max_row(d)
        D.add_(dn.mul_(st.lam))
        del ms, dn
        yield a, b, D
        del D


@torch.no_grad()
def rerank_dense(query_feats: torch.Tensor, gallery_feats: torch.Tensor, settings: RerankSettings = RerankSettings()
                 ) -> torch.Tensor:
    """Exact form: the full (N x N) distances and V; returns the (nq x G) final distances.

    Peak memory about :func:`dense_peak_bytes` (8 N² + 4 nq G bytes and O(N) terms); the neighbour sets
    are the same code as the sparse form, everything else (distances, V, query expansion, Jaccard sums)
    is dense. Intermediates are freed or overwritten as soon as they are used up.
    """
    st = settings
    x, nq = _normalised(query_feats, gallery_feats)
    n = x.shape[0]
    S = x @ x.T
    del x
    K = min(n, max(st.k1, st.k2 - 1) + 1)
    # N(i, K-1): by d (= descending cosine), then by index; topk_rows gives a stable sort's first K columns
    nbr = torch.empty(n, K, dtype=torch.int64, device=S.device)
    cs = _rows_per_chunk(n, 16, _SCRATCH)
    for a in range(0, n, cs):
        nbr[a : a + cs] = topk_rows(S[a : a + cs], K)[1]
    dn = S.mul_(-2).add_(2)  # d = 2 - 2 cos, in place: S is used up
    del S
    dn.div_(dn.amax(1, keepdim=True).clamp_min(torch.finfo(dn.dtype).tiny))  # d̂ = d / max_row(d)
    V = torch.zeros(n, n + 1, dtype=torch.float32, device=dn.device)  # last column: padding
    cs = max(1, min(n, _SCRATCH // _set_row_bytes(st, n, 0)))
    for a in range(0, n, cs):
        rows = torch.arange(a, min(n, a + cs), device=dn.device)
        cand, keep = _expanded_sets(nbr, st, rows)
        w = torch.where(keep, torch.exp(-dn[rows[:, None], torch.where(keep, cand, 0)]), 0)
        V[rows[:, None], torch.where(keep, cand, n)] = w / w.sum(1, keepdim=True)
    d_qg = dn[:nq, nq:].clone()  # the only part of d̂ still needed
    V = V[:, :n]
    if st.k2 > 1:  # local query expansion, a block of rows at a time, into d̂'s storage (used up)
        Vx = dn
        cs = max(1, _SCRATCH // (4 * n * (st.k2 + 1)))
        for a in range(0, n, cs):
            Vx[a : a + cs] = V[nbr[a : a + cs, : st.k2]].mean(1)
        V = Vx
    del dn
    out = torch.empty(nq, n - nq, dtype=torch.float32, device=V.device)
    Vg = V[nq:]
    for i in range(nq):
        nz = torch.nonzero(V[i]).squeeze(1)  # min(a, 0) = 0: the other columns add nothing
        ms = torch.minimum(V[i, nz][None, :], Vg[:, nz]).sum(1)
        out[i] = (1 - st.lam) * (1 - ms / (2 - ms)) + st.lam * d_qg[i]
    return out


# Peak-memory models, bytes above the caller's features; the constants come from peak RSS of a fresh
# process per size (benchmarks/rerank_memory.py, 1 thread, with and without the MALLOC_* settings of the
# Makefile; docs/benchmarks.md).
_FIXED = 48 * 2**20  # what any evaluation adds on first use (torch kernels, allocator arenas): measured ~30 MiB
_DENSE_MARGIN = 1.5  # over the structural count: the measured peaks ran up to ~25 % above it, varying run to run


def dense_peak_bytes(nq: int, ng: int, dim: int = 0) -> int:
    """Estimated peak of :func:`rerank_dense` plus ranking, above the features (bytes), N = nq + ng:

    ``1.5 (8 N (N + 1) + 4 nq ng + 4 N dim) + 48 MiB + min(64 MiB, 40 KiB N)``. Structurally d̂ (N x N)
    and V (N x (N + 1)) exist together, then V's query expansion overwrites d̂ next to d̂'s query x
    gallery block (4 nq ng), plus the normalised features (4 N dim); 1.5 is the margin over that count
    (allocator slack), the last terms are the fixed-size working blocks.
    """
    n = nq + ng
    return (int(_DENSE_MARGIN * (8 * n * (n + 1) + 4 * nq * ng + 4 * n * dim)) + _FIXED
            + min(_SCRATCH, 40 * 1024 * n))


def dense_fits(nq: int, ng: int, memory_budget_mb: float, dim: int = 0) -> bool:
    """Whether the dense form's estimated peak (:func:`dense_peak_bytes`) fits the budget."""
    return dense_peak_bytes(nq, ng, dim) <= memory_budget_mb * 2**20


def sparse_peak_bytes(nq: int, ng: int, dim: int, memory_budget_mb: float,
                      settings: RerankSettings = RerankSettings()) -> int:
    """Estimated peak of :func:`rerank_chunks` plus ranking, above the features (bytes):

    ``N (4 dim + 8 w + 8 k2 + 28) + 8 e G + 0.55 B + 48 MiB`` with N = nq + G, B = ``memory_budget_mb``
    in bytes, w = 2 (k1 + 1) the typical padded width of V's rows (max |R*(i)|; at most
    (k1 + 1)(round(k1/2) + 2)) and e = 4 (k1 + 1) the typical nonzeros of a query-expanded gallery row
    (at most k2 w). Per sample: the normalised features, V (int32 column + float32 value per slot), the
    k2 nearest, d's row maxima and the column index's offsets; per gallery sample its V by column. Each
    stage sizes its chunks to B / 4; the measured working memory above the linear terms was at most
    0.5 B, hence 0.55 B. w and e depend on the data: on the clustered synthetic features of
    benchmarks/rerank_memory.py, w was 31-42 and e 31-73 at the default settings.
    """
    st = settings
    n, K1 = nq + ng, st.k1 + 1
    w, e = 2 * K1, 4 * K1
    return int(n * (4 * dim + 8 * w + 8 * st.k2 + 28) + 8 * e * ng + 0.55 * memory_budget_mb * 2**20) + _FIXED
