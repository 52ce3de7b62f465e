"""Issue 18 F6: an edited state.json with its manifest recomputed is refused field by field with a CheckpointError
naming the checkpoint and the field (rlq.engine.state_check), never a raw TypeError / RuntimeError or a
100000x100000 input size that grows loader workers to gigabytes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlq.engine.checkpoint import MANIFEST, STATE, WEIGHTS, CheckpointManager, read_checkpoint
from rlq.errors import CheckpointError
from rlq.io import sha256_file


@pytest.fixture(scope="module")
def run(synthcc_tiny, tmp_path_factory) -> Path:
    """A finished tiny run: a resumable numbered checkpoint and a weights-only `best`."""
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    out = tmp_path_factory.mktemp("state") / "run"
    run_training(tiny_spec(synthcc_tiny, out, epochs=1, steps=2))
    return out


def _edited(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint ``src`` with ``edit(state)`` applied and its manifest recomputed (checksums match)."""
    shutil.copytree(src, dst)
    state = json.loads((dst / STATE).read_text())
    edit(state)
    (dst / STATE).write_text(json.dumps(state))
    files = {f: {"sha256": sha256_file(dst / f), "size": (dst / f).stat().st_size} for f in (WEIGHTS, STATE)}
    (dst / MANIFEST).write_text(json.dumps({"files": files}))
    return dst


def _set(path: str, value):
    """An edit that sets the field at dotted ``path`` (list indices as numbers); value _DEL deletes it."""
    def edit(state):
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        d = state
        for k in keys[:-1]:
            d = d[k]
        if value is _DEL:
            del d[keys[-1]]
        else:
            d[keys[-1]] = copy.deepcopy(value)
    return edit


_DEL = object()

#: (dotted path in state.json, bad value, field named in the error)
RESUMABLE_CASES = [
    ("input_size", [100000, 100000], "input_size[0] (height)"),
    ("input_size", [256], "input_size"),
    ("input_size", "384x192", "input_size"),
    ("input_size", [64, 3.5], "input_size[1] (width)"),
    ("model_args", "bm", "model_args"),
    ("model_args.num_ids", -3, "model_args.num_ids"),
    ("model_args.num_ids", "8", "model_args.num_ids"),
    ("model_args.backbone", "resnet9000", "model_args.backbone"),
    ("model_args.method", "xyz", "model_args.method"),
    ("model_args.last_stride", 7, "model_args.last_stride"),
    ("model_args.pretrained", "/etc/passwd", "model_args.pretrained"),
    ("model_args.num_ids", _DEL, "model_args.num_ids"),
    ("method", 5, "method"),
    ("role", ["teacher"], "role"),
    ("num_train_ids", -1, "num_train_ids"),
    ("num_train_clothes", 1.5, "num_train_clothes"),
    ("spec", [], "spec"),
    ("spec.eval.flip", "yes", "spec.eval.flip"),
    ("spec.train.amp", "fp8", "spec.train.amp"),
    ("position", None, "position"),
    ("position.epoch", -1, "position.epoch"),
    ("position.batch", "3", "position.batch"),
    ("position.phase", _DEL, "position.phase"),
    ("global_step", None, "global_step"),
    ("global_step", 1e30, "global_step"),
    ("skipped_batches", -2, "skipped_batches"),
    ("optimizer", [], "optimizer"),
    ("optimizer.param_groups", [], "optimizer.param_groups"),
    ("optimizer.param_groups.0.lr", "fast", "optimizer.param_groups[0].lr"),
    ("optimizer.param_groups.0.betas", [0.9], "optimizer.param_groups[0].betas"),
    ("optimizer.param_groups.0.params", [0, -1], "optimizer.param_groups[0].params[1]"),
    ("optimizer.pids", [0, 99999], "optimizer.pids"),
    ("optimizer.pids", [], "optimizer.pids"),
    ("optimizer", _DEL, "optimizer"),
    ("method_state", 3, "method_state"),
    ("method_state.clothes_optim.pids", "all", "method_state.clothes_optim.pids"),
    ("method_state.clothes_optim", _DEL, "method_state.clothes_optim"),
    ("scaler", "on", "scaler"),
    ("rng", [], "rng"),
    ("rng.numpy", ["MT19937", 700, 0, 0.0], "rng.numpy[1]"),
    ("rng.python.1", [1, 2, 3], "rng.python[1]"),
    ("selection", None, "selection"),
    ("selection.metric", None, "selection.metric"),
    ("selection.history", {}, "selection.history"),
    ("world_size", 0, "world_size"),
    ("metrics_lines", "many", "metrics_lines"),
    ("log_window", [], "log_window"),
    ("log_window.n", -1, "log_window.n"),
    ("log_window.sums", {"loss": "x"}, "log_window.sums.loss"),
]

