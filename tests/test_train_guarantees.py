"""Issue 18 guarantees of `rlq train`: a full disk is one line and the run resumes; a bad evaluation image stops the
run before its output folder exists."""

from __future__ import annotations

import json
import shutil
import subprocess

from faults import _env, train_cmd


def test_disk_full_during_training_is_one_line_then_resume_finishes(synthcc_tiny, tmp_path):
    """F11: the 2nd checkpoint write fails with ENOSPC (test-only fault point): one line naming the file, the mount
    and --resume, no traceback, non-zero exit; `--resume` without the fault then finishes the run."""
    out = tmp_path / "run"
    p = subprocess.run(train_cmd(synthcc_tiny, out), env=_env("disk-full:2"), capture_output=True, text=True)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    lines = [ln for ln in p.stderr.splitlines() if "disk full" in ln]
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert f"disk full writing {out / 'checkpoints'}" in line and "weights.safetensors" in line
    assert "free space on /" in line and "--resume" in line
    assert not p.stderr.split("disk full", 1)[1].strip("\n").count("\n"), p.stderr  # nothing after the one line
    assert not [c for c in (out / "checkpoints").iterdir() if ".tmp-" in c.name]  # the failed write left no temp folder
    p = subprocess.run(train_cmd(synthcc_tiny, out, resume=True), env=_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["test@last"]["epoch"] == 2  # all 3 epochs (0-based)


def test_unreadable_gallery_image_fails_before_the_output_folder_is_created(synthcc_tiny, tmp_path):
    """F12: a corrupt gallery image is found before training (not at the first evaluation, after an epoch that
    is then lost): one line naming the file and its split, and no output folder."""
    root = tmp_path / "data"
    shutil.copytree(synthcc_tiny, root)
    victim = sorted((root / "test").glob("*.png"))[2]  # SynthCC/LTCC layout: test/ is the gallery
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "run"
    p = subprocess.run(train_cmd(root, out), env=_env(), capture_output=True, text=True)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    err = " ".join(p.stderr.split())
    assert f"cannot read image {victim}: " in err and "(split 'gallery' of " in err and "Replace or remove it" in err
    assert not out.exists()
