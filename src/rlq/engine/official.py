"""Read the authors' released ``.pth.tar`` checkpoints and convert them into rlq models (the entry point that
writes an rlq checkpoint folder is :func:`rlq.engine.model_io.import_official`).

The authors' code (RLQ-CGAL-UBD) saves ``torch.save({"model_state_dict", "classifier_state_dict",
"clothes_classifier_state_dict", "rank1", "epoch"})``. Its model is ``resnet50_joint2`` (the Base Model,
also the Celeb-reID TAD teacher) or ``resnet50_joint3_3`` (CAP / RLQ: the Base Model plus the pose branch).
Their parameter names map one-to-one onto :class:`~rlq.models.ReIDModel` with the default splits
(CAL/BOT after layer2, pose after layer1; docs/method.md §2.1):

============================================  ==================================================
official                                      rlq
============================================  ==================================================
``common.0`` / ``common.1``                   ``trunk.stem.conv1`` / ``trunk.stem.bn1``
``common.4`` / ``common.5``                   ``trunk.layer1`` / ``trunk.layer2``
``branch1.0`` / ``branch1.1``                 ``cal_branch.layers.layer3`` / ``.layer4``
``branch2.0`` / ``branch2.1``                 ``bot_branch.layers.layer3`` / ``.layer4``
``branch3.0`` / ``.1`` / ``.2``               ``pose_branch.layers.layer2`` / ``.layer3`` / ``.layer4``
``bn1`` / ``bn2`` / ``bn3``                   ``cal_branch.neck`` / ``bot_branch.neck`` / ``pose_branch.neck``
``identity_classifier.classifier``            ``bot_id_head``
``identity_classifier2.classifier``           ``pose_head``
classifier_state_dict ``classifier``          ``cal_id_head``
clothes_classifier_state_dict ``weight``      the clothes head (stored as ``clothes.weight``)
============================================  ==================================================

The official CAP model has no gender head in its saved state, so an imported ``cap``/``rlq`` model keeps
rlq's initialised gender head (train-only; inference never uses it) and the checkpoint says so.

Files are read with ``torch.load(weights_only=True)``; the only extra globals allowed are the NumPy scalar,
0-d array and numeric dtype constructors that ``rank1`` (a NumPy number) needs. Anything else is refused.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError

__all__ = [
    "OFFICIAL_METHODS",
    "OFFICIAL_BACKBONES",
    "OfficialCheckpoint",
    "numpy_safe_globals",
    "read_official_checkpoint",
    "official_name",
    "official_to_rlq",
]

log = logging.getLogger(__name__)

#: --method choices: ``bm``/``tad`` are the resnet50_joint2 architecture, ``cap``/``rlq`` resnet50_joint3_3.
OFFICIAL_METHODS: tuple[str, ...] = ("rlq", "cap", "bm", "tad")
_POSE_METHODS = ("rlq", "cap")
#: The authors' backbone name for each rlq method.
OFFICIAL_BACKBONES: dict[str, str] = {"rlq": "resnet50_joint3_3", "cap": "resnet50_joint3_3",
                                      "bm": "resnet50_joint2", "tad": "resnet50_joint2"}
_TOP_KEYS = ("model_state_dict", "classifier_state_dict", "clothes_classifier_state_dict", "rank1", "epoch")

# rlq prefix -> (part of the official file, official prefix). Longest rlq prefixes need no ordering: none
# is a prefix of another.
_NAME_MAP: tuple[tuple[str, str, str], ...] = (
    ("trunk.stem.conv1.", "model", "common.0."),
    ("trunk.stem.bn1.", "model", "common.1."),
    ("trunk.layer1.", "model", "common.4."),
    ("trunk.layer2.", "model", "common.5."),
    ("cal_branch.layers.layer3.", "model", "branch1.0."),
    ("cal_branch.layers.layer4.", "model", "branch1.1."),
    ("bot_branch.layers.layer3.", "model", "branch2.0."),
    ("bot_branch.layers.layer4.", "model", "branch2.1."),
    ("pose_branch.layers.layer2.", "model", "branch3.0."),
    ("pose_branch.layers.layer3.", "model", "branch3.1."),
    ("pose_branch.layers.layer4.", "model", "branch3.2."),
    ("cal_branch.neck.", "model", "bn1."),
    ("bot_branch.neck.", "model", "bn2."),
    ("pose_branch.neck.", "model", "bn3."),
    ("bot_id_head.", "model", "identity_classifier.classifier."),
    ("pose_head.", "model", "identity_classifier2.classifier."),
    ("cal_id_head.", "classifier", "classifier."),
)
#: rlq parameters the official files never contain.
_NOT_IN_OFFICIAL = ("gender_head.",)
_PART_NAMES = {"model": "model_state_dict", "classifier": "classifier_state_dict",
               "clothes": "clothes_classifier_state_dict"}
_POSE_PREFIXES = ("branch3.", "bn3.", "identity_classifier2.")


def official_name(rlq_key: str) -> tuple[str, str] | None:
    """``(part, official key)`` of an rlq model state-dict key; None for parts the official files lack."""
    for ours, part, theirs in _NAME_MAP:
        if rlq_key.startswith(ours):
            return part, theirs + rlq_key[len(ours):]
    if rlq_key.startswith(_NOT_IN_OFFICIAL):
        return None
    raise KeyError(f"no official name for rlq parameter {rlq_key!r}")


# -- safe loading ------------------------------------------------------------------------------------
def numpy_safe_globals() -> list[Any]:
    """The NumPy globals a pickled NumPy number or 0-d array needs, under both NumPy 1.x and 2.x names.

    A NumPy scalar pickles as ``multiarray.scalar(dtype, bytes)`` (the dtype is rebuilt through its DType
    class's ``__setstate__``); an array as ``multiarray._reconstruct(ndarray, ...)``. NumPy 2 writes
    ``numpy._core.multiarray``, NumPy 1 ``numpy.core.multiarray``; both names are mapped onto the installed
    functions. Only numeric and bool dtypes are allowed (object arrays would need further globals).
    """
    try:
        from numpy._core import multiarray as ma  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef] - NumPy 1.x name of the same module
    allowed: list[Any] = [np.dtype, np.ndarray]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed += [(ma.scalar, f"{mod}.scalar"), (ma._reconstruct, f"{mod}._reconstruct")]
    allowed += sorted({type(np.dtype(c)) for c in "?bhilqBHILQefd"}, key=lambda t: t.__name__)
    return allowed


#: How a PyTorch checkpoint file starts: a zip archive (torch >= 1.6) or a pickle (the legacy format; protocol 2-5).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_HEADERS = tuple(b"\x80" + bytes([v]) for v in range(2, 6))


def _sniff(path: Path) -> str:
    """``zip``, ``pickle`` or ``other`` from the first bytes of ``path``."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_PICKLE_HEADERS):
        return "pickle"
    return "other"


def _truncated(path: Path, how: str) -> CheckpointError:
    return CheckpointError(f"{str(path)!r} is a truncated or damaged PyTorch checkpoint ({how}; "
                           f"{path.stat().st_size} bytes); download or copy the file again")


def _legacy_cut_short(path: Path) -> str | None:
    """Why a legacy (pickle-format) file is incomplete, else None: its five leading pickles (magic number, protocol,
    system info, the object, the storage keys) are scanned opcode by opcode with pickletools, which runs nothing."""
    import io
    import pickletools

    with open(path, "rb") as f:
        data = io.BytesIO(f.read())
    for what in ("magic number", "protocol", "system info", "object", "storage keys"):
        try:
            for _ in pickletools.genops(data):
                pass
        except Exception as exc:  # noqa: BLE001 - ValueError("pickle exhausted before seeing STOP") and the like; reported
            return f"its {what} pickle ends early: {exc}"
    return None


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with the NumPy number globals allowed; memory-mapped for zip files.

    Files that are no PyTorch checkpoint at all (no zip or pickle header) and cut-short ones are named as such
    before torch is asked, so its messages about pickled code or internal zip errors do not mislead."""
    kind = _sniff(path)
    if kind == "other":
        raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint (no zip or pickle header); pass the "
                              "authors' .pth.tar file (or a model state dict written by torch.save)")
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise _truncated(path, "a zip archive without its central directory: the end of the file is missing")
    mmap = kind == "zip"  # torch >= 1.6 format; the legacy format cannot be memory-mapped
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - torch.load's failures have many types; each becomes a CheckpointError
        msg = str(exc)
        if isinstance(exc, EOFError) or "EOF" in msg or "corrupted" in msg or "central directory" in msg:
            first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
            raise _truncated(path, f"reading it stopped early: {first}") from None
        cut = _legacy_cut_short(path) if kind == "pickle" else None
        if cut is not None:  # a cut-short pickle can look like one naming a forbidden global
            raise _truncated(path, cut) from None
        if "Unsupported global" in msg or "weights_only" in msg.lower() or "Weights only load failed" in msg:
            detail = msg.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if "WeightsUnpickler error:" in msg \
                else msg.strip().splitlines()[-1]
            raise CheckpointError(
                f"refusing to load {str(path)!r}: it holds pickled objects other than tensors, numbers and NumPy "
                f"numbers ({detail}). rlq loads checkpoints with torch.load(weights_only=True) and never runs "
                f"pickled code; re-save the file as plain tensors (torch.save of the state dicts) if you trust it"
            ) from None
        raise CheckpointError(f"cannot read {str(path)!r} as a PyTorch checkpoint ({type(exc).__name__}: "
                              f"{msg.strip().splitlines()[0] if msg.strip() else 'no detail'}); check that it is the "
                              "authors' .pth.tar file, else download or copy it again") from None


@dataclass
class OfficialCheckpoint:
    """The parts of an official checkpoint file, keys without a ``module.`` prefix."""

    path: Path
    model: dict[str, torch.Tensor]
    classifier: dict[str, torch.Tensor] | None = None
    clothes: dict[str, torch.Tensor] | None = None
    rank1: float | None = None
    epoch: int | None = None
    bare: bool = False  #: the file was a bare model state dict (no heads dicts, no rank1/epoch)
    ignored_keys: list[str] = field(default_factory=list)  #: top-level keys other than the five known ones

    @property
    def layout(self) -> str:
        """The authors' backbone name this file's keys fit (by the presence of the pose branch)."""
        return "resnet50_joint3_3" if any(k.startswith(_POSE_PREFIXES) for k in self.model) else "resnet50_joint2"

    def part(self, name: str) -> dict[str, torch.Tensor] | None:
        """One of ``model``, ``classifier``, ``clothes``."""
        return getattr(self, name)


def _state_dict(obj: Any, what: str, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{str(path)!r}: {what} is not a non-empty name -> tensor dict (got {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{str(path)!r}: {what} has non-tensor entries {bad[:5]}")
    # DataParallel/DDP wrappers prefix every key with "module."
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _as_number(v: Any, path: Path, key: str) -> Any:
    if v is None:
        return None
    try:
        if isinstance(v, torch.Tensor):
            v = v.item()
        return np.asarray(v).item()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r}: {key!r} is not a number ({exc})") from None


def read_official_checkpoint(path: str | os.PathLike) -> OfficialCheckpoint:
    """Safely read an official ``.pth.tar`` (or a bare model state dict, or a ``module.``-prefixed one)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"official checkpoint {str(p)!r} does not exist")
    obj = _torch_load(p)
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        ck = OfficialCheckpoint(path=p, model=_state_dict(obj["model_state_dict"], "model_state_dict", p))
        for part in ("classifier", "clothes"):
            raw = obj.get(_PART_NAMES[part])
            if raw is not None:
                setattr(ck, part, _state_dict(raw, _PART_NAMES[part], p))
        ck.rank1 = _as_number(obj.get("rank1"), p, "rank1")
        epoch = _as_number(obj.get("epoch"), p, "epoch")
        ck.epoch = None if epoch is None else int(epoch)
        ck.ignored_keys = sorted(str(k) for k in obj if k not in _TOP_KEYS)
        return ck
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return OfficialCheckpoint(path=p, model=_state_dict(obj, "the state dict", p), bare=True)
    keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else None
    raise CheckpointError(
        f"{str(p)!r} is not an official RLQ checkpoint: expected a dict with {list(_TOP_KEYS)} or a bare model "
        f"state dict (name -> tensor), got {type(obj).__name__}" + (f" with keys {keys}" if keys is not None else "")
    )


