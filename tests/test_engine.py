"""The training engine: schedule, selection, checkpoints, exact resume, signals, non-finite losses, TAD wiring."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from rlq.engine.checkpoint import CheckpointManager, read_checkpoint, verify_checkpoint
from rlq.engine.recipe import run_training
from rlq.engine.trainer import Selection, TrainingInterrupted, lr_at_epoch
from rlq.errors import CheckpointError, ConfigError, TrainingError
from rlq.spec import DataSpec, EvalSpec_, LossSpec, ModelSpec, OptimSpec, RunSpec, TADSpec, TrainSpec


def tiny_spec(root: Path, out: Path, method: str = "bm", epochs: int = 2, steps: int = 3, **over) -> RunSpec:
    spec = RunSpec(
        method=method,
        output=str(out),
        data=DataSpec(dataset="synthcc", root=str(root), height=64, width=32, batch_size=8, workers=0, cache_images=True),
        model=ModelSpec(backbone="tiny", pretrained="none"),
        loss=LossSpec(start_epoch_cc=1, start_epoch_adv=1),
        optim=OptimSpec(lr=1e-3, clothes_lr=1e-3, milestones=[1, 2]),
        train=TrainSpec(epochs=epochs, eval_every=1, progress=False, log_every=1, max_steps_per_epoch=steps,
                        tensorboard=False, seed=3),
        tad=TADSpec(external_root=str(root / "external"), external_batch_size=8, source_height=64, source_width=32),
        eval=EvalSpec_(workers=0, batch_size=64),
    )
    for k, v in over.items():
        section, key = k.split("__")
        setattr(getattr(spec, section), key, v)
    return spec


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    good = CheckpointManager(run_dir, create=False).latest_good()
    tensors, state = read_checkpoint(good)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "clothes.", "optim.", "clothes_optim."))}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- schedule and selection ------------------------------------------------------------------------
def test_lr_schedule_official_and_paper():
    # docs/method.md §6: 3.5e-4 for epochs 0-19, 3.5e-5 for 20-39, 3.5e-6 from 40
    assert lr_at_epoch(0, 3.5e-4, [20, 40], 0.1) == 3.5e-4
    assert lr_at_epoch(19, 3.5e-4, [20, 40], 0.1) == 3.5e-4
    assert math.isclose(lr_at_epoch(20, 3.5e-4, [20, 40], 0.1), 3.5e-5)
    assert math.isclose(lr_at_epoch(40, 3.5e-4, [20, 40], 0.1), 3.5e-6)
    # `paper`: linear warmup from 0.1x over 10 epochs (BoT style)
    assert math.isclose(lr_at_epoch(0, 3.5e-4, [20, 40], 0.1, 10, 0.1), 3.5e-5)
    assert math.isclose(lr_at_epoch(5, 3.5e-4, [20, 40], 0.1, 10, 0.1), 3.5e-4 * (0.1 * 0.5 + 0.5))
    assert lr_at_epoch(10, 3.5e-4, [20, 40], 0.1, 10, 0.1) == 3.5e-4


def _res(r1, m):
    return {"cc": {"rank1": r1, "mAP": m}, "general": {"rank1": r1, "mAP": m}}


def test_selection_rules():
    s = Selection("cc")
    assert s.update(0, _res(0.4, 0.2), None)["test"]
    assert not s.update(1, _res(0.3, 0.5), None)["test"]  # lower R1 never wins...
    assert s.max_map == 0.5  # ...but the official reported mAP is the max over all evaluations
    assert not s.update(2, _res(0.4, 0.45), None)["test"]  # R1 tie: needs mAP above the best seen (0.5)
    assert s.update(3, _res(0.4, 0.55), None)["test"]
    rep = s.report()
    assert rep["test@best_test"]["epoch"] == 3 and rep["test@best_test"]["selected_on"] == "test"
    assert rep["test@last"]["epoch"] == 3 and rep["test@best_val"] is None
    v = Selection("general")
    v.update(0, _res(0.5, 0.5), {"general": {"rank1": 0.9, "mAP": 0.8}})
    v.update(1, _res(0.6, 0.6), {"general": {"rank1": 0.8, "mAP": 0.9}})
    assert v.report()["test@best_val"]["epoch"] == 0  # selected on val, reports the test numbers of that epoch
    assert Selection.from_json(json.loads(json.dumps(v.to_json()))).report() == v.report()


# -- checkpoints -------------------------------------------------------------------------------------
def test_checkpoint_atomic_torn_detection_and_fallback(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    a = mgr.save("e0001-s00000001", {"w": torch.arange(4.0)}, {"step": 1})
    b = mgr.save("e0002-s00000002", {"w": torch.arange(4.0) * 2}, {"step": 2})
    assert verify_checkpoint(b) is None
    tensors, state = read_checkpoint(b)
    assert torch.equal(tensors["w"], torch.arange(4.0) * 2) and state["step"] == 2
    # flip one byte of the newest checkpoint's weights: torn -> fall back to the previous one with a warning
    f = b / "weights.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    assert "checksum" in verify_checkpoint(b)
    with caplog.at_level("WARNING"):
        assert mgr.latest_good() == a
    assert "torn" in caplog.text
    with pytest.raises(CheckpointError, match="torn or corrupt"):
        read_checkpoint(b)
    # a half-written folder (no manifest) is never picked, and keep_last prunes old ones
    (tmp_path / "checkpoints" / "e0003-s00000003").mkdir()
    assert mgr.latest_good() == a
    for i in range(4, 8):
        mgr.save(f"e{i:04d}-s{i:08d}", {"w": torch.zeros(1)}, {})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("e"))
    assert names[-3:] == ["e0005-s00000005", "e0006-s00000006", "e0007-s00000007"]
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


# -- exact resume ---------------------------------------------------------------------------------------
def test_resume_at_epoch_boundary_matches_uninterrupted(synthcc_tiny, tmp_path):
    full = tiny_spec(synthcc_tiny, tmp_path / "full", epochs=3)
    run_training(full)
    part = tiny_spec(synthcc_tiny, tmp_path / "part", epochs=2)
    run_training(part)
    rest = tiny_spec(synthcc_tiny, tmp_path / "part", epochs=3)
    rep = run_training(rest, resume=True)
    assert_same(final_weights(tmp_path / "full"), final_weights(tmp_path / "part"))
    a = json.loads((tmp_path / "full" / "results.json").read_text())
    assert a["test@last"] == rep["test@last"]


def test_sigterm_mid_epoch_checkpoint_then_resume_matches(synthcc_tiny, tmp_path, monkeypatch):
    from rlq.methods.reid import ReIDMethod

    run_training(tiny_spec(synthcc_tiny, tmp_path / "full", epochs=2, steps=4))
    calls = {"n": 0}
    orig = ReIDMethod.training_step

    def step_then_signal(self, kind, batch, ctx):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0, third batch: a real SIGTERM to ourselves
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(self, kind, batch, ctx)

    monkeypatch.setattr(ReIDMethod, "training_step", step_then_signal)
    spec = tiny_spec(synthcc_tiny, tmp_path / "cut", epochs=2, steps=4)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run_training(spec)
    tensors, state = read_checkpoint(CheckpointManager(tmp_path / "cut", create=False).latest_good())
    assert state["position"] == {"epoch": 0, "phase": 0, "batch": 3, "ext_epoch": 0, "ext_batch": 0}
    monkeypatch.setattr(ReIDMethod, "training_step", orig)
    run_training(spec, resume=True)
    assert_same(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))
    # the metrics log holds each step once after the resume
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "train"]
    assert steps == sorted(set(steps))


# -- faults -------------------------------------------------------------------------------------------
def test_nonfinite_loss_stops_with_term_name_or_skips(synthcc_tiny, tmp_path, monkeypatch):
    import rlq.methods.reid as reid

    orig = reid.batch_hard_triplet
    calls = {"n": 0}

    def nan_second(*a, **k):  # the second step's triplet term (global step 1) is NaN
        calls["n"] += 1
        v = orig(*a, **k)
        return v * float("nan") if calls["n"] % 100 == 2 else v

    monkeypatch.setattr(reid, "batch_hard_triplet", nan_second)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 0, step 1 .*triplet=nan"):
        run_training(tiny_spec(synthcc_tiny, tmp_path / "err", epochs=1))
    calls["n"] = 100
    rep = run_training(tiny_spec(synthcc_tiny, tmp_path / "skip", epochs=1, train__nonfinite="skip"))
    assert rep["skipped_batches"] == 1


def test_impossible_configs_rejected_before_work(synthcc_tiny, tmp_path):
    with pytest.raises(ConfigError, match="divisible"):
        run_training(tiny_spec(synthcc_tiny, tmp_path / "a", data__batch_size=10))
    with pytest.raises(ConfigError, match="tad.teacher"):
        run_training(tiny_spec(synthcc_tiny, tmp_path / "b", method="rlq"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
            pytest.skip("cannot make a read-only folder as this user")
        with pytest.raises(ConfigError, match="cannot write to the output folder"):
            run_training(tiny_spec(synthcc_tiny, ro / "run"))
    finally:
        ro.chmod(0o700)


# -- TAD wiring ---------------------------------------------------------------------------------------
def test_rlq_teacher_frozen_and_pose_branch_idle_in_tad_steps(synthcc_tiny, tmp_path, monkeypatch):
    from rlq.engine import recipe
    from rlq.methods.tad import TADMethod

    teacher_spec = tiny_spec(synthcc_tiny, tmp_path / "teacher", epochs=1)
    teacher_spec = dataclasses.replace(teacher_spec, role="teacher",
                                       data=dataclasses.replace(teacher_spec.data, dataset="celebreid",
                                                                root=str(synthcc_tiny / "external"), recolor=False))
    run_training(teacher_spec)
    seen = {}
    orig_load = recipe.load_teacher

    def spy_load(*a, **k):
        t = orig_load(*a, **k)
        seen["teacher"] = t
        seen["before"] = {n: p.detach().clone() for n, p in t.named_parameters()}
        return t

    monkeypatch.setattr(recipe, "load_teacher", spy_load)
    pose_calls = {"tad": 0, "reid": 0}
    orig_tad, orig_reid = TADMethod.tad_step, TADMethod.reid_step

    def count(kind, fn):
        def wrapped(self, batch, ctx):
            from rlq.methods.base import StepOutput

            h = ctx.raw_model.pose_branch.register_forward_hook(lambda *a: pose_calls.__setitem__(kind, pose_calls[kind] + 1))
            try:
                out = fn(self, batch, ctx)
            except BaseException:
                h.remove()
                raise
            if not isinstance(out, StepOutput):  # a staged step runs while the trainer iterates it: count until then
                def stages(gen=out):
                    try:
                        yield from gen
                    finally:
                        h.remove()
                return stages()
            h.remove()
            if kind == "tad":
                assert set(out.losses) == {"distill", "ss_kl"}
                assert 0.0 <= float(out.losses["distill"].detach()) <= 16.0  # four normalised-MSE terms, each in [0, 4]
            return out
        return wrapped

    monkeypatch.setattr(TADMethod, "tad_step", count("tad", orig_tad))
    monkeypatch.setattr(TADMethod, "reid_step", count("reid", orig_reid))
    spec = tiny_spec(synthcc_tiny, tmp_path / "rlq", method="rlq", epochs=1, tad__teacher=str(tmp_path / "teacher"))
    rep = run_training(spec)
    assert pose_calls["tad"] == 0 and pose_calls["reid"] > 0
    t = seen["teacher"]
    assert not t.training
    for n, p in t.named_parameters():
        assert p.grad is None and not p.requires_grad
        assert torch.equal(p, seen["before"][n]), n
    assert "cc" in rep["test@last"]["results"]


def test_teacher_without_recipe_metadata_refused(synthcc_tiny, tmp_path):
    run_training(tiny_spec(synthcc_tiny, tmp_path / "plain", epochs=1))
    spec = tiny_spec(synthcc_tiny, tmp_path / "tad", method="tad", epochs=1, tad__teacher=str(tmp_path / "plain"))
    with pytest.raises(CheckpointError, match="teacher recipe"):
        run_training(spec)


def test_identity_holdout_gives_val_selection(synthcc_tiny, tmp_path):
    from rlq.data.datasets import load_dataset
    from rlq.data.holdout import identity_holdout

    ds = load_dataset("synthcc", synthcc_tiny)
    h = identity_holdout(ds, 2, seed=0)
    held = set(h.info["val_holdout"]["held_out"])
    assert len(held) == 2 and h.num_train_pids == ds.num_train_pids - 2
    assert {s.pid for s in h.train} == set(range(h.num_train_pids))
    assert h.pid2clothes.sum() == sum(1 for _ in {(s.pid, s.clothes_id) for s in h.train})
    val = h.split("val_query") + h.split("val_gallery")
    assert {s.pid for s in val} == held and len(val) + len(h.train) == len(ds.train)
    for p in held:  # one query per camera
        cams = [s.camid for s in h.split("val_query") if s.pid == p]
        assert len(cams) == len(set(cams))
    rep = run_training(tiny_spec(synthcc_tiny, tmp_path / "val", epochs=2, data__val_holdout_ids=2))
    assert rep["test@best_val"]["selected_on"] == "val" and "cc" in rep["test@best_val"]["val"]


def test_bm_lq_aug_appends_lq_views_with_real_clothes(synthcc_tiny, tmp_path, monkeypatch):
    """Table 7 "BM + LQ Aug.": the forwarded batch is [orig, copy]*B + B LQ views keeping the real labels."""
    from rlq.methods import reid

    seen = {}
    orig = reid.assemble_target_batch

    def spy(batch, ctx, recolor):
        x, y = orig(batch, ctx, recolor)
        seen.update(n=batch["img"].shape[0], x=x.shape[0], clothes=y["clothes"], real=batch["clothes"])
        return x, y

    monkeypatch.setattr(reid, "assemble_target_batch", spy)
    run_training(tiny_spec(synthcc_tiny, tmp_path / "lqaug", epochs=1, steps=1, loss__lq_aug=True))
    n = seen["n"]
    assert seen["x"] == 3 * n
    assert torch.equal(seen["clothes"][2 * n:], seen["real"].long())


def test_tad_external_stream_from_an_unlabeled_folder(synthcc_tiny, tmp_path):
    """TAD with any folder of person crops as the external stream (Table 7 `kl_only`: no teacher needed)."""
    spec = tiny_spec(synthcc_tiny, tmp_path / "folder", method="tad", epochs=1, tad__external_dataset="folder",
                     tad__external_root=str(synthcc_tiny / "external" / "train"), tad__variant="kl_only")
    rep = run_training(spec)
    steps = [json.loads(line) for line in (tmp_path / "folder" / "metrics.jsonl").read_text().splitlines()]
    assert {r.get("phase") for r in steps if r["type"] == "train"} == {"tad", "reid"}
    assert "ss_kl" in next(r for r in steps if r.get("phase") == "tad") and rep["test@last"]
