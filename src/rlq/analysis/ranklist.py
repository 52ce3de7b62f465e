"""Ranked results (paper Fig. 9) as a PNG grid and a static HTML page, and the top-1-mistake gender analysis
(paper Fig. 8 right).

Each row of the rank list is a query followed by its top-k gallery images, bordered green (correct match under
the evaluation rule), red (another identity) or grey (junk: the query's identity under the same camera /
clothes, deleted by the evaluation, docs/datasets.md §2). Junk is removed from the list unless ``show_junk``; the
picture says which, and in which order the queries were chosen.
"""

from __future__ import annotations

import html
import io
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
import torch.nn.functional as F

from rlq.attributes.gender import gender_f1_on_mistakes, top1_from_features
from rlq.data.records import MODES, Sample, canonical_id
from rlq.data.sidecars import read_gender_csv
from rlq.errors import ConfigError
from rlq.evaluation.ranking import evaluate, evaluate_features
from rlq.io import atomic_write_bytes, atomic_write_text, save_figure
from rlq.report_format import pct

__all__ = [
    "STATUS_COLORS",
    "QUERY_ORDERS",
    "rank_list_figure",
    "match_status",
    "gender_awareness",
    "top1_after_junk",
    "load_test_gender",
    "gender_markdown",
    "plot_gender",
]

logger = logging.getLogger(__name__)

#: Border colours (RGB) of the rank-list cells.
STATUS_COLORS: dict[str, tuple[int, int, int]] = {
    "correct": (0, 170, 0),
    "wrong": (220, 0, 0),
    "junk": (150, 150, 150),
    "query": (40, 90, 220),
}
_CSS_COLORS = {k: "#{:02x}{:02x}{:02x}".format(*v) for k, v in STATUS_COLORS.items()}
QUERY_ORDERS = ("worst", "random", "hits", "given")
_PAD, _BORDER, _LINE, _CAPTION_LINES, _GAP = 6, 4, 12, 3, 14


def match_status(q: Sample, g: Sample, mode: str) -> str:
    """``correct`` / ``junk`` / ``wrong`` of gallery item ``g`` for query ``q`` under rule ``mode`` (docs/datasets.md §2)."""
    if g.pid != q.pid:
        return "wrong"
    if g.camid == q.camid:
        return "junk"
    if mode == "cc" and g.clothes_id == q.clothes_id:
        return "junk"
    if mode == "sc" and g.clothes_id != q.clothes_id:
        return "junk"
    return "correct"


def _distance_rows(rows: Sequence[int], distances: Any, qf: Any, gf: Any) -> np.ndarray:
    if distances is not None:
        d = distances[list(rows)]
        return (d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else np.asarray(d)).astype(np.float64)
    q = torch.as_tensor(np.asarray(qf)[list(rows)], dtype=torch.float32)
    g = torch.as_tensor(np.asarray(gf), dtype=torch.float32)
    return (-(F.normalize(q, dim=1) @ F.normalize(g, dim=1).T)).double().numpy()  # as evaluate_features


def _choose(order: str, per_query: Mapping[str, Any], query_indices: Sequence[int] | None, num: int, seed: int,
            label: str) -> tuple[list[int], str]:
    nq = len(per_query["valid"])
    if order == "given":
        if query_indices is None:
            raise ConfigError("order='given' needs query_indices")
        idx = [int(i) for i in query_indices]
        bad = [i for i in idx if not 0 <= i < nq]
        if bad:
            raise ConfigError(f"query indices {bad[:5]} out of range 0..{nq - 1}")
        return idx, f"queries: {len(idx)} given, in the given order"
    valid = np.flatnonzero(np.asarray(per_query["valid"]))
    if order == "worst":
        ap = np.asarray(per_query["ap"])[valid]
        pick = valid[np.lexsort((valid, ap))][:num]  # lowest AP first, ties by query index
        return pick.tolist(), f"queries: {len(pick)} worst AP under {label}, worst first"
    if order == "random":
        k = min(num, len(valid))
        pick = np.random.default_rng(seed).choice(valid, size=k, replace=False) if k else valid[:0]
        return pick.tolist(), f"queries: {k} random valid queries under {label} (seed {seed})"
    if order == "hits":  # what a correct rank-1 looks like: a seeded random draw among those queries, labelled so
        hit = valid[np.asarray(per_query["first_rank"])[valid] == 1]
        k = min(num, len(hit))
        pick = np.sort(np.random.default_rng(seed).choice(hit, size=k, replace=False)) if k else hit[:0]
        return pick.tolist(), (f"queries: {k} drawn at random (seed {seed}) from the {len(hit)} of {len(valid)} valid "
                               f"queries whose rank-1 is correct under {label}; not a representative sample")
    raise ConfigError(f"query order {order!r} is not one of {QUERY_ORDERS}")


