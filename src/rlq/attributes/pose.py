"""Pose vectors from COCO-17 keypoints and their K-means clusters (docs/method.md §3.4).

The pipeline: select one person per image (``rlq.data.sidecars.select_person``), turn its keypoints into a
body-line vector (:func:`pose_vector`), cluster the train split's vectors with K-means
(:func:`cluster_poses`), label each image 1..K (0 = no pose) and write the authors' CSV layout
(:func:`write_pose_cluster_table`). :func:`sweep_k` / :func:`plot_sweep` help choose K.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlq.errors import ConfigError, SideInputError
from rlq.io import save_figure

if TYPE_CHECKING:  # sklearn is imported lazily: it is heavy and only the clustering needs it
    from sklearn.cluster import KMeans

    from rlq.data.sidecars import Detection

__all__ = [
    "BODY_LINES",
    "FRAME_SIZE",
    "POSE_KINDS",
    "pose_dim",
    "pose_vector",
    "pose_vectors",
    "detection_vectors",
    "cluster_poses",
    "assign_clusters",
    "pose_cluster_table",
    "pose_cluster_table_with_models",
    "authors_row_order",
    "write_pose_cluster_table",
    "sweep_k",
    "plot_sweep",
]

logger = logging.getLogger(__name__)

#: The 13 body lines (start, end) over COCO-17 indices, in the order of docs/method.md §3.4. The authors' list
#: also names two neck-hip lines; COCO-17 has no neck point, so those are always skipped (and left out here).
BODY_LINES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6),
    (5, 7), (7, 9), (6, 8), (8, 10),
    (11, 13), (12, 14), (13, 15), (14, 16),
)
#: The (width, height) frame keypoints are mapped to before measuring lines (docs/method.md §3.4).
FRAME_SIZE = (192, 384)
#: Supported vector kinds. The authors' ``N_*`` kinds are degenerate and not supported (docs/datasets.md §5.3).
POSE_KINDS = ("R_LA", "R_A", "R_LAC")

_NUM_KPTS = 17
_STARTS = np.array([s for s, _ in BODY_LINES])
_ENDS = np.array([e for _, e in BODY_LINES])


def pose_dim(kind: str) -> int:
    """Length of a pose vector of ``kind``: R_LA 26, R_A 13, R_LAC 60."""
    _check_kind(kind)
    n = len(BODY_LINES)
    return {"R_LA": 2 * n, "R_A": n, "R_LAC": 2 * _NUM_KPTS + 2 * n}[kind]


def _check_kind(kind: str) -> None:
    if kind not in POSE_KINDS:
        raise ConfigError(
            f"pose vector kind {kind!r} is not one of {POSE_KINDS}; the paper's final model uses 'R_LA' "
            "(the authors' N_* columns are degenerate and not supported)"
        )


def pose_vectors(keypoints: np.ndarray, sizes: np.ndarray, kind: str = "R_LA") -> np.ndarray:
    """Pose vectors (n, d) float64 from keypoints (n, 17, 2|3) in original pixels and sizes (n, 2) = (W, H)."""
    _check_kind(kind)
    kp = np.asarray(keypoints, dtype=np.float64)
    wh = np.asarray(sizes, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1] != _NUM_KPTS or kp.shape[2] not in (2, 3):
        raise ValueError(f"keypoints must have shape (n, 17, 2) or (n, 17, 3), got {kp.shape}")
    if wh.shape != (kp.shape[0], 2):
        raise ValueError(f"sizes must have shape ({kp.shape[0]}, 2) as (width, height), got {wh.shape}")
    if not np.isfinite(kp[..., :2]).all():
        bad = np.flatnonzero(~np.isfinite(kp[..., :2]).all(axis=(1, 2)))
        raise ValueError(f"keypoints of rows {bad[:5].tolist()} are not finite")
    if not (np.isfinite(wh).all() and (wh > 0).all()):
        bad = np.flatnonzero(~(np.isfinite(wh) & (wh > 0)).all(axis=1))
        raise ValueError(f"image sizes of rows {bad[:5].tolist()} are not positive: {wh[bad[:5]].tolist()}")
    fw, fh = FRAME_SIZE
    # docs/method.md §3.4: truncate toward zero, then map as the authors' `resize_coordinates` does,
    # (x_int * (192 / W)).astype(int): the float64 ratio is formed first. Forming x_int * 192 first gives a
    # different pixel in about 1 of 4,000 cases (e.g. x_int = W = 47: 47 * (192/47) = 191.99999... -> 191, but 47 * 192 / 47 = 192).
    x = np.trunc(np.trunc(kp[..., 0]) * (fw / wh[:, :1]))
    y = np.trunc(np.trunc(kp[..., 1]) * (fh / wh[:, 1:]))
    x += 0.0  # -0.0 -> +0.0: no negative zeros in the R_LAC coordinates
    y += 0.0
    dx = x[:, _STARTS] - x[:, _ENDS]
    dy = y[:, _STARTS] - y[:, _ENDS]
    length = np.sqrt(dx * dx + dy * dy)
    angle = np.degrees(np.arctan2(dy, dx))
    angle[angle <= -180.0] = 180.0  # the range is (-180, 180]
    if kind == "R_A":
        return angle
    la = np.concatenate([length, angle], axis=1)
    if kind == "R_LA":
        return la
    coords = np.stack([x, y], axis=2).reshape(len(kp), 2 * _NUM_KPTS)  # x0, y0, ..., x16, y16
    return np.concatenate([coords, la], axis=1)


def pose_vector(keypoints: np.ndarray, image_size: tuple[int, int], kind: str = "R_LA") -> np.ndarray:
    """The pose vector of one person: keypoints (17, 2|3) in original pixels, image_size = (W, H)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2:
        raise ValueError(f"keypoints must have shape (17, 2) or (17, 3), got {kp.shape}")
    return pose_vectors(kp[None], np.asarray([image_size], dtype=np.float64), kind)[0]


