"""Every file rlq writes appears whole or not at all: rlq.io writes a temporary file and renames it, and no
module of the package writes a file any other way (apart from the two listed here, each for its reason)."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from rlq.io import atomic_open, atomic_write_json, atomic_write_text

SRC = Path(__file__).resolve().parents[1] / "src" / "rlq"

#: Direct writes: open() for writing or appending, Path.write_text/bytes, os.open with write flags,
#: NumPy/torch/matplotlib/PIL saving to a path instead of an rlq.io handle or an in-memory buffer.
DIRECT = re.compile(
    r"(?<![\w.])open\([^)]*['\"][wax]b?\+?['\"]|\.write_(?:text|bytes)\(|os\.open\([^)]*O_(?:WRONLY|RDWR|CREAT)"
    r"|np\.savez?(?:_compressed)?\((?!fh\b)|torch\.save\(|\.savefig\((?!buf\b)|\.save\((?:str\(|[a-z_]*path\b|out\b)"
)
#: The only files not written whole, and why.
ALLOWED = {
    "io.py": "the atomic writers themselves",
    "engine/metrics_log.py": "metrics.jsonl is append-only; a torn last line is cut on resume (MetricsLogger._truncate)",
    "engine/run_dir.py": "the lock file .rlq.lock, whose content only names the holder",
}


def _code_lines(text: str) -> dict[int, str]:
    """Each line's code, comments and strings left out (prose that mentions torch.save is no write), except strings
    that are file modes ("w", "ab", ...), which the scan needs."""
    prose = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", -1)}
    mode = re.compile(r"""['"][rwabx+t]{1,3}['"]""")
    lines: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in prose or (tok.type == tokenize.STRING and mode.fullmatch(tok.string)):
            lines[tok.start[0]] = lines.get(tok.start[0], "") + tok.string
    return lines


def test_no_module_writes_a_file_around_rlq_io():
    found = []
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        for i, code in _code_lines(f.read_text(encoding="utf-8")).items():
            if DIRECT.search(code):
                found.append(f"{rel}:{i}: {code}")
    assert found == [], "write through rlq.io (atomic_open / atomic_write_*):\n" + "\n".join(found)


def test_the_scan_sees_direct_writes():
    for bad in ('open(p,"w")', "Path(p).write_text(s)", "np.save(path,a)", "torch.save(sd,path)",
                "fig.savefig(out)", "os.open(p,os.O_WRONLY)"):
        assert DIRECT.search(bad), bad
        assert DIRECT.search("".join(_code_lines(bad + "\n").values())), bad  # tokens joined as the scan sees them
    for ok in ("np.save(fh, a)", "fig.savefig(buf, format='png')", "img.save(buf, format='PNG')", 'open(p, "rb")'):
        assert not DIRECT.search(ok), ok


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    p = tmp_path / "results.json"
    atomic_write_json(p, {"rank1": 0.5})
    before = p.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_open(p, "wb") as f:
            f.write(b'{"rank1": 0.')  # half a file ...
            raise RuntimeError("killed mid-write")  # ... and the writer dies
    assert p.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["results.json"]
    atomic_write_text(p, "new\n")
    assert p.read_text() == "new\n" and [q.name for q in tmp_path.iterdir()] == ["results.json"]
