"""Join keypoint files onto a dataset's samples and write its pose-cluster table (docs/method.md §3.4)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.records import Sample
from ..data.sidecars import Detection, read_alphapose_tree, read_coco_keypoints, select_person
from ..errors import DatasetError
from .pose import pose_cluster_table_with_models, write_pose_cluster_table

__all__ = ["image_sizes", "sample_detections", "cluster_dataset_poses"]


def image_sizes(samples: Sequence[Sample]) -> dict[str, tuple[int, int]]:
    """(width, height) per sample key, read from the image headers only."""
    out = {}
    for s in samples:
        try:
            with Image.open(s.path) as im:
                out[s.key] = im.size
        except OSError as e:
            raise DatasetError(f"cannot read the size of {s.path}: {e}") from None
    return out


def sample_detections(dataset_root: str | os.PathLike, samples: Sequence[Sample], keypoints: str | os.PathLike) -> dict[str, Detection | None]:
    """The selected person per sample key from an AlphaPose tree / JSON, or a COCO keypoints file."""
    kp = Path(keypoints)
    if kp.is_file() and kp.suffix == ".json" and _is_coco(kp):
        by_name = read_coco_keypoints(kp)
        return {s.key: select_person(by_name.get(Path(s.path).name, [])) for s in samples}
    by_path = read_alphapose_tree(kp, dataset_root, [s.path for s in samples])
    return {s.key: by_path.get(s.path) for s in samples}


def _is_coco(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head.startswith(b"{")


def cluster_dataset_poses(
    dataset_root: str | os.PathLike,
    samples: Sequence[Sample],
    keypoints: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    ks: Iterable[int] = (15,),
    kinds: Iterable[str] = ("R_LA",),
    seed: int = 0,
    score_threshold: float | None = None,
    category: str = "train",
) -> dict[str, dict[int, int]]:
    """Cluster the samples' poses and write the authors' CSV; returns the label histogram per column."""
    dets = sample_detections(dataset_root, samples, keypoints)
    sizes = image_sizes(samples)
    keys = [s.key for s in samples]
    columns, _ = pose_cluster_table_with_models(dets, sizes, keys, ks=tuple(ks), kinds=tuple(kinds), seed=seed,
                                                score_threshold=score_threshold)
    write_pose_cluster_table(out_csv, keys, columns, category=category)
    return {c: {int(k): int(v) for k, v in zip(*np.unique(col, return_counts=True))} for c, col in columns.items()}
