"""The demo report's plain reading of its numbers, and the chance rank-1 it is measured against."""

from __future__ import annotations

import pytest

from rlq.demo import _reading, chance_rank1


def test_chance_rank1_cc_by_hand():
    # query 0: person 1, cam 0, clothes 10. Gallery: (1, cam 1, clothes 11) good; (1, cam 1, clothes 10) junk
    # (same clothes); (1, cam 0, clothes 11) junk (same camera); three other-person images. Non-junk: 4 -> 1/4.
    # query 1: person 2, cam 0, clothes 20: only a same-clothes image of person 2 -> no CC match, left out.
    g = [(1, 1, 11), (1, 1, 10), (1, 0, 11), (3, 1, 30), (4, 0, 40), (2, 1, 20)]
    args = ([1, 2], [x[0] for x in g], [0, 0], [x[1] for x in g], [10, 20], [x[2] for x in g])
    assert chance_rank1(*args, mode="cc") == pytest.approx(1 / 4)
    # general: query 0 good = person 1 on cam 1 (2), junk = person 1 on cam 0 (1): 2 / 5; query 1: 1 / 6
    assert chance_rank1(*args, mode="general") == pytest.approx((2 / 5 + 1 / 6) / 2)


def test_reading_states_chance_multiples_and_resolved_differences():
    results = {
        "valid_queries": {"cc": 1000, "general": 1000},
        "chance_rank1": {"cc": 0.01, "general": 0.02},
        "bm": {"cc": {"rank1": 0.2, "rank1_ci": [0.15, 0.25]}},
        "cal": {"cc": {"rank1": 0.012, "rank1_ci": [0.005, 0.02]}},
        "paired_differences": {"cap-bm": {"cc": {"rank1_diff": 0.02, "rank1_diff_ci": [0.01, 0.03]}},
                               "rlq-bm": {"cc": {"rank1_diff": 0.01, "rank1_diff_ci": [-0.02, 0.05]}}},
    }
    text = "\n".join(_reading(results))
    assert "1000 clothes-changing queries: one query is 0.10 rank-1 points" in text
    assert "`bm`: CC rank-1 20.0 % = 20.0x chance; its whole interval lies above chance." in text
    assert "`cal`: CC rank-1 1.2 % = 1.2x chance; its interval reaches down to chance." in text
    assert "resolve (95 % interval excludes 0): cap - bm (+2.0 [+1.0, +3.0])." in text
    assert "do not resolve (interval includes 0): rlq - bm (+1.0 [-2.0, +5.0])." in text