# -- conversion --------------------------------------------------------------------------------------
def _shape(t: torch.Tensor | torch.Size | None) -> list[int] | None:
    return None if t is None else list(t.shape if isinstance(t, torch.Tensor) else t)


def _width(ck: OfficialCheckpoint, part: str, key: str) -> tuple[int, str] | None:
    d = ck.part(part)
    if d is None or key not in d or d[key].dim() < 1:
        return None
    return int(d[key].shape[0]), f"{_PART_NAMES[part]}[{key!r}] has shape {_shape(d[key])}"


#: Keys of a plain CAL checkpoint (CAL's single-branch ResNet-50: ``base.0`` conv1 ... ``base.7`` layer4, ``bn`` neck).
_PLAIN_CAL_PREFIXES = ("base.", "bn.")


def _check_plain_cal(ck: OfficialCheckpoint, method: str) -> None:
    """A plain CAL file (``base.*``, ``bn.*``; the authors' `--only-CAL` runs) is not importable: say so by layout."""
    cal_keys = [k for k in ck.model if k.startswith(_PLAIN_CAL_PREFIXES)]
    if cal_keys or method == "cal":
        what = (f"{str(ck.path)!r} is a plain CAL checkpoint (keys like {cal_keys[0]!r}: CAL's single-branch ResNet-50, "
                f"'base.*' + 'bn.*')" if cal_keys else "unknown --method 'cal': plain CAL checkpoints ('base.*' + 'bn.*' keys) cannot be imported")
        raise CheckpointError(
            f"{what}: rlq imports only the authors' two-branch layouts (resnet50_joint2: --method bm/tad; "
            f"resnet50_joint3_3: --method rlq/cap); retrain CAL with configs/<dataset>/cal_official.yaml instead")


