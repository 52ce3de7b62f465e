"""The README and the pages in docs/ say only what the project does.

* Every `rlq ...` command line in a ```bash block (continuation lines joined; `torchrun ... -m rlq.cli SUB ...` and
  `python -m rlq.cli SUB ...` count as `rlq SUB ...`) names a real subcommand, nested groups included
  (`rlq poses cluster`), and only options that subcommand has (with the values and the required arguments and
  options it needs); `key=value` overrides after `rlq train` (`train-teacher`, `demo`) name real config keys (the
  `RunSpec` schema, sections joined by dots), and a `--config` names a config file that exists (a shipped preset).
  Commands quoted as inline code in the text and tables are often fragments (`rlq eval ... --rerank`): only the
  names they use are checked. Every `configs/...yaml` the pages name exists.
* Every relative link (and image) points to a file of the repository, and every `#anchor` to a heading of the
  page it names (GitHub's slugs).
* The README stays a newcomer's page: at most 20,000 bytes; the rest lives in docs/.

The commands are compared with the click command tree that `rlq` itself runs (`typer.main.get_command(app)`), so a
renamed option or subcommand fails here until the pages say the new name.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from rlq.cli import _bare_json, app
from rlq.config import resolve_config_path, schema_keys
from rlq.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 20_000

#: Command lines not checked, each with the reason. Only placeholder-heavy forms that are not meant to run as
#: written belong here; a real command that fails the check is fixed in the page instead. (Empty so far.)
ALLOWED_UNCHECKED: dict[str, str] = {}

#: A subcommand whose variadic argument has this name takes config overrides (`rlq train`, `train-teacher`, `demo`).
OVERRIDES = "overrides"
HELP = {"-h", "--help"}

ROOT_COMMAND = typer.main.get_command(app)
CONFIG_KEYS = {row["key"] for row in schema_keys(RunSpec)}
_SECTIONS = {k.split(".")[0] for k in CONFIG_KEYS if "." in k}


# ---------------------------------------------------------------------------------------------- page parsing


def _fenced(text: str, lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^```{lang}[ \t]*\n(.*?)^```", text, flags=re.S | re.M)]


def logical_lines(block: str) -> list[str]:
    """The block's lines with `\\` continuations joined."""
    out: list[str] = []
    buf = ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return [line for line in out if line.strip()]


def _unbracket(tokens: list[str]) -> list[str]:
    """`[--opt VALUE]` marks an optional part in the pages: keep the tokens, drop the brackets."""
    out, depth = [], 0
    for t in tokens:
        if t.startswith("[") and t != "[":
            t, depth = t[1:], depth + 1
        if depth and t.endswith("]"):
            t, depth = t[:-1], depth - 1
        if t:
            out.append(t)
    return out


def rlq_argv(line: str) -> list[str] | None:
    """The arguments after `rlq` of a command line, or None when the line does not run rlq."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in a fragment quoted in the text
        tokens = line.split()
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] == "rlq":
        return _unbracket(tokens[1:])
    if tokens[0] in {"torchrun", "python", "python3"}:  # torchrun / python -m torch.distributed.run ... -m rlq.cli
        for i in range(len(tokens) - 1):
            if tokens[i] == "-m" and tokens[i + 1] in {"rlq.cli", "rlq"}:
                return _unbracket(tokens[i + 2:])
    return None


def doc_commands() -> list[tuple[str, str]]:
    """(where, line) of every rlq command line in a ```bash block of the README and docs/*.md."""
    found = []
    for page in PAGES:
        for block in _fenced(page.read_text(encoding="utf-8"), "bash"):
            for line in logical_lines(block):
                if rlq_argv(line) is not None:
                    found.append((page.relative_to(ROOT).as_posix(), " ".join(line.split())))
    return found


_FRAGMENT = re.compile(r"(?<!`)`(rlq|rlq\s[^`]*|torchrun\s[^`]*|python3? -m rlq\.cli\s[^`]*)`(?!`)")


def doc_fragments() -> list[tuple[str, str]]:
    """(where, text) of every `rlq ...` quoted as inline code in the pages' prose and tables (not in code blocks)."""
    found = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
        for m in _FRAGMENT.finditer(text):
            if rlq_argv(m.group(1)) is not None:
                found.append((page.relative_to(ROOT).as_posix(), " ".join(m.group(1).split())))
    return found


