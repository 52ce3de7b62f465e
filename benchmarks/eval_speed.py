"""Exact chunked evaluation (rlq.evaluation) vs the CAL-style dense argsort evaluator; ties; LaST scale; re-ranking.

Every timed comparison runs both sides with the same thread count (torch, NumPy's BLAS: ``--threads``),
alternates them round by round (the order rotates) and reports each side's median time and the median
of the per-round ratios. Every memory figure is measured in a fresh process of its own: peak RSS (VmHWM,
reset once the inputs exist) minus the RSS at that moment, i.e. the working memory above the features.

(a) compare: 2,000 queries x 60,000 gallery, 2,048-d float32 features with identity structure
    (~10 images per identity, 6 cameras, 3 outfits per identity):
      * ours end to end: ``evaluate_features`` (chunked matmul + ranking kernel);
      * baseline (CAL code, re-written from its description): dense -(qn @ gn.T) in NumPy,
        ``np.argsort(distmat, axis=1)`` on all of it, then per query argwhere / setdiff1d /
        intersect1d for good / junk and ``np.isin`` to clean the ranking, AP and CMC;
      * ranking only: ``evaluate(distmat)`` vs the baseline's argsort + loop on the same matrix.
    The baseline is run with NumPy's default (unstable) sort, as CAL does, and once with a stable sort;
    the stable one breaks ties by gallery index like rlq, so its results must be identical.
(ties) the same problem with 30 % of the gallery rows replaced by copies of other gallery rows (sources
    drawn from all identities, so most copies cross identities; the copies keep their own labels), timed
    against the tie-free problem: tied / tie-free for ours (target <= 1.2) and for the baseline, and the
    tied result checked against the stable-sort baseline. Also at PRCC test size (C -> A: 3,543 x 3,384,
    docs/datasets.md §3.1).
(b) full: LaST test scale, 10,173 x 123,041, 8,192-d float32 (features ~4.4 GB, generated block by
    block with a seeded generator), in a process of its own: time and peak memory of
    ``evaluate_features`` under the default memory budget, checked against the budget.
(rerank) k-reciprocal re-ranking (``evaluate_features(..., rerank=RerankSettings())``): at PRCC size the
    dense and sparse forms (time and peak memory, each in its own process; max |difference| of the final
    distances; metrics), and the sparse form at 10,000 x 60,000 (``rerank_large``; 512-d by default).

``--quick`` (toy sizes, seconds, every part) writes ``runs/bench-quick/eval_speed.json`` unless ``--out`` is
given (never ``benchmarks/results/``); a run keeps the sections of an existing output file that it skips (``--fresh`` to drop them).

Run with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824`` so freed
chunks are reused instead of being unmapped and faulted in again (the child processes inherit them).
Timings on shared CPUs are noisy: compare the ratios, which come from alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import (
    MiB,
    Timer,
    add_common_args,
    alternate,
    env_info,
    load,
    median_ratio,
    peak_in_child,
    threads,
    write_json,
)
from rlq.evaluation import DEFAULT_MEMORY_BUDGET_MB, evaluate, evaluate_features
from rlq.evaluation.rerank import RerankSettings, rerank_chunks, rerank_dense

log = logging.getLogger("eval_speed")

PARTS = ("compare", "ties", "full", "rerank", "rerank_large")


# ---------------------------------------------------------------------------------------------------
# synthetic data with identity structure


def noise_sigma(dim: int) -> float:
    """Noise scale that puts same-identity cosine near 4/sqrt(dim): real matches sit among the top negatives."""
    target = 4.0 / math.sqrt(dim)
    return math.sqrt(1.0 / target - 1.0)


def make_problem(nq: int, ng: int, dim: int, seed: int, num_ids: int | None = None, cams: int = 6, outfits: int = 3,
                 unique_cams: bool = False) -> dict[str, Any]:
    """Query and gallery features + labels (default ~10 gallery images per identity), sorted by pid."""
    rng = np.random.default_rng(seed)
    nid = min(ng, num_ids or max(1, ng // 10))
    g_pids = np.sort(np.concatenate([np.arange(nid), rng.integers(0, nid, ng - nid)]))
    q_pids = np.sort(rng.integers(0, nid, nq))
    g_clo = g_pids * outfits + rng.integers(0, outfits, ng)
    q_clo = q_pids * outfits + rng.integers(0, outfits, nq)
    if unique_cams:  # LaST: one camera per image, nothing is junk (docs/datasets.md §3.5)
        q_cam, g_cam = np.arange(nq), nq + np.arange(ng)
    else:
        q_cam, g_cam = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    q = np.empty((nq, dim), np.float32)
    g = np.empty((ng, dim), np.float32)
    fill_pair(q, g, q_pids, g_pids, q_clo, g_clo, seed + 1)
    return dict(q=q, g=g, q_pids=q_pids, g_pids=g_pids, q_cam=q_cam, g_cam=g_cam, q_clo=q_clo, g_clo=g_clo)


def fill_pair(q: np.ndarray, g: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_clo: np.ndarray,
              g_clo: np.ndarray, seed: int, block_ids: int = 32) -> None:
    """Identity centre + outfit offset + noise rows, written block by block; query and gallery share centres."""
    dim = g.shape[1]
    sigma = noise_sigma(dim)
    rng = np.random.default_rng(seed)
    nid = int(max(g_pids.max(initial=-1), q_pids.max(initial=-1))) + 1
    gs, qs = np.searchsorted(g_pids, np.arange(nid + 1)), np.searchsorted(q_pids, np.arange(nid + 1))
    for b0 in range(0, nid, block_ids):
        b1 = min(nid, b0 + block_ids)
        centres = rng.standard_normal((b1 - b0, dim), dtype=np.float32)
        for arr, pids, clo, st in ((g, g_pids, g_clo, gs), (q, q_pids, q_clo, qs)):
            r0, r1 = int(st[b0]), int(st[b1])
            if r1 == r0:
                continue
            rows = arr[r0:r1]
            rng.standard_normal(rows.shape, dtype=np.float32, out=rows)
            rows *= sigma
            rows += centres[pids[r0:r1] - b0]
            for o in np.unique(clo[r0:r1]):
                sel = np.flatnonzero(clo[r0:r1] == o)
                rows[sel] += 0.7 * np.random.default_rng([seed, int(o)]).standard_normal(dim, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------
# the CAL-style baseline


def _cal_ap_cmc(index: np.ndarray, good_index: np.ndarray, junk_index: np.ndarray) -> tuple[float, np.ndarray]:
    cmc = np.zeros(len(index))
    index = index[np.isin(index, junk_index, invert=True)]  # remove junk
    rows_good = np.argwhere(np.isin(index, good_index)).flatten()
    cmc[rows_good[0]:] = 1.0
    ngood = len(good_index)
    ap = 0.0
    for i in range(ngood):
        ap += (1.0 / ngood) * ((i + 1) * 1.0 / (rows_good[i] + 1))
    return ap, cmc


def cal_baseline(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, kind: str = "quicksort") -> dict[str, Any]:
    """CAL's evaluate(): full argsort of the dense matrix, then a per-query NumPy loop (general rule)."""
    num_q, num_g = distmat.shape
    with Timer() as t_sort:
        index = np.argsort(distmat, axis=1, kind=kind)
    with Timer() as t_loop:
        num_no_gt = 0
        CMC = np.zeros(num_g)
        aps = np.full(num_q, np.nan)
        for i in range(num_q):
            query_index = np.argwhere(g_pids == q_pids[i])
            camera_index = np.argwhere(g_camids == q_camids[i])
            good_index = np.setdiff1d(query_index, camera_index, assume_unique=True)
            if good_index.size == 0:
                num_no_gt += 1
                continue
            junk_index = np.intersect1d(query_index, camera_index)
            aps[i], cmc_i = _cal_ap_cmc(index[i], good_index, junk_index)
            CMC += cmc_i
        nv = num_q - num_no_gt
    return {"ap": aps, "cmc": CMC / nv, "mAP": float(np.nansum(aps) / nv), "num_valid": nv,
            "sort_s": t_sort.seconds, "loop_s": t_loop.seconds, "sort_cpu": t_sort.cpu, "loop_cpu": t_loop.cpu,
            "index_bytes": index.nbytes}


