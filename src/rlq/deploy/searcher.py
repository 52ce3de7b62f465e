"""``Searcher``: images in, ranked gallery results out, each marked as a match or not (open-set search).

Without a threshold every result's ``is_match`` is None (closed-set: the k nearest, however far). With one, a
result is a match when its distance is below the threshold (distance = 1 - cosine similarity, or the re-ranked
distance with ``rerank``); a query none of whose results is a match is "not in the gallery". ``threshold=
"calibrated"`` reads ``rlq calibrate``'s thresholds beside the checkpoint and refuses them when the features are
made differently (flip, precision, re-ranking, weights), naming the difference (docs/open-set.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import RlqError

__all__ = ["Searcher", "NOT_IN_GALLERY", "resolve_threshold", "mark_matches"]

NOT_IN_GALLERY = "not in the gallery"


def resolve_threshold(threshold: Any, *, checkpoint: str | None, flip: bool, precision: str, rerank: Any = None,
                      far: float | None = None) -> tuple[float | None, dict[str, Any] | None]:
    """(threshold, calibration info) for ``threshold`` None, a number, ``"calibrated"`` or ``"calibrated:FAR"``."""
    if threshold is None:
        return None, None
    if isinstance(threshold, str) and threshold.startswith("calibrated"):
        from .calibration import calibrated_threshold, load_calibration, settings_mismatch
        from .search import weights_sha256

        if threshold != "calibrated":
            try:
                far = float(threshold.split(":", 1)[1])
            except (IndexError, ValueError):
                raise RlqError(f"threshold {threshold!r}: write calibrated or calibrated:FAR (e.g. calibrated:0.01)") from None
        if checkpoint is None:
            raise RlqError("threshold 'calibrated' needs a checkpoint (its calibration lies beside it)")
        cal = load_calibration(checkpoint)
        if cal is None:
            from .calibration import calibration_path

            raise RlqError(f"{checkpoint} has no calibration ({calibration_path(checkpoint)}); run `rlq calibrate "
                           f"{checkpoint} --far 0.01` first, or pass a numeric threshold")
        diff = settings_mismatch(cal, flip, precision, rerank, weights_sha256(checkpoint))
        if diff:
            raise RlqError(f"the calibration {cal['path']} does not fit this search: {'; '.join(diff)}; search as "
                           "calibrated, or recalibrate with these settings (`rlq calibrate RUN` with the same "
                           "--flip/--no-flip and --rerank options)")
        target, t = calibrated_threshold(cal, far)
        return t, {"path": cal["path"], "far_target": target, "threshold": t, "split": cal.get("split"),
                   "features": cal.get("features")}
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise RlqError(f"threshold must be 'calibrated', 'calibrated:FAR' or a distance, got {threshold!r}") from None
    if t != t:
        raise RlqError("threshold is NaN; give a distance (1 - cosine; re-ranked distance with re-ranking)")
    return t, None


def mark_matches(scores: np.ndarray, rerank: Any, threshold: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(distances, is_match or None) of search results: distance = 1 - cosine score, or the re-ranked distance."""
    s = np.asarray(scores, dtype=np.float64)
    dist = s if rerank is not None else 1.0 - s
    return dist, (None if threshold is None else dist < threshold)


class Searcher:
    """Search a :class:`~rlq.deploy.GalleryIndex` with a :class:`~rlq.deploy.FeatureExtractor`'s features.

    ``threshold``: None (closed-set), a distance, ``"calibrated"`` or ``"calibrated:FAR"``. :meth:`search` returns
    one dict per query: ``results`` (rank, index, key, path, score, distance, is_match), ``is_match`` (the rank-1
    result is a match; None without a threshold) and ``label`` (``"not in the gallery"`` when no result matches).
    """

    def __init__(self, extractor: Any, index: Any, *, threshold: Any = None, rerank: Any = None,
                 far: float | None = None) -> None:
        self.extractor, self.index, self.rerank = extractor, index, rerank
        self.threshold, self.calibration = resolve_threshold(
            threshold, checkpoint=getattr(extractor, "checkpoint", None), flip=extractor.flip,
            precision=extractor.precision, rerank=rerank, far=far)

    def search(self, images: Any, k: int = 10, *, keys: Any = None) -> list[dict[str, Any]]:
        feats = self.extractor(images)
        scores, idx = self.index.search(feats.numpy(), k, rerank=self.rerank)
        dist, match = mark_matches(scores, self.rerank, self.threshold)
        out = []
        for qi in range(scores.shape[0]):
            hits = []
            for r in range(scores.shape[1]):
                gi = int(idx[qi, r])
                if gi < 0:
                    continue
                hits.append({"rank": r + 1, "index": gi, "key": str(self.index.keys[gi]),
                             "path": None if self.index.paths is None else str(self.index.paths[gi]),
                             "score": float(scores[qi, r]), "distance": float(dist[qi, r]),
                             "is_match": None if match is None else bool(match[qi, r])})
            is_match = None if match is None else bool(hits and hits[0]["is_match"])
            out.append({"key": None if keys is None else keys[qi], "results": hits, "is_match": is_match,
                        "label": NOT_IN_GALLERY if is_match is False else None})
        return out

    @property
    def threshold_info(self) -> dict[str, Any] | None:
        if self.threshold is None:
            return None
        return {"threshold": None if math.isinf(self.threshold) else self.threshold,
                "rule": "match when distance < threshold", "calibration": self.calibration}
