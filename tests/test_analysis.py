"""Analyses: robustness per artifact, LQ clusters, gender of mistakes, quality buckets, report, CLI (SynthCC tiny)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from rlq.analysis import (
    ROBUSTNESS_PROTOCOL,
    bucket_metrics,
    degrade_transform,
    gender_awareness,
    load_test_gender,
    lq_cluster_diagnostics,
    lq_cluster_metrics,
    plot_robustness,
    protocol_bucket_metrics,
    quality_buckets,
    robustness_sweep,
    size_buckets,
    size_csv_buckets,
    top1_after_junk,
    write_report,
)
from rlq.attributes.gender import gender_f1_on_mistakes
from rlq.data.records import Sample
from rlq.data.sidecars import read_quality_csv, size_bucket
from rlq.errors import ConfigError, SideInputError
from rlq.evaluation.bootstrap import add_intervals
from rlq.evaluation.extract import extract_features
from rlq.evaluation.protocols import evaluate_protocol, summarize
from rlq.evaluation.ranking import evaluate_features

H, W = 64, 32  # small and fast; pixelation levels 1-2 (s = 48, 32) do not fit and are skipped



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="session")
def synth(synthcc_tiny):
    from rlq.data.datasets import load_dataset

    return synthcc_tiny, load_dataset("synthcc", synthcc_tiny)


@pytest.fixture(scope="module")
def model():
    from rlq.models import build_model

    return build_model(method="bm", num_ids=8, backbone="tiny", seed=0)


@pytest.fixture(scope="module")
def clean(synth, model):
    _, ds = synth
    return {n: (extract_features(model, [s.path for s in ds.split(n)], H, W, workers=0), ds.split(n))
            for n in ("query", "gallery")}


@pytest.fixture(scope="module")
def sweep(synth, model):
    _, ds = synth
    return robustness_sweep(model, ds, artifacts=("pixelation", "motion"), levels=(0, 1, 3), height=H, width=W, seed=3)


def _same(a, b) -> bool:
    """Equality of nested results with NaN == NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# ---------------------------------------------------------------------------------------------- robustness


def test_robustness_level0_is_the_plain_evaluation(synth, clean, sweep):
    _, ds = synth
    # level 0 also carries the bootstrap bands (rank1_ci, mAP_ci) of the plain evaluation's queries
    expected = summarize(add_intervals(evaluate_protocol(clean, ds.protocols["test"])))
    for art in ("pixelation", "motion"):
        assert _same(sweep["results"][art]["0"]["metrics"], expected)
    assert sweep["protocol_label"] == ROBUSTNESS_PROTOCOL and "not a paper protocol" in ROBUSTNESS_PROTOCOL
    assert sweep["degraded_splits"] == ["query"] and sweep["levels"] == [0, 1, 3]
    assert list(sweep["results"]["motion"]) == ["0", "1", "3"]


def test_robustness_degraded_levels_change_features_and_metrics(synth, model, clean, sweep):
    _, ds = synth
    q = ds.split("query")
    degraded = extract_features(model, [s.path for s in q], H, W, workers=0, batch_size=5,
                                batch_transform=degrade_transform("motion", 3, 11))
    assert not np.allclose(degraded, clean["query"][0], atol=1e-4)
    # batch-size independent: every image keeps its own motion angle
    again = extract_features(model, [s.path for s in q], H, W, workers=0, batch_size=64,
                             batch_transform=degrade_transform("motion", 3, 11))
    np.testing.assert_allclose(degraded, again, atol=1e-5)
    clean_map = sweep["results"]["motion"]["0"]["metrics"]["cc"]["mAP"]
    for art, lv in (("pixelation", "3"), ("motion", "1"), ("motion", "3")):
        e = sweep["results"][art][lv]
        assert e["query_cosine_to_clean"] < 1 - 1e-6
        assert e["params"] and "skipped" not in e
    assert any(sweep["results"][a]["3"]["metrics"]["cc"]["mAP"] != clean_map for a in ("pixelation", "motion"))


