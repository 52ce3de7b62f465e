"""rlq.report_format: one rounding rule for every table, so one value never reads two ways."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlq.report_format import fixed, pct

ROOT = Path(__file__).resolve().parent.parent


def test_float_noise_and_halves_read_the_same():
    # 0.0475 as computed by a mean over seeds and by a mean over queries (benchmarks/results/synthcc_methods.json)
    assert pct(0.04750000000000001) == pct(0.047499999999999994) == "4.8"
    assert pct(0.0225) == pct(0.022500000000000003) == "2.3"  # f"{2.25:.1f}" is 2.2 (half to even)
    assert pct(-0.0225, sign=True) == "-2.3" and pct(0.0225, sign=True) == "+2.3"
    assert fixed(2.5, 0) == "3" and fixed(0.125, 2) == "0.13" and fixed(1234.5, 0) == "1235"
    assert pct(-0.0004) == "-0.0" and pct(0.0, sign=True) == "+0.0"  # as f-strings show them


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_non_finite_reads_as_an_f_string_would(x):
    assert fixed(x) == f"{x:.1f}" and fixed(x, sign=True) == f"{x:+.1f}"


def test_large_and_tiny_values():
    assert fixed(1e300, 1).endswith(".0") and fixed(1e-20, 3) == "0.000"


def test_synthcc_methods_table_shows_each_value_one_way():
    """The seed mean and the query mean of the same runs are the same number: the README table shows it once."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synthcc_methods import markdown_table

    payload = json.loads((ROOT / "benchmarks" / "results" / "synthcc_methods.json").read_text())
    agg = payload["aggregate"]
    for m, res in agg["methods"].items():
        for e, r in res.items():
            for k in ("rank1", "mAP"):
                assert pct(r[k]["mean"]) == pct(r["query_bootstrap"][k]), (m, e, k)
    for m, res in agg["vs_bm"].items():
        for e, d in res.items():
            for k in ("rank1", "mAP"):
                assert pct(d["per_seed"][k]["mean"]) == pct(d[f"{k}_diff"]), (m, e, k)
    rows = [r for r in markdown_table(payload).splitlines() if r.startswith("| rlq | cc |")]
    assert rows and rows[0].split(" | ")[2].startswith("4.8 ") and rows[0].split(" | ")[3].startswith("4.8 ")
