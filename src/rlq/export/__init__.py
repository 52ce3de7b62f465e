"""Export of trained models: ONNX with a parity check against PyTorch, model cards, responsible-use text."""

from __future__ import annotations

from .model_card import build_model_card, find_run_results, responsible_use_text

__all__ = ["export_onnx", "check_onnx_parity", "synthetic_check_images", "build_model_card", "find_run_results",
           "responsible_use_text"]


def __getattr__(name: str):
    # onnx.py imports torch; keep `from rlq.export import responsible_use_text` light.
    if name in ("export_onnx", "check_onnx_parity", "synthetic_check_images", "model_card_path"):
        from . import onnx as _onnx

        return getattr(_onnx, name)
    raise AttributeError(f"module 'rlq.export' has no attribute {name!r}")
