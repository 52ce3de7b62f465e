"""A skipped batch changes nothing (train.nonfinite=skip), and a non-finite batch stops the run naming the term.

The NaN is put where a real one starts: in the images, before the forward pass (the test-only fault point
``RLQ_FAULT_INJECT=nan-input:N`` of rlq.engine.faults), so the BatchNorm statistics and the clothes head see it
as they would in a real run; or in one loss term only, before or after the clothes head's own step. The
reference for "nothing changed" is the checkpoint written right before the skipped step: with a checkpoint
after every step, the one after the skipped step must hold the same bits.
"""

from __future__ import annotations

import json

import pytest
import torch

from rlq.engine.checkpoint import read_checkpoint
from rlq.engine.recipe import run_training
from rlq.errors import TrainingError
from test_engine import tiny_spec

# Clothes losses on from the first step, so a skipped batch has a clothes-head step to undo.
SKIP = dict(epochs=1, steps=5, loss__start_epoch_cc=0, loss__start_epoch_adv=0, train__nonfinite="skip",
            train__ckpt_every_steps=1, train__keep_last=20)


def _ckpt(run, step: int):
    return read_checkpoint(run / "checkpoints" / f"e0000-s{step:08d}")


def _state_tensors(tensors: dict) -> dict:
    """Everything a training step may change, RNG states aside (a skipped batch still draws its data)."""
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}


def _assert_unchanged(run, step: int) -> None:
    before, _ = _ckpt(run, step - 1)
    after, state = _ckpt(run, step)
    a, b = _state_tensors(before), _state_tensors(after)
    assert a.keys() == b.keys()
    # sanity: the state holds BN statistics, the clothes head and both optimizers' moments
    assert any("running_mean" in k for k in a) and any(k.startswith("clothes.") for k in a)
    assert any(k.startswith("optim.state.") for k in a) and any(k.startswith("clothes_optim.state.") for k in a)
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed == [], f"the skipped step {step} changed {changed[:5]}"
    assert state["skipped_batches"] == 1


def test_nan_images_skipped_batch_changes_nothing(synthcc_tiny, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("RLQ_FAULT_INJECT", "nan-input:3")  # test-only hook: the images of step 3 are NaN
    run = tmp_path / "nan-input"
    rep = run_training(tiny_spec(synthcc_tiny, run, method="cap", **SKIP))
    assert rep["skipped_batches"] == 1
    _assert_unchanged(run, 3)
    tensors, state = read_checkpoint(run / "checkpoints" / "e0001-s00000005")
    assert state["skipped_batches"] == 1
    assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())
    # the steps after the skipped one were not skipped (the clothes head was not poisoned)
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2, 4, 5]


@pytest.mark.parametrize("term", ["clothes_ce", "cal"])
def test_one_nan_loss_term_skipped_batch_changes_nothing(synthcc_tiny, tmp_path, monkeypatch, one_thread, term):
    """clothes_ce: the clothes head's own stage is not finite (nothing stepped yet); cal: the main stage is not
    finite after the clothes head has taken its step, which must be undone."""
    import rlq.methods.reid as reid

    fn = {"clothes_ce": "clothes_ce", "cal": "cal_adversarial_loss"}[term]
    orig = getattr(reid, fn)
    calls = {"n": 0}

    def nan_on_third(*a, **k):
        calls["n"] += 1
        v = orig(*a, **k)
        return v * float("nan") if calls["n"] == 3 else v

    monkeypatch.setattr(reid, fn, nan_on_third)
    run = tmp_path / term
    rep = run_training(tiny_spec(synthcc_tiny, run, method="bm", **SKIP))
    assert rep["skipped_batches"] == 1
    _assert_unchanged(run, 3)


def test_nan_images_without_skip_stop_naming_the_step_and_terms(synthcc_tiny, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("RLQ_FAULT_INJECT", "nan-input:2")
    spec = tiny_spec(synthcc_tiny, tmp_path / "err", method="bm", epochs=1, steps=4, train__ckpt_every_steps=1)
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 0, step 1 \(reid step\): .*id_cal=nan"):
        run_training(spec)
    # the last good checkpoint (after step 1) is kept
    assert (tmp_path / "err" / "checkpoints" / "e0000-s00000001").is_dir()


def test_skip_with_grad_scaler_restores_the_scale_and_changes_nothing(synthcc_tiny, tmp_path, monkeypatch, one_thread):
    """fp16 (GradScaler, here on the CPU): the clothes head steps through the scaler, then the main stage is NaN;
    the skip puts back the head, its optimizer and the scaler's state (scale, growth tracker)."""
    import rlq.methods.reid as reid

    orig = reid.cal_adversarial_loss
    calls = {"n": 0}

    def nan_on_third(*a, **k):
        calls["n"] += 1
        v = orig(*a, **k)
        return v * float("nan") if calls["n"] == 3 else v

    monkeypatch.setattr(reid, "cal_adversarial_loss", nan_on_third)
    run = tmp_path / "fp16"
    rep = run_training(tiny_spec(synthcc_tiny, run, method="bm", train__amp="fp16", **{**SKIP, "steps": 4}))
    assert rep["skipped_batches"] == 1
    _assert_unchanged(run, 3)
    _, before = _ckpt(run, 2)
    _, after = _ckpt(run, 3)
    assert before["scaler"] is not None and before["scaler"] == after["scaler"]
