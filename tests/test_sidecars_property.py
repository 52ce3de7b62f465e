"""Property tests: on arbitrary bytes, text and JSON every side-input reader fails only with an RlqError."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from rlq.data import sidecars as sc
from rlq.errors import RlqError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

CSV_READERS = {
    "gender": lambda p: sc.read_gender_csv(p),
    "gender_cat": lambda p: sc.read_gender_csv(p, categories=("train",)),
    "pose": lambda p: sc.read_pose_clusters(p),
    "keys": sc.read_key_list,
    "size": sc.read_size_csv,
    "quality": sc.read_quality_csv,
}
HEADERS = {
    "gender": "Category,ID,Gender",
    "gender_cat": "Category,ID,Gender",
    "pose": "Category,Image,R_LA_15,R_LA_25",
    "keys": "",
    "size": "Category,Image,<32,32-64,64-128,128-256,>256",
    "quality": "Category,Image,Artifact,Severity,Param",
}

cells = st.one_of(
    st.sampled_from(["0", "1", "3.0", "-1", "1.5", "nan", "inf", "1e400", "", " ", "000", "p0003", "train",
                     "clean", "defocus", "\"q,\"", "\x00", "1_0", "1\u00b2"]),
    st.text(max_size=8),
)
rows = st.lists(st.lists(cells, min_size=0, max_size=8).map(",".join), max_size=6)
newlines = st.sampled_from(["\n", "\r\n", "\r", ""])


def _expect_rlq_only(fn, path) -> None:
    try:
        fn(path)
    except RlqError:
        pass


@pytest.mark.parametrize("reader", sorted(CSV_READERS))
@SETTINGS
@given(data=st.binary(max_size=300))
def test_csv_readers_random_bytes(tmp_path, reader, data):
    p = tmp_path / "f.csv"
    p.write_bytes(data)
    _expect_rlq_only(CSV_READERS[reader], p)


def _rows_of_width(n: int):
    return st.lists(st.lists(cells, min_size=n, max_size=n).map(",".join), min_size=1, max_size=6)


@pytest.mark.parametrize("reader", sorted(CSV_READERS))
@SETTINGS
@given(data=st.data(), nl=newlines, with_header=st.booleans())
def test_csv_readers_random_rows(tmp_path, reader, data, nl, with_header):
    width = max(1, HEADERS[reader].count(",") + 1)
    body = data.draw(st.one_of(rows, _rows_of_width(width)))
    lines = ([HEADERS[reader]] if with_header else []) + body
    p = tmp_path / "f.csv"
    p.write_bytes(nl.join(lines).encode("utf-8", "surrogatepass"))
    _expect_rlq_only(CSV_READERS[reader], p)


id_text = st.text(st.characters(categories=["Nd", "No", "Ll"]), min_size=1, max_size=4)


@SETTINGS
@given(ids=st.lists(id_text, min_size=1, max_size=5), genders=st.lists(st.sampled_from("01"), min_size=5, max_size=5))
def test_gender_random_ids(tmp_path, ids, genders):
    p = tmp_path / "g.csv"
    p.write_text("Category,ID,Gender\n" + "".join(f"train,{i},{g}\n" for i, g in zip(ids, genders)), "utf-8")
    try:
        table = sc.read_gender_csv(p)
    except RlqError:
        return
    assert len(table) == len(ids) and set(table.values()) <= {0, 1}
    labels, missing = sc.match_gender(ids, table)
    assert missing == [] and labels.tolist() == [int(g) for g in genders[: len(ids)]]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)
numbers = st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=2), st.none())
kp_lists = st.lists(numbers, min_size=49, max_size=52) | st.lists(st.floats(0, 500), min_size=51, max_size=51)
ap_entries = st.fixed_dictionaries(
    {},
    optional={
        "image_id": st.one_of(st.text(max_size=6), st.sampled_from(["a.jpg", "b.jpg", "zz.jpg"]), st.integers()),
        "category_id": numbers,
        "keypoints": kp_lists,
        "score": numbers,
        "box": st.lists(numbers, min_size=3, max_size=5),
        "idx": json_values,
    },
)


def _dump(obj) -> str:
    return json.dumps(obj)


@SETTINGS
@given(obj=st.one_of(json_values, st.lists(ap_entries, max_size=4)))
def test_alphapose_random_json(tmp_path, obj):
    p = tmp_path / "alphapose-results.json"
    p.write_text(_dump(obj))
    try:
        got = sc.read_alphapose(p)
    except RlqError:
        return
    for dets in got.values():
        for d in dets:
            assert d.keypoints.shape == (17, 3) and np.isfinite(d.keypoints).all()
        sc.select_person(dets)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_json_readers_random_bytes(tmp_path, data):
    p = tmp_path / "x.json"
    p.write_bytes(data)
    _expect_rlq_only(sc.read_alphapose, p)
    _expect_rlq_only(sc.read_coco_keypoints, p)


coco_docs = st.fixed_dictionaries(
    {},
    optional={
        "images": st.lists(st.fixed_dictionaries({}, optional={"id": numbers | json_values,
                                                               "file_name": st.text(max_size=6) | numbers}),
                           max_size=3) | json_values,
        "annotations": st.lists(st.fixed_dictionaries({}, optional={"image_id": numbers | json_values,
                                                                    "keypoints": kp_lists, "score": numbers,
                                                                    "bbox": st.lists(numbers, max_size=5)}),
                                max_size=3) | json_values,
    },
)


@SETTINGS
@given(obj=st.one_of(coco_docs, json_values))
def test_coco_random_json(tmp_path, obj):
    p = tmp_path / "coco.json"
    p.write_text(_dump(obj))
    _expect_rlq_only(sc.read_coco_keypoints, p)


@SETTINGS
@given(obj=st.one_of(json_values, st.lists(ap_entries, max_size=4)))
def test_alphapose_tree_random_json(tmp_path, obj):
    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True, exist_ok=True)
    pose = tmp_path / "pose"
    (pose / "train").mkdir(parents=True, exist_ok=True)
    (pose / "train" / sc.ALPHAPOSE_FILE).write_text(_dump(obj))
    samples = [str(root / "train" / "a.jpg"), str(root / "train" / "b.jpg")]
    _expect_rlq_only(lambda _: sc.read_alphapose_tree(pose, root, samples), None)


def test_json_huge_numbers(tmp_path):
    for i, text in enumerate(["[" + "1" * 5000 + "]", '[{"image_id": "a", "keypoints": [1' + "0" * 400 + "]}]",
                              "[" * 100000 + "]" * 100000]):
        p = tmp_path / f"h{i}.json"
        p.write_text(text)
        with pytest.raises(RlqError):
            sc.read_alphapose(p)


@pytest.mark.parametrize("suffix", [".png", ".npy"])
@SETTINGS
@given(data=st.binary(max_size=300))
def test_read_parsing_random_bytes(tmp_path, suffix, data):
    p = tmp_path / f"m{suffix}"
    p.write_bytes(data)
    _expect_rlq_only(sc.read_parsing, p)


@SETTINGS
@given(arr=hnp.arrays(dtype=hnp.scalar_dtypes(), shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=21)))
def test_read_parsing_random_arrays(tmp_path, arr):
    p = tmp_path / "m.npy"
    np.save(p, arr)
    try:
        got = sc.read_parsing(p, expected_size=(3, 2))
    except RlqError:
        return
    assert got.shape == (2, 3) and got.max() < 20


@SETTINGS
@given(arr=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, max_side=6)),
       mode=st.sampled_from(["L", "P", "RGB", "I;16", "1", "LA"]))
def test_read_parsing_random_images(tmp_path, arr, mode):
    img = Image.fromarray(arr[..., 0] if arr.ndim == 3 else arr)
    img = img.convert(mode) if mode != "P" else img.convert("L")
    if mode == "P":
        img.putpalette(list(range(256)) * 3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    p = tmp_path / "m.png"
    p.write_bytes(buf.getvalue())
    try:
        got = sc.read_parsing(p)
    except RlqError:
        return
    assert got.dtype == np.uint8 and got.max() < 20


@SETTINGS
@given(data=st.lists(st.binary(max_size=120), min_size=3, max_size=3))
def test_legacy_masks_random_bytes(tmp_path, data):
    for part, blob in zip(sc.LEGACY_PARTS, data):
        Path(tmp_path / f"k_{part}.png").write_bytes(blob)
    _expect_rlq_only(lambda _: sc.read_legacy_masks(tmp_path, "k"), None)
