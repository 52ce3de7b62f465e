"""SynthCC generator (rlq.data.synth): determinism, LTCC/Celeb layout, CC structure and side inputs."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlq.data.synth import SYNTH_PRESETS, generate_synthcc, is_synthcc_root, lip_palette
from rlq.data.synth import generate as gen_mod
from rlq.errors import ConfigError, DatasetError
from rlq.lq.reference import apply_artifact

LTCC = re.compile(r"^(\d+)_(\d+)_c(\d+)_(\d+)\.png$")
CELEB = re.compile(r"^(\d+)_(\d+)_(\d+)\.jpg$")
SPLITS = ("train", "query", "test")


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "synthcc"
    manifest = generate_synthcc(root, preset="tiny", seed=0, workers=1)
    return root, manifest


def _names(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / split).iterdir())


def _parse(name: str) -> tuple[int, int, int, int]:
    m = LTCC.match(name)
    assert m, name
    return int(m[1]), int(m[2]), int(m[3]), int(m[4])


def _poses(root: Path, split: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in json.loads((root / "poses" / split / "alphapose-results.json").read_text()):
        out.setdefault(e["image_id"], []).append(e)
    return out


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_byte_identical_any_worker_count_and_different_seed_differs(synth, tmp_path):
    root, manifest = synth
    ref = _tree_hashes(root)
    again = tmp_path / "again"
    m2 = generate_synthcc(again, preset="tiny", seed=0, workers=2)  # process pool: same bytes
    assert _tree_hashes(again) == ref
    assert m2 == manifest
    # Regenerating into an existing SynthCC folder (overwrite=True) moves the old one aside whole and leaves no
    # stale files or temp folders.
    m3 = generate_synthcc(again, preset="tiny", seed=1, workers=1, overwrite=True)
    other = _tree_hashes(again)
    assert m3["seed"] == 1 and is_synthcc_root(again)
    images = {k for k in ref if k.startswith(("train/", "query/", "test/"))}
    images1 = {k for k in other if k.startswith(("train/", "query/", "test/"))}
    assert len(images & images1) < 0.1 * len(images)  # different pids / frames
    assert len(set(ref.values()) & set(other.values())) < 0.1 * len(ref)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "again" and len(names) == 2 and names[1].startswith("again.old-")
    assert _tree_hashes(tmp_path / names[1]) == ref  # the old dataset, whole


def test_existing_synthcc_folder_is_refused_without_overwrite_and_its_files_kept(synth, tmp_path):
    """Issue 18 F4: `rlq synth --out` on an existing SynthCC folder deleted the other files in it (e.g. the Quick
    start's pose_clusters.csv); now it refuses without --overwrite, and with it moves the folder aside."""
    import shutil

    from cli_helpers import run_cli

    root, _ = synth
    mine = tmp_path / "synthcc"
    shutil.copytree(root, mine)
    (mine / "pose_clusters.csv").write_text("Image,Cluster\nx,0\n")
    before = _tree_hashes(mine)
    with pytest.raises(DatasetError, match="--overwrite"):
        generate_synthcc(mine, preset="tiny", seed=1, workers=1)
    assert run_cli(["synth", "--out", str(mine), "--preset", "tiny", "--seed", "1", "--workers", "1"]) != 0
    assert _tree_hashes(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == ["synthcc"]
    assert run_cli(["synth", "--out", str(mine), "--preset", "tiny", "--seed", "1", "--workers", "1", "--overwrite"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("synthcc.old-")]
    assert len(aside) == 1 and _tree_hashes(aside[0]) == before  # pose_clusters.csv included
    assert is_synthcc_root(mine) and not (mine / "pose_clusters.csv").exists()


def test_refuses_foreign_folder_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not empty"):
        generate_synthcc(foreign, preset="tiny", workers=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="unknown SynthCC preset"):
        generate_synthcc(tmp_path / "x", preset="huge")

    def boom(args):
        raise RuntimeError("killed")

    monkeypatch.setattr(gen_mod, "_render_chunk", boom)
    with pytest.raises(RuntimeError, match="killed"):
        generate_synthcc(tmp_path / "half", preset="tiny", workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no half dataset, no staging folder


# ------------------------------------------------------------------------------------------ layout and CC structure


def test_ltcc_layout_and_clothes_changing_structure(synth):
    root, manifest = synth
    recs = {s: [_parse(n) for n in _names(root, s)] for s in SPLITS}
    for s in SPLITS:
        assert recs[s], s
        assert manifest["counts"][s]["images"] == len(recs[s])
        # names are unique and the LTCC fields are in range
        assert len(set(recs[s])) == len(recs[s])
        assert all(1 <= cam <= SYNTH_PRESETS["tiny"].cameras and outfit >= 1 for _, outfit, cam, _ in recs[s])
    train_ids = {r[0] for r in recs["train"]}
    test_ids = {r[0] for r in recs["query"] + recs["test"]}
    assert len(train_ids) == SYNTH_PRESETS["tiny"].train_ids and len(test_ids) == SYNTH_PRESETS["tiny"].test_ids
    assert not train_ids & test_ids
    assert {r[0] for r in recs["query"]} == test_ids
    gallery = recs["test"]
    for pid in test_ids:
        assert len({r[1] for r in recs["query"] + gallery if r[0] == pid}) >= 2
    same_clothes = 0
    for pid, outfit, cam, _ in recs["query"]:
        # clothes-changing match: same id, other outfit AND other camera
        assert any(g[0] == pid and g[1] != outfit and g[2] != cam for g in gallery), (pid, outfit, cam)
        same_clothes += any(g[0] == pid and g[1] == outfit and g[2] != cam for g in gallery)
    assert same_clothes >= len(recs["query"]) // 2  # same-clothes matches exist too
    # queries are spread over outfits and cameras
    for pid in test_ids:
        q = [r for r in recs["query"] if r[0] == pid]
        assert len({r[1] for r in q}) == len(q) or len({r[2] for r in q}) == len(q)


def test_image_sizes_and_preview(synth):
    root, _ = synth
    for s in SPLITS:
        for n in _names(root, s)[:30]:
            with Image.open(root / s / n) as im:
                assert im.mode == "RGB" and 88 <= im.height <= 208 and 0.3 <= im.width / im.height <= 0.65
    with Image.open(root / "preview.png") as im:
        assert im.width > 300 and im.height > 100


def test_external_split_celeb_layout(synth):
    root, manifest = synth
    ext = root / "external"
    ids = {}
    for s in ("train", "query", "gallery"):
        names = sorted(p.name for p in (ext / s).iterdir())
        assert names, s
        for n in names:
            m = CELEB.match(n)
            assert m and m[3] == "0", n
            with Image.open(ext / s / n) as im:
                assert im.size == (128, 256) and im.mode == "RGB"
        ids[s] = {int(CELEB.match(n)[1]) for n in names}
        assert manifest["counts"][f"external/{s}"]["quality"] == {"clean": len(names)}
    assert ids["query"] <= ids["gallery"] and not ids["train"] & ids["gallery"]
    assert len(ids["train"] | ids["gallery"]) == SYNTH_PRESETS["tiny"].external_ids
    rows = list(csv.DictReader(open(root / "SynthCC_external_Gender.csv", newline="")))
    assert {int(r["ID"]) for r in rows} == ids["train"]


# ------------------------------------------------------------------------------------------ side inputs


def test_gender_csvs(synth):
    root, manifest = synth
    with open(root / "SynthCC_Gender.csv", newline="") as f:
        assert f.readline().strip() == "Category,ID,Gender"
    rows = list(csv.DictReader(open(root / "SynthCC_Gender.csv", newline="")))
    train_ids = {_parse(n)[0] for n in _names(root, "train")}
    assert all(r["Category"] == "train" and re.fullmatch(r"\d{3}", r["ID"]) and r["Gender"] in "01" for r in rows)
    assert {int(r["ID"]) for r in rows} == train_ids and len(rows) == len(train_ids)
    test_rows = list(csv.DictReader(open(root / "SynthCC_test_Gender.csv", newline="")))
    for cat in ("query", "test"):
        assert {int(r["ID"]) for r in test_rows if r["Category"] == cat} == {_parse(n)[0] for n in _names(root, cat)}
    genders = {r["ID"]: r["Gender"] for r in test_rows}
    assert all(genders[r["ID"]] == r["Gender"] for r in test_rows)  # one gender per id across categories
    assert manifest["gender"]["train"]["male"] == sum(r["Gender"] == "1" for r in rows)


def test_alphapose_json_is_valid_and_matches_label_maps(synth):
    root, _ = synth
    face_ok = kp_total = knee_ok = hip_ok = 0
    n_images = n_missing = 0
    side = [0, 0]  # keypoints on their own side's label, on the other side's label
    for s in SPLITS:
        poses = _poses(root, s)
        names = set(_names(root, s))
        assert set(poses) <= names  # every image_id resolves
        for name in names:
            n_images += 1
            dets = poses.get(name, [])
            if not dets:
                n_missing += 1
                continue
            assert len(dets) <= 2
            with Image.open(root / s / name) as im:
                w, h = im.size
            labels = np.asarray(Image.open(root / "parsing" / s / name))
            for d in dets:
                assert d["category_id"] == 1 and len(d["keypoints"]) == 51 and len(d["box"]) == 4
                kp = np.asarray(d["keypoints"], float).reshape(17, 3)
                assert np.isfinite(kp).all() and (kp[:, 2] >= 0).all() and (kp[:, 2] <= 1).all()
                assert (kp[:, 0] >= 0).all() and (kp[:, 0] <= w - 1).all()
                assert (kp[:, 1] >= 0).all() and (kp[:, 1] <= h - 1).all()
            best = max(dets, key=lambda d: d["score"])  # docs/method.md §3.4 person selection
            kp = np.asarray(best["keypoints"], float).reshape(17, 3)

            def near_labels(i: int, kp=kp, labels=labels) -> set[int]:
                x, y = int(kp[i, 0]), int(kp[i, 1])
                return set(labels[max(0, y - 1):y + 2, max(0, x - 1):x + 2].ravel().tolist())

            kp_total += 1
            face_ok += all(near_labels(i) & {1, 2, 4, 13} for i in (0, 1, 2))
            knee_ok += all(near_labels(i) & {9, 12, 16, 17} for i in (13, 14))
            hip_ok += all(near_labels(i) & {5, 7, 9, 12, 14, 15, 16, 17} for i in (11, 12))
            # Sidedness: COCO left/right and LIP left/right are both the person's own sides.
            for i, own, other in ((13, 16, 17), (14, 17, 16), (15, 18, 19), (16, 19, 18)):
                if kp[i, 2] < 0.5:  # occluded (far side in a side view)
                    continue
                lab = near_labels(i)
                side[0] += own in lab and other not in lab
                side[1] += other in lab and own not in lab
    assert n_missing <= 0.12 * n_images  # a few null poses, not many
    assert face_ok >= 0.9 * kp_total and knee_ok >= 0.85 * kp_total and hip_ok >= 0.9 * kp_total
    assert side[0] >= 50 and side[1] <= 0.05 * side[0], side


def test_parsing_maps(synth):
    root, _ = synth
    palette = lip_palette()
    for s in SPLITS:
        names = _names(root, s)
        assert sorted(p.name for p in (root / "parsing" / s).iterdir()) == names
        for n in names:
            with Image.open(root / "parsing" / s / n) as lab, Image.open(root / s / n) as im:
                assert lab.mode == "P" and lab.size == im.size
                assert lab.getpalette()[: len(palette)] == palette
                arr = np.asarray(lab)
            assert arr.max() < 20
            fg = (arr > 0).mean()
            assert 0.12 < fg < 0.8, (n, fg)
            # every person has a head, upper clothes and shoes
            assert {13, 2} & set(np.unique(arr).tolist()) and {5, 7} & set(np.unique(arr).tolist())
            assert {18, 19} & set(np.unique(arr).tolist())


def _hf_energy(path: Path) -> float:
    a = np.asarray(Image.open(path).convert("L"), float)
    return float(np.abs(a[1:-1, 1:-1] * 4 - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]).mean())


def test_quality_csv_covers_every_image_and_lq_is_degraded(synth):
    root, manifest = synth
    with open(root / "quality.csv", newline="") as f:
        assert f.readline().strip() == "Category,Image,Artifact,Severity,Param"
    rows = list(csv.DictReader(open(root / "quality.csv", newline="")))
    expected = {(s, Path(n).stem if s == "train" else f"{s}/{Path(n).stem}") for s in SPLITS for n in _names(root, s)}
    assert {(r["Category"], r["Image"]) for r in rows} == expected and len(rows) == len(expected)
    energy: dict[str, list[float]] = {}
    for r in rows:
        art, sev, par = r["Artifact"], int(r["Severity"]), float(r["Param"])
        assert art in ("clean", "pixelation", "defocus", "motion") and 0 <= sev <= 3
        assert (art == "clean") == (sev == 0) and (par == 0) == (art == "clean")
        stem = r["Image"].rsplit("/", 1)[-1]
        energy.setdefault(art, []).append(_hf_energy(root / r["Category"] / f"{stem}.png"))
    assert set(energy) == {"clean", "pixelation", "defocus", "motion"}
    clean = float(np.mean(energy["clean"]))
    for art in ("pixelation", "defocus", "motion"):
        assert np.mean(energy[art]) < 0.8 * clean, art


def test_lq_images_equal_artifact_applied_to_clean_rerender(synth):
    """Re-render images clean from the plan: the file is exactly the recorded artifact applied to it."""
    root, manifest = synth
    p = SYNTH_PRESETS["tiny"]
    cams = gen_mod.make_cameras(p.cameras, gen_mod._gen(0, gen_mod._TAG_CAMERAS))
    tasks, _, _ = gen_mod._target_plan(p, 0, cams)
    rows = {r["Image"]: r for r in csv.DictReader(open(root / "quality.csv", newline=""))}
    seen = set()
    for task in tasks:
        row = rows[task.key]
        if row["Artifact"] in seen:
            continue
        seen.add(row["Artifact"])
        out, quality, img, _ = gen_mod._render_image(task)
        on_disk = np.asarray(Image.open(root / task.rel))
        assert np.array_equal(np.asarray(img), on_disk)
        assert quality.artifact == row["Artifact"] and quality.param == float(row["Param"])
        if quality.artifact == "clean":
            assert np.array_equal(out.image, on_disk)
        else:
            assert not np.array_equal(out.image, on_disk)
            again = apply_artifact(Image.fromarray(out.image), quality.artifact, quality.params)
            assert np.array_equal(np.asarray(again), on_disk)
    assert seen == {"clean", "pixelation", "defocus", "motion"}


def test_manifest(synth):
    root, manifest = synth
    on_disk = json.loads((root / "synthcc.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["name"] == "SynthCC" and manifest["preset"] == "tiny" and manifest["seed"] == 0
    assert len(manifest["cameras"]) == SYNTH_PRESETS["tiny"].cameras
    arts = {c["artifact"] for c in manifest["cameras"]}
    assert "clean" in arts and {"pixelation", "defocus", "motion"} <= arts
    poses = sum(len(_poses(root, s)) for s in SPLITS)
    total = sum(manifest["counts"][s]["images"] for s in SPLITS)
    assert poses == total - sum(manifest["counts"][s]["no_detection"] for s in SPLITS)


def test_default_preset_test_split_has_1000_clothes_changing_queries():
    """The demo's `default` preset plans >= 1,000 queries (one query <= 0.1 rank-1 points), every one with a
    clothes-changing true match in the gallery (same id, other camera, other outfit: docs/datasets.md, the cc
    rule); test identities follow the preset's test session layout; planning is deterministic per seed."""
    p = SYNTH_PRESETS["default"]
    cams = gen_mod.make_cameras(p.cameras, gen_mod._gen(0, gen_mod._TAG_CAMERAS))
    tasks, _, ids = gen_mod._target_plan(p, 0, cams)
    again, _, _ = gen_mod._target_plan(p, 0, gen_mod.make_cameras(p.cameras, gen_mod._gen(0, gen_mod._TAG_CAMERAS)))
    assert [t.rel for t in tasks] == [t.rel for t in again]
    def rec(t):
        return (t.ident.pid, t.outfit.index, t.camera.index)

    queries = [rec(t) for t in tasks if t.split == "query"]
    gallery = [rec(t) for t in tasks if t.split == "test"]
    assert len(ids["test_pids"]) == p.test_ids and len(queries) >= 1000
    for pid, outfit, cam in queries:  # brute force: a gallery image of the same person in other clothes and camera
        assert any(g[0] == pid and g[1] != outfit and g[2] != cam for g in gallery), (pid, outfit, cam)
    sessions: dict[tuple[int, int, int], int] = {}
    for t in tasks:
        if t.split != "train":
            sessions[rec(t)] = sessions.get(rec(t), 0) + 1
    assert set(sessions.values()) == {p.test_frames_per_session[0]}  # (2, 2): two frames per test session
    per_outfit: dict[tuple[int, int], set[int]] = {}
    for pid, outfit, cam in sessions:
        per_outfit.setdefault((pid, outfit), set()).add(cam)
    assert {len(c) for c in per_outfit.values()} == {2}
    n_out = {}
    for pid, _outfit in per_outfit:
        n_out[pid] = n_out.get(pid, 0) + 1
    assert set(n_out.values()) <= {2, 3}