def test_robustness_skips_pixelation_levels_that_do_not_fit(sweep):
    e = sweep["results"]["pixelation"]["1"]
    assert "s=48" in e["skipped"] and "64x32" in e["skipped"] and "metrics" not in e  # shorter side 32 <= s


def test_robustness_apply_to_both_differs_from_query(synth, model, sweep):
    _, ds = synth
    both = robustness_sweep(model, ds, artifacts=("motion",), levels=(0, 3), apply_to="both", height=H, width=W, seed=3)
    assert both["degraded_splits"] == ["query", "gallery"]
    assert _same(both["results"]["motion"]["0"]["metrics"], sweep["results"]["motion"]["0"]["metrics"])
    q3, b3 = sweep["results"]["motion"]["3"]["metrics"], both["results"]["motion"]["3"]["metrics"]
    assert any(q3[ev]["mAP"] != b3[ev]["mAP"] for ev in q3)
    # the query side is the same seeded degradation in both runs
    assert both["results"]["motion"]["3"]["query_cosine_to_clean"] == pytest.approx(
        sweep["results"]["motion"]["3"]["query_cosine_to_clean"], abs=1e-6)


def test_robustness_rejects_bad_arguments(synth, model):
    _, ds = synth
    for kw in ({"artifacts": ("fog",)}, {"levels": (5,)}, {"apply_to": "sideways"}, {"protocol": "val"}):
        with pytest.raises(ConfigError):
            robustness_sweep(model, ds, height=H, width=W, **kw)


def test_plot_robustness_png(sweep, tmp_path):
    other = json.loads(json.dumps(sweep))  # a second "model": JSON round trip of the same results
    png = plot_robustness({"model A": sweep, "model B": other}, tmp_path / "rob.png", metric="mAP")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 400 and 200 <= im.height < im.width
    with pytest.raises(ConfigError):
        plot_robustness({"a": sweep}, tmp_path / "x.png", evaluation="nope")


