"""Evaluation: exact chunked CMC/mAP/mINP (``ranking``), dataset protocols and feature files (``protocols``),
bootstrap confidence intervals and paired comparisons (``bootstrap``)."""

from __future__ import annotations

from rlq.evaluation.bootstrap import (
    PerQuery,
    add_intervals,
    bootstrap_ci,
    ci_info,
    load_per_query,
    paired_bootstrap_ci,
    save_per_query,
    with_intervals,
)
from rlq.evaluation.protocols import (
    SplitLabels,
    evaluate_features_file,
    evaluate_protocol,
    features_meta,
    format_table,
    load_features,
    query_group_results,
    save_features,
    summarize,
)
from rlq.evaluation.ranking import DEFAULT_MEMORY_BUDGET_MB, chunk_size_for, evaluate, evaluate_features

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "PerQuery",
    "add_intervals",
    "bootstrap_ci",
    "ci_info",
    "load_per_query",
    "paired_bootstrap_ci",
    "query_group_results",
    "save_per_query",
    "with_intervals",
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
