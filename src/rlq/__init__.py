"""rlq: clothes-changing person re-identification robust to low-quality images (RLQ = CAP + TAD)."""

from __future__ import annotations

__version__ = "0.1.0"

# The public API is imported lazily so that `import rlq` stays cheap and torch-free.
_LAZY = {
    "load_dataset": ("rlq.data.datasets", "load_dataset"),
    "evaluate": ("rlq.evaluation.ranking", "evaluate"),
    "evaluate_features": ("rlq.evaluation.ranking", "evaluate_features"),
    "build_model": ("rlq.models", "build_model"),
    "FeatureExtractor": ("rlq.deploy", "FeatureExtractor"),
    "GalleryIndex": ("rlq.deploy", "GalleryIndex"),
    "Searcher": ("rlq.deploy", "Searcher"),
    "export_onnx": ("rlq.export.onnx", "export_onnx"),
    "run_training": ("rlq.engine.recipe", "run_training"),
    "evaluate_model": ("rlq.engine.evaluate", "evaluate_model"),
    "RunSpec": ("rlq.spec", "RunSpec"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'rlq' has no attribute {name!r}")


__all__ = ["__version__"] + list(_LAZY)
