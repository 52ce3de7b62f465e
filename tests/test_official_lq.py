"""The authors' LQ test protocol (`--LR-MODE/--LR-TYPE`, docs/method.md §12) as `rlq eval --lq official[:KIND]`
and `rlq analyze robustness --official-lq`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from torch import nn

from rlq.errors import ConfigError
from rlq.lq import reference
from rlq.lq.official_test import (
    OFFICIAL_LQ_LABEL,
    OfficialLQTransform,
    official_lq_mix,
    parse_lq_option,
    split_seed,
)

H, W = 64, 32


def _img(seed=0, size=(50, 110)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# The authors' `--dataset-specific` test classes (docs/method.md §5.2): ltcc / last / celeb -> their "ltcc" class
# (pixelation r < 0.33, motion 0.33 <= r <= 0.63, Gaussian r > 0.63); prcc / deepchange -> Gaussian r <= 0.5,
# pixelation r > 0.5; anything else -> their default class (motion r <= 0.5, pixelation r > 0.5).
_LTCC_CLASS = {"pixelation": 0.33, "motion": 0.30, "defocus": 0.37}
_PRCC_CLASS = {"pixelation": 0.5, "motion": 0.0, "defocus": 0.5}
_DEFAULT_CLASS = {"pixelation": 0.5, "motion": 0.5, "defocus": 0.0}


@pytest.mark.parametrize(("dataset", "expected"), [
    ("ltcc", _LTCC_CLASS), ("last", _LTCC_CLASS), ("celebreid", _LTCC_CLASS), ("Celeb-reID", _LTCC_CLASS),
    ("prcc", _PRCC_CLASS), ("deepchange", _PRCC_CLASS), ("market1501", _DEFAULT_CLASS)])
def test_official_mix_per_dataset(dataset, expected):
    mix = official_lq_mix("mix", dataset)
    assert mix.probabilities() == pytest.approx(expected)
    # the thresholds of the authors' comparisons, artifact by artifact
    if expected is _LTCC_CLASS:
        picks = [mix.select(r) for r in (0.0, 0.3299, 0.33, 0.63, 0.6301, 1.0)]
        assert picks == ["pixelation", "pixelation", "motion", "motion", "defocus", "defocus"]


def test_parse_lq_option():
    assert parse_lq_option("official") == parse_lq_option("official:") == "mix"
    assert [parse_lq_option(f"official:{k}") for k in ("mix", "pixelation", "gaussian", "motion")] == [
        "mix", "pixelation", "gaussian", "motion"]
    for bad in ("paper", "official:jpeg"):
        with pytest.raises(ConfigError):
            parse_lq_option(bad)


def test_draws_are_seeded_and_within_the_training_ranges():
    for kind, expected in (("pixelation", {"pixelation"}), ("gaussian", {"defocus"}), ("motion", {"motion"})):
        t = OfficialLQTransform(official_lq_mix(kind, "ltcc"), seed=5)
        draws = [t.draw(i) for i in range(400)]
        assert {a for a, _ in draws} == expected
        for a, p in draws:  # docs/method.md §5.2 `official` (code) ranges
            if a == "pixelation":
                assert 16 <= p[0] <= 63 and p[0] % 1 == 0
            elif a == "defocus":
                assert p[0] in range(5, 22, 2) and 0.1 <= p[1] <= 2.0
            else:
                assert 8 <= p[0] <= 19 and p[1] in range(180)
        again = OfficialLQTransform(official_lq_mix(kind, "ltcc"), seed=5)
        assert all(a == b and np.array_equal(p, q) for (a, p), (b, q) in zip(draws, (again.draw(i) for i in range(400))))
        other = OfficialLQTransform(official_lq_mix(kind, "ltcc"), seed=6)
        assert any(not np.array_equal(p, other.draw(i)[1]) for i, (_, p) in enumerate(draws))
    # `mix` follows the target dataset's training mix
    assert {OfficialLQTransform(official_lq_mix("mix", "ltcc"), 0).draw(i)[0] for i in range(300)} == {"pixelation", "defocus", "motion"}
    assert {OfficialLQTransform(official_lq_mix("mix", "prcc"), 0).draw(i)[0] for i in range(300)} == {"pixelation", "defocus"}
    assert split_seed(0, "query") != split_seed(0, "gallery")


def test_artifact_applied_at_original_resolution():
    img = _img()
    for kind in ("pixelation", "gaussian", "motion"):
        t = OfficialLQTransform(official_lq_mix(kind, "ltcc"), seed=1)
        a, p = t.draw(3)
        got = t(img, 3)
        if a == "pixelation":  # shorter side (50) to s, before the test resize
            want = reference.pixelate(img, int(p[0]))
            assert min(got.size) == int(p[0])
        elif a == "defocus":
            want = reference.defocus(img, int(p[0]), float(p[1]))
        else:
            want = reference.motion_blur(img, int(p[0]), float(p[1]))
        assert got.size == want.size and np.array_equal(np.asarray(got), np.asarray(want))
        if a != "pixelation":
            assert got.size == img.size and not np.array_equal(np.asarray(got), np.asarray(img))


class PixelModel(nn.Module):
    """Features = the input pixels: what the model sees is what the test compares."""

    embed_dim = 3 * H * W

    def embed(self, x, flip=True):
        return nn.functional.normalize(x.flatten(1), dim=1)


def _tiny_dataset(tmp_path):
    from rlq.data.records import Sample

    def split(name, n):
        out = []
        for i in range(n):
            p = tmp_path / f"{name}_{i}.png"
            _img(i + (0 if name == "query" else 100), (40, 90)).save(p)
            out.append(Sample(str(p), i % 3, 0 if name == "query" else 1, 0, p.stem))
        return out

    q, g = split("query", 6), split("gallery", 9)
    return q, g


def test_extraction_degrades_only_with_the_transform_and_is_deterministic(tmp_path):
    from rlq.data.transforms import resize_for_test, to_chw_uint8
    from rlq.evaluation.extract import extract_features

    q, _ = _tiny_dataset(tmp_path)
    paths = [s.path for s in q]
    model = PixelModel()
    clean = extract_features(model, paths, H, W, workers=0, batch_size=4)
    # clean path unchanged: exactly the test resize of the original images
    ref = np.stack([to_chw_uint8(resize_for_test(Image.open(p).convert("RGB"), H, W)).reshape(-1) / 255.0 for p in paths])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(clean, ref, atol=1e-6)
    t = OfficialLQTransform(official_lq_mix("mix", "ltcc"), seed=3)
    lq1 = extract_features(model, paths, H, W, workers=0, batch_size=4, image_transform=t)
    lq2 = extract_features(model, paths, H, W, workers=0, batch_size=2, image_transform=t)
    np.testing.assert_array_equal(lq1, lq2)  # a pure function of (seed, index), not of batching
    assert all(not np.allclose(a, b) for a, b in zip(lq1, clean))


def test_official_lq_evaluate_degrades_query_and_gallery(tmp_path, monkeypatch):
    import rlq.analysis.robustness as R
    import rlq.evaluation.extract as X

    seen = []
    real = X.extract_features

    def spy(model, paths, *a, image_transform=None, **k):
        seen.append((tuple(paths), image_transform))
        return real(model, paths, *a, image_transform=image_transform, **k)

    monkeypatch.setattr(X, "extract_features", spy)  # official_lq_evaluate runs rlq.engine.evaluate.evaluate_model
    q, g = _tiny_dataset(tmp_path)
    ds = _as_dataset(q, g)
    rep = R.official_lq_evaluate(PixelModel(), ds, kinds=("mix", "motion"), seed=0, height=H, width=W)
    assert set(rep["results"]) == {"official_lq:mix", "official_lq:motion"}
    assert rep["protocol_label"] == OFFICIAL_LQ_LABEL and rep["degraded_splits"] == ["query", "gallery"]
    assert len(seen) == 4 and all(t is not None for _, t in seen)  # both splits, both kinds, always degraded
    assert {p for p, _ in seen} == {tuple(s.path for s in q), tuple(s.path for s in g)}
    m = rep["results"]["official_lq:motion"]
    assert m["mix"]["motion"] == 1.0 and 0.0 <= m["metrics"]["general"]["rank1"] <= 1.0


def _as_dataset(q, g):
    from rlq.data.records import Dataset, EvalSpec, Protocol

    proto = Protocol(specs=(EvalSpec("general", "query", "gallery", "general"),), selection="general")
    return Dataset(name="ltcc", root=".", splits={"query": tuple(q), "gallery": tuple(g), "train": ()},
                   protocols={"test": proto}, num_train_pids=0, num_train_clothes=0, pid2clothes=np.zeros((0, 0), bool))


def test_cli_eval_lq_official_on_synthcc(synthcc_tiny, tmp_path, one_thread):
    from rlq.cli import main
    from rlq.engine.model_io import save_model_checkpoint
    from rlq.models import build_model

    ck = save_model_checkpoint(build_model(method="bm", num_ids=8, backbone="tiny", seed=1), tmp_path / "ck",
                               input_size=(H, W))

    def run(args):
        try:
            main(args)
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    common = [str(ck), "--dataset", "synthcc", "--root", str(synthcc_tiny), "--workers", "0", "--device", "cpu"]
    assert run(["eval", *common, "--lq", "official", "--json", str(tmp_path / "a.json")]) == 0
    assert run(["eval", *common, "--lq", "official", "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["lq_protocol"] == "official_lq:mix" and a["protocol_label"] == OFFICIAL_LQ_LABEL
    assert a["official_lq:mix"] == b["official_lq:mix"]  # seeded
    assert run(["eval", *common, "--json", str(tmp_path / "clean.json")]) == 0
    clean = json.loads((tmp_path / "clean.json").read_text())
    assert "results" in clean and "lq_protocol" not in clean
    # the clean evaluation adds clean/LQ query rows (SynthCC knows each image's quality); the protocol rows match
    assert {k for k in clean["results"] if "/" not in k} == set(a["official_lq:mix"])
    assert run(["eval", *common, "--lq", "official:jpeg"]) == 2
    out = tmp_path / "rob"
    assert run(["analyze", "robustness", *common, "--artifacts", "jpeg", "--levels", "0", "--official-lq", "mix",
                "--out", str(out)]) == 0
    rob = json.loads((out / "robustness.json").read_text())
    off = rob["official_lq"]
    assert off["protocol_label"] == OFFICIAL_LQ_LABEL and rob["protocol_label"] != OFFICIAL_LQ_LABEL
    # same protocol, same seed; both add intervals with the default resamples and bootstrap seed
    assert off["models"]["ck"]["results"]["official_lq:mix"]["metrics"] == a["official_lq:mix"]
    assert OFFICIAL_LQ_LABEL in (out / "report.md").read_text()


def test_cli_eval_lq_official_prints_intervals_and_modes(synthcc_tiny, tmp_path, one_thread, capsys):
    """`rlq eval --lq official` prints R1 / mAP with 95 % bootstrap intervals (as its --help says) and each
    evaluation's mode, explains the `*`, and writes the intervals to --json."""
    from cli_helpers import run_cli
    from rlq.engine.model_io import save_model_checkpoint
    from rlq.models import build_model

    ck = save_model_checkpoint(build_model(method="bm", num_ids=8, backbone="tiny", seed=1), tmp_path / "ck",
                               input_size=(H, W))
    capsys.readouterr()
    assert run_cli(["eval", str(ck), "--dataset", "synthcc", "--root", str(synthcc_tiny), "--workers", "0",
                    "--device", "cpu", "--lq", "official", "--resamples", "50", "--json", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr()
    a = json.loads((tmp_path / "a.json").read_text())
    m = a["official_lq:mix"]["cc"]
    lo, hi = m["rank1_ci"]
    assert lo <= m["rank1"] <= hi and a["confidence_intervals"]["resamples"] == 50
    assert f"{100 * m['rank1']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in printed.out
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in printed.out.splitlines()
            if line.startswith("| ") and "---" not in line and not line.startswith("| eval")}
    assert rows == {"general": "general", "cc*": "cc", "sc": "sc"}
    assert "cc*: the protocol's selection" in printed.out and "95 % percentile bootstrap" in printed.err
