"""Robustness per artifact (paper Fig. 8 left) under three labelled protocols (docs/method.md §12).

* ``rlq`` (default): rlq's own graded grid (:data:`rlq.lq.severity.SEVERITY_GRID`, levels 0-4, 0 = clean), one
  artifact at a time, seeded, applied to the test-resized **query** images (``apply_to="query"``; ``"gallery"``
  and ``"both"`` are also available). This protocol is ours, not the paper's; results say so.
* ``corruption``: a corruption-benchmark grid (:data:`rlq.lq.corruption.CORRUPTION_GRID`: ImageNet-C's
  severities 1-5 of pixelate, defocus blur, motion blur and JPEG, as the corruption ReID benchmark uses them),
  reported for the query only, the gallery only and both.
* ``official``: the authors' LQ test protocol (:func:`official_lq_evaluate`: query and gallery degraded at
  original resolution with the training ranges).

Both grids degrade after the test resize, at the evaluation resolution, through
``extract_features(batch_transform=...)``. Clean features are extracted once per call (or passed in); each
degraded split once per (artifact, level), shared by every ``apply_to`` setting that degrades it. Every point
carries 95 % percentile-bootstrap intervals over queries (``rank1_ci`` / ``mAP_ci``,
:mod:`rlq.evaluation.bootstrap`); ``keep_per_query`` also returns each point's per-query hits and AP
(:class:`~rlq.evaluation.bootstrap.PerQuery`) for paired comparisons of two models.
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlq.data.records import Dataset, Protocol
from rlq.errors import ConfigError
from rlq.evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, PerQuery, add_intervals, ci_info
from rlq.evaluation.extract import extract_features
from rlq.evaluation.protocols import evaluate_protocol, summarize
from rlq.io import save_figure
from rlq.lq.corruption import (
    CORRUPTION_ARTIFACTS,
    CORRUPTION_GRID,
    CORRUPTION_MAX_LEVEL,
    CORRUPTION_SOURCE,
    corrupt_batch,
)
from rlq.lq.severity import MAX_LEVEL, SEVERITY_ARTIFACTS, SEVERITY_GRID, degrade_batch
from rlq.report_format import pct

__all__ = [
    "official_lq_evaluate",
    "official_lq_markdown",
    "ROBUSTNESS_PROTOCOL",
    "ROBUSTNESS_DEFINITION",
    "CORRUPTION_PROTOCOL",
    "CORRUPTION_DEFINITION",
    "LQ_PROTOCOLS",
    "APPLY_TO",
    "GRIDS",
    "SETTING_TEXT",
    "robustness_sweep",
    "robustness_sweeps",
    "level_skip_reason",
    "degrade_transform",
    "corrupt_transform",
    "plot_robustness",
    "robustness_figure",
    "robustness_markdown",
]

logger = logging.getLogger(__name__)

#: Label carried by every result and plot of rlq's own grid (docs/method.md §12 asks for it).
ROBUSTNESS_PROTOCOL = "rlq's own robustness protocol (docs/method.md §12), not a paper protocol"
ROBUSTNESS_DEFINITION = (
    "One synthetic artifact type per curve (rlq.lq.severity.SEVERITY_GRID; level 0 = clean), applied after the "
    "test resize at the evaluation resolution, seeded per split (motion-blur angles); query images only "
    "(docs/method.md §12) unless apply_to='gallery' or 'both'. Metrics follow docs/datasets.md §2 (fractions; "
    "invalid queries excluded)."
)
#: Label of the corruption-benchmark grid.
CORRUPTION_PROTOCOL = ("a corruption-benchmark grid: ImageNet-C's severities 1-5 as the corruption ReID benchmark "
                       "(Market-1501-C) uses them, run with rlq's own operations (docs/method.md §12)")
CORRUPTION_DEFINITION = (
    "Pixelate, defocus blur, motion blur and JPEG at ImageNet-C's five published severities "
    "(rlq.lq.corruption.CORRUPTION_GRID; level 0 = clean), applied with rlq's own operations after the test resize "
    "at the evaluation resolution, seeded per split and image (motion angles); to the query only, the gallery only, "
    "or both, each reported and labelled. Metrics follow docs/datasets.md §2 (fractions; invalid queries excluded)."
)
#: The protocols of `rlq analyze robustness --lq-protocol`; the grids :func:`robustness_sweep` runs; its settings.
LQ_PROTOCOLS = ("rlq", "official", "corruption")
GRIDS = ("rlq", "corruption")
APPLY_TO = ("query", "gallery", "both")
SETTING_TEXT = {"query": "queries only", "gallery": "gallery only", "both": "queries and gallery"}


@dataclass(frozen=True)
class _Grid:
    name: str
    table: Mapping[str, Sequence[Mapping[str, Any]]]
    artifacts: tuple[str, ...]
    max_level: int
    label: str
    definition: str
    transform: Callable[[str, int, int], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


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


def corrupt_transform(artifact: str, level: int, seed: int):
    """A ``batch_transform`` for :func:`extract_features`: :func:`rlq.lq.corruption.corrupt_batch`, each image seeded
    by its running index."""

    def transform(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return corrupt_batch(images, artifact, level, seed, indices=indices.detach().cpu())

    return transform


_GRIDS = {
    "rlq": _Grid("rlq", SEVERITY_GRID, SEVERITY_ARTIFACTS, MAX_LEVEL, ROBUSTNESS_PROTOCOL, ROBUSTNESS_DEFINITION,
                 degrade_transform),
    "corruption": _Grid("corruption", CORRUPTION_GRID, CORRUPTION_ARTIFACTS, CORRUPTION_MAX_LEVEL, CORRUPTION_PROTOCOL,
                        CORRUPTION_DEFINITION, corrupt_transform),
}


def _grid(name: str) -> _Grid:
    if name not in _GRIDS:
        hint = " (the authors' protocol runs through official_lq_evaluate)" if name == "official" else ""
        raise ConfigError(f"robustness grid {name!r} is not one of {GRIDS}{hint}; docs/method.md §12 describes them")
    return _GRIDS[name]


def level_skip_reason(artifact: str, level: int, height: int, width: int, grid: str = "rlq") -> str | None:
    """Why ``level`` of ``artifact`` cannot run at ``height`` x ``width`` (rlq's pixelation needs a shorter side > s), else None."""
    if grid != "rlq":
        return None  # the corruption grid's operations run at any size
    spec = SEVERITY_GRID[artifact][level]
    if artifact == "pixelation" and level > 0 and min(height, width) <= spec["s"]:
        return (f"pixelation level {level} downsamples the shorter side to s={spec['s']} px, which needs an evaluation "
                f"size whose shorter side exceeds it (got {height}x{width})")
    return None


def _split_seed(seed: int, split: str) -> int:
    # A split's own stream: the gallery's motion angles are not a copy of the query's.
    return int(np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8"))]).generate_state(1)[0])


def _check_args(g: _Grid, artifacts: Sequence[str] | None, levels: Sequence[int] | None,
                apply_to: Sequence[str]) -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    arts = tuple(g.artifacts if artifacts is None else artifacts)
    bad = [a for a in arts if a not in g.artifacts]
    if bad or not arts:
        raise ConfigError(f"robustness artifacts {list(arts)} must be a non-empty subset of {g.artifacts} "
                          f"(the {g.name} grid, docs/method.md §12)")
    lv: list[int] = []
    for x in (range(g.max_level + 1) if levels is None else levels):
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not 0 <= int(x) <= g.max_level:
            raise ConfigError(f"robustness level {x!r} is not an integer in 0..{g.max_level} (the {g.name} grid; "
                              "0 = clean)")
        if int(x) not in lv:
            lv.append(int(x))
    if not lv:
        raise ConfigError(f"robustness levels are empty; pass e.g. {','.join(map(str, range(g.max_level + 1)))}")
    settings: list[str] = []
    for s in apply_to:
        if s not in APPLY_TO:
            raise ConfigError(f"apply_to must be one of {APPLY_TO} (the splits degraded), got {s!r}")
        if s not in settings:
            settings.append(s)
    if not settings:
        raise ConfigError(f"apply_to is empty; pass one or more of {APPLY_TO}")
    return arts, tuple(sorted(lv)), tuple(settings)


def _roles(protocol: Protocol) -> tuple[list[str], list[str]]:
    queries = list(dict.fromkeys(s.query for s in protocol.specs))
    galleries = list(dict.fromkeys(s.gallery for s in protocol.specs))
    return queries, galleries


def _degraded_splits(proto: Protocol, protocol: str, setting: str) -> list[str]:
    """The splits ``setting`` degrades; a split that is query and gallery at once only allows ``both``."""
    q_splits, g_splits = _roles(proto)
    both_roles = sorted(set(q_splits) & set(g_splits))
    if both_roles and setting != "both":
        only = "queries" if setting == "query" else "gallery"
        raise ConfigError(f"split(s) {both_roles} serve as query and gallery in protocol {protocol!r}; degrading only the "
                          f"{only} is undefined there; use apply_to='both'")
    if setting == "query":
        return list(q_splits)
    if setting == "gallery":
        return list(g_splits)
    return list(proto.split_names)


def _check_resamples(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 0:
        raise ConfigError(f"bootstrap_resamples must be an integer >= 0 (0 = no intervals; {DEFAULT_RESAMPLES} for the "
                          f"reported ones), got {n!r}")
    return int(n)


def _point(raw: Mapping[str, Mapping[str, Any]], resamples: int, boot_seed: int) -> dict[str, dict[str, Any]]:
    """summarize() of one point's results, with rank1_ci / mAP_ci when resamples > 0."""
    return summarize(add_intervals(raw, num_resamples=resamples, seed=boot_seed) if resamples else raw)


def _per_query(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, PerQuery]:
    return {name: PerQuery.from_result(r) for name, r in raw.items()}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _mean_cosine(feats: Mapping[str, np.ndarray], clean: Mapping[str, np.ndarray], splits: Sequence[str],
                 degraded: Sequence[str]) -> float:
    """Mean cosine of degraded to clean features over ``splits`` (1.0 where a split is not degraded)."""
    cos = [1.0 if s not in degraded else float(np.mean(np.sum(_unit(feats[s]) * _unit(clean[s]), axis=1)))
           for s in splits if len(clean[s])]
    return float(np.mean(cos)) if cos else math.nan


def robustness_sweeps(
    model: nn.Module,
    dataset: Dataset,
    *,
    grid: str = "rlq",
    artifacts: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
    apply_to: Sequence[str] = ("query",),
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
    bootstrap_resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = DEFAULT_SEED,
    keep_per_query: bool = False,
    clean_features: Mapping[str, np.ndarray] | None = None,
    checkpoint: str | None = None,
) -> Any:
    """:func:`robustness_sweep` for several ``apply_to`` settings at once: ``{setting: result}``.

    The features are shared: the clean ones are extracted once (or taken from ``clean_features``), and each
    degraded split once per (artifact, level), whichever settings use it (the degraded gallery serves both
    ``"gallery"`` and ``"both"``). With ``keep_per_query`` returns ``(results, per_query)``, ``per_query[setting]
    [artifact][level][evaluation]`` a :class:`~rlq.evaluation.bootstrap.PerQuery` (levels as ``str``, as in the JSON).
    """
    from tqdm.auto import tqdm

    g = _grid(grid)
    if isinstance(apply_to, str):
        apply_to = (apply_to,)
    arts, lv, settings = _check_args(g, artifacts, levels, apply_to)
    resamples = _check_resamples(bootstrap_resamples)
    if protocol not in dataset.protocols:
        raise ConfigError(f"dataset {dataset.name!r} has no {protocol!r} protocol; it has {sorted(dataset.protocols)}")
    proto = dataset.protocols[protocol]
    degraded = {s: _degraded_splits(proto, protocol, s) for s in settings}
    needed = [s for s in proto.split_names if any(s in d for d in degraded.values())]
    q_splits, g_splits = _roles(proto)
    g_only = [s for s in g_splits if s not in q_splits]
    samples = {s: dataset.split(s) for s in proto.split_names}
    log: dict[str, Any] = {"clean": "given" if clean_features is not None else list(proto.split_names), "degraded": []}

    def extract(split: str, transform=None, desc: str = "") -> np.ndarray:
        return extract_features(
            model, [s.path for s in samples[split]], height, width, device=device, batch_size=batch_size,
            workers=workers, flip=flip, amp_dtype=amp_dtype, progress=progress, desc=desc or f"extract {split}",
            cache=cache, batch_transform=transform,
        )

    def evaluate(feats: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
        return evaluate_protocol({s: (feats[s], samples[s]) for s in proto.split_names}, proto, device=device)

    if clean_features is not None:
        clean = {}
        for s in proto.split_names:
            f = clean_features.get(s) if hasattr(clean_features, "get") else None
            if f is None or np.asarray(f).ndim != 2 or len(f) != len(samples[s]):
                raise ConfigError(f"clean_features must hold each split of protocol {protocol!r} ({list(proto.split_names)}) "
                                  f"as a (images x dims) array in the dataset's order; split {s!r} does not fit "
                                  f"({len(samples[s])} images)")
            clean[s] = np.asarray(f)
    else:
        clean = {s: extract(s, desc=f"extract {s} (clean)") for s in proto.split_names}
    clean_raw = evaluate(clean)
    clean_point = _point(clean_raw, resamples, bootstrap_seed)
    results: dict[str, dict[str, dict[str, Any]]] = {st: {a: {} for a in arts} for st in settings}
    per_query: dict[str, dict[str, dict[str, Any]]] = {st: {a: {} for a in arts} for st in settings}
    for st in settings:
        for a in arts:
            if 0 in lv:
                results[st][a]["0"] = {"params": {}, "metrics": clean_point, "query_cosine_to_clean": 1.0,
                                       "gallery_cosine_to_clean": 1.0}
                if keep_per_query:
                    per_query[st][a]["0"] = _per_query(clean_raw)
    plan = [(a, x) for a in arts for x in lv if x > 0]
    for a, x in tqdm(plan, desc=f"robustness ({g.name})", unit="level", disable=not progress):
        params = dict(g.table[a][x])
        reason = level_skip_reason(a, x, height, width, grid=g.name)
        if reason is not None:
            logger.warning("skipping %s", reason)
            for st in settings:
                results[st][a][str(x)] = {"params": params, "skipped": reason}
            continue
        bad = {}
        for s in needed:  # each degraded split once per (artifact, level), shared by the settings
            bad[s] = extract(s, g.transform(a, x, _split_seed(seed, s)), desc=f"{s} {a} L{x}")
            log["degraded"].append(f"{s}:{a}:{x}")
        for st in settings:
            feats = {**clean, **{s: bad[s] for s in degraded[st]}}
            raw = evaluate(feats)
            results[st][a][str(x)] = {
                "params": params, "metrics": _point(raw, resamples, bootstrap_seed),
                "query_cosine_to_clean": _mean_cosine(feats, clean, q_splits, degraded[st]),
                "gallery_cosine_to_clean": _mean_cosine(feats, clean, g_only, degraded[st])}
            if keep_per_query:
                per_query[st][a][str(x)] = _per_query(raw)
        del bad
    out: dict[str, dict[str, Any]] = {}
    for st in settings:
        res = {a: {k: results[st][a][k] for k in sorted(results[st][a], key=int)} for a in arts}  # levels ascending
        out[st] = {
            "lq_protocol": g.name,
            "protocol_label": g.label,
            "definition": g.definition,
            **({"source": CORRUPTION_SOURCE} if g.name == "corruption" else {}),
            "dataset": dataset.name,
            "eval_protocol": protocol,
            "evaluations": [s.name for s in proto.specs],
            "selection": proto.selection,
            "apply_to": st,
            "degraded_splits": degraded[st],
            "seed": int(seed),
            "input_size": [int(height), int(width)],
            "flip": bool(flip),
            "checkpoint_label": checkpoint,
            "artifacts": list(arts),
            "levels": list(lv),
            "severity_grid": {a: [dict(p) for p in g.table[a]] for a in arts},
            "num_queries": {n: int(m["num_valid_queries"]) for n, m in clean_point.items()},
            "intervals": ci_info(resamples, bootstrap_seed) if resamples else None,
            "extractions": {"clean": log["clean"], "degraded": list(log["degraded"])},
            "results": res,
        }
    if keep_per_query:
        return out, {st: {a: dict(sorted(per_query[st][a].items(), key=lambda kv: int(kv[0]))) for a in arts}
                     for st in settings}
    return out


def robustness_sweep(
    model: nn.Module,
    dataset: Dataset,
    *,
    grid: str = "rlq",
    artifacts: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
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
    bootstrap_resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = DEFAULT_SEED,
    keep_per_query: bool = False,
    clean_features: Mapping[str, np.ndarray] | None = None,
    checkpoint: str | None = None,
) -> Any:
    """Protocol metrics per artifact and severity level of one grid and one ``apply_to`` setting (a JSON-able dict).

    ``grid``: ``"rlq"`` (rlq's own levels 0-4, docs/method.md §12) or ``"corruption"`` (ImageNet-C's severities,
    levels 0-5); ``artifacts`` / ``levels`` default to the grid's all. ``apply_to``: ``"query"`` (the rlq
    protocol), ``"gallery"`` or ``"both"``; the result's ``degraded_splits`` names the splits degraded.
    ``results[artifact][str(level)]`` holds ``params`` (the grid entry), ``metrics`` (:func:`summarize` per
    evaluation name, with ``rank1_ci`` / ``mAP_ci``: percentile bootstrap over the valid queries,
    ``bootstrap_resamples`` resamples, 0 = none), ``query_cosine_to_clean`` / ``gallery_cosine_to_clean`` (mean
    cosine of each degraded feature to its clean one; 1.0 for a clean split), or ``skipped`` with the reason
    when the level cannot run at ``height`` x ``width``. Level 0 is computed once and shared by every artifact.
    ``clean_features`` ({split: features} of this model with the same flip / precision / size) skips the clean
    extraction; ``checkpoint`` is a description of the weights (e.g. "weights after the last epoch") that the
    result and its plot carry. With ``keep_per_query`` returns ``(result, per_query)``,
    ``per_query[artifact][str(level)][evaluation]`` a :class:`~rlq.evaluation.bootstrap.PerQuery`.
    """
    if not isinstance(apply_to, str):
        raise ConfigError(f"robustness_sweep takes one apply_to setting (one of {APPLY_TO}), got {apply_to!r}; "
                          "robustness_sweeps runs several on shared features")
    got = robustness_sweeps(model, dataset, grid=grid, artifacts=artifacts, levels=levels, apply_to=(apply_to,), seed=seed,
                            height=height, width=width, device=device, batch_size=batch_size, workers=workers,
                            protocol=protocol, flip=flip, amp_dtype=amp_dtype, cache=cache, progress=progress,
                            bootstrap_resamples=bootstrap_resamples, bootstrap_seed=bootstrap_seed,
                            keep_per_query=keep_per_query, clean_features=clean_features, checkpoint=checkpoint)
    if keep_per_query:
        res, pq = got
        return res[apply_to], pq[apply_to]
    return got[apply_to]


# -- pictures and tables ---------------------------------------------------------------------------------------------
_TICK_NAMES = {"sigma": "\u03c3", "alias_sigma": "\u03c3", "radius": "r", "quality": "q"}


def _level_tick(res: Mapping[str, Any], artifact: str, level: int) -> str:
    grid = res.get("severity_grid", {}).get(artifact)
    p = grid[level] if grid is not None and level < len(grid) else {}
    if not p:
        return "clean" if level == 0 else f"L{level}"
    # one parameter per line, short names (the kernel size k of rlq's defocus follows from sigma)
    return f"L{level}\n" + "\n".join(f"{_TICK_NAMES.get(k, k)}={v:g}" for k, v in p.items() if k != "k")


def _series(res: Mapping[str, Any], artifact: str, metric: str, evaluation: str) -> tuple[list[int], list[float], list[float], list[float]]:
    xs, ys, lo, hi = [], [], [], []
    for key, entry in res["results"].get(artifact, {}).items():
        xs.append(int(key))
        m = entry.get("metrics", {}).get(evaluation)
        ys.append(math.nan if m is None else _num(m[metric]))
        ci = None if m is None else m.get(f"{metric}_ci")
        lo.append(math.nan if ci is None else _num(ci[0]))
        hi.append(math.nan if ci is None else _num(ci[1]))
    return xs, ys, lo, hi


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)  # null (no valid query) in a JSON round trip


def _n_queries(res: Mapping[str, Any], evaluation: str) -> int | None:
    n = (res.get("num_queries") or {}).get(evaluation)
    return None if n is None else int(n)


def _one(values: Sequence[Any]) -> Any:
    vals = list(dict.fromkeys(values))
    return vals[0] if len(vals) == 1 else None


def plot_robustness(
    results_by_model: Mapping[str, Mapping[str, Any]],
    out_png: str | os.PathLike,
    metric: str = "rank1",
    evaluation: str | None = None,
    *,
    bands: bool = True,
) -> Path:
    """One subplot per artifact, one curve per model (``metric`` in % against severity level), 95 % bootstrap bands
    shaded; the title names the protocol, the splits degraded, the queries per point and the checkpoint. PNG
    written atomically."""
    return save_figure(robustness_figure(results_by_model, metric, evaluation, bands=bands), out_png)


def robustness_figure(results_by_model: Mapping[str, Mapping[str, Any]], metric: str = "rank1",
                      evaluation: str | None = None, *, bands: bool = True) -> Any:
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
    kinds = {(r.get("lq_protocol", "rlq"), r.get("apply_to", "query")) for r in results_by_model.values()}
    if len(kinds) > 1:
        raise ConfigError(f"plot_robustness draws one protocol and one apply_to setting per picture; got {sorted(kinds)}")
    arts: list[str] = []
    for res in results_by_model.values():
        if ev not in res["evaluations"]:
            raise ConfigError(f"evaluation {ev!r} is not in the results (they have {res['evaluations']})")
        arts += [a for a in res["artifacts"] if a not in arts]
    ckpt = _one([r.get("checkpoint_label") for r in results_by_model.values()])
    width = max(3.4 * len(arts), 7.0)
    title = _figure_title(results_by_model, ev, metric, bands, ckpt, width)
    fig = Figure(figsize=(width, 4.2), dpi=100)  # Figure() draws with Agg, no global pyplot state
    axes = fig.subplots(1, len(arts), sharey=True, squeeze=False)[0]  # shared y: artifacts compare at a glance
    for i, a in enumerate(arts):
        ax = axes[i]
        ticks: dict[int, str] = {}
        for name, res in results_by_model.items():
            if a not in res["results"]:
                continue
            xs, ys, lo, hi = _series(res, a, metric, ev)
            label = str(name) if ckpt is not None or not res.get("checkpoint_label") else f"{name} ({res['checkpoint_label']})"
            (line,) = ax.plot(xs, [100 * y for y in ys], marker="o", label=label)
            if bands and any(v == v for v in lo):
                ax.fill_between(xs, [100 * v for v in lo], [100 * v for v in hi], color=line.get_color(), alpha=0.18,
                                linewidth=0)
            ticks.update({x: _level_tick(res, a, x) for x in xs})
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)], fontsize=7)
        ax.set_title(a, fontsize=10)
        ax.set_xlabel("severity level", fontsize=8)
        if i == 0:
            ax.set_ylabel(f"{ev} {metric} (%)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    bottom = 0.0
    if handles:
        # Below the subplots, outside every axes, so that no curve is hidden (one row per 5 models).
        ncol = min(len(labels), 5)
        n_rows = -(-len(labels) // ncol)
        bottom = min(0.4, (0.07 * n_rows + 0.03) * 3.6 / fig.get_figheight())
        fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, bottom, 1, 1))  # tight_layout leaves room for the suptitle's lines
    return fig


