"""Do low-quality images cluster together regardless of identity? (paper Fig. 7)

Features of the clean (HQ) and degraded (LQ) versions of the same images are compared with numbers that need
no picture: how often an LQ image's nearest neighbour is another identity's LQ image (vs. the HQ counterpart),
how separable HQ and LQ are for a linear probe, and a cosine silhouette of the HQ/LQ split; plus an optional
t-SNE picture (HQ blue, LQ red). The LQ versions come from the training LQ operators (docs/method.md §5.2), applied
to the test-resized images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlq.errors import ConfigError
from rlq.evaluation.extract import extract_features
from rlq.io import save_figure
from rlq.lq.batched import synthesize_batch
from rlq.lq.mix import ARTIFACT_NAMES, LQMix, draw_lq, mix_for_dataset
from rlq.lq.severity import SEVERITY_ARTIFACTS, SEVERITY_GRID
from rlq.report_format import fixed, pct

from .robustness import degrade_transform, level_skip_reason

__all__ = ["lq_cluster_diagnostics", "lq_cluster_metrics", "nearest_neighbours", "plot_tsne", "tsne_title", "draw_lq_plan",
           "lq_clusters_markdown"]

logger = logging.getLogger(__name__)
_EXACT_TSNE_MAX = 300


def nearest_neighbours(feats: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index of each row's most cosine-similar other row (self excluded; ties to the lower index)."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ConfigError(f"nearest neighbours need at least 2 feature rows, got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(x), dtype=np.int64)
    for a in range(0, len(x), chunk):
        sim = x[a : a + chunk] @ x.T
        sim[np.arange(sim.shape[0]), np.arange(a, a + sim.shape[0])] = -np.inf
        out[a : a + chunk] = np.argmax(sim, axis=1)  # first maximum = lower index
    return out


def lq_cluster_metrics(
    hq_feats: np.ndarray, lq_feats: np.ndarray, pids: Sequence[int], *, seed: int = 0, folds: int = 5,
    per_image: bool = False,
) -> dict[str, Any]:
    """HQ/LQ clustering numbers for paired features (row i of both = image i, identity ``pids[i]``).

    Among all 2n features (HQ rows first, then LQ), each one's nearest other feature (cosine, ties to the lower
    index) gives ``lq_nn_other_lq_rate`` (LQ images whose neighbour is an LQ image of another identity),
    ``hq_nn_other_hq_rate`` (the HQ counterpart), ``lq_nn_lq_rate`` / ``hq_nn_hq_rate`` (same quality, any
    identity), ``lq_nn_same_id_rate`` / ``hq_nn_same_id_rate`` and ``lq_nn_own_hq_rate`` (its own clean
    version). ``probe_accuracy``: accuracy of a logistic-regression HQ-vs-LQ probe (standardised features),
    cross-validated over images (an image's HQ and LQ rows share a fold; folds shuffled by ``seed``).
    ``silhouette``: cosine silhouette of the HQ/LQ labels (-1..1). ``per_image=True`` adds ``per_image``:
    ``{"lq_nn_other_lq": bool array (n,)}``, the per-image terms of ``lq_nn_other_lq_rate`` (not JSON-able; for
    paired comparisons of two models on the same images).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    hq, lq = np.asarray(hq_feats, dtype=np.float64), np.asarray(lq_feats, dtype=np.float64)
    p = np.asarray(pids).reshape(-1)
    n = len(p)
    if hq.shape != lq.shape or hq.ndim != 2 or hq.shape[0] != n:
        raise ConfigError(f"HQ and LQ features must both be ({n}, d) for {n} identities, got {hq.shape} and {lq.shape}")
    if n < 2:
        raise ConfigError(f"LQ-cluster diagnostics need at least 2 images, got {n}")
    x = np.concatenate([hq, lq])
    is_lq = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    pid2 = np.r_[p, p]
    img = np.r_[np.arange(n), np.arange(n)]
    nn_idx = nearest_neighbours(x)
    nb_lq, nb_same = is_lq[nn_idx], pid2[nn_idx] == pid2
    h, l_ = slice(0, n), slice(n, 2 * n)
    out: dict[str, Any] = {
        "num_images": n,
        "num_identities": int(len(np.unique(p))),
        "lq_nn_other_lq_rate": float(np.mean(nb_lq[l_] & ~nb_same[l_])),
        "hq_nn_other_hq_rate": float(np.mean(~nb_lq[h] & ~nb_same[h])),
        "lq_nn_lq_rate": float(np.mean(nb_lq[l_])),
        "hq_nn_hq_rate": float(np.mean(~nb_lq[h])),
        "lq_nn_same_id_rate": float(np.mean(nb_same[l_])),
        "hq_nn_same_id_rate": float(np.mean(nb_same[h])),
        "lq_nn_own_hq_rate": float(np.mean(nn_idx[l_] == np.arange(n))),
    }
    if per_image:
        out["per_image"] = {"lq_nn_other_lq": nb_lq[l_] & ~nb_same[l_]}
    k = min(int(folds), n)
    if k >= 2:
        perm = np.random.default_rng(seed).permutation(n)  # seeded fold assignment of images
        # lbfgs: on the demo's real features (1,200 x 5,120, bm) 14 s for the 5 folds against liblinear's 74 s, with
        # the same accuracy (0.704 vs 0.702); liblinear also regularises the intercept, lbfgs does not
        probe = make_pipeline(StandardScaler(), LogisticRegression(solver="lbfgs", max_iter=1000))
        scores = cross_val_score(probe, x, is_lq.astype(int), groups=perm[img], cv=GroupKFold(n_splits=k))
        out["probe_accuracy"] = float(np.mean(scores))
    else:  # pragma: no cover - n >= 2 always gives k >= 2
        out["probe_accuracy"] = float("nan")
    out["probe_folds"] = k
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out["silhouette"] = float(silhouette_score(xn, is_lq.astype(int), metric="cosine"))
    return out


def draw_lq_plan(n: int, mix: LQMix, seed: int, ranges: str = "official") -> tuple[np.ndarray, np.ndarray]:
    """Per-image artifact codes (n,) and parameters (n, 3), drawn in image order from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    codes = np.zeros(n, dtype=np.int64)
    params = np.zeros((n, 3), dtype=np.float32)
    for i in range(n):
        codes[i], params[i] = draw_lq(rng, mix, ranges)
    return codes, params


def _mix_transform(codes: np.ndarray, params: np.ndarray):
    def transform(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        idx = indices.detach().cpu().to(torch.int64).numpy()
        out = synthesize_batch(images, torch.from_numpy(codes[idx]), torch.from_numpy(params[idx]),
                               tuple(images.shape[-2:]))
        return out.mul_(255.0).round_().to(torch.uint8)

    return transform


def lq_cluster_diagnostics(
    model: nn.Module,
    paths: Sequence[str],
    pids: Sequence[int],
    *,
    artifact_mix: str | LQMix | tuple[str, int] = "ltcc",
    seed: int = 0,
    height: int,
    width: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    ranges: str = "official",
    flip: bool = True,
    amp_dtype: torch.dtype | None = None,
    tsne: bool = True,
    out_png: str | os.PathLike | None = None,
    max_tsne_points: int = 1000,
    progress: bool = False,
    model_name: str | None = None,
    per_image: bool = False,
) -> dict[str, Any]:
    """Extract HQ and LQ features of ``paths`` and return :func:`lq_cluster_metrics` plus how LQ was made.

    ``artifact_mix``: a dataset name / :class:`LQMix` (one training artifact per image, drawn with
    :func:`draw_lq` from ``default_rng(seed)`` and applied with ``synthesize_batch`` to the test-resized
    image), or ``(artifact, level)`` of :data:`SEVERITY_GRID` (``degrade_batch``). With ``tsne`` and
    ``out_png`` a t-SNE PNG is written (``result["tsne_png"]``), titled with ``model_name`` (``result["tsne_title"]``).
    """
    paths = list(paths)
    n = len(paths)
    if n != len(pids):
        raise ConfigError(f"{n} image paths but {len(pids)} identities")
    info: dict[str, Any] = {"seed": int(seed), "input_size": [int(height), int(width)],
                            "lq_applied": "after the test resize, at the evaluation resolution"}
    if isinstance(artifact_mix, tuple):
        art, level = artifact_mix
        if art not in SEVERITY_ARTIFACTS or not isinstance(level, int) or not 1 <= level < len(SEVERITY_GRID[art]):
            raise ConfigError(f"fixed LQ artifact {artifact_mix!r} must be (artifact in {SEVERITY_ARTIFACTS}, level 1..4)")
        reason = level_skip_reason(art, level, height, width)
        if reason:
            raise ConfigError(f"{reason}; pick another level or a larger --height/--width")
        transform = degrade_transform(art, level, seed)
        info["lq"] = {"kind": "severity", "artifact": art, "level": level, "params": dict(SEVERITY_GRID[art][level])}
    else:
        mix = artifact_mix if isinstance(artifact_mix, LQMix) else mix_for_dataset(str(artifact_mix))
        codes, params = draw_lq_plan(n, mix, seed, ranges)
        transform = _mix_transform(codes, params)
        counts = {ARTIFACT_NAMES[c]: int(np.sum(codes == c)) for c in sorted(set(codes.tolist()))}
        info["lq"] = {"kind": "training mix (docs/method.md §5.2)", "mix": mix.name, "ranges": ranges,
                      "probabilities": mix.probabilities(), "counts": counts}
        short = min(height, width)
        if bool(np.any((codes == 0) & (params[:, 0] >= short))):
            info["lq"]["note"] = (f"{int(np.sum((codes == 0) & (params[:, 0] >= short)))} pixelation draws have s >= the "
                                  f"evaluation shorter side ({short} px) and barely change the image")

    def extract(tr, desc: str) -> np.ndarray:
        return extract_features(model, paths, height, width, device=device, batch_size=batch_size, workers=workers,
                                flip=flip, amp_dtype=amp_dtype, progress=progress, desc=desc, batch_transform=tr)

    hq = extract(None, "extract HQ")
    lq = extract(transform, "extract LQ")
    out = {**lq_cluster_metrics(hq, lq, pids, seed=seed, per_image=per_image), **info}
    if tsne and out_png is not None:
        lq_text = (f"{info['lq']['artifact']} level {info['lq']['level']}" if info["lq"]["kind"] == "severity"
                   else f"{info['lq']['mix']} training mix")
        out["tsne_title"] = tsne_title(model_name, lq_text, seed)
        out["tsne_png"] = str(plot_tsne(hq, lq, out_png, seed=seed, max_points=max_tsne_points, title=out["tsne_title"]))
    return out


def tsne_title(model_name: str | None, lq_text: str | None = None, seed: int = 0) -> str:
    """Title of the t-SNE picture: which model, how the LQ copies were made, the seed."""
    head = f"{model_name}: " if model_name else ""
    how = f"; LQ = {lq_text}" if lq_text else ""
    return f"{head}t-SNE of HQ (blue) and LQ (red) features{how} (seed {seed})"


def plot_tsne(
    hq_feats: np.ndarray,
    lq_feats: np.ndarray,
    out_png: str | os.PathLike,
    *,
    seed: int = 0,
    max_points: int = 1000,
    title: str | None = None,
) -> Path:
    """t-SNE of paired HQ (blue) and LQ (red) features, at most ``max_points`` points (whole pairs, seeded)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - optional extra
        raise ConfigError("plotting needs matplotlib; install the 'viz' extra: pip install 'rlq[viz]'") from None
    from sklearn.manifold import TSNE

    hq, lq = np.asarray(hq_feats, dtype=np.float32), np.asarray(lq_feats, dtype=np.float32)
    n = len(hq)
    keep = max(1, min(n, int(max_points) // 2))
    sel = np.sort(np.random.default_rng(seed).choice(n, size=keep, replace=False)) if keep < n else np.arange(n)
    x = np.concatenate([hq[sel], lq[sel]])
    if len(x) < 4:
        raise ConfigError(f"t-SNE needs at least 2 image pairs, got {len(sel)}")
    perplexity = float(min(30.0, (len(x) - 1) / 3.0))
    method = "exact" if len(x) <= _EXACT_TSNE_MAX else "barnes_hut"  # exact is faster for a few hundred points
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine",
               method=method).fit_transform(x)
    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    m = len(sel)
    ax.scatter(emb[:m, 0], emb[:m, 1], s=8, c="tab:blue", label=f"HQ (clean, {m})", alpha=0.7)
    ax.scatter(emb[m:, 0], emb[m:, 1], s=8, c="tab:red", label=f"LQ (degraded, {m})", alpha=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or tsne_title(None, None, seed), fontsize=9, wrap=True)
    fig.tight_layout()
    return save_figure(fig, out_png)


def lq_clusters_markdown(results: dict[str, Any]) -> str:
    """A markdown summary of :func:`lq_cluster_diagnostics` results (one or several models)."""
    rows = results if all(isinstance(v, dict) and "num_images" in v for v in results.values()) else {"model": results}
    keys = [("lq_nn_other_lq_rate", "LQ NN = other-id LQ"), ("hq_nn_other_hq_rate", "HQ NN = other-id HQ"),
            ("lq_nn_own_hq_rate", "LQ NN = own HQ"), ("probe_accuracy", "HQ/LQ probe acc."), ("silhouette", "silhouette")]
    lines = ["Nearest neighbours among all HQ + LQ features (cosine); rates in %, silhouette in -1..1. A high "
             "'LQ NN = other-id LQ' rate means LQ images cluster together regardless of identity (paper Fig. 7).", "",
             "| model | images | " + " | ".join(t for _, t in keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, r in rows.items():
        cells = [fixed(r[k], 3) if k == "silhouette" else pct(r[k]) for k, _ in keys]
        lines.append(f"| {name} | {r['num_images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
