"""The method registry (rlq.methods, docs/design.md "Adding a method").

A toy method defined and registered in this file only (the Base Model plus one extra loss term, its own strategy
class) trains, evaluates and exports through the Python API and through the CLI, with no other module changed for
it; duplicates and unknown names are refused clearly, and every shipped preset names a registered method.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from cli_helpers import run_cli
from rlq.errors import ConfigError
from rlq.methods import MethodEntry, ModelParts, get_method, method_names, register_method, unregister_method
from rlq.methods.base import MAIN
from rlq.methods.reid import ReIDMethod

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = ("cal", "bm", "bm+g", "bm+p", "cap", "tad", "rlq")
TOY = "toy-bm"
#: Bookkeeping keys of a metrics.jsonl training line (the rest are loss terms).
NOT_LOSSES = {"type", "epoch", "phase", "step", "lr", "img_per_s", "data_s", "step_s", "loss"}
TINY = ["data.height=64", "data.width=32", "data.batch_size=8", "data.workers=0", "data.cache_images=true",
        "model.backbone=tiny", "model.pretrained=none", "train.epochs=2", "train.eval_every=1",
        "train.max_steps_per_epoch=2", "train.progress=false", "train.tensorboard=false", "train.log_every=1",
        "eval.workers=0", "eval.bootstrap_resamples=50", "loss.start_epoch_cc=1", "loss.start_epoch_adv=1"]


class ToyMethod(ReIDMethod):
    """The Base Model step plus a term tying the two ID heads' cross-entropies: 0.5 * |CE_CAL - CE_BOT|."""

    def reid_step(self, batch, ctx):
        for out in super().reid_step(batch, ctx):
            if out.optimizer == MAIN:
                out.losses["toy"] = 0.5 * (out.losses["id_cal"] - out.losses["id_bot"]).abs()
            yield out


@pytest.fixture
def toy():
    """The toy method, registered for one test and removed after it."""
    entry = register_method(MethodEntry(TOY, "Toy: Base Model + |CE_CAL - CE_BOT| (a test's method)", ModelParts(),
                                        strategy=ToyMethod, losses=(*get_method("bm").losses, "toy")))
    yield entry
    unregister_method(TOY)
    assert TOY not in method_names()


def _logged_losses(run: Path) -> set[str]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {k for d in lines if d["type"] == "train" for k in d} - NOT_LOSSES


def _check_card(card: Path, entry: MethodEntry) -> None:
    text = card.read_text()
    assert f"| Method | {entry.description} (`{entry.name}`) |" in text and "[f_CAL, f_BOT]" in text


def test_shipped_methods_are_registered_in_order():
    assert method_names()[: len(SHIPPED)] == SHIPPED
    rlq, cal, tad = get_method("rlq"), get_method("cal"), get_method("tad")
    assert rlq.parts == ModelParts(bot_branch=True, pose_branch=True, gender_head=True) and rlq.needs_teacher
    assert cal.parts == ModelParts(bot_branch=False) and not cal.needs_external
    assert tad.parts == get_method("bm").parts and tad.needs_external and tad.strategy_class().__name__ == "TADMethod"
    assert get_method("cap").strategy_class() is ReIDMethod and "toy" not in rlq.losses
    assert {"distill", "ss_kl"} <= set(tad.losses) and "pose" not in tad.losses and "gender" in get_method("bm+g").losses