def _is_null(det: Detection | None, score_threshold: float | None) -> bool:
    return det is None or (score_threshold is not None and det.score < score_threshold)


def detection_vectors(
    detections: Mapping[str, Detection | None],
    image_sizes: Mapping[str, tuple[int, int]],
    keys: Sequence[str],
    kind: str = "R_LA",
    score_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (m, d) of the keys with a pose, bool mask (n,) over ``keys`` of which have one)."""
    _check_kind(kind)
    missing = [k for k in keys if k not in detections]
    if missing:
        raise SideInputError(
            f"pose detections lack {len(missing)} of {len(keys)} keys, e.g. {missing[:5]}; pass one entry per "
            "image (None when AlphaPose found nobody), e.g. from rlq.data.sidecars.read_alphapose_tree"
        )
    mask = np.array([not _is_null(detections[k], score_threshold) for k in keys], dtype=bool)
    with_pose = [k for k, m in zip(keys, mask) if m]
    no_size = [k for k in with_pose if k not in image_sizes]
    if no_size:
        raise SideInputError(
            f"image sizes lack {len(no_size)} keys that have a pose, e.g. {no_size[:5]}; the (width, height) of "
            "each original image is needed to map keypoints to the 192x384 frame"
        )
    if not with_pose:
        return np.zeros((0, pose_dim(kind))), mask
    kp = np.stack([detections[k].keypoints for k in with_pose])  # type: ignore[union-attr] - with_pose holds no None
    sizes = np.asarray([tuple(image_sizes[k]) for k in with_pose], dtype=np.float64)
    return pose_vectors(kp, sizes, kind), mask


def _kmeans(k: int, seed: int, n_init: int, max_iter: int) -> KMeans:
    from sklearn.cluster import KMeans

    # docs/method.md §3.4: k-means++, n_init set explicitly (the default changed across versions), Lloyd.
    return KMeans(n_clusters=k, init="k-means++", n_init=n_init, max_iter=max_iter, random_state=seed,
                  algorithm="lloyd")


def cluster_poses(
    vectors: np.ndarray, k: int = 15, seed: int = 0, n_init: int = 10, max_iter: int = 1000
) -> tuple[np.ndarray, KMeans]:
    """K-means over the non-null pose vectors (m, d); returns labels 1..k (int64) and the fitted model."""
    X = np.asarray(vectors, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"pose vectors must be a 2-D array (m, d), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("pose vectors contain NaN or infinite values")
    if k < 1 or X.shape[0] < k:
        raise ValueError(f"K-means with K={k} needs at least K pose vectors, got {X.shape[0]}")
    model = _kmeans(k, seed, n_init, max_iter).fit(X)
    return model.predict(X).astype(np.int64) + 1, model


def assign_clusters(model: KMeans, vectors: np.ndarray) -> np.ndarray:
    """Labels 1..K of other pose vectors (e.g. the test split) under a fitted model."""
    X = np.asarray(vectors, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.cluster_centers_.shape[1]:
        raise ValueError(f"pose vectors must have shape (m, {model.cluster_centers_.shape[1]}), got {X.shape}")
    if len(X) == 0:
        return np.zeros(0, dtype=np.int64)
    return model.predict(X).astype(np.int64) + 1


def pose_cluster_table_with_models(
    detections: Mapping[str, Detection | None],
    image_sizes: Mapping[str, tuple[int, int]],
    keys: Sequence[str],
    ks: Iterable[int] = (15,),
    kinds: Iterable[str] = ("R_LA",),
    seed: int = 0,
    score_threshold: float | None = None,
    n_init: int = 10,
    max_iter: int = 1000,
) -> tuple[dict[str, np.ndarray], dict[str, KMeans]]:
    """Like :func:`pose_cluster_table`, also returning the fitted model per column."""
    ks, kinds = list(ks), list(kinds)
    for kind in kinds:
        _check_kind(kind)
    columns: dict[str, np.ndarray] = {}
    models: dict[str, KMeans] = {}
    for kind in kinds:
        vecs, mask = detection_vectors(detections, image_sizes, keys, kind, score_threshold)
        for k in ks:
            if len(vecs) < k:
                raise SideInputError(
                    f"only {len(vecs)} of {len(keys)} images have a pose, fewer than K={k} clusters; check the "
                    "pose files (docs/datasets.md §5.1) or choose a smaller K"
                )
            labels, model = cluster_poses(vecs, k=k, seed=seed, n_init=n_init, max_iter=max_iter)
            col = np.zeros(len(keys), dtype=np.int64)  # docs/method.md §3.4: null pose -> 0
            col[mask] = labels
            columns[f"{kind}_{k}"] = col
            models[f"{kind}_{k}"] = model
        logger.info("pose clusters %s: %d of %d images have a pose", kind, int(mask.sum()), len(keys))
    return columns, models


def pose_cluster_table(
    detections: Mapping[str, Detection | None],
    image_sizes: Mapping[str, tuple[int, int]],
    keys: Sequence[str],
    ks: Iterable[int] = (15,),
    kinds: Iterable[str] = ("R_LA",),
    seed: int = 0,
    score_threshold: float | None = None,
) -> dict[str, np.ndarray]:
    """Pose-cluster label columns named like the authors' (``R_LA_15``, ...), aligned with ``keys``; 0 = no pose.

    ``score_threshold`` (default None, as in the spec) turns detections scored below it into null poses.
    """
    return pose_cluster_table_with_models(detections, image_sizes, keys, ks, kinds, seed, score_threshold)[0]


def authors_row_order(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Row indices in the authors' order: images with a pose (label > 0) first, then null poses; stable."""
    lab = np.asarray(labels)
    return np.concatenate([np.flatnonzero(lab > 0), np.flatnonzero(lab <= 0)])


