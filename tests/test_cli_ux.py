"""CLI consistency: help text on every option and argument, one `rlq eval` for checkpoints and features (the old
`rlq evaluate` a hidden, deprecated alias), `-d/-r` in check-data, one --k / --kind vocabulary for poses."""

from __future__ import annotations

import json

import pytest
import typer.main

from cli_helpers import run_cli
from rlq.cli import app


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


# -- one vocabulary: an option name means one thing, with one type, everywhere -------------------------------------------
def _options():
    """(command path, option, long name, every name) for every option of every command and subcommand."""
    root = typer.main.get_command(app)
    for path, cmd in _walk(root, "rlq"):
        if hasattr(cmd, "commands"):
            continue
        for p in cmd.params:
            if p.param_type_name != "option" or p.name == "help":
                continue
            names = [*p.opts, *p.secondary_opts]
            long = next((n for n in p.opts if n.startswith("--")), p.opts[0])
            yield path, p, long, names


def _kind(p) -> str:
    """The option's value type: flag, or the annotation without Optional / List (a repeatable int is an int)."""
    import typing

    if p.is_flag:
        return "flag"
    ann = p.type_descriptor.annotation
    while typing.get_origin(ann) in (typing.Union, list) or str(typing.get_origin(ann)) == "types.UnionType":
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    return getattr(ann, "__name__", str(ann))


#: Known exceptions, each with what it would need; the test fails when one is no longer needed.
#: none: `rlq demo` now splits --seed (SynthCC) from --train-seed and names its training batch --train-batch-size.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}  # (command, option) -> why it may differ, until it is fixed


def test_one_vocabulary_for_options():
    """Every option name has one type in every command; a short name is one long option everywhere; a name declared
    by two commands comes from one shared factory (same help, same default) unless `_common.CONTEXTUAL_OPTIONS`
    says it is "this command's X". Generic: a new command is checked as it is registered."""
    from collections import defaultdict

    from rlq.cli._common import CONTEXTUAL_OPTIONS

    kinds, shorts, decls = defaultdict(set), defaultdict(set), defaultdict(list)
    used_exceptions = set()
    for path, p, long, names in _options():
        if (path, long) in KNOWN_EXCEPTIONS:
            used_exceptions.add((path, long))
            continue
        for n in names:
            kinds[n].add(_kind(p))
            if not n.startswith("--"):
                shorts[n].add(long)
        decls[long].append((path, p.help, repr(p.default)))
    bad = [f"{n}: types {sorted(k)}" for n, k in kinds.items() if len(k) > 1]
    bad += [f"{s}: short for {sorted(ls)}" for s, ls in shorts.items() if len(ls) > 1]
    for long, ds in decls.items():
        if len({(h, d) for _, h, d in ds}) > 1 and long not in CONTEXTUAL_OPTIONS:
            bad.append(f"{long}: different help or default in " + "; ".join(f"{p} ({d}): {h}" for p, h, d in ds))
    assert not bad, "one option name, two meanings:\n" + "\n".join(bad)
    assert used_exceptions == set(KNOWN_EXCEPTIONS), f"stale exceptions: {set(KNOWN_EXCEPTIONS) - used_exceptions}"
    # the names the newcomer tripped over: one meaning each
    assert kinds["--json"] == {"Path"} and shorts.get("-k", {"--keypoints"}) == {"--keypoints"}
    assert len({(h, d) for _, h, d in decls["--seed"]}) == 1 and decls["--batch-size"] and len({d for _, _, d in decls["--batch-size"]}) == 1


