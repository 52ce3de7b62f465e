"""Gender F1 on top-1 mistakes (paper Fig. 8 right) and the annotation sheet."""

from __future__ import annotations

import csv
import html

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, precision_score, recall_score

from rlq.attributes.gender import TEMPLATE_NAME, gender_f1_on_mistakes, gender_sheet, top1_from_features
from rlq.data.records import Sample
from rlq.data.sidecars import read_gender_csv


def brute_top1(q, g):
    best = []
    for x in q:
        sims = [float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) for y in g]
        best.append(max(range(len(g)), key=lambda j: (sims[j], -j)))  # highest, then lowest index
    return np.array(best)


def test_top1_matches_brute_force_and_chunking():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(23, 8))
    g = rng.normal(size=(31, 8))
    ref = brute_top1(q, g)
    np.testing.assert_array_equal(top1_from_features(q, g), ref)
    np.testing.assert_array_equal(top1_from_features(q, g, chunk_size=4), ref)
    # Cosine, not dot product: scaling a gallery vector does not change its rank.
    g2 = g.copy()
    g2[::2] *= 100.0
    np.testing.assert_array_equal(top1_from_features(q, g2), ref)


def test_top1_ties_go_to_lower_index():
    g = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])  # 0 == 2 and 1 == 3 by cosine
    q = np.array([[5.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    assert top1_from_features(q, g).tolist() == [0, 1, 0]


def test_gender_f1_matches_sklearn_on_hand_built_case():
    gender = {10: 0, 11: 1, 12: 0, 13: 1, 14: 0}  # pid 99 unknown
    g_pids = np.array([10, 11, 12, 13, 14, 99])
    q_pids = np.array([10, 10, 11, 12, 12, 13, 14, 14, 11, 99, 10])
    top1 = np.array([0, 1, 2, 3, 4, 4, 2, 4, 5, 0, 2])
    # Query by query: 0 correct; 1 10->11 (F->M); 2 11->12 (M->F); 3 12->13 (F->M); 4 12->14 (F->F);
    # 5 13->14 (M->F); 6 14->12 (F->F); 7 correct; 8 11->99 skipped; 9 99->10 skipped; 10 10->12 (F->F).
    truth = [0, 1, 0, 0, 1, 0, 0]
    pred = [1, 0, 1, 0, 0, 0, 0]
    r = gender_f1_on_mistakes(top1, q_pids, g_pids, gender)
    assert r["num_mistakes"] == 9 and r["num_skipped_unknown"] == 2 and r["num_evaluated"] == 7
    assert r["f1"] == pytest.approx(f1_score(truth, pred, pos_label=0))
    assert r["precision"] == pytest.approx(precision_score(truth, pred, pos_label=0))
    assert r["recall"] == pytest.approx(recall_score(truth, pred, pos_label=0))
    r1 = gender_f1_on_mistakes(top1, q_pids, g_pids, gender, positive=1)
    assert r1["f1"] == pytest.approx(f1_score(truth, pred, pos_label=1))
    assert r1["f1"] != r["f1"]


def test_gender_f1_random_against_sklearn():
    rng = np.random.default_rng(4)
    pids = np.arange(30)
    gender = {int(p): int(rng.integers(0, 2)) for p in pids[:27]}  # 27..29 unknown
    q_pids = rng.choice(pids, 200)
    g_pids = rng.choice(pids, 120)
    top1 = rng.integers(0, 120, 200)
    truth, pred, skipped = [], [], 0
    for qi, gi in zip(q_pids, top1):
        gp = g_pids[gi]
        if gp == qi:
            continue
        if qi not in gender or gp not in gender:
            skipped += 1
            continue
        truth.append(gender[qi])
        pred.append(gender[gp])
    r = gender_f1_on_mistakes(top1, q_pids, g_pids, gender)
    assert r["num_skipped_unknown"] == skipped > 0
    assert r["f1"] == pytest.approx(f1_score(truth, pred, pos_label=0))


def test_gender_f1_no_mistakes_is_zero_not_nan():
    r = gender_f1_on_mistakes(np.array([0, 1]), np.array([5, 6]), np.array([5, 6]), {5: 0, 6: 1})
    assert r["num_mistakes"] == 0 and r["f1"] == 0.0


def _samples(tmp_path, ids, per=3):
    out = []
    for pi, raw in enumerate(ids):
        for j in range(per):
            p = tmp_path / "imgs" / f"{pi}_{j}.png"
            p.parent.mkdir(exist_ok=True)
            Image.new("RGB", (30, 60), (pi * 20 % 255, j * 50, 0)).save(p)
            out.append(Sample(str(p), pid=pi, camid=j, clothes_id=0, key=p.stem, meta={"raw_pid": raw}))
    return out


def test_gender_sheet_template_and_pages(tmp_path):
    ids = ["000", "002", "127", "p0003", "5"]
    samples = _samples(tmp_path, ids, per=4)
    out = tmp_path / "sheet"
    index = gender_sheet(samples, out, per_id=2, ids_per_page=2, existing={"2": 0, "127": 1})
    assert index == out / "index.html" and index.is_file()
    pages = sorted(p.name for p in out.glob("page_*.html"))
    assert pages == ["page_001.html", "page_002.html", "page_003.html"]
    assert len(list((out / "thumbs").glob("*.jpg"))) == 5 * 2
    with open(out / TEMPLATE_NAME, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Category", "ID", "Gender"]
    # IDs exactly as written (zero padding kept); prefilled by value ("2" == "002").
    assert rows[1:] == [["train", "000", ""], ["train", "002", "0"], ["train", "127", "1"],
                        ["train", "p0003", ""], ["train", "5", ""]]
    # Once filled in, the template reads back with the project's reader.
    filled = out / "filled.csv"
    filled.write_text("\n".join(",".join(r[:2] + [r[2] or "1"]) for r in rows) + "\n")
    assert read_gender_csv(filled) == {0: 1, 2: 0, 127: 1, "p0003": 1, 5: 1}
    page1 = (out / "page_001.html").read_text()
    assert page1.count(" checked>") == 1 and "value=\"0\" checked>female" in page1  # "002" prefilled female
    with Image.open(next((out / "thumbs").glob("*.jpg"))) as im:
        assert im.format == "JPEG" and im.size[1] <= 128


def test_gender_sheet_escapes_names(tmp_path):
    evil_id = '<script>alert("x")</script>'
    samples = _samples(tmp_path, [evil_id, "001"], per=1)
    evil_file = tmp_path / "imgs" / "<script>evil.png"
    Image.new("RGB", (30, 60)).save(evil_file)
    samples.append(Sample(str(evil_file), pid=1, camid=5, clothes_id=0, key="k", meta={"raw_pid": "001"}))
    gender_sheet(samples, tmp_path / "out", per_id=4)
    page = (tmp_path / "out" / "page_001.html").read_text()
    assert "<script>alert" not in page and "<script>evil" not in page
    assert html.escape(evil_id) in page
    assert html.escape("<script>evil.png") in page
    # The only script element is our own.
    assert page.count("<script>") == 1
    with open(tmp_path / "out" / TEMPLATE_NAME, newline="") as f:
        assert list(csv.reader(f))[1] == ["train", evil_id, ""]


def test_gender_template_neutralises_formula_ids_and_reads_back(tmp_path):
    """An identity like =HYPERLINK(...) is written as '=HYPERLINK(...) (text, not a formula, in a spreadsheet);
    the filled-in template still reads back to the same ids."""
    evil = '=HYPERLINK("http://x","y")'
    ids = [evil, "@cmd", "-1", "001"]
    gender_sheet(_samples(tmp_path, ids, per=1), tmp_path / "out", per_id=1)
    with open(tmp_path / "out" / TEMPLATE_NAME, newline="") as f:
        rows = list(csv.reader(f))
    assert [r[1] for r in rows[1:]] == ["'" + evil, "'@cmd", "-1", "001"]
    page = (tmp_path / "out" / "page_001.html").read_text()
    assert f'data-id="{html.escape(chr(39) + evil)}"' in page  # the rows the page builds match the template
    filled = tmp_path / "filled.csv"
    with open(filled, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[[r[0], r[1], "1"] for r in rows[1:]]])
    assert read_gender_csv(filled) == {evil: 1, "@cmd": 1, "-1": 1, 1: 1}
