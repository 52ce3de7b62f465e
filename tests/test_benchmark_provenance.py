"""Every file in benchmarks/results/ names the commit and the script (by hash) that wrote it, and a --quick /
--dry-run smoke result can never land there (issue 20, item 6). Reads files only; runs no benchmark."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
FILES = sorted(RESULTS.glob("*.json"))


@pytest.fixture(scope="module")
def util():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _util

    return _util


def _env_complete(env) -> bool:
    """``env_info()``'s record: the commit, whether the tree was dirty (True / False / None when git could not say)
    and the script's SHA-256."""
    return (isinstance(env, dict) and bool(COMMIT.fullmatch(str(env.get("git")))) and "git_dirty" in env
            and isinstance(env.get("script"), dict) and bool(SHA256.fullmatch(str(env["script"].get("sha256")))))


def _provenance_complete(p) -> bool:
    """A ``provenance`` object added afterwards: the commit, git_dirty (null = unknown) and the script's SHA-256,
    or ``script: null`` with ``no_script`` saying why (CLI runs assembled by hand)."""
    if not isinstance(p, dict) or not COMMIT.fullmatch(str(p.get("commit"))) or "git_dirty" not in p:
        return False
    s = p.get("script")
    if s is None:
        return bool(str(p.get("no_script") or "").strip())
    return isinstance(s, dict) and bool(SHA256.fullmatch(str(s.get("sha256")))) and bool(s.get("path"))


def test_there_are_results():
    assert FILES, RESULTS


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_result_names_its_commit_and_script_hash(path):
    d = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(d, dict), path
    assert _env_complete(d.get("env")) or _provenance_complete(d.get("provenance")), (
        f"{path.name} names neither env.git + env.git_dirty + env.script.sha256 (benchmarks/_util.env_info) nor a "
        "complete 'provenance' object (commit, git_dirty, script.sha256): re-measure it or label it")
    assert not (d.get("quick") or d.get("dry_run")), f"{path.name} is a --quick / --dry-run smoke result"
    assert not path.stem.endswith("_quick"), path.name
    # sections with their own env (eval_speed.json: separate runs) are covered by it or by provenance.sections
    sections = (d.get("provenance") or {}).get("sections") or {}
    for k, v in d.items():
        if isinstance(v, dict) and "env" in v and k != "env":
            assert _env_complete(v["env"]) or _provenance_complete(
                {"git_dirty": None, **sections.get(k, {}), "commit": sections.get(k, {}).get("written_in")}), (path.name, k)


def test_the_stale_files_say_what_they_measured():
    """The files issue 20 named, while they are not re-measured (a re-measured file's env says it all)."""
    def prov(name):
        f = RESULTS / name
        return json.loads(f.read_text(encoding="utf-8")).get("provenance") if f.is_file() else None

    if p := prov("estimators.json"):
        assert "generator 1.0" in p["stale"]
    if g := prov("gpu_check_h200.json"):
        assert g["recorded_git_is_wrong"] in g["stale"] and g["commit"][:7] in g["stale"]
    if r := prov("reliability.json"):
        assert r["measured_at_git"][:7] in r["texts"]


def test_write_json_refuses_a_smoke_result_in_results(util, tmp_path):
    target = RESULTS / "_provenance_test_never_written.json"
    for kw, obj in (({"quick": True}, {"x": 1}), ({}, {"quick": True}), ({}, {"dry_run": True})):
        with pytest.raises(util.SmokeResultRefused, match="runs/bench-quick"):
            util.write_json(target, obj, **kw)
    with pytest.raises(util.SmokeResultRefused):  # a relative path that reaches benchmarks/results/ too
        util.write_json(Path("benchmarks") / "results" / target.name, {"x": 1}, quick=True)
    assert not target.exists()
    util.write_json(tmp_path / "q.json", {"quick": True})  # elsewhere: written
    assert json.loads((tmp_path / "q.json").read_text()) == {"quick": True}


def test_quick_moves_the_default_out_away_from_results(util):
    p = argparse.ArgumentParser()
    util.add_common_args(p, "benchmarks/results/name.json")
    assert p.parse_args([]).out == "benchmarks/results/name.json"
    quick = p.parse_args(["--quick"])
    assert quick.quick and Path(quick.out) == util.QUICK_DIR / "name.json" and "benchmarks/results" not in quick.out
    assert p.parse_args(["--quick", "--out", "x.json"]).out == "x.json"
    assert p.parse_args(["--out", "x.json", "--quick"]).out == "x.json"


def test_gpu_check_dry_run_defaults_outside_results(util, tmp_path, monkeypatch):
    import importlib

    monkeypatch.setattr(util, "QUICK_DIR", tmp_path)
    gpu_check = importlib.import_module("gpu_check")
    before = sorted(RESULTS.iterdir())
    assert gpu_check.main(["--dry-run", "--only", "env"]) == 0
    d = json.loads((tmp_path / "gpu_check.json").read_text())
    assert d["dry_run"] is True and _env_complete(d["env"]) and d["env"]["script"]["path"] == "gpu_check.py"
    assert sorted(RESULTS.iterdir()) == before
