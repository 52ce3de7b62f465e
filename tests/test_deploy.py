"""FeatureExtractor (every input kind, parity with evaluation), GalleryIndex (exact vs brute force vs faiss,
ties, save/load), the HTML report's escaping, and the `rlq search` CLI end to end."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import run_cli
from rlq.deploy import FeatureExtractor, GalleryIndex, write_search_html
from rlq.deploy.search import topk_exact
from rlq.engine.model_io import save_model_checkpoint
from rlq.errors import CheckpointError, ConfigError, DatasetError, RlqError
from rlq.evaluation.extract import extract_features
from rlq.models import build_model

H, W = 64, 32


def tiny_model(seed: int = 0):
    return build_model(method="bm", num_ids=5, backbone="tiny", pretrained="none", seed=seed).eval()


def make_image(seed: int, h: int, w: int) -> np.ndarray:
    """A structured RGB uint8 image (gradient + blocks + noise), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = rng.uniform(30, 200, 3) + 50 * np.stack([yy / h, xx / w, (yy * xx) / (h * w)], -1)
    for _ in range(3):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 10, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three PNG images of different sizes (lossless, so the file and the array hold the same pixels)."""
    root = tmp_path_factory.mktemp("imgs")
    arrays = [make_image(i, h, w) for i, (h, w) in enumerate([(100, 50), (37, 20), (64, 32)])]
    paths = []
    for i, a in enumerate(arrays):
        p = root / f"img{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return paths, arrays


@pytest.fixture(scope="module")
def fe(model):
    return FeatureExtractor(model, device="cpu", batch_size=8, input_size=(H, W))


# ---------------------------------------------------------------- FeatureExtractor


def test_every_uint8_input_kind_gives_identical_features(fe, images):
    paths, arrays = images
    ref = fe(paths)
    assert ref.dtype == torch.float32 and ref.device.type == "cpu" and ref.shape == (3, fe.embed_dim)
    torch.testing.assert_close(ref.norm(dim=1), torch.ones(3))
    variants = {
        "Path objects": [Path(p) for p in paths],
        "PIL": [Image.open(p) for p in paths],
        "uint8 arrays": arrays,
        "uint8 CHW tensors": [torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays],
        "tuple": tuple(paths),
    }
    for name, v in variants.items():
        assert torch.equal(fe(v), ref), name
    # single images: one row, identical to a batch of one path
    one = fe(paths[1])
    assert one.shape == (1, fe.embed_dim)
    for single in (Path(paths[1]), Image.open(paths[1]), arrays[1], torch.from_numpy(arrays[1].copy()).permute(2, 0, 1)):
        assert torch.equal(fe(single), one)


def test_batch_array_and_batch_tensor_inputs(fe):
    arrays = np.stack([make_image(10 + i, 80, 40) for i in range(4)])  # N x H x W x 3
    ref = fe(list(arrays))
    assert torch.equal(fe(arrays), ref)
    t = torch.from_numpy(arrays.copy()).permute(0, 3, 1, 2)  # N x 3 x H x W uint8
    assert torch.equal(fe(t), ref)
    # already at the input size: a 0-1 float tensor is used as is, so it equals the uint8 route exactly
    at_size = torch.from_numpy(np.stack([make_image(20 + i, H, W) for i in range(2)])).permute(0, 3, 1, 2)
    assert torch.equal(fe(at_size.float() / 255), fe(at_size))


def test_float_tensor_resized_in_torch_is_close_to_pil(fe, images):
    _, arrays = images
    ref = fe(arrays)
    floats = [torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255 for a in arrays]
    got = fe(floats)
    cos = (got * ref).sum(1)
    assert cos.min() > 0.999, cos  # antialiased bilinear in float vs PIL's uint8 bilinear: quantisation-level differences
    assert not torch.equal(got[:2], ref[:2])  # the images that need resizing really take the other route
    # mixed uint8 / float tensors in one list are allowed (both are tensors)
    mixed = fe([torch.from_numpy(arrays[0].copy()).permute(2, 0, 1), floats[1]])
    torch.testing.assert_close(mixed[0], ref[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1], got[1], rtol=0, atol=1e-6)


def test_equals_extract_features_and_independent_reference(model, fe, images):
    paths, arrays = images
    got = fe(paths).numpy()
    ref = extract_features(model, paths, H, W, device="cpu", batch_size=8, workers=0)
    np.testing.assert_array_equal(got, ref)
    # independent reference: PIL bilinear resize, /255, embed with flip, one global L2 norm (docs/method.md §2.5)
    with torch.no_grad():
        x = torch.stack([torch.from_numpy(np.asarray(Image.fromarray(a).resize((W, H), Image.BILINEAR)).copy())
                         .permute(2, 0, 1).float() / 255 for a in arrays])
        e = model(x, "embed") + model(torch.flip(x, dims=[3]), "embed")
        manual = torch.nn.functional.normalize(e, dim=1).numpy()
    np.testing.assert_allclose(got, manual, rtol=0, atol=1e-6)
    # no flip: a different feature
    nf = FeatureExtractor(model, device="cpu", flip=False, input_size=(H, W))(paths).numpy()
    assert np.abs(nf - got).max() > 1e-3


def test_from_checkpoint_uses_recorded_input_size_and_restores_mode(tmp_path, images):
    paths, _ = images
    m = tiny_model(seed=3)
    ck = save_model_checkpoint(m, tmp_path / "ck", input_size=(H, W))
    fe = FeatureExtractor(ck, device=None, batch_size=2)
    assert fe.input_size == (H, W) and fe.checkpoint == str(ck) and fe.device.type in ("cpu", "cuda")
    ref = FeatureExtractor(m, device="cpu", batch_size=2, input_size=(H, W))(paths)
    torch.testing.assert_close(fe(paths), ref, rtol=0, atol=1e-6)
    # batch size does not change the result beyond float noise
    torch.testing.assert_close(FeatureExtractor(m, device="cpu", batch_size=1, input_size=(H, W))(paths), ref, rtol=0, atol=1e-5)
    m.train()
    out = FeatureExtractor(m, device="cpu", input_size=(H, W))(paths)
    assert m.training  # restored
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)  # computed in eval mode (BN running stats)


def test_empty_input_and_repr(fe):
    out = fe([])
    assert out.shape == (0, fe.embed_dim) and out.dtype == torch.float32
    assert "input_size=(64, 32)" in repr(fe)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda p, a: [p[0], a[0]], "one kind of input"),
        (lambda p, a: torch.rand(3, H, W) * 255, "0-255"),
        (lambda p, a: torch.from_numpy(a[0].copy()), "permute"),  # H x W x 3 tensor
        (lambda p, a: torch.zeros(3, H, W, dtype=torch.int64), "uint8"),
        (lambda p, a: torch.full((3, H, W), float("nan")), "NaN"),
        (lambda p, a: a[0].astype(np.float32), "uint8"),
        (lambda p, a: np.ascontiguousarray(a[0].transpose(2, 0, 1)), "channels-first"),
        (lambda p, a: a[0][..., 0], "RGB"),
        (lambda p, a: torch.zeros(2, 2, 3, H, W, dtype=torch.uint8), "3 x H x W"),
        (lambda p, a: [a[0][None]], r"H x W x 3"),  # a batch inside a list
        (lambda p, a: 42, "unsupported input type int"),
        (lambda p, a: [p[0], 42], r"input\[1\]"),
    ],
)
def test_wrong_inputs_give_clear_errors(fe, images, bad, match):
    paths, arrays = images
    with pytest.raises(RlqError, match=match):
        fe(bad(paths, arrays))


def test_missing_file_and_bad_settings(fe, model, tmp_path):
    with pytest.raises(DatasetError, match="nope.png"):
        fe([str(tmp_path / "nope.png")])
    # One AMP rule for training and inference (rlq.runtime.device, docs/design.md "The runtime layer"): an explicit
    # bf16 / fp16 is honoured on the CPU, as train.amp=bf16 always was there; only "auto" means fp32 on the CPU.
    # (Until the rule was shared, the extractor refused amp="bf16" on the CPU.)
    assert FeatureExtractor(model, device="cpu", amp="bf16").precision == "bf16"
    assert FeatureExtractor(model, device="cpu", amp="auto").precision == "fp32"
    with pytest.raises(ConfigError, match="amp must be"):
        FeatureExtractor(model, device="cpu", amp="fp8")
    with pytest.raises(ConfigError, match="batch_size"):
        FeatureExtractor(model, device="cpu", batch_size=0)
    with pytest.raises(ConfigError, match="input_size"):
        FeatureExtractor(model, device="cpu", input_size=(0, 32))
    with pytest.raises(RlqError, match="embed"):
        FeatureExtractor(torch.nn.Linear(2, 2), device="cpu")


def test_lazy_top_level_import():
    import rlq.deploy

    assert rlq.deploy.FeatureExtractor is FeatureExtractor


# ---------------------------------------------------------------- GalleryIndex


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float64) @ g.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("chunk", [None, 7])
def test_exact_search_matches_brute_force(chunk):
    g, q = unit_rows(500, 32, 0), unit_rows(40, 32, 1)
    idx = GalleryIndex.build(g, [f"k{i}" for i in range(500)])
    s, i = idx.search(q, 10, chunk_size=chunk)
    rs, ri = brute_force(q, g, 10)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (40, 10)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, atol=1e-5)
    s2, i2 = idx.search(torch.from_numpy(q), 1000)  # k larger than the gallery: clamped
    assert i2.shape == (40, 500) and sorted(i2[0].tolist()) == list(range(500))


def test_exact_ties_go_to_the_lower_index():
    a, b, c = np.eye(4, dtype=np.float32)[:3]
    g = np.stack([b, a, c, a, b, a, a])  # a at 1, 3, 5, 6; b at 0, 4
    q = (0.8 * a + 0.6 * b)[None]  # scores: a 0.8, b 0.6, c 0
    s, i = topk_exact(torch.from_numpy(q), torch.from_numpy(g), 3)
    assert i.tolist() == [[1, 3, 5]]  # four-way tie at the cut: the three lowest indices
    s, i = topk_exact(torch.from_numpy(q), torch.from_numpy(g), 6)
    assert i.tolist() == [[1, 3, 5, 6, 0, 4]]
    torch.testing.assert_close(s, torch.tensor([[0.8] * 4 + [0.6] * 2]))
    # many exact ties in random order: equals a stable full sort
    rng = np.random.default_rng(0)
    gq = rng.integers(0, 4, (300, 8)).astype(np.float32)
    qq = rng.integers(0, 3, (20, 8)).astype(np.float32)
    _, i = topk_exact(torch.from_numpy(qq), torch.from_numpy(gq), 25, chunk_size=6)
    np.testing.assert_array_equal(i.numpy(), brute_force(qq, gq, 25)[1])


def test_exact_and_faiss_agree():
    pytest.importorskip("faiss")
    g, q = unit_rows(3000, 64, 2), unit_rows(50, 64, 3)
    keys = [f"g{i}" for i in range(3000)]
    se, ie = GalleryIndex.build(g, keys, backend="exact").search(q, 10)
    sf, i_f = GalleryIndex.build(g, keys, backend="faiss").search(q, 10)
    np.testing.assert_array_equal(ie, i_f)
    np.testing.assert_allclose(se, sf, atol=1e-5)


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_save_load_round_trip(tmp_path, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    g, q = unit_rows(200, 16, 4), unit_rows(5, 16, 5)
    keys = [f"cam{i % 3}/img{i}.jpg" for i in range(200)]
    idx = GalleryIndex.build(g, keys, backend=backend, paths=[f"/data/{k}" for k in keys],
                             meta={"checkpoint": "/ck", "input_size": [H, W]})
    d = idx.save(tmp_path / "index")
    files = sorted(p.name for p in d.iterdir())
    assert files == (["faiss.index", "features.npy", "index.json"] if backend == "faiss" else ["features.npy", "index.json"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    back = GalleryIndex.load(d)
    assert back.backend == backend and back.keys.tolist() == keys and back.paths[7] == "/data/" + keys[7]
    assert back.meta == {"checkpoint": "/ck", "input_size": [H, W]}
    np.testing.assert_array_equal(back.features, g)
    for a, b in zip(idx.search(q, 7), back.search(q, 7)):
        np.testing.assert_array_equal(a, b)
    # the saved features are a plain .npy that loads without pickle
    np.testing.assert_array_equal(np.load(d / "features.npy", allow_pickle=False), g)
    # overwrite an existing index folder
    GalleryIndex.build(g[:10], keys[:10]).save(d)
    assert len(GalleryIndex.load(d)) == 10


def test_index_errors(tmp_path, monkeypatch):
    g = unit_rows(10, 4, 0)
    with pytest.raises(RlqError, match="10 feature rows but 9 keys"):
        GalleryIndex.build(g, ["a"] * 9)
    with pytest.raises(RlqError, match="unknown search backend"):
        GalleryIndex.build(g, ["a"] * 10, backend="annoy")
    with pytest.raises(RlqError, match="NaN"):
        GalleryIndex.build(np.full((2, 4), np.nan, np.float32), ["a", "b"])
    idx = GalleryIndex.build(g, [str(i) for i in range(10)])
    with pytest.raises(RlqError, match="5-d but the gallery features are 4-d"):
        idx.search(np.zeros((1, 5), np.float32), 3)
    other = tmp_path / "not_an_index"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(RlqError, match="not a gallery index folder"):
        idx.save(other)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(CheckpointError, match="not a gallery index folder"):
        GalleryIndex.load(other)
    d = idx.save(tmp_path / "idx")
    (d / "index.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not an rlq gallery index"):
        GalleryIndex.load(d)
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss were not installed
    with pytest.raises(RlqError, match=r"rlq\[faiss\]"):
        GalleryIndex.build(g, [str(i) for i in range(10)], backend="faiss")


def _npy_data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def _flip(path: Path, offset: int, mask: int = 0x40) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= mask
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_saved_index_refuses_a_flipped_byte(tmp_path, backend):
    """One flipped byte in features.npy (here an exponent bit: row 0 gets a norm far above 1, a "cosine" way
    above 1 at rank 1) or in faiss.index is refused on load, naming the file and the rebuild command."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    from rlq.io import sha256_file

    g = unit_rows(50, 8, 0)
    d = GalleryIndex.build(g, [f"k{i}" for i in range(50)], backend=backend,
                           meta={"features_file": "/feats/g.npz", "split": "gallery"}).save(tmp_path / "idx")
    info = json.loads((d / "index.json").read_text())
    assert info["version"] == 2 and info["features"] == {"shape": [50, 8], "dtype": "float32", "l2_normalised": True}
    names = ["features.npy", "faiss.index"] if backend == "faiss" else ["features.npy"]
    assert sorted(info["files"]) == sorted(names)
    for n in names:
        assert info["files"][n] == {"sha256": sha256_file(d / n), "size": (d / n).stat().st_size}
    assert len(GalleryIndex.load(d)) == 50
    for n in names:
        clean = (d / n).read_bytes()
        off = _npy_data_offset(d / n) + 3 if n == "features.npy" else len(clean) // 2
        _flip(d / n, off)
        with pytest.raises(CheckpointError, match=rf"{n} does not match its SHA-256 in index.json.*rlq search --gallery "
                                                  rf"/feats/g.npz --split gallery .*--save-index {d}"):
            GalleryIndex.load(d)
        with pytest.raises(CheckpointError, match=n):  # whichever backend the caller asks for
            GalleryIndex.load(d, backend="exact")
        (d / n).write_bytes(clean[:-1])  # truncated
        with pytest.raises(CheckpointError, match=rf"{n} is {len(clean) - 1} bytes, index.json records {len(clean)}"):
            GalleryIndex.load(d)
        (d / n).write_bytes(clean)
    assert len(GalleryIndex.load(d)) == 50
    # the record itself (keys, paths, meta) is covered too: a changed key is refused
    (d / "index.json").write_text((d / "index.json").read_text().replace('"k7"', '"k8"'))
    with pytest.raises(CheckpointError, match="index.json does not match its own checksum"):
        GalleryIndex.load(d)