def write_pose_cluster_table(
    path: str | os.PathLike,
    keys: Sequence[str],
    columns: Mapping[str, Sequence[int] | np.ndarray],
    category: str | Sequence[str] = "train",
    authors_order: bool = True,
) -> None:
    """Write label columns in the authors' CSV layout (docs/datasets.md §5.3), columns in the authors' order."""
    from rlq.data.sidecars import POSE_COLUMNS, write_pose_clusters

    if not columns:
        raise ValueError(f"write_pose_cluster_table({path}): no label columns given")
    n = len(keys)
    cats = [category] * n if isinstance(category, str) else list(category)
    names = [c for c in POSE_COLUMNS if c in columns] + [c for c in columns if c not in POSE_COLUMNS]
    cols = {c: np.asarray(columns[c]) for c in names}
    bad = {c: len(v) for c, v in cols.items() if v.shape != (n,)}
    if len(cats) != n or bad:
        raise ValueError(f"write_pose_cluster_table({path}): {n} keys but {len(cats)} categories and column "
                         f"lengths {bad or 'ok'}; pass one value per key")
    order = authors_row_order(cols[names[0]]) if authors_order else np.arange(n)
    write_pose_clusters(path, [keys[i] for i in order], [cats[i] for i in order],
                        {c: v[order].tolist() for c, v in cols.items()})


