"""Reading the YAML files users hand to rlq (configs, manifest protocol files) without alias bombs.

``yaml.safe_load`` shares one object per anchor, so a few lines of nested aliases (``b: [*a, *a, ...]``,
``c: [*b, *b, ...]``, ...) load quickly but expand to millions of values as soon as anything copies them (OmegaConf
does), hanging the command and eating memory. :func:`load_yaml` composes the file with PyYAML's safe loader, counts
how many values its aliases would add when expanded, and refuses the file past :data:`MAX_ALIAS_EXPANSION` before
anything is built; an alias inside the node it names (a recursive structure) is refused too.
"""

from __future__ import annotations

import os
from typing import IO, Any

import yaml

from .errors import ConfigError

__all__ = ["MAX_ALIAS_EXPANSION", "load_yaml"]

#: At most this many values may come from expanding aliases (the shipped presets use none; a config has ~100 keys).
MAX_ALIAS_EXPANSION = 10_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int], source: str) -> int:
    """Values under ``node`` with every alias expanded (memoised per node, so shared nodes cost one visit)."""
    nid = id(node)
    if nid in sizes:
        return sizes[nid]
    if nid in open_:
        raise ConfigError(f"{source}: a YAML alias (*name) sits inside the node its anchor (&name) names, a structure "
                          "that never ends; write the values out instead")
    open_.add(nid)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, open_, source) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes, open_, source) + _expanded_size(v, sizes, open_, source) for k, v in node.value)
    open_.discard(nid)
    sizes[nid] = size
    return size


def load_yaml(stream: str | bytes | IO[Any], source: str | os.PathLike) -> Any:
    """``yaml.safe_load(stream)`` for a file named ``source`` in errors; ConfigError when its aliases (``*name``)
    would expand to more than :data:`MAX_ALIAS_EXPANSION` values. YAML syntax errors raise ``yaml.YAMLError``."""
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        expanded = _expanded_size(node, sizes, set(), str(source))
        if expanded - len(sizes) > MAX_ALIAS_EXPANSION:
            raise ConfigError(
                f"{source}: its YAML aliases (*name) expand to {expanded:,} values, more than {MAX_ALIAS_EXPANSION:,} "
                "beyond what the file spells out (an alias bomb?); write the repeated values out instead of "
                "anchors and aliases (&name / *name)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
