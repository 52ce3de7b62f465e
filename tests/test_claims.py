"""benchmarks/synthcc_claims.py (docs/claims.md): the verdict rule on hand-made cases, the paired effect and C7's
interaction against hand computations and an exact (enumerated) bootstrap, and the README table against the JSON."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
T975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("synthcc_claims", REPO / "benchmarks" / "synthcc_claims.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize(
    "direction, ci_seeds, ci_queries, expected",
    [
        (1, [0.01, 0.05], [0.002, 0.03], "supported"),
        (1, [-0.05, -0.01], [-0.03, -0.002], "contradicted"),
        (1, [-0.01, 0.05], [0.002, 0.03], "not resolved"),  # the seed interval holds 0
        (1, [0.01, 0.05], [-0.002, 0.03], "not resolved"),  # the query interval holds 0
        (1, [0.01, 0.05], [-0.03, -0.002], "not resolved"),  # the two disagree
        (1, [0.0, 0.05], [0.01, 0.03], "not resolved"),  # touching 0 is not excluding it
        (-1, [-0.05, -0.01], [-0.03, -0.002], "supported"),
        (-1, [0.01, 0.05], [0.002, 0.03], "contradicted"),
        (1, [math.nan, math.nan], [0.01, 0.03], "not resolved"),  # fewer than 2 seeds: no t interval
    ],
)
def test_verdict_rule_on_hand_made_cases(bench, direction, ci_seeds, ci_queries, expected):
    assert bench.verdict(direction, ci_seeds, ci_queries) == expected


def test_verdict_refuses_a_direction_other_than_plus_or_minus_one(bench):
    with pytest.raises(ValueError, match="direction"):
        bench.verdict(0, [0.1, 0.2], [0.1, 0.2])


def _exact_bootstrap(groups: list[np.ndarray], stat) -> np.ndarray:
    """Every equally likely bootstrap resample of each group (independently), enumerated: the statistic of each."""
    per_group = [list(itertools.product(range(len(g)), repeat=len(g))) for g in groups]
    return np.array([stat(*[g[list(ix)] for g, ix in zip(groups, combo)]) for combo in itertools.product(*per_group)])


def _inside_exact_quantiles(mc: float, exact: np.ndarray, q: float, slack: float = 0.012) -> bool:
    """The Monte-Carlo percentile lies between the exact distribution's quantiles at q -/+ slack."""
    lo, hi = np.quantile(exact, [max(0.0, q - slack), min(1.0, q + slack)], method="inverted_cdf")
    return lo - 1e-12 <= mc <= hi + 1e-12


def test_paired_effect_by_hand_and_against_the_exact_bootstrap(bench):
    # 3 seeds x 5 queries of rank-1 hits
    a = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 1, 1], [1, 1, 1, 1, 0]], float)
    b = np.array([[0, 1, 0, 0, 0], [1, 0, 0, 0, 1], [0, 1, 0, 1, 0]], float)
    r = bench.paired_effect(a, b, num_resamples=20000, seed=3)
    per_seed = [2 / 5, 1 / 5, 2 / 5]  # hand: row sums of a - b over 5 queries
    assert r["per_seed"] == pytest.approx(per_seed)
    assert r["effect"] == pytest.approx(np.mean(per_seed))
    sd = np.std(per_seed, ddof=1)
    half = T975_2 * sd / math.sqrt(3)
    assert r["ci_seeds"] == pytest.approx([np.mean(per_seed) - half, np.mean(per_seed) + half])
    exact = _exact_bootstrap([(a - b).mean(axis=0)], lambda d: d.mean())  # 5**5 resamples
    assert _inside_exact_quantiles(r["ci_queries"][0], exact, 0.025)
    assert _inside_exact_quantiles(r["ci_queries"][1], exact, 0.975)