def _check_method(ck: OfficialCheckpoint, method: str) -> None:
    src = str(ck.path)
    pose_keys = [k for k in ck.model if k.startswith(_POSE_PREFIXES)]
    if method in _POSE_METHODS and not pose_keys:
        raise CheckpointError(
            f"{src!r} has no pose-branch keys ('branch3.*', 'bn3.*', 'identity_classifier2.*'): it is a "
            f"resnet50_joint2 Base Model checkpoint (e.g. the Celeb-reID teacher), not the resnet50_joint3_3 "
            f"CAP/RLQ model that --method {method} expects; import it with --method bm (or --method tad)"
        )
    if method not in _POSE_METHODS and pose_keys:
        raise CheckpointError(
            f"{src!r} has pose-branch keys (e.g. {pose_keys[0]!r}): it is a resnet50_joint3_3 CAP/RLQ checkpoint, "
            f"not the resnet50_joint2 Base Model that --method {method} expects; import it with --method rlq "
            f"(or --method cap)"
        )


def _resolve_widths(ck: OfficialCheckpoint, method: str, num_ids: int | None, pose_clusters: int | None,
                    num_clothes: int | None) -> tuple[int, int | None, int | None]:
    """(num_ids, pose_clusters, num_clothes) from the file, checked against the given values."""
    src = str(ck.path)
    ids = [w for w in (_width(ck, "model", "identity_classifier.classifier.weight"),
                       _width(ck, "classifier", "classifier.weight")) if w is not None]
    if len(ids) == 2 and ids[0][0] != ids[1][0]:
        raise CheckpointError(f"{src!r}: the identity heads disagree: {ids[0][1]} but {ids[1][1]}")
    if ids:
        n, why = ids[0]
        if num_ids is not None and num_ids != n:
            raise ConfigError(f"--num-ids {num_ids} contradicts {src!r}: {why}, i.e. {n} training identities; "
                              f"pass --num-ids {n} or leave it out")
        num_ids = n
    elif num_ids is None:
        raise CheckpointError(f"{src!r} has no identity head to read the number of identities from; pass --num-ids")

    if method in _POSE_METHODS:
        pw = _width(ck, "model", "identity_classifier2.classifier.weight")
        if pw is not None:
            k = pw[0] - 1  # the pose head has K clusters + 1 null class (docs/method.md §3.4)
            if k < 1:
                raise CheckpointError(f"{src!r}: {pw[1]}: a pose head needs K+1 >= 2 classes")
            if pose_clusters is not None and pose_clusters != k:
                raise ConfigError(f"--pose-clusters {pose_clusters} contradicts {src!r}: {pw[1]}, i.e. K = {k} pose "
                                  f"clusters plus the null class; pass --pose-clusters {k} or leave it out")
            pose_clusters = k
        elif pose_clusters is None:
            raise CheckpointError(f"{src!r} has no pose head to read K from; pass --pose-clusters (15 in the paper)")
    elif pose_clusters is not None:
        raise ConfigError(f"--pose-clusters applies only to --method rlq or cap (the pose branch), not {method!r}")

    cw = _width(ck, "clothes", "weight")
    if cw is not None:
        if num_clothes is not None and num_clothes != cw[0]:
            raise ConfigError(f"--num-clothes {num_clothes} contradicts {src!r}: {cw[1]}; pass --num-clothes "
                              f"{cw[0]} or leave it out")
        num_clothes = cw[0]
    elif num_clothes is not None:
        log.warning("%s has no clothes head; --num-clothes %d is not used", src, num_clothes)
        num_clothes = None
    return num_ids, pose_clusters, num_clothes


