"""Open-set search (docs/open-set.md): thresholds at an exact target FAR, DIR@FAR against a brute-force loop, and
`rlq calibrate` -> `rlq search --threshold calibrated` on a tiny SynthCC run (unknown identities read "not in the
gallery"; a calibration made with other flip / re-ranking is refused, naming the difference)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli
from rlq.evaluation.open_set import dir_at_far, open_set_rates, rank1_outcomes, threshold_at_far

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ thresholds
def _far(unknown: np.ndarray, t: float) -> float:
    return sum(1 for d in unknown if d < t) / len(unknown)


@pytest.mark.parametrize("target", [0.0, 0.1, 0.2, 0.25, 0.29, 0.5, 0.99, 1.0])
def test_threshold_gives_exactly_the_target_far_and_is_the_largest(target):
    # hand-made unknown rank-1 distances, with ties (0.3 twice) and N = 100 so that 0.29 * 100 rounds below 29
    base = [0.5, 0.1, 0.3, 0.3, 0.9, 0.7, 0.2, 0.6, 0.4, 0.8]
    for n in (10, 100):
        u = np.array([b + 0.001 * (i // 10) for i, b in enumerate(base * (n // 10))])
        t = threshold_at_far(u, target)
        assert _far(u, t) <= target
        # every candidate above t (each distinct distance's successor, and +inf) accepts too many unknowns
        above = [np.nextafter(v, math.inf) for v in u if v >= t] + [math.inf]
        assert all(_far(u, c) > target for c in above if c > t)
        if n == 10 and target in (0.1, 0.2, 0.5):  # no tie at the boundary: the FAR is exactly the target
            assert _far(u, t) == target
    assert threshold_at_far([0.5, 0.1, 0.3, 0.3], 0.25) == 0.3  # {0.1} below 0.3: FAR 1/4; 0.3 is the largest
    assert threshold_at_far([0.5, 0.1, 0.3, 0.3], 0.5) == 0.3  # ties: 0.3 < t would accept 3/4
    assert threshold_at_far([0.5, 0.1, 0.3, 0.3], 0.75) == 0.5
    assert threshold_at_far([0.5, 0.1], 1.0) == math.inf
    assert threshold_at_far([0.29] * 100 + [0.5] * 0, 0.29) == 0.29  # all tied: none may be accepted below 0.29


# ------------------------------------------------------------------------------------------ DIR@FAR
def _brute_rank1(D, qp, gp, qc, gc, qo, go, mode):
    """Per query, an explicit loop: nearest non-junk gallery item (ties: lower index), correct, known, unknown."""
    out = []
    for i in range(D.shape[0]):
        best, bi = math.inf, -1
        known = unknown = False
        unknown = not any(gp[j] == qp[i] for j in range(D.shape[1]))
        for j in range(D.shape[1]):
            same = gp[j] == qp[i]
            junk = same and (gc[j] == qc[i] or (mode == "cc" and go[j] == qo[i]))
            if junk:
                continue
            known = known or same
            if D[i, j] < best:
                best, bi = D[i, j], j
        out.append((best, bi >= 0 and gp[bi] == qp[i], known, unknown))
    return out


@pytest.mark.parametrize("mode", ["general", "cc"])
def test_dir_at_far_matches_a_brute_force_loop(mode):
    rng = np.random.default_rng(4)
    nq, ng, d = 60, 50, 8
    g = rng.normal(size=(ng, d)).astype(np.float32)
    gp = rng.integers(0, 12, ng)
    qp = rng.integers(0, 16, nq)  # ids 12-15: no gallery image (unknown)
    q = np.where(np.isin(qp, gp)[:, None], g[[int(np.flatnonzero(gp == p)[0]) if p in gp else 0 for p in qp]], 0)
    q = (q + rng.normal(scale=0.8, size=(nq, d))).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    qc, gc, qo, go = rng.integers(0, 3, nq), rng.integers(0, 3, ng), rng.integers(0, 2, nq), rng.integers(0, 2, ng)
    o = rank1_outcomes(q, g, qp, gp, qc, gc, qo, go, mode=mode)
    D = 1.0 - q.astype(np.float64) @ g.T.astype(np.float64)
    ref = _brute_rank1(D, qp, gp, qc, gc, qo, go, mode)
    np.testing.assert_allclose(o["distance"], [r[0] for r in ref], atol=1e-6)
    assert o["correct"].tolist() == [r[1] for r in ref]
    assert o["known"].tolist() == [r[2] for r in ref]
    assert o["unknown"].tolist() == [r[3] for r in ref]
    assert o["unknown"].sum() > 3 and o["known"].sum() > 20

    fars = [0.0, 0.1, 0.3, 1.0]
    rows = dir_at_far(o["distance"], o["correct"], o["known"], o["unknown"], fars, num_resamples=20, seed=1)
    dist = o["distance"]  # (equal to the loop's up to float32 rounding, checked above)
    unk = np.array([dist[i] for i, r in enumerate(ref) if r[3]])
    kn = [(dist[i], r[1]) for i, r in enumerate(ref) if r[2]]
    for row, f in zip(rows, fars):
        t = row["threshold"]
        assert _far(unk, t) <= f
        assert row["far"] == _far(unk, t)
        # DIR: known queries whose rank-1 is a true match AND below the threshold
        assert row["dir"] == sum(1 for (d_, ok) in kn if ok and d_ < t) / len(kn)
    assert rows[-1]["threshold"] == math.inf and rows[-1]["far"] == 1.0
    # the interval: the threshold chosen again in every resample, by a plain loop over the same draws
    from rlq.evaluation.bootstrap import bootstrap_indices

    keep = o["known"] | o["unknown"]
    dd, oo, kk = o["distance"][keep], o["correct"][keep], o["known"][keep]
    stats = []
    for idx in bootstrap_indices(int(keep.sum()), 20, 1):
        for r in idx:
            stats.append(open_set_rates(dd[r], oo[r], kk[r], threshold_at_far(dd[r][~kk[r]], 0.1))[0])
    assert rows[1]["dir_ci"] == pytest.approx(list(np.quantile(stats, [0.025, 0.975])))


# ------------------------------------------------------------------------------------------ SynthCC end to end
@pytest.fixture(scope="module")
def holdout_run(synthcc_tiny, tmp_path_factory) -> Path:
    """A tiny Base Model run holding out 4 train identities (data.val_holdout_ids): the calibration's split."""
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    run = tmp_path_factory.mktemp("openset") / "run"
    run_training(tiny_spec(synthcc_tiny, run, epochs=1, steps=2, data__val_holdout_ids=4, train__amp="off"))
    return run


