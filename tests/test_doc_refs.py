"""Every document the project cites exists in the repository, with the cited section.

Code comments, help texts, errors and reports cite `docs/method.md §N`, `docs/datasets.md §N` and
`docs/design.md boundary N`. Someone who picks up rlq must be able to follow each one, so a citation of a
file that is not part of the project (the spec files the project was built from), or of a section that
does not exist, fails here.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["src", "tests", "benchmarks", "tools", "docs", "README.md", "Makefile", "pyproject.toml"]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".html", ".cfg", ""}
FOREIGN = re.compile(r"(?<![\w/])(METHOD|DATASETS|DESIGN)\.md|\.\./shared\b|shared/docs\b")
SECTION_REF = re.compile(r"docs/([\w-]+\.md)\s*(?:§|&sect;)\s*(\d+(?:\.\d+)*)")
BOUNDARY_REF = re.compile(r"docs/design\.md\s+boundar(?:y|ies)\s+(\d+)")
PATH_REF = re.compile(r"(?<![\w/.])docs/[\w./-]+\.(?:md|png|jpg|jpeg|svg)")


def _files() -> list[Path]:
    out = []
    for name in SCANNED:
        p = ROOT / name
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in SUFFIXES
                    and "__pycache__" not in f.parts and f.name != Path(__file__).name]
    return out


def _headings(doc: Path) -> set[str]:
    """Section numbers of a Markdown file: '## 5.2 Synthetic LQ' -> '5.2', '## 10. Presets' -> '10'."""
    nums = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#+\s+(\d+(?:\.\d+)*)\.?\s", line)
        if m:
            nums.add(m.group(1))
    return nums


def _boundaries(doc: Path) -> set[str]:
    return set(re.findall(r"^(\d+)\.\s+\*\*", doc.read_text(encoding="utf-8"), flags=re.M))


FILES = _files()


def test_scan_sees_the_project():
    names = {f.relative_to(ROOT).as_posix() for f in FILES}
    assert "README.md" in names and "docs/method.md" in names and "src/rlq/__init__.py" in names


def test_no_reference_to_documents_outside_the_repository():
    bad = []
    for f in FILES:
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if FOREIGN.search(line):
                bad.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not bad, "cite docs/method.md, docs/datasets.md or docs/design.md instead:\n" + "\n".join(bad)


def test_every_cited_section_exists():
    cache: dict[str, set[str]] = {}
    bad = []
    for f in FILES:
        text = f.read_text(encoding="utf-8", errors="replace")
        for m in SECTION_REF.finditer(text):
            doc, sec = m.group(1), m.group(2).rstrip(".")
            target = ROOT / "docs" / doc
            if not target.is_file():
                bad.append(f"{f.relative_to(ROOT)}: docs/{doc} does not exist")
                continue
            secs = cache.setdefault(doc, _headings(target))
            if sec not in secs:
                bad.append(f"{f.relative_to(ROOT)}: docs/{doc} has no section {sec}")
        for m in BOUNDARY_REF.finditer(text):
            if m.group(1) not in _boundaries(ROOT / "docs" / "design.md"):
                bad.append(f"{f.relative_to(ROOT)}: docs/design.md has no boundary {m.group(1)}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_every_cited_docs_file_exists():
    bad = sorted({f"{f.relative_to(ROOT)}: {m.group(0)}" for f in FILES
                  for m in PATH_REF.finditer(f.read_text(encoding="utf-8", errors="replace"))
                  if not (ROOT / m.group(0)).exists()})
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("doc,section", [("method.md", "5.2"), ("method.md", "10"), ("datasets.md", "3.3")])
def test_section_parser_finds_known_sections(doc, section):
    assert section in _headings(ROOT / "docs" / doc)


def test_checker_catches_a_missing_section(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\n## 1. One\n\n### 1.2 Sub\n", encoding="utf-8")
    assert _headings(doc) == {"1", "1.2"}
    assert SECTION_REF.search("see docs/x.md §1.3 for").group(2) == "1.3"
    assert FOREIGN.search("see METHOD.md §2") and not FOREIGN.search("see docs/method.md §2")


TEST_REF = re.compile(r"tests/(test_\w+\.py)::(test_\w+)")


def test_every_named_test_exists():
    """docs/guarantees.md (and any other page) names tests as tests/FILE.py::NAME: each must be a test function there,
    so a guarantee never outlives the test that holds it."""
    bad = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for file, name in TEST_REF.findall(f.read_text(encoding="utf-8")):
            t = ROOT / "tests" / file
            if not t.is_file() or not re.search(rf"^def {name}\(", t.read_text(encoding="utf-8"), flags=re.M):
                bad.append(f"{f.name}: tests/{file}::{name}")
    assert bad == []
    assert len(TEST_REF.findall((ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8"))) > 40
