"""rlq.evaluation.ranking against a slow, obviously-correct reference (docs/datasets.md §2)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlq.errors import RlqError
from rlq.evaluation import ranking
from rlq.evaluation.ranking import chunk_size_for, evaluate, evaluate_features

MODES = ("general", "cc", "sc")


# ------------------------------------------------------------------------------------------------
# reference: per query, stable argsort, delete junk, ranks of the good items, AP / CMC / INP


def reference(dist, qp, gp, qc, gc, qcl, gcl, mode, max_rank):
    dist = np.asarray(dist, dtype=np.float64)
    Q, G = dist.shape
    ap, inp, first, valid = np.full(Q, np.nan), np.full(Q, np.nan), np.zeros(Q, np.int64), np.zeros(Q, bool)
    cmc_sum = np.zeros(max_rank)
    for i in range(Q):
        order = np.argsort(dist[i], kind="stable")  # ties: ascending gallery index
        same = gp[order] == qp[i]
        cam = gc[order] == qc[i]
        if mode == "general":
            good, junk = same & ~cam, same & cam
        else:
            clo = gcl[order] == qcl[i]
            if mode == "cc":
                good, junk = same & ~cam & ~clo, same & (cam | clo)
            else:
                good, junk = same & ~cam & clo, same & (cam | ~clo)
        cleaned_good = good[~junk]
        r = np.flatnonzero(cleaned_good) + 1  # 1-based ranks in the cleaned list
        if len(r) == 0:
            continue
        valid[i] = True
        ap[i] = sum((k + 1) / rk for k, rk in enumerate(r)) / len(r)
        inp[i] = len(r) / r[-1]
        first[i] = r[0]
        cmc_sum += np.arange(1, max_rank + 1) >= r[0]
    nv = valid.sum()
    cmc = cmc_sum / nv if nv else np.full(max_rank, np.nan)
    return dict(ap=ap, inp=inp, first_rank=first, valid=valid, cmc=cmc,
                mAP=np.nanmean(ap) if nv else math.nan, nv=int(nv))


def assert_same(res, ref):
    assert np.array_equal(res["valid"], ref["valid"])
    np.testing.assert_allclose(res["ap"], ref["ap"], rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(res["inp"], ref["inp"], rtol=0, atol=1e-12, equal_nan=True)
    assert np.array_equal(res["first_rank"], ref["first_rank"])
    assert res["cmc"].dtype == np.float64 and res["cmc"].shape == ref["cmc"].shape
    np.testing.assert_allclose(res["cmc"], ref["cmc"], rtol=0, atol=1e-12, equal_nan=True)
    assert res["num_valid_queries"] == ref["nv"]
    if ref["nv"]:
        assert res["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
        assert res["rank1"] == pytest.approx(float(np.mean(ref["first_rank"][ref["valid"]] <= 1)), abs=1e-12)
        assert res["rank20"] == pytest.approx(float(np.mean(ref["first_rank"][ref["valid"]] <= 20)), abs=1e-12)
    else:
        assert math.isnan(res["mAP"]) and math.isnan(res["rank1"])


def random_problem(seed):
    """Small problems with many ties, missing identities, junk-only queries and tiny galleries."""
    rng = np.random.default_rng(seed)
    Q, G = int(rng.integers(1, 10)), int(rng.integers(1, 35))
    npid = int(rng.integers(1, 6))
    qp, gp = rng.integers(0, npid + 1, Q), rng.integers(0, npid, G)  # pid `npid` never in the gallery
    qc, gc = rng.integers(0, 3, Q), rng.integers(0, 3, G)
    qcl, gcl = rng.integers(0, 3, Q), rng.integers(0, 3, G)
    kind = seed % 3
    if kind == 0:  # quantised distances: ties everywhere
        dist = rng.integers(0, int(rng.integers(1, 6)), (Q, G)).astype(np.float64)
    elif kind == 1:  # continuous
        dist = rng.standard_normal((Q, G))
    else:  # duplicated gallery columns (duplicate images) on top of continuous values
        dist = rng.standard_normal((Q, G))
        src = rng.integers(0, G, G // 2 + 1)
        dst = rng.integers(0, G, G // 2 + 1)
        dist[:, dst] = dist[:, src]
    return dist, qp, gp, qc, gc, qcl, gcl


# ------------------------------------------------------------------------------------------------
# hand-computed case


def test_hand_computed_case():
    # Query: pid 1, cam 0, clothes 0. Gallery (index: pid, cam, clothes, distance):
    #   0: 1, 0, 0, 0.1   same pid + same cam  -> junk in every mode
    #   1: 2, 1, 0, 0.3
    #   2: 1, 1, 1, 0.3   good (general, cc)   tie with item 1: item 1 (smaller index) goes first
    #   3: 3, 1, 0, 0.2
    #   4: 1, 2, 0, 0.5   good (general, sc)
    #   5: 2, 2, 1, 0.6
    # Stable order: 0, 3, 1, 2, 4, 5. General: delete 0 -> [3, 1, 2, 4, 5]; good at ranks 3, 4:
    #   AP = (1/3 + 2/4) / 2 = 5/12, INP = 2/4, CMC = 0, 0, 1, 1, ... (padded to max_rank=8 > G=6).
    # CC: item 4 shares the clothes -> junk; [3, 1, 2, 5]: good at rank 3 -> AP = 1/3, INP = 1/3.
    # SC: item 2 wears other clothes -> junk; [3, 1, 4, 5]: good at rank 3 -> AP = 1/3.
    d = np.array([[0.1, 0.3, 0.3, 0.2, 0.5, 0.6]])
    qp, qc, qcl = [1], [0], [0]
    gp, gc, gcl = [1, 2, 1, 3, 1, 2], [0, 1, 1, 1, 2, 2], [0, 0, 1, 0, 0, 1]
    r = evaluate(d, qp, gp, qc, gc, qcl, gcl, mode="general", max_rank=8)
    assert r["mAP"] == pytest.approx(5 / 12, abs=1e-15)
    assert r["mINP"] == pytest.approx(0.5, abs=1e-15)
    assert r["cmc"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert (r["rank1"], r["rank5"]) == (0.0, 1.0)
    assert r["first_rank"].tolist() == [3]
    cc = evaluate(d, qp, gp, qc, gc, qcl, gcl, mode="cc", max_rank=8)
    assert cc["mAP"] == pytest.approx(1 / 3, abs=1e-15) and cc["mINP"] == pytest.approx(1 / 3, abs=1e-15)
    sc = evaluate(d, qp, gp, qc, gc, qcl, gcl, mode="sc", max_rank=4)
    assert sc["mAP"] == pytest.approx(1 / 3, abs=1e-15)
    assert sc["cmc"].tolist() == [0, 0, 1, 1]
    # Breaking the 0.3 tie the other way would give AP = (1/2 + 2/4) / 2 = 0.5: check we do not.
    assert r["ap"][0] != pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# random problems against the reference


@pytest.mark.parametrize("block", range(6))
def test_random_problems_match_reference(block):
    for seed in range(block * 60, (block + 1) * 60):
        dist, qp, gp, qc, gc, qcl, gcl = random_problem(seed)
        max_rank = int(np.random.default_rng(seed).integers(1, 60))  # often larger than the gallery
        cs = (1, 3, None)[seed % 3]
        res = evaluate(dist, qp, gp, qc, gc, qcl, gcl, max_rank=max_rank, modes=MODES, chunk_size=cs)
        for mode in MODES:
            assert_same(res[mode], reference(dist, qp, gp, qc, gc, qcl, gcl, mode, max_rank))
            assert res[mode]["num_queries"] == len(qp)
        # single-mode call agrees with the multi-mode pass
        one = evaluate(dist, qp, gp, qc, gc, qcl, gcl, mode="cc", max_rank=max_rank, chunk_size=2)
        np.testing.assert_array_equal(one["ap"], res["cc"]["ap"])


@pytest.mark.parametrize("seed", range(40))
def test_torch_inputs_and_float32(seed):
    dist, qp, gp, qc, gc, qcl, gcl = random_problem(seed)
    d32 = torch.from_numpy(dist.astype(np.float32))
    ref = reference(d32.numpy(), qp, gp, qc, gc, qcl, gcl, "general", 10)
    def t(a):
        return torch.from_numpy(np.asarray(a))

    res = evaluate(d32, t(qp), t(gp), t(qc), t(gc), max_rank=10, chunk_size=(seed % 4) + 1)
    assert_same(res, ref)
    # half precision distances are widened exactly
    res16 = evaluate(d32.half(), qp, gp, qc, gc, max_rank=10)
    assert_same(res16, reference(d32.half().float().numpy(), qp, gp, qc, gc, qcl, gcl, "general", 10))


def test_ties_inside_same_pid_set_use_fast_path(monkeypatch):
    """Ties only among a query's own same-pid items are resolved from the same-pid distances alone."""
    def boom(*a, **k):
        raise AssertionError("tied-row path used")

    monkeypatch.setattr(ranking, "_before_tied", boom)
    for seed in range(60):
        rng = np.random.default_rng(1000 + seed)
        Q, G = 6, 40
        qp, gp = rng.integers(0, 4, Q), rng.integers(0, 4, G)
        qc, gc = rng.integers(0, 2, Q), rng.integers(0, 2, G)
        dist = rng.standard_normal((Q, G))
        for i in range(Q):  # give all same-pid items of row i one of two shared values
            same = np.flatnonzero(gp == qp[i])
            dist[i, same] = rng.choice(dist[i, same][:2] if len(same) >= 2 else dist[i, same], len(same))
        res = evaluate(dist, qp, gp, qc, gc, max_rank=20, chunk_size=4)
        assert_same(res, reference(dist, qp, gp, qc, gc, None, None, "general", 20))