def _search(args: list[str], out: Path) -> dict:
    assert run_cli(["search", *args, "--out", str(out.with_suffix(".html")), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_calibrate_then_search_says_not_in_the_gallery(holdout_run, synthcc_tiny, tmp_path, capsys):
    from rlq.data.datasets import load_dataset
    from rlq.data.holdout import identity_holdout

    cal_json = tmp_path / "cal.json"
    assert run_cli(["calibrate", str(holdout_run), "--far", "0,0.5", "--resamples", "20", "--json", str(cal_json)]) == 0
    cal = json.loads(cal_json.read_text())
    beside = holdout_run / "checkpoints" / "best.calibration.json"
    assert Path(cal["path"]).resolve() == beside.resolve() and beside.is_file()
    sp = cal["split"]
    assert sp["protocol"] == "val" and "hold-out of 4" in sp["source"] and len(sp["unknown_ids"]) == 2
    assert cal["features"]["flip"] is True and cal["features"]["rerank"] is None
    for r in cal["thresholds"]:
        assert r["far"] <= r["far_target"]
    # the calibration's split, rebuilt independently: the run's hold-out (train seed 3), the unknowns' gallery removed
    ds = identity_holdout(load_dataset("synthcc", synthcc_tiny), 4, seed=3)
    unknown = set(sp["unknown_ids"])
    gal = tmp_path / "gallery"
    gal.mkdir()
    for s in ds.split("val_gallery"):
        if s.pid not in unknown:
            shutil.copy(s.path, gal / f"{s.pid:03d}_{Path(s.path).name}")
    qdir = tmp_path / "queries"
    qdir.mkdir()
    unk_q = [s for s in ds.split("val_query") if s.pid in unknown]
    for s in unk_q:
        shutil.copy(s.path, qdir / f"unknown_{s.pid:03d}_{Path(s.path).name}")
    known_img = sorted(gal.iterdir())[0]
    shutil.copy(known_img, qdir / "known_dup.png" if known_img.suffix == ".png" else qdir / f"known_dup{known_img.suffix}")
    feats = tmp_path / "g.npz"
    assert run_cli(["extract", str(holdout_run), "--images", str(gal), "--out", str(feats), "--workers", "0"]) == 0

    res = _search(["--gallery", str(feats), "--query", str(qdir), "--top-k", "3", "--threshold", "calibrated:0"],
                  tmp_path / "s0.json")
    t0 = cal["thresholds"][0]["threshold"]
    assert res["threshold"]["distance_below"] == t0 and res["threshold"]["calibration"]["far_target"] == 0
    assert all("is_match" in h for q in res["queries"] for h in q["results"])
    by_key = {q["key"]: q for q in res["queries"]}
    # a known query with a correct rank-1: the gallery image itself (distance ~1e-7, far below the threshold)
    known = next(q for k, q in by_key.items() if k.startswith("known_dup"))
    assert t0 > 1e-3 and known["results"][0]["key"] == known_img.name
    assert known["is_match"] is True and known["results"][0]["is_match"] is True and known["label"] is None
    # unknown queries at FAR 0: the threshold is the smallest calibration unknown's rank-1 distance, so every unknown
    # lies at or above it; the farthest one lies above it by a margin no float rounding of the two computations bridges
    unk = [q for k, q in by_key.items() if k.startswith("unknown_")]
    assert len(unk) == sp["num_unknown"] == len(unk_q)
    far_one = max(unk, key=lambda q: q["results"][0]["distance"])
    assert far_one["results"][0]["distance"] > t0 + 1e-4
    assert far_one["is_match"] is False and far_one["label"] == "not in the gallery"
    assert not any(h["is_match"] for h in far_one["results"])
    assert sum(q["is_match"] for q in unk if abs(q["results"][0]["distance"] - t0) > 1e-5) == 0
    page = (tmp_path / "s0.html").read_text()
    assert page.count("not in the gallery") == sum(not q["is_match"] for q in res["queries"])
    # FAR 0.5: at most half of the unknown queries accepted
    res5 = _search(["--gallery", str(feats), "--query", str(qdir), "--threshold", "calibrated:0.5"], tmp_path / "s5.json")
    t5 = cal["thresholds"][1]["threshold"]
    acc = [q for q in res5["queries"] if q["key"].startswith("unknown_") and q["is_match"]]
    assert len([q for q in acc if abs(q["results"][0]["distance"] - t5) > 1e-5]) <= 0.5 * len(unk)

    # features made otherwise than calibrated are refused, naming the difference
    capsys.readouterr()
    assert run_cli(["search", "--gallery", str(feats), "--query", str(qdir), "--out", str(tmp_path / "x.html"),
                    "--threshold", "calibrated", "--rerank"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "re-ranking: calibrated with cosine (no --rerank), searching with re-ranking method=k-reciprocal, k1=20, k2=6" in err
    feats_nf = tmp_path / "g_noflip.npz"
    assert run_cli(["extract", str(holdout_run), "--images", str(gal), "--out", str(feats_nf), "--workers", "0",
                    "--no-flip"]) == 0
    capsys.readouterr()
    assert run_cli(["search", "--gallery", str(feats_nf), "--query", str(qdir), "--out", str(tmp_path / "y.html"),
                    "--threshold", "calibrated", "--no-flip"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "flip: calibrated with flip on, searching with flip off (pass --flip)" in err
    # the Python API: the same answers, and the same refusal
    from rlq.deploy import FeatureExtractor, GalleryIndex
    from rlq.errors import RlqError

    index = GalleryIndex.from_features_file(feats)
    fe = FeatureExtractor(holdout_run, device="cpu")
    api = fe.search([str(qdir / far_one["key"]), str(qdir / known["key"])], index, 3, threshold="calibrated:0")
    assert [a["is_match"] for a in api] == [False, True] and api[0]["label"] == "not in the gallery"
    assert all("is_match" in h for a in api for h in a["results"])
    with pytest.raises(RlqError, match="flip: calibrated with flip on, searching with flip off"):
        FeatureExtractor(holdout_run, device="cpu", flip=False).search([str(known_img)], index, threshold="calibrated")


def test_eval_open_set_prints_dir_at_far(holdout_run, tmp_path, capsys):
    out = tmp_path / "os.json"
    assert run_cli(["eval", str(holdout_run), "--open-set", "--far", "0.1", "--resamples", "20", "--workers", "0",
                    "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["open_set"]) == {"general", "cc"}
    for r in rep["open_set"].values():
        row = r["rows"][0]
        assert row["far_target"] == 0.1 and row["far"] <= 0.1 and 0 <= row["dir"] <= 1
        assert r["num_unknown"] > 0 and r["num_known"] > 0 and len(r["curve"]) == 10
    assert "DIR" in capsys.readouterr().out


def test_calibration_refused_while_a_training_holds_the_run(holdout_run):
    from rlq.deploy.calibration import write_calibration
    from rlq.engine.run_dir import lock_folder
    from rlq.errors import RlqError

    lock = lock_folder(holdout_run, "rlq train")
    try:
        with pytest.raises(RlqError, match=r"in use by another rlq process .*rlq train.*calibrate after it finishes"):
            write_calibration(holdout_run, {"thresholds": []})
    finally:
        lock.release()


def test_model_card_shows_the_calibration_and_flags_other_settings():
    from rlq.export.model_card import build_model_card

    cal = {"path": "/r/checkpoints/best.calibration.json",
           "features": {"flip": True, "precision": "fp32", "ranking": "cosine", "rerank": None,
                        "distance": "1 - cosine similarity"},
           "split": {"source": "identity hold-out of 4 train identities", "mode": "cc", "num_known": 7,
                     "num_unknown": 6, "unknown_ids": [3, 6]},
           "thresholds": [{"far_target": 0.01, "threshold": 0.0811, "far": 0.0, "far_ci": [0.0, 0.0], "dir": 0.5,
                           "dir_ci": [0.25, 0.75]}]}
    kw = dict(onnx_file="m.onnx", method="bm", backbone="tiny", input_size=(64, 32), embed_dim=8, opset=17,
              parity={"passed": True}, sha256="0" * 64, calibration=cal)
    card = build_model_card(flip=True, **kw)
    assert "### Open-set calibration" in card and "| 0.01 | 0.0811 | 0.0 [0.0, 0.0] | 50.0 [25.0, 75.0] |" in card
    assert "identity hold-out of 4" in card and "**not**" not in card
    assert "**not** how this exported model computes features" in build_model_card(flip=False, **kw)
