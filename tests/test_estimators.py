"""Built-in estimators: landmark mapping, mask splitting, the mediapipe backend (faked), CLI (docs/datasets.md §5)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import rlq.attributes.estimators as E
from rlq.data.sidecars import ALPHAPOSE_FILE, Detection, read_alphapose, read_alphapose_tree, read_parsing
from rlq.errors import RlqError, SideInputError

# mediapipe's pose landmark names in index order (mediapipe docs, "Pose landmark model"), written out here
# independently of the module, and the COCO-17 names of docs/datasets.md §5.1.
MP_NAMES = ("nose left_eye_inner left_eye left_eye_outer right_eye_inner right_eye right_eye_outer left_ear "
            "right_ear mouth_left mouth_right left_shoulder right_shoulder left_elbow right_elbow left_wrist "
            "right_wrist left_pinky right_pinky left_index right_index left_thumb right_thumb left_hip right_hip "
            "left_knee right_knee left_ankle right_ankle left_heel right_heel left_foot_index "
            "right_foot_index").split()
COCO_NAMES = ("nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder left_elbow right_elbow "
              "left_wrist right_wrist left_hip right_hip left_knee right_knee left_ankle right_ankle").split()

# LIP ids (docs/datasets.md §5.2)
BG, HAIR, UPPER, PANTS, FACE, L_ARM, R_ARM, L_SHOE, R_SHOE = 0, 2, 5, 9, 13, 14, 15, 18, 19


def test_mediapipe_to_coco_by_name():
    assert len(MP_NAMES) == 33
    assert E.MEDIAPIPE_TO_COCO == tuple(MP_NAMES.index(n) for n in COCO_NAMES)


def test_landmarks_to_coco_hand_computed():
    w, h = 100, 200
    lm = np.zeros((33, 4))
    lm[:, 0] = np.linspace(0.1, 0.9, 33)
    lm[:, 1] = np.linspace(0.05, 0.95, 33)
    lm[:, 3] = np.linspace(0.0, 1.0, 33)
    lm[0] = (0.505, 0.2525, -0.3, 0.9)  # nose at pixel (50, 50) in the pixel-centre convention
    lm[32, :2] = (1.2, 1.1)  # right toe outside the image: clipped to the last pixel
    lm[31, 3] = 1.7  # visibility above 1 clipped
    d = E.landmarks_to_coco(lm, w, h)
    assert isinstance(d, Detection)
    assert d.keypoints[0].tolist() == pytest.approx([50.0, 50.0, 0.9])
    # left ankle = mediapipe 27: x = 0.1 + 0.8 * 27 / 32
    assert d.keypoints[15, 0] == pytest.approx((0.1 + 0.8 * 27 / 32) * w - 0.5)
    assert d.keypoints[15, 1] == pytest.approx((0.05 + 0.9 * 27 / 32) * h - 0.5)
    assert d.keypoints[15, 2] == pytest.approx(27 / 32)
    assert d.keypoints[6, 2] == pytest.approx(12 / 32)  # right shoulder = mediapipe 12
    assert d.score == pytest.approx(np.mean(d.keypoints[:, 2]))
    # box over all 33 clipped landmarks: from landmark 1 (x 0.125, y 0.078) to the clipped toe (99, 199)
    x0 = (0.1 + 0.8 / 32) * w - 0.5
    y0 = (0.05 + 0.9 / 32) * h - 0.5
    assert d.box == pytest.approx((x0, y0, 99 - x0, 199 - y0))


def test_landmarks_to_coco_rejects_bad_input():
    with pytest.raises(ValueError, match="33, 4"):
        E.landmarks_to_coco(np.zeros((17, 4)), 10, 10)
    bad = np.zeros((33, 4))
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        E.landmarks_to_coco(bad, 10, 10)


# ------------------------------------------------------------------------------------------- stick figure

W, H = 100, 200
# A person facing the camera: their left is at image right. (x, y, confidence)
KP = np.array([
    (50, 25, 1), (55, 22, 1), (45, 22, 1), (62, 26, 1), (38, 26, 1),  # nose, eyes, ears
    (65, 45, 1), (35, 45, 1),  # shoulders (left, right)
    (72, 70, 1), (28, 70, 1),  # elbows
    (74, 95, 1), (26, 95, 1),  # wrists
    (59, 100, 1), (41, 100, 1),  # hips
    (58, 145, 1), (42, 145, 1),  # knees
    (58, 185, 1), (42, 185, 1),  # ankles
], dtype=np.float64)


def stick_mask() -> np.ndarray:
    im = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(im)
    d.ellipse((36, 10, 64, 42), fill=1)  # head
    d.rectangle((45, 38, 55, 46), fill=1)  # neck
    d.rectangle((33, 42, 67, 102), fill=1)  # torso
    for (x0, y0), (x1, y1) in (((65, 45), (72, 70)), ((72, 70), (74, 95)),
                               ((35, 45), (28, 70)), ((28, 70), (26, 95))):
        d.line((x0, y0, x1, y1), fill=1, width=8)  # arms
    d.ellipse((70, 93, 78, 101), fill=1)  # hands
    d.ellipse((22, 93, 30, 101), fill=1)
    for (x0, y0), (x1, y1) in (((59, 100), (58, 145)), ((58, 145), (58, 185)),
                               ((41, 100), (42, 145)), ((42, 145), (42, 185))):
        d.line((x0, y0, x1, y1), fill=1, width=12)  # legs
    d.rectangle((52, 182, 66, 194), fill=1)  # left shoe (image right)
    d.rectangle((34, 182, 48, 194), fill=1)  # right shoe
    return np.asarray(im).astype(bool)


def test_split_stick_figure_labels_in_place():
    m = stick_mask()
    lab = E.split_person_mask(m, KP)
    assert lab.dtype == np.uint8 and lab.shape == (H, W)
    np.testing.assert_array_equal(lab > 0, m)  # the person and only the person
    assert set(np.unique(lab)) <= {BG, HAIR, UPPER, PANTS, FACE, L_ARM, R_ARM, L_SHOE, R_SHOE}
    # T = 100 - 45 = 55: head above y = 39.5; face ellipse centre ~ (50, 24.7), half-axes 7.7 x 10.45
    expect = {
        (50, 25): FACE, (50, 38): FACE,  # nose; chin / neck below the centre
        (50, 11): HAIR, (38, 20): HAIR, (62, 30): HAIR,  # crown, sides of the head
        (50, 70): UPPER, (40, 55): UPPER,  # chest
        (68, 55): UPPER, (32, 55): UPPER,  # upper arms (sleeves stay upper clothes)
        (73, 85): L_ARM, (27, 85): R_ARM,  # forearms: person's own left is at image right
        (74, 97): L_ARM, (26, 97): R_ARM,  # hands just below the wrists
        (50, 101): PANTS, (58, 130): PANTS, (42, 160): PANTS,  # crotch, thighs, shins
        (62, 190): L_SHOE, (38, 190): R_SHOE,  # shoes, by the nearer ankle
        (5, 5): BG, (95, 150): BG, (50, 198): BG,
    }
    got = {xy: int(lab[xy[1], xy[0]]) for xy in expect}
    assert got == expect


def test_split_mirror_symmetry():
    """Mirroring the mask and the keypoint x's (a back view) mirrors the map; arm / shoe ids stay the person's."""
    m = stick_mask()
    kp = KP.copy()
    kp[:, 0] = W - 1 - kp[:, 0]
    lab = E.split_person_mask(m, KP)
    lab_m = E.split_person_mask(m[:, ::-1], kp)
    np.testing.assert_array_equal(lab_m, lab[:, ::-1])


def test_split_low_confidence_fallback_uses_height_fractions():
    m = stick_mask()
    kp = KP.copy()
    kp[:, 2] = 0.1  # every keypoint below the threshold
    lab = E.split_person_mask(m, kp, conf_threshold=0.3)
    np.testing.assert_array_equal(lab > 0, m)
    assert not np.isin(lab, (L_ARM, R_ARM)).any()  # no arm without wrists
    # mask spans rows 10..194 (height 185): shoulders at 10 - 0.5 + 0.18 * 185 = 42.8, hips at 98.3
    assert lab[70, 50] == UPPER and lab[96, 50] == UPPER and lab[100, 50] == PANTS and lab[130, 58] == PANTS
    # head band above 42.8 - 0.1 * 55.5: face in the middle column (centre 0.39 T above the shoulders)
    assert set(np.unique(lab[:37])) == {BG, HAIR, FACE}
    assert lab[22, 50] == FACE and lab[22, 38] == HAIR
    # ankles 1.58 T below the hips = 186.5; facing the camera assumed: image right is the left shoe
    assert lab[190, 62] == L_SHOE and lab[190, 38] == R_SHOE


def test_split_partial_keypoints():
    m = stick_mask()
    kp = KP.copy()
    kp[[7, 15, 16], 2] = 0.0  # no left elbow, no ankles
    lab = E.split_person_mask(m, kp)
    np.testing.assert_array_equal(lab > 0, m)
    assert lab[90, 74] == L_ARM  # elbow stood in for by the shoulder-wrist midpoint
    # ankles from the knees (2 * knee - hip) = y 190: shoes from 190 - 0.06 * 55 = 186.7
    assert lab[192, 62] == L_SHOE and lab[192, 38] == R_SHOE
    assert lab[180, 58] == PANTS


def test_split_accepts_float_masks_and_empty():
    m = stick_mask()
    prob = np.where(m, 0.8, 0.2).astype(np.float32)
    np.testing.assert_array_equal(E.split_person_mask(prob, KP), E.split_person_mask(m, KP))
    assert not E.split_person_mask(np.zeros((20, 10)), KP).any()
    with pytest.raises(ValueError, match="17, 3"):
        E.split_person_mask(m, KP[:, :2])
    with pytest.raises(ValueError, match="H x W"):
        E.split_person_mask(np.zeros((2, 3, 4)), KP)


# ------------------------------------------------------------------------------------------ discovery


def _img(path: Path, size=(20, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def test_list_images(tmp_path):
    a = _img(tmp_path / "a.png")
    b = _img(tmp_path / "sub" / "B.JPG")
    _img(tmp_path / "out" / "x.png")
    (tmp_path / "notes.txt").write_text("x")
    assert E.list_images(tmp_path, exclude=[tmp_path / "out"]) == [a, b]
    assert E.list_images(tmp_path, recursive=False) == [a]
    with pytest.raises(SideInputError, match="does not exist"):
        E.list_images(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ mediapipe missing


@pytest.fixture
def no_mediapipe(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError


def test_missing_mediapipe_message(no_mediapipe, tmp_path):
    with pytest.raises(RlqError, match=r"pip install 'rlq\[pose\]'.*") as ei:
        E.require_mediapipe()
    assert "own environment" in str(ei.value) and "numpy<2" in str(ei.value)
    for call in (lambda: E.estimate_poses([tmp_path / "a.png"]),
                 lambda: E.estimate_poses_tree(tmp_path, tmp_path / "out"),
                 lambda: E.estimate_parsing([tmp_path / "a.png"], tmp_path / "p", tmp_path)):
        with pytest.raises(RlqError, match=r"rlq\[pose\]"):
            call()


def test_cli_missing_mediapipe_exits_2(no_mediapipe, tmp_path, capsys):
    from rlq.cli import main

    _img(tmp_path / "imgs" / "a.png")
    for args in (["poses", "estimate", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "p")],
                 ["parse", "estimate", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "q")]):
        with pytest.raises(SystemExit) as ei:
            main(args)
        assert ei.value.code == 2
        assert "rlq[pose]" in capsys.readouterr().err.replace("\n", "")


@pytest.mark.parametrize("group", ["poses", "parse"])
def test_cli_help(group):
    from typer.testing import CliRunner

    from rlq.cli import app

    res = CliRunner().invoke(app, [group, "estimate", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "rlq[pose]" in text and "own environment" in text and "--images" in text and "--root" in text
    top = CliRunner().invoke(app, [group, "--help"], env={"COLUMNS": "200"})
    assert "estimate" in top.output


# ------------------------------------------------------------------------------------------ faked backend


class _FakePose:
    """Stands in for mediapipe Pose: finds the red figure in the (padded, upscaled) input.

    Landmarks: nose at the figure's top-centre + 10 %, everything else at the figure's centre; visibility
    0.9. The segmentation mask is the red figure itself. Records the input sizes it saw.
    """

    def __init__(self, seen: list, **kwargs):
        self.seen, self.kwargs = seen, kwargs

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def process(self, arr: np.ndarray):
        self.seen.append(arr.shape)
        red = (arr[..., 0] > 200) & (arr[..., 1] < 50)
        if not red.any():
            return types.SimpleNamespace(pose_landmarks=None, segmentation_mask=None)
        h, w = red.shape
        ys, xs = np.nonzero(red)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1  # pixel edges
        cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
        pts = [types.SimpleNamespace(x=cx, y=cy, z=0.0, visibility=0.9) for _ in range(33)]
        pts[0] = types.SimpleNamespace(x=cx, y=(y0 + 0.1 * (y1 - y0)) / h, z=0.0, visibility=0.9)
        seg = red.astype(np.float32) if self.kwargs.get("enable_segmentation") else None
        return types.SimpleNamespace(pose_landmarks=types.SimpleNamespace(landmark=pts), segmentation_mask=seg)


@pytest.fixture
def fake_mp(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_mediapipe"
    (pkg / "modules" / "pose_landmark").mkdir(parents=True)
    (pkg / "modules" / "pose_landmark" / "pose_landmark_full.tflite").write_bytes(b"")
    seen: list = []
    mp = types.SimpleNamespace(__file__=str(pkg / "__init__.py"), seen=seen)
    mp.solutions = types.SimpleNamespace(pose=types.SimpleNamespace(Pose=lambda **kw: _FakePose(seen, **kw)))
    monkeypatch.setattr(E, "require_mediapipe", lambda: mp)
    return mp


def _person(path: Path, size=(40, 100), box=(10, 20, 29, 89), bg=(0, 90, 0)) -> Path:
    """An image with a red rectangle person (inclusive pixel box x0, y0, x1, y1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, bg)
    ImageDraw.Draw(im).rectangle(box, fill=(255, 0, 0))
    im.save(path)
    return path


