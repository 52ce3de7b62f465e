"""Bootstrap confidence intervals of rank-1 / mAP, paired differences, and their place in results.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlq.errors import RlqError
from rlq.evaluation import evaluate, evaluate_protocol
from rlq.evaluation.bootstrap import (
    PerQuery,
    add_intervals,
    bootstrap_ci,
    load_per_query,
    paired_bootstrap_ci,
    save_per_query,
)
from rlq.evaluation.protocols import format_table, query_group_results, summarize
from rlq.report_format import pct


# -- an independent, slow reference: one resample at a time, the documented draw ------------------------
def slow_resample_means(values: list[np.ndarray], num_resamples: int, seed: int) -> np.ndarray:
    """Resample r: the r-th block of n uniforms u of default_rng(seed).random, query floor(u * n); one loop step each."""
    rng = np.random.default_rng(seed)
    n = len(values[0])
    out = np.empty((num_resamples, len(values)))
    for r in range(num_resamples):
        u = rng.random(n)
        idx = [min(int(math.floor(x * n)), n - 1) for x in u]
        for j, v in enumerate(values):
            out[r, j] = sum(float(v[i]) for i in idx) / n
    return out


def slow_percentile(x: np.ndarray, q: float) -> float:
    """Linear-interpolation percentile (numpy's default definition), written out."""
    s = sorted(x.tolist())
    pos = q * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def test_matches_slow_loop_with_same_draws():
    rng = np.random.default_rng(11)
    ap = rng.random(57)
    hit = rng.random(57) < 0.3
    got = bootstrap_ci(ap, hit, num_resamples=400, seed=5)
    ref = slow_resample_means([hit.astype(float), ap], 400, 5)
    for j, key in enumerate(("rank1_ci", "mAP_ci")):
        want = [slow_percentile(ref[:, j], 0.025), slow_percentile(ref[:, j], 0.975)]
        np.testing.assert_allclose(got[key], want, rtol=0, atol=1e-12)
    assert got["rank1"] == pytest.approx(hit.mean()) and got["mAP"] == pytest.approx(ap.mean())
    # chunking the resamples (a tiny memory budget) never changes the draws
    small = bootstrap_ci(ap, hit, num_resamples=400, seed=5, memory_budget_mb=1e-3)
    assert small == got
    # another seed draws other resamples
    assert bootstrap_ci(ap, hit, num_resamples=400, seed=6)["mAP_ci"] != got["mAP_ci"]


def test_hand_checkable_cases():
    all_hit = bootstrap_ci(np.ones(40), np.ones(40))
    assert all_hit["rank1_ci"] == [1.0, 1.0] and all_hit["mAP_ci"] == [1.0, 1.0]
    none = bootstrap_ci(np.zeros(40), np.zeros(40))
    assert none["rank1_ci"] == [0.0, 0.0]
    half = np.array([1.0, 0.0] * 50)  # 100 queries, 50 hits
    c = bootstrap_ci(half, half)
    lo, hi = c["rank1_ci"]
    assert lo < 0.5 < hi
    # binomial sd sqrt(.25/100) = 0.05: each half-width about 1.96 * 0.05, symmetric within a few points
    assert 0.07 < 0.5 - lo < 0.13 and 0.07 < hi - 0.5 < 0.13 and abs((0.5 - lo) - (hi - 0.5)) < 0.03
    empty = bootstrap_ci([], [])
    assert math.isnan(empty["rank1"]) and all(math.isnan(x) for x in empty["rank1_ci"])


def test_bad_inputs_are_refused():
    with pytest.raises(RlqError, match="one entry per valid query"):
        bootstrap_ci(np.ones(3), np.ones(4))
    with pytest.raises(RlqError, match="valid queries only"):
        bootstrap_ci(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(RlqError, match="num_resamples"):
        bootstrap_ci(np.ones(3), np.ones(3), num_resamples=0)


def test_coverage_on_a_binomial():
    """The nominal 95 % interval covers the true hit rate in roughly 90-99 % of seeded trials."""
    p, n, trials = 0.3, 120, 200
    covered = 0
    for t in range(trials):
        hit = np.random.default_rng(1000 + t).random(n) < p
        lo, hi = bootstrap_ci(hit.astype(float), hit, num_resamples=1000, seed=t)["rank1_ci"]
        covered += lo <= p <= hi
    assert 0.90 * trials <= covered <= 0.99 * trials


def _pq(keys, ap, hit, valid=None) -> PerQuery:
    valid = np.ones(len(keys), bool) if valid is None else np.asarray(valid)
    return PerQuery(np.array(keys), np.asarray(ap, float), np.asarray(hit, bool), valid)


def test_paired_difference_is_the_interval_of_per_query_differences():
    rng = np.random.default_rng(3)
    n = 45
    keys = [f"q{i:03d}" for i in range(n)]
    a = _pq(keys, rng.random(n), rng.random(n) < 0.5)
    b = _pq(keys, rng.random(n), rng.random(n) < 0.4)
    got = paired_bootstrap_ci(a, b, num_resamples=300, seed=2)
    # independently: each run's resampled means with the same draws, then the difference per resample
    ra = slow_resample_means([a.hit.astype(float), a.ap], 300, 2)
    rb = slow_resample_means([b.hit.astype(float), b.ap], 300, 2)
    d = ra - rb
    for j, key in enumerate(("rank1_diff_ci", "mAP_diff_ci")):
        want = [slow_percentile(d[:, j], 0.025), slow_percentile(d[:, j], 0.975)]
        np.testing.assert_allclose(got[key], want, rtol=0, atol=1e-12)
    assert got["mAP_diff"] == pytest.approx(a.ap.mean() - b.ap.mean())
    # pairing is by key: a shuffled copy of b gives the same answer
    perm = rng.permutation(n)
    b2 = PerQuery(b.keys[perm], b.ap[perm], b.hit[perm], b.valid[perm])
    assert paired_bootstrap_ci(a, b2, num_resamples=300, seed=2) == got
    # a run paired with itself differs by exactly zero
    same = paired_bootstrap_ci(a, a, num_resamples=100)
    assert same["rank1_diff_ci"] == [0.0, 0.0] and same["mAP_diff_ci"] == [0.0, 0.0]


def test_pairing_refuses_mismatched_query_sets():
    a = _pq(["q1", "q2", "q3"], [1, 0.5, 0.2], [1, 0, 0])
    with pytest.raises(RlqError, match="different query sets.*only in the first, e.g. \\['q3'\\]"):
        paired_bootstrap_ci(a, _pq(["q1", "q2", "q4"], [1, 1, 1], [1, 1, 1]))
    with pytest.raises(RlqError, match="different query sets"):
        paired_bootstrap_ci(a, _pq(["q1", "q2"], [1, 1], [1, 1]))
    with pytest.raises(RlqError, match="disagree on which queries have a true match"):
        paired_bootstrap_ci(a, _pq(["q1", "q2", "q3"], [1, 1, np.nan], [1, 1, 0], [True, True, False]))
    with pytest.raises(RlqError, match="not unique"):
        paired_bootstrap_ci(a, _pq(["q1", "q1", "q3"], [1, 1, 1], [1, 1, 1]))


def test_intervals_from_an_evaluation_and_the_per_query_file(tmp_path):
    rng = np.random.default_rng(0)
    nq, ng = 30, 80
    qp, gp = rng.integers(0, 10, nq), rng.integers(0, 10, ng)
    qc, gc = np.zeros(nq, int), np.ones(ng, int)
    r = evaluate(rng.random((nq, ng)), qp, gp, qc, gc)
    out = add_intervals({"general": r}, num_resamples=500)["general"]
    v = r["valid"]
    want = bootstrap_ci(r["ap"][v], r["first_rank"][v] == 1, num_resamples=500)
    assert out["rank1_ci"] == want["rank1_ci"] and out["mAP_ci"] == want["mAP_ci"]
    assert out["rank1_ci"][0] <= r["rank1"] <= out["rank1_ci"][1]
    keys = np.array([f"img{i}" for i in range(nq)])
    pq = PerQuery.from_result(r, keys)
    save_per_query(tmp_path / "pq.npz", {"general": pq, "general/clean": pq.subset(np.arange(nq) < 10)})
    back = load_per_query(tmp_path / "pq.npz")
    assert list(back) == ["general", "general/clean"]
    np.testing.assert_array_equal(back["general"].keys, keys)
    np.testing.assert_array_equal(back["general"].ap, pq.ap)
    assert back["general"].ci(num_resamples=500) == {**want}
    assert back["general/clean"].keys.size == 10
    s = summarize({"general": out})["general"]
    assert s["rank1_ci"] == out["rank1_ci"]
    lo, hi = out["rank1_ci"]
    assert f"{pct(r['rank1'])} [{pct(lo)}, {pct(hi)}]" in format_table({"general": out})


def test_query_group_rows_equal_evaluating_the_subset():
    from rlq.data.records import EvalSpec, Protocol, Sample

    rng = np.random.default_rng(4)
    nq, ng, d = 24, 60, 8

    def samples(n, split):
        return [Sample(f"/x/{split}{i}.jpg", int(rng.integers(0, 6)), int(rng.integers(0, 3)), int(rng.integers(0, 12)),
                       f"{split}{i}") for i in range(n)]

    qs, gs = samples(nq, "q"), samples(ng, "g")
    qf, gf = rng.normal(size=(nq, d)), rng.normal(size=(ng, d))
    proto = Protocol((EvalSpec("general", "query", "gallery", "general"), EvalSpec("cc", "query", "gallery", "cc")),
                     selection="cc")
    res = evaluate_protocol({"query": (qf, qs), "gallery": (gf, gs)}, proto)
    groups = {s.key: ("clean" if i % 3 else "LQ") for i, s in enumerate(qs)}
    rows = query_group_results(res, groups)
    assert list(rows) == ["general/clean", "general/LQ", "cc/clean", "cc/LQ"]
    lq = np.array([i % 3 == 0 for i in range(nq)])
    sub = evaluate_protocol({"query": (qf[lq], [s for s, m in zip(qs, lq) if m]), "gallery": (gf, gs)}, proto)
    for name in ("general", "cc"):
        for k in ("rank1", "mAP", "mINP", "num_valid_queries", "num_queries"):
            assert rows[f"{name}/LQ"][k] == pytest.approx(sub[name][k], nan_ok=True), (name, k)
    with pytest.raises(RlqError, match="no entry for 1 of 24 queries"):
        query_group_results(res, {k: v for k, v in groups.items() if k != "q5"})


def test_results_json_has_intervals_and_clean_lq_rows(synthcc_tiny, tmp_path, one_thread):
    from rlq.data.datasets import load_dataset
    from rlq.data.side_tables import quality_groups
    from rlq.engine.evaluate import per_query_path
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    run = tmp_path / "run"
    run_training(tiny_spec(synthcc_tiny, run, epochs=1, steps=1))
    res = json.loads((run / "results.json").read_text())
    assert res["confidence_intervals"]["resamples"] == 1000 and res["confidence_intervals"]["interval"] == "percentile"
    last = res["test@last"]["results"]
    assert {"general", "cc", "general/clean", "general/LQ", "cc/clean", "cc/LQ"} <= set(last)
    for name, r in last.items():
        assert r["rank1_ci"][0] <= r["rank1"] <= r["rank1_ci"][1], name
        assert r["mAP_ci"][0] <= r["mAP"] <= r["mAP_ci"][1], name
    ds = load_dataset("synthcc", synthcc_tiny)
    groups = quality_groups(synthcc_tiny)
    n_lq = sum(groups[s.key] == "LQ" for s in ds.split("query"))
    assert last["cc/LQ"]["num_queries"] == n_lq and last["cc/clean"]["num_queries"] == len(ds.split("query")) - n_lq
    assert 0 < n_lq < len(ds.split("query"))
    pq = load_per_query(per_query_path(run, 0))
    assert pq["cc"].ci() == {"rank1": pytest.approx(last["cc"]["rank1"]), "mAP": pytest.approx(last["cc"]["mAP"]),
                             "rank1_ci": last["cc"]["rank1_ci"], "mAP_ci": last["cc"]["mAP_ci"],
                             "num_queries": last["cc"]["num_valid_queries"]}
    # the same run compared with itself: a paired difference of zero, on checked-equal query keys
    assert paired_bootstrap_ci(pq["cc"], load_per_query(per_query_path(run, 0))["cc"])["mAP_diff_ci"] == [0.0, 0.0]


def test_demo_report_tables_carry_intervals_and_paired_differences(tmp_path):
    """The demo's comparison table and paired-difference table, from run folders with per-query files."""
    from rlq.demo import _paired_differences, _report, comparison_pairs
    from rlq.engine.evaluate import per_query_path

    rng = np.random.default_rng(8)
    n = 60
    keys = np.array([f"q{i}" for i in range(n)])
    lq = np.arange(n) % 2 == 0
    results, pqs = {}, {}
    for j, m in enumerate(("cal", "bm", "cap", "tad", "rlq")):
        pq = PerQuery(keys, rng.random(n), rng.random(n) < 0.2 + 0.1 * j, np.ones(n, bool))
        rows = {"general": pq, "cc": pq, "cc/clean": pq.subset(~lq), "cc/LQ": pq.subset(lq)}
        save_per_query(per_query_path(tmp_path / m, 4), rows)
        last = {name: {"rank1": float(p.hit.mean()), "mAP": float(p.ap.mean()), **{k: v for k, v in p.ci().items()
                                                                                     if k.endswith("_ci")}}
                for name, p in rows.items()}
        (tmp_path / m / "results.json").write_text(json.dumps({"test@last": {"epoch": 4, "results": last}}))
        results[m], pqs[m] = last, rows
    assert comparison_pairs(["cal", "bm", "cap", "tad", "rlq"]) == [
        ("cal", "bm"), ("cap", "bm"), ("tad", "bm"), ("rlq", "bm"), ("rlq", "cap"), ("rlq", "tad"), ("rlq", "cal")]
    diffs = _paired_differences(tmp_path, ["cal", "bm", "cap", "tad", "rlq"], print)
    want = paired_bootstrap_ci(pqs["rlq"]["cc/LQ"], pqs["bm"]["cc/LQ"])
    assert diffs["rlq-bm"]["cc/LQ"] == want
    results["paired_differences"] = diffs
    meta = {"settings": {"synth_preset": "tiny", "seed": 0}, "seconds": {},
            "run": {"backbone": "tiny", "height": 64, "width": 32, "epochs": 5, "batch_size": 32},
            "selection": "test@last", "confidence_intervals": {"resamples": 1000, "seed": 0}}
    md = _report(results, {}, meta, tmp_path)
    r = results["rlq"]["cc"]
    assert f"| rlq | {100 * r['rank1']:.1f} [{100 * r['rank1_ci'][0]:.1f}, {100 * r['rank1_ci'][1]:.1f}] |" in md
    lqr = results["rlq"]["cc/LQ"]
    assert f"{100 * lqr['mAP']:.1f} [{100 * lqr['mAP_ci'][0]:.1f}, {100 * lqr['mAP_ci'][1]:.1f}] |" in md
    d = diffs["rlq-cap"]["cc"]
    assert (f"| rlq - cap | {100 * d['rank1_diff']:+.1f} [{100 * d['rank1_diff_ci'][0]:+.1f}, "
            f"{100 * d['rank1_diff_ci'][1]:+.1f}] |") in md
    # a run without per-query files (an older rlq): the table is skipped with a message, not a crash
    (per_query_path(tmp_path / "tad", 4)).unlink()
    said = []
    assert _paired_differences(tmp_path, ["bm", "tad"], said.append) == {}
    assert "predates per-query results" in said[0]