def test_tied_row_path_handles_foreign_ties_and_infinities(monkeypatch):
    calls = []
    real = ranking._before_tied
    monkeypatch.setattr(ranking, "_before_tied", lambda *a: calls.append(a[-1].numel()) or real(*a))
    rng = np.random.default_rng(7)
    Q, G = 5, 30
    qp, gp = rng.integers(0, 3, Q), rng.integers(0, 3, G)
    qc, gc = np.zeros(Q, int), np.ones(G, int)
    dist = rng.integers(0, 3, (Q, G)).astype(np.float64)
    dist[0, :5] = np.inf
    dist[1, 5:10] = -np.inf
    dist[2] = np.finfo(np.float64).max  # successor of the largest float is +inf
    assert_same(evaluate(dist, qp, gp, qc, gc, max_rank=40), reference(dist, qp, gp, qc, gc, None, None, "general", 40))
    assert sum(calls) >= 3  # the rows with +inf / foreign ties went through the tied-row path


@pytest.mark.parametrize("seed", range(12))
def test_duplicated_gallery_rows_across_identities(seed):
    """30 % of gallery rows copy another row (often of another identity): exact ties on most query rows.

    Large enough chunks (>= 32 rows) that the tied-row path works in several row groups."""
    rng = np.random.default_rng(5000 + seed)
    Q, G, d = 70, 120, 8
    qp, gp = rng.integers(0, 12, Q), rng.integers(0, 12, G)
    qc, gc = rng.integers(0, 3, Q), rng.integers(0, 3, G)
    qcl, gcl = rng.integers(0, 4, Q), rng.integers(0, 4, G)
    gf = rng.standard_normal((G, d)).astype(np.float32)
    dup = rng.choice(G, int(0.3 * G), replace=False)
    gf[dup] = gf[rng.integers(0, G, dup.size)]
    qf = rng.standard_normal((Q, d)).astype(np.float32)
    if seed % 3 == 0:
        qf[: Q // 2] = gf[rng.integers(0, G, Q // 2)]  # queries that copy gallery rows too
    dist = -(qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ (gf / np.linalg.norm(gf, axis=1, keepdims=True)).T
    dist = dist.astype(np.float32)
    for mode in ("general", "cc", "sc"):
        ref = reference(dist, qp, gp, qc, gc, qcl, gcl, mode, 30)
        for cs in (Q, 33, 7):
            assert_same(evaluate(dist, qp, gp, qc, gc, qcl, gcl, mode=mode, max_rank=30, chunk_size=cs), ref)


def test_no_valid_query_gives_nan_and_warning(caplog):
    d = np.zeros((2, 3))
    with caplog.at_level(logging.WARNING, logger="rlq.evaluation.ranking"):
        r = evaluate(d, [5, 6], [1, 2, 3], [0, 0], [1, 1, 1])
    assert r["num_valid_queries"] == 0 and r["num_queries"] == 2
    assert math.isnan(r["mAP"]) and math.isnan(r["mINP"]) and np.isnan(r["cmc"]).all()
    assert not r["valid"].any() and np.isnan(r["ap"]).all()
    assert "none of the 2 queries" in caplog.text
    # all-junk query (same pid, same camera only) is invalid too; the other query still counts
    r = evaluate(np.array([[0.1, 0.2], [0.2, 0.1]]), [1, 2], [1, 2], [0, 0], [0, 1])
    assert r["valid"].tolist() == [False, True] and r["num_valid_queries"] == 1 and r["mAP"] == 1.0
    # empty gallery and empty query set
    assert evaluate(np.zeros((2, 0)), [1, 2], [], [0, 0], [])["num_valid_queries"] == 0
    assert evaluate(np.zeros((0, 3)), [], [1, 2, 3], [], [0, 0, 0])["num_queries"] == 0


def test_argument_errors():
    d = np.zeros((1, 2))
    with pytest.raises(RlqError, match="clothes ids"):
        evaluate(d, [1], [1, 1], [0], [1, 1], mode="cc")
    with pytest.raises(RlqError, match="unknown evaluation mode"):
        evaluate(d, [1], [1, 1], [0], [1, 1], mode="market")
    with pytest.raises(RlqError, match="g_pids has 3 entries"):
        evaluate(d, [1], [1, 1, 1], [0], [1, 1])
    with pytest.raises(RlqError, match="NaN"):
        evaluate(np.array([[0.0, np.nan]]), [1], [1, 1], [0], [1, 1])
    with pytest.raises(RlqError, match="integer labels"):
        evaluate(d, [1.5], [1, 1], [0], [1, 1])
    with pytest.raises(RlqError, match="max_rank"):
        evaluate(d, [1], [1, 1], [0], [1, 1], max_rank=0)


# ------------------------------------------------------------------------------------------------
# evaluate_features


def exact_features(rng, n, dim, groups):
    """Unit vectors with four entries of +-1/2: normalisation and dot products are exact in any order."""
    base = np.zeros((groups, dim))
    for k in range(groups):
        pos = rng.choice(dim, 4, replace=False)
        base[k, pos] = rng.choice([-0.5, 0.5], 4)
    return base[rng.integers(0, groups, n)] * rng.choice([1.0, 3.0], (n, 1))  # scale: normalise is exact


@pytest.mark.parametrize("seed", range(30))
def test_features_equal_dense_evaluate(seed):
    rng = np.random.default_rng(seed)
    Q, G, dim = int(rng.integers(1, 12)), int(rng.integers(1, 40)), 8
    qp, gp = rng.integers(0, 4, Q), rng.integers(0, 4, G)
    qc, gc = rng.integers(0, 3, Q), rng.integers(0, 3, G)
    qcl, gcl = rng.integers(0, 2, Q), rng.integers(0, 2, G)
    if seed % 2:  # exact products with many ties (duplicated features)
        q, g = exact_features(rng, Q, dim, 5), exact_features(rng, G, dim, 5)
        dtype = (np.float32, np.float64)[seed % 4 == 1]
    else:
        q, g = rng.standard_normal((Q, dim)), rng.standard_normal((G, dim))
        dtype = np.float64
    q, g = q.astype(dtype), g.astype(dtype)
    qt, gt = torch.from_numpy(q), torch.from_numpy(g)
    dist = -(F.normalize(qt, dim=1) @ F.normalize(gt, dim=1).T)
    dense = evaluate(dist, qp, gp, qc, gc, qcl, gcl, modes=MODES, max_rank=15)
    for cs in (1, 3, None):
        feats = evaluate_features(qt if cs == 3 else q, g, qp, gp, qc, gc, qcl, gcl, max_rank=15,
                                  chunk_size=cs, modes=MODES)
        for mode in MODES:
            assert_same(feats[mode], reference(dist.numpy(), qp, gp, qc, gc, qcl, gcl, mode, 15))
            np.testing.assert_array_equal(feats[mode]["ap"], dense[mode]["ap"])


def test_features_gallery_blocks_and_budget(monkeypatch):
    """A tiny memory budget forces several gallery blocks and single-row chunks; results do not change."""
    rng = np.random.default_rng(3)
    q, g = exact_features(rng, 7, 16, 6), exact_features(rng, 600, 16, 6)
    qp, gp = rng.integers(0, 5, 7), rng.integers(0, 5, 600)
    qc, gc = rng.integers(0, 3, 7), rng.integers(0, 3, 600)
    full = evaluate_features(q, g, qp, gp, qc, gc, max_rank=30)
    small = evaluate_features(q, g, qp, gp, qc, gc, max_rank=30, memory_budget_mb=0.004)  # 256-row blocks
    np.testing.assert_array_equal(full["ap"], small["ap"])
    np.testing.assert_array_equal(full["cmc"], small["cmc"])
    dist = -(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    assert_same(full, reference(dist, qp, gp, qc, gc, None, None, "general", 30))


def test_features_errors():
    with pytest.raises(RlqError, match="equal widths"):
        evaluate_features(np.zeros((2, 3)), np.zeros((2, 4)), [1, 2], [1, 2], [0, 0], [1, 1])
    with pytest.raises(RlqError, match="query features row 1 contains NaN"):
        evaluate_features(np.array([[0.0, 1.0], [np.nan, 1.0]]), np.ones((2, 2)), [1, 1], [1, 2], [0, 0], [1, 1])
    g = np.ones((5, 2))
    g[3, 0] = np.inf
    with pytest.raises(RlqError, match="gallery features row 3 contains NaN or inf"):
        evaluate_features(np.ones((2, 2)), g, [1, 1], [1, 2, 1, 2, 1], [0, 0], [1] * 5, chunk_size=1)


def test_chunk_size_formula():
    # floor((B - reserved) / (G * (s + 5))) with B = 1 MiB, G = 1000, s = 4 -> 116
    assert chunk_size_for(1000, 4, 1.0) == (2**20) // (1000 * 9) == 116
    assert chunk_size_for(1000, 8, 1.0, reserved_bytes=2**19) == (2**19) // (1000 * 13)
    assert chunk_size_for(10**9, 4, 1.0) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(11)
    q, g = exact_features(rng, 20, 16, 6), exact_features(rng, 300, 16, 6)
    qp, gp = rng.integers(0, 5, 20), rng.integers(0, 5, 300)
    qc, gc = rng.integers(0, 3, 20), rng.integers(0, 3, 300)
    qcl, gcl = rng.integers(0, 2, 20), rng.integers(0, 2, 300)
    cpu = evaluate_features(q, g, qp, gp, qc, gc, qcl, gcl, modes=MODES, chunk_size=7)
    gpu = evaluate_features(torch.from_numpy(q).cuda(), g, qp, gp, qc, gc, qcl, gcl, modes=MODES, chunk_size=7)
    dist = torch.from_numpy(-(q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T)
    dense_gpu = evaluate(dist.cuda(), qp, gp, qc, gc, qcl, gcl, modes=MODES, chunk_size=5)
    for mode in MODES:
        np.testing.assert_allclose(gpu[mode]["ap"], cpu[mode]["ap"], rtol=0, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(dense_gpu[mode]["ap"], cpu[mode]["ap"], rtol=0, atol=1e-12, equal_nan=True)
        assert np.array_equal(gpu[mode]["first_rank"], cpu[mode]["first_rank"])
