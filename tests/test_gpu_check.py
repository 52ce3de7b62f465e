"""benchmarks/gpu_check.py: the --dry-run self-check runs every check's code path on the CPU, and the
runner turns failures, selections and the global deadline into rows instead of aborting."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_passes_every_check(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["checks"]}
    names = [c[0] for c in _load().CHECKS]
    assert list(rows) == names and data["dry_run"] is True and data["passed"] is True
    for name, r in rows.items():
        assert r["status"] in ("PASS", "SKIP"), (name, r["error"], r["traceback"])
        if r["status"] == "SKIP":  # only the ONNX check may skip on CPU, when onnx is not installed
            assert name == "onnx" and "not importable" in r["summary"], r
        assert name in p.stdout  # the printed table has a row per check
    # the dry run ran the real code paths: engine steps for every method with both AMP dtypes and layouts
    steps = rows["train_steps"]["details"]["steps"]
    assert {(s["method"], s["amp"], s["channels_last"]) for s in steps} == {
        (m, a, c) for m in ("cal", "bm", "cap", "tad", "rlq") for a in ("bf16", "fp16") for c in (True, False)}
    assert all("tad" in s["losses"] for s in steps if s["method"] in ("tad", "rlq"))
    assert all(s["grad_scale"] is not None for s in steps if s["amp"] == "fp16")  # the CPU GradScaler ran
    assert rows["torchrun_nccl"]["details"]["backend"] == "gloo"
    assert rows["torchrun_nccl"]["details"]["ddp"] == "DistributedDataParallel"
    ties = rows["eval_parity"]["details"]["exact_ties"]["diff"]
    assert all(d["ok"] and d["first_rank_mismatches"] == 0 for d in ties.values())


def test_failure_becomes_a_row_and_others_still_run(tmp_path, monkeypatch):
    mod = _load()

    def boom(s):
        raise ValueError("broken check")

    monkeypatch.setattr(mod, "CHECKS", [("boom", boom, 10), ("env", mod.check_env, 10)])
    out = tmp_path / "r.json"
    assert mod.main(["--dry-run", "--out", str(out)]) == 1
    rows = {r["name"]: r for r in json.loads(out.read_text())["checks"]}
    assert rows["boom"]["status"] == "FAIL" and "ValueError: broken check" in rows["boom"]["error"]
    assert "raise ValueError" in rows["boom"]["traceback"]
    assert rows["env"]["status"] == "PASS"


def test_budget_and_selection_skip_with_reasons(tmp_path):
    mod = _load()
    out = tmp_path / "r.json"
    assert mod.main(["--dry-run", "--budget-s", "0", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["checks"]
    assert [r["status"] for r in rows] == ["SKIP"] * len(mod.CHECKS)
    assert all(r["summary"].startswith("budget") for r in rows)
    assert mod.main(["--dry-run", "--only", "env", "--out", str(out)]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["checks"]}
    assert rows["env"]["status"] == "PASS"
    assert rows["onnx"]["status"] == "SKIP" and "not selected" in rows["onnx"]["summary"]
    with pytest.raises(SystemExit):
        mod.main(["--only", "no_such_check", "--out", str(out)])
