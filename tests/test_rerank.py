"""k-reciprocal re-ranking: a slow loop written from the paper's equations, the dense form and the sparse form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlq.errors import RlqError
from rlq.evaluation.ranking import evaluate, evaluate_features
from rlq.evaluation.rerank import RerankSettings, dense_fits, knn_graph, rerank_chunks, rerank_dense


def slow_rerank(qf: np.ndarray, gf: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al. 2017, eqs. 1-12, one sample at a time with Python sets (float64)."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n, nq = len(x), len(qf)
    d = np.array([[np.sum((x[i] - x[j]) ** 2) for j in range(n)] for i in range(n)])
    d = d / d.max(axis=1, keepdims=True)  # per-row normalisation of the released implementation

    def N(i, k):  # the k+1 nearest of i, itself included; equal distances by index
        return [int(j) for j in sorted(range(n), key=lambda j: (d[i, j], j))[: k + 1]]

    def R(i, k):  # eq. 4: k-reciprocal nearest neighbours
        return {j for j in N(i, k) if i in N(j, k)}

    V = np.zeros((n, n))
    for i in range(n):
        r = R(i, k1)
        star = set(r)
        for c in r:  # eq. 6: add R(c, k/2) when more than 2/3 of it lies in R(i, k)
            rc = R(c, int(round(k1 / 2)))
            if len(rc & r) > 2 / 3 * len(rc):
                star |= rc
        for j in star:  # eq. 7, with the weights normalised to sum 1
            V[i, j] = np.exp(-d[i, j])
        V[i] /= V[i].sum()
    if k2 > 1:  # eq. 11: local query expansion over the k2 nearest
        V = np.array([np.mean([V[t] for t in N(i, k2 - 1)], axis=0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for gi in range(nq, n):
            jac = 1 - np.minimum(V[i], V[gi]).sum() / np.maximum(V[i], V[gi]).sum()  # eq. 10
            out[i, gi - nq] = (1 - lam) * jac + lam * d[i, gi]  # eq. 12
    return out


def _problem(seed: int, nq: int = 9, ng: int = 31, dim: int = 6, ids: int = 5):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids, dim))
    qp, gp = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    qf = (centers[qp] + 0.7 * rng.standard_normal((nq, dim))).astype(np.float32)
    gf = (centers[gp] + 0.7 * rng.standard_normal((ng, dim))).astype(np.float32)
    return qf, gf, qp, gp


def _sparse(qf, gf, st, **kw) -> np.ndarray:
    parts = [(a, b, D) for a, b, D in rerank_chunks(torch.from_numpy(qf), torch.from_numpy(gf), st, **kw)]
    assert [p[0] for p in parts] == sorted(p[0] for p in parts) and parts[-1][1] == len(qf)
    return torch.cat([p[2] for p in parts]).numpy()


@pytest.mark.parametrize("seed,k1,k2,lam", [(0, 20, 6, 0.3), (1, 6, 3, 0.3), (2, 5, 1, 0.5), (3, 9, 2, 0.0), (4, 4, 4, 1.0)])
def test_dense_and_sparse_equal_the_slow_reference(seed, k1, k2, lam):
    qf, gf, _, _ = _problem(seed)
    st = RerankSettings(k1, k2, lam)
    ref = slow_rerank(qf, gf, k1, k2, lam)
    dense = rerank_dense(torch.from_numpy(qf), torch.from_numpy(gf), st).numpy()
    np.testing.assert_allclose(dense, ref, atol=2e-5)
    np.testing.assert_allclose(_sparse(qf, gf, st), ref, atol=2e-5)
    np.testing.assert_allclose(_sparse(qf, gf, st, chunk_size=2, memory_budget_mb=0.01), ref, atol=2e-5)


def test_sparse_equals_dense_with_duplicates_and_more_samples():
    """Duplicated gallery rows (exact ties in the neighbour lists): both forms break ties by index."""
    rng = np.random.default_rng(11)
    qf, gf, qp, gp = _problem(11, nq=40, ng=260, dim=16, ids=25)
    dup = rng.choice(len(gf), 60, replace=False)
    gf[dup] = gf[rng.integers(0, len(gf), 60)]
    st = RerankSettings()
    dense = rerank_dense(torch.from_numpy(qf), torch.from_numpy(gf), st).numpy()
    sparse = _sparse(qf, gf, st, chunk_size=7, memory_budget_mb=0.05)
    np.testing.assert_allclose(sparse, dense, atol=2e-5)
    qc, gc = np.zeros(len(qf), int), np.ones(len(gf), int)
    a, b = evaluate(dense, qp, gp, qc, gc), evaluate(sparse, qp, gp, qc, gc)
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-6) and a["rank1"] == b["rank1"]


def test_reranking_helps_on_clustered_data_and_is_labelled():
    """On clustered features re-ranking should not be worse than plain cosine (a sanity check, not a claim)."""
    qf, gf, qp, gp = _problem(5, nq=60, ng=400, dim=12, ids=30)
    qc, gc = np.zeros(len(qf), int), np.ones(len(gf), int)
    plain = evaluate_features(qf, gf, qp, gp, qc, gc)
    rr = evaluate_features(qf, gf, qp, gp, qc, gc, rerank=RerankSettings())
    assert rr["rerank"] == {"method": "k-reciprocal", "k1": 20, "k2": 6, "lambda": 0.3}
    assert "rerank" not in plain
    assert rr["mAP"] >= plain["mAP"] - 0.02
    assert "re-ranking" in RerankSettings().label()


def test_lambda_one_keeps_the_original_order():
    """λ = 1 leaves d̂ = d / max_row(d): per query a positive scaling of 2 - 2 cos, so the ranking is cosine's."""
    qf, gf, qp, gp = _problem(6, nq=20, ng=90)
    qc, gc = np.zeros(len(qf), int), np.ones(len(gf), int)
    plain = evaluate_features(qf, gf, qp, gp, qc, gc)
    rr = evaluate_features(qf, gf, qp, gp, qc, gc, rerank=RerankSettings(20, 6, 1.0))
    np.testing.assert_array_equal(plain["first_rank"], rr["first_rank"])
    np.testing.assert_allclose(plain["ap"], rr["ap"], atol=1e-12)


def test_knn_graph_orders_by_distance_then_index():
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [1.0, 0.1]]), dim=1)
    nbr, dmax = knn_graph(x, 3, memory_budget_mb=1e-6)
    assert nbr[1].tolist() == [0, 1, 3]  # rows 0 and 1 are identical: the lower index comes first
    assert nbr[2].tolist()[0] == 2
    assert float(dmax[0]) == pytest.approx(2.0, abs=1e-6)  # the orthogonal row: 2 - 2 cos = 2


def test_settings_are_checked():
    with pytest.raises(RlqError, match="k1"):
        RerankSettings(0, 6, 0.3)
    with pytest.raises(RlqError, match="lambda"):
        RerankSettings(20, 6, 1.5)
    assert dense_fits(100, 100, 1) and not dense_fits(10_000, 60_000, 1024)
