"""Validation of a checkpoint's ``state.json`` before anything reads it.

A checkpoint's checksums prove only that its files are the ones its manifest lists; an edited ``state.json``
with a recomputed manifest still loads. Every field a reader uses (``rlq train --resume``, ``rlq eval``,
``rlq export``, ``rlq model-info``, the extractor, a TAD teacher) is checked here for type and bounds, so a bad
value is one :class:`~rlq.errors.CheckpointError` naming the checkpoint and the field instead of a raw
``TypeError`` deep in a reader, or an absurd ``input_size`` that makes loader workers allocate gigabytes.

Fields are checked where present (a weights-only ``best`` or an imported checkpoint has fewer); a checkpoint
that holds any of the resume fields (not ``weights_only``) must hold all of them. Unknown fields are allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = ["check_state", "INPUT_SIZE_RANGE", "RESUME_FIELDS"]

#: Bounds of each side of ``input_size`` (height, width) in pixels.
INPUT_SIZE_RANGE = (16, 4096)
#: The fields :meth:`rlq.engine.trainer.Trainer.resume` reads from a resumable checkpoint.
RESUME_FIELDS = ("position", "global_step", "optimizer", "method_state", "rng", "selection")

_BIG = 10**12  # counts (steps, batches, lines)
_MAX_IDS = 10**7  # identities / outfits of a train split
_AMP = ("auto", "off", "bf16", "fp16")
_POSITION = ("epoch", "phase", "batch", "ext_epoch", "ext_batch")
_OPT_TENSOR = re.compile(r"^(?P<pid>\d+)\.(?P<k>.+)$")


class _Bad(Exception):
    """Internal: (field path, what is wrong)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field, self.problem = field, problem


# -- primitives ------------------------------------------------------------------------------------------------
def _int(field: str, v: Any, lo: int = 0, hi: int = _BIG) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(field, f"must be an integer, got {v!r:.60}")
    if not lo <= v <= hi:
        raise _Bad(field, f"must be in [{lo}, {hi}], got {v}")
    return v