def test_the_toy_method_trains_evaluates_and_exports_from_python(toy, synthcc_tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    from rlq import export_onnx, run_training
    from rlq.data.datasets import load_dataset
    from rlq.engine.model_io import load_model_checkpoint
    from rlq.evaluation.extract import extract_features
    from rlq.evaluation.protocols import evaluate_protocol
    from rlq.spec import (
        DataSpec,
        EvalSpec_,
        LossSpec,
        ModelSpec,
        RunSpec,
        TrainSpec,
    )

    run = tmp_path / "run"
    spec = RunSpec(  # no YAML (docs/design.md boundary 1)
        method=TOY, output=str(run),
        data=DataSpec(dataset="synthcc", root=str(synthcc_tiny), height=64, width=32, batch_size=8, workers=0,
                      cache_images=True),
        model=ModelSpec(backbone="tiny", pretrained="none"), loss=LossSpec(start_epoch_cc=1, start_epoch_adv=1),
        train=TrainSpec(epochs=2, eval_every=1, max_steps_per_epoch=2, progress=False, tensorboard=False, log_every=1),
        eval=EvalSpec_(workers=0, bootstrap_resamples=50),
    )
    report = run_training(spec)
    assert report["test@last"]["epoch"] == 1
    logged = _logged_losses(run)
    assert "toy" in logged and logged <= set(toy.losses)  # its step ran, and logs only terms of its loss schema
    state = json.loads((run / "checkpoints" / "best" / "state.json").read_text())
    assert state["method"] == TOY and state["model_args"]["method"] == TOY

    model, state = load_model_checkpoint(run)  # rebuilt from the registry entry's parts
    assert (model.has_bot, model.has_pose, model.has_gender) == (True, False, False) and model.method == TOY
    ds = load_dataset("synthcc", synthcc_tiny)
    protocol = ds.protocols["test"]
    feats = {n: (extract_features(model, [s.path for s in ds.split(n)], 64, 32, batch_size=spec.eval.batch_size,
                                  workers=0, flip=spec.eval.flip, progress=False), ds.split(n))
             for n in protocol.split_names}
    res = evaluate_protocol(feats, protocol)
    best = report["test@best_test"]["results"]["cc"]
    assert res["cc"]["rank1"] == pytest.approx(best["rank1"]) and res["cc"]["mAP"] == pytest.approx(best["mAP"])

    exp = export_onnx(run, tmp_path / "toy.onnx")
    assert exp["method"] == TOY and exp["parity"]["passed"]
    _check_card(tmp_path / "toy.onnx.model-card.md", toy)


def test_the_toy_method_trains_evaluates_and_exports_from_the_cli(toy, synthcc_tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert run_cli(["train", "--config", "configs/synthcc/bm.yaml", f"method={TOY}", f"data.root={synthcc_tiny}",
                    f"output={run}", *TINY]) == 0
    assert "toy" in _logged_losses(run) and yaml.safe_load((run / "config.yaml").read_text())["method"] == TOY
    assert run_cli(["eval", str(run), "--workers", "0", "--resamples", "50", "--json", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())["results"]
    best = json.loads((run / "checkpoints" / "best" / "state.json").read_text())["results"]
    assert ev["cc"]["rank1"] == pytest.approx(best["cc"]["rank1"])
    out = tmp_path / "toy.onnx"
    assert run_cli(["export", str(run), "--onnx", str(out), "--json", str(tmp_path / "export.json")]) == 0
    assert json.loads((tmp_path / "export.json").read_text())["method"] == TOY
    _check_card(Path(f"{out}.model-card.md"), toy)


def test_a_duplicate_name_is_refused_unless_replaced(toy):
    again = dataclasses.replace(toy, description="another toy")
    with pytest.raises(ConfigError, match=r"'toy-bm' is already registered.*replace=True"):
        register_method(again)
    with pytest.raises(ConfigError, match="already registered"):
        register_method(dataclasses.replace(get_method("bm")))
    assert get_method(TOY).description == toy.description
    assert register_method(again, replace=True) is again and get_method(TOY) is again
    assert method_names().count(TOY) == 1


def test_entries_are_checked():
    with pytest.raises(ConfigError, match="needs_external"):
        MethodEntry("x", "x", needs_teacher=True)
    with pytest.raises(ConfigError, match="bot_branch"):
        ModelParts(bot_branch=False, pose_branch=True)
    with pytest.raises(ConfigError, match="from_run"):
        MethodEntry("x", "x", strategy=object)
    with pytest.raises(ConfigError, match="method name"):
        MethodEntry("Has Space", "x")
    with pytest.raises(ConfigError, match="distinct"):
        MethodEntry("x", "x", losses=("a", "a"))


def test_unknown_method_names_the_registered_ones_closest_first():
    with pytest.raises(ConfigError) as e:
        get_method("rlqq")
    msg = str(e.value)
    assert "'rlqq'" in msg and "did you mean 'rlq'" in msg
    listed = msg.split("(closest first): ")[1].split(" (")[0].split(", ")
    assert listed[0] == "rlq" and sorted(listed) == sorted(method_names())
    with pytest.raises(ConfigError, match="unknown method"):
        unregister_method("rlqq")
    from rlq.models import build_model

    with pytest.raises(ConfigError, match="did you mean 'bm'"):
        build_model(method="bmm", num_ids=3, backbone="tiny")


def test_an_unknown_method_in_a_config_is_refused_before_any_work(synthcc_tiny, tmp_path, capsys, monkeypatch):
    from omegaconf import OmegaConf

    from rlq.config import load_config
    from rlq.engine import recipe
    from rlq.spec import RunSpec

    monkeypatch.setattr(recipe, "load_dataset", lambda *a, **k: pytest.fail("the data was read"))
    run = tmp_path / "run"
    ov = ["method=rlqq", f"data.root={synthcc_tiny}", f"output={run}", *TINY]
    spec = OmegaConf.to_object(load_config("configs/synthcc/bm.yaml", ov, schema=RunSpec))
    with pytest.raises(ConfigError, match=r"method='rlqq': choose one of cal, bm, .*\(closest: rlq"):
        recipe.run_training(spec)
    assert run_cli(["train", "--config", "configs/synthcc/bm.yaml", *ov]) == 2
    assert "closest: rlq" in capsys.readouterr().err
    assert not run.exists()


def test_an_unregistered_method_is_refused_again(toy, synthcc_tiny, tmp_path, capsys):
    ov = ["--config", "configs/synthcc/bm.yaml", f"method={TOY}", f"data.root={synthcc_tiny}", *TINY, "--dry-run"]
    assert run_cli(["train", *ov]) == 0
    unregister_method(TOY)
    try:
        capsys.readouterr()
        assert run_cli(["train", *ov]) == 2
        assert f"method='{TOY}': choose one of" in capsys.readouterr().err
    finally:
        register_method(toy)  # the fixture removes it


def test_every_shipped_preset_names_a_registered_method():
    from rlq.config import PACKAGE_CONFIGS, load_config

    presets = [p for p in sorted(PACKAGE_CONFIGS.rglob("*.yaml")) if "_base_" not in p.parts]
    assert len(presets) > 60
    named = set()
    for p in presets:
        method = load_config(p).get("method", "bm")  # with its bases; RunSpec's default otherwise
        assert method in method_names(), f"{p}: method {method!r} is not registered"
        named.add(method)
        if p.parent.name == "methods":  # tools/make_presets.py heads them with the registry's description
            assert get_method(method).description in p.read_text(encoding="utf-8").splitlines()[0], p
    assert named == set(SHIPPED)


def test_model_parts_come_from_the_registry():
    from rlq.models import build_model

    for name in SHIPPED:
        parts = get_method(name).parts
        m = build_model(method=name, num_ids=3, pose_clusters=2 if parts.pose_branch else None, backbone="tiny")
        assert (m.has_bot, m.has_pose, m.has_gender) == (parts.bot_branch, parts.pose_branch, parts.gender_head)
        assert (m.bot_branch is None) != parts.bot_branch and (m.pose_head is None) != parts.pose_branch
        assert (m.gender_head is None) != parts.gender_head
        x = torch.rand(2, 3, 64, 32)
        assert m.eval()(x).shape[1] == m.feat_dim * (2 if parts.bot_branch else 1)
