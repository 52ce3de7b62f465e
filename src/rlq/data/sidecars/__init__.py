"""Readers and writers for every side input: annotation CSVs, AlphaPose / COCO keypoints, LIP parsing maps.

Formats are specified in docs/datasets.md §5. Every reader validates what it reads and raises
:class:`rlq.errors.SideInputError` naming the file, the row / line / entry, the bad value and the fix.
Every writer is atomic (``rlq.io``). No torch here.

One module per format (``gender``, ``pose_clusters``, ``faulty``, ``sizes``, ``quality``, ``keypoints``,
``parsing``; shared CSV helpers in ``_common``); this package re-exports their public names, so
``from rlq.data.sidecars import X`` works for all of them. The LIP labels and palette are :mod:`rlq.data.lip`'s.
"""

from __future__ import annotations

from rlq.data.lip import ALL_CLOTHES_IDS, LIP_LABELS, LIP_PALETTE, LOWER_IDS, UPPER_IDS

from .faulty import read_faulty, read_key_list
from .gender import GENDER_HEADER, GENDER_MISSING, match_gender, read_gender_csv, write_gender_csv
from .keypoints import (
    ALPHAPOSE_FILE,
    Detection,
    read_alphapose,
    read_alphapose_tree,
    read_coco_keypoints,
    select_person,
    write_alphapose,
)
from .parsing import (
    LEGACY_PARTS,
    legacy_masks_to_labels,
    lip_region_masks,
    parsing_path,
    read_legacy_masks,
    read_parsing,
    schp_output_name,
    write_parsing,
)
from .pose_clusters import (
    POSE_CLUSTER_KS,
    POSE_COLUMNS,
    POSE_VECTOR_KINDS,
    check_coverage,
    read_pose_clusters,
    write_pose_clusters,
)
from .quality import ARTIFACTS, QUALITY_HEADER, read_quality_csv, write_quality_csv
from .sizes import SIZE_BUCKETS, read_size_csv, size_bucket

__all__ = [
    # gender
    "GENDER_HEADER",
    "GENDER_MISSING",
    "read_gender_csv",
    "write_gender_csv",
    "match_gender",
    # pose clusters
    "POSE_CLUSTER_KS",
    "POSE_VECTOR_KINDS",
    "POSE_COLUMNS",
    "read_pose_clusters",
    "write_pose_clusters",
    "check_coverage",
    # faulty lists
    "read_key_list",
    "read_faulty",
    # sizes
    "SIZE_BUCKETS",
    "size_bucket",
    "read_size_csv",
    # quality
    "QUALITY_HEADER",
    "ARTIFACTS",
    "read_quality_csv",
    "write_quality_csv",
    # keypoints
    "Detection",
    "ALPHAPOSE_FILE",
    "read_alphapose",
    "write_alphapose",
    "select_person",
    "read_alphapose_tree",
    "read_coco_keypoints",
    # parsing
    "LIP_LABELS",
    "UPPER_IDS",
    "LOWER_IDS",
    "ALL_CLOTHES_IDS",
    "LIP_PALETTE",
    "LEGACY_PARTS",
    "schp_output_name",
    "parsing_path",
    "read_parsing",
    "write_parsing",
    "lip_region_masks",
    "read_legacy_masks",
    "legacy_masks_to_labels",
]
