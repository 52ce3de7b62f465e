"""Folder-dataset parsers: exact records and protocols on tiny trees of every layout (docs/datasets.md §1, §3, §6)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset_trees import (
    CELEB_FILES,
    DEEPCHANGE_FILES,
    LTCC_FILES,
    WRITERS,
    write_celebreid,
    write_deepchange,
    write_image,
    write_last,
    write_ltcc,
    write_prcc,
    write_synthcc,
    write_vcclothes,
)
from rlq.data.datasets import DATASET_INFO, DATASET_NAMES, layout_missing, load_dataset
from rlq.data.records import EvalSpec
from rlq.errors import DatasetError, RlqError


def rows(samples, root):
    """(relative path, pid, camid, clothes_id, key) per sample."""
    return [(Path(s.path).relative_to(root).as_posix(), s.pid, s.camid, s.clothes_id, s.key) for s in samples]


# ----------------------------------------------------------------------------------------------- LTCC


def test_ltcc_exact_records(tmp_path):
    root = write_ltcc(tmp_path / "LTCC_ReID")
    ds = load_dataset("ltcc", root)
    assert ds.name == "ltcc" and ds.root == str(root)
    assert list(ds.splits) == ["train", "query", "gallery"]
    # Train: pids 001, 003, 010 -> 0, 1, 2; outfits "001_1" < "001_2" < "003_1" < "003_2" < "010_1"; camid = c - 1.
    assert rows(ds.train, root) == [
        ("train/001_1_c1_000001.png", 0, 0, 0, "001_1_c1_000001"),
        ("train/001_1_c2_000002.png", 0, 1, 0, "001_1_c2_000002"),
        ("train/001_2_c3_000003.png", 0, 2, 1, "001_2_c3_000003"),
        ("train/003_1_c11_000004.png", 1, 10, 2, "003_1_c11_000004"),
        ("train/003_2_c12_000005.png", 1, 11, 3, "003_2_c12_000005"),
        ("train/010_1_c1_000006.png", 2, 0, 4, "010_1_c1_000006"),
    ]
    assert (ds.num_train_pids, ds.num_train_clothes) == (3, 5)
    assert ds.train_pid_names == ("001", "003", "010")
    assert ds.train_clothes_names == ("001_1", "001_2", "003_1", "003_2", "010_1")
    expected_p2c = np.zeros((3, 5), bool)
    expected_p2c[0, [0, 1]] = expected_p2c[1, [2, 3]] = expected_p2c[2, 4] = True
    np.testing.assert_array_equal(ds.pid2clothes, expected_p2c)
    assert ds.train[0].meta["raw_pid"] == "001" and ds.train[0].meta["outfit"] == "001_1"
    # Test pids stay raw; outfits relabelled over query ∪ gallery: 002_1, 002_2, 004_1, 004_3, 005_1 -> 0..4.
    assert rows(ds.split("query"), root) == [
        ("query/002_1_c1_000010.png", 2, 0, 0, "query/002_1_c1_000010"),
        ("query/004_1_c2_000011.png", 4, 1, 2, "query/004_1_c2_000011"),
    ]
    assert rows(ds.split("gallery"), root) == [
        ("test/002_1_c1_000022.png", 2, 0, 0, "test/002_1_c1_000022"),
        ("test/002_1_c2_000020.png", 2, 1, 0, "test/002_1_c2_000020"),
        ("test/002_2_c3_000021.png", 2, 2, 1, "test/002_2_c3_000021"),
        ("test/004_3_c4_000023.png", 4, 3, 3, "test/004_3_c4_000023"),
        ("test/005_1_c5_000024.png", 5, 4, 4, "test/005_1_c5_000024"),
    ]
    proto = ds.protocols["test"]
    assert proto.specs == (
        EvalSpec("general", "query", "gallery", "general"),
        EvalSpec("cc", "query", "gallery", "cc"),
        EvalSpec("sc", "query", "gallery", "sc"),
    )
    assert proto.selection == "cc" and not proto.clothes_derived
    assert set(ds.protocols) == {"test"}
    assert ds.skipped == ()


def test_ltcc_root_inside_data_cc_gives_same_clothes(tmp_path):
    """Pitfall 1: parent folders named data_cc / reid_code must not change any label."""
    plain = load_dataset("ltcc", write_ltcc(tmp_path / "plain" / "LTCC_ReID"))
    nested = load_dataset("ltcc", write_ltcc(tmp_path / "data_cc" / "reid_code" / "LTCC_ReID"))

    def labels(ds):
        return {n: [(s.pid, s.camid, s.clothes_id, s.key) for s in ss] for n, ss in ds.splits.items()}

    assert labels(plain) == labels(nested)
    assert nested.num_train_clothes == 5 and len({s.clothes_id for s in nested.train}) == 5
    np.testing.assert_array_equal(plain.pid2clothes, nested.pid2clothes)


def test_ltcc_pids_numeric_ascending(tmp_path):
    files = ["train/10_1_c1_000001.png", "train/2_1_c1_000002.png", "train/2_2_c2_000003.png", "query/5_1_c1_1.png", "test/5_1_c2_2.png"]
    ds = load_dataset("ltcc", write_ltcc(tmp_path / "r", files, junk=False))
    # String order would put "10" first; numeric order gives 2 -> 0, 10 -> 1.
    assert [(Path(s.path).name, s.pid) for s in ds.train] == [
        ("10_1_c1_000001.png", 1),
        ("2_1_c1_000002.png", 0),
        ("2_2_c2_000003.png", 0),
    ]
    assert ds.train_pid_names == ("2", "10")


def test_ltcc_zero_padding_variants_are_an_error(tmp_path):
    files = [*LTCC_FILES, "train/1_1_c1_000099.png"]  # "1" and "001" spell one identity two ways
    with pytest.raises(DatasetError, match="zero padding"):
        load_dataset("ltcc", write_ltcc(tmp_path / "r", files))


def test_ltcc_junk_ignored_uppercase_extension_accepted(tmp_path):
    root = write_ltcc(tmp_path / "r")  # writes Thumbs.db, .DS_Store, notes.txt and info/
    (root / "train" / "001_1_c1_000001.png").rename(root / "train" / "001_1_c1_000001.PNG")
    ds = load_dataset("ltcc", root)
    assert len(ds.train) == 6 and ds.skipped == ()
    assert Path(ds.train[0].path).name == "001_1_c1_000001.PNG" and ds.train[0].key == "001_1_c1_000001"


@pytest.mark.parametrize("bad_name", ["001_1_c1_000001.jpg", "001-1-c1-000001.png", "a01_1_c1_000001.png", "001_1_c0_000007.png"])
def test_ltcc_unparsable_name_strict_and_lenient(tmp_path, bad_name):
    root = write_ltcc(tmp_path / "r")
    write_image(root / "train" / bad_name)
    with pytest.raises(DatasetError) as ei:
        load_dataset("ltcc", root)
    msg = str(ei.value)
    assert bad_name in msg and "skip_bad=True" in msg and "--skip-bad" in msg
    if "_c0_" not in bad_name:
        assert "PPP_O_cCC_FFFFFF.png" in msg
    ds = load_dataset("ltcc", root, skip_bad=True)
    assert len(ds.skipped) == 1 and ds.skipped[0].startswith(str(root / "train" / bad_name) + ": ")
    assert len(ds.train) == 6


def test_ltcc_missing_root_and_folder(tmp_path):
    with pytest.raises(DatasetError) as ei:
        load_dataset("ltcc", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(ei.value) and "LTCC_ReID/" in str(ei.value)
    root = write_ltcc(tmp_path / "r")
    shutil.rmtree(root / "query")
    with pytest.raises(DatasetError) as ei:
        load_dataset("ltcc", root)
    assert "'query/'" in str(ei.value) and "LTCC_ReID/" in str(ei.value) and "test/" in str(ei.value)
    assert layout_missing("ltcc", root) == ["query/"]


def test_ltcc_empty_split_is_an_error(tmp_path):
    root = write_ltcc(tmp_path / "r", [f for f in LTCC_FILES if not f.startswith("query/")])
    with pytest.raises(DatasetError, match="split 'query' has no usable images"):
        load_dataset("ltcc", root)
    # Lenient mode does not turn an all-bad split into an empty one silently either.
    root2 = write_ltcc(tmp_path / "r2", [f for f in LTCC_FILES if not f.startswith("query/")] + ["query/x.png"])
    with pytest.raises(DatasetError, match="split 'query'"):
        load_dataset("ltcc", root2, skip_bad=True)


def test_synthcc_uses_ltcc_parser_with_its_own_name(tmp_path):
    ds = load_dataset("synthcc", write_synthcc(tmp_path / "s"))
    ref = load_dataset("ltcc", write_ltcc(tmp_path / "l"))
    assert ds.name == "synthcc"
    assert [(s.pid, s.camid, s.clothes_id, s.key) for s in ds.train] == [(s.pid, s.camid, s.clothes_id, s.key) for s in ref.train]
    assert ds.protocols == ref.protocols
    assert DATASET_INFO["synthcc"].stats == {}


# ----------------------------------------------------------------------------------------------- PRCC


def test_prcc_exact_records(tmp_path):
    root = write_prcc(tmp_path / "prcc")
    ds = load_dataset("prcc", root)
    assert list(ds.splits) == ["train", "val", "gallery", "query_b", "query_c"]
    # Outfit <pid> for A and B, <pid>C for C: "001" < "001C" < "092" < "092C"; key "<pid folder>_<stem>".
    assert rows(ds.train, root) == [
        ("rgb/train/001/A_cropped_rgb001.jpg", 0, 0, 0, "001_A_cropped_rgb001"),
        ("rgb/train/001/B_cropped_rgb002.jpg", 0, 1, 0, "001_B_cropped_rgb002"),
        ("rgb/train/001/C_cropped_rgb003.jpg", 0, 2, 1, "001_C_cropped_rgb003"),
        ("rgb/train/092/A_cropped_rgb001.jpg", 1, 0, 2, "092_A_cropped_rgb001"),
        ("rgb/train/092/C_cropped_rgb002.jpg", 1, 2, 3, "092_C_cropped_rgb002"),
    ]
    assert ds.train_clothes_names == ("001", "001C", "092", "092C")
    np.testing.assert_array_equal(ds.pid2clothes, [[1, 1, 0, 0], [0, 0, 1, 1]])
    assert rows(ds.split("val"), root) == [
        ("rgb/val/001/A_cropped_rgb004.jpg", 1, 0, 0, "001_A_cropped_rgb004"),
        ("rgb/val/001/C_cropped_rgb005.jpg", 1, 2, 1, "001_C_cropped_rgb005"),
        ("rgb/val/092/B_cropped_rgb003.jpg", 92, 1, 2, "092_B_cropped_rgb003"),
    ]
    # Derived test clothes: j = rank among test-A identities (005 -> 0, 012 -> 1): A/B 2j, C 2j+1.
    assert rows(ds.split("gallery"), root) == [
        ("rgb/test/A/005/cropped_rgb001.jpg", 5, 0, 0, "A/005_cropped_rgb001"),
        ("rgb/test/A/012/cropped_rgb001.jpg", 12, 0, 2, "A/012_cropped_rgb001"),
        ("rgb/test/A/012/cropped_rgb002.jpg", 12, 0, 2, "A/012_cropped_rgb002"),
    ]
    assert rows(ds.split("query_b"), root) == [
        ("rgb/test/B/005/cropped_rgb001.jpg", 5, 1, 0, "B/005_cropped_rgb001"),
        ("rgb/test/B/012/cropped_rgb003.jpg", 12, 1, 2, "B/012_cropped_rgb003"),
    ]
    assert rows(ds.split("query_c"), root) == [
        ("rgb/test/C/005/cropped_rgb001.jpg", 5, 2, 1, "C/005_cropped_rgb001"),
        ("rgb/test/C/012/cropped_rgb004.jpg", 12, 2, 3, "C/012_cropped_rgb004"),
    ]
    proto = ds.protocols["test"]
    assert proto.specs == (EvalSpec("sc", "query_b", "gallery", "general"), EvalSpec("cc", "query_c", "gallery", "general"))
    assert proto.selection == "cc" and proto.clothes_derived
    assert "val" not in ds.protocols  # PRCC val reuses the train identities


def test_prcc_root_may_be_the_rgb_folder(tmp_path):
    root = write_prcc(tmp_path / "prcc")
    a, b = load_dataset("prcc", root), load_dataset("prcc", root / "rgb")
    assert [(s.path, s.pid, s.clothes_id, s.key) for s in a.split("query_c")] == [
        (s.path, s.pid, s.clothes_id, s.key) for s in b.split("query_c")
    ]


def test_prcc_query_identity_absent_from_gallery_gets_a_rank_after_a(tmp_path, caplog):
    from dataset_trees import PRCC_FILES

    root = write_prcc(tmp_path / "prcc", [*PRCC_FILES, "rgb/test/C/003/cropped_rgb009.jpg"])
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("prcc", root)
    c = {(s.pid, s.clothes_id) for s in ds.split("query_c")}
    assert c == {(3, 2 * 2 + 1), (5, 1), (12, 3)}  # 003 ranks after the two test-A identities
    assert "no gallery" in caplog.text


def test_prcc_bad_identity_folder_and_missing_camera(tmp_path):
    root = write_prcc(tmp_path / "prcc")
    write_image(root / "rgb" / "train" / "abc" / "A_cropped_rgb001.jpg")
    with pytest.raises(DatasetError, match="abc"):
        load_dataset("prcc", root)
    assert len(load_dataset("prcc", root, skip_bad=True).skipped) == 1
    shutil.rmtree(root / "rgb" / "test" / "B")
    with pytest.raises(DatasetError, match="test/B"):
        load_dataset("prcc", root)
    assert layout_missing("prcc", root) == ["rgb/test/B/"]


# ----------------------------------------------------------------------------------------------- LaST


def test_last_unique_cameras_with_gallery_offset(tmp_path):
    root = write_last(tmp_path / "last")
    ds = load_dataset("last", root)
    assert list(ds.splits) == ["train", "val_query", "val_gallery", "query", "gallery"]
    # Train outfit = field 0 + "_" + last field: "000002_004" < "000002_005" < "000010_001".
    assert rows(ds.train, root) == [
        ("train/000002/000002_000_00009_0134_01_004.jpg", 0, 0, 0, "000002_000002_000_00009_0134_01_004"),
        ("train/000002/000002_001_00009_0135_01_005.jpg", 0, 0, 1, "000002_000002_001_00009_0135_01_005"),
        ("train/000002/000002_002_00009_0185_00_004.jpg", 0, 0, 0, "000002_000002_002_00009_0185_00_004"),
        ("train/000010/000010_000_00001_0001_01_001.jpg", 1, 0, 2, "000010_000010_000_00001_0001_01_001"),
    ]
    assert ds.train_clothes_names == ("000002_004", "000002_005", "000010_001")
    q, g = ds.split("query"), ds.split("gallery")
    assert [(s.pid, s.camid, s.clothes_id) for s in q] == [(200, 0, 200), (201, 1, 201)]
    # Gallery camids continue after |query| = 2: every image its own camera, clothes = pid placeholder.
    assert [(s.pid, s.camid, s.clothes_id) for s in g] == [(200, 2, 200), (200, 3, 200), (201, 4, 201), (202, 5, 202)]
    assert g[0].key == "test/gallery/000200_000200_001_00003_0003_01_002" and q[0].key == "test/query/000200_000_00003_0001_01_001"
    assert [(s.pid, s.camid) for s in ds.split("val_query")] == [(100, 0)]
    assert [(s.pid, s.camid) for s in ds.split("val_gallery")] == [(100, 1), (101, 2)]
    for name, (qs, gs) in {"test": ("query", "gallery"), "val": ("val_query", "val_gallery")}.items():
        p = ds.protocols[name]
        assert p.specs == (EvalSpec("general", qs, gs, "general"),) and p.selection == "general" and p.clothes_derived


def test_last_name_must_match_identity_folder(tmp_path):
    root = write_last(tmp_path / "last")
    write_image(root / "train" / "000010" / "000011_000_00001_0001_01_001.jpg")
    with pytest.raises(DatasetError, match="differs from its folder"):
        load_dataset("last", root)
    assert len(load_dataset("last", root, skip_bad=True).skipped) == 1


# ----------------------------------------------------------------------------------------------- DeepChange


def test_deepchange_tracklet_camids(tmp_path):
    root = write_deepchange(tmp_path / "DeepChangeDataset")
    ds = load_dataset("deepchange", root)
    assert list(ds.splits) == ["train", "val_query", "val_gallery", "query", "gallery"]
    # Lists are written in reverse order; samples still follow the sorted paths.
    assert rows(ds.train, root) == [
        ("train-set/p0003_c01_20201015_172644_000744_bbox.jpg", 0, 11, 0, "p0003_c01_20201015_172644_000744_bbox"),
        ("train-set/p0003_c01_20201214_083954_000496_bbox.jpg", 0, 12, 1, "p0003_c01_20201214_083954_000496_bbox"),
        ("train-set/p0003_c06_20201015_082310_000121_bbox.jpg", 0, 13, 0, "p0003_c06_20201015_082310_000121_bbox"),
        ("train-set/p0012_c02_20201015_100000_000001_bbox.jpg", 1, 14, 2, "p0012_c02_20201015_100000_000001_bbox"),
    ]
    assert ds.train_pid_names == ("p0003", "p0012")
    assert ds.train_clothes_names == ("p0003_20201015", "p0003_20201214", "p0012_20201015")
    assert [(s.meta["camera"], s.meta["tracklet"]) for s in ds.train] == [(0, 11), (0, 12), (5, 13), (1, 14)]
    # Test: "p0600" -> 600; camid = tracklet (same camera c05, other tracklet -> different camid).
    assert [(s.pid, s.camid, s.meta["camera"], s.clothes_id) for s in ds.split("query")] == [(600, 31, 4, 0), (601, 32, 4, 2)]
    assert [(s.pid, s.camid, s.meta["camera"], s.clothes_id) for s in ds.split("gallery")] == [
        (600, 33, 4, 0),
        (600, 34, 6, 1),
        (601, 32, 4, 2),
    ]
    assert [(s.pid, s.camid) for s in ds.split("val_gallery")] == [(501, 21), (501, 22)]
    assert ds.protocols["test"].specs == (EvalSpec("general", "query", "gallery", "general"),)
    assert ds.protocols["val"].specs == (EvalSpec("general", "val_query", "val_gallery", "general"),)
    assert ds.counts()["train"]["cameras"] == 3  # real cameras c01, c02, c06 (meta), not tracklets


def test_deepchange_list_and_disk_must_agree(tmp_path):
    root = write_deepchange(tmp_path / "d1")
    (root / "train-set" / Path(DEEPCHANGE_FILES[1][0]).name).unlink()  # listed, missing on disk
    write_image(root / "test-set-gallery" / "p0600_c05_20210301_130000_000009_bbox.jpg")  # on disk, unlisted
    with pytest.raises(DatasetError) as ei:
        load_dataset("deepchange", root)
    msg = str(ei.value)
    assert "p0003_c01_20201214_083954_000496_bbox.jpg: listed in train-set-bbox.txt but missing on disk" in msg
    assert "p0600_c05_20210301_130000_000009_bbox.jpg: on disk but not listed in test-set-gallery-bbox.txt" in msg
    ds = load_dataset("deepchange", root, skip_bad=True)
    assert len(ds.skipped) == 2 and len(ds.train) == 3 and len(ds.split("gallery")) == 3


def test_deepchange_malformed_list_line(tmp_path):
    root = write_deepchange(tmp_path / "d", extra_list_lines={"train-set": ["no-comma-here"]})
    with pytest.raises(DatasetError, match=r"train-set-bbox.txt:5: malformed line"):
        load_dataset("deepchange", root)


# ----------------------------------------------------------------------------------------------- Celeb-reID


def test_celebreid_default_and_official_cameras(tmp_path):
    root = write_celebreid(tmp_path / "Celeb-reID")
    ds = load_dataset("celebreid", root)
    # pid -1 skipped; pids numeric-ascending (7 < 101 although "101" < "7" as strings); one outfit per image.
    assert rows(ds.train, root) == [
        ("train/101_25_0.jpg", 1, 0, 0, "101_25_0"),
        ("train/101_26_0.jpg", 1, 0, 1, "101_26_0"),
        ("train/7_3_1.jpg", 0, 0, 2, "7_3_1"),
    ]
    assert ds.num_train_clothes == 3 and ds.info["ignored_pid_minus_1"] == 1
    q, g = ds.split("query"), ds.split("gallery")
    assert [(s.pid, s.camid) for s in q] == [(201, 0), (202, 1)]
    assert [(s.pid, s.camid) for s in g] == [(201, 2), (201, 3), (202, 4)]
    assert len({s.clothes_id for s in (*q, *g)}) == 5  # each image its own clothes class
    assert [s.key for s in q] == ["query/201_12_0", "query/202_31_0"]
    assert ds.protocols["test"].specs == (EvalSpec("general", "query", "gallery", "general"),)
    assert ds.protocols["test"].clothes_derived

    off = load_dataset("celebreid", root, camera_rule="official")
    # camid = first digit of the image index y, minus 1: 12 -> 0, 31 -> 2, 15 -> 0, 31 -> 2, 1 -> 0.
    assert [s.camid for s in off.split("query")] == [0, 2]
    assert [s.camid for s in off.split("gallery")] == [0, 2, 0]
    assert [s.camid for s in off.train] == [1, 1, 2]
    with pytest.raises(DatasetError, match="camera_rule"):
        load_dataset("celebreid", root, camera_rule="nope")


def test_celebreid_minus_one_only_split_is_empty(tmp_path):
    files = [f for f in CELEB_FILES if not f.startswith("query/")] + ["query/-1_4_0.jpg"]
    with pytest.raises(DatasetError, match="split 'query'"):
        load_dataset("celebreid", write_celebreid(tmp_path / "c", files))


# ----------------------------------------------------------------------------------------------- VC-Clothes


def test_vcclothes_camera_subsets(tmp_path):
    root = write_vcclothes(tmp_path / "VC-Clothes")
    ds = load_dataset("vcclothes", root)
    assert rows(ds.train, root) == [
        ("train/0001-01-01-0001.jpg", 0, 0, 0, "0001-01-01-0001"),
        ("train/0001-02-02-0002.jpg", 0, 1, 1, "0001-02-02-0002"),
        ("train/0003-03-01-0001.jpg", 1, 2, 2, "0003-03-01-0001"),
        ("train/0003-04-01-0002.jpg", 1, 3, 2, "0003-04-01-0002"),
    ]
    assert ds.train_clothes_names == ("0001-01", "0001-02", "0003-01")
    # Test outfits over query ∪ gallery: 0010-01, 0010-02, 0011-01, 0011-02 -> 0..3.
    assert [(s.pid, s.camid, s.clothes_id) for s in ds.split("query")] == [
        (10, 0, 0), (10, 1, 0), (10, 2, 0), (11, 2, 2), (11, 3, 3)
    ]
    def names(split):
        return [Path(s.path).name for s in ds.split(split)]

    assert names("query_sc") == ["0010-02-01-0002.jpg", "0010-03-01-0003.jpg", "0011-03-01-0002.jpg"]
    assert names("gallery_sc") == ["0010-02-02-0004.jpg", "0010-03-01-0005.jpg", "0011-02-02-0004.jpg"]
    assert names("query_cc") == ["0010-03-01-0003.jpg", "0011-03-01-0002.jpg", "0011-04-02-0001.jpg"]
    assert names("gallery_cc") == ["0010-03-01-0005.jpg", "0010-04-02-0006.jpg", "0011-04-01-0005.jpg"]
    p = ds.protocols["test"]
    assert p.specs == (
        EvalSpec("general", "query", "gallery", "general"),
        EvalSpec("sc", "query_sc", "gallery_sc", "general"),
        EvalSpec("cc", "query_cc", "gallery_cc", "general"),
    )
    assert p.selection == "general"


# ----------------------------------------------------------------------------------------------- all layouts


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_invariants_every_layout(tmp_path, name):
    src = WRITERS[name](tmp_path / name)
    ds = load_dataset(name, src)
    keys = [s.key for ss in ds.splits.values() for s in ss]
    unique_samples = {s.path: s.key for ss in ds.splits.values() for s in ss}
    assert len(set(unique_samples.values())) == len(unique_samples)  # one key per image, none shared
    assert len(set(keys)) == len(set(unique_samples.values()))
    for split, samples in ds.splits.items():
        assert samples, split
        assert all(os.path.isfile(s.path) and os.path.isabs(s.path) for s in samples)
        if name != "manifest":  # manifest: sorted by manifest path, checked in test_manifest
            rel = [Path(s.path).relative_to(ds.root).as_posix() for s in samples]
            assert rel == sorted(rel), split
    p2c = np.zeros((ds.num_train_pids, ds.num_train_clothes), bool)
    for s in ds.train:
        p2c[s.pid, s.clothes_id] = True
    np.testing.assert_array_equal(ds.pid2clothes, p2c)
    assert sorted({s.pid for s in ds.train}) == list(range(ds.num_train_pids))
    for proto in ds.protocols.values():
        assert set(proto.split_names) <= set(ds.splits)
    # Unique-camera protocols: no two images of a query/gallery pair share a camid.
    if name in ("last", "celebreid"):
        for proto in ds.protocols.values():
            for spec in proto.specs:
                cams = [s.camid for s in (*ds.split(spec.query), *ds.split(spec.gallery))]
                assert len(set(cams)) == len(cams)


def test_registry_names_aliases_and_options(tmp_path):
    assert set(DATASET_NAMES) == {"ltcc", "prcc", "last", "deepchange", "celebreid", "vcclothes", "manifest", "synthcc"}
    assert set(DATASET_INFO) == set(DATASET_NAMES)
    assert DATASET_INFO["ltcc"].stats["train"] == {"ids": 77, "images": 9576, "clothes": 256, "cameras": 12}
    assert DATASET_INFO["prcc"].stats["query_c"] == {"images": 3543}
    tree, stats, desc = DATASET_INFO["deepchange"]
    assert "test-set-gallery-bbox.txt" in tree and stats["gallery"]["images"] == 62956 and desc
    with pytest.raises(DatasetError) as ei:
        load_dataset("market1501", tmp_path)
    assert all(n in str(ei.value) for n in DATASET_NAMES)
    root = write_celebreid(tmp_path / "c")
    assert load_dataset("Celeb-reID", root).name == "celebreid"
    with pytest.raises(DatasetError, match="camera_rule"):
        load_dataset("ltcc", root, camera_rule="official")
    assert issubclass(DatasetError, RlqError)


def test_parsers_do_not_import_torch():
    code = (
        "import sys; import rlq.data.datasets, rlq.data.check, rlq.data.images; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("name", ["ltcc", "synthcc", "prcc", "last", "deepchange", "celebreid", "vcclothes"])
def test_standard_protocols_match_the_parsers(tmp_path, name):
    """`rlq eval FEATURES.npz` uses standard_protocols without the data; it must equal what each parser attaches."""
    from dataset_trees import write_dataset
    from rlq.data.datasets import load_dataset, standard_protocols

    ds = load_dataset(name, write_dataset(name, tmp_path / name))
    std = standard_protocols(name)
    assert set(std) == set(ds.protocols)
    for k, p in std.items():
        assert p.specs == ds.protocols[k].specs
        assert p.selection == ds.protocols[k].selection
