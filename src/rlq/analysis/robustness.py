"""Robustness per artifact (paper Fig. 8 left) under rlq's own graded-severity protocol (docs/method.md §12).

One artifact type at a time, at the severity levels of :data:`rlq.lq.severity.SEVERITY_GRID` (level 0 =
clean), seeded, applied to the test-resized query images only (``apply_to="query"``; ``"both"`` also
degrades the gallery). The degradation runs at the evaluation resolution, after the test resize, through
``extract_features(batch_transform=...)``. This protocol is ours, not the paper's; results say so.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from rlq.data.records import Dataset, Protocol
from rlq.errors import ConfigError
from rlq.evaluation.extract import extract_features
from rlq.evaluation.protocols import evaluate_protocol, summarize
from rlq.io import save_figure
from rlq.lq.severity import MAX_LEVEL, SEVERITY_ARTIFACTS, SEVERITY_GRID, degrade_batch
from rlq.report_format import pct

__all__ = [
    "official_lq_evaluate",
    "official_lq_markdown",
    "ROBUSTNESS_PROTOCOL",
    "ROBUSTNESS_DEFINITION",
    "robustness_sweep",
    "level_skip_reason",
    "degrade_transform",
    "plot_robustness",
    "robustness_markdown",
]

logger = logging.getLogger(__name__)

#: Label carried by every robustness result and plot (docs/method.md §12 asks for it).
ROBUSTNESS_PROTOCOL = "rlq's own robustness protocol (docs/method.md §12), not a paper protocol"
ROBUSTNESS_DEFINITION = (
    "One synthetic artifact type per curve (rlq.lq.severity.SEVERITY_GRID; level 0 = clean), applied after the "
    "test resize at the evaluation resolution, seeded per split (motion-blur angles); query images only unless "
    "apply_to='both'. Metrics follow docs/datasets.md §2 (fractions; invalid queries excluded)."
)
_APPLY = ("query", "both")


def level_skip_reason(artifact: str, level: int, height: int, width: int) -> str | None:
    """Why ``level`` of ``artifact`` cannot run at ``height`` x ``width`` (pixelation needs a shorter side > s), else None."""
    spec = SEVERITY_GRID[artifact][level]
    if artifact == "pixelation" and level > 0 and min(height, width) <= spec["s"]:
        return (f"pixelation level {level} downsamples the shorter side to s={spec['s']} px, which needs an evaluation "
                f"size whose shorter side exceeds it (got {height}x{width})")
    return None


def _split_seed(seed: int, split: str) -> int:
    # A split's own stream: the gallery's motion angles are not a copy of the query's.
    return int(np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8"))]).generate_state(1)[0])


def degrade_transform(artifact: str, level: int, seed: int):
    """A ``batch_transform`` for :func:`extract_features`: ``degrade_batch`` with each image's running index as its draw."""

    def transform(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        idx = indices.detach().cpu().to(torch.int64)
        start = int(idx[0]) if idx.numel() else 0
        if idx.numel() and bool(torch.equal(idx, torch.arange(start, start + idx.numel()))):
            return degrade_batch(images, artifact, level, seed, start=start)
        # non-contiguous batch (a custom sampler): one image at a time keeps each image's draw
        return torch.cat([degrade_batch(images[i : i + 1], artifact, level, seed, start=int(j)) for i, j in enumerate(idx)])

    return transform


def _check_args(artifacts: Sequence[str], levels: Sequence[int], apply_to: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    arts = tuple(artifacts)
    bad = [a for a in arts if a not in SEVERITY_ARTIFACTS]
    if bad or not arts:
        raise ConfigError(f"robustness artifacts {list(arts)} must be a non-empty subset of {SEVERITY_ARTIFACTS}")
    lv: list[int] = []
    for x in levels:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not 0 <= int(x) <= MAX_LEVEL:
            raise ConfigError(f"robustness level {x!r} is not an integer in 0..{MAX_LEVEL}")
        if int(x) not in lv:
            lv.append(int(x))
    if not lv:
        raise ConfigError("robustness levels are empty; pass e.g. 0,1,2,3,4")
    if apply_to not in _APPLY:
        raise ConfigError(f"apply_to must be one of {_APPLY}, got {apply_to!r}")
    return arts, tuple(sorted(lv))


def _roles(protocol: Protocol) -> tuple[list[str], list[str]]:
    queries = list(dict.fromkeys(s.query for s in protocol.specs))
    galleries = list(dict.fromkeys(s.gallery for s in protocol.specs))
    return queries, galleries


def robustness_sweep(
    model: nn.Module,
    dataset: Dataset,
    *,
    artifacts: Sequence[str] = SEVERITY_ARTIFACTS,
    levels: Sequence[int] = (0, 1, 2, 3, 4),
    apply_to: str = "query",
    seed: int = 0,
    height: int,
    width: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    protocol: str = "test",
    flip: bool = True,
    amp_dtype: torch.dtype | None = None,
    cache: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Protocol metrics per artifact and severity level (JSON-able dict); clean features are extracted once.

    ``results[artifact][str(level)]`` holds ``params`` (the grid entry), ``metrics`` (:func:`summarize` per
    evaluation name) and ``query_cosine_to_clean`` (mean cosine between each query's degraded and clean feature),
    or ``skipped`` with the reason when the level cannot run at ``height`` x ``width``. Level 0 is computed once
    and shared by every artifact.
    """
    from tqdm.auto import tqdm

    arts, lv = _check_args(artifacts, levels, apply_to)
    if protocol not in dataset.protocols:
        raise ConfigError(f"dataset {dataset.name!r} has no {protocol!r} protocol; it has {sorted(dataset.protocols)}")
    proto = dataset.protocols[protocol]
    q_splits, g_splits = _roles(proto)
    both_roles = sorted(set(q_splits) & set(g_splits))
    if both_roles and apply_to == "query":
        raise ConfigError(f"split(s) {both_roles} serve as query and gallery in protocol {protocol!r}; degrading only the "
                          "queries is undefined there; use apply_to='both'")
    degraded = list(q_splits) if apply_to == "query" else list(proto.split_names)
    samples = {s: dataset.split(s) for s in proto.split_names}

    def extract(split: str, transform=None, desc: str = "") -> np.ndarray:
        return extract_features(
            model, [s.path for s in samples[split]], height, width, device=device, batch_size=batch_size,
            workers=workers, flip=flip, amp_dtype=amp_dtype, progress=progress, desc=desc or f"extract {split}",
            cache=cache, batch_transform=transform,
        )

    def evaluate(feats: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
        return summarize(evaluate_protocol({s: (feats[s], samples[s]) for s in proto.split_names}, proto, device=device))

    clean = {s: extract(s, desc=f"extract {s} (clean)") for s in proto.split_names}
    clean_metrics = evaluate(clean)
    plan = [(a, lvl) for a in arts for lvl in lv if lvl > 0]
    results: dict[str, dict[str, Any]] = {a: {} for a in arts}
    for a in arts:
        if 0 in lv:
            results[a]["0"] = {"params": {}, "metrics": clean_metrics, "query_cosine_to_clean": 1.0}
    for a, lvl in tqdm(plan, desc="robustness", unit="level", disable=not progress):
        params = dict(SEVERITY_GRID[a][lvl])
        reason = level_skip_reason(a, lvl, height, width)
        if reason is not None:
            logger.warning("skipping %s", reason)
            results[a][str(lvl)] = {"params": params, "skipped": reason}
            continue
        feats = dict(clean)
        for s in degraded:
            feats[s] = extract(s, degrade_transform(a, lvl, _split_seed(seed, s)), desc=f"{s} {a} L{lvl}")
        cos = [float(np.mean(np.sum(_unit(feats[s]) * _unit(clean[s]), axis=1))) for s in q_splits if len(clean[s])]
        results[a][str(lvl)] = {"params": params, "metrics": evaluate(feats),
                                "query_cosine_to_clean": float(np.mean(cos)) if cos else math.nan}
    for a in arts:  # levels in ascending order in the JSON
        results[a] = {k: results[a][k] for k in sorted(results[a], key=int)}
    return {
        "protocol_label": ROBUSTNESS_PROTOCOL,
        "definition": ROBUSTNESS_DEFINITION,
        "dataset": dataset.name,
        "eval_protocol": protocol,
        "evaluations": [s.name for s in proto.specs],
        "selection": proto.selection,
        "apply_to": apply_to,
        "degraded_splits": degraded,
        "seed": int(seed),
        "input_size": [int(height), int(width)],
        "artifacts": list(arts),
        "levels": list(lv),
        "severity_grid": {a: [dict(p) for p in SEVERITY_GRID[a]] for a in arts},
        "results": results,
    }


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _level_tick(artifact: str, level: int) -> str:
    p = SEVERITY_GRID[artifact][level]
    return "clean" if not p else f"L{level}\n" + ",".join(f"{k}={v:g}" for k, v in p.items() if k != "k")


def _series(res: Mapping[str, Any], artifact: str, metric: str, evaluation: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for key, entry in res["results"].get(artifact, {}).items():
        xs.append(int(key))
        m = entry.get("metrics", {}).get(evaluation)
        ys.append(math.nan if m is None else float(m[metric]))
    return xs, ys


def plot_robustness(
    results_by_model: Mapping[str, Mapping[str, Any]],
    out_png: str | os.PathLike,
    metric: str = "rank1",
    evaluation: str | None = None,
) -> Path:
    """One subplot per artifact, one curve per model (``metric`` in % against severity level); PNG written atomically."""
    return save_figure(robustness_figure(results_by_model, metric, evaluation), out_png)


def robustness_figure(results_by_model: Mapping[str, Mapping[str, Any]], metric: str = "rank1",
                      evaluation: str | None = None) -> Any:
    """The matplotlib Figure of :func:`plot_robustness` (the legend sits below the subplots, outside the data)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - optional extra
        raise ConfigError("plotting needs matplotlib; install the 'viz' extra: pip install 'rlq[viz]'") from None
    if not results_by_model:
        raise ConfigError("plot_robustness: no results to plot")
    first = next(iter(results_by_model.values()))
    ev = evaluation or first["selection"]
    if metric not in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        raise ConfigError(f"metric {metric!r} is not one of rank1, rank5, rank10, rank20, mAP, mINP")
    arts: list[str] = []
    for res in results_by_model.values():
        if ev not in res["evaluations"]:
            raise ConfigError(f"evaluation {ev!r} is not in the results (they have {res['evaluations']})")
        arts += [a for a in res["artifacts"] if a not in arts]
    fig = Figure(figsize=(3.4 * len(arts), 3.6), dpi=100)  # Figure() draws with Agg, no global pyplot state
    axes = fig.subplots(1, len(arts), sharey=True, squeeze=False)[0]  # shared y: artifacts compare at a glance
    for i, a in enumerate(arts):
        ax = axes[i]
        ticks: dict[int, str] = {}
        for name, res in results_by_model.items():
            if a not in res["results"]:
                continue
            xs, ys = _series(res, a, metric, ev)
            ax.plot(xs, [100 * y for y in ys], marker="o", label=str(name))
            ticks.update({x: _level_tick(a, x) for x in xs})
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)], fontsize=7)
        ax.set_title(a, fontsize=10)
        ax.set_xlabel("severity level", fontsize=8)
        if i == 0:
            ax.set_ylabel(f"{ev} {metric} (%)", fontsize=9)
        ax.grid(alpha=0.3)
    applied = first.get("apply_to", "query")
    fig.suptitle(f"{ROBUSTNESS_PROTOCOL}; degraded: {'queries only' if applied == 'query' else 'queries and gallery'}",
                 fontsize=9)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    bottom = 0.0
    if handles:
        # Below the subplots, outside every axes, so that no curve is hidden (one row per 5 models).
        ncol = min(len(labels), 5)
        n_rows = -(-len(labels) // ncol)
        bottom = min(0.4, (0.07 * n_rows + 0.03) * 3.6 / fig.get_figheight())
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, bottom, 1, 0.93))
    return fig


