"""Checkpoints <-> models: the one place to go from a file to a model and back.

:func:`load_model_checkpoint` rebuilds the model of an rlq checkpoint folder (or run folder) and
:func:`save_model_checkpoint` writes one; :func:`load_teacher` loads a frozen TAD teacher (docs/method.md §5.3);
:func:`import_official` turns the authors' ``.pth.tar`` files into rlq checkpoint folders (the conversion tables
live in :mod:`rlq.engine.official`); :func:`run_eval_settings` says how a checkpoint's run evaluated (flip and
precision), the defaults of every command that re-evaluates it (docs/method.md §2.5).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..io import sha256_file
from ..methods.registry import get_method
from ..models import build_model
from ..runtime.device import AMP_DTYPES, amp_mode
from ..spec import ROLES as _ROLES
from .checkpoint import read_checkpoint, resolve_checkpoint

__all__ = [
    "load_model_checkpoint",
    "save_model_checkpoint",
    "load_teacher",
    "run_eval_settings",
    "import_official",
    "ImportResult",
    "checkpoint_description",
]

log = logging.getLogger(__name__)


def run_eval_settings(state: dict[str, Any], device: torch.device) -> tuple[bool, torch.dtype | None]:
    """How a checkpoint's own run evaluated: ``(flip, autocast dtype)``.

    ``flip`` is the run's ``eval.flip`` (docs/method.md §2.5: on; also for checkpoints without a run spec, e.g.
    imported ones). The dtype follows the run's ``train.amp`` on CUDA (bf16 for a checkpoint without a run spec)
    and is None (fp32) on CPU. Commands that re-evaluate a run use these as defaults, so they reproduce its numbers.
    """
    spec = state.get("spec") or {}
    flip = bool((spec.get("eval") or {}).get("flip", True))
    if device.type != "cuda":
        return flip, None
    return flip, AMP_DTYPES[amp_mode((spec.get("train") or {}).get("amp", "auto"), device)]



def load_model_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu", prefer: str = "best",
                          as_method: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint (folder or run folder) and load its weights; no pickle.

    ``as_method="bm"`` loads only the Base Model parts of a CAP/RLQ checkpoint (pose branch and train-only
    heads dropped), e.g. for a "CAP teacher".
    """
    ck = resolve_checkpoint(path, prefer=prefer)
    tensors, state = read_checkpoint(ck)
    args = dict(state.get("model_args") or {})
    if not args:
        raise CheckpointError(f"{ck} has no model_args: it was not written by `rlq train`")
    if as_method is not None:
        args["method"] = as_method
        if not get_method(as_method).parts.pose_branch:
            args["pose_clusters"] = None
    model = build_model(**args, pretrained="none")
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if as_method is not None:
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=as_method is None)
    except RuntimeError as e:  # shapes or names that do not fit the model its model_args describe
        detail = " ".join(str(e).split())
        raise CheckpointError(f"checkpoint {ck}: its weights do not fit the model its state.json describes "
                              f"({detail[:300]}); the checkpoint was edited or damaged: use another one") from None
    if missing:
        raise CheckpointError(f"{ck}: weights missing for {missing[:5]}")
    model.to(device).eval()
    return model, {**state, "checkpoint": str(ck)}


def save_model_checkpoint(model: torch.nn.Module, out_dir: str | os.PathLike, *, input_size: tuple[int, int] = (384, 192),
                          extra_tensors: dict[str, torch.Tensor] | None = None, **meta: Any) -> Path:
    """Write a weights-only checkpoint folder (safetensors + JSON + checksums) that `rlq eval`, `rlq export`
    and :func:`load_model_checkpoint` read; ``meta`` goes into its state (e.g. role="teacher", dataset=...).
    ``extra_tensors`` (names outside ``model.``, e.g. ``clothes.weight``) are stored alongside."""
    from .checkpoint import write_checkpoint_dir

    out = Path(out_dir)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        if k.startswith("model."):
            raise ValueError(f"extra tensor {k!r} would overwrite a model weight")
        tensors[k] = v
    state = {"method": model.method, "model_args": model.build_kwargs, "input_size": list(input_size),
             "weights_only": True, **meta}
    return write_checkpoint_dir(out, tensors, state)  # no manager: it would create a stray checkpoints/ folder


def load_teacher(path: str, *, force: bool, device: torch.device) -> torch.nn.Module:
    """A frozen Base Model teacher (docs/method.md §5.3); refuses checkpoints without teacher-recipe metadata."""
    ck = resolve_checkpoint(path, prefer="last")
    _, state = read_checkpoint(ck)
    role = state.get("role")
    method = (state.get("model_args") or {}).get("method")
    if role != "teacher" and not force:
        raise CheckpointError(
            f"{ck} was not trained with a teacher recipe (role={role!r}, method={method!r}); train one with "
            "`rlq train --config configs/teacher/celeb.yaml` or pass tad.force_teacher=true to use it anyway"
        )
    parts = get_method(method).parts if method is not None else None
    if parts is not None and not parts.bot_branch:
        raise CheckpointError(f"{ck} is a single-branch CAL model (method {method!r}); a TAD teacher needs the "
                              "two-branch Base Model")
    # the "CAP teacher" variant: the Base Model parts only (pose branch and gender head dropped)
    as_method = "bm" if parts is not None and (parts.pose_branch or parts.gender_head) else None
    teacher, _ = load_model_checkpoint(ck, device=device, prefer="last", as_method=as_method)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


