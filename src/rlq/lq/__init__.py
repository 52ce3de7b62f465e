"""Synthetic low-quality images (docs/method.md §5.2): pixelation, out-of-focus and motion blur.

``reference`` holds simple per-image numpy/PIL implementations (torch-free); ``batched`` the
tensor implementation that runs inside the training step (GPU or CPU); ``mix`` the per-dataset
artifact mixes and parameter ranges; ``severity`` graded levels for robustness analysis; ``corruption`` the
corruption-benchmark grid (ImageNet-C's severities 1-5, docs/method.md §12);
``preview`` the Figure-14-style sheet. Attributes are imported lazily so that
``import rlq.lq.reference`` does not import torch.
"""

from __future__ import annotations

_LAZY = {
    "ARTIFACT_CODES": "mix", "LQMix": "mix", "LQ_RANGES": "mix", "mix_for_dataset": "mix", "draw_lq": "mix",
    "synthesize_batch": "batched", "reference_synthesize": "batched",
    "SEVERITY_GRID": "severity", "degrade_batch": "severity",
    "CORRUPTION_GRID": "corruption", "corrupt_batch": "corruption",
    "lq_preview_sheet": "preview",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
