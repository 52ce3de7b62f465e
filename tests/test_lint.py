"""ruff (pyproject.toml ``[tool.ruff]``) finds nothing in the paths that are clean, and every suppression there says why.

A suppression reads ``# noqa: CODE[,CODE] - why`` or ``# type: ignore[code] - why``: the codes, then `` - `` and the
reason. A bare ``# noqa`` or ``# type: ignore`` (no codes) is refused too.
"""

from __future__ import annotations

import importlib.util
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Paths (relative to the repository root) that ruff leaves clean. The rest joins as other work lands, until this
#: is the whole repository.
CLEAN_PATHS: tuple[str, ...] = ("src", "benchmarks", "tests", "tools")  # the whole repository's Python
#: Files under CLEAN_PATHS not linted yet (none: keep it that way).
NOT_YET: tuple[str, ...] = ()

_CODES = r"[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*"
_NOQA = re.compile(r"#\s*noqa\b(?P<rest>.*)", re.IGNORECASE)
_NOQA_OK = re.compile(rf":\s*{_CODES}\s+-\s+\S")
_IGNORE = re.compile(r"#\s*type:\s*ignore\b(?P<rest>.*)")
_IGNORE_OK = re.compile(r"\[[a-z0-9_-]+(?:\s*,\s*[a-z0-9_-]+)*\]\s+-\s+\S")


def _ruff() -> list[str]:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    beside = Path(sys.executable).with_name("ruff")
    if beside.is_file():
        return [str(beside)]
    pytest.skip("ruff is not installed (requirements-dev.txt pins it: pip install -r requirements-dev.txt)")


def _files() -> list[Path]:
    skip = {REPO / p for p in NOT_YET}
    out: list[Path] = []
    for p in CLEAN_PATHS:
        path = REPO / p
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [f for f in out if f not in skip]


def test_clean_paths_exist():
    assert [p for p in CLEAN_PATHS if not (REPO / p).exists()] == []


def test_ruff_finds_nothing_in_the_clean_paths():
    cmd = [*_ruff(), "check", "--no-cache", "--output-format", "concise", "--force-exclude",
           *(f"--extend-exclude={p}" for p in NOT_YET), *CLEAN_PATHS]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"ruff check found problems (`ruff check --fix` fixes those marked [*]):\n{p.stdout}{p.stderr}"


def test_every_suppression_in_the_clean_paths_says_why():
    bad = []
    for f in _files():
        text = f.read_text(encoding="utf-8")
        if "noqa" not in text.lower() and "type:" not in text:
            continue
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type != tokenize.COMMENT:
                continue
            where = f"{f.relative_to(REPO)}:{tok.start[0]}: {tok.string}"
            m = _NOQA.search(tok.string)
            if m and not _NOQA_OK.match(m.group("rest")):
                bad.append(where)
            m = _IGNORE.search(tok.string)
            if m and not _IGNORE_OK.match(m.group("rest")):
                bad.append(where)
    assert bad == [], "write `# noqa: CODE - why` / `# type: ignore[code] - why`:\n" + "\n".join(bad)


@pytest.mark.parametrize("comment, ok", [
    ("# noqa: BLE001 - PIL raises many types", True),
    ("# noqa: E402, F401 - after the sys.path set-up", True),
    ("# noqa: F401", False),
    ("# noqa: F401  (registers the commands)", False),
    ("# noqa", False),
    ("# type: ignore[arg-type] - not None here", True),
    ("# type: ignore[arg-type]", False),
    ("# type: ignore", False),
])
def test_the_suppression_pattern(comment, ok):
    m = _NOQA.search(comment)
    if m:
        assert bool(_NOQA_OK.match(m.group("rest"))) is ok
    else:
        m = _IGNORE.search(comment)
        assert m is not None and bool(_IGNORE_OK.match(m.group("rest"))) is ok
