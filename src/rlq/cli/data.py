"""Data commands: `rlq synth`, `rlq check-data`, `rlq evaluate` (wired once the library parts land)."""

from __future__ import annotations