def test_saved_index_from_the_cli_names_the_rebuild_command(tmp_path):
    g = unit_rows(6, 4, 1)
    d = GalleryIndex.build(g, [str(i) for i in range(6)]).save(tmp_path / "idx")
    _flip(d / "features.npy", _npy_data_offset(d / "features.npy") + 3)
    from rlq.cli.deploy import _load_gallery

    with pytest.raises(CheckpointError, match=r"features.npy does not match .*`rlq search --gallery FEATURES.npz "):
        _load_gallery(d, None, None)


def _as_version_1(d: Path) -> None:
    """Rewrite an index folder's index.json as the previous version wrote it (no checksums)."""
    info = json.loads((d / "index.json").read_text())
    for k in ("files", "features", "record_sha256"):
        info.pop(k)
    (d / "index.json").write_text(json.dumps({**info, "version": 1}))


def test_index_without_checksums_loads_with_a_warning_and_sane_features_only(tmp_path, caplog):
    g = unit_rows(20, 8, 2)
    d = GalleryIndex.build(g, [str(i) for i in range(20)]).save(tmp_path / "idx")
    _as_version_1(d)
    with caplog.at_level("WARNING", logger="rlq.deploy.search"):
        back = GalleryIndex.load(d)
    np.testing.assert_array_equal(back.features, g)
    assert "before rlq recorded checksums" in caplog.text and "--save-index" in caplog.text
    clean = (d / "features.npy").read_bytes()
    off = _npy_data_offset(d / "features.npy")
    _flip(d / "features.npy", off + 4 * 8 * 3 + 3)  # row 3: an exponent bit, the norm leaves 1
    with pytest.raises(CheckpointError, match=r"features.npy row 3 has L2 norm .* corrupted; rebuild the index"):
        GalleryIndex.load(d)
    b = bytearray(clean)
    b[off + 4 * 8 * 5 : off + 4 * 8 * 5 + 4] = np.array([np.nan], np.float32).tobytes()  # row 5: NaN
    (d / "features.npy").write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match=r"features.npy has NaN or infinite values \(row 5\); rebuild"):
        GalleryIndex.load(d)
    # a re-save writes version 2 (the rebuild the message asks for)
    GalleryIndex.build(g, [str(i) for i in range(20)]).save(d)
    assert json.loads((d / "index.json").read_text())["version"] == 2


