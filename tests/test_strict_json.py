"""Strict JSON (docs/design.md, Habits): no file rlq writes holds a bare NaN / Infinity, which strict parsers
reject; non-finite numbers are null, and an evaluation without any matching query says why."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from rlq.engine.metrics_log import MetricsLogger
from rlq.engine.trainer import Selection
from rlq.evaluation.bootstrap import add_intervals
from rlq.evaluation.protocols import summarize
from rlq.evaluation.ranking import evaluate_features
from rlq.io import atomic_write_json


def strict_loads(text: str):
    def refuse(const: str):
        raise ValueError(f"non-standard JSON constant {const}")

    return json.loads(text, parse_constant=refuse)


def test_atomic_write_json_writes_null_for_every_non_finite_number(tmp_path):
    obj = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": np.float32("nan"), "d": np.array([[0.5, np.nan]]),
           "e": (np.float64(2.0), np.int64(-1)), "f": {"g": np.array([np.inf], np.float32)}, "h": -1, "i": -0.25}
    atomic_write_json(tmp_path / "x.json", obj)
    back = strict_loads((tmp_path / "x.json").read_text())
    assert back == {"a": None, "b": [1.0, None, None], "c": None, "d": [[0.5, None]], "e": [2.0, -1],
                    "f": {"g": [None]}, "h": -1, "i": -0.25}
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json(tmp_path / "y.json", {"x": object()})
    assert not (tmp_path / "y.json").exists()


def _no_match_summary():
    # two queries whose identities are not in the gallery: no query has a true match in any mode
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((2, 8)), rng.standard_normal((3, 8))
    res = evaluate_features(q, g, [1, 2], [5, 6, 7], [0, 0], [1, 1, 1], [0, 0], [0, 0, 0], modes=("general",))
    res = {"general": {**res["general"], "name": "general"}}
    return add_intervals(res, num_resamples=20, seed=0)


def test_evaluation_results_without_any_match_are_strict_json_with_a_note(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        res = _no_match_summary()
    assert math.isnan(res["general"]["rank1"])  # in memory the metrics stay NaN
    atomic_write_json(tmp_path / "eval.json", {"results": summarize(res)})
    s = strict_loads((tmp_path / "eval.json").read_text())["results"]["general"]
    assert s["rank1"] is None and s["mAP"] is None and s["mINP"] is None and s["rank1_ci"] == [None, None]
    assert s["num_valid_queries"] == 0 and s["num_queries"] == 2
    assert "none of the 2 queries has a true match" in s["note"]
    # the trainer's results.json (Selection.report) with such an evaluation
    sel = Selection("general")
    sel.update(1, {"general": {"rank1": math.nan, "mAP": math.nan, "num_valid_queries": 0}}, None)
    atomic_write_json(tmp_path / "results.json", sel.report())
    rep = strict_loads((tmp_path / "results.json").read_text())
    assert rep["official"]["rank1"] is None and rep["test@last"]["results"]["general"]["mAP"] is None


def test_metrics_log_lines_are_strict_json(tmp_path):
    torch = pytest.importorskip("torch")
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log({"type": "train", "step": 1, "loss": math.nan, "lr": np.float32(0.1), "t": torch.tensor(math.inf)})
    log.close()
    line = strict_loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line["loss"] is None and line["t"] is None and line["lr"] == pytest.approx(0.1)


def test_readers_of_results_json_show_null_as_not_available():
    from rlq.cli.train import _pct_ci

    assert _pct_ci({"rank1": None, "rank1_ci": [None, None]}, "rank1") == "n/a [n/a, n/a]"
    assert _pct_ci({"mAP": 0.5, "mAP_ci": [0.25, math.nan]}, "mAP") == "50.0 [25.0, n/a]"


def test_selection_with_a_null_metric_survives_a_resume(tmp_path):
    """state.json is strict JSON, so a NaN rank-1 (no matching query) is read back as null: the selection must
    compare as before the resume (NaN never wins), not fail comparing a number with None."""
    from rlq.engine.trainer import Selection
    from rlq.io import atomic_write_json

    nan = float("nan")
    sel = Selection("cc")
    sel.update(0, {"cc": {"rank1": nan, "mAP": nan}}, None)
    atomic_write_json(tmp_path / "s.json", sel.to_json())
    back = Selection.from_json(json.loads((tmp_path / "s.json").read_text()))
    assert back.best_test["results"]["cc"]["rank1"] != back.best_test["results"]["cc"]["rank1"]  # NaN again
    improved = back.update(1, {"cc": {"rank1": 0.5, "mAP": 0.4}}, None)
    ref = sel.update(1, {"cc": {"rank1": 0.5, "mAP": 0.4}}, None)
    assert improved == ref and back.best_test["epoch"] == sel.best_test["epoch"] == 0  # NaN > x and x > NaN are False
