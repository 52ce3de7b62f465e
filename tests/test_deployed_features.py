"""Deployed features are the features behind the reported numbers (docs/method.md §2.5).

A tiny SynthCC run trained and evaluated without the flipped image (`eval.flip=false`, as the SynthCC presets):
`rlq eval RUN`, `rlq extract` + `rlq eval FEATURES.npz`, and the ONNX export run through onnxruntime give the
same rank-1 and mAP as the run itself recorded; `rlq.FeatureExtractor`, `rlq search` and `rlq export` default to
the run's flip and precision, `--flip/--no-flip` (Python: ``flip=``) overrides, and every output records both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = ("general", "cc", "sc")


@pytest.fixture(scope="module")
def flipless_run(synthcc_tiny, tmp_path_factory) -> Path:
    """A tiny Base Model run on SynthCC tiny with eval.flip=false and train.amp=off, as the SynthCC presets."""
    from rlq.engine.recipe import run_training
    from test_engine import tiny_spec

    run = tmp_path_factory.mktemp("flipless") / "run"
    run_training(tiny_spec(synthcc_tiny, run, epochs=1, steps=2, eval__flip=False, train__amp="off"))
    return run


def _state(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "best" / "state.json").read_text())


def _eval_json(args: list[str], out: Path) -> dict:
    assert run_cli(["eval", *args, "--resamples", "10", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _pil_embed_reference(model, paths: list[str], h: int, w: int, flip: bool) -> np.ndarray:
    """docs/method.md §2.5 written out: PIL bilinear resize, /255, e(x) (+ e(hflip(x))), one global L2 norm."""
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR)).copy())
                     .permute(2, 0, 1).float() / 255 for p in paths])
    with torch.no_grad():
        e = model(x, "embed")
        if flip:
            e = e + model(torch.flip(x, dims=[3]), "embed")
    return torch.nn.functional.normalize(e, dim=1).numpy()


def test_eval_extract_and_onnx_reproduce_the_runs_numbers(flipless_run, synthcc_tiny, tmp_path):
    """(a) `rlq eval RUN`, (b) `rlq extract` + `rlq eval FEATURES.npz`, (c) the ONNX export's features through
    onnxruntime, evaluated with the same protocol: rank-1 and mAP equal to each other and to the run's own record."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from rlq.data.datasets import load_dataset
    from rlq.evaluation.protocols import features_meta, load_features, save_features

    run, root = flipless_run, synthcc_tiny
    own = _state(run)["results"]  # what the run reported (computed by the trainer with eval.flip=false)
    a = _eval_json([str(run), "--dataset", "synthcc", "--root", str(root), "--workers", "0"], tmp_path / "a.json")
    feats = tmp_path / "f.npz"
    assert run_cli(["extract", str(run), "--dataset", "synthcc", "--root", str(root), "--out", str(feats),
                    "--workers", "0"]) == 0
    meta = features_meta(feats)["extra"]
    assert meta["preprocessing"]["flip"] is False and meta["precision"] == "fp32"
    b = _eval_json([str(feats), "--dataset", "synthcc"], tmp_path / "b.json")

    onnx_path = tmp_path / "m.onnx"
    assert run_cli(["export", str(run), "--onnx", str(onnx_path), "--json", str(tmp_path / "e.json")]) == 0
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert props["flip"] == "false" and props["precision"] == "fp32" and props["flip_source"] == "the run's eval.flip"
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["flip"] is False and summary["precision"] == "fp32"
    # the model card's preprocessing, run through onnxruntime
    h, w = _state(run)["input_size"]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ds = load_dataset("synthcc", root)
    torch_feats, _ = load_features(feats)
    onnx_feats, samples = {}, {}
    for split in ds.protocols["test"].split_names:
        ss = ds.split(split)
        x = np.stack([np.asarray(Image.open(s.path).convert("RGB").resize((w, h), Image.BILINEAR)) for s in ss])
        x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        onnx_feats[split] = np.concatenate([sess.run(["features"], {"images": x[i:i + 32]})[0]
                                            for i in range(0, len(x), 32)])
        samples[split] = ss
        # float rounding between onnxruntime and torch only: the features agree to 1e-5
        np.testing.assert_allclose(onnx_feats[split], np.asarray(torch_feats[split]), rtol=0, atol=1e-5)
    save_features(tmp_path / "onnx.npz", onnx_feats, samples, {"dataset": "synthcc", "root": str(root)})
    c = _eval_json([str(tmp_path / "onnx.npz"), "--dataset", "synthcc"], tmp_path / "c.json")

    assert a["flip"] is False
    for mode in MODES:
        for k in ("rank1", "mAP"):
            assert a["results"][mode][k] == b["results"][mode][k] == c["results"][mode][k], (mode, k)
            assert a["results"][mode][k] == pytest.approx(own[mode][k], abs=1e-9), (mode, k)
    # the flip matters on this set: with it the numbers are not the run's (so the equalities above are not vacuous)
    f = _eval_json([str(run), "--dataset", "synthcc", "--root", str(root), "--workers", "0", "--flip"],
                   tmp_path / "flip.json")
    assert f["flip"] is True and any(f["results"][m]["mAP"] != a["results"][m]["mAP"] for m in MODES)
    # the card lists the numbers the exported model reproduces, and says so
    card = Path(summary["model_card"]).read_text()
    assert "| Flip and precision | flip **off** (the run's `eval.flip`); computed in fp32 |" in card
    assert "which reproduces them" in card and "does not reproduce" not in card
    results = json.loads((run / "results.json").read_text())["test@best_test"]["results"]
    assert f"| cc | {100 * results['cc']['rank1']:.1f} |" in card
    assert results["cc"]["rank1"] == pytest.approx(c["results"]["cc"]["rank1"], abs=1e-9)
    # three ways, the numbers printed here for the record
    print({m: [(r["results"][m]["rank1"], r["results"][m]["mAP"]) for r in (a, b, c)] for m in MODES})


