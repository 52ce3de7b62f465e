"""An optimizer's state as named tensors plus a JSON-able remainder (what a checkpoint stores).

Below the engine and the methods: the trainer checkpoints its optimizer with it, and a method with an optimizer
of its own (the clothes classifier's, docs/method.md §4) does the same through ``Method.state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["optimizer_state_to_flat", "optimizer_state_from_flat"]


def optimizer_state_to_flat(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into named tensors and a JSON-able remainder."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.state.{pid}.{k}"] = v
            else:
                other.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "other": other, "pids": [int(p) for p in sd["state"]]}


def optimizer_state_from_flat(opt: torch.optim.Optimizer, prefix: str, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`optimizer_state_to_flat`."""
    state: dict[int, dict[str, Any]] = {int(p): {} for p in meta["pids"]}
    head = f"{prefix}.state."
    for name, t in tensors.items():
        if name.startswith(head):
            pid, k = name[len(head) :].split(".", 1)
            state[int(pid)][k] = t
    for pid, st in meta.get("other", {}).items():
        state[int(pid)].update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
