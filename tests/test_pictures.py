"""Readable pictures and tables: bucket figures wrap at a screen-sized number of columns; empty buckets show a
dash, never nan."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from rlq.analysis.buckets import EMPTY, MAX_BUCKET_COLUMNS, bucket_panels, buckets_markdown, plot_buckets
from rlq.analysis.ranklist import gender_markdown
from rlq.errors import ConfigError


def _metrics(r1: float, mAP: float, n: int, valid: int) -> dict:
    return {"rank1": r1, "rank5": r1, "rank10": r1, "rank20": r1, "mAP": mAP, "mINP": mAP,
            "num_queries": n, "num_valid_queries": valid}


def _results(n_buckets: int, empty: set[int]) -> dict:
    names = [f"b{i}" for i in range(n_buckets)]
    nan = math.nan
    buckets = {b: {"num_queries": 3, "fraction": 1 / n_buckets,
                   "results": {"cc": _metrics(nan, nan, 3, 0) if i in empty else _metrics(0.5, 0.25, 3, 3)}}
               for i, b in enumerate(names)}
    return {"modes": ["cc"], "order": names, "num_queries": 3 * n_buckets, "num_gallery": 20, "buckets": buckets,
            "all": {"cc": _metrics(0.5, 0.25, 3 * n_buckets, 3 * (n_buckets - len(empty)))}}


def test_bucket_panels_wrap_at_max_columns():
    res = {"cc": _results(13, set()), "general": _results(3, set())}
    panels = bucket_panels(res)
    assert MAX_BUCKET_COLUMNS == 8
    assert panels == [("cc", [f"b{i}" for i in range(8)]), ("cc", [f"b{i}" for i in range(8, 13)]),
                      ("general", ["b0", "b1", "b2"])]
    assert bucket_panels(res, ["general"], max_columns=2) == [("general", ["b0", "b1"]), ("general", ["b2"])]
    with pytest.raises(ConfigError):
        bucket_panels(res, ["sc"])


def test_bucket_figure_fits_a_screen(tmp_path):
    res = {"cc": _results(17, {4}), "general": _results(17, set()), "sc": _results(17, set())}
    png = plot_buckets(res, tmp_path / "b.png", title="17 buckets x 3 evaluations")
    with Image.open(png) as im:
        # 8 buckets per row at most: ~1.1 in per bucket at 100 dpi; 3 evaluations x 3 rows of panels
        assert im.width <= 1100 and im.height == round(100 * (0.4 + 2.9 * 9))


def test_empty_buckets_show_a_dash_not_nan():
    md = buckets_markdown({"cc": _results(3, {1})})
    row = next(line for line in md.splitlines() if line.startswith("| b1 |"))
    assert row == f"| b1 | 3 (0) | {EMPTY} | {EMPTY} | {EMPTY} |"
    assert "nan" not in md.lower() and "| b0 | 3 (3) | 50.0 | 50.0 | 25.0 |" in md
    g = gender_markdown({"cc": {"num_queries": 4, "num_mistakes": 0, "num_evaluated": 0, "f1": math.nan,
                                "precision": math.nan, "recall": math.nan, "accuracy": math.nan, "junk_rule": "cc"}})
    assert "nan" not in g.lower() and g.splitlines()[-1] == f"| cc | cc | 4 | 0 (0) | {EMPTY} | {EMPTY} | {EMPTY} | {EMPTY} |"
