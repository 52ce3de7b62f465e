"""Protocol evaluation on tiny hand-built datasets and the features file format."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from rlq.data.records import EvalSpec, Protocol, Sample
from rlq.errors import CheckpointError, RlqError
from rlq.evaluation import (
    SplitLabels,
    evaluate,
    evaluate_features_file,
    evaluate_protocol,
    features_meta,
    format_table,
    load_features,
    save_features,
    summarize,
)


def samples(split, pids, cams, clothes):
    return tuple(
        Sample(f"/data/{split}/{i:03d}.jpg", int(p), int(c), int(o), f"{split}/{i:03d}")
        for i, (p, c, o) in enumerate(zip(pids, cams, clothes))
    )


def unit(rows):
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# LTCC-like: one query split against one gallery split under three rules.
LTCC = Protocol(
    specs=(EvalSpec("general", "query", "test", "general"), EvalSpec("cc", "query", "test", "cc"),
           EvalSpec("sc", "query", "test", "sc")),
    selection="cc",
)
# PRCC-like: two query sets (B: same clothes, C: other clothes) against gallery A, both under "general".
PRCC = Protocol(
    specs=(EvalSpec("sc", "B", "A", "general"), EvalSpec("cc", "C", "A", "general")),
    selection="cc",
    clothes_derived=True,
)


def ltcc_like():
    # Query 0: pid 1, cam 0, clothes 0. Gallery cosine to query 0 (features are 2-D unit vectors):
    #   g0 pid1 cam0 clo0 cos 1.0  junk everywhere (same camera)
    #   g1 pid2 cam1 clo1 cos 0.8
    #   g2 pid1 cam1 clo0 cos 0.6  general good, sc good, cc junk (same clothes)
    #   g3 pid1 cam2 clo1 cos 0.0  general good, cc good, sc junk
    # general: cleaned [g1, g2, g3] -> ranks 2, 3: AP = (1/2 + 2/3)/2 = 7/12, R1 = 0
    # cc: cleaned [g1, g3] -> rank 2: AP = 1/2 ; sc: cleaned [g1, g2, g3-junk removed] -> rank 2: AP = 1/2
    # Query 1: pid 3 (not in gallery) -> invalid in every mode.
    q = unit([[1, 0], [0, 1]])
    g = unit([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]])
    qs = samples("query", [1, 3], [0, 0], [0, 5])
    gs = samples("test", [1, 2, 1, 1], [0, 1, 1, 2], [0, 1, 0, 1])
    return q, g, qs, gs


def test_ltcc_like_three_modes_by_hand():
    q, g, qs, gs = ltcc_like()
    res = evaluate_protocol({"query": (q, qs), "test": (torch.from_numpy(g), gs)}, LTCC, max_rank=5)
    assert list(res) == ["general", "cc", "sc"]
    assert res["general"]["mAP"] == pytest.approx(7 / 12) and res["general"]["rank1"] == 0.0
    assert res["general"]["cmc"].tolist() == [0, 1, 1, 1, 1]
    assert res["cc"]["mAP"] == pytest.approx(0.5) and res["sc"]["mAP"] == pytest.approx(0.5)
    for name in ("general", "cc", "sc"):
        assert res[name]["num_valid_queries"] == 1 and res[name]["num_queries"] == 2
        assert res[name]["query"] == "query" and res[name]["gallery"] == "test" and res[name]["mode"] == name
    summ = summarize(res)
    assert summ["general"] == {"rank1": 0.0, "rank5": 1.0, "rank10": 1.0, "rank20": 1.0, "mAP": pytest.approx(7 / 12),
                               "mINP": pytest.approx(2 / 3), "num_valid_queries": 1, "num_queries": 2}
    table = format_table(res, selection="cc")
    lines = table.splitlines()
    assert len(lines) == 6 and lines[0].startswith("| eval") and "cc*" in lines[3]
    assert lines[5].startswith("(cc*: the protocol's selection")  # the star explained under the table
    assert "58.3" in lines[2] and "1/2" in lines[2]  # mAP 7/12 in percent, valid/total
    assert "0.5833" in format_table(res, percent=False)


def test_prcc_like_two_query_sets():
    rng = np.random.default_rng(0)
    a = samples("A", [0, 0, 1, 1, 2], [0] * 5, [0, 0, 2, 2, 4])
    b = samples("B", [0, 1, 2], [1] * 3, [0, 2, 4])
    c = samples("C", [0, 1], [2] * 2, [1, 3])
    fa, fb, fc = (rng.standard_normal((len(x), 6)).astype(np.float32) for x in (a, b, c))
    res = evaluate_protocol({"A": (fa, a), "B": (fb, b), "C": (fc, c)}, PRCC)
    assert list(res) == ["sc", "cc"]
    for name, (qf, qs) in {"sc": (fb, b), "cc": (fc, c)}.items():
        d = -(qf / np.linalg.norm(qf, axis=1, keepdims=True)) @ (fa / np.linalg.norm(fa, axis=1, keepdims=True)).T
        ref = evaluate(d, [s.pid for s in qs], [s.pid for s in a], [s.camid for s in qs], [s.camid for s in a])
        np.testing.assert_allclose(res[name]["ap"], ref["ap"], rtol=0, atol=1e-12)
        assert res[name]["mode"] == "general" and res[name]["num_queries"] == len(qs)


def test_protocol_input_errors():
    q, g, qs, gs = ltcc_like()
    with pytest.raises(RlqError, match="missing split"):
        evaluate_protocol({"query": (q, qs)}, LTCC)
    with pytest.raises(RlqError, match="feature rows"):
        evaluate_protocol({"query": (q[:1], qs), "test": (g, gs)}, LTCC)


def test_features_file_round_trip(tmp_path):
    q, g, qs, gs = ltcc_like()
    path = tmp_path / "feats.npz"
    save_features(path, {"query": q, "test": torch.from_numpy(g).double()}, {"query": qs, "test": gs},
                  extra={"model": "rlq", "epoch": 3})
    feats, labels = load_features(path)
    assert set(feats) == {"query", "test"} and feats["test"].dtype == np.float64
    np.testing.assert_array_equal(feats["query"], q)
    lab = labels["test"]
    assert lab.pids.tolist() == [1, 2, 1, 1] and lab.camids.tolist() == [0, 1, 1, 2]
    assert lab.clothes_ids.tolist() == [0, 1, 0, 1] and lab.keys.tolist() == [s.key for s in gs]
    assert lab.paths.tolist() == [s.path for s in gs] and lab.keys.dtype.kind == "U"
    meta = features_meta(path)
    assert meta["extra"] == {"model": "rlq", "epoch": 3} and meta["splits"]["query"] == {"num": 2, "dim": 2, "labels": True}
    direct = evaluate_protocol({"query": (q, qs), "test": (g, gs)}, LTCC)
    from_file = evaluate_features_file(path, LTCC)
    for name in direct:
        np.testing.assert_allclose(from_file[name]["ap"], direct[name]["ap"], rtol=0, atol=1e-6, equal_nan=True)
    # SplitLabels round trip, no leftover temporary files
    assert len(SplitLabels.from_samples(qs)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["feats.npz"]


def test_features_file_without_labels_needs_samples(tmp_path):
    q, g, qs, gs = ltcc_like()
    path = tmp_path / "nolabels.npz"
    save_features(path, {"query": q, "test": g})
    feats, labels = load_features(path)
    assert labels == {} and feats["test"].shape == (4, 2)
    with pytest.raises(CheckpointError, match="no labels for split 'query'"):
        evaluate_features_file(path, LTCC)
    res = evaluate_features_file(path, LTCC, samples={"query": qs, "test": gs})
    assert res["general"]["mAP"] == pytest.approx(7 / 12)
    with pytest.raises(CheckpointError, match="has no split 'B'"):
        evaluate_features_file(path, PRCC)


def test_features_file_key_mismatch(tmp_path):
    q, g, qs, gs = ltcc_like()
    path = tmp_path / "f.npz"
    save_features(path, {"query": q, "test": g}, {"query": qs, "test": gs})
    reordered = (gs[1], gs[0], *gs[2:])
    with pytest.raises(CheckpointError, match="row 0 is 'test/000'.*another sample order"):
        evaluate_features_file(path, LTCC, samples={"query": qs, "test": reordered})


def _write_npz(path, arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _good_arrays():
    meta = {"format": "rlq-features", "version": 1, "splits": {"query": {"num": 2, "dim": 3, "labels": True}}, "extra": {}}
    return {
        "query/feats": np.zeros((2, 3), np.float32),
        "query/pids": np.array([1, 2]),
        "query/camids": np.array([0, 1]),
        "query/clothes_ids": np.array([0, 0]),
        "query/keys": np.array(["a", "b"]),
        "query/paths": np.array(["/a.jpg", "/b.jpg"]),
        "meta": np.array(json.dumps(meta)),
    }


def test_features_file_errors(tmp_path):
    p = tmp_path / "x.npz"
    _write_npz(p, _good_arrays())
    assert load_features(p)[1]["query"].pids.tolist() == [1, 2]

    for drop in ("query/feats", "query/camids", "meta"):
        arrays = _good_arrays()
        del arrays[drop]
        _write_npz(p, arrays)
        with pytest.raises(CheckpointError, match=f"x.npz.*no entry '{drop}'"):
            load_features(p)

    arrays = _good_arrays()
    arrays["query/pids"] = np.array([1, 2, 3])
    _write_npz(p, arrays)
    with pytest.raises(CheckpointError, match="'query/pids' must be a 1-D integer array of length 2"):
        load_features(p)

    arrays = _good_arrays()
    arrays["meta"] = np.array(json.dumps({"format": "other"}))
    _write_npz(p, arrays)
    with pytest.raises(CheckpointError, match="does not describe"):
        load_features(p)

    # an object array would need pickle: refused
    arrays = _good_arrays()
    arrays["query/keys"] = np.array(["a", {"evil": 1}], dtype=object)
    _write_npz(p, arrays)
    with pytest.raises(CheckpointError, match="'query/keys' cannot be loaded safely"):
        load_features(p)

    # torn file, garbage, missing file, a bare .npy
    _write_npz(p, _good_arrays())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="x.npz"):
        load_features(p)
    p.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        load_features(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_features(tmp_path / "missing.npz")
    np.save(tmp_path / "bare.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy"):
        load_features(tmp_path / "bare.npy")
    assert zipfile.is_zipfile(tmp_path / "bare.npy") is False


def test_save_features_rejects_bad_input(tmp_path):
    q, g, qs, gs = ltcc_like()
    with pytest.raises(RlqError, match="2-D float"):
        save_features(tmp_path / "a.npz", {"query": np.zeros(3)})
    with pytest.raises(RlqError, match="feature rows"):
        save_features(tmp_path / "a.npz", {"query": q}, {"query": gs})
    with pytest.raises(RlqError, match="JSON"):
        save_features(tmp_path / "a.npz", {"query": q}, extra={"x": object()})
    assert not any(tmp_path.iterdir())
