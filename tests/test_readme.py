"""The README runs as written: its Quick start commands in order, and its code blocks marked runnable.

Both are parsed out of README.md, so the README cannot drift from what works. Sizes are shrunk only by
the explicit, per-command additions in QUICK_START_TINY (appended arguments: the last value of an option
wins, and `key=value` overrides come after the preset's).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rlq.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

_TINY_TRAIN = ["data.height=64", "data.width=32", "data.batch_size=8", "tad.external_batch_size=8", "train.epochs=1",
               "train.eval_every=1", "train.max_steps_per_epoch=2", "train.progress=false", "train.tensorboard=false"]
#: What the test appends to each quick-start command (matched by the longest prefix) to make it tiny.
#: A README command with no entry here fails the test, so a new command gets an explicit decision.
QUICK_START_TINY: dict[str, list[str]] = {
    "rlq synth": ["--preset", "tiny", "--workers", "0"],  # SynthCC `tiny` instead of `default`
    "rlq check-data": ["--quick"],
    "rlq poses cluster": [],
    "rlq train": _TINY_TRAIN,
    "rlq eval": ["--workers", "0"],
}
#: Shell set-up lines that do not apply to a test process.
QUICK_START_SKIP = ("source ",)


def _section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def quick_start_commands(text: str) -> list[list[str]]:
    """The commands of the first ```bash block of '## Quick start' (comments and set-up lines removed)."""
    block = re.search(r"```bash\n(.*?)```", _section(text, "Quick start"), flags=re.S)
    assert block, "the Quick start section has no ```bash block"
    cmds = []
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith(QUICK_START_SKIP):
            continue
        cmds.append(shlex.split(line, comments=True))
    return [c for c in cmds if c]


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block preceded by the marker line `<!-- runnable -->`."""
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"^<!-- runnable -->\n```(\w+)\n(.*?)^```", text, flags=re.S | re.M)]


def _tiny_args(cmd: list[str]) -> list[str]:
    line = " ".join(cmd)
    keys = [k for k in QUICK_START_TINY if line == k or line.startswith(k + " ")]
    assert keys, f"quick-start command {line!r} has no entry in QUICK_START_TINY (tests/test_readme.py): add one"
    return QUICK_START_TINY[max(keys, key=len)]


def _run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_quick_start_parsing_is_strict():
    cmds = quick_start_commands(README.read_text(encoding="utf-8"))
    assert [c[:2] for c in cmds][:2] == [["rlq", "synth"], ["rlq", "check-data"]]
    assert all(c[0] == "rlq" for c in cmds), cmds
    with pytest.raises(AssertionError, match="QUICK_START_TINY"):
        _tiny_args(["rlq", "something-new"])


def test_quick_start_runs_in_order(tmp_path, monkeypatch, one_thread):
    """Every Quick start command, in order, in a fresh folder (relative paths as written), tiny sizes."""
    monkeypatch.chdir(tmp_path)
    cmds = quick_start_commands(README.read_text(encoding="utf-8"))
    assert any(c[:2] == ["rlq", "train"] for c in cmds) and cmds[-1][:2] == ["rlq", "eval"]
    for cmd in cmds:
        rc = _run_cli([*cmd[1:], *_tiny_args(cmd)])
        assert rc == 0, f"quick-start command failed (exit {rc}): {' '.join(cmd)}"
    assert (tmp_path / "runs/synthcc-rlq/results.json").is_file()
    assert (tmp_path / "runs/synthcc-teacher/results.json").is_file()


def test_runnable_readme_blocks(tmp_path):
    """Code blocks marked `<!-- runnable -->` run as written in an empty folder (Python in a fresh interpreter)."""
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README has no block marked <!-- runnable -->"
    for i, (lang, code) in enumerate(blocks):
        assert lang == "python", f"runnable block {i} is {lang!r}; only python blocks are run"
        script = tmp_path / f"block{i}.py"
        script.write_text(code, encoding="utf-8")
        for attempt in ("first", "second"):  # a newcomer runs it again: it must work again, without warnings
            p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, (f"README runnable block {i} failed on the {attempt} run:\n{code}\n"
                                       f"--- stderr ---\n{p.stderr[-3000:]}")
            assert "Warning" not in p.stderr, f"block {i}, {attempt} run, printed warnings:\n{p.stderr[-3000:]}"
            if i == 0:
                _check_stated_output(p.stdout)


def _check_stated_output(stdout: str) -> None:
    """The README says what the Python example prints (a ```text block right after it): the same lines, the
    numbers to the digit on the CI machine's kind (2 cores); elsewhere float sums may round differently."""
    text = README.read_text(encoding="utf-8")
    stated = re.search(r"^It prints, .*?\n\n```text\n(.*?)^```", text, flags=re.S | re.M)
    assert stated, "README does not say what the Python example prints"
    want, got = stated.group(1).strip().splitlines(), stdout.strip().splitlines()
    assert len(got) == len(want) and got[0] == want[0], (got, want)
    import os

    for g, w in zip(got, want):
        assert re.sub(r"[\d.]+", "N", g) == re.sub(r"[\d.]+", "N", w), (g, w)
    if os.cpu_count() == 2 and os.environ.get("OMP_NUM_THREADS") == "2":  # the machine the README states it for
        assert got == want