# -- the authors' checkpoints (conversion tables: rlq.engine.official) ----------------------------------------
@dataclass
class ImportResult:
    """What :func:`import_official` wrote."""

    checkpoint: Path
    method: str
    role: str
    num_ids: int
    pose_clusters: int | None
    num_clothes: int | None
    official_backbone: str
    missing_heads: list[str]
    notes: list[str]


def import_official(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    method: str,
    num_ids: int | None = None,
    pose_clusters: int | None = None,
    num_clothes: int | None = None,
    role: str = "model",
    dataset: str | None = None,
    input_size: tuple[int, int] = (384, 192),
    clothes_head: bool = True,
) -> ImportResult:
    """Convert an official checkpoint into an rlq checkpoint folder (safetensors + JSON + SHA-256 manifest).

    The folder is what `rlq eval`, `extract`, `search`, `export` and :func:`load_teacher`
    read. ``role="teacher"`` marks it as a TAD teacher (docs/method.md §5.3). ``input_size`` is the
    authors' 384×192 (docs/method.md §2.1). ``clothes_head=False`` leaves the clothes head out (LaST's is
    803 M parameters; nothing at inference or in TAD's teacher reads it).
    """
    from .official import official_to_rlq, read_official_checkpoint

    if role not in _ROLES:
        raise ConfigError(f"unknown --role {role!r}; choose one of {list(_ROLES)}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"output {str(out)!r} exists and is not an empty folder; choose a new --out")
    ck = read_official_checkpoint(path)
    model, clothes_w, info = official_to_rlq(ck, method=method, num_ids=num_ids, pose_clusters=pose_clusters,
                                             num_clothes=num_clothes)
    notes: list[str] = []
    if ck.bare:
        notes.append(
            "bare model state dict: the CAL identity head and the clothes head are not in the file; the "
            "checkpoint carries rlq's initial values for the CAL-ID head (docs/method.md §2.3). Inference "
            "(eval, extract, search, export) and a TAD teacher use no heads (docs/method.md §2.5, §5.3), but do "
            "not fine-tune or resume from it")
    elif info["missing_heads"]:
        notes.append(f"the file lacks {info['missing_heads']}; they keep rlq's initial values")
    if info["not_imported"]:
        notes.append(f"{info['not_imported']} are not in the authors' files (train-only); they keep rlq's "
                     f"initial values")
    if ck.ignored_keys:
        notes.append(f"ignored top-level keys {ck.ignored_keys}")
    for n in notes:
        log.warning("%s: %s", ck.path, n)
    extra: dict[str, torch.Tensor] = {}
    if clothes_w is not None and clothes_head:
        extra["clothes.weight"] = clothes_w
    meta: dict[str, Any] = {
        "role": role,
        "imported_from": {
            "file": str(ck.path.resolve()),
            "sha256": sha256_file(ck.path),
            "format": "RLQ-CGAL-UBD torch.save (official)",
            "official_backbone": info["official_backbone"],
            "rank1": ck.rank1,
            # their file's `epoch` key holds the 0-based loop index; their file names and logs count from 1
            # (checkpoint_ep<index + 1>.pth.tar)
            "epoch_index_0based": ck.epoch,
            "epoch_1based": None if ck.epoch is None else ck.epoch + 1,
            "bare_state_dict": ck.bare,
        },
        "num_train_ids": info["num_ids"],
        "num_clothes": info["num_clothes"] if (clothes_w is not None and clothes_head) else None,
        "missing_heads": info["missing_heads"],
        "not_imported": info["not_imported"],
        "notes": notes,
    }
    if dataset:
        meta["dataset"] = dataset
    written = save_model_checkpoint(model, out, input_size=input_size, extra_tensors=extra, **meta)
    return ImportResult(checkpoint=written, method=method, role=role, num_ids=info["num_ids"],
                        pose_clusters=info["pose_clusters"], num_clothes=meta["num_clothes"],
                        official_backbone=info["official_backbone"], missing_heads=info["missing_heads"], notes=notes)


def checkpoint_description(state: dict[str, Any]) -> str:
    """Which weights a loaded checkpoint holds, in words, for pictures and reports (epochs counted from 1).

    ``best (selected on test, epoch 3)`` for a selected checkpoint; ``weights after the last epoch (epoch 3 of 3)``
    for the final numbered checkpoint of a finished run (what a run's ``test@last`` results were computed on);
    ``weights after epoch 2 of 3`` or ``weights mid-epoch 2 of 3`` for an earlier one; else the folder's name.
    """
    name = Path(str(state.get("checkpoint") or "")).name or "checkpoint"
    if state.get("selected_on") is not None and state.get("epoch") is not None:
        return f"{name} (selected on {state['selected_on']}, epoch {int(state['epoch']) + 1})"
    pos = state.get("position")
    if isinstance(pos, dict) and pos.get("epoch") is not None:
        total = ((state.get("spec") or {}).get("train") or {}).get("epochs")
        of = f" of {int(total)}" if total else ""
        done = int(pos["epoch"])
        if pos.get("phase", 0) or pos.get("batch", 0):
            return f"weights mid-epoch {done + 1}{of} ({name})"
        if total and done == int(total):
            return f"weights after the last epoch (epoch {done}{of})"
        return f"weights after epoch {done}{of} ({name})"
    return name
