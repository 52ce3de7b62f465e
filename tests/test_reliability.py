"""Reliability and safety (issue 7): kills, corrupt inputs, unsafe files, hostile names."""

from __future__ import annotations

import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faults import final_state, metrics_lines, run_uninterrupted, run_with_kills, same_state
from rlq.errors import CheckpointError, ConfigError, DatasetError, RlqError


@pytest.mark.slow
def test_sigkill_mid_step_checkpoint_write_and_evaluation_then_resume_matches_uninterrupted(synthcc_tiny, tmp_path):
    """SIGKILL (test-only RLQ_FAULT_INJECT hook, so it lands whatever the machine's speed) right after a step,
    in the middle of a checkpoint write and in the middle of an evaluation, resuming each time: the final
    weights, optimizer state, reported metrics and metrics log equal an uninterrupted run's."""
    run_uninterrupted(synthcc_tiny, tmp_path / "ref")
    events = run_with_kills(synthcc_tiny, tmp_path / "killed")
    kills = [e for e in events if not e.get("final")]
    assert [e["killed"] for e in kills] == [True, True, True], events
    assert "torn temp folders" in kills[1]["state_at_kill"]  # died mid-write: the temp folder is left, never used
    assert same_state(final_state(tmp_path / "ref"), final_state(tmp_path / "killed"))
    # one line per logged step and evaluation, identical to the uninterrupted run's (nothing repeated or mixed)
    assert metrics_lines(tmp_path / "killed") == metrics_lines(tmp_path / "ref")


def test_corrupt_train_image_fails_fast_naming_the_file(synthcc_tiny, tmp_path):
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    root = tmp_path / "data"
    shutil.copytree(synthcc_tiny, root)
    victim = sorted((root / "train").glob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:60])  # truncated PNG
    spec = tiny_spec(root, tmp_path / "run", epochs=1, steps=0)  # a full epoch visits every train image
    spec.data.workers = 1
    spec.data.cache_images = False
    with pytest.raises(DatasetError, match=victim.name):
        run_training(spec)


def test_output_path_that_cannot_be_a_folder_is_refused_before_work(synthcc_tiny, tmp_path):
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write to the output folder"):
        run_training(tiny_spec(synthcc_tiny, blocker / "run"))


def test_pickle_payload_never_executes(tmp_path):
    """A .pth with a code-executing pickle is refused by the pretrained loader (weights_only=True)."""
    from rlq.models import build_model

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "x"))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f, protocol=2)
    with pytest.raises(RlqError):
        build_model(method="bm", num_ids=3, backbone="resnet18", pretrained=str(evil))
    assert not marker.exists()


def test_checkpoint_with_pickled_weights_is_refused(tmp_path):
    from rlq.engine.checkpoint import CheckpointManager, read_checkpoint

    ck = CheckpointManager(tmp_path).save("e0001-s00000001", {"w": torch.ones(2)}, {"x": 1})
    (ck / "weights.safetensors").write_bytes(pickle.dumps({"w": torch.ones(2)}))  # a pickle in disguise
    with pytest.raises(CheckpointError):
        read_checkpoint(ck)
    with pytest.raises(CheckpointError):
        read_checkpoint(ck, verify=False)  # even without the checksum, safetensors refuses it


def test_features_file_with_object_array_refused(tmp_path):
    from rlq.evaluation.protocols import load_features

    buf = io.BytesIO()
    np.savez(buf, **{"query/feats": np.array([object()], dtype=object)})
    f = tmp_path / "f.npz"
    f.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError):
        load_features(f)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.text(min_size=0, max_size=30), max_size=4))
def test_random_overrides_only_raise_config_errors(tmp_path, overrides):
    from rlq.config import load_config
    from rlq.spec import RunSpec

    try:
        load_config("configs/ltcc/bm.yaml", overrides, schema=RunSpec)
    except ConfigError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_config_files_only_raise_config_errors(tmp_path, data):
    from rlq.config import load_config
    from rlq.spec import RunSpec

    f = tmp_path / "c.yaml"
    f.write_bytes(data)
    try:
        load_config(f, [], schema=RunSpec)
    except ConfigError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(["weights.safetensors", "state.json", "MANIFEST.json"]))
def test_random_checkpoint_bytes_only_raise_checkpoint_errors(tmp_path, data, which):
    from rlq.engine.checkpoint import CheckpointManager, read_checkpoint, verify_checkpoint

    ck = CheckpointManager(tmp_path).save("e0001-s00000001", {"w": torch.ones(2)}, {"x": 1})
    (ck / which).write_bytes(data)
    assert verify_checkpoint(ck) is not None or which == "MANIFEST.json"
    try:
        read_checkpoint(ck)
    except CheckpointError:
        pass


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_features_files_only_raise_checkpoint_errors(tmp_path, data):
    from rlq.evaluation.protocols import load_features

    f = tmp_path / "f.npz"
    f.write_bytes(data)
    try:
        load_features(f)
    except CheckpointError:
        pass


def test_override_with_a_control_character_is_a_config_error():
    """Found by the property test above: PyYAML's ReaderError used to escape as itself."""
    from rlq.config import load_config
    from rlq.spec import RunSpec

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("configs/ltcc/bm.yaml", ["0=\x1f"], schema=RunSpec)