def _num(field: str, v: Any, lo: float = -math.inf, hi: float = math.inf, *, allow_nan: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(field, f"must be a number, got {v!r:.60}")
    if math.isnan(v):
        if allow_nan:
            return v
        raise _Bad(field, "must be a number, got NaN")
    if not lo <= v <= hi:
        raise _Bad(field, f"must be in [{lo}, {hi}], got {v}")
    return v


def _bool(field: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(field, f"must be true or false, got {v!r:.60}")
    return v


def _str(field: str, v: Any, choices: tuple[str, ...] | frozenset[str] | None = None, max_len: int = 4096) -> str:
    if not isinstance(v, str):
        raise _Bad(field, f"must be a string, got {v!r:.60}")
    if choices is not None and v not in choices:
        raise _Bad(field, f"must be one of {sorted(choices)}, got {v!r:.60}")
    if len(v) > max_len:
        raise _Bad(field, f"is {len(v)} characters long (at most {max_len})")
    return v


def _dict(field: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise _Bad(field, f"must be an object, got {type(v).__name__}")
    return v


def _list(field: str, v: Any, n: int | None = None) -> list:
    if not isinstance(v, list):
        raise _Bad(field, f"must be a list, got {type(v).__name__}")
    if n is not None and len(v) != n:
        raise _Bad(field, f"must have {n} entries, got {len(v)}")
    return v


def _opt(check: Callable[..., Any]) -> Callable[..., Any]:
    """The same check, None allowed."""
    return lambda field, v, *a, **k: None if v is None else check(field, v, *a, **k)


# -- fields ------------------------------------------------------------------------------------------------------
def _input_size(field: str, v: Any) -> None:
    lo, hi = INPUT_SIZE_RANGE
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _Bad(field, f"must be [height, width], got {v!r:.60}")
    _int(f"{field}[0] (height)", v[0], lo, hi)
    _int(f"{field}[1] (width)", v[1], lo, hi)


def _model_args(field: str, v: Any) -> None:
    from ..methods.registry import get_method, method_names
    from ..models.backbones import BACKBONES
    from ..models.reid import PLACEMENTS, POSE_SPLITS, SPLITS

    d = _dict(field, v)
    known = {"method", "num_ids", "pose_clusters", "backbone", "split", "pose_split", "gender_on", "cos_partner",
             "num_genders", "last_stride"}  # rlq.models.build_model's architecture arguments (ReIDModel.build_kwargs)
    extra = sorted(set(d) - known)
    if extra:
        raise _Bad(f"{field}.{extra[0]}", f"is not an argument of rlq.models.build_model (it takes {sorted(known)})")
    for k in ("method", "num_ids"):
        if k not in d:
            raise _Bad(f"{field}.{k}", "is missing")
    method = _str(f"{field}.method", d["method"], method_names())
    _int(f"{field}.num_ids", d["num_ids"], 1, _MAX_IDS)
    if get_method(method).parts.pose_branch and d.get("pose_clusters") is None:
        raise _Bad(f"{field}.pose_clusters", f"is missing: method {method!r} has a pose head")
    _opt(_int)(f"{field}.pose_clusters", d.get("pose_clusters"), 1, 10_000)
    for k, choices in (("backbone", BACKBONES), ("split", SPLITS), ("pose_split", POSE_SPLITS),
                       ("gender_on", PLACEMENTS), ("cos_partner", PLACEMENTS)):
        if k in d:
            _str(f"{field}.{k}", d[k], tuple(choices))
    if "num_genders" in d:
        _int(f"{field}.num_genders", d["num_genders"], 2, 64)
    if "last_stride" in d:
        _int(f"{field}.last_stride", d["last_stride"], 1, 2)


def _spec(field: str, v: Any) -> None:
    d = _dict(field, v)
    for section in ("data", "model", "train", "eval", "optim", "loss", "tad"):
        if section in d:
            _dict(f"{field}.{section}", d[section])
    ev, tr = d.get("eval") or {}, d.get("train") or {}
    if "flip" in ev:
        _bool(f"{field}.eval.flip", ev["flip"])
    if "amp" in tr:
        _str(f"{field}.train.amp", tr["amp"], _AMP)


def _position(field: str, v: Any) -> None:
    d = _dict(field, v)
    for k in _POSITION:
        if k in d or k in ("epoch", "phase", "batch"):
            if k not in d:
                raise _Bad(f"{field}.{k}", "is missing")
            _int(f"{field}.{k}", d[k])


def _numbers_in(field: str, d: Mapping[str, Any], bounds: Mapping[str, tuple[float, float]]) -> None:
    """Each of ``bounds``' keys that ``d`` holds is a number within its (low, high)."""
    for k, (lo, hi) in bounds.items():
        if k in d:
            _num(f"{field}.{k}", d[k], lo, hi)


def _optimizer(field: str, v: Any, tensors: Mapping[str, torch.Tensor], prefix: str) -> None:
    """The JSON part of :func:`rlq.runtime.state.optimizer_state_to_flat` (Adam), against its tensors."""
    d = _dict(field, v)
    for k in ("param_groups", "pids"):
        if k not in d:
            raise _Bad(f"{field}.{k}", "is missing")
    groups = _list(f"{field}.param_groups", d["param_groups"])
    if not groups:
        raise _Bad(f"{field}.param_groups", "is empty")
    params: set[int] = set()
    for i, g in enumerate(groups):
        f = f"{field}.param_groups[{i}]"
        _dict(f, g)
        if "params" not in g:
            raise _Bad(f"{f}.params", "is missing")
        for j, p in enumerate(_list(f"{f}.params", g["params"])):
            params.add(_int(f"{f}.params[{j}]", p, 0, 10**9))
        _numbers_in(f, g, {"lr": (0.0, 1e3), "eps": (0.0, 1.0), "weight_decay": (0.0, 1e3)})
        if "betas" in g:
            b = _list(f"{f}.betas", g["betas"], 2)
            _num(f"{f}.betas[0]", b[0], 0.0, 1.0)
            _num(f"{f}.betas[1]", b[1], 0.0, 1.0)
        for k in ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused"):
            if g.get(k) is not None:
                _bool(f"{f}.{k}", g[k])
    pids = {_int(f"{field}.pids[{i}]", p, 0, 10**9) for i, p in enumerate(_list(f"{field}.pids", d["pids"]))}
    stray = sorted(pids - params)
    if stray:
        raise _Bad(f"{field}.pids", f"names parameter {stray[0]}, which no param group holds")
    other = _dict(f"{field}.other", d.get("other", {}))
    for k, st in other.items():
        if not k.isdigit() or int(k) not in pids:
            raise _Bad(f"{field}.other.{k}", "is not one of the listed pids")
        _dict(f"{field}.other.{k}", st)
    head = f"{prefix}.state."
    for name in tensors:
        if name.startswith(head):
            m = _OPT_TENSOR.match(name[len(head):])
            if m is None or int(m["pid"]) not in pids:
                raise _Bad(f"{field}.pids", f"does not list the parameter of tensor {name!r}")


def _method_state(field: str, v: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    d = _dict(field, v)
    if "clothes_optim" in d:  # rlq.methods.reid.ReIDMethod.state_tensors
        _optimizer(f"{field}.clothes_optim", d["clothes_optim"], tensors, "clothes_optim")
    elif any(k.startswith(("clothes.", "clothes_optim.")) for k in tensors):
        raise _Bad(f"{field}.clothes_optim", "is missing (the weights hold the clothes classifier, trained with it)")


def _scaler(field: str, v: Any) -> None:
    if v is None:
        return
    d = _dict(field, v)
    _numbers_in(field, d, {"scale": (0.0, 1e38), "growth_factor": (1.0, 1e3), "backoff_factor": (0.0, 1.0)})
    if "growth_interval" in d:
        _int(f"{field}.growth_interval", d["growth_interval"], 1)
    if "_growth_tracker" in d:
        _int(f"{field}._growth_tracker", d["_growth_tracker"])


def _rng(field: str, v: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """The JSON part of :func:`rlq.engine.checkpoint.capture_rng`, and the shapes of its tensors."""
    d = _dict(field, v)
    if "numpy" in d:
        kind, pos, has_gauss, gauss = _list(f"{field}.numpy", d["numpy"], 4)
        _str(f"{field}.numpy[0]", kind, ("MT19937",))
        _int(f"{field}.numpy[1]", pos, 0, 624)
        _int(f"{field}.numpy[2]", has_gauss, 0, 1)
        _num(f"{field}.numpy[3]", gauss)
        t = tensors.get("rng.numpy")
        if t is None or tuple(t.shape) != (624,):
            raise _Bad(f"{field}.numpy", "has no matching rng.numpy tensor of 624 words in the weights")
    if "python" in d:
        version, st, gauss = _list(f"{field}.python", d["python"], 3)
        _int(f"{field}.python[0]", version, 1, 3)
        words = _list(f"{field}.python[1]", st, 625)
        for i, w in enumerate(words[:624]):
            _int(f"{field}.python[1][{i}]", w, 0, 2**32 - 1)
        _int(f"{field}.python[1][624]", words[624], 0, 624)
        _opt(_num)(f"{field}.python[2]", gauss)
    t = tensors.get("rng.torch")
    if t is not None and (t.dtype != torch.uint8 or t.dim() != 1):
        raise _Bad("rng.torch", "must be a 1-D uint8 tensor")


def _result_entry(field: str, v: Any) -> None:
    if v is None:
        return
    d = _dict(field, v)
    if "epoch" not in d:
        raise _Bad(f"{field}.epoch", "is missing")
    _int(f"{field}.epoch", d["epoch"])
    if "results" in d:
        _dict(f"{field}.results", d["results"])
    if "val" in d:
        _dict(f"{field}.val", d["val"])


def _selection(field: str, v: Any) -> None:
    d = _dict(field, v)
    if "metric" not in d:
        raise _Bad(f"{field}.metric", "is missing")
    _str(f"{field}.metric", d["metric"], max_len=100)
    for k in ("best_test", "best_val", "last"):
        _result_entry(f"{field}.{k}", d.get(k))
    if "max_map" in d:
        _num(f"{field}.max_map", d["max_map"], -1.0, 1.0, allow_nan=True)
    for i, h in enumerate(_list(f"{field}.history", d.get("history", []))):
        _dict(f"{field}.history[{i}]", h)


def _log_window(field: str, v: Any) -> None:
    """The trainer's log_every averaging window: sums of logged values, the steps and images in them."""
    d = _dict(field, v)
    for k in ("n", "images"):
        _int(f"{field}.{k}", d.get(k))
    for k, x in _dict(f"{field}.sums", d.get("sums")).items():
        _num(f"{field}.sums.{k}", x)


#: field -> check(field, value, tensors)
_CHECKS: dict[str, Callable[[str, Any, Mapping[str, torch.Tensor]], None]] = {
    "method": lambda f, v, t: _opt(_str)(f, v, _methods()),
    "role": lambda f, v, t: _opt(_str)(f, v, max_len=100),
    "dataset": lambda f, v, t: _opt(_str)(f, v, max_len=200),
    "input_size": lambda f, v, t: _input_size(f, v),
    "model_args": lambda f, v, t: _model_args(f, v),
    "num_train_ids": lambda f, v, t: _opt(_int)(f, v, 0, _MAX_IDS),
    "num_train_clothes": lambda f, v, t: _opt(_int)(f, v, 0, _MAX_IDS),
    "num_clothes": lambda f, v, t: _opt(_int)(f, v, 0, _MAX_IDS),
    "weights_only": lambda f, v, t: _bool(f, v),
    "epoch": lambda f, v, t: _opt(_int)(f, v),
    "selected_on": lambda f, v, t: _opt(_str)(f, v, ("test", "val")),
    "results": lambda f, v, t: _opt(_dict)(f, v),
    "spec": lambda f, v, t: _opt(_spec)(f, v),
    "summary": lambda f, v, t: _opt(_dict)(f, v),
    "position": lambda f, v, t: _position(f, v),
    "global_step": lambda f, v, t: _int(f, v),
    "skipped_batches": lambda f, v, t: _int(f, v),
    "optimizer": lambda f, v, t: _optimizer(f, v, t, "optim"),
    "method_state": _method_state,
    "scaler": lambda f, v, t: _scaler(f, v),
    "rng": _rng,
    "selection": lambda f, v, t: _selection(f, v),
    "world_size": lambda f, v, t: _int(f, v, 1, 1_000_000),
    "metrics_lines": lambda f, v, t: _opt(_int)(f, v),
    "log_window": lambda f, v, t: _log_window(f, v),
}


def _methods() -> tuple[str, ...]:
    from ..methods.registry import method_names

    return method_names()


def check_state(path: str | Path, state: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming ``path`` and the field when ``state`` (a checkpoint's state.json) holds a value
    no reader can use; see the module docstring."""
    try:
        if not isinstance(state, dict):
            raise _Bad("(top level)", f"must be an object, got {type(state).__name__}")
        from .checkpoint import FORMAT_VERSION

        if state.get("format_version") != FORMAT_VERSION:
            return  # read_checkpoint refuses other format versions with its own message
        for field, check in _CHECKS.items():
            if field in state:
                check(field, state[field], tensors)
        if state.get("weights_only") is not True and any(k in state for k in RESUME_FIELDS):
            for k in ("position", "global_step", "optimizer", "selection"):
                if k not in state:
                    raise _Bad(k, "is missing (the checkpoint holds other resume fields; it is not weights-only)")
            if "optimizer" in state and not any(k.startswith("optim.") for k in tensors) and state["optimizer"].get("pids"):
                raise _Bad("optimizer", "lists optimizer state but the weights hold none")
    except _Bad as e:
        raise CheckpointError(f"checkpoint {path}: state.json field {e.field!r} {e.problem}; the file was edited or "
                              "damaged: restore it or use another checkpoint") from None