# ---------------------------------------------------------------------------------------------- the checker
# Typer vendors a reduced click: groups are the commands with a `commands` mapping, and a parameter says what it is
# in `param_type_name` ("option" or "argument").


def _looks_like_placeholder(value: str) -> bool:
    return bool(re.search(r"[A-Z]{2,}|[{}|<>]|\.\.\.", value))


def expand_braces(value: str) -> list[str]:
    """Shell brace expansion, as the pages use it: `configs/ltcc/{bm,rlq}.yaml` -> the two paths."""
    m = re.search(r"\{([^{}]*)\}", value)
    if not m:
        return [value]
    return [v for alt in m.group(1).split(",") for v in expand_braces(value[:m.start()] + alt + value[m.end():])]


def _options(cmd) -> dict:
    return {name: p for p in cmd.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)}


def _takes_value(option) -> bool:
    return not (option.is_flag or option.count)


def _check_override(item: str, where: str) -> list[str]:
    key = item.split("=", 1)[0]
    if key in CONFIG_KEYS or key in _SECTIONS:
        return []
    return [f"{where}: override {item!r}: {key!r} is not a config key (see `rlq presets --keys`)"]


def check_argv(argv: list[str], whole: bool = True) -> list[str]:
    """Problems of one `rlq` command line (empty: the CLI has every subcommand, option and config key it names).

    `whole=False` checks a fragment quoted in the text (`rlq eval ... --rerank`): only the names it uses, not
    whether it is complete (a subcommand, the required arguments and options, each option's value)."""
    problems: list[str] = []
    cmd, path, rest = ROOT_COMMAND, "rlq", _bare_json(list(argv))  # as `rlq` reads its arguments
    while hasattr(cmd, "commands"):  # a group: its own options, then the subcommand's name
        opts = _options(cmd)
        while rest and rest[0].startswith("-"):
            tok = rest.pop(0)
            name = tok.split("=", 1)[0]
            if name in HELP:
                return problems
            if name not in opts:
                problems.append(f"`{path}` has no option {name}")
            elif _takes_value(opts[name]) and "=" not in tok and rest:
                rest.pop(0)
        if not rest or (not whole and rest[0] == "..."):
            return problems + ([f"`{path}` needs a subcommand ({', '.join(sorted(cmd.commands))})"] if whole else [])
        sub = rest.pop(0)
        if sub not in cmd.commands:
            return problems + [f"`{path}` has no subcommand {sub!r} ({', '.join(sorted(cmd.commands))})"]
        cmd, path = cmd.commands[sub], f"{path} {sub}"
        if getattr(cmd, "hidden", False):
            problems.append(f"`{path}` is hidden from `--help` (a deprecated alias): name the command it stands for")

    opts = _options(cmd)
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    positionals: list[str] = []
    seen: set[str] = set()
    while rest:
        tok = rest.pop(0)
        if tok == "--":
            positionals += rest
            break
        if not tok.startswith("-") or tok == "-" or re.fullmatch(r"-\d.*", tok):
            positionals.append(tok)
            continue
        name, eq, value = tok.partition("=")
        if name in HELP:
            return problems
        option = opts.get(name)
        if option is None:
            problems.append(f"`{path}` has no option {name}")
            continue
        seen.add(option.name)
        if getattr(option, "hidden", False):
            problems.append(f"`{path} {name}` is hidden from `--help` (a deprecated spelling): use the current one")
        if not _takes_value(option):
            continue
        if not eq:
            if not rest:
                problems += [f"`{path} {name}` needs a value"] if whole else []
                continue
            value = rest.pop(0)
        for config in expand_braces(value) if option.name == "config" else []:
            if _looks_like_placeholder(config):
                continue
            try:
                resolve_config_path(config)
            except Exception as e:  # noqa: BLE001 - its message says what is missing
                problems.append(f"`{path} --config {config}`: {e}")

    if any(a.name == OVERRIDES for a in arguments):
        for item in [p for p in positionals if "=" in p]:
            problems += _check_override(item, f"`{path}`")
        positionals = [p for p in positionals if "=" not in p]
    if not any(a.nargs == -1 for a in arguments) and len(positionals) > sum(a.nargs for a in arguments):
        problems.append(f"`{path}` takes {sum(a.nargs for a in arguments)} positional argument(s), "
                        f"the page gives {positionals}")
    if not whole:
        return problems
    missing = [p.opts[0] for p in cmd.params if p.param_type_name == "option" and p.required and p.name not in seen]
    if missing:
        problems.append(f"`{path}` needs {', '.join(missing)}")
    n_required = sum(1 for a in arguments if a.required and a.nargs == 1)
    if len(positionals) < n_required:
        problems.append(f"`{path}` needs {n_required} positional argument(s), the page gives {positionals}")
    return problems


