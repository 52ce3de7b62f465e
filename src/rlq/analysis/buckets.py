"""Metrics per query-quality bucket (paper Table 10 style): each query subset against the full gallery.

Bucket sources: rlq's own size buckets from the image height (:func:`rlq.data.sidecars.size_bucket`), the
authors' ``*_Size.csv`` (kept for comparison, docs/datasets.md §5.3), or SynthCC's ``quality.csv`` (artifact +
severity, or a coarse clean / LQ split). Per-query AP and first-match ranks come from one evaluation pass
and are averaged per bucket, which equals evaluating each subset on its own (queries are independent).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from rlq.data.records import Protocol, Sample
from rlq.data.sidecars import SIZE_BUCKETS, size_bucket
from rlq.errors import ConfigError, DatasetError, SideInputError
from rlq.evaluation.ranking import evaluate_features
from rlq.io import save_figure
from rlq.report_format import pct

__all__ = [
    "image_heights",
    "size_buckets",
    "size_csv_buckets",
    "quality_buckets",
    "quality_order",
    "bucket_metrics",
    "protocol_bucket_metrics",
    "plot_buckets",
    "bucket_panels",
    "buckets_markdown",
    "SIZE_BUCKETS",
]

_SUMMARY = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_valid_queries", "num_queries")
_SHOW = 5


def image_heights(samples: Sequence[Sample]) -> np.ndarray:
    """Pixel height of each sample's image file (read from the header, not decoded)."""
    from PIL import Image

    out = np.zeros(len(samples), dtype=np.int64)
    for i, s in enumerate(samples):
        try:
            with Image.open(s.path) as im:
                out[i] = im.height
        except Exception as e:  # noqa: BLE001 - PIL raises many types for unreadable files; re-raised as DatasetError
            raise DatasetError(f"cannot read the size of image {s.path} ({type(e).__name__}: {e}); "
                               "`rlq check-data` lists unreadable images") from None
    return out


def size_buckets(samples: Sequence[Sample], heights: Sequence[int] | None = None) -> dict[str, str]:
    """{sample key: rlq size bucket of its image height} (edges 32/64/128/256, lower edge inclusive)."""
    h = image_heights(samples) if heights is None else np.asarray(heights)
    if len(h) != len(samples):
        raise ConfigError(f"{len(h)} heights for {len(samples)} samples")
    return {s.key: size_bucket(int(x)) for s, x in zip(samples, h)}


def _missing(what: str, missing: list[str], total: int, hint: str) -> SideInputError:
    return SideInputError(f"{what} lacks {len(missing)} of {total} images, e.g. {missing[:_SHOW]}; {hint}")


def size_csv_buckets(samples: Sequence[Sample], table: Mapping[str, str], *, source: str = "size CSV") -> dict[str, str]:
    """{sample key: bucket} from the authors' size table (:func:`read_size_csv`).

    Their ``Image`` column is the LTCC basename with extension, PRCC ``<pid>/<file>`` (train, val) or
    ``<camera>/<pid>/<file>`` (test); each sample takes the longest path suffix (3, 2, then 1 components) found
    in the table.
    """
    out: dict[str, str] = {}
    missing: list[str] = []
    for s in samples:
        parts = PurePath(s.path).parts
        for k in (3, 2, 1):
            cand = "/".join(parts[-k:])
            if len(parts) >= k and cand in table:
                out[s.key] = table[cand]
                break
        else:
            missing.append("/".join(parts[-3:]))
    if missing:
        raise _missing(source, missing, len(samples), "pass the size CSV of this dataset (LTCC_Size.csv / PRCC_Size.csv)")
    return out


def quality_buckets(samples: Sequence[Sample], table: Mapping[str, tuple[str, int, float]], *,
                    coarse: bool = False, source: str = "quality CSV") -> dict[str, str]:
    """{sample key: bucket} from SynthCC's quality table: ``clean`` / ``<artifact>-s<severity>``, or ``clean`` / ``LQ``."""
    out: dict[str, str] = {}
    missing: list[str] = []
    for s in samples:
        q = table.get(s.key)
        if q is None:
            missing.append(s.key)
            continue
        art, sev = q[0], int(q[1])
        out[s.key] = "clean" if art == "clean" else ("LQ" if coarse else f"{art}-s{sev}")
    if missing:
        raise _missing(source, missing, len(samples), "the table must be the quality.csv written with this SynthCC tree")
    return out