def robustness_markdown(results_by_model: Mapping[str, Mapping[str, Any]], evaluation: str | None = None) -> str:
    """A markdown table (R1 / mAP in %) per model and artifact level, headed by the protocol label."""
    lines = [f"*{ROBUSTNESS_PROTOCOL}.* {ROBUSTNESS_DEFINITION}", ""]
    for name, res in results_by_model.items():
        ev = evaluation or res["selection"]
        levels = [str(x) for x in res["levels"]]
        lines += [f"**{name}** ({ev}, R1 / mAP %, degraded: {', '.join(res['degraded_splits'])})", "",
                  "| artifact | " + " | ".join(f"L{x}" for x in levels) + " |",
                  "|---|" + "---|" * len(levels)]
        for a in res["artifacts"]:
            cells = []
            for x in levels:
                e = res["results"][a].get(x, {})
                m = e.get("metrics", {}).get(ev)
                cells.append("skipped" if m is None else f"{_pct(m['rank1'])} / {_pct(m['mAP'])}")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "\u2013" if x != x else pct(x)  # no valid query: a dash, not nan


# -- the authors' LQ test protocol (`--LR-MODE/--LR-TYPE`), beside rlq's own grid ------------------------------------
def official_lq_evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    kinds: Sequence[str] = ("mix",),
    seed: int = 0,
    height: int,
    width: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    protocol: str = "test",
    flip: bool = True,
    amp_dtype: torch.dtype | None = None,
    cache: Any = None,
    progress: bool = False,
    world: Any = None,
    keep_raw: bool = False,
) -> dict[str, Any]:
    """Protocol metrics under the authors' LQ test protocol (:mod:`rlq.lq.official_test`), one entry per kind.

    With a multi-rank ``world`` (:class:`rlq.engine.distributed.DistInfo`) every rank must call it: the extraction
    is sharded over the ranks and only rank 0 computes metrics (the other ranks' ``results`` stay empty).

    Every split of the protocol (queries **and** gallery) is degraded at original resolution, seeded per
    (seed, split, image). ``results["official_lq:<kind>"]`` holds ``metrics`` (:func:`summarize` per evaluation
    name) and ``mix`` (the artifact probabilities used); with ``keep_raw`` also ``raw``, the per-query results of
    :func:`evaluate_protocol` (for bootstrap intervals; not JSON).
    """
    from rlq.engine.evaluate import evaluate_model
    from rlq.lq.official_test import OFFICIAL_LQ_DEFINITION, OFFICIAL_LQ_KINDS, OFFICIAL_LQ_LABEL, official_lq_name

    bad = [k for k in kinds if k not in OFFICIAL_LQ_KINDS]
    if bad or not kinds:
        raise ConfigError(f"official LQ test kinds {list(kinds)} must be a non-empty subset of {OFFICIAL_LQ_KINDS}")
    if protocol not in dataset.protocols:
        raise ConfigError(f"dataset {dataset.name!r} has no {protocol!r} protocol; it has {sorted(dataset.protocols)}")
    proto = dataset.protocols[protocol]
    results: dict[str, Any] = {}
    for kind in dict.fromkeys(kinds):  # the one evaluation pipeline (rlq.engine.evaluate), without intervals
        ev = evaluate_model(model, dataset, protocol=protocol, device=device, flip=flip,
                            amp="off" if amp_dtype is None else amp_dtype, height=height, width=width,
                            batch_size=batch_size, workers=workers, lq=kind, lq_seed=seed, bootstrap_resamples=None,
                            cache=cache, world=world, progress=progress)
        if ev is None:  # another rank than 0
            continue
        results[official_lq_name(kind)] = {"kind": kind, "mix": ev.lq["mix"], "metrics": ev.summary(),
                                           **({"raw": ev.results} if keep_raw else {})}
    return {
        "protocol_label": OFFICIAL_LQ_LABEL,
        "definition": OFFICIAL_LQ_DEFINITION,
        "dataset": dataset.name,
        "eval_protocol": protocol,
        "evaluations": [s.name for s in proto.specs],
        "selection": proto.selection,
        "degraded_splits": list(proto.split_names),
        "seed": int(seed),
        "input_size": [int(height), int(width)],
        "results": results,
    }


def official_lq_markdown(results_by_model: Mapping[str, Mapping[str, Any]], evaluation: str | None = None) -> str:
    """A markdown table (R1 / mAP in %) per model and official LQ kind, headed by the protocol's label."""
    from rlq.lq.official_test import OFFICIAL_LQ_DEFINITION, OFFICIAL_LQ_LABEL

    lines = [f"*{OFFICIAL_LQ_LABEL}.* {OFFICIAL_LQ_DEFINITION}", ""]
    for name, res in results_by_model.items():
        ev = evaluation or res["selection"]
        lines += [f"**{name}** ({ev}, R1 / mAP %, degraded: {', '.join(res['degraded_splits'])})", "",
                  "| protocol | R1 / mAP |", "|---|---|"]
        for key, entry in res["results"].items():
            m = entry["metrics"].get(ev)
            lines.append(f"| {key} | " + ("n/a" if m is None else f"{_pct(m['rank1'])} / {_pct(m['mAP'])}") + " |")
        lines.append("")
    return "\n".join(lines)