def test_index_of_unnormalised_features_round_trips(tmp_path):
    g = 3 * unit_rows(10, 4, 3)  # allowed (with a warning); recorded, so loading does not call it corruption
    d = GalleryIndex.build(g, [str(i) for i in range(10)]).save(tmp_path / "idx")
    assert json.loads((d / "index.json").read_text())["features"]["l2_normalised"] is False
    np.testing.assert_array_equal(GalleryIndex.load(d).features, g)


# ---------------------------------------------------------------- HTML


def test_html_escapes_keys_and_links_thumbnails(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(make_image(0, 40, 20)).save(img)
    evil = '<script>alert("x")</script>.png'
    idx = GalleryIndex.build(unit_rows(2, 4, 0), [evil, 'b&"c\'.png'], paths=[str(img), str(tmp_path / "gone.png")])
    out = tmp_path / "res<1>.html"
    thumbs = write_search_html(out, ["<q>.png"], [str(img)], np.array([[0.9, 0.5]], np.float32),
                               np.array([[0, 1]]), idx, info={"checkpoint": "<b>ck</b>"})
    page = out.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.png" in page
    assert "&lt;q&gt;.png" in page and "&lt;b&gt;ck&lt;/b&gt;" in page and "b&amp;&quot;c&#x27;.png" in page
    assert thumbs == tmp_path / "res<1>_files"
    assert 'src="res%3C1%3E_files/q00000.jpg"' in page and 'src="res%3C1%3E_files/g0000000.jpg"' in page
    assert (thumbs / "q00000.jpg").is_file() and (thumbs / "g0000000.jpg").is_file()
    assert Image.open(thumbs / "g0000000.jpg").height == 128
    assert "no image" in page  # the missing gallery image gets a placeholder, not a crash
    assert "0.9000" in page and "#2" in page


# ---------------------------------------------------------------- CLI




def test_cli_search_end_to_end(tmp_path, capsys):
    ck = save_model_checkpoint(tiny_model(seed=5), tmp_path / "ck", input_size=(H, W))
    gal = tmp_path / "gallery"
    (gal / "cam1").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(make_image(100 + i, 90, 45)).save(gal / "cam1" / f"p{i}.png")
    query = tmp_path / "query.png"
    Image.fromarray(make_image(7, 90, 45)).save(query)
    evil = "<script>alert(1)</script>.png"  # a folder "<script>alert(1)<" holding "script>.png"
    (gal / evil).parent.mkdir()
    shutil.copy(query, gal / evil)  # the query's own duplicate, under another (hostile) name
    feats = tmp_path / "g.npz"
    assert run_cli(["extract", str(ck), "--images", str(gal), "--out", str(feats), "--workers", "0"]) == 0

    html_out, js = tmp_path / "out" / "result.html", tmp_path / "r.json"
    assert run_cli(["search", "--gallery", str(feats), "--query", str(query), "--top-k", "3", "--out", str(html_out),
                    "--json", str(js), "--save-index", str(tmp_path / "index")]) == 0
    res = json.loads(js.read_text())
    hits = res["queries"][0]["results"]
    assert len(hits) == 3 and hits[0]["key"] == evil and hits[0]["score"] > 0.9999
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert res["checkpoint"] == str(ck)
    page = html_out.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page
    assert (tmp_path / "out" / "result_files" / "q00000.jpg").is_file()
    assert "gallery key" in capsys.readouterr().out

    # the saved index gives the same answer; a folder of queries works too
    js2 = tmp_path / "r2.json"
    qdir = tmp_path / "queries"
    qdir.mkdir()
    shutil.copy(query, qdir / "q.png")
    assert run_cli(["search", "--gallery", str(tmp_path / "index"), "--query", str(qdir), "--top-k", "3",
                    "--out", str(tmp_path / "r2.html"), "--json", str(js2)]) == 0
    assert json.loads(js2.read_text())["queries"][0]["results"] == hits

    # the same weights under another folder are accepted; different weights are refused unless --force
    ck_copy = tmp_path / "ck_copy"
    shutil.copytree(ck, ck_copy)
    args = ["search", "--gallery", str(feats), "--query", str(query), "--out", str(tmp_path / "r3.html")]
    assert run_cli([*args, "--checkpoint", str(ck_copy)]) == 0
    ck2 = save_model_checkpoint(tiny_model(seed=6), tmp_path / "ck2", input_size=(H, W))
    capsys.readouterr()
    assert run_cli([*args, "--checkpoint", str(ck2)]) == 2
    assert "not comparable" in capsys.readouterr().err.replace("\n", " ")
    assert run_cli([*args, "--checkpoint", str(ck2), "--force"]) == 0
    # retrained at the same path: the recorded path still exists, but the weights' content differs -> refused,
    # for the features file and the saved index alike, with or without --checkpoint
    save_model_checkpoint(tiny_model(seed=7), ck, input_size=(H, W))
    for gallery in (feats, tmp_path / "index"):
        for extra in ([], ["--checkpoint", str(ck)]):
            capsys.readouterr()
            assert run_cli(["search", "--gallery", str(gallery), "--query", str(query), "--out",
                            str(tmp_path / "r4.html"), *extra]) == 2
            assert "retrained or altered" in capsys.readouterr().err.replace("\n", " ")
    # a gallery folder that is not an index, and a missing query
    assert run_cli(["search", "--gallery", str(gal), "--query", str(query), "--out", str(tmp_path / "x.html")]) == 2
    assert run_cli(["search", "--gallery", str(feats), "--query", str(tmp_path / "nope.png"),
                    "--out", str(tmp_path / "x.html")]) == 2


def test_cli_search_faiss_backend(tmp_path):
    pytest.importorskip("faiss")
    ck = save_model_checkpoint(tiny_model(seed=5), tmp_path / "ck", input_size=(H, W))
    gal = tmp_path / "gallery"
    gal.mkdir()
    for i in range(4):
        Image.fromarray(make_image(200 + i, 70, 35)).save(gal / f"g{i}.png")
    feats = tmp_path / "g.npz"
    assert run_cli(["extract", str(ck), "--images", str(gal), "--out", str(feats), "--workers", "0"]) == 0
    out = {}
    for backend in ("exact", "faiss"):
        js = tmp_path / f"{backend}.json"
        assert run_cli(["search", "--gallery", str(feats), "--query", str(gal / "g2.png"), "--top-k", "4", "--backend",
                        backend, "--out", str(tmp_path / f"{backend}.html"), "--json", str(js)]) == 0
        out[backend] = json.loads(js.read_text())["queries"][0]["results"]
    assert [h["key"] for h in out["exact"]] == [h["key"] for h in out["faiss"]] and out["exact"][0]["key"] == "g2.png"