def sweep_k(
    vectors: np.ndarray,
    ks: Iterable[int] = range(5, 41, 5),
    seed: int = 0,
    sample_size: int | None = 10_000,
    n_init: int = 10,
    max_iter: int = 1000,
) -> list[dict[str, Any]]:
    """Cluster quality per K (the paper sweeps K = 5..40, docs/method.md §12).

    Per K: ``inertia``, ``silhouette`` (on a seeded subsample of ``sample_size`` vectors; None = all),
    ``calinski_harabasz``, ``davies_bouldin``, ``n_iter`` and the smallest / largest cluster size.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    X = np.asarray(vectors, dtype=np.float64)
    out: list[dict[str, Any]] = []
    for k in ks:
        labels, model = cluster_poses(X, k=int(k), seed=seed, n_init=n_init, max_iter=max_iter)
        sizes = np.bincount(labels, minlength=int(k) + 1)[1:]
        n_used = len(X) if sample_size is None else min(int(sample_size), len(X))
        sil = ch = db = float("nan")
        if 2 <= k < len(X):
            sil = float(silhouette_score(X, labels, sample_size=None if n_used >= len(X) else n_used,
                                         random_state=seed))
            ch = float(calinski_harabasz_score(X, labels))
            db = float(davies_bouldin_score(X, labels))
        out.append({
            "k": int(k),
            "inertia": float(model.inertia_),
            "silhouette": sil,
            "silhouette_sample": n_used,
            "calinski_harabasz": ch,
            "davies_bouldin": db,
            "n_iter": int(model.n_iter_),
            "min_size": int(sizes.min()),
            "max_size": int(sizes.max()),
        })
        logger.info("K=%d: silhouette %.4f, inertia %.4g", k, sil, model.inertia_)
    return out


def plot_sweep(results: Sequence[Mapping[str, Any]], out_png: str | os.PathLike) -> Path:
    """Plot silhouette, Calinski-Harabasz and inertia against K as a PNG (matplotlib, no pyplot state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - optional extra
        raise ConfigError("plotting needs matplotlib; install the 'viz' extra: pip install 'rlq[viz]'") from None
    if not results:
        raise ValueError("plot_sweep: no sweep results to plot")
    ks = [r["k"] for r in results]
    panels = [("silhouette", "silhouette (higher is better)"),
              ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
              ("inertia", "inertia")]
    fig = Figure(figsize=(4.0 * len(panels), 3.2), dpi=100)  # Figure() draws with Agg, no global backend
    for i, (field, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ys = [math.nan if r.get(field) is None else float(r[field]) for r in results]
        ax.plot(ks, ys, marker="o")
        ax.set_xlabel("K")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_png)