def test_vocabulary_test_catches_a_conflicting_command():
    """The walk sees a command added later: a --json flag beside the --json PATH options is reported."""
    sub = typer.Typer()

    @sub.command("extra")
    def extra(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """A command with the old --json flag."""

    app.add_typer(sub, name="zz-test-extra")
    try:
        with pytest.raises(AssertionError, match="--json: types"):
            test_one_vocabulary_for_options()
    finally:
        app.registered_groups.pop()


def test_every_training_command_has_dry_run():
    root = typer.main.get_command(app)
    trainers = [n for n, c in root.commands.items() if n.startswith("train") or n == "demo"]
    assert set(trainers) == {"train", "train-teacher", "demo"}
    for n in trainers:
        assert any(p.name == "dry_run" for p in root.commands[n].params), n


def test_train_teacher_dry_run_prints_the_resolved_config(tmp_path, capsys):
    out = tmp_path / "teacher"
    assert run_cli(["train-teacher", f"output={out}", "data.root=/nonexistent", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "method: bm" in text and str(out) in text and not out.exists()


def test_demo_dry_run_prints_every_training_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_cli(["demo", "--out", str(out), "--methods", "bm,rlq", "--seed", "3", "--train-batch-size", "16",
                    "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert [line for line in text.splitlines() if line.startswith("# ")] == ["# teacher", "# bm", "# rlq"]
    assert "seed: 4" in text and "batch_size: 16" in text and str(out / "rlq") in text
    assert not out.exists()


def test_usage_errors_are_one_error_line_with_exit_2(capsys):
    for args in (["eval"], ["eval", "x", "--bogus"], ["search", "--top-k", "abc"]):
        assert run_cli(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert "╭" not in err and "; see `rlq " in err, err


def test_bare_json_still_prints_json(capsys):
    assert run_cli(["model-info", "--method", "bm", "--num-ids", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_ids"] == 7
    assert run_cli(["model-info", "--json", "-", "--num-ids", "9"]) == 0
    assert json.loads(capsys.readouterr().out)["num_ids"] == 9


def test_help_has_no_hard_line_breaks_mid_sentence(capsys):
    """`rlq --help` and a command's help re-wrap docstring paragraphs instead of keeping their line breaks."""
    assert run_cli(["--help"]) == 0
    assert run_cli(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "│" not in text  # no boxes
    # the docstring of `train` breaks its line after "one GPU; several GPUs with"; re-wrapped help does not
    assert not any(line.rstrip().endswith("several GPUs with") for line in text.splitlines())


def test_output_is_not_wrapped_at_80_columns_off_a_terminal(monkeypatch):
    """Not on a terminal (a log, CI), rich's consoles take $COLUMNS or stay wide: a long line is not cut at 80."""
    from rlq.cli import _common

    class NotATerminal:
        def isatty(self):
            return False

    monkeypatch.delenv("COLUMNS", raising=False)
    assert (_common._console_width(NotATerminal()) or 0) > 1000
    monkeypatch.setenv("COLUMNS", "132")
    assert _common._console_width(NotATerminal()) == 132
    assert _common.out.width > 80 or _common.out.is_terminal


def test_eval_takes_dataset_and_root_from_the_run():
    """`rlq eval RUN`: the run's data.dataset / data.root unless --dataset / --root say otherwise; the run's root
    only for the run's own dataset; one clear error when neither the run nor the options say."""
    from pathlib import Path

    from rlq.engine.evaluate import eval_dataset_and_root
    from rlq.errors import ConfigError

    state = {"checkpoint": "runs/x/checkpoints/best", "spec": {"data": {"dataset": "ltcc", "root": "/data/LTCC_ReID"}}}
    assert eval_dataset_and_root(state, None, None) == ("ltcc", Path("/data/LTCC_ReID"))
    assert eval_dataset_and_root(state, None, Path("/other")) == ("ltcc", Path("/other"))
    assert eval_dataset_and_root(state, "prcc", Path("/data/prcc")) == ("prcc", Path("/data/prcc"))
    with pytest.raises(ConfigError, match=r"records no root for dataset 'prcc' \(its run trained on ltcc\): pass --root"):
        eval_dataset_and_root(state, "prcc", None)
    with pytest.raises(ConfigError, match="records no dataset .*pass --dataset NAME --root DIR"):
        eval_dataset_and_root({"checkpoint": "ck"}, None, None)


def test_eval_of_an_imported_checkpoint_without_dataset_is_one_clear_error(tmp_path, capsys):
    from rlq.engine.model_io import save_model_checkpoint
    from rlq.models import build_model

    ck = save_model_checkpoint(build_model(method="bm", num_ids=8, backbone="tiny", seed=1), tmp_path / "ck",
                               input_size=(64, 32))
    capsys.readouterr()
    assert run_cli(["eval", str(ck), "--workers", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "records no dataset" in err and "pass --dataset NAME --root DIR" in err
