"""Run logs: a JSONL metrics file (append-only, truncated back to the checkpoint on resume) and TensorBoard.

Each checkpoint records how many lines the metrics file held when it was written (``metrics_lines``);
resuming from it cuts the file back to exactly those lines, so a killed-and-resumed run holds one line
per logged step and evaluation. TensorBoard events from the resumed step on are purged (``purge_step``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..io import json_dumps

__all__ = ["MetricsLogger"]

log = logging.getLogger(__name__)


class MetricsLogger:
    """Writes one JSON object per line to ``metrics.jsonl`` and scalars to TensorBoard (optional, lazy)."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None,
                 resume_lines: int | None = None) -> None:
        """``resume_step``: the global step of the checkpoint resumed from (None: a new run);
        ``resume_lines``: the number of metrics lines that checkpoint recorded (older checkpoints: None,
        then lines logged after ``resume_step`` are dropped)."""
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        self.lines = 0
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.lines = self._truncate(resume_step, resume_lines)
        elif self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                self.lines = sum(1 for _ in f)
        self._f = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # events at or after purge_step are hidden: the resumed run logs step resume_step + 1 next
                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge)
            except ImportError:
                log.info("tensorboard is not installed; logging to %s only", self.path)

    def _truncate(self, step: int, lines: int | None) -> int:
        """Keep the first ``lines`` lines (or, without a count, those logged at or before ``step``), dropping
        what the killed run logged after its checkpoint and a torn last line; returns the lines kept."""
        if not self.path.is_file():
            return 0
        keep = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if lines is not None and len(keep) >= lines:
                    break
                if not line.endswith("\n"):
                    break  # torn by the kill
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if lines is not None or rec.get("step", 0) <= step:
                    keep.append(line)
        from ..io import atomic_write_text

        atomic_write_text(self.path, "".join(keep))
        return len(keep)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # strict JSON: a NaN loss or metric is written as null (docs/design.md, Habits); TensorBoard gets the value
        self._f.write(json_dumps(record, default=float) + "\n")
        self._f.flush()
        self.lines += 1
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
