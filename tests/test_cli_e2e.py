"""End-to-end CLI: check-data, train, eval, extract + evaluate, model-info, presets; torchrun on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import run_cli

TINY = ["data.height=64", "data.width=32", "data.batch_size=8", "data.workers=0", "data.cache_images=true",
        "model.backbone=tiny", "model.pretrained=none", "train.epochs=2", "train.eval_every=1",
        "train.max_steps_per_epoch=2", "train.progress=false", "train.tensorboard=false", "eval.workers=0",
        "loss.start_epoch_cc=1", "loss.start_epoch_adv=1"]




def test_train_eval_extract_evaluate(synthcc_tiny, tmp_path, capsys):
    assert run_cli(["check-data", "synthcc", str(synthcc_tiny), "--quick"]) == 0
    run = tmp_path / "run"
    assert run_cli(["train", "--config", "configs/ltcc/bm.yaml", "data.dataset=synthcc", f"data.root={synthcc_tiny}",
                    f"output={run}", "data.gender_csv=null", "data.pose_csv=null", "data.parsing_root=null",
                    "data.faulty_pant=null", "data.faulty_shirt=null", *TINY]) == 0
    for f in ("config.yaml", "meta.json", "metrics.jsonl", "results.json", "checkpoints/best/MANIFEST.json"):
        assert (run / f).exists(), f
    assert "model:" in (run / "config.yaml").read_text() and json.loads((run / "meta.json").read_text())["seed"] == 1
    capsys.readouterr()
    assert run_cli(["eval", str(run), "--dataset", "synthcc", "--root", str(synthcc_tiny), "--workers", "0",
                    "--json", str(tmp_path / "eval.json"), "--per-query", str(tmp_path / "pq.npz")]) == 0
    printed = capsys.readouterr().out
    ev = json.loads((tmp_path / "eval.json").read_text())["results"]
    lo, hi = ev["cc"]["rank1_ci"]
    assert f"{100 * ev['cc']['rank1']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in printed
    assert "cc/LQ" in printed and "cc/clean" in printed
    assert "cc*: the protocol's selection" in printed  # the star explained under the table
    # the run knows its dataset and root: `rlq eval RUN` alone gives the same numbers
    assert run_cli(["eval", str(run), "--workers", "0", "--json", str(tmp_path / "own.json")]) == 0
    own = json.loads((tmp_path / "own.json").read_text())
    assert own["dataset"] == "synthcc" and own["results"] == ev
    feats = tmp_path / "f.npz"
    assert run_cli(["extract", str(run), "--dataset", "synthcc", "--root", str(synthcc_tiny), "--out", str(feats),
                    "--workers", "0"]) == 0
    assert run_cli(["eval", str(feats), "--dataset", "synthcc", "--json", str(tmp_path / "evaluate.json")]) == 0
    ev2 = json.loads((tmp_path / "evaluate.json").read_text())["results"]
    assert set(ev2) == {"general", "cc", "sc"}  # no quality table given: no clean / LQ rows
    assert set(ev) == {*ev2, *(f"{m}/{g}" for m in ev2 for g in ("clean", "LQ"))}  # SynthCC's quality.csv found
    for mode in ev2:  # the same checkpoint, features and protocol give the same numbers both ways
        assert ev[mode]["mAP"] == pytest.approx(ev2[mode]["mAP"], abs=1e-12)
        assert ev[mode]["mAP_ci"] == ev2[mode]["mAP_ci"]
    best = json.loads((run / "checkpoints/best/state.json").read_text())
    assert ev["cc"]["rank1"] == pytest.approx(best["results"]["cc"]["rank1"])
    # paired comparison: the run folder's last evaluation against the same weights' per-query file
    capsys.readouterr()
    assert run_cli(["compare", str(tmp_path / "pq.npz"), str(run), "--selection", "test@best_test", "--eval", "cc",
                    "--json", str(tmp_path / "cmp.json")]) == 0
    cmp = json.loads((tmp_path / "cmp.json").read_text())["differences"][str(run)]["cc"]
    assert cmp["rank1_diff_ci"] == [0.0, 0.0] and cmp["mAP_diff"] == pytest.approx(0.0, abs=1e-6)
    other = tmp_path / "other.npz"
    from rlq.evaluation.bootstrap import load_per_query, save_per_query

    pq = load_per_query(tmp_path / "pq.npz")
    save_per_query(other, {"cc": pq["cc"].subset(slice(1, None))})
    assert run_cli(["compare", str(tmp_path / "pq.npz"), str(other)]) == 2
    assert "different query sets" in capsys.readouterr().err


def test_model_info_table9(capsys):
    assert run_cli(["model-info", "--method", "bm", "--num-ids", "77", "--json"]) == 0
    bm = json.loads(capsys.readouterr().out)
    assert bm["inference_params"] == 45_587_520 and bm["table9_params"] == 45_902_989
    assert run_cli(["model-info", "--method", "cap", "--num-ids", "77", "--pose-clusters", "15", "--json"]) == 0
    cap = json.loads(capsys.readouterr().out)
    assert cap["table9_params"] == 69_259_421 and cap["inference_params"] == 45_587_520


def test_every_shipped_preset_validates():
    from omegaconf import OmegaConf

    from rlq.config import PACKAGE_CONFIGS, load_config
    from rlq.engine.validate import validate_spec
    from rlq.spec import RunSpec

    presets = [p for p in PACKAGE_CONFIGS.rglob("*.yaml") if "_base_" not in p.parts and p.parent.name != "methods"
               and p.parent.name != "datasets"]
    assert len(presets) > 60
    for p in presets:
        validate_spec(OmegaConf.to_object(load_config(p, schema=RunSpec)))


def test_config_errors_are_clear(tmp_path, capsys):
    assert run_cli(["train", "--config", "configs/ltcc/bm.yaml", "train.epoch=3", "--dry-run"]) == 2
    assert "Did you mean" in capsys.readouterr().err
    bad = tmp_path / "cycle.yaml"
    bad.write_text("_base_: cycle.yaml\n")
    assert run_cli(["train", "--config", str(bad), "--dry-run"]) == 2
    assert "cycle" in capsys.readouterr().err
    assert run_cli(["train", "--config", "configs/ltcc/cap.yaml", "data.batch_size=30", "--dry-run"]) == 2
    assert "divisible" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_gloo(synthcc_tiny, tmp_path):
    """2-process DDP on CPU (gloo) over SynthCC tiny: the Base Model with the clothes-head update and L_CAL
    (epoch 1), then TAD with idle pose/gender parameters (find_unused_parameters); only rank 0 writes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def torchrun(run: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rlq.cli",
               "train", "data.dataset=synthcc", f"data.root={synthcc_tiny}", f"output={run}",
               *[t for t in TINY if not t.startswith("train.epochs")], "data.batch_size=4", "train.log_every=1", *extra]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)  # a hang guard only, far above any load
        assert p.returncode == 0, p.stderr[-3000:]

    run = tmp_path / "ddp"
    torchrun(run, "method=bm", "train.epochs=2", "train.keep_last=1")
    ckpts = [c for c in (run / "checkpoints").iterdir() if c.name.startswith("e")]
    assert len(ckpts) == 1
    state = json.loads((ckpts[0] / "state.json").read_text())
    assert state["world_size"] == 2 and state["position"]["epoch"] == 2
    meta = json.loads((run / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["batch_per_replica"] == 4
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("cal" in r and "clothes_ce" in r for r in steps if r["type"] == "train")  # CAL ran under DDP
    run2 = tmp_path / "ddp_tad"
    torchrun(run2, "method=rlq", "train.epochs=1", "tad.variant=kl_only", "tad.external_dataset=folder",
             f"tad.external_root={synthcc_tiny / 'external' / 'train'}", "tad.external_batch_size=4",
             "tad.source_height=64", "tad.source_width=32")
    phases = {json.loads(x).get("phase") for x in (run2 / "metrics.jsonl").read_text().splitlines()}
    assert {"tad", "reid"} <= phases


def test_eval_and_visualize_default_to_the_runs_own_flip(synthcc_tiny, tmp_path):
    """A run trained and evaluated with eval.flip=false: `rlq eval` and `rlq visualize` on it use no flip unless told,
    so they reproduce the run's own numbers; --flip adds the flipped embedding (docs/method.md §2.5)."""
    run = tmp_path / "run"
    assert run_cli(["train", "--config", "configs/ltcc/bm.yaml", "data.dataset=synthcc", f"data.root={synthcc_tiny}",
                    f"output={run}", "data.gender_csv=null", "data.pose_csv=null", "data.parsing_root=null",
                    "data.faulty_pant=null", "data.faulty_shirt=null", "eval.flip=false", *TINY]) == 0
    own = json.loads((run / "checkpoints/best/state.json").read_text())["results"]
    assert all(type(own[m][k]) is int for m in ("general", "cc", "sc") for k in ("num_valid_queries", "num_queries"))
    common = ["--dataset", "synthcc", "--root", str(synthcc_tiny), "--workers", "0", "--resamples", "10"]
    assert run_cli(["eval", str(run), *common, "--json", str(tmp_path / "d.json")]) == 0
    assert run_cli(["eval", str(run), *common, "--flip", "--json", str(tmp_path / "f.json")]) == 0
    d, f = (json.loads((tmp_path / n).read_text()) for n in ("d.json", "f.json"))
    assert d["flip"] is False and f["flip"] is True
    for mode in ("general", "cc", "sc"):
        assert d["results"][mode]["mAP"] == pytest.approx(own[mode]["mAP"], abs=1e-9)
    assert any(f["results"][m]["mAP"] != pytest.approx(own[m]["mAP"], abs=1e-9) for m in ("general", "cc", "sc"))
    vis = tmp_path / "vis"
    from rlq.data.datasets import load_dataset

    bare = load_dataset("synthcc", synthcc_tiny).split("query")[0].key.split("/", 1)[1]
    assert run_cli(["visualize", str(run), *common[:-2], "--queries", bare, "--top-k", "3", "--out", str(vis)]) == 0
    ranked = json.loads((vis / "ranked.json").read_text())
    assert ranked["flip"] is False and [r["query_key"] for r in ranked["rows"]] == [f"query/{bare}"]


def test_run_eval_settings_hand_cases():
    import torch

    from rlq.engine.model_io import run_eval_settings

    cpu = torch.device("cpu")
    assert run_eval_settings({}, cpu) == (True, None)  # no run spec (e.g. imported): flip, fp32 on CPU
    assert run_eval_settings({"spec": {"eval": {"flip": False}, "train": {"amp": "bf16"}}}, cpu) == (False, None)
    assert run_eval_settings({"spec": {"eval": {"flip": True}, "train": {"amp": "off"}}}, cpu) == (True, None)