#: the same for the weights-only `best` checkpoint (fewer fields)
BEST_CASES = [
    ("input_size", [100000, 100000], "input_size[0] (height)"),
    ("epoch", "last", "epoch"),
    ("selected_on", "train", "selected_on"),
    ("results", [], "results"),
    ("weights_only", "true", "weights_only"),
    ("model_args.pose_clusters", 0, "model_args.pose_clusters"),
]


def _latest(run: Path) -> Path:
    good = CheckpointManager(run, create=False).latest_good()
    assert good is not None
    return good


@pytest.mark.parametrize("path,value,field", RESUMABLE_CASES, ids=[f"{c[0]}={c[1]!r:.20}" for c in RESUMABLE_CASES])
def test_edited_resumable_checkpoint_field_is_refused_naming_it(run, tmp_path, path, value, field):
    ck = _edited(_latest(run), tmp_path / "ck", _set(path, value))
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(ck)
    msg = str(e.value)
    assert f"checkpoint {ck}" in msg and f"field {field!r}" in msg, msg


@pytest.mark.parametrize("path,value,field", BEST_CASES, ids=[f"{c[0]}={c[1]!r:.20}" for c in BEST_CASES])
def test_edited_best_checkpoint_field_is_refused_naming_it(run, tmp_path, path, value, field):
    from rlq.engine.model_io import load_model_checkpoint

    ck = _edited(run / "checkpoints" / "best", tmp_path / "best", _set(path, value))
    with pytest.raises(CheckpointError) as e:
        load_model_checkpoint(ck)
    assert f"checkpoint {ck}" in str(e.value) and f"field {field!r}" in str(e.value), str(e.value)


def test_unedited_checkpoints_and_weights_only_ones_still_load(run, tmp_path):
    from rlq.engine.model_io import load_model_checkpoint

    read_checkpoint(_latest(run))
    model, state = load_model_checkpoint(run / "checkpoints" / "best")
    assert state["weights_only"] is True and "optimizer" not in state
    # a weights-only checkpoint with only what the model loader needs
    keep = {"format_version", "saved_at", "model_args", "weights_only"}
    ck = _edited(run / "checkpoints" / "best", tmp_path / "min", lambda s: [s.pop(k) for k in list(s) if k not in keep])
    load_model_checkpoint(ck)


def test_weights_that_do_not_fit_the_model_are_a_checkpoint_error(run, tmp_path):
    """A valid state whose model_args disagree with the stored tensors: load_state_dict's RuntimeError becomes a
    CheckpointError naming the checkpoint."""
    from rlq.engine.model_io import load_model_checkpoint

    best = run / "checkpoints" / "best"
    n = json.loads((best / STATE).read_text())["model_args"]["num_ids"]
    ck = _edited(best, tmp_path / "wrong", _set("model_args.num_ids", n + 3))
    with pytest.raises(CheckpointError, match=f"checkpoint {ck}: its weights do not fit"):
        load_model_checkpoint(ck)


def test_resume_from_an_edited_checkpoint_is_one_checkpoint_error(run, synthcc_tiny, tmp_path):
    """`rlq train --resume` never sees a bad field: the run's newest checkpoint edited is refused naming it."""
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    copy_run = tmp_path / "run"
    shutil.copytree(run, copy_run)
    latest = _latest(copy_run)
    tmp = tmp_path / "edited"
    _edited(latest, tmp, _set("position.batch", "zero"))
    shutil.rmtree(latest)
    tmp.rename(latest)
    with pytest.raises(CheckpointError, match="field 'position.batch'"):
        run_training(tiny_spec(synthcc_tiny, copy_run, epochs=2, steps=2), resume=True)


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                     max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(["input_size", "model_args", "position", "global_step", "optimizer", "method_state",
                              "scaler", "rng", "selection", "world_size", "metrics_lines", "spec", "num_train_ids",
                              "log_window"]),
       value=_json)
def test_random_field_values_only_raise_checkpoint_errors(run, tmp_path_factory, field, value):
    ck = _edited(_latest(run), tmp_path_factory.mktemp("h") / "ck", _set(field, value))
    try:
        read_checkpoint(ck)
    except CheckpointError as e:
        assert f"checkpoint {ck}" in str(e)


def test_resume_with_another_backbone_is_a_checkpoint_error(synthcc_tiny, tmp_path, one_thread):
    """The checkpoint is intact but this run's model has other shapes: one clear error, not a RuntimeError."""
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    run_training(tiny_spec(synthcc_tiny, tmp_path / "r", epochs=1, steps=1))
    with pytest.raises(CheckpointError, match=r"does not fit this run's model .*config.yaml"):
        run_training(tiny_spec(synthcc_tiny, tmp_path / "r", epochs=2, steps=1, model__backbone="mobilenetv2"), resume=True)
