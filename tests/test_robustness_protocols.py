"""Robustness protocols (docs/method.md §12): rlq's grid, the corruption grid, the authors' LQ test protocol.

Each protocol degrades exactly the splits it names (features compared with the clean ones), nothing is extracted
twice, every point carries percentile-bootstrap bands equal to a brute-force loop, per-query results come back on
request, and the CLI lists the protocols and refuses bad values. SynthCC `tiny` and a tiny backbone at 64 x 32.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import rlq.analysis.robustness as rob
from rlq.analysis.robustness import (
    APPLY_TO,
    CORRUPTION_PROTOCOL,
    LQ_PROTOCOLS,
    ROBUSTNESS_PROTOCOL,
    official_lq_evaluate,
    robustness_figure,
    robustness_sweep,
    robustness_sweeps,
)
from rlq.data.records import EvalSpec, Protocol
from rlq.errors import ConfigError
from rlq.evaluation.bootstrap import DEFAULT_RESAMPLES, PerQuery
from rlq.evaluation.extract import extract_features
from rlq.lq.corruption import CORRUPTION_ARTIFACTS, CORRUPTION_GRID, CORRUPTION_SOURCE, corrupt_batch

H, W = 64, 32
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ds(synthcc_tiny):
    from rlq.data.datasets import load_dataset

    return load_dataset("synthcc", synthcc_tiny)


@pytest.fixture(scope="module")
def model():
    from rlq.models import build_model

    return build_model(method="bm", num_ids=8, backbone="tiny", seed=0)


@pytest.fixture(scope="module")
def clean(ds, model):
    return {n: extract_features(model, [s.path for s in ds.split(n)], H, W, workers=0) for n in ("query", "gallery")}


class _Recorder:
    """Wraps extract_features / evaluate_protocol in the robustness module: which split was extracted with which
    transform, and the features every evaluation saw."""

    def __init__(self, monkeypatch, ds):
        self.extracted: list[tuple[str, bool]] = []
        self.evaluated: list[dict[str, np.ndarray]] = []
        split_of = {tuple(s.path for s in ds.split(n)): n for n in ("query", "gallery")}
        real_extract, real_eval = rob.extract_features, rob.evaluate_protocol

        def extract(model, paths, *a, batch_transform=None, **kw):
            self.extracted.append((split_of[tuple(paths)], batch_transform is not None))
            return real_extract(model, paths, *a, batch_transform=batch_transform, **kw)

        def evaluate(features, protocol, **kw):
            self.evaluated.append({n: np.array(f, copy=True) for n, (f, _) in features.items()})
            return real_eval(features, protocol, **kw)

        monkeypatch.setattr(rob, "extract_features", extract)
        monkeypatch.setattr(rob, "evaluate_protocol", evaluate)


# ---------------------------------------------------------------------------------------------- the corruption grid


def test_corruption_grid_has_imagenet_c_severities():
    assert CORRUPTION_ARTIFACTS == ("pixelation", "defocus", "motion", "jpeg")
    for art in CORRUPTION_ARTIFACTS:
        grid = CORRUPTION_GRID[art]
        assert len(grid) == 6 and grid[0] == {} and all(grid[1:]), art  # clean + 5 severities
    # ImageNet-C's published parameters (docs/method.md §12 names the source)
    assert [g["c"] for g in CORRUPTION_GRID["pixelation"][1:]] == [0.6, 0.5, 0.4, 0.3, 0.25]
    assert [(g["radius"], g["alias_sigma"]) for g in CORRUPTION_GRID["defocus"][1:]] == [
        (3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]
    assert [(g["radius"], g["sigma"]) for g in CORRUPTION_GRID["motion"][1:]] == [
        (10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]
    assert [g["quality"] for g in CORRUPTION_GRID["jpeg"][1:]] == [25, 18, 15, 10, 7]
    assert "ImageNet-C" in CORRUPTION_SOURCE and "Market-1501-C" in CORRUPTION_SOURCE


def test_corrupt_batch_is_seeded_per_image_and_keeps_flat_images():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 40, 24), dtype=torch.uint8, generator=gen)
    for art in CORRUPTION_ARTIFACTS:
        assert corrupt_batch(x, art, 0, seed=1) is x
        for level in (1, 5):
            y = corrupt_batch(x, art, level, seed=1, indices=range(10, 16))
            assert y.dtype == torch.uint8 and y.shape == x.shape and not torch.equal(y, x), (art, level)
            # one image at a time (its running index as its draw) gives the same images: batching does not matter
            one = torch.cat([corrupt_batch(x[i : i + 1], art, level, seed=1, indices=[10 + i]) for i in range(6)])
            assert torch.equal(one, y), (art, level)
        flat = torch.full((2, 3, 40, 24), 90, dtype=torch.uint8)
        if art != "jpeg":  # blur and block averages of a flat image are the image
            assert torch.equal(corrupt_batch(flat, art, 5, seed=1), flat), art
    # another seed draws other motion angles
    assert not torch.equal(corrupt_batch(x, "motion", 3, seed=1), corrupt_batch(x, "motion", 3, seed=2))
    with pytest.raises(ConfigError, match="0..5"):
        corrupt_batch(x, "defocus", 6, seed=0)


# ---------------------------------------------------------------------------------------------- splits degraded


@pytest.mark.parametrize("grid", ["rlq", "corruption"])
def test_each_setting_degrades_exactly_the_splits_it_names(grid, ds, model, clean, monkeypatch):
    rec = _Recorder(monkeypatch, ds)
    level = 3
    res = robustness_sweeps(model, ds, grid=grid, artifacts=("motion",), levels=(0, level), apply_to=APPLY_TO,
                            height=H, width=W, seed=4, bootstrap_resamples=0)
    # clean features once per split, each degraded split once (shared by "gallery" and "both")
    assert sorted(rec.extracted) == [("gallery", False), ("gallery", True), ("query", False), ("query", True)]
    # the evaluations: clean once, then one per setting in order query, gallery, both
    assert len(rec.evaluated) == 1 + len(APPLY_TO)
    first = rec.evaluated[0]
    for n in ("query", "gallery"):
        np.testing.assert_array_equal(first[n], clean[n])  # level 0 is the plain evaluation's features
    for setting, feats in zip(APPLY_TO, rec.evaluated[1:]):
        named = {"query": {"query"}, "gallery": {"gallery"}, "both": {"query", "gallery"}}[setting]
        for n in ("query", "gallery"):
            if n in named:
                assert not np.allclose(feats[n], clean[n], atol=1e-4), (setting, n)
            else:
                np.testing.assert_array_equal(feats[n], clean[n])  # untouched: bit-equal to clean
        r = res[setting]
        assert r["apply_to"] == setting and set(r["degraded_splits"]) == named and r["lq_protocol"] == grid
        e = r["results"]["motion"][str(level)]
        assert (e["query_cosine_to_clean"] < 1.0) == ("query" in named)
        assert (e["gallery_cosine_to_clean"] < 1.0) == ("gallery" in named)
    # the degraded query of "query" and "both" is the same extraction
    np.testing.assert_array_equal(rec.evaluated[1]["query"], rec.evaluated[3]["query"])
    np.testing.assert_array_equal(rec.evaluated[2]["gallery"], rec.evaluated[3]["gallery"])
    assert res["both"]["protocol_label"] == (ROBUSTNESS_PROTOCOL if grid == "rlq" else CORRUPTION_PROTOCOL)
    assert res["query"]["extractions"]["degraded"] == [f"query:motion:{level}", f"gallery:motion:{level}"]


def test_clean_features_given_are_not_extracted_again(ds, model, clean, monkeypatch):
    rec = _Recorder(monkeypatch, ds)
    r = robustness_sweep(model, ds, grid="corruption", artifacts=("jpeg", "pixelation"), levels=(0, 1, 5), height=H,
                         width=W, clean_features=clean, bootstrap_resamples=0)
    assert all(transformed for _, transformed in rec.extracted)  # no clean extraction
    assert sorted(rec.extracted) == [("query", True)] * 4  # 2 artifacts x 2 levels, the query only
    assert r["extractions"]["clean"] == "given" and r["degraded_splits"] == ["query"]
    with pytest.raises(ConfigError, match="clean_features"):
        robustness_sweep(model, ds, height=H, width=W, clean_features={"query": clean["query"]})


def test_a_split_in_both_roles_allows_only_both(ds, model):
    proto = Protocol(specs=(EvalSpec("general", "gallery", "gallery", "general"),), selection="general")
    same = dataclasses.replace(ds, protocols={"test": proto})
    for setting, what in (("query", "queries"), ("gallery", "gallery")):
        with pytest.raises(ConfigError, match=f"degrading only the {what} is undefined there; use apply_to='both'"):
            robustness_sweep(model, same, apply_to=setting, levels=(0, 1), artifacts=("jpeg",), height=H, width=W)
    r = robustness_sweep(model, same, apply_to="both", levels=(0, 1), artifacts=("jpeg",), height=H, width=W,
                         bootstrap_resamples=0)
    assert r["degraded_splits"] == ["gallery"]


def test_bad_arguments_are_refused(ds, model):
    for kw, match in (({"apply_to": "sideways"}, "apply_to must be one of"), ({"grid": "official"}, "official_lq_evaluate"),
                      ({"grid": "corruption", "levels": (6,)}, "0..5"), ({"levels": (5,)}, "0..4"),
                      ({"bootstrap_resamples": -1}, "bootstrap_resamples"), ({"apply_to": ("query",)}, "robustness_sweeps")):
        with pytest.raises(ConfigError, match=match):
            robustness_sweep(model, ds, height=H, width=W, **kw)


# ---------------------------------------------------------------------------------------------- bands


def _brute_percentile(values: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> list[float]:
    """The percentile bootstrap as docs/datasets.md defines it, in a plain loop (one resample at a time)."""
    rng = np.random.default_rng(seed)
    n = values.size
    means = []
    for _ in range(resamples):
        idx = np.minimum((rng.random(n) * n).astype(np.int64), n - 1)
        means.append(values[idx].mean())
    a = (1 - level) / 2
    return [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))]


def test_bands_equal_a_brute_force_bootstrap_on_a_hand_made_case():
    # 5 queries, the 4th invalid (no true match): hits 1,0,1,-,0 and APs 1, 0.25, 0.5, -, 0.2
    raw = {"cc": {"mode": "cc", "ap": np.array([1.0, 0.25, 0.5, np.nan, 0.2]), "inp": np.array([1.0, 0.2, 0.5, np.nan, 0.1]),
                  "first_rank": np.array([1, 3, 1, 0, 4]), "num_matches": np.array([1, 2, 1, 0, 3]),
                  "valid": np.array([True, True, True, False, True]), "rank1": 0.5, "rank5": 1.0, "rank10": 1.0,
                  "rank20": 1.0, "mAP": 0.4875, "mINP": 0.45, "num_valid_queries": 4, "num_queries": 5}}
    m = rob._point(raw, 200, 7)["cc"]
    hits, aps = np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.25, 0.5, 0.2])
    np.testing.assert_allclose(m["rank1_ci"], _brute_percentile(hits, 200, 7), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m["mAP_ci"], _brute_percentile(aps, 200, 7), rtol=0, atol=1e-12)
    assert m["rank1_ci"][0] <= m["rank1"] <= m["rank1_ci"][1] and m["mAP_ci"][0] <= m["mAP"] <= m["mAP_ci"][1]
    assert "rank1_ci" not in rob._point(raw, 0, 7)["cc"]  # 0 resamples: no bands


def test_every_point_has_bands_from_its_per_query_results(ds, model, clean):
    res, pq = robustness_sweep(model, ds, grid="corruption", artifacts=("defocus",), levels=(0, 2, 5), apply_to="gallery",
                               height=H, width=W, clean_features=clean, keep_per_query=True, bootstrap_resamples=300,
                               bootstrap_seed=3, checkpoint="weights after the last epoch (epoch 3 of 3)")
    json.dumps(res)  # the result stays JSON-able; the per-query objects come separately
    assert res["intervals"]["resamples"] == 300 and res["intervals"]["method"] == "percentile bootstrap over queries"
    assert res["num_queries"]["cc"] == len(ds.split("query"))
    for lv in ("0", "2", "5"):
        for ev, m in res["results"]["defocus"][lv]["metrics"].items():
            p = pq["defocus"][lv][ev]
            assert isinstance(p, PerQuery) and list(p.keys) == [s.key for s in ds.split("query")]
            assert p.hit[p.valid].mean() == pytest.approx(m["rank1"]) and p.ap[p.valid].mean() == pytest.approx(m["mAP"])
            for k, v in (("rank1", p.hit[p.valid].astype(float)), ("mAP", p.ap[p.valid])):
                assert m[f"{k}_ci"][0] <= m[k] + 1e-12 and m[k] <= m[f"{k}_ci"][1] + 1e-12, (lv, ev, k)
                np.testing.assert_allclose(m[f"{k}_ci"], _brute_percentile(v, 300, 3), atol=1e-12)


def test_official_protocol_gets_bands_and_per_query(ds, model):
    res, pq = official_lq_evaluate(model, ds, kinds=("motion",), height=H, width=W, bootstrap_resamples=100,
                                   keep_per_query=True, checkpoint="best (selected on test, epoch 2)")
    m = res["results"]["official_lq:motion"]["metrics"]["cc"]
    assert m["rank1_ci"][0] <= m["rank1"] <= m["rank1_ci"][1] and res["intervals"]["resamples"] == 100
    assert res["lq_protocol"] == "official" and res["apply_to"] == "both" and res["degraded_splits"] == ["query", "gallery"]
    assert isinstance(pq["official_lq:motion"]["cc"], PerQuery)
    none = official_lq_evaluate(model, ds, kinds=("motion",), height=H, width=W, bootstrap_resamples=0)
    assert none["intervals"] is None and "rank1_ci" not in none["results"]["official_lq:motion"]["metrics"]["cc"]


def test_the_picture_names_protocol_queries_checkpoint_and_draws_bands(ds, model, clean):
    from matplotlib.collections import PolyCollection

    kw = dict(artifacts=("motion", "jpeg"), levels=(0, 1, 3), height=H, width=W, clean_features=clean,
              checkpoint="weights after the last epoch (epoch 3 of 3)")
    res = {"A": robustness_sweep(model, ds, grid="corruption", apply_to="both", **kw),
           "B": robustness_sweep(model, ds, grid="corruption", apply_to="both", seed=5, **kw)}
    fig = robustness_figure(res, metric="rank1")
    title = " ".join(fig._suptitle.get_text().split())
    n = len(ds.split("query"))
    for part in (CORRUPTION_PROTOCOL, "degraded: queries and gallery", f"cc: {n} queries per point",
                 f"{DEFAULT_RESAMPLES} resamples", "checkpoint: weights after the last epoch (epoch 3 of 3)"):
        assert " ".join(part.split()) in title, part
    for ax in fig.axes:
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2  # one band per model
    assert not robustness_figure(res, metric="rank1", bands=False).axes[0].collections
    with pytest.raises(ConfigError, match="one protocol and one apply_to setting"):
        robustness_figure({"A": res["A"], "C": robustness_sweep(model, ds, grid="rlq", **kw)})


# ---------------------------------------------------------------------------------------------- CLI


def _cli(args: list[str]) -> int:
    from cli_helpers import run_cli

    return run_cli(args)


def test_cli_help_lists_the_protocols(capsys):
    assert _cli(["analyze", "robustness", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--lq-protocol" in text and "--apply-to" in text and "--resamples" in text
    for p in LQ_PROTOCOLS:
        assert f"{p}:" in text or f"{p} (default)" in text, p
    assert "query, gallery, both" in text and "ImageNet-C" in text and "docs/method.md §12" in text


def test_cli_refuses_bad_protocol_and_apply_to(ds, tmp_path, capsys):
    common = ["x", "--dataset", "synthcc", "--root", ds.root, "--out", str(tmp_path / "o")]
    assert _cli(["analyze", "robustness", *common, "--lq-protocol", "rlq,fog"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--lq-protocol" in err and "'fog'" in err and "rlq, official, corruption" in err
    assert _cli(["analyze", "robustness", *common, "--apply-to", "sideways"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--apply-to" in err and "'sideways'" in err and "query, gallery, both" in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_cli_runs_the_three_protocols(ds, model, tmp_path):
    from rlq.engine.model_io import save_model_checkpoint

    ck = save_model_checkpoint(model, tmp_path / "ck" / "m", input_size=(H, W))
    out = tmp_path / "rob"
    assert _cli(["analyze", "robustness", str(ck), "--dataset", "synthcc", "--root", ds.root, "--workers", "0",
                 "--device", "cpu", "--lq-protocol", "rlq,corruption,official", "--artifacts", "jpeg",
                 "--levels", "0,1", "--resamples", "50", "--out", str(out)]) == 0
    data = json.loads((out / "robustness.json").read_text())
    assert data["protocols"] == ["rlq", "corruption", "official"]
    assert data["protocol_label"] == ROBUSTNESS_PROTOCOL and data["models"]["m"]["degraded_splits"] == ["query"]
    corr = data["corruption"]
    assert corr["protocol_label"] == CORRUPTION_PROTOCOL and list(corr["settings"]) == list(APPLY_TO)
    for setting, splits in (("query", ["query"]), ("gallery", ["gallery"]), ("both", ["query", "gallery"])):
        r = corr["settings"][setting]["models"]["m"]
        assert r["degraded_splits"] == splits and r["intervals"]["resamples"] == 50
        assert r["results"]["jpeg"]["1"]["metrics"]["cc"]["rank1_ci"] is not None
        assert (out / f"robustness_corruption_{setting}_rank1.png").is_file()
    assert "official_lq:mix" in data["official_lq"]["models"]["m"]["results"]  # official's default kind
    report = (out / "report.md").read_text()
    assert ROBUSTNESS_PROTOCOL in report and CORRUPTION_PROTOCOL in report and "gallery only" in report
    assert math.isfinite(data["models"]["m"]["results"]["jpeg"]["0"]["metrics"]["cc"]["mAP_ci"][0])