def _figure_title(results_by_model: Mapping[str, Mapping[str, Any]], ev: str, metric: str, bands: bool,
                  ckpt: str | None, width_in: float) -> str:
    first = next(iter(results_by_model.values()))
    setting = first.get("apply_to", "query")
    n = _one([_n_queries(r, ev) for r in results_by_model.values()])
    iv = first.get("intervals")
    parts = [f"{first.get('protocol_label', ROBUSTNESS_PROTOCOL)}; degraded: {SETTING_TEXT.get(setting, setting)}",
             f"{ev}: {n:,} queries per point" if n is not None else f"{ev}: queries per point differ by model"]
    if bands and iv and metric in ("rank1", "mAP"):
        parts.append(f"shaded: {100 * iv['level']:.0f} % percentile bootstrap over queries ({iv['resamples']} resamples)")
    elif metric not in ("rank1", "mAP"):
        parts.append("no bands (intervals are computed for rank1 and mAP)")
    else:
        parts.append("no bands")
    parts.append(f"checkpoint: {ckpt}" if ckpt else "checkpoint per curve in the legend")
    text = "; ".join(parts)
    return "\n".join(textwrap.wrap(text, width=max(60, int(width_in * 15))))


def _pct(x: Any) -> str:
    return "\u2013" if x is None or x != x else pct(x)  # no valid query: a dash, not nan