def quality_order(labels: Sequence[str]) -> list[str]:
    """``clean`` first, then artifacts alphabetically with ascending severity."""
    def key(x: str) -> tuple:
        if x == "clean":
            return (0, "", 0)
        if x == "LQ":
            return (1, "", 0)
        art, _, sev = x.rpartition("-s")
        return (2, art, int(sev) if sev.isdigit() else 0)
    return sorted(set(labels), key=key)


def _aggregate(r: Mapping[str, Any], mask: np.ndarray) -> dict[str, float]:
    valid = np.asarray(r["valid"])[mask]
    nv, nq = int(valid.sum()), int(mask.sum())
    if nv == 0:
        vals = {k: math.nan for k in _SUMMARY[:6]}
    else:
        fr = np.asarray(r["first_rank"])[mask][valid]
        vals = {f"rank{k}": float(np.count_nonzero(fr <= k) / nv) for k in (1, 5, 10, 20)}
        vals["mAP"] = float(np.asarray(r["ap"])[mask][valid].mean())
        vals["mINP"] = float(np.asarray(r["inp"])[mask][valid].mean())
    return {**vals, "num_valid_queries": nv, "num_queries": nq}


def bucket_metrics(
    query_feats: Any,
    gallery_feats: Any,
    query_samples: Sequence[Sample],
    gallery_samples: Sequence[Sample],
    buckets: Mapping[str, str],
    *,
    modes: str | Sequence[str] = "general",
    order: Sequence[str] | None = None,
    max_rank: int = 50,
    device: Any = None,
) -> dict[str, Any]:
    """Metrics of each query bucket (``buckets``: query key -> label) against the whole gallery, per rule in ``modes``.

    Returns ``buckets[label] = {"num_queries", "fraction", "results": {mode: summary}}`` (labels in ``order``, which
    may list empty buckets, else sorted), ``all`` (every query) and the mode list. Every query must have a bucket.
    """
    ms = (modes,) if isinstance(modes, str) else tuple(modes)
    keys = [s.key for s in query_samples]
    missing = [k for k in keys if k not in buckets]
    if missing:
        raise _missing("the bucket table", missing, len(keys), "every query needs a bucket")
    labels = np.array([buckets[k] for k in keys], dtype=object)
    present = list(dict.fromkeys(labels.tolist()))
    if order is None:
        names = sorted(present)
    else:
        names = list(order)
        extra = [x for x in present if x not in names]
        if extra:
            raise ConfigError(f"bucket labels {extra} are not in the given order {names}")
    qp = [s.pid for s in query_samples]
    per_mode = evaluate_features(
        query_feats, gallery_feats, qp, [s.pid for s in gallery_samples], [s.camid for s in query_samples],
        [s.camid for s in gallery_samples], [s.clothes_id for s in query_samples],
        [s.clothes_id for s in gallery_samples], max_rank=max_rank, device=device, modes=ms,
    )
    nq = len(keys)
    everyone = np.ones(nq, dtype=bool)
    out_b: dict[str, Any] = {}
    for name in names:
        mask = labels == name
        out_b[name] = {"num_queries": int(mask.sum()), "fraction": float(mask.sum() / nq) if nq else math.nan,
                       "results": {m: _aggregate(per_mode[m], mask) for m in ms}}
    return {"modes": list(ms), "order": names, "num_queries": nq, "num_gallery": len(gallery_samples),
            "buckets": out_b, "all": {m: _aggregate(per_mode[m], everyone) for m in ms}}


def protocol_bucket_metrics(
    features: Mapping[str, tuple[Any, Sequence[Sample]]],
    protocol: Protocol,
    buckets: Mapping[str, str],
    *,
    order: Sequence[str] | None = None,
    max_rank: int = 50,
    device: Any = None,
) -> dict[str, dict[str, Any]]:
    """:func:`bucket_metrics` for every evaluation of ``protocol`` ({evaluation name: result})."""
    missing = [s for s in protocol.split_names if s not in features]
    if missing:
        raise ConfigError(f"features are missing split(s) {missing} needed by the protocol")
    out: dict[str, dict[str, Any]] = {}
    for spec in protocol.specs:
        (qf, qs), (gf, gs) = features[spec.query], features[spec.gallery]
        r = bucket_metrics(qf, gf, qs, gs, buckets, modes=spec.mode, order=order, max_rank=max_rank, device=device)
        out[spec.name] = {**r, "query": spec.query, "gallery": spec.gallery, "mode": spec.mode}
    return out


