"""CLI consistency: help text on every option and argument, one `rlq eval` for checkpoints and features (the old
`rlq evaluate` a hidden, deprecated alias), `-d/-r` in check-data, one --k / --kind vocabulary for poses."""

from __future__ import annotations

import json

import pytest
import typer.main

from rlq.cli import app, main
from cli_helpers import run_cli  # noqa: E402




def _walk(cmd, path: str):
    """(path, command) of a click command and all its subcommands (groups have `.commands`)."""
    yield path, cmd
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_option_and_argument_has_help():
    root = typer.main.get_command(app)
    missing, n = [], 0
    for path, cmd in _walk(root, "rlq"):
        for p in cmd.params:
            if p.name == "help" or getattr(p, "hidden", False):
                continue
            n += 1
            if not (getattr(p, "help", None) or "").strip():
                missing.append(f"{path}: {p.opts[0] if p.opts else p.name}")
    assert n > 150  # the walk reached the subcommands
    assert not missing, "options/arguments without help text:\n" + "\n".join(missing)


def test_every_command_has_a_docstring():
    root = typer.main.get_command(app)
    assert [path for path, cmd in _walk(root, "rlq") if not (cmd.help or "").strip()] == []


def test_evaluate_is_a_hidden_deprecated_alias():
    root = typer.main.get_command(app)
    assert root.commands["evaluate"].hidden and not root.commands["eval"].hidden


def test_check_data_accepts_options_and_positionals(synthcc_tiny, capsys):
    for args in (["synthcc", str(synthcc_tiny)], ["-d", "synthcc", "-r", str(synthcc_tiny)],
                 ["-d", "synthcc", str(synthcc_tiny)], ["--dataset", "synthcc", "--root", str(synthcc_tiny)]):
        assert run_cli(["check-data", *args, "--no-images"]) == 0, args
    assert "usable" in capsys.readouterr().out.lower()
    assert run_cli(["check-data", "-d", "synthcc"]) == 2
    assert "-d NAME -r ROOT" in " ".join(capsys.readouterr().err.replace("│", " ").split())  # rich boxes and wraps
    assert run_cli(["check-data", "ltcc", str(synthcc_tiny), "-d", "synthcc"]) == 2


def test_poses_one_vocabulary(synthcc_tiny, tmp_path, capsys):
    base = ["-d", "synthcc", "-r", str(synthcc_tiny), "-k", str(synthcc_tiny / "poses")]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run_cli(["poses", "cluster", *base, "-o", str(a), "--k", "3", "--k", "4", "--kind", "R_LA"]) == 0
    text = capsys.readouterr().out
    assert "label 0 = no pose detected" in text
    assert run_cli(["poses", "cluster", *base, "-o", str(b), "--k", "3,4", "--kinds", "R_LA"]) == 0  # old spelling
    assert a.read_text() == b.read_text() and "R_LA_3" in a.read_text() and "R_LA_4" in a.read_text()
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert run_cli(["poses", "sweep", *base, "-o", str(s1), "--k", "2", "--k", "3", "--kind", "R_LA"]) == 0
    assert run_cli(["poses", "sweep", *base, "-o", str(s2), "--ks", "2,3"]) == 0  # old spelling
    r1 = json.loads((s1 / "sweep.json").read_text())
    assert [r["k"] for r in r1] == [2, 3] and r1 == json.loads((s2 / "sweep.json").read_text())


@pytest.mark.usefixtures("one_thread")
def test_eval_takes_a_features_file(synthcc_tiny, tmp_path, capsys):
    """`rlq eval X.npz` evaluates saved features (detected by the path) exactly as the old `rlq evaluate` did."""
    import numpy as np

    from rlq.data.datasets import load_dataset
    from rlq.evaluation.protocols import save_features
    from rlq.evaluation.ranking import evaluate_features

    ds = load_dataset("synthcc", synthcc_tiny)
    rng = np.random.default_rng(0)
    names = ds.protocols["test"].split_names
    feats = {n: rng.standard_normal((len(ds.split(n)), 16)).astype(np.float32) for n in names}
    npz = tmp_path / "f.npz"
    save_features(npz, feats, {n: ds.split(n) for n in names}, {"dataset": "synthcc"})
    assert run_cli(["eval", str(npz), "-d", "synthcc", "--json", str(tmp_path / "new.json")]) == 0
    assert run_cli(["evaluate", str(npz), "-d", "synthcc", "--json", str(tmp_path / "old.json")]) == 0
    assert "deprecated" in capsys.readouterr().err
    new = json.loads((tmp_path / "new.json").read_text())["results"]
    old = json.loads((tmp_path / "old.json").read_text())["results"]
    assert new == old and set(new) == {"general", "cc", "sc"}
    spec = ds.protocols["test"].spec("cc")
    q, g = ds.split(spec.query), ds.split(spec.gallery)
    ref = evaluate_features(feats[spec.query], feats[spec.gallery], [s.pid for s in q], [s.pid for s in g],
                            [s.camid for s in q], [s.camid for s in g], [s.clothes_id for s in q],
                            [s.clothes_id for s in g], mode="cc")
    assert new["cc"]["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert run_cli(["eval", str(tmp_path / "no_such_run"), "-d", "synthcc"]) == 2  # a checkpoint needs --root
