"""Configuration at the edge (docs/design.md boundary 1).

YAML presets with ``_base_`` inheritance, dotted ``key=value`` overrides, validation against a
structured schema (OmegaConf dataclasses: unknown keys and wrong types are rejected with the key
named), and a resolved snapshot written next to every run's outputs. The library never reads these
objects: the CLI turns them into explicit keyword arguments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text
from .runtime.meta import run_metadata
from .safe_yaml import load_yaml

__all__ = [
    "PACKAGE_CONFIGS",
    "resolve_config_path",
    "load_yaml_with_bases",
    "load_config",
    "schema_keys",
    "to_container",
    "run_metadata",
    "write_snapshot",
]

#: Presets shipped inside the package (the repository's top-level ``configs/`` points here).
PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def _shipped_presets() -> list[str]:
    """Shipped preset paths as `configs/<dir>/<name>.yaml` (bases included, for `_base_` and suggestions)."""
    return sorted(f"configs/{q.relative_to(PACKAGE_CONFIGS).as_posix()}" for q in PACKAGE_CONFIGS.rglob("*.yaml"))


def _closest_presets(path: str | os.PathLike, n: int = 5) -> list[str]:
    """The ``n`` shipped presets whose paths are closest to ``path`` (difflib), for "did you mean"."""
    import difflib

    shipped = _shipped_presets()
    want = Path(path).as_posix()
    if not want.startswith("configs/"):
        want = "configs/" + want.lstrip("./")
    if not want.endswith(".yaml"):
        want += ".yaml"
    return difflib.get_close_matches(want, shipped, n=n, cutoff=0.0)


def resolve_config_path(path: str | os.PathLike) -> Path:
    """Find a config file: as given, else relative to the shipped presets (``configs/x.yaml`` works anywhere)."""
    p = Path(path)
    if p.is_file():
        return p.resolve()
    candidates = _shipped_candidates(p)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    near = _closest_presets(path)
    raise ConfigError(
        f"config file {str(path)!r} not found (looked in the current folder and in {PACKAGE_CONFIGS}). "
        f"Did you mean: {', '.join(near) or 'none'}? (`rlq presets` lists them all)"
    )


def _shipped_candidates(p: Path) -> list[Path]:
    """Where a relative config path can name a shipped preset: ``x.yaml`` or ``configs/x.yaml`` (``.yaml`` optional)."""
    if p.is_absolute():
        return []
    candidates = [PACKAGE_CONFIGS / p]
    if p.parts and p.parts[0] == "configs":
        candidates.append(PACKAGE_CONFIGS.joinpath(*p.parts[1:]))
    if p.suffix == "":
        candidates += [c.with_suffix(".yaml") for c in list(candidates)]
    return candidates


def _resolve_base(base: str, parent: Path) -> Path:
    """A ``_base_`` entry of ``parent``: relative to ``parent``'s folder first, then a shipped preset."""
    local = (parent.parent / base).resolve()
    if local.is_file():
        return local
    tried = [local]
    for c in _shipped_candidates(Path(base)):
        if c.is_file():
            return c.resolve()
        tried.append(c)
    near = _closest_presets(base, n=3)
    raise ConfigError(
        f"{parent}: _base_ file {base!r} not found; looked at " + ", ".join(str(t) for t in dict.fromkeys(tried))
        + ". A _base_ path is relative to the file, or names a shipped preset (e.g. synthcc/bm.yaml)."
        + (f" Closest shipped presets: {', '.join(near)}" if near else "")
    )


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f, path)  # refuses alias bombs (rlq/safe_yaml.py)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the config as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping at the top level, found {type(data).__name__}")
    return data