def _thumb(path: str, size: tuple[int, int], cache: dict[str, Any]):
    from PIL import Image

    from rlq.data.images import read_image

    if path not in cache:
        cache[path] = read_image(path).resize(size, Image.Resampling.BILINEAR)
    return cache[path]


def _caption(s: Sample, first: str, third: str) -> list[str]:
    return [first, f"c{s.camid} o{s.clothes_id}", third]


def rank_list_figure(
    query_samples: Sequence[Sample],
    gallery_samples: Sequence[Sample],
    *,
    distances: Any = None,
    query_feats: Any = None,
    gallery_feats: Any = None,
    mode: str = "cc",
    order: str = "worst",
    query_indices: Sequence[int] | None = None,
    num_queries: int = 8,
    top_k: int = 10,
    show_junk: bool = False,
    seed: int = 0,
    out_png: str | os.PathLike,
    out_html: str | os.PathLike | None = None,
    thumb_size: tuple[int, int] = (64, 128),
    label: str | None = None,
) -> dict[str, Any]:
    """Draw query rows with their top-k gallery matches to ``out_png`` (and ``out_html``); returns what was drawn.

    Give ``distances`` (queries x gallery, smaller = closer) or ``query_feats`` + ``gallery_feats`` (cosine).
    ``order``: ``worst`` (lowest AP first among valid queries), ``random`` (valid queries, seeded), ``hits`` (a seeded
    draw among the valid queries whose rank-1 is correct, in query order; labelled as not representative) or ``given``
    (``query_indices``, implied when they are passed). Gallery ties go to the lower index. The result lists, per
    row, the query and each shown cell's gallery index, rank, status and pixel box (x0, y0, x1, y1) in the PNG.
    """
    from PIL import Image, ImageDraw, ImageFont

    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {MODES}")
    if (distances is None) == (query_feats is None or gallery_feats is None):
        raise ConfigError("pass either distances or both query_feats and gallery_feats")
    if top_k < 1 or num_queries < 1:
        raise ConfigError(f"top_k and num_queries must be >= 1, got {top_k} and {num_queries}")
    if query_indices is not None:
        order = "given"
    label = label or mode
    qs, gs = list(query_samples), list(gallery_samples)
    labels = ([s.pid for s in qs], [s.pid for s in gs], [s.camid for s in qs], [s.camid for s in gs],
              [s.clothes_id for s in qs], [s.clothes_id for s in gs])
    if distances is not None:
        per_query = evaluate(distances, *labels, mode=mode)
    else:
        per_query = evaluate_features(query_feats, gallery_feats, *labels, mode=mode)
    chosen, order_text = _choose(order, per_query, query_indices, num_queries, seed, label)
    junk_text = ("grey = junk (same identity, same camera or clothes rule), shown" if show_junk
                 else "junk (same identity, same camera or clothes rule) removed, as in the evaluation")
    legend = f"border: blue = the query (first column), green = correct match, red = wrong identity; {junk_text}"
    key_text = ("captions: #rank, id = identity, c = camera, o = clothes id, d = distance (-cosine); "
                "query: its AP (%) under the rule")
    rows: list[dict[str, Any]] = []
    d_rows = _distance_rows(chosen, distances, query_feats, gallery_feats) if chosen else np.zeros((0, len(gs)))
    for r, qi in enumerate(chosen):
        d = d_rows[r]
        ranked = np.argsort(d, kind="stable")  # ties: ascending gallery index
        cells, rank = [], 0
        for gi in ranked:
            st = match_status(qs[qi], gs[int(gi)], mode)
            if st == "junk" and not show_junk:
                continue
            rank += 1
            cells.append({"gallery_index": int(gi), "rank": rank, "status": st, "distance": float(d[gi]),
                          "key": gs[int(gi)].key, "pid": int(gs[int(gi)].pid)})
            if len(cells) == top_k:
                break
        ap = float(per_query["ap"][qi])
        rows.append({"query_index": int(qi), "query_key": qs[qi].key, "pid": int(qs[qi].pid),
                     "ap": None if ap != ap else ap, "first_rank": int(per_query["first_rank"][qi]), "cells": cells})

    # ---- PNG
    tw, th = int(thumb_size[0]), int(thumb_size[1])
    cw, ch = tw + 2 * _BORDER, th + 2 * _BORDER
    font = ImageFont.load_default()
    title = f"Ranked results ({label}, rule {mode}, top {top_k})"
    header = [title, order_text, legend, key_text]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    grid_w = _PAD + cw + _GAP + top_k * (cw + _PAD)
    width = max(grid_w, _PAD + int(max(probe.textlength(t, font=font) for t in header)) + _PAD)
    head_h = _PAD + len(header) * (_LINE + 2) + _PAD
    row_h = ch + _CAPTION_LINES * _LINE + _PAD
    height = head_h + max(1, len(rows)) * row_h
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, t in enumerate(header):
        draw.text((_PAD, _PAD + i * (_LINE + 2)), t, fill="black", font=font)
    if not rows:
        draw.text((_PAD, head_h), "no query to show (no valid query under this rule)", fill="black", font=font)
    cache: dict[str, Any] = {}

    def cell(x: int, y: int, s: Sample, status: str, caption: list[str]) -> list[int]:
        draw.rectangle((x, y, x + cw - 1, y + ch - 1), fill=STATUS_COLORS[status])
        sheet.paste(_thumb(s.path, (tw, th), cache), (x + _BORDER, y + _BORDER))
        for j, t in enumerate(caption):
            draw.text((x, y + ch + 1 + j * _LINE), t, fill="black", font=font)
        return [x, y, x + cw, y + ch]

    for r, row in enumerate(rows):
        y = head_h + r * row_h
        q = qs[row["query_index"]]
        ap_txt = row["ap_text"] = "AP n/a" if row["ap"] is None else f"AP {100 * row['ap']:.1f}%"
        row["query_box"] = cell(_PAD, y, q, "query", _caption(q, f"query id{q.pid}", ap_txt))
        for k, c in enumerate(row["cells"]):
            g = gs[c["gallery_index"]]
            x = _PAD + cw + _GAP + k * (cw + _PAD)
            c["box"] = cell(x, y, g, c["status"], _caption(g, f"#{c['rank']} id{g.pid}", f"d {c['distance']:.3f}"))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    png = Path(out_png)
    atomic_write_bytes(png, buf.getvalue())
    result: dict[str, Any] = {"png": str(png), "html": None, "mode": mode, "label": label, "order": order,
                              "order_text": order_text, "legend": legend, "show_junk": bool(show_junk),
                              "top_k": int(top_k), "rows": rows, "size": [width, height]}
    if out_html is not None:
        result["html"] = str(_write_html(Path(out_html), rows, qs, gs, header, cache, (tw, th)))
    return result