def test_robustness_legend_covers_no_data(sweep):
    """The legend sits outside every subplot (below them), whatever the number of models."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from rlq.analysis.robustness import robustness_figure

    for n in (1, 3, 7):
        fig = robustness_figure({f"model {i}": sweep for i in range(n)}, metric="mAP")
        FigureCanvasAgg(fig).draw()
        r = fig.canvas.get_renderer()
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
        leg = fig.legends[0].get_window_extent(r)
        assert len(fig.legends[0].get_texts()) == n
        for ax in fig.axes:
            box = ax.get_window_extent(r)
            assert not leg.overlaps(box), (n, leg, box)
            assert leg.y1 <= box.y0  # below the plots
        assert leg.y0 >= 0 and leg.x0 >= 0 and leg.x1 <= fig.bbox.x1  # inside the picture


# ---------------------------------------------------------------------------------------------- LQ clusters


def _brute_nn(x: np.ndarray) -> list[int]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = []
    for i in range(len(x)):
        best, arg = -np.inf, -1
        for j in range(len(x)):
            if j != i and float(xn[i] @ xn[j]) > best + 1e-12:
                best, arg = float(xn[i] @ xn[j]), j
        out.append(arg)
    return out


def test_lq_nn_rate_hand_case():
    # HQ: image 1 sits near image 0 (same id), image 3 near image 2 (other id); every LQ feature is the same vector.
    e = np.eye(8)
    hq = np.stack([e[0], e[0] + e[1], e[2], e[2] + e[3]])
    lq = np.tile(e[7], (4, 1))
    pids = [1, 1, 2, 3]
    r = lq_cluster_metrics(hq, lq, pids, seed=0)
    # LQ rows 4..7 all tie at cosine 1 -> neighbour = lowest other LQ index: 4->5 (same id), 5->4 (same id),
    # 6->4 (other id), 7->4 (other id)
    assert r["lq_nn_other_lq_rate"] == 0.5 and r["lq_nn_lq_rate"] == 1.0 and r["lq_nn_own_hq_rate"] == 0.0
    # HQ: 0<->1 (same id), 2<->3 (ids 2 and 3)
    assert r["hq_nn_other_hq_rate"] == 0.5 and r["hq_nn_hq_rate"] == 1.0 and r["hq_nn_same_id_rate"] == 0.5
    assert r["lq_nn_same_id_rate"] == 0.5
    assert 0.0 <= r["probe_accuracy"] <= 1.0 and -1.0 <= r["silhouette"] <= 1.0


def test_lq_metrics_match_a_brute_force_reference():
    rng = np.random.default_rng(5)
    n, pids = 30, np.repeat(np.arange(6), 5)
    centres = rng.normal(size=(6, 16))
    hq = centres[pids] + 0.8 * rng.normal(size=(n, 16))
    lq = 0.3 * hq + rng.normal(size=(n, 16)) + 2.0  # LQ pulled towards a shared offset
    r = lq_cluster_metrics(hq, lq, pids, seed=1)
    x = np.concatenate([hq, lq])
    nn = _brute_nn(x)
    p2 = np.r_[pids, pids]
    lq_other = np.mean([nn[i] >= n and p2[nn[i]] != p2[i] for i in range(n, 2 * n)])
    hq_other = np.mean([nn[i] < n and p2[nn[i]] != p2[i] for i in range(n)])
    assert r["lq_nn_other_lq_rate"] == pytest.approx(lq_other) and r["hq_nn_other_hq_rate"] == pytest.approx(hq_other)
    assert r["lq_nn_other_lq_rate"] > r["hq_nn_other_hq_rate"]
    assert r["probe_accuracy"] > 0.9 and r["silhouette"] > 0
    assert _same(r, lq_cluster_metrics(hq, lq, pids, seed=1))


def test_lq_cluster_diagnostics_seeded_with_tsne(synth, model, tmp_path):
    _, ds = synth
    g = ds.split("gallery")[:24]
    args = dict(height=H, width=W, seed=4)
    a = lq_cluster_diagnostics(model, [s.path for s in g], [s.pid for s in g], tsne=True, out_png=tmp_path / "t.png",
                               model_name="model A", **args)
    b = lq_cluster_diagnostics(model, [s.path for s in g], [s.pid for s in g], tsne=False, **args)
    assert _same({k: v for k, v in a.items() if k not in ("tsne_png", "tsne_title")}, b)
    assert a["tsne_title"].startswith("model A: t-SNE") and "ltcc training mix" in a["tsne_title"]
    for k in ("lq_nn_other_lq_rate", "hq_nn_other_hq_rate", "lq_nn_lq_rate", "probe_accuracy", "lq_nn_own_hq_rate"):
        assert 0.0 <= a[k] <= 1.0, k
    assert a["lq"]["mix"] == "ltcc" and sum(a["lq"]["counts"].values()) == 24
    with Image.open(a["tsne_png"]) as im:
        assert im.format == "PNG" and im.size[0] > 100
    c = lq_cluster_diagnostics(model, [s.path for s in g], [s.pid for s in g], artifact_mix=("defocus", 4), tsne=False, **args)
    assert c["lq"]["params"]["sigma"] == 4.0 and not _same(c["lq_nn_own_hq_rate"], None)
    with pytest.raises(ConfigError):  # pixelation s=48 needs a shorter side above 48
        lq_cluster_diagnostics(model, [g[0].path, g[1].path], [0, 1], artifact_mix=("pixelation", 1), height=64, width=32)


# ---------------------------------------------------------------------------------------------- gender


def test_gender_awareness_hand_case():
    e = np.eye(4)
    g = e.copy()  # gallery pids 1, 2, 3, 4
    q = np.stack([e[1] + 0.1 * e[0], e[1], e[3] + 0.1 * e[2]])  # top-1: index 1 (pid 2), 1 (pid 2), 3 (pid 4)
    qp, gp = [1, 2, 3], [1, 2, 3, 4]
    gender = {1: 0, 2: 1, 3: 0, 4: 0}
    r = gender_awareness(q, g, qp, gp, gender)
    # mistakes: q0 female -> male (FN), q2 female -> female (TP): F1 = 2*1 / (2*1 + 0 + 1)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 0, 1, 0)
    assert r["f1"] == pytest.approx(2 / 3) and r["recall"] == 0.5 and r["precision"] == 1.0
    assert r["top1_accuracy"] == pytest.approx(1 / 3)
    ref = gender_f1_on_mistakes(np.array([1, 1, 3]), np.array(qp), np.array(gp), gender)
    assert all(r[k] == ref[k] for k in ref)


def test_top1_after_junk_deletes_the_rule_s_junk():
    e = np.eye(3)
    q = np.stack([e[0]])
    g = np.stack([e[0], e[0] + 0.5 * e[1], e[1], e[2] + 0.1 * e[0]])  # closest first: 0, 1, 3, 2
    qp, gp = [7], [7, 7, 8, 9]
    qc, gc = [1], [1, 2, 2, 3]  # gallery 0 shares the query's camera
    qcl, gcl = [5], [6, 5, 6, 6]  # gallery 1 shares its clothes
    assert top1_after_junk(q, g, qp, gp, qc, gc, qcl, gcl, mode="general").tolist() == [1]
    assert top1_after_junk(q, g, qp, gp, qc, gc, qcl, gcl, mode="cc").tolist() == [3]  # 0 and 1 are junk
    r = gender_awareness(q, g, qp, gp, {7: 0, 9: 1}, q_camids=qc, g_camids=gc, q_clothes_ids=qcl, g_clothes_ids=gcl,
                         mode="cc")
    assert r["num_mistakes"] == 1 and r["fn"] == 1 and r["junk_rule"] == "cc"
    assert gender_awareness(q, g, qp, gp, {7: 0})["num_mistakes"] == 0  # without junk removal the top-1 is gallery 0


def test_load_test_gender_matches_padded_ids_by_value(tmp_path):
    csv = tmp_path / "X_test_Gender.csv"
    csv.write_text("Category,ID,Gender\nquery,004,1\ntest,004,1\nquery,010,0\ntest,010,0\n")
    samples = [Sample("/a.png", 4, 0, 0, "query/a", {"raw_pid": "004"}), Sample("/b.png", 10, 1, 1, "test/b", {"raw_pid": "10"}),
               Sample("/c.png", 12, 1, 1, "test/c", {"raw_pid": "012"})]
    gmap, info = load_test_gender(csv, samples)
    assert gmap == {4: 1, 10: 0} and info["missing"] == ["012"] and info["num_ids"] == 3
    only_q, _ = load_test_gender(csv, samples, categories=("query",))
    assert only_q == {4: 1, 10: 0}


# ---------------------------------------------------------------------------------------------- buckets


def test_quality_buckets_partition_and_equal_direct_evaluation(synth, clean):
    root, ds = synth
    (qf, qs), (gf, gs) = clean["query"], clean["gallery"]
    table = read_quality_csv(root / "quality.csv")
    buckets = quality_buckets(qs, table)
    r = bucket_metrics(qf, gf, qs, gs, buckets, modes=("general", "cc"))
    assert sum(b["num_queries"] for b in r["buckets"].values()) == len(qs)
    assert set(r["buckets"]) == set(buckets.values()) and len(r["buckets"]) >= 2
    labels = np.array([buckets[s.key] for s in qs])
    def lab(ss, f):
        return [getattr(s, f) for s in ss]

    for name, b in r["buckets"].items():
        sel = np.flatnonzero(labels == name)
        sub = [qs[i] for i in sel]
        direct = evaluate_features(qf[sel], gf, lab(sub, "pid"), lab(gs, "pid"), lab(sub, "camid"), lab(gs, "camid"),
                                   lab(sub, "clothes_id"), lab(gs, "clothes_id"), modes=("general", "cc"))
        for m in ("general", "cc"):
            want = summarize({m: direct[m]})[m]
            assert _same(b["results"][m], want), (name, m)
    coarse = quality_buckets(qs, table, coarse=True)
    assert set(coarse.values()) <= {"clean", "LQ"}
    assert all((coarse[k] == "clean") == (table[k][0] == "clean") for k in coarse)
    # protocol form: "all" equals the plain protocol evaluation
    pr = protocol_bucket_metrics(clean, ds.protocols["test"], buckets)
    expected = summarize(evaluate_protocol(clean, ds.protocols["test"]))
    for name in expected:
        assert _same(pr[name]["all"][pr[name]["mode"]], expected[name])
    with pytest.raises(SideInputError):
        bucket_metrics(qf, gf, qs, gs, {qs[0].key: "x"})


def test_size_buckets_from_heights_and_authors_csv(synth):
    _, ds = synth
    qs = ds.split("query")
    b = size_buckets(qs)
    for s in qs:
        with Image.open(s.path) as im:
            assert b[s.key] == size_bucket(im.height)
    # the authors' keys: LTCC basename with extension; PRCC <pid>/<file> (train) or <camera>/<pid>/<file> (test)
    samples = [Sample("/d/LTCC_ReID/query/001_1_c11_015833.png", 1, 11, 0, "query/001_1_c11_015833"),
               Sample("/d/prcc/rgb/test/A/001/cropped_rgb001.jpg", 1, 0, 0, "A/001_cropped_rgb001"),
               Sample("/d/prcc/rgb/train/092/B_cropped_rgb118.jpg", 92, 1, 0, "092_B_cropped_rgb118")]
    table = {"001_1_c11_015833.png": ">256", "A/001/cropped_rgb001.jpg": "64-128", "092/B_cropped_rgb118.jpg": "128-256",
             "cropped_rgb001.jpg": "<32"}  # a bare basename must not win over the longer PRCC key
    assert size_csv_buckets(samples, table) == {"query/001_1_c11_015833": ">256", "A/001_cropped_rgb001": "64-128",
                                                "092_B_cropped_rgb118": "128-256"}
    with pytest.raises(SideInputError, match="lacks 1 of 1"):
        size_csv_buckets([Sample("/d/x/y/z.png", 1, 1, 1, "k")], table)


# ---------------------------------------------------------------------------------------------- report + CLI


def test_write_report(tmp_path):
    img = tmp_path / "figs" / "a.png"
    img.parent.mkdir()
    Image.new("RGB", (4, 4)).save(img)
    rep = write_report(tmp_path / "out", {"Text": "| a |\n|---|", "Numbers": {"x": 1.5, "arr": np.arange(2)}},
                       {"picture": img}, numbers={"extra": {"y": float("nan")}})
    text = rep.read_text()
    assert text.startswith("# rlq analysis") and "## Text" in text and "![picture](../figs/a.png)" in text
    data = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert data["numbers"]["Numbers"] == {"x": 1.5, "arr": [0, 1]} and data["numbers"]["extra"]["y"] is None  # strict JSON
    assert data["images"] == {"picture": "../figs/a.png"} and "Text" not in data["numbers"]


def _run(args: list[str]) -> int:
    from cli_helpers import run_cli

    return run_cli(args)


def test_cli_analyze_commands(synth, model, tmp_path):
    from rlq.engine.model_io import save_model_checkpoint

    root, _ = synth
    a = save_model_checkpoint(model, tmp_path / "ck" / "model_a", input_size=(H, W))
    b = save_model_checkpoint(model, tmp_path / "ck" / "model_b", input_size=(H, W))
    common = ["--dataset", "synthcc", "--root", str(root), "--workers", "0", "--device", "cpu"]
    out = tmp_path / "rob"
    assert _run(["analyze", "robustness", str(a), str(b), *common, "--artifacts", "jpeg", "--levels", "0,2",
                 "--out", str(out)]) == 0
    for f in ("robustness.json", "robustness_rank1.png", "robustness_mAP.png", "report.md", "analysis.json"):
        assert (out / f).is_file(), f
    data = json.loads((out / "robustness.json").read_text())
    assert set(data["models"]) == {"model_a", "model_b"} and data["protocol_label"] == ROBUSTNESS_PROTOCOL
    assert ROBUSTNESS_PROTOCOL in (out / "report.md").read_text()

    assert _run(["analyze", "buckets", str(a), *common, "--quality-csv", str(root / "quality.csv"),
                 "--out", str(tmp_path / "bk")]) == 0
    assert {"buckets.json", "buckets_0.png", "buckets_1.png", "report.md"} <= {p.name for p in (tmp_path / "bk").iterdir()}
    assert _run(["analyze", "gender", str(a), *common, "--gender-csv", str(root / "SynthCC_test_Gender.csv"),
                 "--out", str(tmp_path / "gd")]) == 0
    g = json.loads((tmp_path / "gd" / "gender.json").read_text())
    assert g["coverage"]["missing"] == [] and set(g["models"]["model_a"]["results"]) == {"general", "cc", "sc"}
    # Several checkpoints, and SynthCC's own test gender CSV found without --gender-csv.
    assert _run(["analyze", "gender", str(a), str(b), *common, "--out", str(tmp_path / "gd2")]) == 0
    g2 = json.loads((tmp_path / "gd2" / "gender.json").read_text())
    assert g2["gender_csv"] == str(root / "SynthCC_test_Gender.csv") and set(g2["models"]) == {"model_a", "model_b"}
    same = json.dumps(g2["models"]["model_b"]["results"]) == json.dumps(g["models"]["model_a"]["results"])
    assert same  # the same weights give the same numbers
    assert "model_b: cc" in (tmp_path / "gd2" / "report.md").read_text()
    assert _run(["analyze", "lq-clusters", str(a), *common, "--max-images", "12", "--no-tsne",
                 "--out", str(tmp_path / "lq")]) == 0
    assert json.loads((tmp_path / "lq" / "lq_clusters.json").read_text())["num_images"] == 12
    assert _run(["analyze", "robustness", str(a), *common, "--levels", "0,9", "--out", str(tmp_path / "bad")]) == 2


def test_demo_analysis_on_saved_runs(synth, model, tmp_path):
    from rlq.analysis import demo_analysis
    from rlq.engine.model_io import save_model_checkpoint

    root, ds = synth
    save_model_checkpoint(model, tmp_path / "rlq", input_size=(H, W))
    (tmp_path / "figures").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "figures" / "pose_clusters.png")  # written by the demo before us
    said: list[str] = []
    info = demo_analysis(tmp_path, root, ds, ["bm", "rlq"], height=H, width=W, say=said.append)
    assert any("no weights for `bm`" in x for x in said) and not any("failed" in x for x in said)
    assert {"pose_clusters", "robustness", "tsne_rlq", "quality_buckets", "ranked_rlq", "ranked_rlq_hits"} <= set(info["figures"])
    assert "ranked_bm_hits" not in info["figures"]  # no bm weights: no picture of it
    assert set(info["numbers"]["seconds"]) == {"robustness per artifact", "LQ clusters", "quality buckets",
                                               "gender of mistakes", "ranked results"}
    assert all((tmp_path / rel).is_file() for rel in info["figures"].values())
    assert set(info["numbers"]) == {"robustness", "lq_clusters", "quality_buckets", "gender", "ranked", "seconds"}
    assert ROBUSTNESS_PROTOCOL in next(iter(info["sections"].values()))
    json.dumps(info)  # JSON-able for the demo's results.json