def _cell(m: Mapping[str, Any] | None) -> str:
    if m is None:
        return "skipped"

    def one(k: str) -> str:
        ci = m.get(f"{k}_ci")
        return _pct(m[k]) + ("" if ci is None else f" [{_pct(ci[0])}, {_pct(ci[1])}]")

    return f"{one('rank1')} / {one('mAP')}"


def robustness_markdown(results_by_model: Mapping[str, Mapping[str, Any]], evaluation: str | None = None) -> str:
    """A markdown table (R1 / mAP in %, with their 95 % intervals) per model and artifact level, headed by the
    protocol's label and definition."""
    first = next(iter(results_by_model.values()), {})
    lines = [f"*{first.get('protocol_label', ROBUSTNESS_PROTOCOL)}.* {first.get('definition', ROBUSTNESS_DEFINITION)}", ""]
    if first.get("source"):
        lines += [f"Severity parameters: {first['source']}.", ""]
    for name, res in results_by_model.items():
        ev = evaluation or res["selection"]
        levels = [str(x) for x in res["levels"]]
        n = _n_queries(res, ev)
        iv = res.get("intervals")
        what = [f"{ev}", "R1 / mAP %" + (f" [{100 * iv['level']:.0f} % bootstrap interval over queries, "
                                          f"{iv['resamples']} resamples]" if iv else ""),
                f"degraded: {', '.join(res['degraded_splits'])} ({SETTING_TEXT.get(res.get('apply_to', 'query'), '')})"]
        if n is not None:
            what.append(f"{n:,} queries per point")
        if res.get("checkpoint_label"):
            what.append(f"checkpoint: {res['checkpoint_label']}")
        lines += [f"**{name}** ({'; '.join(what)})", "",
                  "| artifact | " + " | ".join(f"L{x}" for x in levels) + " |",
                  "|---|" + "---|" * len(levels)]
        for a in res["artifacts"]:
            cells = [_cell(res["results"][a].get(x, {}).get("metrics", {}).get(ev)) for x in levels]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


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
    bootstrap_resamples: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = DEFAULT_SEED,
    keep_per_query: bool = False,
    checkpoint: str | None = None,
) -> Any:
    """Protocol metrics under the authors' LQ test protocol (:mod:`rlq.lq.official_test`), one entry per kind.

    With a multi-rank ``world`` (:class:`rlq.engine.distributed.DistInfo`) every rank must call it: the extraction
    is sharded over the ranks and only rank 0 computes metrics (the other ranks' ``results`` stay empty).

    Every split of the protocol (queries **and** gallery) is degraded at original resolution, seeded per
    (seed, split, image), each split extracted once per kind. ``results["official_lq:<kind>"]`` holds ``metrics``
    (:func:`summarize` per evaluation name, with ``rank1_ci`` / ``mAP_ci`` from ``bootstrap_resamples`` percentile
    bootstrap resamples over queries, 0 = none) and ``mix`` (the artifact probabilities used); with ``keep_raw``
    also ``raw``, the per-query results of :func:`evaluate_protocol` (not JSON). With ``keep_per_query`` returns
    ``(result, per_query)``, ``per_query["official_lq:<kind>"][evaluation]`` a :class:`PerQuery`.
    """
    from rlq.engine.evaluate import evaluate_model
    from rlq.lq.official_test import OFFICIAL_LQ_DEFINITION, OFFICIAL_LQ_KINDS, OFFICIAL_LQ_LABEL, official_lq_name

    resamples = _check_resamples(bootstrap_resamples)
    bad = [k for k in kinds if k not in OFFICIAL_LQ_KINDS]
    if bad or not kinds:
        raise ConfigError(f"official LQ test kinds {list(kinds)} must be a non-empty subset of {OFFICIAL_LQ_KINDS}")
    if protocol not in dataset.protocols:
        raise ConfigError(f"dataset {dataset.name!r} has no {protocol!r} protocol; it has {sorted(dataset.protocols)}")
    proto = dataset.protocols[protocol]
    results: dict[str, Any] = {}
    per_query: dict[str, dict[str, PerQuery]] = {}
    for kind in dict.fromkeys(kinds):  # the one evaluation pipeline (rlq.engine.evaluate); bands from _point
        ev = evaluate_model(model, dataset, protocol=protocol, device=device, flip=flip,
                            amp="off" if amp_dtype is None else amp_dtype, height=height, width=width,
                            batch_size=batch_size, workers=workers, lq=kind, lq_seed=seed, bootstrap_resamples=None,
                            cache=cache, world=world, progress=progress)
        if ev is None:  # another rank than 0
            continue
        raw = ev.results
        results[official_lq_name(kind)] = {"kind": kind, "mix": ev.lq["mix"],
                                           "metrics": _point(raw, resamples, bootstrap_seed),
                                           **({"raw": raw} if keep_raw else {})}
        if keep_per_query:
            per_query[official_lq_name(kind)] = _per_query(raw)
    out = {
        "lq_protocol": "official",
        "protocol_label": OFFICIAL_LQ_LABEL,
        "definition": OFFICIAL_LQ_DEFINITION,
        "dataset": dataset.name,
        "eval_protocol": protocol,
        "evaluations": [s.name for s in proto.specs],
        "selection": proto.selection,
        "apply_to": "both",
        "degraded_splits": list(proto.split_names),
        "seed": int(seed),
        "input_size": [int(height), int(width)],
        "flip": bool(flip),
        "checkpoint_label": checkpoint,
        "intervals": ci_info(resamples, bootstrap_seed) if resamples else None,
        "results": results,
    }
    return (out, per_query) if keep_per_query else out


