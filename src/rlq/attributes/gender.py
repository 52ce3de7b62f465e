"""Gender utilities: the gender-F1-on-mistakes analysis (paper Figure 8, right) and an HTML sheet for
annotating identities by hand in the authors' ``Category,ID,Gender`` format (docs/method.md §3.5)."""

from __future__ import annotations

import html
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlq.data.records import Sample, canonical_id
from rlq.errors import DatasetError
from rlq.io import atomic_write_bytes, atomic_write_csv, atomic_write_text, csv_cell

__all__ = ["top1_from_features", "gender_f1_on_mistakes", "gender_sheet", "TEMPLATE_NAME"]

logger = logging.getLogger(__name__)

#: File name of the CSV template :func:`gender_sheet` writes.
TEMPLATE_NAME = "gender_template.csv"
_MAX_ELEMENTS = 1 << 24  # similarity-block size bound (elements) for top1_from_features


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(x.dtype).tiny)


def top1_from_features(q: np.ndarray, g: np.ndarray, chunk_size: int | None = None) -> np.ndarray:
    """Index of each query's most cosine-similar gallery feature (ties to the lower index), in query chunks."""
    qa = np.asarray(q)
    ga = np.asarray(g)
    dtype = np.result_type(qa.dtype, ga.dtype, np.float32)
    qa, ga = qa.astype(dtype, copy=False), ga.astype(dtype, copy=False)
    if qa.ndim != 2 or ga.ndim != 2 or qa.shape[1] != ga.shape[1]:
        raise ValueError(f"features must be (n_q, d) and (n_g, d) with equal d, got {qa.shape} and {ga.shape}")
    if len(ga) == 0:
        raise ValueError("top1_from_features: the gallery is empty")
    if not (np.isfinite(qa).all() and np.isfinite(ga).all()):
        raise ValueError("top1_from_features: features contain NaN or infinite values")
    gn = _normalise(ga)
    step = chunk_size or max(1, _MAX_ELEMENTS // len(ga))
    out = np.empty(len(qa), dtype=np.int64)
    for i in range(0, len(qa), step):
        sim = _normalise(qa[i:i + step]) @ gn.T
        out[i:i + step] = np.argmax(sim, axis=1)  # first maximum = lower index on ties
    return out


def _gender(gender_of_pid: Mapping[Any, int], pid: Any) -> int | None:
    g = gender_of_pid.get(pid)
    return int(g) if g in (0, 1) else None


def gender_f1_on_mistakes(
    top1_gallery_index: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    gender_of_pid: Mapping[int, int],
    positive: int = 0,
) -> dict[str, Any]:
    """F1 of one gender class over top-1 mistakes (paper Fig. 8 right; 0 = female by default).

    A mistake is a query whose top-1 gallery identity differs from its own. Truth = the query identity's
    gender, prediction = the top-1 identity's gender; mistakes with an identity missing from
    ``gender_of_pid`` (or not 0/1) are skipped and counted. Metrics with a zero denominator are 0.
    """
    if positive not in (0, 1):
        raise ValueError(f"positive must be 0 (female) or 1 (male), got {positive!r}")
    top1 = np.asarray(top1_gallery_index, dtype=np.int64).reshape(-1)
    qp = np.asarray(q_pids).reshape(-1)
    gp = np.asarray(g_pids).reshape(-1)
    if len(top1) != len(qp):
        raise ValueError(f"{len(top1)} top-1 indices for {len(qp)} queries")
    if len(top1) and (top1.min() < 0 or top1.max() >= len(gp)):
        raise ValueError(f"top-1 indices must lie in 0..{len(gp) - 1}")
    pred_pid = gp[top1]
    wrong = np.flatnonzero(pred_pid != qp)
    tp = fp = fn = tn = skipped = 0
    for i in wrong:
        t = _gender(gender_of_pid, qp[i].item())
        p = _gender(gender_of_pid, pred_pid[i].item())
        if t is None or p is None:
            skipped += 1
            continue
        if p == positive:
            tp += t == positive
            fp += t != positive
        else:
            fn += t == positive
            tn += t != positive
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    n_eval = tp + fp + fn + tn
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "accuracy": (tp + tn) / n_eval if n_eval else 0.0,
        "positive": positive,
        "num_queries": int(len(qp)),
        "num_mistakes": int(len(wrong)),
        "num_evaluated": n_eval,
        "num_skipped_unknown": skipped,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


# --------------------------------------------------------------------------------------------------
# Annotation sheet
# --------------------------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}
td{border-bottom:1px solid #ccc;padding:4px;vertical-align:middle}img{margin:1px}
.id{font-weight:bold;min-width:8em}textarea{width:40em;height:12em}"""

_JS = """function rows(){var out=[];document.querySelectorAll('tr[data-id]').forEach(function(tr){
var c=tr.querySelector('input:checked');if(c){out.push(tr.dataset.category+','+tr.dataset.id+','+c.value);}});
document.getElementById('csv').value=out.join('\\n');}"""


def _pid_name(s: Sample) -> str:
    return str(s.meta.get("raw_pid", s.pid))


def _thumb_bytes(path: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many types for unreadable files
        raise DatasetError(
            f"gender sheet: cannot read image {path} ({type(e).__name__}: {e}); check the file"
        ) from None
    img.thumbnail(size)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _pick(items: Sequence[Sample], n: int) -> list[Sample]:
    """Up to n items spread evenly over the identity's (sorted) images: different cameras and outfits."""
    items = sorted(items, key=lambda s: s.path)
    if len(items) <= n:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def gender_sheet(
    dataset_samples: Sequence[Sample],
    out_dir: str | os.PathLike,
    per_id: int = 6,
    ids_per_page: int = 20,
    existing: Mapping[Any, int] | None = None,
    category: str = "train",
    thumb: tuple[int, int] = (64, 128),
) -> Path:
    """Write HTML pages (``index.html``, ``page_001.html``, ...) with thumbnails per identity and the CSV
    template ``gender_template.csv`` (``Category,ID,Gender``, Gender empty or prefilled from ``existing``).

    Identities are keyed by ``meta["raw_pid"]`` (else ``pid``), in first-appearance order. Returns the
    path of ``index.html``. Fill the Gender column (1 male, 0 female, docs/method.md §3.5) and read it back
    with ``rlq.data.sidecars.read_gender_csv``.
    """
    if per_id < 1 or ids_per_page < 1:
        raise ValueError(f"per_id and ids_per_page must be >= 1, got {per_id} and {ids_per_page}")
    if not dataset_samples:
        raise ValueError("gender_sheet: no samples given")
    out = Path(out_dir)
    groups: dict[str, list[Sample]] = {}
    for s in dataset_samples:
        groups.setdefault(_pid_name(s), []).append(s)
    known: dict[Any, int] = {}
    for k, v in (existing or {}).items():
        known[canonical_id(k) if isinstance(k, str) else k] = int(v)

    def prefill(name: str) -> str:
        g = known.get(canonical_id(name))
        return "" if g is None else str(g)

    names = list(groups)
    pages = [names[i:i + ids_per_page] for i in range(0, len(names), ids_per_page)]
    esc = html.escape
    page_files: list[str] = []
    counter = 0
    for pno, page in enumerate(pages, start=1):
        page_name = f"page_{pno:03d}.html"
        page_files.append(page_name)
        rows = []
        for name in page:
            cells = []
            for s in _pick(groups[name], per_id):
                counter += 1
                # Thumbnail names are ours (a counter), never the raw id or file name.
                rel = f"thumbs/{counter:06d}.jpg"
                atomic_write_bytes(out / rel, _thumb_bytes(s.path, thumb), fsync=False)
                label = esc(os.path.basename(s.path))
                cells.append(f'<img src="{rel}" width="{thumb[0]}" title="{label}" alt="{label}">')
            g = prefill(name)
            radio_group = f"row{len(rows)}"  # one group per row; our own name, not the raw id
            radios = "".join(
                f'<label><input type="radio" name="{radio_group}" value="{v}"'
                f'{" checked" if g == str(v) else ""}>{txt}</label> '
                for v, txt in ((1, "male"), (0, "female"))
            )
            rows.append(
                # the rows the page's button builds for the CSV: the same cells as the template
                f'<tr data-id="{esc(csv_cell(name))}" data-category="{esc(csv_cell(category))}">'
                f'<td class="id">{esc(name)}<br><small>{len(groups[name])} images</small></td>'
                f'<td>{"".join(cells)}</td><td>{radios}</td></tr>'
            )
        nav = " ".join(f'<a href="{p}">{i}</a>' for i, p in enumerate(
            [f"page_{j:03d}.html" for j in range(1, len(pages) + 1)], start=1))
        doc = (
            '<!DOCTYPE html><html><head><meta charset="utf-8">'
            f"<title>Gender annotation, page {pno} of {len(pages)}</title><style>{_CSS}</style>"
            f"<script>{_JS}</script></head><body>"
            f"<h1>Gender annotation, page {pno} of {len(pages)}</h1>"
            f"<p>Pages: {nav}. Choose 1 = male or 0 = female per identity (doubtful identities: 0, docs/method.md "
            f"&sect;3.5), press the button and copy the rows into {esc(TEMPLATE_NAME)}.</p>"
            f'<table>{"".join(rows)}</table>'
            '<p><button onclick="rows()">Show CSV rows</button></p><textarea id="csv" readonly></textarea>'
            "</body></html>\n"
        )
        atomic_write_text(out / page_name, doc)
    index = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Gender annotation</title></head><body>'
        f"<h1>Gender annotation</h1><p>{len(names)} identities, {len(pages)} pages. Fill the Gender column "
        f"of {esc(TEMPLATE_NAME)} (Category,ID,Gender; 1 = male, 0 = female).</p><ul>"
        + "".join(f'<li><a href="{p}">{esc(p)}</a></li>' for p in page_files)
        + "</ul></body></html>\n"
    )
    # ids like =HYPERLINK(...) are written as text ('=...), read back exactly by read_gender_csv
    atomic_write_csv(out / TEMPLATE_NAME, ["Category", "ID", "Gender"], ([category, n, prefill(n)] for n in names))
    index_path = out / "index.html"
    atomic_write_text(index_path, index)
    logger.info("wrote gender sheet for %d identities in %s", len(names), out)
    return index_path
