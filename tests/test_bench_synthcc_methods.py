"""benchmarks/synthcc_methods.py: aggregation across seeds and queries against hand computations."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from rlq.evaluation.bootstrap import PerQuery, bootstrap_indices

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("synthcc_methods", REPO / "benchmarks" / "synthcc_methods.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pq(keys, hit, ap, valid=None):
    valid = np.ones(len(keys), bool) if valid is None else np.asarray(valid, bool)
    return PerQuery(np.asarray(keys).astype(np.str_), np.where(valid, np.asarray(ap, float), np.nan),
                    np.asarray(hit, bool) & valid, valid)


def test_seed_interval_matches_hand_t_interval(bench):
    r = bench.seed_interval([0.10, 0.20, 0.30])
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.302652729911275: half width 4.3027 * 0.1 / sqrt(3)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert r["mean"] == pytest.approx(0.2) and r["n"] == 3
    assert r["t_ci"] == pytest.approx([0.2 - half, 0.2 + half])
    assert (r["min"], r["max"]) == (0.1, 0.3)
    one = bench.seed_interval([0.5])
    assert one["mean"] == 0.5 and all(math.isnan(x) for x in one["t_ci"])
    # the payload is written as strict JSON (NaN -> null); --table reads it back
    assert bench._p(None) == bench._p(math.nan) == "n/a" and bench._p(0.25) == "25.0"


def test_pooled_bootstrap_and_paired_difference_by_hand(bench):
    keys = ["q0", "q1", "q2", "q3", "q4"]
    valid = [1, 1, 1, 1, 0]  # q4 has no true match: left out everywhere
    # method a: seed 0 and seed 1 (seed 1 lists its queries in another order: aligned by key)
    a0 = _pq(keys, [1, 0, 1, 0, 0], [1.0, 0.2, 0.5, 0.1, 0], valid)
    perm = [3, 1, 4, 0, 2]
    a1_hit, a1_ap = np.array([1, 1, 0, 0, 0]), np.array([0.9, 0.6, 0.3, 0.2, 0])
    a1 = _pq([keys[i] for i in perm], a1_hit[perm], a1_ap[perm], np.array(valid)[perm])
    b0 = _pq(keys, [0, 0, 1, 0, 0], [0.4, 0.1, 0.6, 0.1, 0], valid)
    b1 = _pq(keys, [1, 0, 0, 0, 0], [0.8, 0.2, 0.2, 0.1, 0], valid)
    agg = bench.aggregate({"a": {0: {"cc": a0}, 1: {"cc": a1}}, "bm": {0: {"cc": b0}, 1: {"cc": b1}}}, num_resamples=200)
    ra = agg["methods"]["a"]["cc"]
    assert ra["rank1_per_seed"] == pytest.approx([0.5, 0.5]) and ra["mAP_per_seed"] == pytest.approx([0.45, 0.5])
    # seed-averaged per query (valid q0..q3): hits [1, .5, .5, 0], AP [.95, .4, .4, .15]
    hit_avg, ap_avg = np.array([1, 0.5, 0.5, 0]), np.array([0.95, 0.4, 0.4, 0.15])
    idx = next(bootstrap_indices(4, 200, 0))  # the same draws, by the documented loop
    ref_r1 = np.quantile(hit_avg[idx].mean(axis=1), [0.025, 0.975])
    ref_map = np.quantile(ap_avg[idx].mean(axis=1), [0.025, 0.975])
    qb = ra["query_bootstrap"]
    assert qb["rank1"] == pytest.approx(0.5) and qb["mAP"] == pytest.approx(0.475)
    assert qb["rank1_ci"] == pytest.approx(ref_r1.tolist()) and qb["num_queries"] == 4
    assert qb["mAP_ci"] == pytest.approx(ref_map.tolist())
    d = agg["vs_bm"]["a"]["cc"]
    # per-query seed-averaged differences a - bm: hits [1-.5, .5-0, .5-.5, 0] = [.5, .5, 0, 0]
    d_hit = np.array([0.5, 0.5, 0.0, 0.0])
    assert d["rank1_diff"] == pytest.approx(0.25) and d["num_queries"] == 4
    assert d["rank1_diff_query_ci"] == pytest.approx(np.quantile(d_hit[idx].mean(axis=1), [0.025, 0.975]).tolist())
    # per seed: seed 0 a 0.5 - bm 0.25 = 0.25; seed 1 a 0.5 - bm 0.25 = 0.25 -> zero spread
    assert d["per_seed"]["rank1"]["mean"] == pytest.approx(0.25)
    assert d["per_seed"]["rank1"]["t_ci"] == pytest.approx([0.25, 0.25])
    assert "bm" not in agg["vs_bm"]
    table = bench.markdown_table({"aggregate": agg})
    assert "| a | cc | 50.0 [50.0, 50.0] (50.0-50.0) |" in table and "Paired differences vs `bm`" in table


def test_pooling_refuses_different_query_sets(bench):
    a = _pq(["q0", "q1"], [1, 0], [1, 0.5])
    b = _pq(["q0", "q9"], [1, 0], [1, 0.5])
    with pytest.raises(ValueError, match="different query sets"):
        bench.pooled_query_ci([a, b], num_resamples=10)


def test_quick_run_side_by_side_equals_one_after_another(bench, synthcc_tiny, tmp_path, one_thread):
    """`--jobs 2` (the demo's scheduler, worker processes) and `--jobs 1` give the same JSON numbers; a second
    invocation skips every finished run and rewrites the same aggregate."""
    import json
    import shutil

    got = {}
    for jobs in (2, 1):
        work = tmp_path / f"w{jobs}"
        shutil.copytree(synthcc_tiny, work / "synthcc")
        out = tmp_path / f"j{jobs}.json"
        args = ["--quick", "--seeds", "0", "--methods", "bm", "tad", "--threads", "1", "--jobs", str(jobs),
                "--resamples", "50", "--work", str(work), "--out", str(out)]
        assert bench.main(args) == 0
        got[jobs] = json.loads(out.read_text())
        assert list(got[jobs]["runs"]) == ["bm/seed0", "tad/seed0"] and got[jobs]["jobs"] == jobs
        assert {"teacher", "bm/seed0", "tad/seed0"} <= set(got[jobs]["seconds"])
    assert got[1]["runs"] == got[2]["runs"] and got[1]["aggregate"] == got[2]["aggregate"]
    assert bench.main(args) == 0  # everything finished: nothing retrained, same numbers
    again = json.loads(out.read_text())
    assert again["aggregate"] == got[1]["aggregate"] and set(again["seconds"]) == {"total (wall)"}