def _check_backbone_width(ck: OfficialCheckpoint) -> None:
    w = ck.model.get("bn1.weight")
    if w is not None and _shape(w) != [4096]:
        raise CheckpointError(
            f"{str(ck.path)!r}: model_state_dict['bn1.weight'] has shape {_shape(w)}, expected [4096]: the authors' "
            f"models are ResNet-50 (Max-Avg pooled 2048 channels, docs/method.md §2.2); this file is another backbone"
        )


def _few(items: list[str], n: int = 6) -> str:
    return "; ".join(items[:n]) + (f"; (+{len(items) - n} more)" if len(items) > n else "")


def official_to_rlq(
    ck: OfficialCheckpoint,
    *,
    method: str,
    num_ids: int | None = None,
    pose_clusters: int | None = None,
    num_clothes: int | None = None,
) -> tuple[torch.nn.Module, torch.Tensor | None, dict[str, Any]]:
    """Build the rlq model for ``method`` and fill it from ``ck``: returns (model in eval mode, clothes head
    weight or None, info). Every key and shape is checked; errors name the key, both shapes and the fix."""
    from ..models import build_model

    _check_plain_cal(ck, method)
    if method not in OFFICIAL_METHODS:
        raise ConfigError(f"unknown --method {method!r}; choose one of {list(OFFICIAL_METHODS)}")
    _check_method(ck, method)
    _check_backbone_width(ck)
    num_ids, pose_clusters, num_clothes = _resolve_widths(ck, method, num_ids, pose_clusters, num_clothes)
    model = build_model(method=method, num_ids=num_ids, pose_clusters=pose_clusters, backbone="resnet50",
                        pretrained="none", split="layer2", pose_split="layer1", seed=0)
    own = model.state_dict()
    src = str(ck.path)
    hint = (f"the file looks like a {ck.layout} model; check --method (rlq/cap for resnet50_joint3_3, bm/tad for "
            f"resnet50_joint2) and --num-ids (this import used num_ids={num_ids}"
            + (f", pose_clusters={pose_clusters}" if pose_clusters else "") + ")")

    loaded: dict[str, torch.Tensor] = {}
    expected: dict[str, set[str]] = {"model": set(), "classifier": set()}
    missing: list[str] = []
    bad_shape: list[str] = []
    not_imported: list[str] = []
    for key, param in own.items():
        name = official_name(key)
        if name is None:
            not_imported.append(key)
            continue
        part, theirs = name
        expected[part].add(theirs)
        d = ck.part(part)
        if d is None:  # a bare state dict has no classifier_state_dict: the CAL-ID head stays initialised
            continue
        if theirs not in d:
            missing.append(f"{_PART_NAMES[part]}[{theirs!r}] (rlq {key}, expected shape {_shape(param)})")
            continue
        t = d[theirs]
        if _shape(t) != _shape(param):
            bad_shape.append(f"{_PART_NAMES[part]}[{theirs!r}] has shape {_shape(t)}, rlq {key} needs {_shape(param)}")
            continue
        loaded[key] = t
    unexpected = [f"{_PART_NAMES[part]}[{k!r}] {_shape(v)}" for part in ("model", "classifier")
                  for k, v in (ck.part(part) or {}).items() if k not in expected[part]]
    if ck.clothes is not None:
        unexpected += [f"clothes_classifier_state_dict[{k!r}] {_shape(v)}" for k, v in ck.clothes.items() if k != "weight"]
    if bad_shape:
        raise CheckpointError(f"{src!r} does not fit rlq's {method} model: shape mismatch: {_few(bad_shape)}. {hint}")
    if missing:
        raise CheckpointError(f"{src!r} does not fit rlq's {method} model: missing keys: {_few(missing)}. {hint}")
    if unexpected:
        raise CheckpointError(f"{src!r} does not fit rlq's {method} model: unexpected keys: {_few(unexpected)}. {hint}")

    clothes_w: torch.Tensor | None = None
    if ck.clothes is not None:
        clothes_w = ck.clothes.get("weight")
        if clothes_w is None or clothes_w.dim() != 2 or clothes_w.shape[1] != model.feat_dim:
            raise CheckpointError(
                f"{src!r}: clothes_classifier_state_dict['weight'] has shape {_shape(clothes_w)}, expected "
                f"[num_clothes, {model.feat_dim}] (a cosine head on f_CAL, docs/method.md §2.3)")

    result = model.load_state_dict(loaded, strict=False)
    # Not loaded: train-only parts the official files never hold, and heads whose dict the file lacks.
    missing_heads = sorted({k.split(".")[0] for k in result.missing_keys if official_name(k) is not None})
    if ck.clothes is None:
        missing_heads.append("clothes")
    model.eval()
    info = {
        "num_ids": num_ids,
        "pose_clusters": pose_clusters,
        "num_clothes": num_clothes,
        "official_backbone": ck.layout,
        "missing_heads": missing_heads,
        "not_imported": sorted({k.rsplit(".", 1)[0] for k in not_imported}),
    }
    return model, clothes_w, info
