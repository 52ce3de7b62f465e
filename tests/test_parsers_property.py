"""Property tests: arbitrary file names and manifest contents fail only with RlqError subclasses."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_trees import write_deepchange, write_image, write_ltcc, write_manifest
from rlq.data.datasets import load_dataset
from rlq.data.datasets._common import IMAGE_LIKE_EXTS
from rlq.errors import RlqError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any character a POSIX file name may hold (no '/', NUL or lone surrogates); short enough for 255 bytes.
name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
file_names = st.text(name_chars, min_size=1, max_size=40).filter(lambda s: s not in (".", ".."))
ltcc_like = st.builds(
    lambda p, o, c, f, ext: f"{p}_{o}_c{c}_{f}{ext}",
    st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    st.from_regex(r"[0-9٣]{1,2}", fullmatch=True),
    st.integers(0, 15),
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    st.sampled_from([".png", ".PNG", ".jpg", ".png ", ".png\n", ".Png"]),
)
LTCC_RE = re.compile(r"([0-9]+)_([0-9]+)_c([0-9]+)_([0-9]+)\.(?i:png)", re.ASCII)


def _write_names(folder: Path, names: list[str]) -> list[str]:
    out = []
    for n in names:
        try:
            (folder / n).write_bytes(b"x")
            out.append(n)
        except OSError:  # the file system refused the name (e.g. too long in bytes)
            pass
    return out


@SETTINGS
@given(st.lists(st.one_of(file_names, ltcc_like), min_size=1, max_size=8, unique=True), st.booleans())
def test_ltcc_random_names(names, skip_bad):
    with tempfile.TemporaryDirectory() as d:
        root = write_ltcc(Path(d) / "r", junk=False)
        written = _write_names(root / "train", names)
        try:
            ds = load_dataset("ltcc", root, skip_bad=skip_bad)
        except RlqError:
            return
        # Whatever was accepted fits the anchored basename pattern with a real camera; pids are 0..C-1 ascending.
        for s in ds.train:
            m = LTCC_RE.fullmatch(Path(s.path).name)
            assert m is not None and int(m.group(3)) >= 1
        raw_sorted = sorted({int(s.meta["raw_pid"]) for s in ds.train})
        assert [raw_sorted[s.pid] for s in ds.train] == [int(s.meta["raw_pid"]) for s in ds.train]
        # Every image-like name is either a sample or a skipped line: nothing that looks like an image vanishes.
        image_like = [n for n in written if Path(n).suffix.lower() in IMAGE_LIKE_EXTS and not n.startswith(".")]
        n_train_skipped = sum(1 for x in ds.skipped if "/train/" in x)
        assert len(ds.train) - 6 + n_train_skipped == len(image_like)


@SETTINGS
@given(st.one_of(st.text(max_size=300), st.text(max_size=200).map(lambda t: "path,split,pid,camid,clothes\n" + t)))
def test_manifest_random_text(text):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.csv"
        p.write_bytes(text.encode("utf-8", "replace"))
        try:
            load_dataset("manifest", p)
        except RlqError:
            pass


cell = st.one_of(st.sampled_from(["", "1", "007", "7", "a", "x y", "2.0", "-1"]), st.text(max_size=6))
row = st.fixed_dictionaries(
    {
        "path": st.one_of(
            st.sampled_from(["a.png", "b.png", "s/c.png", "s/d.png", "s/../e.png", "../z.png", "/tmp/q.png", ""]),
            st.text(max_size=8),
        ),
        "split": st.one_of(st.sampled_from(["train", "query", "gallery", "val_query", "val_gallery", "test"]), st.text(max_size=4)),
        "pid": cell,
        "camid": cell,
        "clothes": cell,
        "query_set": st.sampled_from(["", "night", "bad set!"]),
        "gender": st.sampled_from(["", "0", "1", "2"]),
        "pose": st.sampled_from(["", "0", "3.0", "-1", "x"]),
        "key": st.sampled_from(["", "k1", "k2"]),
    }
)
# A valid base so that many examples parse and the invariants below are exercised, not only the errors.
BASE = [
    {"path": "base/t1.png", "split": "train", "pid": "1", "camid": "1", "clothes": "u"},
    {"path": "base/q1.png", "split": "query", "pid": "50", "camid": "1", "clothes": "u"},
    {"path": "base/g1.png", "split": "gallery", "pid": "50", "camid": "2", "clothes": "v"},
]


@SETTINGS
@given(
    st.lists(row, max_size=6),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, {"modes": ["cc"]}, {"camera_key": "tracklet"}, {"camera_key": "none", "modes": "general"}]),
)
def test_manifest_random_rows(extra, skip_bad, allow_outside, protocol):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "m"
        for n in ("a.png", "b.png", "s/c.png", "e.png", *(r["path"] for r in BASE)):
            write_image(root / n)
        csv_path = write_manifest(root, [*BASE, *extra], protocol=protocol, images=False)
        try:
            ds = load_dataset("manifest", csv_path, skip_bad=skip_bad, allow_outside_root=allow_outside)
        except RlqError:
            return
        keys = [s.key for ss in ds.splits.values() for s in ss]
        assert len(keys) == len(set(keys))
        n_rows = sum(len(ss) for ss in ds.splits.values())
        assert n_rows + len(ds.skipped) <= len(BASE) + len(extra)
        for ss in ds.splits.values():
            for s in ss:
                assert Path(s.path).is_file()
                if not allow_outside:
                    assert Path(s.path).resolve().is_relative_to(root.resolve())
        for proto in ds.protocols.values():
            assert set(proto.split_names) <= set(ds.splits)


@SETTINGS
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), max_size=5))
def test_deepchange_random_list_lines(lines):
    with tempfile.TemporaryDirectory() as d:
        root = write_deepchange(Path(d) / "dc", extra_list_lines={"train-set": lines})
        for skip_bad in (False, True):
            try:
                load_dataset("deepchange", root, skip_bad=skip_bad)
            except RlqError:
                pass