def compare(ours: dict[str, Any], base: dict[str, Any], max_rank: int) -> dict[str, Any]:
    a, b = ours["ap"], base["ap"]
    same_valid = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    diff = np.abs(np.nan_to_num(a) - np.nan_to_num(b))
    return {
        "valid_masks_equal": same_valid,
        "max_abs_diff_ap": float(diff.max(initial=0.0)),
        "queries_with_ap_diff_over_1e-12": int(np.count_nonzero(diff > 1e-12)),  # summation order aside
        "cmc_equal": bool(np.array_equal(ours["cmc"], base["cmc"][:max_rank])),
        "abs_diff_mAP": abs(ours["mAP"] - base["mAP"]),
    }



def make_tied(P: dict[str, Any], frac: float, seed: int) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """Two copies of P whose gallery rows at ``dup`` (``frac`` of them) are replaced by rows ``src`` (not in dup).

    Sources are drawn uniformly from the other rows, so most copies cross identities; a copy keeps its own
    pid / camera / clothes labels. ``tied`` holds exact copies; ``control`` the same copies nudged by a
    tiny noise (1e-2 of the per-coordinate noise scale), so that nothing ties exactly but every distance
    sits where it sits in ``tied``: the two problems differ only in the ties. (Against the original
    problem the copies also move 30 % of the true matches into the bulk of the distances, which changes
    the ranking kernel's cost by itself.) Returns (tied, control, dup, src).
    """
    ng, dim = P["g"].shape
    rng = np.random.default_rng(seed)
    dup = np.sort(rng.choice(ng, int(round(frac * ng)), replace=False))
    rest = np.setdiff1d(np.arange(ng), dup)
    src = rest[rng.integers(0, rest.size, dup.size)]
    T, C = dict(P), dict(P)
    T["g"] = P["g"].copy()
    T["g"][dup] = P["g"][src]
    C["g"] = T["g"].copy()
    C["g"][dup] += (1e-2 * noise_sigma(dim)) * rng.standard_normal((dup.size, dim), dtype=np.float32)
    return T, C, dup, src


