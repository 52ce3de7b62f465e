"""Exact chunked evaluation (rlq.evaluation) vs the CAL-style dense argsort evaluator, and LaST scale.

(a) compare: 2,000 queries x 60,000 gallery, 2,048-d float32 features with identity structure
    (~10 images per identity, 6 cameras, 3 outfits per identity). Times, side by side in one run:
      * ours end to end: ``evaluate_features`` (chunked matmul + ranking kernel);
      * baseline (CAL code, re-written from its description): dense -(qn @ gn.T) in NumPy,
        ``np.argsort(distmat, axis=1)`` on all of it, then per query argwhere / setdiff1d /
        intersect1d for good / junk and ``np.isin`` to clean the ranking, AP and CMC;
      * ranking only: ``evaluate(distmat)`` vs the baseline's argsort + loop on the same matrix.
    The baseline is run with NumPy's default (unstable) sort, as CAL does, and with a stable sort;
    the stable one breaks ties by gallery index like rlq, so its results must be identical.
(b) full: LaST test scale, 10,173 x 123,041, 8,192-d float32 (features ~4.4 GB, generated block by
    block with a seeded generator): time and peak RSS of ``evaluate_features`` under the default
    memory budget; checks that the peak stays within the budget on top of the features.

``--quick`` (tiny sizes, seconds) writes ``results/eval_speed_quick.json`` unless ``--out`` is given; a run keeps
the section of an existing output file that it skips (``--fresh`` to drop it).

Run (b) with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824`` so
freed chunks are reused instead of being unmapped and faulted in again. Timings on shared CPUs are noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import MiB, PeakRSS, Timer, add_common_args, env_info, maxrss_bytes, rss_bytes, write_json  # noqa: E402

from rlq.evaluation import DEFAULT_MEMORY_BUDGET_MB, evaluate, evaluate_features  # noqa: E402

log = logging.getLogger("eval_speed")


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
            "sort_s": t_sort.seconds, "loop_s": t_loop.seconds, "index_bytes": index.nbytes}


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


# ---------------------------------------------------------------------------------------------------
# parts


def run_compare(nq: int, ng: int, dim: int, seed: int, budget_mb: float, max_rank: int = 50,
                repeats: int = 2) -> dict[str, Any]:
    log.info("compare: generating %d x %d x %d", nq, ng, dim)
    with Timer() as t_gen:
        P = make_problem(nq, ng, dim, seed)
    labels = (P["q_pids"], P["g_pids"], P["q_cam"], P["g_cam"])
    out: dict[str, Any] = {"queries": nq, "gallery": ng, "dim": dim, "dtype": "float32", "seed": seed,
                           "memory_budget_mb": budget_mb, "generate_s": t_gen.seconds,
                           "dense_distmat_bytes": nq * ng * 4}

    # warm-up (thread pools, BLAS, allocator), then ours and the baseline alternately: CPUs are shared
    evaluate_features(P["q"][:8], P["g"][:64], P["q_pids"][:8], P["g_pids"][:64], P["q_cam"][:8], P["g_cam"][:64])
    _ = P["q"][:64] @ P["g"][:64].T
    ours_runs, base_runs = [], []
    for rep in range(repeats):
        log.info("compare: ours (evaluate_features), run %d", rep + 1)
        with PeakRSS() as mem, Timer() as t:
            ours = evaluate_features(P["q"], P["g"], *labels, max_rank=max_rank, memory_budget_mb=budget_mb)
        ours_runs.append({"seconds": t.seconds, "cpu_seconds": t.cpu, "peak_extra_bytes": mem.extra})
        log.info("compare: baseline (dense matrix + full argsort + per-query loop), run %d", rep + 1)
        with PeakRSS() as mem, Timer() as t:
            with Timer() as t_mm:
                qn = P["q"] / np.linalg.norm(P["q"], axis=1, keepdims=True)
                gn = P["g"] / np.linalg.norm(P["g"], axis=1, keepdims=True)
                dist = -(qn @ gn.T)
                del qn, gn
            base = cal_baseline(dist, *labels)
        base_runs.append({"seconds": t.seconds, "matmul_s": t_mm.seconds, "argsort_s": base["sort_s"],
                          "loop_s": base["loop_s"], "ranking_s": base["sort_s"] + base["loop_s"],
                          "peak_extra_bytes": mem.extra})
        if rep + 1 < repeats:
            del dist, base
    best = lambda runs, k: min(r[k] for r in runs)  # noqa: E731
    out["ours_features"] = {"seconds": best(ours_runs, "seconds"), "runs": ours_runs,
                            "peak_extra_bytes": max(r["peak_extra_bytes"] for r in ours_runs),
                            "chunk_size": ours["chunk_size"], "mAP": ours["mAP"],
                            "rank1": ours["rank1"], "num_valid_queries": ours["num_valid_queries"]}
    out["baseline_cal"] = {"seconds": best(base_runs, "seconds"), "matmul_s": best(base_runs, "matmul_s"),
                           "ranking_s": best(base_runs, "ranking_s"),
                           "runs": base_runs, "peak_extra_bytes": max(r["peak_extra_bytes"] for r in base_runs),
                           "mAP": base["mAP"], "argsort": "numpy default (quicksort, unstable)"}
    with Timer() as t:
        evaluate_features(P["q"], P["g"], *labels, P["q_clo"], P["g_clo"], max_rank=max_rank,
                          memory_budget_mb=budget_mb, modes=("general", "cc", "sc"))
    out["ours_features_3_modes_seconds"] = t.seconds

    log.info("compare: ours on the same dense matrix (evaluate)")
    times = []
    for _ in range(repeats):
        with Timer() as t:
            ours_d = evaluate(dist, *labels, max_rank=max_rank, memory_budget_mb=budget_mb)
        times.append(t.seconds)
    out["ours_distmat"] = {"seconds": min(times), "runs_s": times}

    log.info("compare: baseline with a stable argsort")
    base_st = cal_baseline(dist, *labels, kind="stable")
    out["baseline_cal_stable"] = {"seconds": base_st["sort_s"] + base_st["loop_s"], "argsort_s": base_st["sort_s"],
                                  "loop_s": base_st["loop_s"]}

    out["agreement"] = {
        "ours_distmat_vs_baseline_stable": compare(ours_d, base_st, max_rank),
        "ours_distmat_vs_baseline_default_sort": compare(ours_d, base, max_rank),
        "ours_features_vs_ours_distmat": compare(ours, ours_d, max_rank) | {"note": (
            "evaluate_features computes -cos in torch by chunks; the baseline's dense matrix comes from a NumPy "
            "matmul, whose float32 rounding may differ by an ulp, which can reorder near-tied items")},
    }
    b, o = out["baseline_cal"], out["ours_features"]
    out["timing"] = f"best of {repeats} alternating runs per method (shared CPUs)"
    out["speedup_end_to_end"] = b["seconds"] / o["seconds"]
    out["speedup_ranking_only"] = b["ranking_s"] / out["ours_distmat"]["seconds"]
    out["speedup_ranking_only_vs_stable"] = out["baseline_cal_stable"]["seconds"] / out["ours_distmat"]["seconds"]
    out["memory_ratio_baseline_over_ours"] = b["peak_extra_bytes"] / max(1, o["peak_extra_bytes"])
    return out


def run_full(nq: int, ng: int, dim: int, seed: int, budget_mb: float, nid: int, max_rank: int = 50) -> dict[str, Any]:
    log.info("full: generating %d x %d x %d float32 (%.2f GB)", nq, ng, dim, (nq + ng) * dim * 4 / 1e9)
    rss_start = rss_bytes()  # interpreter + libraries, before any data exists
    with Timer() as t_gen:
        P = make_problem(nq, ng, dim, seed, num_ids=nid, unique_cams=True)
    feat_bytes = P["q"].nbytes + P["g"].nbytes
    rss_before = rss_bytes()
    log.info("full: evaluating (budget %s MiB)", budget_mb)
    with PeakRSS(interval=0.01) as mem, Timer() as t:
        r = evaluate_features(P["q"], P["g"], P["q_pids"], P["g_pids"], P["q_cam"], P["g_cam"], max_rank=max_rank,
                              memory_budget_mb=budget_mb, progress=False)
    budget = budget_mb * MiB
    slack = 128 * MiB  # torch / BLAS workspaces and small per-chunk tensors
    return {
        "queries": nq, "gallery": ng, "dim": dim, "dtype": "float32", "identities": int(len(np.unique(P["g_pids"]))),
        "seed": seed, "generate_s": t_gen.seconds, "seconds": t.seconds, "cpu_seconds": t.cpu,
        "memory_budget_mb": budget_mb, "chunk_size": r["chunk_size"],
        "features_bytes": feat_bytes, "rss_before_eval_bytes": rss_before, "peak_rss_bytes": mem.peak,
        "peak_extra_bytes": mem.extra, "process_maxrss_bytes": maxrss_bytes(),
        "dense_distmat_bytes": nq * ng * 4, "dense_plus_argsort_bytes": nq * ng * (4 + 8),
        "rss_at_start_bytes": rss_start,
        "peak_over_start_and_features_bytes": mem.peak - rss_start - feat_bytes,
        "within_budget": bool(mem.peak - rss_start - feat_bytes <= budget + slack),
        "budget_check": "peak RSS - RSS at start (before generating data) - features <= budget + 128 MiB",
        "mAP": r["mAP"], "rank1": r["rank1"], "num_valid_queries": r["num_valid_queries"],
    }


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, str(here / "results" / "eval_speed.json"))
    parser.set_defaults(out=None)  # --quick writes eval_speed_quick.json unless --out is given
    parser.add_argument("--skip-full", action="store_true", help="skip (b), the LaST-scale run")
    parser.add_argument("--skip-compare", action="store_true", help="skip (a), the comparison with the baseline")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--gallery", type=int, default=60000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--compare-budget-mb", type=float, default=256.0, help="memory budget of our path in (a)")
    parser.add_argument("--full-queries", type=int, default=10173)
    parser.add_argument("--full-gallery", type=int, default=123041)
    parser.add_argument("--full-dim", type=int, default=8192)
    parser.add_argument("--full-ids", type=int, default=5806)
    parser.add_argument("--budget-mb", type=float, default=DEFAULT_MEMORY_BUDGET_MB, help="memory budget in (b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true",
                        help="do not keep the sections of an existing --out file that this run skips")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(here / "results" / ("eval_speed_quick.json" if args.quick else "eval_speed.json"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.quick:
        args.queries, args.gallery, args.dim = 200, 3000, 64
        args.full_queries, args.full_gallery, args.full_dim, args.full_ids = 300, 5000, 128, 250
        args.compare_budget_mb = args.budget_mb = 8.0

    result: dict[str, Any] = {"benchmark": "eval_speed"}
    if not args.fresh and os.path.isfile(args.out):  # keep the other section from an earlier run
        try:
            with open(args.out) as f:
                old = json.load(f)
            result.update({k: old[k] for k in ("compare", "full") if k in old})
        except (OSError, ValueError):
            pass

    def section() -> dict[str, Any]:
        return {"quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "env": env_info(),
                "loadavg_start": os.getloadavg()}

    result["note"] = ("shared CPUs: other processes ran at the same time, so absolute times are noisy; compare "
                      "ratios measured within one section")
    if not args.skip_compare:
        result["compare"] = section() | run_compare(args.queries, args.gallery, args.dim, args.seed,
                                                    args.compare_budget_mb)
        result["compare"]["loadavg_end"] = os.getloadavg()
        c = result["compare"]
        log.info("compare: ours %.2fs, baseline %.2fs (x%.1f end to end, x%.1f ranking only); identical=%s",
                 c["ours_features"]["seconds"], c["baseline_cal"]["seconds"], c["speedup_end_to_end"],
                 c["speedup_ranking_only"], c["agreement"]["ours_distmat_vs_baseline_stable"])
    if not args.skip_full:
        result["full"] = section() | run_full(args.full_queries, args.full_gallery, args.full_dim, args.seed + 1,
                                              args.budget_mb, args.full_ids)
        result["full"]["loadavg_end"] = os.getloadavg()
        f = result["full"]
        log.info("full: %.1fs, peak extra %.0f MiB (budget %s MiB), features %.0f MiB, within budget: %s",
                 f["seconds"], f["peak_extra_bytes"] / MiB, f["memory_budget_mb"],
                 f["features_bytes"] / MiB, f["within_budget"])
    write_json(args.out, result)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
