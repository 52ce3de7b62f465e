"""Side-input readers / writers (docs/datasets.md §5): real-format fixtures, round trips and every error path."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from rlq.data import sidecars as sc
from rlq.errors import ConfigError, SideInputError

# Verbatim rows in the style of the authors' LTCC_Pose_Cluster.csv (48 label columns, floats written as "3.0").
POSE_HEADER = (
    "Category,Image,R_LA_5,R_LAC_5,R_A_5,N_LA_5,N_LAC_5,N_A_5,R_LA_10,R_LAC_10,R_A_10,N_LA_10,N_LAC_10,N_A_10,"
    "R_LA_15,R_LAC_15,R_A_15,N_LA_15,N_LAC_15,N_A_15,R_LA_20,R_LAC_20,R_A_20,N_LA_20,N_LAC_20,N_A_20,R_LA_25,"
    "R_LAC_25,R_A_25,N_LA_25,N_LAC_25,N_A_25,R_LA_30,R_LAC_30,R_A_30,N_LA_30,N_LAC_30,N_A_30,R_LA_35,R_LAC_35,"
    "R_A_35,N_LA_35,N_LAC_35,N_A_35,R_LA_40,R_LAC_40,R_A_40,N_LA_40,N_LAC_40,N_A_40"
)
POSE_ROWS = [
    "train,000_1_c10_001003,3.0,1.0,2.0,1.0,3.0,4.0,8.0,5.0,4.0,3.0,7.0,5.0,10.0,12.0,6.0,11.0,13.0,3.0,1.0,1.0,"
    "15.0,16.0,15.0,1.0,22.0,4.0,19.0,22.0,12.0,25.0,22.0,14.0,28.0,28.0,25.0,25.0,19.0,17.0,19.0,30.0,21.0,21.0,"
    "24.0,7.0,21.0,25.0,24.0,35.0",
    "train,000_1_c10_001007,3.0,1.0,2.0,1.0,3.0,4.0,8.0,5.0,4.0,3.0,7.0,5.0,10.0,12.0,6.0,11.0,5.0,3.0,9.0,1.0,"
    "1.0,5.0,1.0,11.0,1.0,4.0,4.0,5.0,5.0,7.0,1.0,14.0,18.0,1.0,12.0,20.0,26.0,17.0,22.0,2.0,33.0,2.0,14.0,7.0,"
    "17.0,3.0,1.0,8.0",
    "train,010_12_c6_013934," + ",".join(["0.0"] * 48),
]


def write(path, text: str, newline: str = "\n") -> str:
    path.write_bytes(text.replace("\n", newline).encode())
    return str(path)


def assert_error(excinfo, *parts: str) -> None:
    msg = str(excinfo.value)
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


# ------------------------------------------------------------------ gender


def test_gender_real_formats(tmp_path):
    ltcc = write(tmp_path / "LTCC_Gender.csv", "Category,ID,Gender\ntrain,127,1\ntrain,000,1\ntrain,150,0\n")
    assert sc.read_gender_csv(ltcc) == {127: 1, 0: 1, 150: 0}
    dc = write(tmp_path / "DeepChange_Gender.csv", "Category,ID,Gender\ntrain,p0003,1\ntrain,p0007,0\n\n")
    assert sc.read_gender_csv(dc) == {"p0003": 1, "p0007": 0}
    # Celeb-reID's file has a blank line in the middle; LaST does not zero-pad.
    celeb = write(tmp_path / "Celeb.csv", "Category,ID,Gender\ntrain,1,1\n\ntrain,2,0\n", newline="\r\n")
    assert sc.read_gender_csv(celeb) == {1: 1, 2: 0}


def test_gender_match_by_value_and_policies(tmp_path, caplog):
    path = write(tmp_path / "g.csv", "Category,ID,Gender\ntrain,000,1\ntrain,092,0\ntrain,p0003,1\ntrain,500,0\n")
    table = sc.read_gender_csv(path)
    labels, missing = sc.match_gender(["0", "92", "p0003"], table)
    assert labels.tolist() == [1, 0, 1] and missing == []
    # a table keyed by raw text also matches by value
    labels, _ = sc.match_gender(["000", "092"], {"0": 1, "92": 0})
    assert labels.tolist() == [1, 0]
    with pytest.raises(SideInputError) as e:
        sc.match_gender(["000", "7", "8"], table)
    assert_error(e, "2 of 3", "'7'", "'8'", "missing=")
    for policy, fill in (("ignore", -1), ("male", 1), ("female", 0)):
        labels, missing = sc.match_gender(["000", "7"], table, missing=policy)
        assert labels.tolist() == [1, fill] and missing == ["7"]
        assert labels.dtype == np.int64
    with caplog.at_level(logging.WARNING, logger="rlq.data.sidecars"):
        sc.match_gender(["000", "092", "p0003"], table)
    assert "not in the dataset" in caplog.text and "500" in caplog.text
    with pytest.raises(ConfigError):
        sc.match_gender(["0"], table, missing="guess")


def test_gender_categories(tmp_path):
    # LTCC_test_Gender.csv lists each identity under both query and test.
    path = write(tmp_path / "LTCC_test_Gender.csv",
                 "Category,ID,Gender\nquery,001,1\nquery,008,0\ntest,001,1\ntest,008,0\ntest,147,0\n")
    assert sc.read_gender_csv(path) == {1: 1, 8: 0, 147: 0}
    assert sc.read_gender_csv(path, categories=["query"]) == {1: 1, 8: 0}
    with pytest.raises(SideInputError) as e:
        sc.read_gender_csv(path, categories=["train"])
    assert_error(e, "LTCC_test_Gender.csv", "'query'", "'test'")


@pytest.mark.parametrize(
    "body, parts",
    [
        ("", ["empty"]),
        ("Category,ID,Gender\n", ["no data rows"]),
        ("Category,Id,Gender\ntrain,1,1\n", ["line 1", "header"]),
        ("ID,Gender\n1,1\n", ["line 1"]),
        ("Category,ID,Gender\ntrain,001,1\ntrain,002,2\n", ["line 3", "'2'", "0 or 1"]),
        ("Category,ID,Gender\ntrain,001,1\ntrain,002,M\n", ["line 3", "'M'"]),
        ("Category,ID,Gender\ntrain,001,1.0\n", ["line 2", "'1.0'"]),
        ("Category,ID,Gender\ntrain,001,1\ntrain,1,0\n", ["line 3", "conflicting", "'001'", "line 2"]),
        ("Category,ID,Gender\ntrain,001,1\ntrain,001,1\n", ["line 3", "equal", "line 2"]),
        ("Category,ID,Gender\ntrain,001,1\ntrain,002\n", ["line 3", "2 fields"]),
        ("Category,ID,Gender\ntrain,,1\n", ["line 2", "empty ID"]),
    ],
)
def test_gender_errors(tmp_path, body, parts):
    path = write(tmp_path / "bad_gender.csv", body)
    with pytest.raises(SideInputError) as e:
        sc.read_gender_csv(path)
    assert_error(e, "bad_gender.csv", *parts)


def test_gender_unreadable(tmp_path):
    with pytest.raises(SideInputError) as e:
        sc.read_gender_csv(tmp_path / "nope.csv")
    assert_error(e, "nope.csv", "does not exist")
    (tmp_path / "bin.csv").write_bytes(b"Category,ID,Gender\n\xff\xfe,1,1\n")
    with pytest.raises(SideInputError) as e:
        sc.read_gender_csv(tmp_path / "bin.csv")
    assert_error(e, "bin.csv", "UTF-8")


def test_gender_roundtrip(tmp_path):
    rows = [("train", "000", 1), ("train", "092", 0), ("train", "p0003", 1), ("train", "2", 0)]
    path = tmp_path / "out" / "g.csv"
    sc.write_gender_csv(path, rows)
    assert path.read_text().splitlines()[:3] == ["Category,ID,Gender", "train,000,1", "train,092,0"]
    assert sc.read_gender_csv(path) == {0: 1, 92: 0, "p0003": 1, 2: 0}
    with pytest.raises(ValueError):
        sc.write_gender_csv(tmp_path / "x.csv", [("train", "1", 2)])
    assert not (tmp_path / "x.csv").exists()


# ------------------------------------------------------------------ pose clusters


def test_pose_clusters_real_format(tmp_path):
    path = write(tmp_path / "LTCC_Pose_Cluster.csv", POSE_HEADER + "\n" + "\n".join(POSE_ROWS) + "\n")
    assert POSE_HEADER.split(",")[2:] == list(sc.POSE_COLUMNS)
    t = sc.read_pose_clusters(path)
    assert t == {"000_1_c10_001003": 10, "000_1_c10_001007": 10, "010_12_c6_013934": 0}
    assert all(type(v) is int for v in t.values())
    t25 = sc.read_pose_clusters(path, "R_LA_25")
    assert t25 == {"000_1_c10_001003": 22, "000_1_c10_001007": 1, "010_12_c6_013934": 0}
    assert sc.read_pose_clusters(path, "N_A_40")["000_1_c10_001003"] == 35


def test_pose_clusters_roundtrip_subset(tmp_path):
    keys = ["query/001_1_c11_015833", "A/001_cropped_rgb001", "b"]
    cols = {"R_LA_15": [3, 0, 15], "R_LA_25": np.array([1, 2, 25])}
    path = tmp_path / "p.csv"
    sc.write_pose_clusters(path, keys, ["query", "A", "train"], cols)
    lines = path.read_text().splitlines()
    assert lines[0] == "Category,Image,R_LA_15,R_LA_25"
    assert lines[1] == "query,query/001_1_c11_015833,3.0,1.0"
    assert sc.read_pose_clusters(path) == dict(zip(keys, [3, 0, 15]))
    assert sc.read_pose_clusters(path, "R_LA_25") == dict(zip(keys, [1, 2, 25]))
    # full authors' layout round trip
    full = {c: [i, 2 * i] for i, c in enumerate(sc.POSE_COLUMNS)}
    sc.write_pose_clusters(tmp_path / "full.csv", ["k1", "k2"], ["train", "train"], full)
    assert (tmp_path / "full.csv").read_text().splitlines()[0] == POSE_HEADER
    for c in ("R_LA_5", "N_A_40", "R_LAC_20"):
        assert sc.read_pose_clusters(tmp_path / "full.csv", c) == {"k1": full[c][0], "k2": full[c][1]}
    with pytest.raises(ValueError):
        sc.write_pose_clusters(tmp_path / "bad.csv", ["a", "b"], ["train"], {"R_LA_15": [1, 2]})


@pytest.mark.parametrize(
    "body, column, parts",
    [
        ("Category,Image,R_LA_15\ntrain,a,3.5\n", "R_LA_15", ["line 2", "'3.5'"]),
        ("Category,Image,R_LA_15\ntrain,a,1.0\ntrain,b,-1.0\n", "R_LA_15", ["line 3", "'-1.0'"]),
        ("Category,Image,R_LA_15\ntrain,a,nan\n", "R_LA_15", ["line 2", "'nan'"]),
        ("Category,Image,R_LA_15\ntrain,a,\n", "R_LA_15", ["line 2"]),
        ("Category,Image,R_LA_15,R_LA_25\ntrain,a,1.0,2.0\n", "R_LA_10", ["'R_LA_10'", "R_LA_15", "R_LA_25"]),
        ("Category,Image,R_LA_15\ntrain,a,1.0\ntrain,a,2.0\n", "R_LA_15", ["line 3", "duplicate", "'a'"]),
        ("Category,Image,R_LA_15\ntrain,a,1.0\ntrain,a,1.0\n", "R_LA_15", ["line 3", "equal", "line 2"]),
        ("Category,Image,R_LA_15\ntrain,a,1.0,2.0\n", "R_LA_15", ["line 2", "3 as in the header"]),
        ("Image,R_LA_15\na,1.0\n", "R_LA_15", ["line 1", "Category,Image"]),
        ("Category,Image,R_LA_15\n", "R_LA_15", ["no data rows"]),
        ("", "R_LA_15", ["empty"]),
    ],
)
def test_pose_cluster_errors(tmp_path, body, column, parts):
    path = write(tmp_path / "bad_pose.csv", body)
    with pytest.raises(SideInputError) as e:
        sc.read_pose_clusters(path, column)
    assert_error(e, "bad_pose.csv", *parts)


def test_check_coverage(tmp_path):
    table = {"a": 1, "b": 2}
    sc.check_coverage(["a", "b"], table, "pose table", tmp_path / "p.csv")
    with pytest.raises(SideInputError) as e:
        sc.check_coverage(["a", "c", "d", "b"], table, "pose table", tmp_path / "p.csv")
    assert_error(e, "p.csv", "pose table", "2 of 4", "'c'", "'d'")


# ------------------------------------------------------------------ faulty lists


def test_key_lists(tmp_path):
    # LTCC's pant file has no trailing newline; a CRLF copy and blank lines must read the same.
    pant = write(tmp_path / "LTCC_Pant_faulty.csv", "000_2_c8_001135\n001_1_c11_015833\n151_6_c9_0127779")
    crlf = write(tmp_path / "crlf.csv", "000_2_c8_001135\n\n001_1_c11_015833\n151_6_c9_0127779\n\n", "\r\n")
    shirt = write(tmp_path / "LTCC_Shirt_faulty.csv", "004_1_c2_000412\n151_6_c9_0127779\n")
    expected = {"000_2_c8_001135", "001_1_c11_015833", "151_6_c9_0127779"}
    assert sc.read_key_list(pant) == expected
    assert sc.read_key_list(crlf) == expected
    assert sc.read_faulty(pant, shirt) == expected | {"004_1_c2_000412"}
    assert sc.read_faulty(None, shirt) == {"004_1_c2_000412", "151_6_c9_0127779"}
    assert sc.read_faulty(None, None) == set()
    with pytest.raises(SideInputError) as e:
        sc.read_faulty(pant, tmp_path / "missing_shirt.csv")
    assert_error(e, "missing_shirt.csv")
    csvlike = write(tmp_path / "gender_not_list.csv", "Category,ID,Gender\ntrain,1,1\n")
    with pytest.raises(SideInputError) as e:
        sc.read_key_list(csvlike)
    assert_error(e, "gender_not_list.csv", "line 1", "comma")


# ------------------------------------------------------------------ sizes


def test_size_bucket_edges():
    # rlq's documented edges: lower edge inclusive.
    cases = {0: "<32", 31: "<32", 32: "32-64", 63: "32-64", 64: "64-128", 127: "64-128", 128: "128-256",
             255: "128-256", 256: ">256", 4000: ">256"}
    for h, b in cases.items():
        assert sc.size_bucket(h) == b
    assert sc.SIZE_BUCKETS == ("<32", "32-64", "64-128", "128-256", ">256")
    with pytest.raises(ValueError):
        sc.size_bucket(-1)


def test_size_csv(tmp_path):
    body = ("Category,Image,<32,32-64,64-128,128-256,>256\ntrain,092/B_cropped_rgb118.jpg,0,0,0,1,0\n"
            "train,092/A_cropped_rgb001.jpg,0,0,1,0,0\ntest,A/001/cropped_rgb001.jpg,1,0,0,0,0\n"
            "query,001_1_c11_015833.png,0,0,0,0,1\n")
    # PRCC_Size.csv lists 255/C_cropped_rgb064.jpg under both train and val, with equal buckets.
    body += "val,092/A_cropped_rgb001.jpg,0,0,1,0,0\n"
    path = write(tmp_path / "PRCC_Size.csv", body)
    assert sc.read_size_csv(path) == {
        "092/B_cropped_rgb118.jpg": "128-256", "092/A_cropped_rgb001.jpg": "64-128",
        "A/001/cropped_rgb001.jpg": "<32", "001_1_c11_015833.png": ">256",
    }


@pytest.mark.parametrize(
    "rows, parts",
    [
        ("train,a,0,1,1,0,0\n", ["line 2", "one-hot"]),
        ("train,a,0,0,0,0,0\n", ["line 2", "one-hot"]),
        ("train,a,0,2,0,0,0\n", ["line 2", "one-hot"]),
        ("train,a,0,x,1,0,0\n", ["line 2", "one-hot"]),
        ("train,a,0,1,0,0,0\ntrain,a,0,1,0,0,0\n", ["line 3", "duplicate", "equal"]),
        ("train,a,0,1,0,0,0\nval,a,1,0,0,0,0\n", ["line 3", "duplicate", "conflicting", "'<32'"]),
        ("train,a,0,1,0,0\n", ["line 2", "fields"]),
    ],
)
def test_size_csv_errors(tmp_path, rows, parts):
    path = write(tmp_path / "bad_size.csv", "Category,Image,<32,32-64,64-128,128-256,>256\n" + rows)
    with pytest.raises(SideInputError) as e:
        sc.read_size_csv(path)
    assert_error(e, "bad_size.csv", *parts)
    with pytest.raises(SideInputError) as e:
        sc.read_size_csv(write(tmp_path / "hdr.csv", "Category,Image,small,big\ntrain,a,1,0\n"))
    assert_error(e, "hdr.csv", "line 1")


# ------------------------------------------------------------------ quality


def test_quality_roundtrip(tmp_path):
    rows = [("train", "0001_c1_o0_0001", "clean", 0, 0.0), ("query", "0002_c2_o1_0003", "pixelation", 2, 24.0),
            ("gallery", "g/3", "defocus", 3, 2.35), ("train", "x", "motion", 1, 1 / 3)]
    path = tmp_path / "quality.csv"
    sc.write_quality_csv(path, rows)
    assert path.read_text().splitlines()[0] == "Category,Image,Artifact,Severity,Param"
    got = sc.read_quality_csv(path)
    assert got == {k: (a, s, p) for _, k, a, s, p in rows}
    assert all(type(s) is int for _, s, _ in got.values())
    with pytest.raises(ValueError):
        sc.write_quality_csv(tmp_path / "q2.csv", [("train", "a", "clean", 1, 0.0)])


@pytest.mark.parametrize(
    "row, parts",
    [
        ("train,a,blur,1,2.0", ["'blur'"]),
        ("train,a,defocus,4,2.0", ["Severity 4"]),
        ("train,a,defocus,0,2.0", ["Severity 0"]),
        ("train,a,clean,1,0", ["Severity 1"]),
        ("train,a,clean,0,3.0", ["Param 3.0"]),
        ("train,a,motion,2,-1", ["Param -1"]),
        ("train,a,motion,two,5", ["'two'"]),
        ("train,a,motion,2,inf", ["'inf'"]),
        ("train,ok,motion,2,3", ["duplicate", "conflicting"]),
    ],
)
def test_quality_errors(tmp_path, row, parts):
    path = write(tmp_path / "bad_quality.csv", "Category,Image,Artifact,Severity,Param\ntrain,ok,clean,0,0\n" + row)
    with pytest.raises(SideInputError) as e:
        sc.read_quality_csv(path)
    assert_error(e, "bad_quality.csv", "line 3", *parts)


# ------------------------------------------------------------------ keypoints


def kp(seed: int, scale: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.uniform(0, scale, size=(17, 3))
    out[:, 2] = rng.uniform(0, 1, size=17)
    return out


def ap_entry(image_id, keypoints, score, box=None, **extra):
    e = {"image_id": image_id, "category_id": 1, "keypoints": np.asarray(keypoints).reshape(-1).tolist(),
         "score": score, **extra}
    if box is not None:
        e["box"] = box
    return e


def test_alphapose_read_real_style(tmp_path):
    entries = [ap_entry("a.jpg", kp(0), 2.9, [1, 2, 30, 60], idx=[0]),
               ap_entry("b.jpg", kp(1), 1.5), ap_entry("a.jpg", kp(2), 0.7, [5, 5, 10, 10])]
    path = tmp_path / "alphapose-results.json"
    path.write_text(json.dumps(entries))
    got = sc.read_alphapose(path)
    assert list(got) == ["a.jpg", "b.jpg"] and len(got["a.jpg"]) == 2
    d = got["a.jpg"][0]
    assert d.keypoints.shape == (17, 3) and d.keypoints.dtype == np.float64
    np.testing.assert_array_equal(d.keypoints, kp(0))
    assert d.score == 2.9 and d.box == (1.0, 2.0, 30.0, 60.0) and got["b.jpg"][0].box is None
    assert not d.keypoints.flags.writeable


def test_alphapose_roundtrip(tmp_path):
    dets = {"x.png": [sc.Detection(kp(3), 1.25, (0.5, 1.0, 20.0, 40.0)), sc.Detection(kp(4), 0.5)],
            "y.png": [sc.Detection(kp(5).reshape(-1), 3.0)]}
    path = tmp_path / "sub" / "alphapose-results.json"
    sc.write_alphapose(path, dets)
    raw = json.loads(path.read_text())
    assert [e["category_id"] for e in raw] == [1, 1, 1] and len(raw[0]["keypoints"]) == 51
    assert "box" in raw[0] and "box" not in raw[1]
    assert sc.read_alphapose(path) == dets


@pytest.mark.parametrize(
    "entry, parts",
    [
        ({"keypoints": [0.0] * 51, "score": 1.0}, ["entry 1", "'image_id'"]),
        ({"image_id": 3, "keypoints": [0.0] * 51, "score": 1.0}, ["entry 1", "'image_id'"]),
        ({"image_id": "b.jpg", "keypoints": [0.0] * 50, "score": 1.0}, ["entry 1", "'keypoints'", "50"]),
        ({"image_id": "b.jpg", "keypoints": [0.0] * 50 + ["x"], "score": 1.0}, ["entry 1", "'keypoints'"]),
        ({"image_id": "b.jpg", "keypoints": [0.0] * 50 + [float("nan")], "score": 1.0}, ["entry 1", "'keypoints'"]),
        ({"image_id": "b.jpg", "keypoints": [0.0] * 51, "score": float("nan")}, ["entry 1", "'score'"]),
        ({"image_id": "b.jpg", "keypoints": [0.0] * 51}, ["entry 1", "'score'"]),
        ({"image_id": "b.jpg", "keypoints": [0.0] * 51, "score": 1, "box": [1, 2, 3]}, ["entry 1", "'box'"]),
        ({"image_id": "b.jpg", "keypoints": [True] * 51, "score": 1}, ["entry 1", "'keypoints'"]),
    ],
)
def test_alphapose_errors(tmp_path, entry, parts):
    path = tmp_path / "bad_pose.json"
    path.write_text(json.dumps([ap_entry("a.jpg", kp(0), 1.0), entry]))
    with pytest.raises(SideInputError) as e:
        sc.read_alphapose(path)
    assert_error(e, "bad_pose.json", *parts)


def test_alphapose_file_errors(tmp_path):
    for name, text, part in (("notjson.json", "[{", "not valid JSON"), ("obj.json", "{}", "list"),
                             ("item.json", "[1]", "entry 0")):
        (tmp_path / name).write_text(text)
        with pytest.raises(SideInputError) as e:
            sc.read_alphapose(tmp_path / name)
        assert_error(e, name, part)


def test_select_person():
    assert sc.select_person([]) is None
    small = sc.Detection(kp(0), 2.0, (0, 0, 10, 10))
    big = sc.Detection(kp(1), 2.0, (0, 0, 20, 30))
    best = sc.Detection(kp(2), 2.5, (0, 0, 1, 1))
    assert sc.select_person([small, big]) is big
    assert sc.select_person([big, small]) is big
    assert sc.select_person([small, big, best]) is best
    # without boxes the keypoints' extent decides ties
    a = sc.Detection(kp(3, scale=10.0), 1.0)
    b = sc.Detection(kp(4, scale=100.0), 1.0)
    assert sc.select_person([a, b]) is b
    # a full tie keeps file order
    twin = sc.Detection(kp(9), 2.0, (5, 5, 20, 30))
    assert sc.select_person([big, twin]) is big and sc.select_person([twin, big]) is twin


def test_alphapose_tree(tmp_path):
    root = tmp_path / "LTCC_ReID"
    for leaf, names in (("train", ["001_1_c1_0001.png", "001_1_c1_0002.png", "002_1_c2_0001.png"]),
                        ("query", ["003_1_c1_0009.png"])):
        (root / leaf).mkdir(parents=True)
        for n in names:
            (root / leaf / n).write_bytes(b"")
    pose = tmp_path / "pose"
    hi = sc.Detection(kp(0), 3.0, (0, 0, 5, 5))
    lo = sc.Detection(kp(1), 1.0, (0, 0, 50, 50))
    q = sc.Detection(kp(2), 0.9)
    sc.write_alphapose(pose / "train" / sc.ALPHAPOSE_FILE, {"001_1_c1_0001.png": [lo, hi],
                                                           "002_1_c2_0001.png": [lo]})
    sc.write_alphapose(pose / "query" / sc.ALPHAPOSE_FILE, {"003_1_c1_0009.png": [q]})
    samples = [str(root / "train" / "001_1_c1_0001.png"), str(root / "train" / "001_1_c1_0002.png"),
               str(root / "train" / "002_1_c2_0001.png"), str(root / "query" / "003_1_c1_0009.png")]
    got = sc.read_alphapose_tree(pose, root, samples)
    assert list(got) == samples
    assert got[samples[0]] == hi and got[samples[1]] is None and got[samples[2]] == lo and got[samples[3]] == q
    # a subset of samples still resolves other images of the leaf folder on disk
    assert sc.read_alphapose_tree(pose, root, samples[:1]) == {samples[0]: hi}
    # a missing leaf file means null pose
    (pose / "query" / sc.ALPHAPOSE_FILE).unlink()
    assert sc.read_alphapose_tree(pose, root, samples[3:]) == {samples[3]: None}
    # a stray image id (an image of another leaf) is an error naming the file and the id
    sc.write_alphapose(pose / "query" / sc.ALPHAPOSE_FILE, {"001_1_c1_0001.png": [q]})
    with pytest.raises(SideInputError) as e:
        sc.read_alphapose_tree(pose, root, samples)
    assert_error(e, str(pose / "query" / sc.ALPHAPOSE_FILE), "'001_1_c1_0001.png'")
    with pytest.raises(SideInputError) as e:
        sc.read_alphapose_tree(tmp_path / "no_pose", root, samples)
    assert_error(e, "no_pose")
    with pytest.raises(SideInputError):
        sc.read_alphapose_tree(pose, root / "train", samples)


def test_alphapose_tree_flat_file(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    samples = [str(root / "a.jpg"), str(root / "b.jpg")]
    d = sc.Detection(kp(0), 1.0)
    sc.write_alphapose(tmp_path / "all.json", {"b.jpg": [d]})
    assert sc.read_alphapose_tree(tmp_path / "all.json", root, samples) == {samples[0]: None, samples[1]: d}
    sc.write_alphapose(tmp_path / "stray.json", {"zzz.jpg": [d]})
    with pytest.raises(SideInputError) as e:
        sc.read_alphapose_tree(tmp_path / "stray.json", root, samples)
    assert_error(e, "stray.json", "'zzz.jpg'")


def test_coco_keypoints(tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "train/a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                   {"id": 3, "file_name": "c.jpg"}],
        "annotations": [
            {"image_id": 1, "keypoints": kp(0).reshape(-1).tolist(), "bbox": [0, 0, 10, 20], "score": 0.8},
            {"image_id": 1, "keypoints": kp(1).reshape(-1).tolist(), "bbox": [0, 0, 30, 20]},
            {"image_id": 2, "keypoints": kp(2).reshape(-1).tolist()},
        ],
    }
    (tmp_path / "person_keypoints.json").write_text(json.dumps(coco))
    got = sc.read_coco_keypoints(tmp_path / "person_keypoints.json")
    assert set(got) == {"a.jpg", "b.jpg", "c.jpg"} and got["c.jpg"] == []
    assert got["a.jpg"][0].score == 0.8 and got["a.jpg"][1].score == 1.0
    assert got["a.jpg"][1].box == (0.0, 0.0, 30.0, 20.0)
    np.testing.assert_array_equal(got["b.jpg"][0].keypoints, kp(2))
    assert sc.select_person(got["a.jpg"]) is got["a.jpg"][1]
    coco["annotations"].append({"image_id": 9, "keypoints": [0] * 51})
    (tmp_path / "bad_coco.json").write_text(json.dumps(coco))
    with pytest.raises(SideInputError) as e:
        sc.read_coco_keypoints(tmp_path / "bad_coco.json")
    assert_error(e, "bad_coco.json", "annotations[3]", "image_id")


# ------------------------------------------------------------------ parsing maps


def test_lip_constants():
    assert len(sc.LIP_LABELS) == 20 and sc.LIP_LABELS[5] == "upper-clothes" and sc.LIP_LABELS[19] == "right-shoe"
    # PASCAL VOC colour map, as SCHP's get_palette(20) builds it
    voc = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
           (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
           (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0)]
    assert list(sc.LIP_PALETTE) == voc
    assert sc.ALL_CLOTHES_IDS == (1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 18, 19)
    assert set(sc.UPPER_IDS) | set(sc.LOWER_IDS) < set(sc.ALL_CLOTHES_IDS)


def test_schp_names(tmp_path):
    assert sc.schp_output_name("a.jpg") == "a.png"
    # SCHP: img_name[:-4] + ".png", so a 5-character extension leaves a stray dot ("a.jpeg"[:-4] == "a.")
    assert sc.schp_output_name("a.jpeg") == "a..png"
    assert sc.schp_output_name("cropped_rgb001.jpeg") == "cropped_rgb001..png"
    assert sc.schp_output_name("092_A.png") == "092_A.png"
    root = tmp_path / "prcc" / "rgb"
    got = sc.parsing_path(tmp_path / "parse", root, root / "train" / "092" / "A_cropped_rgb001.jpg")
    assert got == tmp_path / "parse" / "train" / "092" / "A_cropped_rgb001.png"
    assert sc.parsing_path("p", root, "query/x.jpeg") == sc.parsing_path("p", root, root / "query" / "x.jpeg")
    with pytest.raises(SideInputError):
        sc.parsing_path("p", root, tmp_path / "elsewhere" / "x.jpg")


def test_read_parsing_formats_agree(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, size=(7, 5)).astype(np.uint8)
    sc.write_parsing(tmp_path / "p.png", labels)
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P" and im.size == (5, 7)
        assert im.getpalette()[:60] == [c for rgb in sc.LIP_PALETTE for c in rgb]
    Image.fromarray(labels).save(tmp_path / "l.png")  # grey "L"
    logits = rng.normal(size=(7, 5, 20)).astype(np.float32)
    logits[np.arange(7)[:, None], np.arange(5)[None, :], labels] += 100.0
    np.save(tmp_path / "p.npy", logits)
    for name in ("p.png", "l.png", "p.npy"):
        got = sc.read_parsing(tmp_path / name, expected_size=(5, 7))
        assert got.dtype == np.uint8 and got.shape == (7, 5)
        np.testing.assert_array_equal(got, labels)


def test_read_parsing_errors(tmp_path):
    bad = np.zeros((4, 6), np.uint8)
    bad[0, 0], bad[1, 1] = 20, 255
    Image.fromarray(bad).save(tmp_path / "over.png")
    with pytest.raises(SideInputError) as e:
        sc.read_parsing(tmp_path / "over.png")
    assert_error(e, "over.png", "20", "255")
    sc.write_parsing(tmp_path / "ok.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(SideInputError) as e:
        sc.read_parsing(tmp_path / "ok.png", expected_size=(4, 6))
    assert_error(e, "ok.png", "6x4", "4x6")
    Image.new("RGB", (3, 3)).save(tmp_path / "rgb.png")
    with pytest.raises(SideInputError) as e:
        sc.read_parsing(tmp_path / "rgb.png")
    assert_error(e, "rgb.png", "'RGB'")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(SideInputError) as e:
        sc.read_parsing(tmp_path / "junk.png")
    assert_error(e, "junk.png")
    np.save(tmp_path / "wrong.npy", np.zeros((4, 6, 19), np.float32))
    with pytest.raises(SideInputError) as e:
        sc.read_parsing(tmp_path / "wrong.npy")
    assert_error(e, "wrong.npy", "19")
    with pytest.raises(SideInputError) as e:
        sc.read_parsing(tmp_path / "absent.png")
    assert_error(e, "absent.png", "does not exist")
    with pytest.raises(ValueError):
        sc.write_parsing(tmp_path / "w.png", np.full((2, 2), 20))


def _save_mask(path, m: np.ndarray) -> None:
    Image.fromarray(np.repeat(m[..., None].astype(np.uint8) * 255, 3, axis=2)).save(path)


def test_legacy_masks_to_regions(tmp_path):
    rng = np.random.default_rng(1)
    lip = rng.integers(0, 20, size=(9, 6))
    # The authors' masks, cut from a LIP map as in docs/datasets.md §5.2.
    parts = {"shirt": np.isin(lip, (5, 7, 10)), "pant": np.isin(lip, (9, 12)),
             "clothes": np.isin(lip, (1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 18, 19))}
    key = "092_A_cropped_rgb001"
    for part, m in parts.items():
        _save_mask(tmp_path / f"{key}_{part}.png", m)
    _save_mask(tmp_path / f"{key}_sil.png", lip > 0)  # unused part, ignored
    masks = sc.read_legacy_masks(tmp_path, key)
    assert set(masks) == {"shirt", "pant", "clothes"}
    for part in parts:
        assert masks[part].dtype == bool
        np.testing.assert_array_equal(masks[part], parts[part])
    labels = sc.legacy_masks_to_labels(masks)
    regions = sc.lip_region_masks(labels)
    np.testing.assert_array_equal(regions["upper"], parts["shirt"])
    np.testing.assert_array_equal(regions["lower"], parts["pant"])
    np.testing.assert_array_equal(regions["all"], parts["clothes"])
    # and they equal the regions of the original label map
    orig = sc.lip_region_masks(lip)
    for r in ("upper", "lower", "all"):
        np.testing.assert_array_equal(regions[r], orig[r])
    (tmp_path / f"{key}_pant.png").unlink()
    with pytest.raises(SideInputError) as e:
        sc.read_legacy_masks(tmp_path, key)
    assert_error(e, f"{key}_pant.png")
    _save_mask(tmp_path / f"{key}_pant.png", np.zeros((3, 3), bool))
    with pytest.raises(SideInputError) as e:
        sc.read_legacy_masks(tmp_path, key)
    assert_error(e, key, "size")


def test_non_ascii_digit_ids_stay_text(tmp_path):
    """'1²' is not the number 1: canonical_id keeps it as text instead of crashing or merging it with '1'."""
    table = sc.read_gender_csv(write(tmp_path / "g.csv", "Category,ID,Gender\ntrain,1\u00b2,1\ntrain,1,0\n"))
    assert table == {"1\u00b2": 1, 1: 0}


# ------------------------------------------------------------------ spreadsheet formula injection (CSV files rlq writes)

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+cmd", "-2+3", "@SUM(A1)", "'=already quoted", "''-x"]


def _raw_cells(path):
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_csv_files_neutralise_formula_cells_and_read_back_exactly(tmp_path):
    """OWASP CSV injection: a cell starting with = + - @ is prefixed with ' (a spreadsheet shows it as text);
    rlq's own readers drop that quote, so every table round-trips; numbers (-1, -0.5) stay numbers."""
    ids = FORMULAS + ["-1", "p01"]
    sc.write_gender_csv(tmp_path / "g.csv", [("train", k, i % 2) for i, k in enumerate(ids)])
    cells = [r[1] for r in _raw_cells(tmp_path / "g.csv")[1:]]
    assert cells[:6] == ["'" + k for k in FORMULAS] and cells[6:] == ["-1", "p01"]
    assert sc.read_gender_csv(tmp_path / "g.csv") == {k: i % 2 for i, k in enumerate(ids)}

    sc.write_pose_clusters(tmp_path / "p.csv", ids, ["train"] * len(ids), {"R_LA_15": list(range(len(ids)))})
    assert [r[1] for r in _raw_cells(tmp_path / "p.csv")[1:]][:6] == ["'" + k for k in FORMULAS]
    assert sc.read_pose_clusters(tmp_path / "p.csv") == {k: i for i, k in enumerate(ids)}

    rows = [("train", k, "motion", 1, 1e-05 if i == 0 else 1.5) for i, k in enumerate(ids)]
    sc.write_quality_csv(tmp_path / "q.csv", rows)
    raw = _raw_cells(tmp_path / "q.csv")
    assert raw[1][1] == "'" + FORMULAS[0] and raw[1][3:] == ["1", "1e-05"]
    assert sc.read_quality_csv(tmp_path / "q.csv") == {k: (a, s, p) for _, k, a, s, p in rows}


def test_csv_cell_rule():
    from rlq.io import csv_cell, csv_cell_value

    for v in ["=1+1", "+x", "-x", "@x", "\tx", "\rx", "'=x", "''@x"]:
        assert csv_cell(v) == "'" + v and csv_cell_value(csv_cell(v)) == v
    for v in ["-1", "-0.25", "+3", "1e-05", "-2.5E+3", "abc", "'abc", "", "a=b"]:
        assert csv_cell(v) == v and csv_cell_value(v) == v
    assert csv_cell(-1) == "-1" and csv_cell(-0.5) == "-0.5"
