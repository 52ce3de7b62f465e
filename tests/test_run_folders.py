"""Run folders (issue 12 §1): never silently overwritten, restarted or mixed; a failed start leaves nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlq.engine.recipe import run_training
from rlq.engine.run_dir import RunFolderError
from rlq.errors import DatasetError, RlqError
from test_cli_e2e import run_cli
from test_engine import tiny_spec


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and its bytes, the lock file aside (it records who holds the folder, not the run)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".rlq.lock"}


def train_lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_existing_run_refused_then_overwrite_moves_it_aside(synthcc_tiny, tmp_path, capsys, one_thread):
    out = tmp_path / "x"
    spec = tiny_spec(synthcc_tiny, out, epochs=1, steps=2)
    run_training(spec)
    before = snapshot(out)
    assert "results.json" in before and any(k.startswith("checkpoints/e") for k in before)

    with pytest.raises(RunFolderError) as ei:  # library: default refuses
        run_training(spec)
    msg = str(ei.value)
    assert str(out) in msg and "--resume" in msg and "--overwrite" in msg
    capsys.readouterr()
    assert run_cli(["train", "--config", "configs/synthcc/bm.yaml", f"data.root={synthcc_tiny}", f"output={out}"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert snapshot(out) == before  # nothing touched
    assert run_cli(["train", "--resume", "--overwrite", "--config", "configs/synthcc/bm.yaml", f"output={out}"]) == 2

    rep = run_training(tiny_spec(synthcc_tiny, out, epochs=1, steps=1), overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("x.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # the old run, whole, under its new name
    steps = [r["step"] for r in train_lines(out) if r["type"] == "train"]
    assert steps == [1]  # the new run's log holds only its own line
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("e"))
    assert ckpts == ["e0001-s00000001"] and rep["test@last"]["epoch"] == 0


def test_resume_needs_a_resumable_checkpoint(synthcc_tiny, tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(RunFolderError, match="does not exist; drop --resume"):
        run_training(tiny_spec(synthcc_tiny, absent), resume=True)
    assert not absent.exists()
    no_ckpt = tmp_path / "no_ckpt"
    (no_ckpt / "checkpoints").mkdir(parents=True)
    (no_ckpt / "config.yaml").write_text("method: bm\n")
    with pytest.raises(RunFolderError, match="no resumable checkpoint.*--overwrite"):
        run_training(tiny_spec(synthcc_tiny, no_ckpt), resume=True)


def test_failed_start_leaves_no_folder(synthcc_tiny, tmp_path, capsys, one_thread):
    # a side input missing: refused after the dataset parsed, before anything is created
    missing = tmp_path / "side"
    with pytest.raises(RlqError, match="nope.csv"):
        run_training(tiny_spec(synthcc_tiny, missing, method="cap", data__pose_csv=str(tmp_path / "nope.csv")))
    assert not missing.exists()

    # an unreadable train image, found by a loader worker at the first step: the folder was created, then removed
    root = tmp_path / "data"
    shutil.copytree(synthcc_tiny, root)
    for victim in sorted((root / "train").glob("*.png")):  # every one, so the very first batch fails
        victim.write_bytes(victim.read_bytes()[:60])
    run = tmp_path / "run"
    spec = tiny_spec(root, run, epochs=1, steps=0)
    spec.data.workers, spec.data.cache_images = 1, False
    with pytest.raises(DatasetError, match=r"cannot read image .*train.*\.png"):
        run_training(spec)
    assert not run.exists()

    # --overwrite that fails before its first step puts the earlier run back
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text("{}")
    spec.output = str(old)
    with pytest.raises(DatasetError):
        run_training(spec, overwrite=True)
    assert snapshot(old) == {"results.json": b"{}"} and not list(tmp_path.glob("old.old-*"))

    # the CLI shows the root cause (the worker's message naming the file) first, in one line, no traceback
    capsys.readouterr()
    args = ["train", "--config", "configs/synthcc/bm.yaml", f"data.root={root}", f"output={run}", "data.workers=1",
            "data.cache_images=false", "model.backbone=tiny", "data.batch_size=8", "train.progress=false",
            "train.tensorboard=false", "model.pretrained=none"]
    assert run_cli(args) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line.startswith("error: cannot read image ") and ".png: truncated image" in line
    assert "Traceback" not in err and not run.exists()


def test_trainer_api_refuses_by_default_and_overwrites_on_request(tmp_path):
    import numpy as np
    import torch

    from rlq.engine.trainer import Trainer
    from rlq.methods.reid import ReIDMethod
    from rlq.models import build_model
    from rlq.spec import LossSpec

    def trainer(run: Path) -> Trainer:
        model = build_model(method="bm", num_ids=2, backbone="tiny", pretrained="none")
        method = ReIDMethod("bm", num_ids=2, pid2clothes=np.eye(2, dtype=bool), palette_size=None, loss=LossSpec(),
                            clothes_lr=1e-3, weight_decay=0.0)
        return Trainer(model=model, method=method, loaders={}, run_dir=run, epochs=0, device=torch.device("cpu"),
                       tensorboard=False, progress=False)

    run = tmp_path / "lib"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="already holds"):
        trainer(run).fit()
    assert snapshot(run) == {"notes.txt": b"mine"}
    trainer(run).fit(overwrite=True)
    (aside,) = tmp_path.glob("lib.old-*")
    assert snapshot(aside) == {"notes.txt": b"mine"} and (run / "results.json").is_file()
    with pytest.raises(RunFolderError, match="no resumable checkpoint"):
        trainer(run).fit(resume=True)


def test_demo_refuses_an_unfinished_method_folder(synthcc_tiny, tmp_path):
    from rlq.demo import DemoSettings, run_demo

    out = tmp_path / "demo"
    shutil.copytree(synthcc_tiny, out / "synthcc")
    (out / "bm").mkdir()
    (out / "bm" / "config.yaml").write_text("method: bm\n")  # an interrupted earlier run
    with pytest.raises(RunFolderError, match=str(out / "bm")):
        run_demo(out, DemoSettings(synth_preset="tiny", methods=("bm",), analysis=False), say=lambda m: None)
    assert snapshot(out / "bm") == {"config.yaml": b"method: bm\n"}


def test_metrics_log_cut_back_to_the_checkpoint(tmp_path):
    from rlq.engine.metrics_log import MetricsLogger

    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        log.log({"type": "train", "step": step})
    log.log({"type": "eval", "step": 3})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "st')  # torn by a kill
    # a checkpoint written after step 3's line but before the evaluation's: resume keeps exactly 3 lines
    log = MetricsLogger(tmp_path, tensorboard=False, resume_step=3, resume_lines=3)
    assert log.lines == 3
    log.log({"type": "eval", "step": 3})
    log.close()
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines
    # an older checkpoint without a line count: cut by step
    log = MetricsLogger(tmp_path, tensorboard=False, resume_step=2)
    log.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# -- F1: the checkpoint history never reaches outside the run ------------------------------------------
def test_edited_history_never_deletes_outside_the_run(synthcc_tiny, tmp_path, caplog, one_thread):
    """latest.json lists `../../victim`, an absolute path and a link: resuming (whose clean-up prunes old
    checkpoints) neither deletes nor reads them, and says so."""
    run = tmp_path / "runs" / "r"
    run_training(tiny_spec(synthcc_tiny, run, epochs=1, steps=2, train__keep_last=1))
    victims = [tmp_path / "victim", tmp_path / "abs-victim", tmp_path / "linked"]
    for v in victims:
        v.mkdir()
        (v / "precious.txt").write_text("keep me")
    ck = run / "checkpoints"
    (ck / "e0000-s00000009").symlink_to(victims[2], target_is_directory=True)  # a numbered name that is a link
    latest = json.loads((ck / "latest.json").read_text())
    latest["history"] = ["../../../victim", str(victims[1]), "e0000-s00000009", "..", ".", "", 7, *latest["history"]]
    (ck / "latest.json").write_text(json.dumps(latest))
    with caplog.at_level("WARNING", logger="rlq.engine.checkpoint"):
        run_training(tiny_spec(synthcc_tiny, run, epochs=2, steps=2, train__keep_last=1), resume=True)
    for v in victims:
        assert (v / "precious.txt").read_text() == "keep me", v
    assert "not checkpoint folders of this run" in caplog.text
    assert json.loads((run / "results.json").read_text())["test@last"]["epoch"] == 1


def test_checkpoint_names_must_be_plain(tmp_path):
    import torch

    from rlq.engine.checkpoint import CheckpointManager

    mgr = CheckpointManager(tmp_path / "run")
    for bad in ("../../x", "/tmp/x", "best"):
        with pytest.raises(ValueError):
            mgr.save(bad, {"w": torch.ones(1)}, {})
    assert not (tmp_path / "x").exists()


# -- F2: one process per run folder --------------------------------------------------------------------
def _hold_lock(folder: Path):
    """Another process that holds ``folder``'s lock until its stdin closes (no timing: it says when it has it)."""
    import subprocess
    import sys

    code = ("import sys; from rlq.engine.run_dir import lock_folder; l = lock_folder(sys.argv[1], 'rlq train'); "
            "print('locked', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_locked_run_folder_is_refused_to_train_resume_overwrite_and_demo(synthcc_tiny, tmp_path, one_thread):
    from rlq.demo import DemoSettings, run_demo

    run = tmp_path / "run"
    run_training(tiny_spec(synthcc_tiny, run, epochs=1, steps=2))
    before = snapshot(run)
    holder = _hold_lock(run)
    try:
        pid = f"PID {holder.pid}"
        for kw in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(RunFolderError, match=f"in use by another rlq process \\({pid} "):
                run_training(tiny_spec(synthcc_tiny, run, epochs=2, steps=2), **kw)
        with pytest.raises(RunFolderError, match=pid):
            run_demo(run, DemoSettings(synth_preset="tiny", methods=("bm",), analysis=False), say=lambda m: None)
        import subprocess
        import sys

        cli = subprocess.run([sys.executable, "-m", "rlq.cli", "train", "--config", "configs/synthcc/bm.yaml", "--resume",
                              f"data.root={synthcc_tiny}", f"output={run}"], capture_output=True, text=True)
        assert cli.returncode != 0 and pid in cli.stderr + cli.stdout and "Traceback" not in cli.stderr, cli.stderr
        assert snapshot(run) == before  # nothing moved aside, nothing written
        assert not list(tmp_path.glob("run.old-*"))
    finally:
        holder.stdin.close()
        holder.wait()
    # the holder is gone (the OS dropped its lock): the folder can be continued
    run_training(tiny_spec(synthcc_tiny, run, epochs=2, steps=2), resume=True)


def test_a_killed_holder_leaves_no_lock(tmp_path):
    import signal

    from rlq.engine.run_dir import lock_folder, lock_holder

    (tmp_path / "run").mkdir()
    holder = _hold_lock(tmp_path / "run")
    assert lock_holder(tmp_path / "run") == f"PID {holder.pid} on {__import__('socket').gethostname()}: rlq train"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_holder(tmp_path / "run") is None
    lock_folder(tmp_path / "run").release()


def test_training_holds_its_folder_lock_until_it_ends(synthcc_tiny, tmp_path, monkeypatch, one_thread):
    import os

    from rlq.engine.run_dir import lock_holder
    from rlq.methods.reid import ReIDMethod

    seen = []
    orig = ReIDMethod.training_step

    def spy(self, kind, batch, ctx):
        seen.append(lock_holder(tmp_path / "run"))
        return orig(self, kind, batch, ctx)

    monkeypatch.setattr(ReIDMethod, "training_step", spy)
    run_training(tiny_spec(synthcc_tiny, tmp_path / "run", epochs=1, steps=2))
    assert seen and all(h is not None and h.startswith(f"PID {os.getpid()} ") for h in seen)
    assert lock_holder(tmp_path / "run") is None  # released when the run ended
