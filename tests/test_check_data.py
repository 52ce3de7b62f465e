"""check_data / format_report: layout, counts vs published statistics, unparsable names, unreadable images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dataset_trees import LTCC_FILES, write_deepchange, write_image, write_ltcc, write_manifest
from rlq.data.check import CheckReport, check_data, compare_stats, format_report
from rlq.data.datasets import load_dataset
from rlq.errors import DatasetError


def test_good_tree(tmp_path):
    root = write_ltcc(tmp_path / "LTCC_ReID")
    rep = check_data("ltcc", root)
    assert isinstance(rep, CheckReport)
    assert rep.usable and rep.layout_ok and rep.missing == []
    assert rep.counts == load_dataset("ltcc", root).counts()
    assert rep.counts["train"] == {"images": 6, "ids": 3, "clothes": 5, "cameras": 5}
    assert rep.n_bad_images == 0 and rep.bad_images == [] and rep.n_unparsable == 0
    # Tiny tree vs docs/datasets.md §3.1: mismatches are warnings, the dataset stays usable.
    assert "train: 6 images, published 9,576" in rep.stats_mismatches
    assert "query+gallery: 5 clothes, published 221" in rep.stats_mismatches
    text = format_report(rep)
    assert "USABLE" in text and "NOT USABLE" not in text and "published 9,576" in text
    assert "protocol test: general = query -> gallery (general rule)" in text


def test_missing_folder(tmp_path):
    root = write_ltcc(tmp_path / "LTCC_ReID")
    shutil.rmtree(root / "test")
    rep = check_data("ltcc", root)
    assert not rep.usable and not rep.layout_ok
    assert rep.missing == ["test/"]
    assert "LTCC_ReID/" in rep.expected_tree and rep.counts == {}
    text = format_report(rep)
    assert "NOT USABLE" in text and "missing test/" in text and "Expected layout:" in text and "├── train/" in text


def test_missing_root_and_manifest(tmp_path):
    rep = check_data("prcc", tmp_path / "none")
    assert not rep.usable and rep.missing == [str(tmp_path / "none")] and "prcc/rgb/" in rep.expected_tree
    rep = check_data("manifest", tmp_path / "none.csv")
    assert not rep.usable and rep.missing == [str(tmp_path / "none.csv")]


def test_corrupt_image_listed_and_counted(tmp_path):
    root = write_ltcc(tmp_path / "LTCC_ReID")
    bad = root / "test" / "005_1_c5_000024.png"
    bad.write_bytes(b"this is not a png")
    (root / "train" / "001_1_c2_000002.png").write_bytes(b"")
    rep = check_data("ltcc", root, progress=True)
    assert not rep.usable  # 2 of 13 unreadable: training would stop at the first one it reads
    assert any("replace or remove them" in m for m in rep.messages)
    assert not check_data("ltcc", root, skip_bad=True).usable  # --skip-bad is about names, not unreadable images
    assert rep.n_bad_images == 2
    assert rep.bad_images[0].startswith(str(root / "train" / "001_1_c2_000002.png") + ": empty file")
    assert rep.bad_images[1].startswith(str(bad) + ": not a readable image")
    assert "Unreadable images: 2" in format_report(rep)
    # Header-only checking still catches both (zero bytes, unidentifiable header).
    assert check_data("ltcc", root, full_decode=False).n_bad_images == 2
    assert check_data("ltcc", root, verify_images=False).n_bad_images == 0


def test_mostly_unreadable_or_split_unreadable_is_unusable(tmp_path):
    root = write_ltcc(tmp_path / "a")
    for f in LTCC_FILES[:8]:
        (root / f).write_bytes(b"")
    rep = check_data("ltcc", root, max_list=3)
    assert not rep.usable and rep.n_bad_images == 8 and len(rep.bad_images) == 3
    assert "... and 5 more" in format_report(rep)
    root2 = write_ltcc(tmp_path / "b")
    for f in LTCC_FILES:
        if f.startswith("query/"):
            (root2 / f).write_bytes(b"x")
    rep2 = check_data("ltcc", root2)
    assert not rep2.usable and any("split 'query': no readable image" in m for m in rep2.messages)


def test_unparsable_names_counted(tmp_path):
    root = write_ltcc(tmp_path / "LTCC_ReID")
    for i in range(12):
        write_image(root / "train" / f"bad_{i:02d}.png")
    rep = check_data("ltcc", root, max_list=10)
    # training refuses unparsable names unless --skip-bad: so does check-data, naming the option
    assert not rep.usable and rep.n_unparsable == 12 and len(rep.unparsable) == 10
    assert any("--skip-bad" in m for m in rep.messages) and "NOT USABLE" in format_report(rep)
    with pytest.raises(DatasetError, match="--skip-bad"):
        load_dataset("ltcc", root)  # what `rlq train` does with the same tree
    lenient = check_data("ltcc", root, skip_bad=True)
    assert lenient.usable and lenient.n_unparsable == 12
    assert len(load_dataset("ltcc", root, skip_bad=True).skipped) == 12
    assert rep.unparsable[0].startswith(str(root / "train" / "bad_00.png") + ": file name does not match")
    assert "Unparsable or inconsistent files: 12" in format_report(rep)


def test_empty_split_and_parse_errors_reported_not_raised(tmp_path):
    root = write_ltcc(tmp_path / "LTCC_ReID", [f for f in LTCC_FILES if not f.startswith("query/")])
    rep = check_data("ltcc", root)
    assert rep.layout_ok and not rep.usable
    assert any("split 'query' has no usable images" in m for m in rep.messages)
    root2 = write_deepchange(tmp_path / "dc")
    (root2 / "train-set" / "p0003_c01_20201015_172644_000744_bbox.jpg").unlink()
    rep2 = check_data("deepchange", root2)
    assert not rep2.usable and rep2.n_unparsable == 1 and "missing on disk" in rep2.unparsable[0]
    assert check_data("deepchange", root2, skip_bad=True).usable


def test_unknown_name_and_option_raise(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'msmt17'"):
        check_data("msmt17", tmp_path)
    with pytest.raises(DatasetError, match="does not take"):
        check_data("ltcc", tmp_path, camera_rule="official")


def test_compare_stats_against_hand_counts(tmp_path):
    ds = load_dataset("ltcc", write_ltcc(tmp_path / "r"))
    exact = {"train": {"ids": 3, "images": 6, "clothes": 5, "cameras": 5}, "query+gallery": {"ids": 3, "images": 7, "clothes": 5}}
    assert compare_stats(ds, exact) == []
    assert compare_stats(ds, {"query+gallery": {"ids": 4}}) == ["query+gallery: 3 ids, published 4"]
    assert compare_stats(ds, {"val": {"images": 1}}) == ["val: split(s) ['val'] missing (published {'images': 1})"]


def test_manifest_without_statistics(tmp_path):
    rep = check_data("manifest", write_manifest(tmp_path))
    assert rep.usable and rep.stats_mismatches == []
    assert "Published statistics: none" in format_report(rep)
    assert Path(rep.root).name == "manifest.csv"


def test_parent_of_the_root_suggests_the_child(tmp_path):
    root = write_ltcc(tmp_path / "LTCC_ReID")
    rep = check_data("ltcc", tmp_path)
    assert not rep.usable and rep.suggestions == [str(root)]
    assert f"did you mean {root}?" in format_report(rep)
    with pytest.raises(DatasetError, match="did you mean .*LTCC_ReID"):
        load_dataset("ltcc", tmp_path)  # training says the same
    assert check_data("ltcc", tmp_path / "LTCC_ReID" / "train").suggestions == []  # nothing to suggest


def test_check_data_agrees_with_training_on_bad_trees(tmp_path):
    """Trees that `load_dataset` / training refuse are NOT USABLE; the CLI exits non-zero and names the fix."""
    from test_cli_e2e import run_cli

    bad_name = write_ltcc(tmp_path / "names")
    write_image(bad_name / "train" / "not_a_reid_name.png")
    empty = write_ltcc(tmp_path / "empty")
    (empty / LTCC_FILES[0]).write_bytes(b"")
    trunc = write_ltcc(tmp_path / "trunc")
    f = trunc / LTCC_FILES[1]
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    for root, fix in ((bad_name, "--skip-bad"), (empty, "replace or remove"), (trunc, "replace or remove")):
        assert run_cli(["check-data", "ltcc", str(root)]) == 1, root
        assert fix in format_report(check_data("ltcc", root))
    assert run_cli(["check-data", "ltcc", str(bad_name), "--skip-bad"]) == 0
    assert run_cli(["check-data", "ltcc", str(write_ltcc(tmp_path / "good"))]) == 0


def _one_identity_manifest(root: Path) -> Path:
    rows = [{"path": f"img/train/a{i}.png", "split": "train", "pid": "7", "camid": f"c{i % 2}", "clothes": f"o{i % 2}"}
            for i in range(8)]
    rows += [{"path": "img/test/q1.png", "split": "query", "pid": "100", "camid": "c1", "clothes": "x"},
             {"path": "img/test/g1.png", "split": "gallery", "pid": "100", "camid": "c2", "clothes": "y"},
             {"path": "img/test/g2.png", "split": "gallery", "pid": "101", "camid": "c1", "clothes": "z"}]
    return write_manifest(root, rows)


def test_one_identity_train_split_is_not_usable_for_training(tmp_path):
    """Issue 18 F9: a one-identity train split 'trained' with every loss exactly 0; check-data said USABLE."""
    from cli_helpers import run_cli

    csv = _one_identity_manifest(tmp_path / "one")
    rep = check_data("manifest", csv)
    assert not rep.usable
    text = format_report(rep)
    assert "NOT USABLE" in text and "split 'train' has 1 identity" in text and "add identities" in text
    assert run_cli(["check-data", "manifest", str(csv)]) == 1


def test_training_refuses_too_few_train_identities(tmp_path, capsys):
    """Issue 18 F9: `rlq train` refuses before creating its output folder, naming the root, the counts and the fix."""
    from cli_helpers import run_cli

    csv = _one_identity_manifest(tmp_path / "one")
    out = tmp_path / "run"
    base = ["train", "method=bm", "data.dataset=manifest", f"data.root={csv}", f"output={out}", "data.recolor=false",
            "data.height=64", "data.width=32", "data.workers=0", "model.backbone=tiny", "model.pretrained=none",
            "train.epochs=1", "train.progress=false", "train.tensorboard=false", "eval.workers=0"]
    capsys.readouterr()
    assert run_cli([*base, "data.batch_size=8", "data.num_instances=4"]) == 2
    err = capsys.readouterr().err
    assert f"the train split of {csv} has 1 identity" in " ".join(err.split()) and "at least 2" in err
    assert not out.exists()
    # two identities but 4 per batch: the fix names the batch settings
    rows = [{"path": f"img/train/{p}{i}.png", "split": "train", "pid": p, "camid": f"c{i}", "clothes": "o"}
            for p in ("1", "2") for i in range(4)]
    rows += [{"path": "img/test/q1.png", "split": "query", "pid": "100", "camid": "c1", "clothes": "x"},
             {"path": "img/test/g1.png", "split": "gallery", "pid": "100", "camid": "c2", "clothes": "y"}]
    csv2 = write_manifest(tmp_path / "two", rows)
    assert run_cli([*base[:3], f"data.root={csv2}", *base[4:], "data.batch_size=16", "data.num_instances=4"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "has 2 identities" in err and "16 / 4 = 4" in err and "lower data.batch_size" in err
    assert not out.exists()
