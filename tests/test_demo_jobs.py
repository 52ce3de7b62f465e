"""`rlq demo --jobs`: trainings side by side in worker processes give the same numbers as one after another."""

from __future__ import annotations

import json
import shutil

import pytest

from rlq.demo import DemoSettings, demo_jobs, run_demo
from rlq.engine.run_dir import RunFolderError

TINY = ("model.backbone=tiny", "model.pretrained=none", "train.num_threads=1")


def _settings(**kw) -> DemoSettings:
    return DemoSettings(synth_preset="tiny", analysis=False, max_steps_per_epoch=2, batch_size=8, overrides=TINY, **kw)


def _losses(lines: list[str]) -> list[dict]:
    """metrics.jsonl lines without their timings."""
    return [{k: v for k, v in json.loads(x).items() if k not in ("img_per_s", "data_s", "step_s", "seconds")}
            for x in lines]


def _numbers(out) -> dict:
    r = json.loads((out / "results.json").read_text())
    return {m: r[m] for m in ("teacher", "bm", "tad")}


def test_side_by_side_equals_one_after_another(synthcc_tiny, tmp_path, one_thread):
    """bm and tad (which waits for the teacher) in 2 worker processes, 1 thread each, equal the same runs made one
    after another in this process to the last digit: per-query results, intervals and the teacher's numbers."""
    outs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        shutil.copytree(synthcc_tiny, out / "synthcc")
        said: list[str] = []
        run_demo(out, _settings(methods=("bm", "tad"), jobs=jobs, threads=1), say=said.append)
        meta = json.loads((out / "results.json").read_text())["_meta"]
        assert (meta["jobs"], meta["threads_per_job"]) == (jobs, 1)
        t = meta["timing"]  # the demo's own wall-clock timing (README, The demo, quotes a `make demo` one)
        assert set(t["trainings_s"]) == {"teacher", "bm", "tad"} and all(v > 0 for v in t["trainings_s"].values())
        assert t["total_s"] >= t["training_wall_s"] > 0 and t["synthcc_s"] >= 0 and t["pose_clusters_s"] >= 0
        assert (t["jobs"], t["threads_per_job"], t["reused_runs"]) == (jobs, 1, [])
        assert t["analysis_s"] is None and t["analyses_s"] == {} and t["end_to_end"] is False  # no analysis here
        assert t["total_s"] == meta["seconds"]["total"]
        outs[jobs] = out
        if jobs == 2:
            assert any("2 trainings side by side" in s for s in said)
            # tad distils from the teacher: it starts only after the teacher's result line
            first = {name: next(i for i, s in enumerate(said) if s.startswith(text)) for name, text in
                     (("teacher done", "  teacher: done"), ("tad start", "training `tad`"))}
            assert first["teacher done"] < first["tad start"]
    assert _numbers(outs[1]) == _numbers(outs[2])
    for m in ("bm", "tad"):
        a, b = ((outs[j] / m / "metrics.jsonl").read_text().splitlines() for j in (1, 2))
        assert _losses(a) == _losses(b)


def test_a_failing_side_by_side_run_stops_the_demo(synthcc_tiny, tmp_path, one_thread):
    out = tmp_path / "demo"
    shutil.copytree(synthcc_tiny, out / "synthcc")
    (out / "bm").mkdir()
    (out / "bm" / "config.yaml").write_text("method: bm\n")  # an interrupted earlier run: refused, as without --jobs
    with pytest.raises(RunFolderError, match=str(out / "bm")):
        run_demo(out, _settings(methods=("cal", "bm"), jobs=2), say=lambda m: None)
    assert (out / "bm" / "config.yaml").read_text() == "method: bm\n" and sorted(p.name for p in (out / "bm").iterdir()) == ["config.yaml"]
    assert not (out / "results.json").exists()


def test_demo_jobs_auto(monkeypatch):
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cores, want in ((1, (1, 0)), (2, (2, 1)), (16, (2, 8))):
        monkeypatch.setattr(os, "cpu_count", lambda c=cores: c)
        assert demo_jobs(DemoSettings()) == want
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert demo_jobs(DemoSettings(jobs=4)) == (4, 4)
    assert demo_jobs(DemoSettings(jobs=1)) == (1, 0)  # one after another: all cores, as before
    assert demo_jobs(DemoSettings(threads=3)) == (2, 3)
    assert demo_jobs(DemoSettings(), device="cuda") == (1, 0)
