"""Evaluation: exact chunked CMC/mAP/mINP (``ranking``), dataset protocols and feature files (``protocols``)."""

from __future__ import annotations

from rlq.evaluation.protocols import (
    SplitLabels,
    evaluate_features_file,
    evaluate_protocol,
    features_meta,
    format_table,
    load_features,
    save_features,
    summarize,
)
from rlq.evaluation.ranking import DEFAULT_MEMORY_BUDGET_MB, chunk_size_for, evaluate, evaluate_features

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "SplitLabels",
    "chunk_size_for",
    "evaluate",
    "evaluate_features",
    "evaluate_features_file",
    "evaluate_protocol",
    "features_meta",
    "format_table",
    "load_features",
    "save_features",
    "summarize",
]
