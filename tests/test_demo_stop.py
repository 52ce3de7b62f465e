"""`rlq demo` with runs side by side stops cleanly and resumes (issue 21): a failing run or a signal ends the demo
with a non-zero exit and one line, leaves no process behind and each started run resumable (or no folder);
`--resume` then gives the results of an uninterrupted demo. Faults are placed by events (a run that fails on its
data, a signal sent once a checkpoint exists), never by timing; the only timeouts are guards against a hang.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rlq.engine.checkpoint import CheckpointManager
from rlq.engine.faults import HOLD_MARKER
from rlq.engine.run_dir import RunFolderError, lock_holder

pytestmark = pytest.mark.slow

DEMO = ["--synth-preset", "tiny", "--methods", "bm,cap", "--jobs", "2", "--threads", "1", "--no-analysis", "--epochs", "2",
        "--max-steps", "4", "train.ckpt_every_steps=1"]
HANG_GUARD_S = 600  # only to fail instead of hanging forever; never a measure of speed


def _demo_folder(synthcc_tiny: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    shutil.copytree(synthcc_tiny, out / "synthcc")  # the demo reuses a SynthCC folder it finds
    return out


def _start(out: Path, *extra: str, tag: str, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLQ_TEST_TAG": tag}
    env.pop("RLQ_FAULT_INJECT", None)
    if fault:  # test-only (rlq.engine.faults)
        env["RLQ_FAULT_INJECT"] = fault
    # SIGINT as a terminal's foreground job has it: a harness that starts the suite in the background (bash `&`)
    # leaves SIGINT ignored, and the child would inherit that and never see the test's Ctrl-C
    return subprocess.Popen([sys.executable, "-m", "rlq.cli", "demo", "--out", str(out), *DEMO, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive_with_tag(tag: str) -> list[int]:
    """Processes still running with this test's tag in their environment (the demo and every child it started)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"RLQ_TEST_TAG={tag}".encode() in env and state != "Z":
            pids.append(int(d.name))
    return pids


def _assert_nothing_left(out: Path, tag: str) -> None:
    assert _alive_with_tag(tag) == []
    for lock in out.rglob(".rlq.lock"):
        assert lock_holder(lock.parent) is None, lock


