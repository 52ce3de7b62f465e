"""Issue 18 guarantees of `rlq train`: a full disk is one line and the run resumes; a bad evaluation image stops the
run before its output folder exists."""

from __future__ import annotations

import json
import shutil
import subprocess

from faults import _env, train_cmd


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
    assert f"cannot read image {victim} (split 'gallery'" in err and "Replace or remove it" in err
    assert not out.exists()
