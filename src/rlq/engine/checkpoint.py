"""Checkpoints that load without executing code and survive being killed mid-write.

A checkpoint is a folder: ``weights.safetensors`` (every tensor: model, heads, optimizer moments,
RNG states), ``state.json`` (everything else: epoch and data position, optimizer hyper-parameters,
history, the run spec) and ``MANIFEST.json`` (SHA-256 and size of both, written last). It is built in
a temporary sibling folder and renamed into place, then ``latest.json`` is atomically repointed. A
folder whose manifest is missing or does not match is *torn*: loading falls back to the previous
good checkpoint with a warning.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CheckpointError
from ..io import atomic_write_bytes, atomic_write_json, replace_dir, sha256_file
from .faults import fault_active, fault_point
from .state_check import check_state

__all__ = [
    "CheckpointManager",
    "write_checkpoint_dir",
    "verify_checkpoint",
    "read_checkpoint",
    "capture_rng",
    "restore_rng",
    "resolve_checkpoint",
]

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
STATE = "state.json"
MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 1
#: Names of numbered checkpoints (``e<epoch>-s<global step>``); the only names ``latest.json`` may list.
NUMBERED = re.compile(r"e\d{4,}-s\d{8,}")


def _fsync_tree(path: Path) -> None:
    for p in [*path.iterdir(), path]:
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


def verify_checkpoint(path: str | os.PathLike) -> str | None:
    """None if the checkpoint folder is complete and its checksums match, else the reason."""
    p = Path(path)
    if not p.is_dir():
        return f"{p} is not a checkpoint folder"
    mf = p / MANIFEST
    if not mf.is_file():
        return f"{p} has no {MANIFEST} (written last: the write was interrupted)"
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{mf} is unreadable: {e}"
    for name, info in files.items():
        f = p / name
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != info.get("size"):
            return f"{f} has size {f.stat().st_size}, manifest says {info.get('size')}"
        if sha256_file(f) != info.get("sha256"):
            return f"{f} does not match its checksum"
    return None


def read_checkpoint(path: str | os.PathLike, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load (tensors, state) from a checkpoint folder; safetensors + JSON only, never pickle."""
    p = Path(path)
    if verify:
        reason = verify_checkpoint(p)
        if reason is not None:
            raise CheckpointError(f"checkpoint {p} is torn or corrupt: {reason}")
    try:
        tensors = st_load((p / WEIGHTS).read_bytes())
        state = json.loads((p / STATE).read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types; re-raised as CheckpointError
        raise CheckpointError(f"cannot read checkpoint {p}: {e}") from None
    check_state(p, state, tensors)  # every field a reader uses, typed and bounded (rlq.engine.state_check)
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {p} has format version {state.get('format_version')}, expected {FORMAT_VERSION}")
    return tensors, state


def resolve_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """Accept a checkpoint folder, or a run folder (then its ``checkpoints/<prefer>`` or latest good one)."""
    p = Path(path)
    if (p / MANIFEST).is_file() or (p / WEIGHTS).is_file():
        return p
    ck = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    if (ck / prefer / MANIFEST).is_file():
        return ck / prefer
    mgr = CheckpointManager(ck.parent if ck.name == "checkpoints" else ck, create=False)
    good = mgr.latest_good()
    if good is None:
        raise CheckpointError(
            f"{p} holds no usable checkpoint (expected a checkpoint folder with {MANIFEST}, or a run folder with checkpoints/)"
        )
    return good


def write_checkpoint_dir(final: Path, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> Path:
    """Build the checkpoint in a temporary sibling folder, then rename it to ``final``."""
    name = final.name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if fault_active("disk-full"):  # test-only hook (rlq.engine.faults): a full disk at this write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / WEIGHTS))
        flat = {k: v.detach().to("cpu").contiguous().clone() if v.is_cuda or not v.is_contiguous() else v.detach().cpu()
                for k, v in tensors.items()}
        atomic_write_bytes(tmp / WEIGHTS, st_save(flat), fsync=True)
        atomic_write_json(tmp / STATE, {"format_version": FORMAT_VERSION, "saved_at": time.time(), **state})
        fault_point("ckpt-write")  # test-only hook (rlq.engine.faults); a no-op unless RLQ_FAULT_INJECT is set
        files = {f: {"sha256": sha256_file(tmp / f), "size": (tmp / f).stat().st_size} for f in (WEIGHTS, STATE)}
        atomic_write_json(tmp / MANIFEST, {"files": files})
        _fsync_tree(tmp)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class CheckpointManager:
    """Writes numbered checkpoints under ``<run_dir>/checkpoints`` atomically; keeps the last N."""

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 2, create: bool = True) -> None:
        # create=True makes the folder now; the Trainer passes False and lets save() create it on first write.
        self.dir = Path(run_dir) / "checkpoints"
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_last = max(1, keep_last)

    # -- writing -------------------------------------------------------------------------------
    def save(self, name: str, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any], *, pointer: bool = True) -> Path:
        """Write checkpoint ``name`` (e.g. ``e0004-s00000012``, ``best``); returns its folder. Only numbered
        names (``e<epoch>-s<step>``) go into the resume pointer (``pointer=True``)."""
        if pointer and NUMBERED.fullmatch(name) is None:
            raise ValueError(f"checkpoint name {name!r}: a resumable checkpoint is named e<epoch>-s<step> (or pass pointer=False)")
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"checkpoint name {name!r} must be a plain folder name")
        final = write_checkpoint_dir(self.dir / name, tensors, state)
        if pointer:
            history = self._history()
            history = [h for h in history if h != name] + [name]
            atomic_write_json(self.dir / "latest.json", {"latest": name, "history": history})
            self._prune(history)
        return final

    def _is_own(self, name: object) -> bool:
        """True for a numbered checkpoint folder directly inside this run's ``checkpoints/`` (no path, no link)."""
        if not isinstance(name, str) or NUMBERED.fullmatch(name) is None:
            return False
        p = self.dir / name
        return not p.is_symlink() and p.parent == self.dir

    def _history(self) -> list[str]:
        """The pointer's history, keeping only entries that name a numbered checkpoint folder of this run: an
        edited ``latest.json`` can never make resume read, or clean-up delete, anything else."""
        try:
            data = json.loads((self.dir / "latest.json").read_text(encoding="utf-8"))
            history = data.get("history", []) if isinstance(data, dict) else []
            history = history if isinstance(history, list) else []
        except (OSError, ValueError):
            return sorted(p.name for p in self.dir.glob("e*-s*") if p.is_dir() and self._is_own(p.name))
        bad = [h for h in history if not self._is_own(h)]
        if bad:
            log.warning("%s lists entries that are not checkpoint folders of this run; ignoring them (never deleted): %s",
                        self.dir / "latest.json", ", ".join(repr(b) for b in bad[:5]))
        return [h for h in history if self._is_own(h)]

    def _prune(self, history: list[str]) -> None:
        keep = set(history[-self.keep_last :])
        for name in history[: -self.keep_last]:
            if name not in keep and self._is_own(name):  # never outside checkpoints/ (checked again here)
                shutil.rmtree(self.dir / name, ignore_errors=True)
        if len(history) > self.keep_last:
            atomic_write_json(self.dir / "latest.json", {"latest": history[-1], "history": history[-self.keep_last :]})
        for stray in self.dir.glob(".*.tmp-*"):
            shutil.rmtree(stray, ignore_errors=True)

    # -- reading -------------------------------------------------------------------------------
    def candidates(self) -> list[Path]:
        """Resume candidates, newest first (pointer history, then any other numbered folder)."""
        if not self.dir.is_dir():
            return []
        names = self._history()
        others = sorted((p.name for p in self.dir.glob("e*-s*") if p.is_dir() and p.name not in names and self._is_own(p.name)),
                        reverse=True)
        return [self.dir / n for n in reversed(names)] + [self.dir / n for n in others]

    def latest_good(self) -> Path | None:
        """Newest checkpoint whose checksums match; torn ones are reported and skipped."""
        for c in self.candidates():
            reason = verify_checkpoint(c)
            if reason is None:
                return c
            log.warning("skipping torn checkpoint %s (%s); falling back to the previous one", c, reason)
        return None


# -- RNG state as (tensors, JSON); optimizer state: rlq.runtime.state ---------------------------------
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states (torch CPU/CUDA, NumPy, Python) as tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where the devices exist)."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
        if states and len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in states])
    if "rng.numpy" in tensors and "numpy" in meta:
        kind, pos, has_gauss, gauss = meta["numpy"]
        np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "python" in meta:
        v, st, g = meta["python"]
        random.setstate((v, tuple(st), g))