def test_extract_and_feature_extractor_follow_the_run_and_flip_overrides(flipless_run, synthcc_tiny, tmp_path):
    from rlq import FeatureExtractor
    from rlq.data.datasets import load_dataset
    from rlq.engine.model_io import load_model_checkpoint
    from rlq.evaluation.protocols import features_meta, load_features

    run, root = flipless_run, synthcc_tiny
    args = [str(run), "--dataset", "synthcc", "--root", str(root), "--splits", "query", "--workers", "0"]
    assert run_cli(["extract", *args, "--out", str(tmp_path / "d.npz")]) == 0
    assert run_cli(["extract", *args, "--flip", "--out", str(tmp_path / "f.npz")]) == 0
    assert run_cli(["extract", *args, "--no-flip", "--out", str(tmp_path / "n.npz")]) == 0
    d, f, n = (np.asarray(load_features(tmp_path / x)[0]["query"]) for x in ("d.npz", "f.npz", "n.npz"))
    assert features_meta(tmp_path / "d.npz")["extra"]["preprocessing"]["flip"] is False
    assert features_meta(tmp_path / "f.npz")["extra"]["preprocessing"]["flip"] is True
    assert features_meta(tmp_path / "f.npz")["extra"]["precision"] == "fp32"
    np.testing.assert_array_equal(d, n)
    assert np.abs(d - f).max() > 1e-3  # flip on and off are different features

    paths = [s.path for s in load_dataset("synthcc", root).split("query")][:6]
    model, state = load_model_checkpoint(run, device="cpu")
    h, w = state["input_size"]
    ref_off, ref_on = (_pil_embed_reference(model, paths, h, w, fl) for fl in (False, True))
    fe = FeatureExtractor(run, device="cpu")
    assert fe.flip is False and fe.precision == "fp32" and "flip=False" in repr(fe)
    np.testing.assert_allclose(fe(paths).numpy(), ref_off, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fe(paths).numpy(), d[:6], rtol=0, atol=1e-6)
    on = FeatureExtractor(run, device="cpu", flip=True)
    assert on.flip is True
    np.testing.assert_allclose(on(paths).numpy(), ref_on, rtol=0, atol=1e-6)
    assert FeatureExtractor(run, device="cpu", flip=False).flip is False


