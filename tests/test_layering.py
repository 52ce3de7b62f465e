"""Imports point down: every ``rlq`` import edge keeps the layer order of docs/design.md ("Layers").

Each module under ``src/rlq`` is parsed with ``ast``; every import in it counts (module level, inside functions,
under ``if``), relative ones resolved against the module's package. An import of another top-level package must
go to a lower layer; packages of one layer do not import each other. The edges that still break the order are
listed in :data:`KNOWN_EDGES`, each with the work that removes it; the list may only shrink (an entry whose edge
is gone fails too, so it is deleted with the fix).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: docs/design.md "Layers", lowest first. A module may import its own top-level package and any package of a
#: lower layer. ``rlq`` is the package root (``__version__``; its public names are lazy strings, not imports).
LAYERS: list[tuple[str, ...]] = [
    ("rlq", "errors"),                  # the package root and the exception types
    ("io", "safe_yaml", "runtime", "report_format"),  # atomic files / strict JSON / CSV, safe YAML, device / AMP / DDP / run metadata, table rounding
    ("lq", "losses", "models"),         # tensor building blocks: degradations, loss terms, networks
    ("data",),                          # records, parsers, side inputs, LIP, recolouring, loading, SynthCC
    ("evaluation", "attributes", "spec"),  # metrics, protocols, extraction; pose / gender tables, estimators; run spec
    ("methods",),                       # training strategies (docs/design.md boundary 4)
    ("engine",),                        # trainer, checkpoints <-> models, run folders, the recipe, the evaluation pipeline
    ("analysis", "deploy"),             # diagnostics; feature extractor, gallery search, calibration
    ("export",),                        # ONNX export and model cards (uses deploy's calibration)
    ("config",),                        # YAML presets at the edge (docs/design.md boundary 1)
    ("demo",),                          # the SynthCC demo pipeline
    ("cli",),                           # the Typer app
]

#: (importing module, imported module) -> why the edge is still there and which work removes it.
KNOWN_EDGES: dict[tuple[str, str], str] = {
    # none left: methods read their settings from rlq.spec (layer 4) and save optimizer state with rlq.runtime.state
}


def _module_name(path: Path) -> tuple[str, bool]:
    """(dotted name, is a package ``__init__``) of a file under src/."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in sorted((SRC / "rlq").rglob("*.py")):
        name, is_pkg = _module_name(p)
        out[name] = (p, is_pkg)
    return out


MODULES = _modules()


def imports_of(source: str, module: str, is_package: bool, known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """The absolute names of the ``rlq`` modules that ``source`` (the text of ``module``) imports, anywhere in it.

    ``from X import a`` counts as an import of ``X.a`` when that is a module in ``known``, else of ``X``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            out.update(subs or [target])
    return {m for m in out if m == "rlq" or m.startswith("rlq.")}


#: Modules placed in a lower layer than their package: the method registry is a plain table (no torch, only
#: rlq.errors imported) that models, the spec and the recipe read, so it sits with the runtime (docs/design.md).
MODULE_LAYER = {"rlq.methods.registry": "runtime"}


def _top(module: str) -> str:
    """The top-level package a module belongs to for layering: rlq.data.sidecars.gender -> data, rlq -> rlq (a
    module of MODULE_LAYER: the package of the layer it is placed in)."""
    if module in MODULE_LAYER:
        return MODULE_LAYER[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rlq"


RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _edges() -> set[tuple[str, str]]:
    known = set(MODULES)
    edges = set()
    for name, (path, is_pkg) in MODULES.items():
        for target in imports_of(path.read_text(encoding="utf-8"), name, is_pkg, known):
            if _top(target) != _top(name):
                edges.add((name, target))
    return edges


EDGES = _edges()


def test_every_package_has_a_layer():
    tops = {_top(m) for m in MODULES}
    assert tops - set(RANK) == set(), "place the new package in LAYERS (and in docs/design.md's diagram)"
    assert set(RANK) - tops == set(), "LAYERS names a package that no longer exists"


def test_imports_point_down():
    bad = sorted(f"{a} -> {b}  ({_top(a)} is layer {RANK[_top(a)]}, {_top(b)} is layer {RANK[_top(b)]})"
                 for a, b in EDGES if RANK[_top(b)] >= RANK[_top(a)] and (a, b) not in KNOWN_EDGES)
    assert bad == [], ("imports that break docs/design.md's layer order (import from a lower layer, or move the "
                       "code down):\n" + "\n".join(bad))


def test_known_edges_still_exist():
    """The allow-list only shrinks: an edge that is gone (or now points down) is deleted from KNOWN_EDGES."""
    stale = sorted(f"{a} -> {b}" for a, b in KNOWN_EDGES
                   if (a, b) not in EDGES or RANK[_top(b)] < RANK[_top(a)])
    assert stale == [], "delete these from KNOWN_EDGES (and from docs/design.md):\n" + "\n".join(stale)


def test_known_edges_are_in_design_md():
    text = (SRC.parent / "docs" / "design.md").read_text(encoding="utf-8")
    missing = [f"{a} -> {b}" for a, b in KNOWN_EDGES if f"{a.removeprefix('rlq.')} -> {b.removeprefix('rlq.')}" not in text]
    assert missing == [], "docs/design.md lists the known edges as `methods.reid -> engine.run_dir`: " + ", ".join(missing)


def test_design_md_draws_these_layers():
    """docs/design.md's diagram ("layer  packages  what lives there", top layer first) is LAYERS."""
    import re

    text = (SRC.parent / "docs" / "design.md").read_text(encoding="utf-8")
    block = text.split("layer  packages", 1)[1].split("```", 1)[0]
    drawn = {}
    for line in block.splitlines()[1:]:
        if line.strip():
            num, pkgs = re.split(r"\s{2,}", line.strip())[:2]
            drawn[int(num)] = tuple(pkgs.split())
    assert drawn == dict(enumerate(LAYERS))


def test_import_parser_resolves_relative_and_nested_imports():
    src = (
        "from __future__ import annotations\n"
        "import os\n"
        "from ..errors import ConfigError\n"
        "from . import reference\n"
        "from .recolor import draw_recolor\n"
        "import rlq.io as rio\n"
        "def f():\n"
        "    if True:\n"
        "        from ..runtime.distributed import barrier\n"
    )
    got = imports_of(src, "rlq.data.loading", False, {"rlq.data.reference", "rlq.data.recolor"})
    assert {"rlq.errors", "rlq.data.reference", "rlq.data.recolor", "rlq.io", "rlq.runtime.distributed"} <= got
    assert "os" not in got
    assert imports_of("from . import batched\nfrom .x import y\n", "rlq.lq", True, {"rlq.lq.batched"}) == \
        {"rlq.lq.batched", "rlq.lq.x"}


def test_the_checker_catches_an_upward_import():
    """A data module importing the engine (what evaluation/extract.py did before the runtime layer) is caught."""
    edge = imports_of("def f():\n    from ..engine.distributed import gather_rows\n", "rlq.evaluation.extract", False)
    assert edge == {"rlq.engine.distributed"}
    assert RANK["engine"] > RANK["evaluation"]
