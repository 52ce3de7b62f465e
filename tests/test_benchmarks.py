"""The benchmark scripts' --quick modes run end to end and write the JSON they document (so they cannot rot).

Only behaviour is asserted (agreement checks, structure, equal thread counts), never a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(script: str, out: Path, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_eval_speed_quick(tmp_path):
    r = _run("eval_speed.py", tmp_path / "eval.json")
    assert {"compare", "ties", "ties_prcc", "full", "rerank", "rerank_large"} <= set(r)
    c = r["compare"]
    # ours and the stable-sort CAL baseline rank the same matrix: identical AP per query and CMC
    agree = c["agreement"]["ours_distmat_vs_baseline_stable"]
    assert agree["valid_masks_equal"] and agree["cmc_equal"] and agree["max_abs_diff_ap"] < 1e-12
    assert c["threads_each_side"] == 1
    assert set(c["timing"]["runs"]) >= {"ours_features", "baseline_cal", "ours_distmat", "baseline_ranking_only"}
    assert all(len(v) == c["timing"]["rounds"] for v in c["timing"]["runs"].values())
    assert c["memory"]["ours"]["peak_above_inputs_bytes"] > 0 and c["memory"]["baseline"]["peak_above_inputs_bytes"] > 0
    for k in ("ties", "ties_prcc"):
        t = r[k]
        assert t["identical_to_stable_baseline"], t["agreement_tied_vs_baseline_stable"]
        assert t["copies_across_identities"] > 0
    # the dense and sparse re-ranking forms agree (docs: same V up to float rounding)
    rr = r["rerank"]
    assert rr["max_abs_diff_final_distances"] < 1e-4 and rr["max_abs_diff_ap"] < 1e-9
    assert rr["dense"]["form"] == "dense" and rr["sparse"]["form"] == "sparse"
    assert r["rerank_large"]["sparse"]["form"] == "sparse"
    assert r["full"]["memory"]["peak_above_inputs_bytes"] > 0


def test_train_step_quick(tmp_path):
    r = _run("train_step.py", tmp_path / "train.json", "--device", "cpu")
    (s,) = r["steps"]
    assert s["threads_each_side"] >= 1
    assert set(s["timing"]["runs"]) == {"bm", "resnet50_ls1", "resnet50"}
    assert r["data"]["batches"] >= 1


def test_tad_step_quick(tmp_path):
    r = _run("tad_step.py", tmp_path / "tad.json", "--device", "cpu")
    assert r["lq_synthesis"]["threads_each_side"] == 1
    for case in r["lq_synthesis"]["cases"]:
        assert set(case["timing"]["runs"]) >= {"per_image_official", "batched_cpu"}
        # the batched path stays close to the official per-image operators
        assert all(v["mean"] < 1 for v in case["grey_level_diff_cpu_vs_official"].values())
    assert r["tad_step"][0]["threads_each_side"] == 1


def test_skip_snapshot_quick(tmp_path):
    r = _run("skip_snapshot.py", tmp_path / "skip.json")
    (c,) = r["cases"]
    assert set(c["timing"]["runs"]) == {"step_error", "step_skip", "buffer_copy_only"}
    assert c["buffer_bytes"] > 0 and c["threads_each_side"] >= 1
    assert r["env"]["script"]["path"] == "skip_snapshot.py" and len(r["env"]["script"]["sha256"]) == 64
    assert isinstance(r["env"]["git_dirty"], (bool, type(None)))


def test_robustness_speed_quick(tmp_path):
    r = _run("robustness_speed.py", tmp_path / "rob.json")
    n = sum(r["sizes"].values())
    points = len(r["artifacts"]) * len([x for x in r["levels"] if x > 0])
    # shared: the clean splits once and each degraded split once per (artifact, level); nothing twice
    assert r["shared"]["images_embedded"] == n + points * n
    assert r["separate"]["images_embedded"] > r["shared"]["images_embedded"] and r["shared_equals_separate"]
    assert r["model"] == {"backbone": "mobilenetv2", "init": "random", "input": [128, 64], "flip": False}