def test_c7_interaction_against_a_brute_force_paired_bootstrap(bench):
    """C7 = (TAD - BM on LQ queries) - (TAD - BM on clean ones), paired by query; its query interval resamples
    within each quality group. Checked against the interaction computed by hand and against every resample of a
    small case enumerated exactly (4 LQ and 3 clean queries: 4**4 * 3**3 = 6,912 equally likely resamples)."""
    tad_lq = np.array([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1]], float)
    bm_lq = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], float)
    tad_cl = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], float)
    bm_cl = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]], float)
    r = bench.interaction_effect(tad_lq - bm_lq, tad_cl - bm_cl, num_resamples=20000, seed=5)
    # by hand, per seed: LQ gains 2/4, 2/4, 2/4; clean gains 1/3, 0, 0
    per_seed = [0.5 - 1 / 3, 0.5, 0.5]
    assert r["per_seed"] == pytest.approx(per_seed)
    assert r["effect"] == pytest.approx(0.5 - 1 / 9)
    assert r["groups"]["LQ"]["num_queries"] == 4 and r["groups"]["clean"]["num_queries"] == 3
    # brute force: a slow loop over every joint resample of the two groups' seed-averaged per-query differences
    d_lq, d_cl = (tad_lq - bm_lq).mean(axis=0), (tad_cl - bm_cl).mean(axis=0)
    exact = []
    for ix in itertools.product(range(4), repeat=4):
        for jx in itertools.product(range(3), repeat=3):
            exact.append(sum(d_lq[i] for i in ix) / 4 - sum(d_cl[j] for j in jx) / 3)
    exact = np.array(exact)
    assert exact.mean() == pytest.approx(r["effect"])  # the bootstrap is centred on the effect
    assert _inside_exact_quantiles(r["ci_queries"][0], exact, 0.025)
    assert _inside_exact_quantiles(r["ci_queries"][1], exact, 0.975)


def test_claim_result_pairs_runs_by_query_key(bench):
    keys = np.array(["q1", "q2", "q3", "q4"])
    hits_a = {0: [1, 1, 0, 1], 1: [1, 0, 1, 1], 2: [1, 1, 1, 0]}
    hits_b = {0: [0, 1, 0, 0], 1: [1, 0, 0, 0], 2: [0, 1, 0, 0]}
    perm = np.array([2, 0, 3, 1])  # arm b's runs list the queries in another order
    measures = {
        "cap": {s: {"cc_hit": (keys, np.array(h, float))} for s, h in hits_a.items()},
        "bm": {s: {"cc_hit": (keys[perm], np.array(h, float)[perm])} for s, h in hits_b.items()},
    }
    claim = next(c for c in bench.CLAIMS if c.id == "C1")
    r = bench.claim_result(claim, measures, [0, 1, 2], num_resamples=200)
    assert r["per_seed"] == pytest.approx([2 / 4, 2 / 4, 2 / 4])
    assert r["id"] == "C1" and r["direction"] == 1 and r["seeds"] == [0, 1, 2]
    assert r["verdict"] in bench.VERDICTS
    measures["bm"][1] = {"cc_hit": (np.array(["q1", "q2", "q3", "x"]), np.zeros(4))}
    with pytest.raises(ValueError, match="different queries"):
        bench.claim_result(claim, measures, [0, 1, 2], num_resamples=200)


def test_every_claim_of_the_issue_is_defined_once(bench):
    ids = [c.id for c in bench.CLAIMS]
    assert ids == [f"C{i}" for i in range(1, 12)]
    for c in bench.CLAIMS:
        assert c.a in bench.ARMS and c.b in bench.ARMS and c.direction in (1, -1)
    assert set(bench.SCHEDULES) == {"demo", "long"} and bench.SCHEDULES["long"] >= 9