# ---------------------------------------------------------------------------------------------- commands


COMMANDS = doc_commands()


def test_the_pages_hold_commands_to_check():
    """The scan finds the commands it is meant to find (a parser regression must not pass by checking nothing)."""
    lines = [line for _, line in COMMANDS]
    assert len(lines) > 30, len(lines)
    assert any(line.startswith("rlq poses cluster ") for line in lines)
    assert any(line.startswith("rlq analyze robustness ") for line in lines)
    assert any(line.startswith("torchrun ") and " -m rlq.cli train " in line for line in lines)
    assert any("--rdzv-endpoint" in line and "--config configs/last/rlq_official.yaml" in line for line in lines)


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_every_documented_command_matches_the_cli(where, line):
    if line in ALLOWED_UNCHECKED:
        pytest.skip(ALLOWED_UNCHECKED[line])
    problems = check_argv(rlq_argv(line))
    assert not problems, f"{where}: {line}\n  " + "\n  ".join(problems)


FRAGMENTS = doc_fragments()


def test_the_pages_hold_fragments_to_check():
    texts = [text for _, text in FRAGMENTS]
    assert len(texts) > 60, len(texts)
    assert any(text.startswith("rlq import-official LTCC.pth.tar --method rlq") for text in texts)


@pytest.mark.parametrize("where,text", FRAGMENTS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(FRAGMENTS)])
def test_every_quoted_command_uses_real_names(where, text):
    """Commands quoted in the text (tables included) may be fragments (`rlq eval ... --rerank`), so only their names
    are checked: the subcommand, its options, config keys and config files."""
    problems = check_argv(rlq_argv(text), whole=False)
    assert not problems, f"{where}: {text}\n  " + "\n  ".join(problems)


def test_allow_list_names_only_lines_the_pages_still_have():
    assert set(ALLOWED_UNCHECKED) <= {line for _, line in COMMANDS}


@pytest.mark.parametrize("line,needle", [
    ("rlq evalute RUN", "no subcommand 'evalute'"),
    ("rlq poses clusters -d x", "no subcommand 'clusters'"),
    ("rlq eval RUN --datset ltcc", "no option --datset"),
    ("rlq train --config configs/synthcc/bm.yaml train.epoch=3", "'train.epoch' is not a config key"),
    ("rlq demo model.backbones=narrow", "'model.backbones' is not a config key"),
    ("rlq train --config configs/synthcc/nope.yaml", "not found"),
    ("rlq -q eval RUN", "`rlq` has no option -q"),
    ("rlq version extra", "takes 0 positional"),
    ("rlq evaluate RUN --dataset ltcc", "`rlq evaluate` is hidden"),
    ("rlq poses sweep -d x -r y -k z --out o --ks 5,10", "`rlq poses sweep --ks` is hidden"),
    ("rlq extract RUN --dataset ltcc", "needs --out"),
])
def test_checker_catches(line, needle):
    problems = check_argv(rlq_argv(line))
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("line,argv", [
    ("torchrun --nnodes 2 --rdzv-endpoint HOST:29500 -m rlq.cli train --config c.yaml a.b=1",
     ["train", "--config", "c.yaml", "a.b=1"]),
    ("CUDA_VISIBLE_DEVICES=0,1 rlq eval RUN  # a comment", ["eval", "RUN"]),
    ("rlq analyze buckets RUN [--size-csv s.csv] --out an/b", ["analyze", "buckets", "RUN", "--size-csv", "s.csv",
                                                              "--out", "an/b"]),
    ("python benchmarks/gpu_check.py --dry-run", None),
    ("make test", None),
])
def test_command_line_parsing(line, argv):
    assert rlq_argv(line) == argv


def test_continuation_lines_are_joined():
    assert logical_lines("rlq eval RUN \\\n    --dataset ltcc\n\nrlq demo\n") == ["rlq eval RUN      --dataset ltcc",
                                                                                  "rlq demo"]


def test_fragments_are_checked_for_names_only():
    assert check_argv(["eval", "...", "--rerank"], whole=False) == []
    assert check_argv(["eval", "--rerank"], whole=False) == []
    assert check_argv(["eval", "--rerank"]) == ["`rlq eval` needs 1 positional argument(s), the page gives []"]
    assert check_argv(["eval", "...", "--rerank-k"], whole=False) == ["`rlq eval` has no option --rerank-k"]
    assert check_argv(["model-info", "--json"]) == []  # a bare --json means `--json -`, as `rlq` reads it


