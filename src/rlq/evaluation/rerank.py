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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from rlq.errors import RlqError

__all__ = ["RerankSettings", "dense_fits", "knn_graph", "rerank_chunks", "rerank_dense", "topk_rows"]

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
    for a in range(0, n, cs):
        s = x[a : a + cs] @ x.T
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


def _v_rows(x: torch.Tensor, dmax: torch.Tensor, nbr: torch.Tensor, st: RerankSettings, rows: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of V (before query expansion) as padded (c x L) columns (pad = N) and values (pad = 0)."""
    n = x.shape[0]
    cand, keep = _expanded_sets(nbr, st, rows)
    safe = torch.where(keep, cand, 0)
    cos = torch.einsum("cd,cld->cl", x[rows], x[safe])
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
    """V (after query expansion) of any rows, computed on demand from the padded V rows of every sample."""

    def __init__(self, x: torch.Tensor, st: RerankSettings, memory_budget_mb: float):
        self.n = n = x.shape[0]
        self.st = st
        budget = int(memory_budget_mb * 2**20) // 4  # each stage's working memory
        k = max(st.k1, st.k2 - 1) + 1
        self.nbr, dmax = knn_graph(x, k, memory_budget_mb=memory_budget_mb / 4)
        K1 = min(st.k1 + 1, n)
        L = K1 + K1 * min(st.k_half + 1, n)
        d = x.shape[1]
        # per row: the gathered member features (L x d) plus the set arithmetic (K1 x Kh x K1 booleans)
        cs = max(1, budget // max(1, L * (d * x.element_size() + 64) + K1 * K1 * (st.k_half + 1) * 2))
        cols, vals = [], []
        for a in range(0, n, cs):
            rows = torch.arange(a, min(n, a + cs), device=x.device)
            c, v = _v_rows(x, dmax, self.nbr, st, rows)
            cols.append(c)
            vals.append(v)
        # keep only the columns some row uses (members are sorted, padding = N last); int32 indices
        width = max((int((c < n).sum(1).max()) for c in cols), default=0)
        self.cols = torch.cat([c[:, :width] for c in cols]).to(torch.int32 if n < 2**31 - 1 else torch.int64)
        self.vals = torch.cat([v[:, :width] for v in vals])
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
        """Working memory of one query-expanded row from :meth:`rows`."""
        return max(1, self.cols.shape[1] * max(1, self.st.k2) * 40)


class _ColumnIndex:
    """The gallery rows' query-expanded V, by column: for column j, the gallery rows with V[g, j] > 0."""

    def __init__(self, sv: _SparseV, g_rows: torch.Tensor, chunk: int):
        rr, cc, vv = [], [], []
        for a in range(0, g_rows.numel(), chunk):
            r = g_rows[a : a + chunk]
            c, v = sv.rows(r)
            keep = c < sv.n
            loc = torch.arange(a, a + r.numel(), device=c.device, dtype=torch.int32)[:, None].expand_as(c)
            rr.append(loc[keep])
            cc.append(c[keep].to(torch.int32))
            vv.append(v[keep])
        dev = g_rows.device
        cols = torch.cat(cc) if cc else torch.zeros(0, dtype=torch.int32, device=dev)
        order = torch.sort(cols, stable=True).indices
        del cc
        self.rows = torch.cat(rr)[order] if rr else torch.zeros(0, dtype=torch.int32, device=dev)
        self.vals = torch.cat(vv)[order] if vv else torch.zeros(0, device=dev)
        del rr, vv, order
        self.count = torch.bincount(cols.long(), minlength=sv.n)
        self.start = torch.cumsum(self.count, 0) - self.count


def _jaccard_min_sum(qc: torch.Tensor, qv: torch.Tensor, ci: _ColumnIndex, n: int, G: int,
                     max_pairs: int) -> torch.Tensor:
    """Σ_j min(V_q,j, V_g,j) for each query row (padded cols/vals) and every gallery row: (c x G)."""
    c = qc.shape[0]
    out = torch.zeros(c * G, dtype=qv.dtype, device=qv.device)
    keep = qc < n
    qi = torch.arange(c, device=qc.device)[:, None].expand_as(qc)[keep]
    qj, qval = qc[keep], qv[keep]
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
            off = torch.arange(rep.numel(), device=qc.device) - (torch.cumsum(k, 0) - k).repeat_interleave(k)
            pos = ci.start[qj[rep]] + off
            m = torch.minimum(qval[rep], ci.vals[pos])
            out.index_add_(0, qi[rep] * G + ci.rows[pos].long(), m)
        a = b
    return out.view(c, G)


@torch.no_grad()
def rerank_chunks(
    query_feats: torch.Tensor, gallery_feats: torch.Tensor, settings: RerankSettings = RerankSettings(), *,
    chunk_size: int | None = None, memory_budget_mb: float = 1024,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Sparse form: yield (a, b, final distances of queries a..b-1 to the whole gallery), float32.

    Memory: the kNN graph, V's padded rows (N x |R*|), the gallery's V by column and one (chunk x G)
    block; nothing of size N² exists. Features are L2-normalised here, on their device.
    """
    st = settings
    q = F.normalize(query_feats.float(), dim=1)
    g = F.normalize(gallery_feats.float(), dim=1)
    nq, G = q.shape[0], g.shape[0]
    x = torch.cat([q, g])
    n = x.shape[0]
    sv = _SparseV(x, st, memory_budget_mb)
    budget = int(memory_budget_mb * 2**20) // 4  # each stage's working memory
    ci = _ColumnIndex(sv, torch.arange(nq, n, device=x.device), max(1, budget // sv.row_bytes()))
    # per query row: the min-sums, Jaccard, cosine and final distances over the gallery
    cs = int(chunk_size) if chunk_size else max(1, min(budget // max(1, G * 16), budget // sv.row_bytes()))
    max_pairs = max(1 << 16, budget // 48)
    for a in range(0, nq, cs):
        b = min(nq, a + cs)
        rows = torch.arange(a, b, device=x.device)
        qc, qv = sv.rows(rows)
        ms = _jaccard_min_sum(qc, qv, ci, n, G, max_pairs)
        jd = 1 - ms / (2 - ms)
        dn = (2 - 2 * (q[a:b] @ g.T)) / sv.dmax[a:b, None]
        yield a, b, (1 - st.lam) * jd + st.lam * dn


@torch.no_grad()
def rerank_dense(query_feats: torch.Tensor, gallery_feats: torch.Tensor, settings: RerankSettings = RerankSettings()
                 ) -> torch.Tensor:
    """Exact form: the full (N x N) distances, neighbour order and V; returns the (nq x G) final distances.

    Needs about 20 N² bytes (see :func:`dense_fits`); the neighbour sets are the same code as the sparse
    form, everything else (distances, V, query expansion, Jaccard sums) is dense.
    """
    st = settings
    q = F.normalize(query_feats.float(), dim=1)
    g = F.normalize(gallery_feats.float(), dim=1)
    nq = q.shape[0]
    x = torch.cat([q, g])
    n = x.shape[0]
    S = x @ x.T
    dist = 2 - 2 * S
    dn = dist / dist.amax(1, keepdim=True).clamp_min(torch.finfo(dist.dtype).tiny)
    rank = torch.sort(S, dim=1, descending=True, stable=True).indices  # by d, then by index
    del S
    K = min(n, max(st.k1, st.k2 - 1) + 1)
    nbr = rank[:, :K].contiguous()
    V = torch.zeros(n, n + 1, dtype=torch.float32, device=x.device)  # last column: padding
    cs = max(1, (1 << 26) // max(1, n))
    for a in range(0, n, cs):
        rows = torch.arange(a, min(n, a + cs), device=x.device)
        cand, keep = _expanded_sets(nbr, st, rows)
        w = torch.where(keep, torch.exp(-dn[rows[:, None], torch.where(keep, cand, 0)]), 0)
        V[rows[:, None], torch.where(keep, cand, n)] = w / w.sum(1, keepdim=True)
    V = V[:, :n]
    if st.k2 > 1:
        V = torch.cat([V[rank[a : a + cs, : st.k2]].mean(1) for a in range(0, n, cs)])
    out = torch.empty(nq, n - nq, dtype=torch.float32, device=x.device)
    Vg = V[nq:]
    for i in range(nq):
        nz = torch.nonzero(V[i]).squeeze(1)  # min(a, 0) = 0: the other columns add nothing
        ms = torch.minimum(V[i, nz][None, :], Vg[:, nz]).sum(1)
        out[i] = (1 - st.lam) * (1 - ms / (2 - ms)) + st.lam * dn[i, nq:]
    return out


def dense_fits(nq: int, ng: int, memory_budget_mb: float) -> bool:
    """Whether the dense form's (N x N) float32 matrices (distances, order, V) fit the budget."""
    n = nq + ng
    return n * n * (4 + 4 + 8 + 4) <= memory_budget_mb * 2**20