def test_estimate_poses_maps_back_through_upscale_and_pad(fake_mp, tmp_path):
    p = _person(tmp_path / "a.png")
    _img(tmp_path / "empty.png")
    dets = E.estimate_poses([p, tmp_path / "empty.png"], min_height=256, pad=0.2)
    assert set(dets) == {"a.png", "empty.png"} and dets["empty.png"] == []
    # input: 40x100 upscaled to 102x256, plus round(0.2 * 256) = 51 px on every side
    assert fake_mp.seen[0] == (256 + 102, 102 + 102, 3)
    kp = dets["a.png"][0].keypoints
    # red box covers pixel edges x 10..30, y 20..90: centre (20, 55) -> pixel-centre coordinates (19.5, 54.5)
    assert kp[5, :2] == pytest.approx([19.5, 54.5], abs=0.6)
    assert kp[0, :2] == pytest.approx([19.5, 20 + 7 - 0.5], abs=0.6)
    assert kp[:, 2] == pytest.approx(np.full(17, 0.9))
    raw = E.estimate_poses([p], min_height=0, pad=0.0)["a.png"][0].keypoints
    assert fake_mp.seen[-1] == (100, 40, 3)
    assert raw[0, :2] == pytest.approx([19.5, 26.5])


def test_estimate_poses_duplicate_basenames(fake_mp, tmp_path):
    a, b = _person(tmp_path / "x" / "a.png"), _person(tmp_path / "y" / "a.png")
    with pytest.raises(SideInputError, match="share the name"):
        E.estimate_poses([a, b])