def test_checker_accepts_the_quick_start_forms():
    assert check_argv(["train", "--config", "configs/synthcc/rlq.yaml", "train.epochs=5", "output=runs/x"]) == []
    assert check_argv(["-v", "poses", "cluster", "-d", "synthcc", "-r", "r", "-k", "k", "-o", "o.csv"]) == []


def test_every_config_file_the_pages_name_exists():
    """`configs/...yaml` anywhere in the pages (the tables of presets too, braces expanded) is a shipped file."""
    named = {(page.relative_to(ROOT).as_posix(), path) for page in PAGES
             for m in re.finditer(r"(?<![\w/])configs/[\w{][\w{},./-]*?\.yaml", page.read_text(encoding="utf-8"))
             for path in expand_braces(m.group(0))}
    assert len(named) > 40, len(named)
    missing = sorted(f"{where}: {path}" for where, path in named if not (ROOT / path).is_file())
    assert not missing, "\n".join(missing)


def test_brace_expansion():
    assert expand_braces("configs/ltcc/{bm,rlq}_{a,b}.yaml") == ["configs/ltcc/bm_a.yaml", "configs/ltcc/bm_b.yaml",
                                                                 "configs/ltcc/rlq_a.yaml", "configs/ltcc/rlq_b.yaml"]
    assert check_argv(["train", "--config", "configs/ltcc/{bm,nope}.yaml"], whole=False)[0].startswith(
        "`rlq train --config configs/ltcc/nope.yaml`")


# ---------------------------------------------------------------------------------------------- links


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped except '-' and '_', spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _strip_code_blocks(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", text, flags=re.S | re.M)


def _strip_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", _strip_code_blocks(text))


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", _strip_code_blocks(page.read_text(encoding="utf-8")),
                         flags=re.M):
        slug = github_slug(m.group(1))
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(page: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _strip_code(page.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ...


def broken_links(page: Path) -> list[str]:
    bad = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: {dest.name} has no heading with the anchor #{anchor}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    bad = broken_links(page)
    assert not bad, f"{page.relative_to(ROOT)}:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("heading,slug", [
    ("The paper's claims on SynthCC", "the-papers-claims-on-synthcc"),
    ('Open-set search: "not in the gallery"', "open-set-search-not-in-the-gallery"),
    ("MobileNetV2 backbone (`model.backbone=mobilenetv2`; not in the paper)",
     "mobilenetv2-backbone-modelbackbonemobilenetv2-not-in-the-paper"),
    ("3.8 VC-Clothes (brief; not used by the paper, no RLQ annotations)",
     "38-vc-clothes-brief-not-used-by-the-paper-no-rlq-annotations"),
    ("keep_last and snake_case", "keep_last-and-snake_case"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_link_checker_catches_a_missing_file_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## Some part\n\n```bash\n# not a heading\n```\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#some-part) [gone](c.md) `[code](x.md)` [bad](a.md#not-a-heading)\n", encoding="utf-8")
    assert relative_links(page) == ["a.md#some-part", "c.md", "a.md#not-a-heading"]
    assert anchors(tmp_path / "a.md") == {"a-page", "some-part"}
    assert broken_links(page) == ["c.md: no such file", "a.md#not-a-heading: a.md has no heading with the anchor "
                                                        "#not-a-heading"]
    (tmp_path / "c.md").write_text("## Twice\n\n## Twice\n", encoding="utf-8")
    assert anchors(tmp_path / "c.md") == {"twice", "twice-1"}  # GitHub numbers repeated headings


# ---------------------------------------------------------------------------------------------- the README


def test_readme_stays_short():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, (f"README.md is {size:,} bytes (at most {README_MAX_BYTES:,}): move details to "
                                      "a page in docs/ and link it from the README's Documentation list")


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not missing, f"the README's Documentation list does not link {missing}"


def test_responsible_use_page_is_the_model_cards_text():
    """docs/responsible-use.md and every exported model card say the same thing."""
    from rlq.export import responsible_use_text

    body = responsible_use_text().split("\n", 1)[1].strip()  # without its '## Responsible use' heading
    assert body in (ROOT / "docs" / "responsible-use.md").read_text(encoding="utf-8")