def test_search_follows_the_gallery_run_and_records_the_settings(flipless_run, synthcc_tiny, tmp_path, capsys):
    from rlq.deploy.search import INDEX_FILE

    run = flipless_run
    gal = synthcc_tiny / "test"  # the gallery split
    feats = tmp_path / "g.npz"
    assert run_cli(["extract", str(run), "--images", str(gal), "--out", str(feats), "--workers", "0"]) == 0
    query = next(iter(sorted((synthcc_tiny / "query").rglob("*.*"))))
    js, page = tmp_path / "r.json", tmp_path / "r.html"
    assert run_cli(["search", "--gallery", str(feats), "--query", str(query), "--top-k", "3", "--out", str(page),
                    "--json", str(js), "--save-index", str(tmp_path / "idx")]) == 0
    res = json.loads(js.read_text())
    assert res["flip"] is False and res["precision"] == "fp32"
    assert res["gallery_features"] == {"flip": False, "precision": "fp32"}
    html = page.read_text()
    assert "query features</b>: flip off, fp32" in html and "gallery features</b>: flip off, fp32" in html
    index_meta = json.loads((tmp_path / "idx" / INDEX_FILE).read_text())["meta"]
    assert index_meta["preprocessing"]["flip"] is False and index_meta["precision"] == "fp32"
    # the queries embedded with the flip do not match this gallery: refused, naming the option that matches it
    capsys.readouterr()
    assert run_cli(["search", "--gallery", str(feats), "--query", str(query), "--out", str(page), "--flip"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "flip=False" in err and "--no-flip" in err and str(feats.name) in err
    # a gallery extracted with --flip is searched with --flip
    fg = tmp_path / "gf.npz"
    assert run_cli(["extract", str(run), "--images", str(gal), "--out", str(fg), "--workers", "0", "--flip"]) == 0
    assert run_cli(["search", "--gallery", str(fg), "--query", str(query), "--out", str(page), "--flip",
                    "--json", str(js)]) == 0
    assert json.loads(js.read_text())["flip"] is True


def test_export_flip_override_is_recorded_and_the_card_says_it_does_not_reproduce(flipless_run, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from rlq.engine.model_io import load_model_checkpoint

    out = tmp_path / "f.onnx"
    assert run_cli(["export", str(flipless_run), "--onnx", str(out), "--flip"]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["flip"] == "true" and props["run_eval_flip"] == "false" and props["flip_source"] == "set at export"
    card = Path(str(out) + ".model-card.md").read_text()
    assert "flip **on** (the run evaluated with flip off)" in card and "does not reproduce the numbers below" in card
    model, state = load_model_checkpoint(flipless_run, device="cpu")
    h, w = state["input_size"]
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        on, off = model.embed(x, flip=True).numpy(), model.embed(x, flip=False).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["features"], {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, on, atol=1e-5)
    assert np.abs(got - off).max() > 1e-3


def test_every_embedding_command_has_the_same_flip_option():
    """One `--flip/--no-flip` (rlq.cli._common.flip_option): same flags, default None (= the run's), same help."""
    import typer.main

    from rlq.cli._common import FLIP_HELP, app  # importing rlq.cli registers every command

    root = typer.main.get_command(app)
    found = {}
    for path in (["eval"], ["extract"], ["search"], ["export"], ["visualize"], ["analyze", "robustness"],
                 ["analyze", "lq-clusters"], ["analyze", "gender"], ["analyze", "buckets"]):
        cmd = root
        for p in path:
            cmd = cmd.commands[p]
        opt = next(o for o in cmd.params if o.name == "flip")
        found[" ".join(path)] = (tuple(opt.opts), tuple(opt.secondary_opts), opt.default, opt.help)
    assert set(found.values()) == {(("--flip",), ("--no-flip",), None, FLIP_HELP)}, found
