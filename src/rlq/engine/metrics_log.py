"""Run logs: a JSONL metrics file (append-only, truncated back to the checkpoint on resume) and TensorBoard."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger"]

log = logging.getLogger(__name__)


class MetricsLogger:
    """Writes one JSON object per line to ``metrics.jsonl`` and scalars to TensorBoard (optional, lazy)."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._truncate_after(resume_step)
        self._f = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step)
            except ImportError:
                log.info("tensorboard is not installed; logging to %s only", self.path)

    def _truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (and a torn last line) so a resumed run does not repeat them."""
        if not self.path.is_file():
            return
        keep = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("step", 0) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
        from ..io import atomic_write_text

        atomic_write_text(self.path, "".join(keep))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._f.write(json.dumps(record, default=float) + "\n")
        self._f.flush()
        if self._tb is not None:
            step = int(record.get("step", 0))
            prefix = record.get("type", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self._tb is not None:
            self._tb.close()