def test_estimate_poses_tree_mirrors_dataset(fake_mp, tmp_path):
    ds = tmp_path / "ds"
    _person(ds / "train" / "001_1_c1_000001.png")
    _person(ds / "train" / "001_1_c2_000002.png")
    _img(ds / "query" / "cam1" / "002_1_c1_000003.png")
    written = E.estimate_poses_tree(ds, tmp_path / "poses")
    assert written == {tmp_path / "poses" / "query" / "cam1" / ALPHAPOSE_FILE: (1, 0),
                       tmp_path / "poses" / "train" / ALPHAPOSE_FILE: (2, 2)}
    dets = read_alphapose(tmp_path / "poses" / "train" / ALPHAPOSE_FILE)
    assert sorted(dets) == ["001_1_c1_000001.png", "001_1_c2_000002.png"]
    assert json.loads((tmp_path / "poses" / "query" / "cam1" / ALPHAPOSE_FILE).read_text()) == []
    # the tree is what read_alphapose_tree expects
    sel = read_alphapose_tree(tmp_path / "poses", ds, ["train/001_1_c1_000001.png", "query/cam1/002_1_c1_000003.png"])
    assert sel["train/001_1_c1_000001.png"] is not None and sel["query/cam1/002_1_c1_000003.png"] is None
    # a sub-folder of the dataset, mirrored from the dataset root; or one flat JSON file
    assert list(E.estimate_poses_tree(ds / "train", tmp_path / "p2", dataset_root=ds)) == \
        [tmp_path / "p2" / "train" / ALPHAPOSE_FILE]
    assert list(E.estimate_poses_tree(ds / "train", tmp_path / "one.json")) == [tmp_path / "one.json"]
    with pytest.raises(SideInputError, match="one JSON file"):
        E.estimate_poses_tree(ds, tmp_path / "all.json")
    with pytest.raises(SideInputError, match="not under the dataset root"):
        E.estimate_poses_tree(ds, tmp_path / "p3", dataset_root=ds / "train")