def _write_html(out: Path, rows: list[dict[str, Any]], qs: Sequence[Sample], gs: Sequence[Sample],
                header: list[str], cache: dict[str, Any], size: tuple[int, int]) -> Path:
    esc = html.escape
    folder = f"{out.stem}_files"
    tw, th = size

    def thumb(s: Sample, name: str) -> str:
        buf = io.BytesIO()
        _thumb(s.path, size, cache).save(buf, format="JPEG", quality=90)
        atomic_write_bytes(out.parent / folder / name, buf.getvalue(), fsync=False)
        return esc(quote(f"{folder}/{name}"), quote=True)

    def td(s: Sample, status: str, name: str, first: str, extra: str) -> str:
        base = esc(os.path.basename(s.path), quote=True)
        return (f'<td style="border:{_BORDER}px solid {_CSS_COLORS[status]}"><img src="{thumb(s, name)}" width="{tw}" '
                f'height="{th}" alt="{base}" title="{base}"><br><small>{esc(first)}<br>id {esc(str(s.pid))} cam '
                f'{esc(str(s.camid))} clothes {esc(str(s.clothes_id))}<br>{esc(extra)}<br>{esc(s.key)}<br>{base}'
                "</small></td>")

    body = []
    for r, row in enumerate(rows):
        q = qs[row["query_index"]]
        ap = "AP n/a" if row["ap"] is None else f"AP {100 * row['ap']:.1f}%"
        cells = [td(q, "query", f"q{r:03d}.jpg", "query", ap)]
        for k, c in enumerate(row["cells"]):
            cells.append(td(gs[c["gallery_index"]], c["status"], f"q{r:03d}_{k:02d}.jpg", f"rank {c['rank']} ({c['status']})",
                            f"distance {c['distance']:.4f}"))
        body.append("<tr>" + "".join(cells) + "</tr>")
    doc = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{esc(header[0])}</title><style>body{{font-family:sans-serif}}td{{vertical-align:top;padding:2px;"
        "text-align:center}small{font-size:10px;word-break:break-all}table{border-spacing:6px}</style></head><body>"
        f"<h1>{esc(header[0])}</h1><p>{esc(header[1])}</p><p>{esc(header[2])}; query = blue border.</p><p>{esc(header[3])}</p>"
        f"<table>{''.join(body)}</table></body></html>\n"
    )
    atomic_write_text(out, doc, fsync=False)
    return out


# --------------------------------------------------------------------------------------------------
# Gender awareness (paper Fig. 8 right)
# --------------------------------------------------------------------------------------------------


def load_test_gender(path: str | os.PathLike, samples: Sequence[Sample],
                     categories: Collection[str] | None = None) -> tuple[dict[int, int], dict[str, Any]]:
    """Gender per test pid from an authors'-format CSV (``Category`` query/test or test; ids matched by value).

    Each sample's identity is ``meta["raw_pid"]`` (else its pid), compared as :func:`canonical_id` ("004" == 4).
    Returns ``({pid: 0 | 1}, {"num_ids", "num_with_gender", "missing": [raw ids]})``.
    """
    table = read_gender_csv(path, categories)
    out: dict[int, int] = {}
    missing: list[str] = []
    seen: set[int] = set()
    for s in samples:
        if s.pid in seen:
            continue
        seen.add(s.pid)
        raw = str(s.meta.get("raw_pid", s.pid))
        g = table.get(canonical_id(raw))
        if g is None:
            missing.append(raw)
        else:
            out[int(s.pid)] = int(g)
    if missing:
        logger.warning("gender CSV %s lacks %d of %d test identities (e.g. %s); their mistakes are skipped",
                       path, len(missing), len(seen), missing[:5])
    return out, {"num_ids": len(seen), "num_with_gender": len(out), "missing": missing}


def top1_after_junk(
    query_feats: Any, gallery_feats: Any, q_pids: Sequence[int], g_pids: Sequence[int], q_camids: Sequence[int],
    g_camids: Sequence[int], q_clothes_ids: Sequence[int] | None = None, g_clothes_ids: Sequence[int] | None = None,
    mode: str = "general", chunk_size: int = 1024,
) -> np.ndarray:
    """Each query's most cosine-similar gallery index once its junk (docs/datasets.md §2, rule ``mode``) is deleted; -1 if none."""
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {MODES}")
    if mode != "general" and (q_clothes_ids is None or g_clothes_ids is None):
        raise ConfigError(f"rule {mode!r} needs query and gallery clothes ids")
    q = F.normalize(torch.as_tensor(np.asarray(query_feats), dtype=torch.float32), dim=1)
    g = F.normalize(torch.as_tensor(np.asarray(gallery_feats), dtype=torch.float32), dim=1)
    qp, gp = torch.as_tensor(np.asarray(q_pids)), torch.as_tensor(np.asarray(g_pids))
    qc, gc = torch.as_tensor(np.asarray(q_camids)), torch.as_tensor(np.asarray(g_camids))
    if mode != "general":
        qcl, gcl = torch.as_tensor(np.asarray(q_clothes_ids)), torch.as_tensor(np.asarray(g_clothes_ids))
    out = np.empty(q.shape[0], dtype=np.int64)
    for a in range(0, q.shape[0], chunk_size):
        b = min(q.shape[0], a + chunk_size)
        sim = q[a:b] @ g.T
        same = qp[a:b, None] == gp[None]
        bad = qc[a:b, None] == gc[None]
        if mode == "cc":
            bad = bad | (qcl[a:b, None] == gcl[None])
        elif mode == "sc":
            bad = bad | (qcl[a:b, None] != gcl[None])
        sim = sim.masked_fill(same & bad, -float("inf"))
        best = torch.argmax(sim, dim=1)  # first maximum: ties to the lower gallery index
        none = torch.isinf(sim.gather(1, best[:, None])[:, 0])
        out[a:b] = torch.where(none, -1, best).numpy()
    return out


def gender_awareness(
    query_feats: Any,
    gallery_feats: Any,
    q_pids: Sequence[int],
    g_pids: Sequence[int],
    gender_of_pid: Mapping[int, int],
    *,
    positive: int = 0,
    q_camids: Sequence[int] | None = None,
    g_camids: Sequence[int] | None = None,
    q_clothes_ids: Sequence[int] | None = None,
    g_clothes_ids: Sequence[int] | None = None,
    mode: str = "general",
) -> dict[str, Any]:
    """F1 of the female class (``positive=0``) over top-1 mistakes: truth = query gender, prediction = top-1's gender.

    Without camera ids the top-1 is the most cosine-similar image of the whole gallery; with ``q_camids`` /
    ``g_camids`` (and clothes ids for ``mode`` cc / sc) the query's junk is deleted first, as in the evaluation,
    so the top-1 is the first item of the cleaned ranking. Scoring: :func:`rlq.attributes.gender.gender_f1_on_mistakes`.
    """
    qp, gp = np.asarray(q_pids), np.asarray(g_pids)
    if (q_camids is None) != (g_camids is None):
        raise ConfigError("pass both q_camids and g_camids, or neither")
    if q_camids is None:
        top1 = top1_from_features(np.asarray(query_feats), np.asarray(gallery_feats))
        junk, rule = "not removed (top-1 over the whole gallery)", None
    else:
        top1 = top1_after_junk(query_feats, gallery_feats, qp, gp, q_camids, g_camids, q_clothes_ids, g_clothes_ids, mode)
        junk, rule = f"removed under rule {mode!r} before taking the top-1", mode
    keep = top1 >= 0  # a query whose whole gallery is junk has no top-1
    res = gender_f1_on_mistakes(top1[keep], qp[keep], gp, gender_of_pid, positive=positive)
    res["num_queries_without_top1"] = int((~keep).sum())
    res["top1_accuracy"] = float(np.mean(gp[top1[keep]] == qp[keep])) if keep.any() else float("nan")
    res["positive_class"] = "female" if positive == 0 else "male"
    res["junk"] = junk
    res["junk_rule"] = rule
    return res


def _pct(x: float) -> str:
    return "\u2013" if x != x else pct(x)  # undefined (e.g. no mistake to score): a dash, not nan


def gender_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table of :func:`gender_awareness` results per evaluation."""
    lines = ["Among top-1 mistakes (top-1 identity != query identity): truth = the query's gender, prediction = the "
             "top-1 identity's gender; F1 of the female class (paper Fig. 8 right). 'junk removed' names the rule "
             "whose junk was deleted before taking the top-1.", "",
             "| evaluation | junk removed | queries | mistakes (scored) | F1 | precision | recall | accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rule = r.get("junk_rule") or "no"
        cells = [_pct(r[k]) for k in ("f1", "precision", "recall", "accuracy")]
        lines.append(f"| {name} | {rule} | {r['num_queries']} | {r['num_mistakes']} ({r['num_evaluated']}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_gender(results: Mapping[str, Mapping[str, Any]], out_png: str | os.PathLike) -> Path:
    """Bars of F1 / precision / recall (%) of the female class over top-1 mistakes, per evaluation; PNG."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - optional extra
        raise ConfigError("plotting needs matplotlib; install the 'viz' extra: pip install 'rlq[viz]'") from None
    if not results:
        raise ConfigError("plot_gender: no results to plot")
    names = list(results)
    x = np.arange(len(names))
    fig = Figure(figsize=(max(4.0, 1.6 * len(names) + 1.5), 3.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for j, key in enumerate(("f1", "precision", "recall")):
        ax.bar(x + (j - 1) * 0.25, [100 * results[n][key] for n in names], width=0.25, label=key)
    ax.set_xticks(x, [f"{n}\n({results[n]['num_evaluated']} mistakes)" for n in names], fontsize=8)
    ax.set_ylabel("% (female class)", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_title("Gender of top-1 mistakes (paper Fig. 8 right)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_png)
