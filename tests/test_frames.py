"""`rlq frames`: identity folders from videos the authors' way (middle frame, mask crop, full resolution), Table 8."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from PIL import Image

from cli_helpers import run_cli
from rlq.data.frames import mask_box, middle_frame, prepare_identity_frames
from rlq.errors import DatasetError

W, H = 64, 48
LEVELS = (10, 60, 120, 180, 240)  # frame i is filled with grey level LEVELS[i]; the middle of 5 is index 2


def _video(path, levels=LEVELS, size=(W, H)):
    path.parent.mkdir(parents=True, exist_ok=True)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, size)
    assert wr.isOpened()
    for v in levels:
        wr.write(np.full((size[1], size[0], 3), v, np.uint8))
    wr.release()
    return path


def _mask(path, box, size=(W, H)):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size[1], size[0]), np.uint8)
    left, top, right, bottom = box
    m[top:bottom, left:right] = 255
    Image.fromarray(m).save(path)


def _tree(tmp_path):
    vids = tmp_path / "videos"
    _video(vids / "P001" / "A01" / "C1" / "S001_a.avi")
    _video(vids / "P001" / "A02" / "C1" / "S001_b.avi", levels=(0, 250, 0, 0))  # 4 frames: index 2 (dark)
    _video(vids / "P002" / "A01" / "C2" / "S002_a.avi", levels=(200, 100, 30))  # 3 frames: index 1
    return vids


def test_middle_frame_is_index_n_over_2(tmp_path):
    v = _video(tmp_path / "v.avi")
    f = middle_frame(v)
    assert f.shape == (H, W, 3) and f.dtype == np.uint8
    assert abs(float(f.mean()) - LEVELS[len(LEVELS) // 2]) < 6  # MJPG is lossy; neighbours are 60 levels away


def test_mask_box_hand_computed():
    m = np.zeros((10, 8), np.uint8)
    m[2:7, 3:5] = 1
    assert mask_box(m) == (3, 2, 5, 7)
    assert mask_box(np.zeros((4, 4))) is None


def test_identity_folders_with_masks_full_resolution(tmp_path):
    vids = _tree(tmp_path)
    masks = tmp_path / "masks"
    _mask(masks / "P001" / "A01" / "C1" / "S001_a.png", (10, 5, 30, 45))
    _mask(masks / "P001" / "A02" / "C1" / "S001_b.png", (0, 0, 64, 48))
    _mask(masks / "P002" / "A01" / "C2" / "S002_a.png", (20, 8, 41, 40))
    out = tmp_path / "ntu"
    seen = []
    info = prepare_identity_frames(vids, out, masks=masks, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert (info["images"], info["identities"], info["uncropped"]) == (3, 2, 0)
    a = Image.open(out / "P001" / "A01__C1__S001_a.png")
    assert a.size == (20, 40)  # the mask's box at full resolution, no resize
    assert abs(np.asarray(a, float).mean() - 120) < 6
    b = np.asarray(Image.open(out / "P001" / "A02__C1__S001_b.png"), float)
    assert b.shape == (H, W, 3) and b.mean() < 20  # 4 frames: index 2
    c = Image.open(out / "P002" / "A01__C2__S002_a.png")
    assert c.size == (21, 32) and abs(np.asarray(c, float).mean() - 100) < 6
    rows = list(csv.DictReader(open(out / "manifest.csv", encoding="utf-8")))
    assert [(r["path"], r["split"], r["pid"]) for r in rows] == [
        ("P001/A01__C1__S001_a.png", "train", "P001"), ("P001/A02__C1__S001_b.png", "train", "P001"),
        ("P002/A01__C2__S002_a.png", "train", "P002")]
    # the two readers of the tree: the TAD stream's identity folders and the teacher's manifest dataset
    from rlq.data.datasets import load_dataset
    from rlq.engine.build import identity_folder_samples

    assert [s.pid for s in identity_folder_samples(out)] == [0, 0, 1]
    ds = load_dataset("manifest", out / "manifest.csv")
    assert len(ds.splits["train"]) == 3 and len({s.pid for s in ds.splits["train"]}) == 2


def test_without_masks_whole_frames_and_height_option(tmp_path):
    vids = _tree(tmp_path)
    info = prepare_identity_frames(vids, tmp_path / "o", height=24)
    assert info["uncropped"] == 3 and info["height"] == 24
    assert Image.open(tmp_path / "o" / "P001" / "A01__C1__S001_a.png").size == (32, 24)


def test_refuses_a_non_empty_output_unless_overwrite(tmp_path):
    vids = _tree(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty.*--overwrite"):
        prepare_identity_frames(vids, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    prepare_identity_frames(vids, out, overwrite=True)
    assert (out / "manifest.csv").is_file() and not (out / "keep.txt").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith("o.old-")]  # moved aside, not deleted
    assert not [p for p in tmp_path.iterdir() if ".frames-" in p.name]  # no staging left behind


def test_missing_mask_and_loose_video_are_one_line_errors(tmp_path):
    vids = _tree(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no mask for video"):
        prepare_identity_frames(vids, tmp_path / "o", masks=tmp_path / "masks")
    assert not (tmp_path / "o").exists()
    _video(vids / "loose.avi")
    with pytest.raises(DatasetError, match="not inside an identity folder"):
        prepare_identity_frames(vids, tmp_path / "o")


def test_cli(tmp_path, capsys):
    assert run_cli(["frames", "--help"]) == 0
    assert "middle" in capsys.readouterr().out
    vids = _tree(tmp_path)
    assert run_cli(["frames", str(vids), "-o", str(tmp_path / "o")]) == 0
    assert "3 frames of 2 identities" in capsys.readouterr().out
    assert run_cli(["frames", str(vids), "-o", str(tmp_path / "o")]) != 0  # not empty now


def test_identity_folders_train_a_teacher_without_evaluation_that_tad_can_load(tmp_path, one_thread):
    """The Table 8 teacher trains on identity folders, which have no query/gallery split: training runs without
    evaluation (a warning says so) and its last checkpoint loads as a TAD teacher."""
    import torch
    from PIL import Image

    from rlq.engine.model_io import load_teacher
    from rlq.engine.recipe import run_training
    from rlq.spec import DataSpec, ModelSpec, RunSpec, TrainSpec

    rows = ["path,split,pid,camid,clothes"]
    for pid in range(4):
        for i in range(4):
            Image.new("RGB", (32, 64), (40 * pid, 10 * i, 30)).save(tmp_path / f"{pid}_{i}.png")
            rows.append(f"{pid}_{i}.png,train,{pid},{i % 2},{pid}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    spec = RunSpec(method="bm", role="teacher", output=str(tmp_path / "teacher"),
                   data=DataSpec(dataset="manifest", root=str(tmp_path / "m.csv"), recolor=False, height=64, width=32,
                                 batch_size=8, workers=0),
                   model=ModelSpec(backbone="tiny", pretrained="none"),
                   train=TrainSpec(epochs=1, progress=False, tensorboard=False))
    rep = run_training(spec)
    assert not rep.get("test@last") and rep["history"] == []  # nothing evaluated
    teacher = load_teacher(str(tmp_path / "teacher"), force=False, device=torch.device("cpu"))
    assert not teacher.training
