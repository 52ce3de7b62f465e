"""k-reciprocal re-ranking: a slow loop written from the paper's equations, the dense form and the sparse form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlq.errors import RlqError
from rlq.evaluation.ranking import evaluate, evaluate_features
from rlq.evaluation.rerank import (
    RerankSettings,
    dense_fits,
    dense_peak_bytes,
    knn_graph,
    rerank_chunks,
    rerank_dense,
    sparse_peak_bytes,
)


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
    assert dense_fits(100, 100, 64) and not dense_fits(10_000, 60_000, 1024)


def test_memory_estimates_follow_their_formulas():
    """Hand-computed cases of the peak-memory models (rerank.py docstrings; constants from
    benchmarks/rerank_memory.py)."""
    # dense, N = 4,000 (1,000 x 3,000), 256-d: 1.5 (8*4000*4001 + 4*1000*3000 + 4*4000*256) + 48 MiB + 64 MiB
    #   = 1.5 * 144,128,000 + 50,331,648 + 67,108,864 = 333,632,512 bytes = 318.18 MiB
    assert dense_peak_bytes(1000, 3000, 256) == 333_632_512
    assert dense_fits(1000, 3000, 318.2, 256) and not dense_fits(1000, 3000, 318.1, 256)
    # small N: the working blocks are 40 KiB per sample, not 64 MiB (N = 200: 8,192,000 bytes)
    assert dense_peak_bytes(100, 100) == int(1.5 * (8 * 200 * 201 + 4 * 100 * 100)) + 3 * 2**24 + 8_192_000
    # sparse, N = 7,000 (1,000 x 6,000), 128-d, 100 MiB, k1 = 20 (w = 42, e = 84), k2 = 6:
    #   7000 * (512 + 336 + 48 + 28) + 8 * 84 * 6000 + 0.55 * 100 MiB + 48 MiB = 118,503,328 bytes
    assert sparse_peak_bytes(1000, 6000, 128, 100) == 118_503_328


def test_auto_chooses_sparse_where_dense_would_exceed_the_budget(caplog):
    import logging

    qf, gf, qp, gp = _problem(12, nq=100, ng=1500, dim=16, ids=80)
    qc, gc = np.zeros(len(qf), int), np.ones(len(gf), int)
    # dense needs ~141 MiB, sparse ~116 MiB at a 120 MiB budget (the formulas above)
    assert dense_peak_bytes(100, 1500, 16) > 120 * 2**20 >= sparse_peak_bytes(100, 1500, 16, 120)
    assert dense_fits(100, 1500, 150, 16)
    with caplog.at_level(logging.WARNING, logger="rlq.evaluation.ranking"):
        sp = evaluate_features(qf, gf, qp, gp, qc, gc, rerank=RerankSettings(), memory_budget_mb=120)
        de = evaluate_features(qf, gf, qp, gp, qc, gc, rerank=RerankSettings(), memory_budget_mb=150)
    assert sp["rerank_form"] == "sparse" and de["rerank_form"] == "dense"
    assert "needs about" not in caplog.text  # each form fits its budget: no warning
    np.testing.assert_allclose(sp["ap"], de["ap"], atol=1e-6)
    np.testing.assert_array_equal(sp["first_rank"], de["first_rank"])


def test_a_budget_even_the_sparse_form_exceeds_is_reported(caplog):
    import logging

    qf, gf, qp, gp = _problem(13, nq=20, ng=90)
    qc, gc = np.zeros(len(qf), int), np.ones(len(gf), int)
    with caplog.at_level(logging.WARNING, logger="rlq.evaluation.ranking"):
        r = evaluate_features(qf, gf, qp, gp, qc, gc, rerank=RerankSettings(), memory_budget_mb=4)
    assert r["rerank_form"] == "sparse"
    assert "rerank_form='sparse' needs about" in caplog.text and "memory_budget_mb=4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rlq.evaluation.ranking"):
        evaluate_features(qf, gf, qp, gp, qc, gc, rerank=RerankSettings(), rerank_form="dense", memory_budget_mb=4)
    assert "rerank_form='dense' needs about" in caplog.text


# ---------------------------------------------------------------------------------------------------
# the re-ranked protocol evaluation, search and CLI


def _samples(split, pids, cams, clothes):
    from rlq.data.records import Sample

    return [Sample(f"/x/{split}/{i}.jpg", int(p), int(c), int(k), f"{split}/{i}") for i, (p, c, k) in enumerate(zip(pids, cams, clothes))]


def _ltcc_features(seed=21, nq=24, ng=120, ids=12):
    qf, gf, qp, gp = _problem(seed, nq=nq, ng=ng, dim=10, ids=ids)
    rng = np.random.default_rng(seed)
    qs = _samples("query", qp, rng.integers(0, 3, nq), qp * 2 + rng.integers(0, 2, nq))
    gs = _samples("gallery", gp, rng.integers(0, 3, ng), gp * 2 + rng.integers(0, 2, ng))
    return qf, gf, qs, gs


def test_protocol_evaluation_with_reranking_equals_ranking_the_dense_distances():
    from rlq.data.datasets import standard_protocols
    from rlq.evaluation.protocols import evaluate_protocol, format_table, summarize

    qf, gf, qs, gs = _ltcc_features()
    proto = standard_protocols("ltcc")["test"]
    st = RerankSettings(8, 3, 0.3)
    res = evaluate_protocol({"query": (qf, qs), "gallery": (gf, gs)}, proto, rerank=st)
    D = rerank_dense(torch.from_numpy(qf), torch.from_numpy(gf), st).numpy()

    def lab(ss, a):
        return [getattr(s, a) for s in ss]

    for r in res.values():
        ref = evaluate(D, lab(qs, "pid"), lab(gs, "pid"), lab(qs, "camid"), lab(gs, "camid"), lab(qs, "clothes_id"),
                       lab(gs, "clothes_id"), mode=r["mode"])
        np.testing.assert_allclose(r["ap"], ref["ap"], atol=1e-6, equal_nan=True)
        assert r["rerank"] == st.as_dict()
    assert all(s["rerank"]["k1"] == 8 for s in summarize(res).values())
    assert "re-ranked: k-reciprocal, k1=8" in format_table(res)
    plain = evaluate_protocol({"query": (qf, qs), "gallery": (gf, gs)}, proto)
    assert "re-ranked" not in format_table(plain) and "rerank" not in summarize(plain)["cc"]


def test_gallery_search_with_reranking_returns_the_smallest_reranked_distances():
    from rlq.deploy.search import GalleryIndex

    qf, gf, _, _ = _problem(31, nq=7, ng=50)
    gfn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    index = GalleryIndex.build(gfn, [f"g{i}" for i in range(len(gf))])
    st = RerankSettings(6, 2, 0.3)
    scores, idx = index.search(qf / np.linalg.norm(qf, axis=1, keepdims=True), 5, rerank=st)
    D = rerank_dense(torch.from_numpy(qf), torch.from_numpy(gfn), st).numpy()
    for i in range(len(qf)):
        order = np.argsort(D[i], kind="stable")[:5]
        np.testing.assert_array_equal(idx[i], order)
        np.testing.assert_allclose(scores[i], D[i, order], atol=2e-5)
    assert (np.diff(scores, axis=1) >= 0).all()  # distances: ascending


def test_cli_eval_features_file_with_rerank_is_labelled(tmp_path):
    import json

    from typer.testing import CliRunner

    from rlq.cli import app
    from rlq.evaluation.protocols import save_features

    qf, gf, qs, gs = _ltcc_features()
    path = tmp_path / "feats.npz"
    save_features(path, {"query": qf, "gallery": gf}, {"query": qs, "gallery": gs})
    out = tmp_path / "res.json"
    r = CliRunner().invoke(app, ["eval", str(path), "--dataset", "ltcc", "--rerank", "--rerank-k1", "8",
                                 "--rerank-k2", "3", "--resamples", "200", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "re-ranked: k-reciprocal, k1=8, k2=3, lambda=0.3" in r.output
    res = json.loads(out.read_text())["results"]
    assert res["cc"]["rerank"] == {"method": "k-reciprocal", "k1": 8, "k2": 3, "lambda": 0.3}
    r2 = CliRunner().invoke(app, ["eval", str(path), "--dataset", "ltcc", "--resamples", "200"])
    assert r2.exit_code == 0 and "re-ranked" not in r2.output