def test_readme_claims_table_is_the_one_generated_from_the_json(bench):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- claims-table:start -->\n(.*?)\n<!-- claims-table:end -->", readme, re.S)
    assert m, "README.md lost its claims-table markers"
    path = REPO / "benchmarks" / "results" / "synthcc_claims.json"
    if not path.is_file():
        assert m.group(1).strip() == "(no results yet)"
        return
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert m.group(1).strip() == bench.markdown_table(payload).strip()
    for c in payload["claims"]:  # the issue's fields, one entry per (claim, schedule)
        assert {"id", "schedule", "seeds", "direction", "effect", "ci_seeds", "ci_queries", "verdict"} <= set(c)
        if c["effect"] is not None:
            assert c["verdict"] == bench.verdict(c["direction"], c["ci_seeds"], c["ci_queries"])


def test_log_diagnostics_from_a_hand_made_metrics_log(bench, tmp_path):
    recs = [
        {"type": "train", "epoch": 0, "id_cal": 4.0, "id_bot": 3.0, "pose": 2.7},
        {"type": "train", "epoch": 0, "id_cal": 3.0, "id_bot": 2.0, "pose": 2.5},
        {"type": "eval", "epoch": 0, "cc_rank1": 0.1},
        {"type": "train", "epoch": 1, "id_cal": 1.0, "id_bot": 1.0, "pose": 1.9},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    d = bench.log_diagnostics(tmp_path)
    assert d["d1_pose_ce_last"] == 1.9  # the last train window
    assert d["d3_id_loss_epoch1"] == pytest.approx((7.0 + 5.0) / 2)  # first epoch's windows only


def test_gender_probe_separates_a_visible_attribute_and_not_noise(bench):
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(40), 5)
    gender = {int(p): int(p % 2) for p in pids}
    noise = rng.normal(size=(pids.size, 8))
    visible = noise.copy()
    visible[:, 0] += 6.0 * np.array([gender[int(p)] for p in pids])  # one coordinate carries the gender
    assert bench.gender_probe(visible, pids, gender) > 0.95
    assert bench.gender_probe(noise, pids, gender) < 0.75  # grouped folds: no identity leaks between folds


def test_quick_run_end_to_end_and_resume(bench, synthcc_tiny, tmp_path, one_thread):
    """`--quick` for two arms on one schedule: C1 and C10 (bm and cap) get effects, intervals and a verdict, every
    claim that needs an arm not trained stays pending with its missing runs; a second call retrains nothing and
    reuses the cached feature measures, giving the same claims."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(synthcc_tiny, work / "synthcc")
    out = tmp_path / "claims.json"
    args = ["--quick", "--arms", "bm", "cap", "--schedules", "demo", "--threads", "1", "--resamples", "50",
            "--work", str(work), "--out", str(out)]
    assert bench.main(args) == 0
    got = json.loads(out.read_text())
    assert got["env"]["script"]["path"] == "synthcc_claims.py" and got["rules"] == "docs/claims.md"
    by = {c["id"]: c for c in got["claims"]}
    assert set(by) == {f"C{i}" for i in range(1, 12)} and {c["schedule"] for c in got["claims"]} == {"demo"}
    for cid in ("C1", "C10"):
        c = by[cid]
        assert c["seeds"] == [0, 1] and c["verdict"] in bench.VERDICTS and len(c["per_seed"]) == 2
        assert c["ci_queries"][0] <= c["effect"] <= c["ci_queries"][1]
    assert by["C4"]["verdict"] == "pending" and "demo/seed0/tad" in by["C4"]["missing_runs"]
    assert (work / "demo" / "seed0" / "bm" / "claims_measures.npz").is_file()
    assert not (work / "demo" / "seed0" / "teacher").exists()  # no arm distils: no teacher trained
    stamp = (work / "demo" / "seed0" / "bm" / "claims_measures.npz").stat().st_mtime_ns
    assert bench.main(args) == 0
    again = json.loads(out.read_text())
    assert again["claims"] == got["claims"]
    assert (work / "demo" / "seed0" / "bm" / "claims_measures.npz").stat().st_mtime_ns == stamp  # cache reused
    assert bench.main(["--table", "--out", str(out)]) == 0
