"""Ranked-result pictures (PNG + HTML) and `rlq visualize`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlq.analysis import STATUS_COLORS, match_status, rank_list_figure
from rlq.data.records import Sample
from rlq.errors import ConfigError
from rlq.evaluation.ranking import evaluate_features

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="session")
def synth(synthcc_tiny):
    from rlq.data.datasets import load_dataset

    return synthcc_tiny, load_dataset("synthcc", synthcc_tiny)


def _img(path: Path, colour: tuple[int, int, int]) -> str:
    Image.new("RGB", (20, 40), colour).save(path)
    return str(path)


@pytest.fixture()
def case(tmp_path):
    """2 queries, 6 gallery images with hand-set labels and distances (no ties)."""
    d = tmp_path / "imgs"
    d.mkdir()
    q = [Sample(_img(d / "q0.png", (10, 20, 30)), 1, 0, 10, "query/q0"),
         Sample(_img(d / "q1.png", (10, 20, 30)), 2, 0, 20, "query/q1")]
    # (pid, camid, clothes): under "cc" for query 0 (pid 1, cam 0, clothes 10):
    # g0 same cam -> junk; g1 other cam, same clothes -> junk; g2 other cam + clothes -> correct; g3..g5 other ids
    spec = [(1, 0, 10), (1, 1, 10), (1, 2, 11), (2, 1, 20), (3, 1, 30), (2, 2, 21)]
    names = ["g0.png", "g1.png", "<script>x.png", "g3.png", "g4.png", "g5.png"]
    g = [Sample(_img(d / n, (60, 60, 60 + 20 * i)), p, c, cl, f"test/{n}") for i, (n, (p, c, cl)) in enumerate(zip(names, spec))]
    dist = np.array([[0.1, 0.2, 0.5, 0.3, 0.4, 0.6],    # q0 ranking: g0 g1 g3 g4 g2 g5
                     [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])   # q1 ranking: g5 g4 g3 g2 g1 g0
    return q, g, dist


def _border(png: str, box: list[int]) -> tuple[int, int, int]:
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        x0, y0, x1, y1 = box
        px = {rgb.getpixel((x0 + 1, y0 + 1)), rgb.getpixel((x1 - 2, y1 - 2)), rgb.getpixel((x0 + 1, y1 - 2))}
    assert len(px) == 1, px
    return px.pop()


def test_status_and_border_colours_without_junk(case, tmp_path):
    q, g, dist = case
    r = rank_list_figure(q, g, distances=dist, mode="cc", query_indices=[0, 1], top_k=3, out_png=tmp_path / "r.png")
    rows = r["rows"]
    # q0 (cc): junk g0, g1 removed -> g3 (wrong), g4 (wrong), g2 (correct)
    assert [c["gallery_index"] for c in rows[0]["cells"]] == [3, 4, 2]
    assert [c["status"] for c in rows[0]["cells"]] == ["wrong", "wrong", "correct"]
    # q1 (pid 2, cam 0, clothes 20): g5 (pid 2, cam 2, clothes 21) correct, g4 wrong, g3 (pid 2, clothes 20) junk -> g2 wrong
    assert [c["gallery_index"] for c in rows[1]["cells"]] == [5, 4, 2]
    assert [c["status"] for c in rows[1]["cells"]] == ["correct", "wrong", "wrong"]
    assert [c["rank"] for c in rows[1]["cells"]] == [1, 2, 3]
    colours = [_border(r["png"], c["box"]) for row in rows for c in row["cells"]]
    assert colours.count(STATUS_COLORS["correct"]) == 2 and colours.count(STATUS_COLORS["wrong"]) == 4
    assert STATUS_COLORS["junk"] not in colours
    assert all(_border(r["png"], row["query_box"]) == STATUS_COLORS["query"] for row in rows)
    assert "given" in r["order_text"] and "removed" in r["legend"] and r["html"] is None
    # the legend names every border colour, the query's included; AP is a percentage (q0: 1 good item at rank 3)
    assert "blue = the query" in r["legend"] and STATUS_COLORS["query"][2] > max(STATUS_COLORS["query"][:2])
    assert [row["ap_text"] for row in rows] == ["AP 33.3%", "AP 100.0%"]
    with Image.open(r["png"]) as im:
        assert im.format == "PNG" and list(im.size) == r["size"]


def test_junk_shown_in_grey(case, tmp_path):
    q, g, dist = case
    r = rank_list_figure(q, g, distances=dist, mode="cc", query_indices=[0], top_k=5, show_junk=True,
                         out_png=tmp_path / "r.png")
    cells = r["rows"][0]["cells"]
    assert [c["status"] for c in cells] == ["junk", "junk", "wrong", "wrong", "correct"]
    colours = [_border(r["png"], c["box"]) for c in cells]
    assert colours == [STATUS_COLORS[s] for s in ("junk", "junk", "wrong", "wrong", "correct")]
    assert "shown" in r["legend"]
    # under the general rule only the same-camera item is junk
    assert match_status(q[0], g[1], "general") == "correct" and match_status(q[0], g[1], "sc") == "correct"
    assert match_status(q[0], g[2], "sc") == "junk" and match_status(q[0], g[0], "general") == "junk"


def test_html_escapes_names_and_links_thumbnails(case, tmp_path):
    q, g, dist = case
    html_path = tmp_path / "page" / "ranked.html"
    r = rank_list_figure(q, g, distances=dist, mode="cc", query_indices=[0], top_k=3, out_png=tmp_path / "page" / "r.png",
                         out_html=html_path)
    text = html_path.read_text()
    assert "&lt;script&gt;x.png" in text and "<script" not in text.lower()
    srcs = re.findall(r'src="([^"]+)"', text)
    assert len(srcs) == 4 and all(not s.startswith("/") for s in srcs)
    for s in srcs:
        with Image.open(html_path.parent / s) as im:
            assert im.format == "JPEG"
    assert r["html"] == str(html_path)


def test_worst_and_random_orders(synth, tmp_path):
    from rlq.evaluation.extract import extract_features
    from rlq.models import build_model

    _, ds = synth
    model = build_model(method="bm", num_ids=8, backbone="tiny", seed=0)
    qs, gs = ds.split("query"), ds.split("gallery")
    qf = extract_features(model, [s.path for s in qs], 64, 32, workers=0)
    gf = extract_features(model, [s.path for s in gs], 64, 32, workers=0)
    r = rank_list_figure(qs, gs, query_feats=qf, gallery_feats=gf, mode="cc", order="worst", num_queries=4, top_k=5,
                         out_png=tmp_path / "w.png")
    def lab(ss, f):
        return [getattr(s, f) for s in ss]

    ev = evaluate_features(qf, gf, lab(qs, "pid"), lab(gs, "pid"), lab(qs, "camid"), lab(gs, "camid"),
                           lab(qs, "clothes_id"), lab(gs, "clothes_id"), mode="cc")
    valid = np.flatnonzero(ev["valid"])
    want = sorted(valid.tolist(), key=lambda i: (ev["ap"][i], i))[:4]
    assert [row["query_index"] for row in r["rows"]] == want
    assert r["order_text"] == "queries: 4 worst AP under cc, worst first"
    # the first correct cell of each row sits at the query's first-match rank (junk removed, as the evaluation)
    for row in r["rows"]:
        first = [c["rank"] for c in row["cells"] if c["status"] == "correct"]
        if first:
            assert first[0] == ev["first_rank"][row["query_index"]]
        else:
            assert ev["first_rank"][row["query_index"]] > 5
    a = rank_list_figure(qs, gs, query_feats=qf, gallery_feats=gf, order="random", num_queries=3, seed=7, out_png=tmp_path / "a.png")
    b = rank_list_figure(qs, gs, query_feats=qf, gallery_feats=gf, order="random", num_queries=3, seed=7, out_png=tmp_path / "b.png")
    assert [x["query_index"] for x in a["rows"]] == [x["query_index"] for x in b["rows"]] and "seed 7" in a["order_text"]
    with pytest.raises(ConfigError):
        rank_list_figure(qs, gs, distances=np.zeros((len(qs), len(gs))), query_feats=qf, gallery_feats=gf, out_png=tmp_path / "x.png")


def test_cli_visualize(synth, tmp_path):
    from rlq.cli import main
    from rlq.engine.model_io import save_model_checkpoint
    from rlq.models import build_model

    root, ds = synth
    ck = save_model_checkpoint(build_model(method="bm", num_ids=8, backbone="tiny", seed=1), tmp_path / "ck", input_size=(64, 32))
    out = tmp_path / "vis"
    key = ds.split("query")[3].key
    with pytest.raises(SystemExit) as ok:  # typer exits 0 on success
        main(["visualize", str(ck), "--dataset", "synthcc", "--root", str(root), "--workers", "0", "--device", "cpu",
              "--queries", f"{key},{ds.split('query')[0].key}", "--top-k", "4", "--show-junk", "--out", str(out)])
    assert ok.value.code == 0
    for f in ("ranked.png", "ranked.html", "ranked.json", "report.md", "analysis.json"):
        assert (out / f).is_file(), f
    data = json.loads((out / "ranked.json").read_text())
    assert [r["query_key"] for r in data["rows"]] == [key, ds.split("query")[0].key]
    assert all(len(r["cells"]) == 4 for r in data["rows"]) and data["show_junk"] is True
    assert "![ranked results](ranked.png)" in (out / "report.md").read_text()
    with pytest.raises(SystemExit) as e:
        main(["visualize", str(ck), "--dataset", "synthcc", "--root", str(root), "--workers", "0", "--queries", "nope",
              "--out", str(out)])
    assert e.value.code == 2


def test_hits_order_draws_only_queries_whose_rank1_is_correct(case, tmp_path):
    """Hand case: q0's nearest non-junk image is g3 (another identity) -> miss; q1's is g5 (pid 2, cam 2, clothes 21:
    another camera and outfit of pid 2) -> hit. `hits` draws only q1 and says so."""
    q, g, dist = case
    r = rank_list_figure(q, g, distances=dist, mode="cc", order="hits", num_queries=5, top_k=3, seed=3,
                         out_png=tmp_path / "h.png")
    assert [row["query_index"] for row in r["rows"]] == [1]
    assert r["rows"][0]["cells"][0]["status"] == "correct" and r["rows"][0]["cells"][0]["rank"] == 1
    assert "from the 1 of 2 valid queries whose rank-1 is correct" in r["order_text"]
    assert "not a representative sample" in r["order_text"]
