"""The shipped presets, loaded through the real config loader, pinned to the authors' runs and the paper text.

Each number below comes from the authors' run scripts or the paper (docs/method.md §8, §10); a change to
tools/make_presets.py that moves one of them fails here. The last test regenerates the presets into a temporary
folder and checks that the committed YAML is exactly the generator's output (no hand edits, no stale files).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlq.config import PACKAGE_CONFIGS, load_config
from rlq.lq.mix import LQ_RANGES
from rlq.spec import RunSpec

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("ltcc", "prcc", "deepchange", "last")
TWO_BRANCH = ("bm", "bm_g", "bm_p", "cap", "tad", "rlq")


@cache
def spec(name: str) -> RunSpec:  # read-only use: the tests never mutate a spec
    return OmegaConf.to_object(load_config(f"configs/{name}.yaml", schema=RunSpec))


def leaf(ds: str, method: str, preset: str) -> str:
    return f"{ds}/{method}" + ("" if preset == "default" else f"_{preset}")


# -- batch sizes (per replica) ---------------------------------------------------------------------------------
# The authors' scripts: LTCC ablations (BM, BM+G, BM+P, CAP, BM+TAD) 28; LTCC RLQ R_LA_15 (46.4 %) 32;
# PRCC, DeepChange, LaST 40. `default` keeps the official batch; `paper` uses 40 everywhere.
# The authors' CAL script (run_CAL.sh): --batch_size 32 for vanilla CAL and CAL + clothes aug, every dataset.
OFFICIAL_BATCH = {
    "ltcc": {"bm": 28, "bm_g": 28, "bm_p": 28, "cap": 28, "tad": 28, "rlq": 32, "cal": 32, "cal_aug": 32},
    **{ds: {**dict.fromkeys(TWO_BRANCH, 40), "cal": 32, "cal_aug": 32} for ds in ("prcc", "deepchange", "last")},
}


@pytest.mark.parametrize("ds", DATASETS)
@pytest.mark.parametrize("preset", ["official", "default", "paper"])
def test_target_batch_per_replica(ds, preset):
    for m, b in OFFICIAL_BATCH[ds].items():
        assert spec(leaf(ds, m, preset)).data.batch_size == (40 if preset == "paper" else b), (ds, m, preset)


@pytest.mark.parametrize("ds", DATASETS)
@pytest.mark.parametrize("preset", ["official", "default", "paper"])
def test_external_stream_uses_the_target_batch(ds, preset):
    # The code builds the Celeb-reID loader from the same DATA.TRAIN_BATCH as the target loader.
    for m in ("tad", "rlq"):
        s = spec(leaf(ds, m, preset))
        expected = 40 if preset == "paper" else OFFICIAL_BATCH[ds][m]
        assert s.tad.external_batch_size == s.data.batch_size == expected, (ds, m, preset)
        assert s.tad.external_dataset == "celebreid"  # the default external stream
    # an override of the target batch carries over to the external stream
    s = OmegaConf.to_object(load_config(f"configs/{leaf(ds, 'rlq', preset)}.yaml", ["data.batch_size=16"], schema=RunSpec))
    assert s.tad.external_batch_size == 16


def test_ltcc_external_batches_by_run():
    assert spec("ltcc/tad_official").tad.external_batch_size == 28  # BM+TAD ablation script
    assert spec("ltcc/rlq_official").tad.external_batch_size == 32  # final RLQ run
    for ds in ("prcc", "deepchange", "last"):
        assert spec(f"{ds}/rlq_official").tad.external_batch_size == 40


# -- CAL ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ds", DATASETS)
@pytest.mark.parametrize("preset", ["official", "default", "paper"])
def test_cal_is_plain_cal(ds, preset):
    # Paper Table 2's CAL row (40.1 on LTCC): vanilla CAL, no clothes recolouring, 8 per identity, no triplet.
    s = spec(leaf(ds, "cal", preset))
    assert (s.method, s.data.recolor, s.data.num_instances, s.loss.cal_triplet) == ("cal", False, 8, False)
    aug = spec(leaf(ds, "cal_aug", preset))
    assert (aug.method, aug.data.recolor, aug.data.num_instances, aug.loss.cal_triplet) == ("cal", True, 8, False)


# -- precision, alternation, ranges, weights --------------------------------------------------------------------
@pytest.mark.parametrize("ds", DATASETS)
@pytest.mark.parametrize("preset", ["official", "default", "paper"])
def test_presets_train_and_evaluate_in_fp32(ds, preset):
    for m in (*TWO_BRANCH, "cal", "cal_aug"):
        assert spec(leaf(ds, m, preset)).train.amp == "off", (ds, m, preset)


def test_official_column():
    s = spec("ltcc/rlq_official")
    assert s.preset == "official"
    assert (s.optim.warmup_epochs, s.train.epochs, s.loss.kl_weighting) == (0, 200, "official")
    t = s.tad
    assert (t.alternation, t.reshuffle, t.reseed_aug, t.run_pose_branch, t.clothes_kl, t.lq_ranges) == (
        "epoch", False, False, True, False, "official")
    assert t.teacher == "runs/teacher-celeb" and s.data.camera_rule == "official"
    assert (s.data.num_instances, t.external_num_instances, t.fraction) == (4, 4, 1.0)


def test_default_column_is_official_plus_fixes():
    o, d = spec("prcc/rlq_official"), spec("prcc/rlq")
    assert (d.tad.reshuffle, d.tad.reseed_aug, d.tad.run_pose_branch, d.data.camera_rule) == (True, True, False, "unique")
    for key in ("alternation", "clothes_kl", "lq_ranges", "external_batch_size", "teacher", "fraction"):
        assert getattr(d.tad, key) == getattr(o.tad, key), key
    assert (d.loss, d.optim, d.data.batch_size) == (o.loss, o.optim, o.data.batch_size)


@pytest.mark.parametrize("ds", DATASETS)
def test_paper_column(ds):
    s = spec(f"{ds}/rlq_paper")
    assert (s.optim.warmup_epochs, s.optim.warmup_factor, s.loss.kl_weighting) == (10, 0.1, "paper")
    assert s.train.epochs == (300 if ds == "last" else 200)
    t = s.tad
    # the method section's "in alternate epochs"; the abstract's "alternate steps" stays an option
    assert (t.alternation, t.reshuffle, t.reseed_aug, t.run_pose_branch, t.clothes_kl, t.lq_ranges) == (
        "epoch", True, True, False, True, "paper")
    assert t.teacher == "runs/teacher-celeb-paper"


def test_paper_lq_ranges_read_inclusively():
    # "[16x16, 64x64]" and "size in [8, 20]": both inclusive; the code's range() ends are exclusive.
    assert LQ_RANGES["paper"].pixelation_s == (16, 64) and LQ_RANGES["paper"].motion_n == (8, 20)
    assert LQ_RANGES["official"].pixelation_s == (16, 63) and LQ_RANGES["official"].motion_n == (8, 19)


def test_teacher_recipes():
    t = spec("teacher/celeb")
    assert (t.role, t.method, t.data.dataset, t.data.batch_size, t.data.recolor, t.train.seed, t.train.epochs) == (
        "teacher", "bm", "celebreid", 40, False, 4, 200)
    assert t.loss.kl_weighting == "official" and t.train.amp == "off"
    p = spec("teacher/celeb_paper")
    assert (p.role, p.method, p.data.batch_size, p.data.recolor, p.train.seed, p.train.epochs) == (
        "teacher", "bm", 40, False, 4, 200)
    assert (p.loss.kl_weighting, p.optim.warmup_epochs, p.output) == ("paper", 10, "runs/teacher-celeb-paper")


def test_cap_teacher_recolours():
    # docs/method.md §8: the CAP teacher has 20,208 + 81 x 632 = 71,400 clothes classes (recoloured copies); the
    # Base Model teacher of §9 has none (one class per image).
    c = spec("teacher/celeb_cap")
    assert (c.role, c.method, c.data.dataset, c.data.recolor) == ("teacher", "cap", "celebreid", True)
    assert c.data.parsing_root and c.data.faulty_pant.endswith("Celeb-reID_Pant_faulty.csv")
    assert c.data.faulty_shirt.endswith("Celeb-reID_Shirt_faulty.csv")
    assert spec("teacher/celeb").data.recolor is False


def test_fig6_fraction_is_a_fixed_per_identity_subset():
    s = spec("ablations/ltcc_tad_fraction8")
    assert (s.tad.fraction, s.tad.fraction_mode, s.tad.fraction_by) == (0.08, "fixed", "identity")
    assert s.preset == "official" and s.tad.reshuffle is False


def test_table8_identity_folders_preset():
    s = spec("ablations/ltcc_rlq_identity_folders")
    assert s.tad.external_dataset == "identity_folders" and s.method == "rlq"
    # the authors distil Table 8 from a Base Model trained on NTU (BM_NTU_Tight), not from the Celeb-reID teacher
    t = spec("teacher/ntu")
    assert s.tad.teacher == t.output == "runs/teacher-ntu"
    assert (t.role, t.method, t.data.dataset, t.data.recolor) == ("teacher", "bm", "manifest", True)
    # the teacher trains on the manifest `rlq frames` writes beside the identity folders the student reads
    assert t.data.root == f"{s.tad.external_root}/manifest.csv"
    assert (t.data.batch_size, t.train.seed, t.train.epochs, t.loss.kl_weighting) == (40, 4, 200, "official")


# -- the committed YAML is the generator's output ---------------------------------------------------------------
def test_committed_presets_match_the_generator(tmp_path, monkeypatch):
    gen = importlib.util.spec_from_file_location("make_presets", REPO / "tools" / "make_presets.py")
    mod = importlib.util.module_from_spec(gen)
    gen.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    mod.main()
    fresh = {p.relative_to(tmp_path).as_posix(): p.read_text(encoding="utf-8") for p in tmp_path.rglob("*.yaml")}
    shipped = {p.relative_to(PACKAGE_CONFIGS).as_posix(): p.read_text(encoding="utf-8") for p in PACKAGE_CONFIGS.rglob("*.yaml")}
    assert sorted(fresh) == sorted(shipped), "run tools/make_presets.py and commit the YAML"
    stale = [k for k in fresh if fresh[k] != shipped[k]]
    assert not stale, f"presets differ from tools/make_presets.py: {stale[:5]}; re-run it"