#: Most buckets side by side in one panel of :func:`plot_buckets`; more wrap onto the next row.
MAX_BUCKET_COLUMNS = 8
#: What tables and pictures show for a bucket without a valid query (instead of nan).
EMPTY = "\u2013"


def bucket_panels(results: Mapping[str, Mapping[str, Any]], evaluations: Sequence[str] | None = None,
                  max_columns: int = MAX_BUCKET_COLUMNS) -> list[tuple[str, list[str]]]:
    """The panels of :func:`plot_buckets`, top to bottom: (evaluation, its buckets), at most ``max_columns`` buckets
    per panel (an evaluation with more buckets continues on the next row), so the figure fits a screen."""
    if max_columns < 1:
        raise ConfigError(f"max_columns must be >= 1, got {max_columns}")
    evs = list(evaluations or results)
    missing = [e for e in evs if e not in results]
    if missing:
        raise ConfigError(f"plot_buckets: evaluation(s) {missing} are not in the results {list(results)}")
    return [(ev, list(results[ev]["order"][i:i + max_columns]))
            for ev in evs for i in range(0, max(1, len(results[ev]["order"])), max_columns)]


def plot_buckets(results: Mapping[str, Mapping[str, Any]], out_png: str | os.PathLike, *,
                 evaluations: Sequence[str] | None = None, title: str = "",
                 max_columns: int = MAX_BUCKET_COLUMNS) -> Path:
    """Grouped bars of R1 and mAP (%) per bucket for each evaluation of :func:`protocol_bucket_metrics`; PNG.

    One panel per row (:func:`bucket_panels`: at most ``max_columns`` buckets each); a bucket without a valid
    query shows "\u2013" instead of bars."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - optional extra
        raise ConfigError("plotting needs matplotlib; install the 'viz' extra: pip install 'rlq[viz]'") from None
    panels = bucket_panels(results, evaluations, max_columns)
    if not panels:
        raise ConfigError("plot_buckets: no results to plot")
    widest = max(len(names) for _, names in panels)
    fig = Figure(figsize=(max(4.0, 1.1 * widest + 1.5), 0.4 + 2.9 * len(panels)), dpi=100)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    seen: set[str] = set()
    for ax, (ev, names) in zip(axes, panels):
        r = results[ev]
        mode = r["modes"][0]
        x = np.arange(len(names))
        r1 = [100 * r["buckets"][b]["results"][mode]["rank1"] for b in names]
        mp = [100 * r["buckets"][b]["results"][mode]["mAP"] for b in names]
        ax.bar(x - 0.2, r1, width=0.4, label="R1")
        ax.bar(x + 0.2, mp, width=0.4, label="mAP")
        for xi, v in zip(x, r1):
            if v != v:  # no valid query in this bucket
                ax.text(xi, 2, EMPTY, ha="center", va="bottom", fontsize=9)
        ax.set_xticks(x, [f"{b}\n(n={r['buckets'][b]['num_queries']})" for b in names], fontsize=7)
        ax.set_xlim(-0.6, max(len(names), widest) - 0.4)  # equal bar widths on every row
        ax.set_ylim(0, 100)
        ax.set_title(ev if ev not in seen else f"{ev} (continued)", fontsize=9)
        seen.add(ev)
        ax.set_ylabel("%", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    else:
        fig.tight_layout()
    return save_figure(fig, out_png)


def buckets_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table per evaluation: bucket, queries (valid), R1, R5, mAP in %."""
    lines: list[str] = []

    def cell(v: float) -> str:
        return EMPTY if v != v else pct(v)

    for ev, r in results.items():
        mode = r["modes"][0]
        lines += [f"**{ev}** (rule {mode}; each bucket's queries against the full gallery of {r['num_gallery']})", "",
                  "| bucket | queries (valid) | R1 | R5 | mAP |", "|---|---|---|---|---|"]
        rows = [(b, r["buckets"][b]["results"][mode]) for b in r["order"]] + [("all", r["all"][mode])]
        for b, m in rows:
            lines.append(f"| {b} | {m['num_queries']} ({m['num_valid_queries']}) | {cell(m['rank1'])} | "
                         f"{cell(m['rank5'])} | {cell(m['mAP'])} |")
        lines.append("")
    return "\n".join(lines)