def test_estimate_parsing_writes_schp_tree(fake_mp, tmp_path):
    ds = tmp_path / "ds"
    a = _person(ds / "train" / "a.png")
    e = _img(ds / "train" / "b.jpeg")
    how = E.estimate_parsing([a, e], tmp_path / "parsing", ds)
    assert how == {str(a): "pose", str(e): "none"}
    lab = read_parsing(tmp_path / "parsing" / "train" / "a.png", expected_size=(40, 100))
    red = np.zeros((100, 40), bool)
    red[20:90, 10:30] = True
    # the mask comes back through the pad crop and the downscale: nearly the red box
    iou = ((lab > 0) & red).sum() / ((lab > 0) | red).sum()
    assert iou > 0.95
    assert not read_parsing(tmp_path / "parsing" / "train" / "b..png").any()  # SCHP's name for .jpeg
    assert E.estimate_parsing([a], tmp_path / "parsing", ds, skip_existing=True) == {str(a): "skipped"}


# ------------------------------------------------------------------------------------------ real mediapipe


def test_real_mediapipe_on_synthcc(tmp_path):
    pytest.importorskip("mediapipe")
    from rlq.data.synth import generate_synthcc

    root = tmp_path / "synthcc"
    generate_synthcc(root, preset="tiny", seed=0, workers=0)
    truth = {k: v for k, v in read_alphapose(root / "poses" / "train" / ALPHAPOSE_FILE).items()}
    images = sorted((root / "train").glob("*.png"))[:12]
    dets = E.estimate_poses(images)
    found = [n for n, d in dets.items() if d and n in truth]
    assert len(found) >= 6
    errs = []
    for n in found:
        t = max(truth[n], key=lambda d: d.score).keypoints
        k = dets[n][0].keypoints
        hgt = t[:, 1].max() - t[:, 1].min()
        ok = k[:, 2] >= 0.3
        errs.append(np.median(np.linalg.norm(k[ok, :2] - t[ok, :2], axis=1)) / hgt)
    assert np.median(errs) < 0.1
    how = E.estimate_parsing(images[:4], tmp_path / "parsing", root)
    for p in images[:4]:
        lab = read_parsing(tmp_path / "parsing" / "train" / p.name)
        assert lab.shape == np.asarray(Image.open(p)).shape[:2]
        assert (how[str(p)] == "pose") == bool(lab.any())
