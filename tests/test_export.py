"""ONNX export: parity with PyTorch on real (test-written) images at batch sizes 1 and 3 and a dynamic batch,
no file left behind on a failed check, the model card's content, and the `rlq export` CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rlq.deploy import FeatureExtractor
from rlq.engine.model_io import save_model_checkpoint
from rlq.errors import RlqError
from rlq.export import build_model_card, responsible_use_text
from rlq.export.onnx import export_onnx, model_card_path, synthetic_check_images  # imports onnx only when called
from rlq.models import build_model

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


H, W = 64, 32


def tiny_model(method: str = "bm", seed: int = 0):
    kw = {"pose_clusters": 3} if method in ("cap", "rlq") else {}
    return build_model(method=method, num_ids=5, backbone="tiny", pretrained="none", seed=seed, **kw).eval()



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    paths = []
    for i, im in enumerate(synthetic_check_images(5, seed=11)):
        p = root / f"im{i}.png"
        im.save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def exported(tmp_path_factory, image_paths):
    model = tiny_model("rlq")  # CAP/TAD parts are training-only: the export holds trunk + CAL/BOT branches
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    res = export_onnx(model, out, input_size=(H, W), check_images=image_paths[:3])
    return model, out, res


def test_onnx_parity_on_real_images_and_dynamic_batch(exported, image_paths):
    model, out, res = exported
    p = res["parity"]
    assert p["passed"] and p["batch_sizes"] == [1, 3] and p["num_images"] == 3 and p["images"] == "given"
    assert p["max_l2_diff"] <= 1e-4 and p["max_abs_diff"] <= 1e-4 and p["min_cosine"] >= 1 - 1e-4
    assert out.is_file() and res["onnx"] == str(out) and res["embed_dim"] == model.embed_dim
    # independent check: onnxruntime on all 5 images, batch sizes 1, 3 and 5, vs the PyTorch FeatureExtractor
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"] and [o.name for o in sess.get_outputs()] == ["features"]
    fe = FeatureExtractor(model, device="cpu", input_size=(H, W))
    x = np.stack([np.asarray(Image.open(q).convert("RGB").resize((W, H), Image.BILINEAR)) for q in image_paths])
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    ref = fe(image_paths).numpy()
    for b in (1, 3, 5):
        got = np.concatenate([sess.run(["features"], {"images": x[i : i + b]})[0] for i in range(0, 5, b)])
        assert got.shape == ref.shape
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert (got * ref).sum(1).min() >= 1 - 1e-4 and np.abs(got - ref).max() <= 1e-4
    meta = {m.key: m.value for m in __import__("onnx").load(str(out)).metadata_props}
    assert meta["input_height"] == str(H) and meta["flip"] == "true" and meta["method"] == "rlq"


def test_failed_parity_leaves_no_file(tmp_path, monkeypatch):
    import rlq.export.onnx as onnx_mod

    real = onnx_mod._onnx_features

    def corrupted(session, x):  # simulate a broken export: features off by 1e-3
        y = real(session, x)
        return y + 1e-3 * np.sign(y)

    monkeypatch.setattr(onnx_mod, "_onnx_features", corrupted)
    out = tmp_path / "bad.onnx"
    with pytest.raises(RlqError, match="parity check failed.*nothing was written"):
        export_onnx(tiny_model(), out, input_size=(H, W))
    assert list(tmp_path.iterdir()) == []  # no model, no card, no temporary file
    # an existing file at the target is left untouched
    out.write_bytes(b"previous model")
    with pytest.raises(RlqError):
        export_onnx(tiny_model(), out, input_size=(H, W))
    assert out.read_bytes() == b"previous model" and not model_card_path(out).exists()


def test_model_card_sections_from_a_run_folder(tmp_path):
    run = tmp_path / "run"
    spec = {"method": "rlq", "preset": "official",
            "data": {"dataset": "ltcc", "batch_size": 32, "num_instances": 4, "recolor": True, "pose_column": "R_LA_15"},
            "model": {"backbone": "tiny", "pretrained": "none", "split": "layer2", "pose_clusters": 3},
            "optim": {"lr": 3.5e-4, "weight_decay": 5e-4, "milestones": [20, 40]},
            "train": {"epochs": 60, "seed": 1, "amp": "off"},
            "tad": {"variant": "tad", "external_dataset": "celebreid", "teacher": "/teacher"}}
    save_model_checkpoint(tiny_model("rlq"), run / "checkpoints" / "best", input_size=(H, W), dataset="ltcc",
                          spec=spec, selected_on="test", epoch=39, num_train_ids=77, num_train_clothes=256)
    cc = {"rank1": 0.464, "rank5": 0.6, "mAP": 0.215, "num_valid_queries": 493, "num_queries": 493}
    (run / "results.json").write_text(json.dumps({
        "method": "rlq", "dataset": "ltcc", "preset": "official", "selection_metric": "cc",
        "test@best_test": {"epoch": 39, "selected_on": "test", "results": {"cc": cc}},
        "test@last": {"epoch": 59, "results": {"cc": {**cc, "rank1": 0.43}}},
        "test@best_val": None,
        "official": {"rank1": 0.464, "mAP_max_over_evaluations": 0.219},
    }))
    res = export_onnx(run, tmp_path / "m.onnx")  # a run folder: checkpoints/best, input size from the checkpoint
    assert res["input_size"] == [H, W] and res["results_json"] == str(run / "results.json")
    card = (tmp_path / "m.onnx.model-card.md").read_text()
    for needle in ("# Model card: rlq tiny on ltcc", "## Model details", "RLQ = Base Model + CAP + TAD", "N x 3 x 64 x 32",
                   "## Training data", "| Dataset | ltcc |", "| Preset | official |", "77 / 256", "teacher `/teacher`",
                   "## Metrics", "selected on the test set", "**test@best_test**", "| cc | 46.4 | 60.0 | 21.5 | 493 / 493 |",
                   "**test@last**", "| cc | 43.0 |", "epoch 39", "## Parity check", "passed", "## How to use",
                   "dot product", "L2-normalised", "Prohibited", "surveillance", "consent", "Identifying people",
                   "Bias and limitations", res["sha256"]):
        assert needle in card, needle
    assert "best_val" not in card.split("## Metrics")[1].split("## Parity")[0]  # the absent selection is not shown


def test_model_card_without_run_metadata_and_responsible_text():
    card = build_model_card(onnx_file="x.onnx", method="bm", backbone="resnet50", input_size=(384, 192), embed_dim=8192,
                            flip=True, opset=17, sha256="abc", parity={"passed": True, "max_abs_diff": 1e-7,
                            "max_l2_diff": 2e-7, "min_cosine": 1.0, "criterion": "c", "num_images": 4,
                            "images": "synthetic", "batch_sizes": [1, 3], "provider": "CPU"})
    assert "Unknown: the checkpoint records no dataset" in card and "No evaluation results were found" in card
    text = responsible_use_text()
    assert text.startswith("## Responsible use")
    for needle in ("person re-identification", "consent", "legal basis", "Identifying people", "gender", "Bias"):
        assert needle in text, needle


def test_cli_export_and_no_flip(tmp_path, image_paths, capsys):
    from rlq.cli import main

    model = tiny_model(seed=2)
    ck = save_model_checkpoint(model, tmp_path / "ck", input_size=(H, W))
    out = tmp_path / "nf.onnx"
    folder = tmp_path / "imgs"
    folder.mkdir()
    for q in image_paths[:2]:
        Image.open(q).save(folder / (q.rsplit("/", 1)[1]))
    try:
        main(["export", str(ck), "--onnx", str(out), "--check-images", str(folder), "--no-flip", "--json", str(tmp_path / "e.json")])
    except SystemExit as e:
        assert not e.code
    printed = capsys.readouterr().out
    assert "max L2" in printed and "passed" in printed and f"model card: {out}.model-card.md" in printed.replace("\n", "")
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["flip"] is False and summary["parity"]["num_images"] == 2
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.embed(x, flip=False).numpy()
    np.testing.assert_allclose(sess.run(["features"], {"images": x.numpy()})[0], ref, atol=1e-5)
    # a checkpoint that does not exist: one clear line, exit code 2
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "n.onnx")])
    assert e.value.code == 2 and not (tmp_path / "n.onnx").exists()


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RlqError, match=r"rlq\[export\]"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", input_size=(H, W))
    assert not (tmp_path / "m.onnx").exists()