def official_lq_markdown(results_by_model: Mapping[str, Mapping[str, Any]], evaluation: str | None = None) -> str:
    """A markdown table (R1 / mAP in %) per model and official LQ kind, headed by the protocol's label."""
    from rlq.lq.official_test import OFFICIAL_LQ_DEFINITION, OFFICIAL_LQ_LABEL

    lines = [f"*{OFFICIAL_LQ_LABEL}.* {OFFICIAL_LQ_DEFINITION}", ""]
    for name, res in results_by_model.items():
        ev = evaluation or res["selection"]
        iv = res.get("intervals")
        what = [ev, "R1 / mAP %" + (f" [{100 * iv['level']:.0f} % bootstrap interval over queries, {iv['resamples']} "
                                    "resamples]" if iv else ""), f"degraded: {', '.join(res['degraded_splits'])}"]
        if res.get("checkpoint_label"):
            what.append(f"checkpoint: {res['checkpoint_label']}")
        lines += [f"**{name}** ({'; '.join(what)})", "", "| protocol | R1 / mAP | queries |", "|---|---|---|"]
        for key, entry in res["results"].items():
            m = entry["metrics"].get(ev)
            lines.append(f"| {key} | " + ("n/a | \u2013" if m is None else f"{_cell(m)} | {m['num_valid_queries']:,}") + " |")
        lines.append("")
    return "\n".join(lines)
