"""Analyses of trained models that make the paper's qualitative claims measurable.

``robustness``: metrics per artifact and severity (paper Fig. 8 left) under rlq's own grid, a corruption-benchmark
grid, or the authors' LQ test protocol, each labelled (docs/method.md §12);
``lq_clusters``: do LQ images cluster regardless of identity (Fig. 7); ``buckets``: metrics per query-quality
bucket (Table 10 style); ``ranklist``: ranked-result pictures (Fig. 9) and the gender of top-1 mistakes
(Fig. 8 right); ``report``: ``report.md`` + ``analysis.json``. Results are plain JSON-able dicts; pictures are
optional PNGs (matplotlib, the ``viz`` extra, except the rank list, which uses PIL).
"""

from __future__ import annotations

from .buckets import (
    bucket_metrics,
    buckets_markdown,
    image_heights,
    plot_buckets,
    protocol_bucket_metrics,
    quality_buckets,
    quality_order,
    size_buckets,
    size_csv_buckets,
)
from .lq_clusters import (
    draw_lq_plan,
    lq_cluster_diagnostics,
    lq_cluster_metrics,
    lq_clusters_markdown,
    nearest_neighbours,
    plot_tsne,
)
from .ranklist import (
    STATUS_COLORS,
    gender_awareness,
    gender_markdown,
    load_test_gender,
    match_status,
    plot_gender,
    rank_list_figure,
    top1_after_junk,
)
from .report import demo_analysis, write_report
from .robustness import (
    CORRUPTION_DEFINITION,
    CORRUPTION_PROTOCOL,
    LQ_PROTOCOLS,
    ROBUSTNESS_DEFINITION,
    ROBUSTNESS_PROTOCOL,
    corrupt_transform,
    degrade_transform,
    level_skip_reason,
    plot_robustness,
    robustness_markdown,
    robustness_sweep,
    robustness_sweeps,
)

__all__ = [
    "CORRUPTION_DEFINITION",
    "CORRUPTION_PROTOCOL",
    "LQ_PROTOCOLS",
    "ROBUSTNESS_DEFINITION",
    "ROBUSTNESS_PROTOCOL",
    "STATUS_COLORS",
    "bucket_metrics",
    "buckets_markdown",
    "corrupt_transform",
    "degrade_transform",
    "demo_analysis",
    "draw_lq_plan",
    "gender_awareness",
    "gender_markdown",
    "image_heights",
    "level_skip_reason",
    "load_test_gender",
    "lq_cluster_diagnostics",
    "lq_cluster_metrics",
    "lq_clusters_markdown",
    "match_status",
    "nearest_neighbours",
    "plot_buckets",
    "plot_gender",
    "plot_robustness",
    "plot_tsne",
    "protocol_bucket_metrics",
    "quality_buckets",
    "quality_order",
    "rank_list_figure",
    "robustness_markdown",
    "robustness_sweep",
    "robustness_sweeps",
    "size_buckets",
    "size_csv_buckets",
    "top1_after_junk",
    "write_report",
]
