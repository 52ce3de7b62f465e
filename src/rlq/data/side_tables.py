"""Join side inputs (gender, pose clusters, parsing maps, faulty-mask lists) onto a dataset's train
samples by their stable keys, with coverage checks and explicit policies for what is missing."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, SideInputError
from .records import Dataset
from .sidecars import (
    check_coverage,
    match_gender,
    parsing_path,
    read_faulty,
    read_gender_csv,
    read_pose_clusters,
    read_quality_csv,
)

__all__ = ["TrainSideInputs", "build_side_inputs", "default_side_paths", "quality_groups", "POSE_MISSING", "PARSING_MISSING"]

#: Train images without a pose-cluster row: refused, or cluster 0 ("null").
POSE_MISSING = ("error", "null")
#: Train images without a parsing map: refused, or an unmodified copy keeping the real clothes label (docs/method.md §3.3).
PARSING_MISSING = ("error", "copy")

log = logging.getLogger(__name__)


@dataclass
class TrainSideInputs:
    """Per-train-sample arrays (aligned with ``dataset.train``)."""

    gender: np.ndarray | None = None  # int64, -1 = unknown
    pose: np.ndarray | None = None  # int64, 0 = no pose
    parsing_paths: list[str | None] | None = None
    faulty: np.ndarray | None = None  # bool
    notes: list[str] = field(default_factory=list)


def default_side_paths(dataset_name: str, root: str | os.PathLike) -> dict[str, str | None]:
    """Where SynthCC keeps its side inputs (other datasets: nothing is assumed)."""
    r = Path(root)
    if dataset_name != "synthcc":
        return {}
    return {
        "gender_csv": str(r / "SynthCC_Gender.csv"),
        "parsing_root": str(r / "parsing"),
        "pose_csv": str(r / "pose_clusters.csv") if (r / "pose_clusters.csv").is_file() else None,
    }


def build_side_inputs(
    dataset: Dataset,
    *,
    need_gender: bool = False,
    need_pose: bool = False,
    need_parsing: bool = False,
    gender_csv: str | None = None,
    gender_missing: str = "error",
    pose_csv: str | None = None,
    pose_column: str = "R_LA_15",
    pose_missing: str = "error",
    pose_clusters: int | None = None,
    parsing_root: str | None = None,
    parsing_missing: str = "error",
    faulty_pant: str | None = None,
    faulty_shirt: str | None = None,
) -> TrainSideInputs:
    """Build the side inputs a method needs; raise with the file and the fix when one is missing."""
    if parsing_missing not in PARSING_MISSING:
        raise ConfigError(f"data.parsing_missing must be one of {', '.join(PARSING_MISSING)}, got {parsing_missing!r}")
    train = dataset.train
    out = TrainSideInputs()
    if need_gender:
        if gender_csv is None:
            raise ConfigError(
                "this method has a gender head: set data.gender_csv to a CSV 'Category,ID,Gender' (1 male, 0 female) "
                "covering every train identity (`rlq gender sheet` makes a template for a new dataset)"
            )
        table = read_gender_csv(gender_csv, categories={"train"})
        per_pid, missing = match_gender(dataset.train_pid_names, table, missing=gender_missing)
        if missing:
            out.notes.append(f"{len(missing)} train identities without a gender label ({gender_missing} policy)")
        out.gender = np.asarray([per_pid[s.pid] for s in train], dtype=np.int64)
    if need_pose:
        if pose_csv is None:
            raise ConfigError(
                "this method has a pose branch: set data.pose_csv to a pose-cluster CSV (the authors' layout, "
                "e.g. LTCC_Pose_Cluster.csv, or `rlq poses cluster` output)"
            )
        table = read_pose_clusters(pose_csv, column=pose_column)
        keys = [s.key for s in train]
        if pose_missing == "error":
            check_coverage(keys, table, f"pose clusters ({pose_column})", pose_csv)
        elif pose_missing not in POSE_MISSING:
            raise ConfigError(f"data.pose_missing must be one of {', '.join(POSE_MISSING)}, got {pose_missing!r}")
        pose = np.asarray([table.get(k, 0) for k in keys], dtype=np.int64)
        if pose_clusters is not None and pose.size and int(pose.max()) > pose_clusters:
            raise SideInputError(
                f"{pose_csv}: column {pose_column} has labels up to {int(pose.max())} but the model has "
                f"model.pose_clusters={pose_clusters}; use the matching column (e.g. R_LA_{pose_clusters}) or set "
                f"model.pose_clusters={int(pose.max())}"
            )
        out.pose = pose
    if need_parsing:
        paths: list[str | None] = []
        missing_maps = []
        for s in train:
            if "parsing" in s.meta and s.meta["parsing"]:
                p = Path(s.meta["parsing"])
            elif parsing_root is not None:
                p = parsing_path(parsing_root, dataset.root, s.path)
            else:
                raise ConfigError(
                    "clothes recolouring needs LIP parsing maps: set data.parsing_root to the SCHP output tree "
                    "(mirroring the dataset), run `rlq parse estimate`, or set data.recolor=false"
                )
            if p.is_file():
                paths.append(str(p))
            else:
                paths.append(None)
                missing_maps.append(str(p))
        if missing_maps:
            if parsing_missing == "error":
                raise SideInputError(
                    f"{len(missing_maps)} of {len(train)} train images have no parsing map, e.g. "
                    + ", ".join(missing_maps[:3])
                    + "; produce them (SCHP LIP model or `rlq parse estimate`) or set data.parsing_missing=copy "
                    "(unmodified copies keep the real clothes label)"
                )
            out.notes.append(f"{len(missing_maps)} train images without parsing maps get unmodified copies")
        out.parsing_paths = paths
        faulty = read_faulty(faulty_pant, faulty_shirt) if (faulty_pant or faulty_shirt) else set()
        out.faulty = np.asarray([s.key in faulty for s in train], dtype=bool)
    for n in out.notes:
        log.warning(n)
    return out


def quality_groups(root: str | os.PathLike, quality_csv: str | os.PathLike | None = None) -> dict[str, str] | None:
    """{image key: "clean" or "LQ"} from a quality table (``<root>/quality.csv`` by default, as SynthCC writes it).

    ``None`` when no table is given and the dataset root has none (image quality unknown).
    """
    path = Path(quality_csv) if quality_csv else Path(root) / "quality.csv"
    if not path.is_file():
        if quality_csv:
            raise SideInputError(f"quality table {path} does not exist; give a Category,Image,Artifact,Severity,Param CSV")
        return None
    return {k: ("clean" if v[0] == "clean" else "LQ") for k, v in read_quality_csv(path).items()}