def dense_distmat(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """-(qn @ gn.T) in NumPy, as the CAL code computes it."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    return -(qn @ gn.T)


def labels_of(P: dict[str, Any]) -> tuple:
    return P["q_pids"], P["g_pids"], P["q_cam"], P["g_cam"]


# ---------------------------------------------------------------------------------------------------
# children: one process per memory measurement (module-level so that they can be spawned)


def _child_compare(mark, side: str, nq: int, ng: int, dim: int, seed: int, budget_mb: float) -> dict[str, Any]:
    P = make_problem(nq, ng, dim, seed)
    evaluate_features(P["q"][:8], P["g"][:64], *(x[:n] for x, n in zip(labels_of(P), (8, 64, 8, 64))))
    _ = P["q"][:64] @ P["g"][:64].T  # warm-up (thread pools, BLAS)
    mark()
    with Timer() as t:
        if side == "ours":
            r = evaluate_features(P["q"], P["g"], *labels_of(P), memory_budget_mb=budget_mb)
        else:
            r = cal_baseline(dense_distmat(P["q"], P["g"]), *labels_of(P))
    return {"side": side, "seconds": t.seconds, "mAP": r["mAP"]}


def _child_full(mark, nq: int, ng: int, dim: int, seed: int, budget_mb: float, nid: int, max_rank: int) -> dict[str, Any]:
    with Timer() as t_gen:
        P = make_problem(nq, ng, dim, seed, num_ids=nid, unique_cams=True)
    evaluate_features(P["q"][:4], P["g"][:64], P["q_pids"][:4], P["g_pids"][:64], P["q_cam"][:4], P["g_cam"][:64])
    mark()
    with Timer() as t:
        r = evaluate_features(P["q"], P["g"], *labels_of(P), max_rank=max_rank, memory_budget_mb=budget_mb)
    return {"generate_s": t_gen.seconds, "seconds": t.seconds, "cpu_seconds": t.cpu, "chunk_size": r["chunk_size"],
            "features_bytes": P["q"].nbytes + P["g"].nbytes, "identities": int(len(np.unique(P["g_pids"]))),
            "mAP": r["mAP"], "rank1": r["rank1"], "num_valid_queries": r["num_valid_queries"]}


def _child_rerank(mark, form: str, nq: int, ng: int, dim: int, seed: int, budget_mb: float,
                  dump: str | None) -> dict[str, Any]:
    import torch

    P = make_problem(nq, ng, dim, seed)
    q, g = torch.from_numpy(P["q"]), torch.from_numpy(P["g"])
    st = RerankSettings()
    mark()
    with Timer() as t:
        r = evaluate_features(q, g, *labels_of(P), rerank=st, rerank_form=form, memory_budget_mb=budget_mb)
    mark.stop()
    if dump:  # the final distances, for the dense / sparse comparison (not part of the measurement)
        if form == "dense":
            D = rerank_dense(q, g, st)
        else:
            D = torch.cat([d for _, _, d in rerank_chunks(q, g, st, memory_budget_mb=budget_mb)])
        np.save(dump, D.numpy())
    return {"form": r["rerank_form"], "seconds": t.seconds, "cpu_seconds": t.cpu, "settings": r["rerank"],
            "mAP": r["mAP"], "rank1": r["rank1"], "ap": r["ap"].tolist(), "first_rank": r["first_rank"].tolist(),
            "features_bytes": P["q"].nbytes + P["g"].nbytes}


# ---------------------------------------------------------------------------------------------------
# parts


def run_compare(nq: int, ng: int, dim: int, seed: int, budget_mb: float, nthreads: int, rounds: int,
                max_rank: int = 50) -> dict[str, Any]:
    log.info("compare: generating %d x %d x %d", nq, ng, dim)
    out: dict[str, Any] = {"queries": nq, "gallery": ng, "dim": dim, "dtype": "float32", "seed": seed,
                           "memory_budget_mb": budget_mb, "threads_each_side": nthreads,
                           "dense_distmat_bytes": nq * ng * 4}
    with threads(nthreads):
        with Timer() as t_gen:
            P = make_problem(nq, ng, dim, seed)
        out["generate_s"] = t_gen.seconds
        labels = labels_of(P)
        dist = dense_distmat(P["q"], P["g"])
        keep: dict[str, Any] = {}
        base_parts: list[dict[str, float]] = []

        def ours_features() -> None:
            keep["ours"] = evaluate_features(P["q"], P["g"], *labels, max_rank=max_rank, memory_budget_mb=budget_mb)

        def baseline() -> None:
            with Timer() as t_mm:
                d = dense_distmat(P["q"], P["g"])
            b = cal_baseline(d, *labels)
            base_parts.append({"matmul_s": t_mm.seconds, "argsort_s": b["sort_s"], "loop_s": b["loop_s"],
                               "ranking_s": b["sort_s"] + b["loop_s"], "ranking_cpu_s": b["sort_cpu"] + b["loop_cpu"]})
            keep["base"] = b

        def ours_distmat() -> None:
            keep["ours_d"] = evaluate(dist, *labels, max_rank=max_rank, memory_budget_mb=budget_mb)

        log.info("compare: %d alternating rounds of ours (features), baseline (end to end), ours (distmat)", rounds)
        tm = alternate({"ours_features": ours_features, "baseline_cal": baseline, "ours_distmat": ours_distmat},
                       rounds, warmup=0)
        base_parts = base_parts[-rounds:]
        ranking_runs = [p["ranking_s"] for p in base_parts]
        tm["runs"]["baseline_ranking_only"] = ranking_runs
        tm["median_s"]["baseline_ranking_only"] = statistics.median(ranking_runs)
        cpu_rank = [p["ranking_cpu_s"] for p in base_parts]
        tm["cpu_runs"]["baseline_ranking_only"] = cpu_rank
        tm["median_cpu_s"]["baseline_ranking_only"] = statistics.median(cpu_rank)
        out["timing"] = tm | {"baseline_parts_per_round": base_parts}
        out["ratio_end_to_end_baseline_over_ours"] = median_ratio(tm, "baseline_cal", "ours_features")
        out["ratio_ranking_only_baseline_over_ours"] = median_ratio(tm, "baseline_ranking_only", "ours_distmat")
        out["cpu_time_ratio_end_to_end_baseline_over_ours"] = median_ratio(tm, "baseline_cal", "ours_features", "cpu_runs")
        out["cpu_time_ratio_ranking_only_baseline_over_ours"] = median_ratio(tm, "baseline_ranking_only", "ours_distmat",
                                                                             "cpu_runs")
        ours, base, ours_d = keep["ours"], keep["base"], keep["ours_d"]
        out["results"] = {"chunk_size": ours["chunk_size"], "mAP": ours["mAP"], "rank1": ours["rank1"],
                          "num_valid_queries": ours["num_valid_queries"], "baseline_mAP": base["mAP"]}
        with Timer() as t:
            evaluate_features(P["q"], P["g"], *labels, P["q_clo"], P["g_clo"], max_rank=max_rank,
                              memory_budget_mb=budget_mb, modes=("general", "cc", "sc"))
        out["ours_features_3_modes_seconds_once"] = t.seconds
        log.info("compare: baseline with a stable argsort (once, for the agreement check)")
        base_st = cal_baseline(dist, *labels, kind="stable")
    out["agreement"] = {
        "ours_distmat_vs_baseline_stable": compare(ours_d, base_st, max_rank),
        "ours_distmat_vs_baseline_default_sort": compare(ours_d, base, max_rank),
        "ours_features_vs_ours_distmat": compare(ours, ours_d, max_rank) | {"note": (
            "evaluate_features computes -cos in torch by chunks; the baseline's dense matrix comes from a NumPy "
            "matmul, whose float32 rounding may differ by an ulp, which can reorder near-tied items")},
    }
    # free the arrays before the memory children start (`del` would leave the closures above with unbound names)
    dist = P = None
    log.info("compare: peak memory of each side, each in a process of its own")
    mem = {side: peak_in_child(_child_compare, side, nq, ng, dim, seed, budget_mb, nthreads=nthreads)
           for side in ("ours", "baseline")}
    out["memory"] = {side: m["memory"] for side, m in mem.items()}
    out["memory_ratio_baseline_over_ours"] = (mem["baseline"]["memory"]["peak_above_inputs_bytes"]
                                              / max(1, mem["ours"]["memory"]["peak_above_inputs_bytes"]))
    return out


def run_ties(nq: int, ng: int, dim: int, seed: int, budget_mb: float, nthreads: int, rounds: int,
             frac: float = 0.3, prcc: bool = False, baseline: bool = True, max_rank: int = 50) -> dict[str, Any]:
    """Tied (``frac`` of the gallery rows copied from other rows) vs tie-free, same labels, same sizes."""
    log.info("ties: %d x %d x %d, %.0f %% copied gallery rows%s", nq, ng, dim, 100 * frac, " (PRCC C -> A)" * prcc)
    out: dict[str, Any] = {"queries": nq, "gallery": ng, "dim": dim, "seed": seed, "copied_fraction": frac,
                           "memory_budget_mb": budget_mb, "threads_each_side": nthreads}
    with threads(nthreads):
        P = make_problem(nq, ng, dim, seed, num_ids=71 if prcc else None)
        if prcc:  # cameras never coincide in PRCC's C -> A protocol (docs/datasets.md §3.2)
            P["q_cam"], P["g_cam"] = np.full(nq, 2), np.zeros(ng, dtype=np.int64)
        T, C, dup, src = make_tied(P, frac, seed + 7)
        labels = labels_of(P)
        d_orig = dense_distmat(P["q"], P["g"])
        d_free = dense_distmat(C["q"], C["g"])
        d_tied = dense_distmat(T["q"], T["g"])
        out["copies_across_identities"] = int(np.count_nonzero(P["g_pids"][dup] != P["g_pids"][src]))
        out["copies_within_identity"] = int(dup.size - out["copies_across_identities"])
        out["numpy_matmul_ties_exact"] = bool(np.array_equal(d_tied[:, dup], d_tied[:, src]))
        d_tied[:, dup] = d_tied[:, src]  # exact ties whatever the BLAS blocking did
        out["control_exactly_equal_fraction"] = float(np.mean(d_free[:, dup] == d_free[:, src]))

        def ev(d):
            return evaluate(d, *labels, max_rank=max_rank, memory_budget_mb=budget_mb)

        def evf(X):
            return evaluate_features(X["q"], X["g"], *labels, max_rank=max_rank, memory_budget_mb=budget_mb)

        sides = {
            "ours_ranking_tie_free": lambda: ev(d_free),
            "ours_ranking_tied": lambda: ev(d_tied),
            "ours_ranking_original": lambda: ev(d_orig),
            "ours_features_tie_free": lambda: evf(C),
            "ours_features_tied": lambda: evf(T),
        }
        if baseline:
            sides["baseline_ranking_tie_free"] = lambda: cal_baseline(d_free, *labels)
            sides["baseline_ranking_tied"] = lambda: cal_baseline(d_tied, *labels)
        tm = alternate(sides, rounds, warmup=0)
        out["timing"] = tm
        out["ratio_ours_ranking_tied_over_tie_free"] = median_ratio(tm, "ours_ranking_tied", "ours_ranking_tie_free")
        out["ratio_ours_features_tied_over_tie_free"] = median_ratio(tm, "ours_features_tied", "ours_features_tie_free")
        out["ratio_ours_ranking_tied_over_original"] = median_ratio(tm, "ours_ranking_tied", "ours_ranking_original")
        out["cpu_time_ratio_ours_ranking_tied_over_tie_free"] = median_ratio(tm, "ours_ranking_tied",
                                                                             "ours_ranking_tie_free", "cpu_runs")
        out["tie_free_control"] = ("the same copied rows nudged by tiny noise (no exact ties, same distances otherwise); "
                                   "'original' = the problem before any rows were replaced")
        out["target_ratio_max"] = 1.2
        out["meets_target"] = bool(out["ratio_ours_ranking_tied_over_tie_free"] <= 1.2)
        if baseline:
            out["ratio_baseline_ranking_tied_over_tie_free"] = median_ratio(tm, "baseline_ranking_tied",
                                                                            "baseline_ranking_tie_free")
            out["cpu_time_ratio_baseline_ranking_tied_over_tie_free"] = median_ratio(
                tm, "baseline_ranking_tied", "baseline_ranking_tie_free", "cpu_runs")
        ours_t = evaluate(d_tied, *labels, max_rank=max_rank, memory_budget_mb=budget_mb)
        base_st = cal_baseline(d_tied, *labels, kind="stable")
    out["agreement_tied_vs_baseline_stable"] = compare(ours_t, base_st, max_rank)
    out["identical_to_stable_baseline"] = bool(
        out["agreement_tied_vs_baseline_stable"]["valid_masks_equal"]
        and out["agreement_tied_vs_baseline_stable"]["cmc_equal"]
        and out["agreement_tied_vs_baseline_stable"]["max_abs_diff_ap"] <= 1e-12)
    out["mAP_tied"], out["mAP_tied_baseline_stable"] = ours_t["mAP"], base_st["mAP"]
    return out


def run_full(nq: int, ng: int, dim: int, seed: int, budget_mb: float, nid: int, nthreads: int,
             max_rank: int = 50) -> dict[str, Any]:
    log.info("full: %d x %d x %d float32 (%.2f GB of features) in a process of its own, budget %s MiB",
             nq, ng, dim, (nq + ng) * dim * 4 / 1e9, budget_mb)
    r = peak_in_child(_child_full, nq, ng, dim, seed, budget_mb, nid, max_rank, nthreads=nthreads)
    above = r["memory"]["peak_above_inputs_bytes"]
    return {"queries": nq, "gallery": ng, "dim": dim, "dtype": "float32", "seed": seed, "threads": nthreads,
            "memory_budget_mb": budget_mb, **r,
            "within_budget": bool(above <= budget_mb * MiB),
            "budget_check": "peak RSS above the RSS once the features exist (own process) <= memory budget",
            "dense_distmat_bytes": nq * ng * 4, "dense_plus_argsort_bytes": nq * ng * (4 + 8)}


def run_rerank(nq: int, ng: int, dim: int, seed: int, budget_mb: float, nthreads: int,
               forms: tuple[str, ...] = ("dense", "sparse")) -> dict[str, Any]:
    log.info("rerank: %d x %d x %d, forms %s, each in a process of its own", nq, ng, dim, forms)
    out: dict[str, Any] = {"queries": nq, "gallery": ng, "dim": dim, "seed": seed, "threads": nthreads,
                           "memory_budget_mb": budget_mb, "settings": RerankSettings().as_dict()}
    with tempfile.TemporaryDirectory() as tmp:
        dumps = {f: (os.path.join(tmp, f + ".npy") if len(forms) > 1 else None) for f in forms}
        res = {f: peak_in_child(_child_rerank, f, nq, ng, dim, seed, budget_mb, dumps[f], nthreads=nthreads)
               for f in forms}
        if len(forms) > 1:
            D = {f: np.load(dumps[f]) for f in forms}
            out["max_abs_diff_final_distances"] = float(np.abs(D["dense"] - D["sparse"]).max())
            out["metrics_equal"] = bool(res["dense"]["mAP"] == res["sparse"]["mAP"]
                                        and res["dense"]["first_rank"] == res["sparse"]["first_rank"])
            ad = np.abs(np.nan_to_num(np.asarray(res["dense"]["ap"])) - np.nan_to_num(np.asarray(res["sparse"]["ap"])))
            out["max_abs_diff_ap"] = float(ad.max(initial=0.0))
            out["queries_with_different_first_rank"] = int(np.count_nonzero(
                np.asarray(res["dense"]["first_rank"]) != np.asarray(res["sparse"]["first_rank"])))
    for f, r in res.items():
        r.pop("ap"), r.pop("first_rank")
        out[f] = r
    return out


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, str(here / "results" / "eval_speed.json"))
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for torch and NumPy's BLAS, the same on both sides (default 1: shared CPUs)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per timed comparison")
    parser.add_argument("--queries", type=int, default=2000, help="queries in (a) and the tie test")
    parser.add_argument("--gallery", type=int, default=60000, help="gallery size in (a) and the tie test")
    parser.add_argument("--dim", type=int, default=2048, help="feature width in (a), the tie test and re-ranking")
    parser.add_argument("--compare-budget-mb", type=float, default=256.0, help="memory budget of our path in (a)")
    parser.add_argument("--full-queries", type=int, default=10173, help="queries in (b) (LaST test)")
    parser.add_argument("--full-gallery", type=int, default=123041, help="gallery in (b) (LaST test)")
    parser.add_argument("--full-dim", type=int, default=8192, help="feature width in (b)")
    parser.add_argument("--full-ids", type=int, default=5806, help="identities in (b)")
    parser.add_argument("--budget-mb", type=float, default=DEFAULT_MEMORY_BUDGET_MB,
                        help="memory budget in (b) and the re-ranking rows (default: the library's)")
    parser.add_argument("--rerank-large-dim", type=int, default=512, help="feature width of the 10,000 x 60,000 re-ranking row")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic features")
    parser.add_argument("--fresh", action="store_true",
                        help="do not keep the sections of an existing --out file that this run skips")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        parser.error(f"--parts: unknown {bad}; choose from {', '.join(PARTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    prcc = (3543, 3384)  # PRCC test: query C x gallery A (docs/datasets.md §3.1)
    large = (10000, 60000)
    if args.quick:
        args.queries, args.gallery, args.dim, args.rounds = 200, 3000, 64, 2
        args.full_queries, args.full_gallery, args.full_dim, args.full_ids = 300, 5000, 128, 250
        args.compare_budget_mb = args.budget_mb = 8.0
        prcc, large, args.rerank_large_dim = (60, 80), (100, 400), 32

    result: dict[str, Any] = {"benchmark": "eval_speed"}
    if not args.fresh and os.path.isfile(args.out):  # keep the other sections from an earlier run
        try:
            with open(args.out) as f:
                old = json.load(f)
            result.update({k: old[k] for k in (*PARTS, "ties_prcc") if k in old})
            if "provenance" in old:  # what is known of kept sections written before env_info() recorded enough
                result["provenance"] = old["provenance"]
        except (OSError, ValueError):
            pass

    def section(name: str, fn, *a, **kw) -> None:
        head = {"quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "env": env_info(),
                "load_start": load()}
        with Timer() as t:
            body = fn(*a, **kw)
        result[name] = head | body | {"load_end": load(), "section_seconds": t.seconds}
        ((result.get("provenance") or {}).get("sections") or {}).pop(name, None)  # its own env says it now
        write_json(args.out, result, quick=args.quick)  # after every section: a later slow part cannot lose an earlier one

    result["note"] = ("shared CPUs: other processes ran at the same time (see load_start / load_end), so absolute "
                      "times are noisy; ratios are medians of per-round ratios from alternating rounds with equal "
                      "thread counts, memory is measured in a process of its own per figure")
    n = args.threads
    if "compare" in parts:
        section("compare", run_compare, args.queries, args.gallery, args.dim, args.seed, args.compare_budget_mb, n,
                args.rounds)
        c = result["compare"]
        log.info("compare: ours %.2fs, baseline %.2fs (x%.1f end to end, x%.1f ranking only); identical=%s",
                 c["timing"]["median_s"]["ours_features"], c["timing"]["median_s"]["baseline_cal"],
                 c["ratio_end_to_end_baseline_over_ours"], c["ratio_ranking_only_baseline_over_ours"],
                 c["agreement"]["ours_distmat_vs_baseline_stable"])
    if "ties" in parts:
        section("ties", run_ties, args.queries, args.gallery, args.dim, args.seed, args.compare_budget_mb, n,
                max(3, args.rounds) if not args.quick else args.rounds)
        section("ties_prcc", run_ties, *prcc, args.dim, args.seed, args.compare_budget_mb, n,
                args.rounds if args.quick else 2 * args.rounds, prcc=True)
        for k in ("ties", "ties_prcc"):
            t = result[k]
            log.info("%s: ours tied/tie-free x%.2f (ranking), x%.2f (features); baseline x%.2f; identical=%s", k,
                     t["ratio_ours_ranking_tied_over_tie_free"], t["ratio_ours_features_tied_over_tie_free"],
                     t.get("ratio_baseline_ranking_tied_over_tie_free", math.nan), t["identical_to_stable_baseline"])
    if "full" in parts:
        section("full", run_full, args.full_queries, args.full_gallery, args.full_dim, args.seed + 1, args.budget_mb,
                args.full_ids, n)
        f = result["full"]
        log.info("full: %.1fs, peak %.0f MiB above the features (budget %s MiB), features %.0f MiB, within: %s",
                 f["seconds"], f["memory"]["peak_above_inputs_mib"], f["memory_budget_mb"],
                 f["features_bytes"] / MiB, f["within_budget"])
    if "rerank" in parts:
        section("rerank", run_rerank, *prcc, args.dim, args.seed, args.budget_mb, n)
        r = result["rerank"]
        log.info("rerank: dense %.1fs %.0f MiB, sparse %.1fs %.0f MiB, max |diff| %.2g, metrics equal %s",
                 r["dense"]["seconds"], r["dense"]["memory"]["peak_above_inputs_mib"], r["sparse"]["seconds"],
                 r["sparse"]["memory"]["peak_above_inputs_mib"], r["max_abs_diff_final_distances"], r["metrics_equal"])
    if "rerank_large" in parts:
        section("rerank_large", run_rerank, *large, args.rerank_large_dim, args.seed, args.budget_mb, n,
                forms=("sparse",))
        r = result["rerank_large"]["sparse"]
        log.info("rerank_large: sparse %.1fs, %.0f MiB above the features", r["seconds"],
                 r["memory"]["peak_above_inputs_mib"])
    write_json(args.out, result, quick=args.quick)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
