"""Training methods as strategies of the one training loop (docs/design.md boundary 4), and their registry.

Only the registry is imported here (a plain table, no torch); the strategies live in :mod:`rlq.methods.base`,
:mod:`rlq.methods.reid` and :mod:`rlq.methods.tad`. docs/design.md "Adding a method" says how to add one.
"""

from __future__ import annotations

from .registry import (
    REID_LOSSES,
    TAD_LOSSES,
    MethodEntry,
    ModelParts,
    get_method,
    method_names,
    register_method,
    unregister_method,
)

__all__ = [
    "REID_LOSSES",
    "TAD_LOSSES",
    "MethodEntry",
    "ModelParts",
    "get_method",
    "method_names",
    "register_method",
    "unregister_method",
]