def _results_without_timings(out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    r.pop("_meta", None)
    return r


@pytest.fixture(scope="module")
def reference(synthcc_tiny, tmp_path_factory) -> dict:
    out = _demo_folder(synthcc_tiny, tmp_path_factory.mktemp("ref") / "demo")
    p = _start(out, tag=uuid.uuid4().hex)
    stdout, stderr = p.communicate(timeout=HANG_GUARD_S)
    assert p.returncode == 0, stderr[-2000:]
    return _results_without_timings(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_demo_and_resume_gives_the_uninterrupted_results(synthcc_tiny, tmp_path, sig, request):
    out = _demo_folder(synthcc_tiny, tmp_path / "demo")
    tag = uuid.uuid4().hex
    p = _start(out, tag=tag, fault="hold:2")
    # the event: a run has made 2 steps (and checkpointed them) and now waits for the signal (fault point hold:2,
    # rlq.engine.faults), so the Ctrl-C lands mid-training however fast or busy the machine is
    deadline = time.monotonic() + HANG_GUARD_S
    while not any((out / m / HOLD_MARKER).is_file() for m in ("bm", "cap")):
        assert p.poll() is None, p.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no run reached step 2"
        time.sleep(0.05)
    os.killpg(p.pid, sig)  # as a terminal's Ctrl-C (or `timeout -s INT`) sends it: to the demo's process group
    _, stderr = p.communicate(timeout=HANG_GUARD_S)
    assert p.returncode != 0
    assert "Traceback" not in stderr and "--resume" in stderr, stderr[-2000:]
    _assert_nothing_left(out, tag)
    for m in ("bm", "cap"):  # each started run is resumable or finished, or left no folder
        d = out / m
        assert not d.exists() or CheckpointManager(d, create=False).latest_good() is not None, m
    if sig == signal.SIGTERM:
        return  # the same stop as SIGINT (the demo turns SIGTERM into it); the resume is checked once, after SIGINT
    reference = request.getfixturevalue("reference")
    r = _start(out, "--resume", tag=tag)
    _, stderr = r.communicate(timeout=HANG_GUARD_S)
    assert r.returncode == 0, stderr[-2000:]
    assert _results_without_timings(out) == reference


def test_a_failing_run_stops_the_demo_with_one_line_and_no_process_left(synthcc_tiny, tmp_path):
    """`cap` fails on its data (a pose table that does not exist; bm does not read it) while bm trains beside it."""
    out = _demo_folder(synthcc_tiny, tmp_path / "demo")
    tag = uuid.uuid4().hex
    p = _start(out, f"data.pose_csv={tmp_path / 'missing.csv'}", tag=tag)
    _, stderr = p.communicate(timeout=HANG_GUARD_S)
    assert p.returncode != 0
    lines = [x for x in stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "`cap` failed" in lines[0] and "missing.csv" in lines[0] and "--resume" in lines[0], stderr
    assert "Traceback" not in stderr
    _assert_nothing_left(out, tag)
    assert not (out / "cap").exists()  # failed before its first step: no folder
    bm = out / "bm"  # stopped with a resumable checkpoint, or finished before cap failed, or not started
    assert (not bm.exists() or CheckpointManager(bm, create=False).latest_good() is not None)


def test_demo_refuses_a_training_run_folder(synthcc_tiny, tmp_path, one_thread):
    from rlq.demo import DemoSettings, run_demo
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec
    from test_run_folders import snapshot

    run = tmp_path / "run"
    run_training(tiny_spec(synthcc_tiny, run, epochs=1, steps=1))
    before = snapshot(run)
    with pytest.raises(RunFolderError, match=r"holds a training run .*choose an empty or new --out"):
        run_demo(run, DemoSettings(synth_preset="tiny", methods=("bm",), analysis=False), say=lambda m: None)
    p = subprocess.run([sys.executable, "-m", "rlq.cli", "demo", "--out", str(run), "--synth-preset", "tiny"],
                       capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert p.returncode == 2 and "training run" in p.stderr
    assert snapshot(run) == before and not (run / "synthcc").exists()


def test_every_folder_is_checked_before_anything_trains_and_overwrite_keeps_finished_runs(synthcc_tiny, tmp_path,
                                                                                          one_thread):
    from rlq.demo import DemoSettings, run_demo
    from test_run_folders import snapshot

    out = _demo_folder(synthcc_tiny, tmp_path / "demo")
    s = dict(synth_preset="tiny", analysis=False, jobs=1, threads=1, epochs=1, max_steps_per_epoch=2, batch_size=8)
    run_demo(out, DemoSettings(methods=("bm",), **s), say=lambda m: None)
    finished = snapshot(out / "bm")
    (out / "cap").mkdir()
    (out / "cap" / "config.yaml").write_text("method: cap\n")  # an earlier run that never wrote a checkpoint
    # a plain re-run, and --resume, are refused before anything trains (cal would train first), naming the fix
    for kw in ({}, {"resume": True}):
        with pytest.raises(RunFolderError, match=r"`cap` .* holds no resumable checkpoint: retrain it with "
                                                 r"`rlq demo --out .* --methods cap --overwrite`"):
            run_demo(out, DemoSettings(methods=("cal", "bm", "cap"), **s, **kw), say=lambda m: None)
        assert not (out / "cal").exists()
    # --overwrite starts the unfinished run anew and keeps the finished one as it is
    said = []
    run_demo(out, DemoSettings(methods=("bm", "cap"), overwrite=True, **s), say=said.append)
    assert snapshot(out / "bm") == finished and any("`bm`: finished earlier" in m for m in said)
    assert [p.name for p in out.glob("cap.old-*")] and (out / "cap" / "results.json").is_file()
    # naming it retrains a finished run too
    run_demo(out, DemoSettings(methods=("bm",), overwrite=True, retrain_finished=True, **s), say=lambda m: None)
    assert [p.name for p in out.glob("bm.old-*")]
