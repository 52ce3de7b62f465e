"""CSV manifest parser (docs/datasets.md §4): records, protocol YAML, errors and the path-escape refusal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from dataset_trees import MANIFEST_ROWS, write_image, write_manifest
from rlq.data.datasets import load_dataset
from rlq.data.records import EvalSpec
from rlq.errors import DatasetError


def R(path, split, pid, **kw):
    return {"path": path, "split": split, "pid": pid, **kw}


BASIC = [
    R("tr/a.png", "train", "1", camid="1", clothes="x"),
    R("tr/b.png", "train", "2", camid="2", clothes="y"),
    R("te/q.png", "query", "10", camid="1", clothes="u"),
    R("te/g1.png", "gallery", "10", camid="2", clothes="v"),
    R("te/g2.png", "gallery", "11", camid="1", clothes="w"),
]


def load(csv, **kw):
    return load_dataset("manifest", csv, **kw)


def test_default_manifest_exact(tmp_path, caplog):
    csv = write_manifest(tmp_path / "m")
    with caplog.at_level(logging.WARNING):
        ds = load(csv)
    assert ds.name == "manifest" and ds.root == str(tmp_path / "m") and ds.info["manifest"] == str(csv)
    assert list(ds.splits) == ["train", "query", "query_night", "gallery"]
    # "007" and "7" are different people (exact strings); numeric order, then string: "007" -> 0, "7" -> 1, "p12" -> 2.
    assert ds.train_pid_names == ("007", "7", "p12")
    tr = ds.train
    assert [(s.key, s.pid, s.camid) for s in tr] == [
        ("img/train/a1", 0, 0), ("img/train/a2", 0, 1), ("img/train/b1", 1, 0), ("img/train/c1", 2, 1)
    ]
    # Clothes scoped to the pid: ("007", red) != ("7", red); p12 has no clothes -> an outfit of its own.
    assert len({s.clothes_id for s in tr}) == 4 and tr[0].clothes_id != tr[2].clothes_id
    assert [json.loads(n)[:2] for n in ds.train_clothes_names] == [["007", "blue"], ["007", "red"], ["7", "red"], ["p12", None]]
    assert "1 train rows have no clothes value" in caplog.text
    np.testing.assert_array_equal(ds.pid2clothes, [[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert [(s.meta.get("gender"), s.meta.get("pose")) for s in tr] == [(1, 3), (1, 1), (0, 0), (None, None)]
    # Cameras c1, c2, c3 -> 0, 1, 2; the gallery row with an empty camid gets a camera of its own (3).
    assert [(s.pid, s.camid) for s in ds.split("gallery")] == [(100, 1), (100, 2), (101, 0), (102, 3)]
    assert [(s.pid, s.camid, s.meta["query_set"]) for s in ds.split("query_night")] == [(101, 1, "night")]
    assert ds.split("query")[0].meta["raw_pid"] == "100"
    p = ds.protocols["test"]
    assert [s.name for s in p.specs] == ["general", "cc", "sc", "night_general", "night_cc", "night_sc"]
    assert p.spec("night_cc") == EvalSpec("night_cc", "query_night", "gallery", "cc")
    assert p.selection == "cc" and not p.clothes_derived
    assert ds.info["camera_key"] == "camid" and ds.info["lq_mix"] is None


def test_protocol_yaml_tracklet_and_lq_mix(tmp_path):
    rows = [
        R("tr/a.png", "train", "1", camid="1", tracklet="t1"),
        R("te/q.png", "query", "10", camid="1", tracklet="t5"),
        R("te/g1.png", "gallery", "10", camid="1", tracklet="t6"),
        R("te/g2.png", "gallery", "10", camid="2", tracklet="t5"),
        R("vq/q.png", "val_query", "20", camid="1", tracklet="t7"),
        R("vg/g.png", "val_gallery", "20", camid="1", tracklet="t8"),
    ]
    mix = {"pixelate": 0.3, "blur": 0.3}
    csv = write_manifest(tmp_path, rows, protocol={"modes": ["general"], "camera_key": "tracklet", "lq_mix": mix, "selection_metric": "general"})
    ds = load(csv)
    assert ds.info["lq_mix"] == mix and ds.info["camera_key"] == "tracklet" and ds.info["modes"] == ["general"]
    # camid := tracklet rank (t1, t5, t6, t7, t8 -> 0..4); the real camera goes to meta["camera"].
    assert [(s.camid, s.meta["camera"], s.meta["tracklet"]) for s in ds.split("gallery")] == [(2, 0, "t6"), (1, 1, "t5")]
    assert ds.protocols["test"].specs == (EvalSpec("general", "query", "gallery", "general"),)
    assert ds.protocols["val"].specs == (EvalSpec("general", "val_query", "val_gallery", "general"),)
    assert ds.protocols["test"].clothes_derived  # no clothes column: one outfit per image
    # camera_key none: every image its own camera.
    csv2 = write_manifest(tmp_path / "n", rows, protocol={"camera_key": "none"})
    ds2 = load(csv2)
    cams = [s.camid for ss in ds2.splits.values() for s in ss]
    assert len(set(cams)) == len(cams)


def test_test_pids_mapped_injectively(tmp_path):
    rows = [*BASIC[:2], R("te/q.png", "query", "007"), R("te/g1.png", "gallery", "7"), R("te/g2.png", "gallery", "007"), R("te/g3.png", "gallery", "ab")]
    ds = load(write_manifest(tmp_path, rows))
    pid = {s.meta["raw_pid"]: s.pid for ss in (ds.split("query"), ds.split("gallery")) for s in ss}
    assert len(set(pid.values())) == 3 and pid["007"] != pid["7"]
    # Plain numeric test pids keep their value.
    ds2 = load(write_manifest(tmp_path / "b", BASIC))
    assert [s.pid for s in ds2.split("gallery")] == [10, 11]


def test_key_column_and_sorted_order(tmp_path):
    rows = [R("tr/b.png", "train", "1", key="kb"), R("tr/a.png", "train", "1", key="ka"), *BASIC[2:]]
    ds = load(write_manifest(tmp_path, rows))
    assert [s.key for s in ds.train] == ["ka", "kb"]  # sorted by path, not by row order


def test_missing_required_columns_named(tmp_path):
    csv = write_manifest(tmp_path, [{"path": "a.png", "split": "train"}])
    with pytest.raises(DatasetError, match=r"missing required column\(s\) \['pid'\]"):
        load(csv)


def test_unknown_split_names_row_and_value(tmp_path):
    rows = [*BASIC, R("te/x.png", "tset", "10")]
    csv = write_manifest(tmp_path, rows)
    with pytest.raises(DatasetError) as ei:
        load(csv)
    assert "row 6 (line 7)" in str(ei.value) and "'tset'" in str(ei.value) and "--skip-bad" in str(ei.value)
    ds = load(csv, skip_bad=True)
    assert len(ds.skipped) == 1 and "line 7" in ds.skipped[0]


@pytest.mark.parametrize("dup", ["path", "key"])
def test_duplicates_are_errors(tmp_path, dup):
    extra = R("tr/a.png", "train", "1") if dup == "path" else R("tr/c.png", "train", "1", key="tr/a")
    csv = write_manifest(tmp_path, [*BASIC, extra])
    with pytest.raises(DatasetError, match=f"duplicate {dup}"):
        load(csv)


def test_train_pid_in_test_needs_allow_overlap(tmp_path):
    rows = [*BASIC, R("te/g3.png", "gallery", "2")]
    csv = write_manifest(tmp_path, rows)
    with pytest.raises(DatasetError, match="also appear in query/gallery: \\['2'\\]"):
        load(csv)
    assert len(load(csv, allow_overlap=True).split("gallery")) == 3


def test_cc_mode_needs_clothes_on_every_test_row(tmp_path):
    rows = [*BASIC, R("te/g3.png", "gallery", "11", camid="3")]
    csv = write_manifest(tmp_path, rows, protocol={"modes": ["general", "cc"]})
    with pytest.raises(DatasetError, match=r"need a clothes value.*lines \[7\]"):
        load(csv)
    # Without explicit modes the manifest falls back to general only, with derived clothes.
    ds = load(write_manifest(tmp_path / "b", rows))
    assert [s.name for s in ds.protocols["test"].specs] == ["general"] and ds.protocols["test"].clothes_derived


def test_query_pid_missing_from_gallery_warns(tmp_path, caplog):
    rows = [*BASIC, R("te/q2.png", "query", "99", camid="1", clothes="z")]
    with caplog.at_level(logging.WARNING):
        ds = load(write_manifest(tmp_path, rows))
    assert "identities of 'query' have no image in 'gallery': ['99']" in caplog.text
    assert any("'99'" in w for w in ds.info["warnings"])


@pytest.mark.parametrize("bad", ["../outside.png", "sub/../../outside.png", "/etc/passwd", "..\\outside.png", "C:\\x\\y.png"])
def test_paths_escaping_the_manifest_folder_are_refused(tmp_path, bad):
    write_image(tmp_path / "outside.png")
    rows = [*BASIC, R(bad, "train", "3")]
    csv = write_manifest(tmp_path / "m", rows)
    with pytest.raises(DatasetError, match="allow_outside_root=True"):
        load(csv)
    with pytest.raises(DatasetError, match="allow_outside_root"):
        load(csv, skip_bad=True)  # refusal is not a skippable row problem


def test_allow_outside_root(tmp_path):
    write_image(tmp_path / "outside.png")
    csv = write_manifest(tmp_path / "m", [*BASIC, R("../outside.png", "train", "3")])
    ds = load(csv, allow_outside_root=True)
    assert str(tmp_path / "outside.png") in {s.path for s in ds.train}


def test_parsing_path_escape_refused_and_meta(tmp_path):
    rows = [R("tr/a.png", "train", "1", parsing="parsing/a.png", tracklet="t1"), *BASIC[1:]]
    ds = load(write_manifest(tmp_path, rows))
    assert ds.train[0].meta["parsing"] == str(tmp_path / "parsing" / "a.png") and ds.train[0].meta["tracklet"] == "t1"
    rows[0] = R("tr/a.png", "train", "1", parsing="../p.png")
    with pytest.raises(DatasetError, match="parsing path"):
        load(write_manifest(tmp_path / "b", rows))


def test_missing_image_and_bad_values(tmp_path):
    rows = [*BASIC, R("tr/c.png", "train", "3", gender="2"), R("tr/d.png", "train", "3", pose="-1")]
    csv = write_manifest(tmp_path, rows, images=False)
    for r in BASIC:
        write_image(tmp_path / r["path"])
    write_image(tmp_path / "tr/c.png")
    write_image(tmp_path / "tr/d.png")
    with pytest.raises(DatasetError) as ei:
        load(csv)
    assert "gender '2' must be 0 or 1" in str(ei.value) and "pose '-1'" in str(ei.value)
    (tmp_path / "te/g2.png").unlink()
    ds = load(csv, skip_bad=True)
    assert len(ds.skipped) == 3 and any("image not found" in s for s in ds.skipped)


def test_protocol_file_errors(tmp_path):
    csv = write_manifest(tmp_path, BASIC, protocol={"modez": ["cc"]})
    with pytest.raises(DatasetError, match="unknown key"):
        load(csv)
    csv = write_manifest(tmp_path / "b", BASIC, protocol={"camera_key": "frame"})
    with pytest.raises(DatasetError, match="camera_key"):
        load(csv)
    csv = write_manifest(tmp_path / "c", BASIC, protocol={"modes": ["general"]})
    (tmp_path / "c" / "manifest.csv.protocol.yaml").write_text("modes: [cc]\n")
    with pytest.raises(DatasetError, match="keep one protocol file"):
        load(csv)
    csv = write_manifest(tmp_path / "d", BASIC, protocol={"selection_metric": "map"})
    with pytest.raises(DatasetError, match="selection_metric 'map'"):
        load(csv)


def test_malformed_files(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("path,split,pid\nä.png,train,1\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        load(empty)
    with pytest.raises(DatasetError, match="does not exist"):
        load(tmp_path / "nope.csv")
    only_query = write_manifest(tmp_path / "q", [R("a.png", "query", "1")])
    with pytest.raises(DatasetError, match="gallery"):
        load(only_query)
    ragged = tmp_path / "ragged.csv"
    write_image(tmp_path / "a.png")
    ragged.write_text("path,split,pid\na.png,train,1,extra\n")
    with pytest.raises(DatasetError, match="4 fields, the header has 3"):
        load(ragged)


def test_default_rows_constant_matches_writer(tmp_path):
    csv = write_manifest(tmp_path)
    assert len(csv.read_text().splitlines()) == len(MANIFEST_ROWS) + 1
    assert all((tmp_path / r["path"]).is_file() for r in MANIFEST_ROWS)
    assert Path(csv).name == "manifest.csv"


def _symlink_or_skip(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
    except (OSError, NotImplementedError) as e:  # e.g. Windows without the symlink privilege
        pytest.skip(f"cannot create symlinks here: {e}")


@pytest.mark.parametrize("column", ["path", "parsing"])
def test_symlinks_leaving_the_manifest_folder_are_refused(tmp_path, column):
    """Containment is checked on real paths: `escape -> ..outside` inside the folder does not open it up."""
    outside = tmp_path / "outside"
    write_image(outside / "secret.png")
    m = tmp_path / "m"
    csv = write_manifest(m, BASIC)
    _symlink_or_skip(m / "escape", outside)  # a folder symlink pointing out of the manifest's folder
    _symlink_or_skip(m / "tr" / "file_link.png", outside / "secret.png")  # a file symlink pointing out
    for bad in ("escape/secret.png", "tr/file_link.png"):
        row = R(bad, "train", "3") if column == "path" else R("tr/a.png", "train", "1", parsing=bad)
        rows = [*BASIC, row] if column == "path" else [row, *BASIC[1:]]
        csv = write_manifest(m, rows, images=False)
        with pytest.raises(DatasetError, match=r"symlink.*allow_outside_root=True"):
            load(csv)
        with pytest.raises(DatasetError, match="allow_outside_root"):
            load(csv, skip_bad=True)  # refusal is not a skippable row problem
        ds = load(csv, allow_outside_root=True)  # the explicit opt-in still allows it
        got = {s.path for s in ds.train} if column == "path" else {ds.train[0].meta["parsing"]}
        assert str(m / bad) in got


def test_symlinks_staying_inside_the_manifest_folder_are_fine(tmp_path):
    m = tmp_path / "m"
    write_manifest(m, BASIC)
    _symlink_or_skip(m / "alias", m / "tr")  # folder symlink within the folder
    _symlink_or_skip(m / "te" / "link.png", m / "tr" / "a.png")  # file symlink within the folder
    rows = [*BASIC, R("alias/b.png", "train", "2"), R("te/link.png", "gallery", "12", parsing="alias/a.png")]
    ds = load(write_manifest(m, rows, images=False))
    assert str(m / "alias" / "b.png") in {s.path for s in ds.train}  # the path as written, not the resolved one
    assert ds.split("gallery")[-1].meta["parsing"] == str(m / "alias" / "a.png")


def test_symlinked_manifest_folder_is_its_own_root(tmp_path):
    """The manifest's folder may itself be reached through a symlink: its images are still inside it."""
    write_manifest(tmp_path / "real", BASIC)
    _symlink_or_skip(tmp_path / "via", tmp_path / "real")
    ds = load(tmp_path / "via" / "manifest.csv")
    assert len(ds.train) == 2