def load_yaml_with_bases(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> DictConfig:
    """Load a YAML file, merging its ``_base_`` file(s) first, in order (a later base and the file itself win).

    A ``_base_`` entry is a path relative to the file; if no such file exists, a shipped preset
    (``synthcc/bm.yaml`` or ``configs/synthcc/bm.yaml``).
    """
    p = resolve_config_path(path) if not _stack else Path(path).resolve()
    if p in _stack:
        chain = " -> ".join(str(s) for s in (*_stack, p))
        raise ConfigError(f"_base_ cycle: {chain}")
    data = _read_yaml(p)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{p}: _base_ must be a path or a list of paths")
    merged = OmegaConf.create({})
    for b in bases:
        merged = OmegaConf.merge(merged, load_yaml_with_bases(_resolve_base(b, p), (*_stack, p)))
    return OmegaConf.merge(merged, OmegaConf.create(data))


def schema_keys(schema: type) -> list[dict[str, Any]]:
    """Every key of a dataclass schema (nested sections flattened to ``section.key``) with its type, default and the
    comment next to its field in the source (``rlq presets --keys`` prints these)."""
    import dataclasses
    import inspect
    import re
    import types
    import typing

    def comments(cls: type) -> dict[str, str]:
        try:
            src = inspect.getsource(cls)
        except (OSError, TypeError):  # pragma: no cover - no source (frozen app)
            return {}
        found = {}
        for line in src.splitlines():
            m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.*)$", line)
            if m:
                found[m.group(1)] = m.group(2).strip()
        return found

    def type_name(t: Any) -> str:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) == 1:  # X | None, Optional[X]
            return f"Optional[{type_name(args[0])}]"
        return t.__name__ if typing.get_origin(t) is None and isinstance(t, type) else str(t).replace("typing.", "")

    def walk(cls: type, prefix: str) -> list[dict[str, Any]]:
        hints = typing.get_type_hints(cls)
        notes = comments(cls)
        rows: list[dict[str, Any]] = []
        for f in dataclasses.fields(cls):
            t = hints.get(f.name, f.type)
            if dataclasses.is_dataclass(t):
                rows += walk(t, f"{prefix}{f.name}.")
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc] - mypy's dataclasses.Field typing
                default = f.default_factory()  # type: ignore[misc] - as above
            else:  # pragma: no cover - every field has a default
                default = None
            rows.append({"key": prefix + f.name, "type": type_name(t), "default": default, "help": notes.get(f.name, "")})
        return rows

    return walk(schema, "")


def _explain(e: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(e, "full_key", None) or ""
    msg = str(e).split("\n")[0]
    hint = ""
    if "Key '" in msg and "not in" in msg:
        hint = " (unknown key: check the spelling; `rlq presets --keys` lists every key with its default)"
    return ConfigError(f"{source}: invalid config{f' at {key!r}' if key else ''}: {msg}{hint}")


def load_config(
    path: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    schema: type | None = None,
) -> DictConfig:
    """Load ``path`` (with bases), apply ``key=value`` overrides, and validate against ``schema``.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key.
    The result is read-only.
    """
    cfg = OmegaConf.structured(schema) if schema is not None else OmegaConf.create({})
    if schema is not None:
        OmegaConf.set_struct(cfg, True)
    source = str(path) if path is not None else "<defaults>"
    try:
        if path is not None:
            cfg = OmegaConf.merge(cfg, load_yaml_with_bases(path))
    except OmegaConfBaseException as e:
        raise _explain(e, source) from None
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not of the form key=value (e.g. train.epochs=5)")
        key, _, val = ov.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"override {ov!r} has an empty key")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={val}"]))
        except OmegaConfBaseException as e:
            raise _explain(e, f"override {ov!r}") from None
        except yaml.YAMLError as e:  # the value is parsed as YAML: control characters and the like
            raise ConfigError(f"override {ov!r}: the value is not valid YAML ({type(e).__name__}); "
                              "quote it or remove special characters") from None
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        raise _explain(e, source) from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_container(cfg: DictConfig) -> dict:
    """Plain, resolved dict of a config."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value] - a DictConfig gives a dict


def write_snapshot(cfg: DictConfig | dict, out_dir: str | os.PathLike, extra_meta: dict | None = None) -> Path:
    """Write ``config.yaml`` (resolved) and ``meta.json`` (versions, git hash, seed, ...) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = to_container(cfg) if isinstance(cfg, DictConfig) else cfg
    atomic_write_text(out / "config.yaml", yaml.safe_dump(data, sort_keys=False))
    atomic_write_json(out / "meta.json", run_metadata(extra_meta))
    return out / "config.yaml"
