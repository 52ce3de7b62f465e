"""Deployment commands: `rlq search` (query a gallery, HTML page) and `rlq export` (ONNX + parity check + card)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import RlqError
from ._common import (
    app,
    batch_size_option,
    bootstrap_seed_option,
    console,
    device_option,
    far_option,
    flip_option,
    human,
    json_option,
    mode_option,
    prefer_option,
    rerank_k1_option,
    rerank_k2_option,
    rerank_lambda_option,
    rerank_option,
    rerank_settings,
    resamples_option,
    sample_seed_option,
    top_k_option,
    unknown_fraction_option,
    workers_option,
    write_json,
)


def _load_gallery(gallery: Path, backend: str | None, split: str | None):
    from ..deploy.search import INDEX_FILE, GalleryIndex

    if gallery.is_dir():
        if not (gallery / INDEX_FILE).is_file():
            raise RlqError(f"{gallery} is a folder but not a gallery index (no {INDEX_FILE}); pass a features file "
                           "from `rlq extract` or a folder written by `rlq search --save-index`")
        return GalleryIndex.load(gallery, backend=backend)
    if not gallery.is_file():
        raise RlqError(f"gallery {gallery} does not exist; make one with `rlq extract CHECKPOINT --images DIR --out F.npz`")
    return GalleryIndex.from_features_file(gallery, split=split, backend=backend or "exact")


def _on_off(flip: bool | None) -> str:
    return "not recorded" if flip is None else ("on" if flip else "off")


@app.command("search")
def search_cmd(
    gallery: Path = typer.Option(..., "--gallery", "-g", help="Gallery: a features file (.npz from `rlq extract`) or an index folder (--save-index)."),
    query: Path = typer.Option(..., "--query", "-q", help="A query image, or a folder of query images (searched recursively)."),
    out_html: Path = typer.Option(..., "--out", "-o", help="HTML page to write; thumbnails go to <name>_files/ next to it."),
    top_k: int = top_k_option(),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Checkpoint for the queries (default: the one recorded with the gallery)."),
    backend: str | None = typer.Option(None, "--backend", help="exact (torch) or faiss (needs faiss-cpu, the faiss extra); default: exact, or the saved index's."),
    split: str | None = typer.Option(None, "--split", help="Split of a multi-split features file (default: its only split, or 'gallery')."),
    save_index: Path | None = typer.Option(None, "--save-index", help="Also save the gallery index to this folder for reuse."),
    json_out: Path | None = json_option(),
    force: bool = typer.Option(False, "--force", help="Search even if the gallery was extracted with another checkpoint."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = batch_size_option(),
    rerank: bool = rerank_option(),
    rerank_k1: int = rerank_k1_option(),
    rerank_k2: int = rerank_k2_option(),
    rerank_lambda: float = rerank_lambda_option(),
    flip: bool | None = flip_option(),
    threshold: str | None = typer.Option(
        None, "--threshold", help="Open-set search: 'calibrated' (the thresholds of `rlq calibrate` beside the "
        "checkpoint; 'calibrated:FAR' picks a target FAR, default its first) or a distance (1 - cosine; the "
        "re-ranked distance with --rerank). Each result is marked a match when its distance is below it; a query "
        "without a match reads 'not in the gallery'. A calibration made with other flip, precision or re-ranking "
        "is refused."),
) -> None:
    """Find the gallery images most similar to each query image (cosine similarity of §2.5 features, or
    k-reciprocal re-ranked distance with --rerank). The queries are embedded as the run was evaluated (its
    eval.flip and precision) unless --flip/--no-flip says otherwise; a gallery extracted with another flip is
    refused (unless --force). The JSON and HTML record both.

    Person re-identification: use it only where the people pictured consented and a legal basis exists
    (see docs/responsible-use.md).
    """
    from rich.table import Table
    from rich.text import Text

    from ..deploy import FeatureExtractor
    from ..deploy.search import BACKENDS, checkpoint_mismatch, image_files, write_search_html

    if backend is not None and backend not in BACKENDS:
        raise typer.BadParameter(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
    index = _load_gallery(gallery, backend, split)
    recorded = index.meta.get("checkpoint")
    if checkpoint is None:
        if not recorded:
            raise RlqError(f"gallery {gallery} does not record its checkpoint; pass --checkpoint CKPT (the one that extracted it)")
        if not Path(recorded).exists():
            raise RlqError(f"gallery {gallery} was extracted with {recorded}, which no longer exists; pass --checkpoint CKPT "
                           "(with --force if it is not the same weights)")
        ck: str = str(recorded)
    else:
        ck = str(checkpoint)
    # by content: the same path retrained (other weights) is refused too
    reason = checkpoint_mismatch(index.meta if index.meta.get("weights_sha256") else recorded, ck)
    if reason is not None:
        if not force:
            raise RlqError(f"{reason}. Features of different checkpoints are not comparable: re-extract the gallery "
                           f"(`rlq extract {ck} --images DIR --out F.npz`) or pass --force")
        console.print(f"warning: {reason}; searching anyway (--force)", highlight=False, markup=False)

    if query.is_dir():
        qpaths = image_files(query)
        qkeys = [str(Path(p).relative_to(query)) for p in qpaths]
    elif query.is_file():
        qpaths, qkeys = [str(query)], [query.name]
    else:
        raise RlqError(f"query {query} does not exist")
    if not qpaths:
        raise RlqError(f"no images under {query} (looked for .jpg, .jpeg, .png, .bmp, .webp)")

    fe = FeatureExtractor(ck, device=None if device == "auto" else device, batch_size=batch_size, flip=flip)
    size = index.meta.get("input_size")
    pre = index.meta.get("preprocessing") or {}
    msgs = []
    if size is not None and list(size) != list(fe.input_size):
        msgs.append(f"the gallery was extracted at input size {list(size)}, the checkpoint uses {list(fe.input_size)}")
    if pre.get("flip") is not None and bool(pre["flip"]) != fe.flip:
        how = "--flip/--no-flip" if flip is not None else "the run's eval.flip"
        msgs.append(f"gallery {gallery} was extracted with flip={pre['flip']}, the queries use flip={fe.flip} ({how}); "
                    f"pass {'--flip' if pre['flip'] else '--no-flip'} to match it")
    for msg in msgs:
        if not force:
            raise RlqError(msg + "; re-extract the gallery or pass --force")
        console.print(f"warning: {msg} (--force)", highlight=False, markup=False)
    from ..deploy.searcher import NOT_IN_GALLERY, mark_matches, resolve_threshold

    rr = rerank_settings(rerank, rerank_k1, rerank_k2, rerank_lambda)
    thr, cal = resolve_threshold(threshold, checkpoint=ck, flip=fe.flip, precision=fe.precision, rerank=rr)
    qfeats = fe(qpaths)
    scores, idx = index.search(qfeats.numpy(), top_k, rerank=rr)
    dist, match = mark_matches(scores, rr, thr)

    gal_flip, gal_prec = pre.get("flip"), index.meta.get("precision")
    info = {"gallery": f"{gallery} ({len(index)} images)", "checkpoint": ck, "backend": index.backend, "top-k": top_k,
            "ranking": "cosine similarity (higher = closer)" if rr is None else rr.label() + ", distance (lower = closer)",
            "query features": f"flip {'on' if fe.flip else 'off'}, {fe.precision}",
            "gallery features": f"flip {_on_off(gal_flip)}, {gal_prec or 'precision not recorded'}"}
    if thr is not None:
        info["threshold"] = (f"distance < {thr:.6g}" + ("" if cal is None else
                             f" (calibrated at FAR {cal['far_target']:g}, {cal['path']})"))
    thumbs = write_search_html(out_html, qkeys, qpaths, scores, idx, index, info=info, is_match=match)
    title = f"top-{min(top_k, len(index))} of {len(index)} gallery images"
    table = Table(title=title if rr is None else f"{title}, {rr.label()}")
    for col in ("query", "rank", "score" if rr is None else "re-ranked distance", "gallery key",
                *(("match",) if thr is not None else ())):
        table.add_column(col)
    results = []
    for qi, (qk, qp) in enumerate(zip(qkeys, qpaths)):
        hits = []
        for r, (s, gi) in enumerate(zip(scores[qi], idx[qi])):
            gi = int(gi)
            if gi < 0:
                continue
            key = str(index.keys[gi])
            ok = None if match is None else bool(match[qi, r])
            table.add_row(Text(qk if r == 0 else ""), str(r + 1), f"{float(s):.4f}", Text(key),
                          *(() if ok is None else ("yes" if ok else "no",)))
            hits.append({"rank": r + 1, "index": gi, "key": key, "score": float(s), "distance": float(dist[qi, r]),
                         "is_match": ok, "path": None if index.paths is None else str(index.paths[gi])})
        q_match = None if match is None else bool(hits and hits[0]["is_match"])
        if q_match is False:
            table.add_row(Text(qk), "", "", Text(NOT_IN_GALLERY), "no")
        results.append({"key": qk, "path": qp, "is_match": q_match,
                        "label": NOT_IN_GALLERY if q_match is False else None, "results": hits})
    human(json_out).print(table)
    write_json(json_out, {"gallery": str(gallery), "checkpoint": ck, "backend": index.backend, "top_k": top_k,
                          "num_gallery": len(index), "rerank": None if rr is None else rr.as_dict(),
                          "score": "cosine" if rr is None else "re-ranked distance",
                          "flip": fe.flip, "precision": fe.precision,
                          "gallery_features": {"flip": gal_flip, "precision": gal_prec},
                          "threshold": None if thr is None else {"distance_below": thr, "calibration": cal},
                          "queries": results})
    if save_index:
        index.save(save_index)
        console.print(f"saved the gallery index to {save_index}", highlight=False, markup=False)
    console.print(f"wrote {out_html} (thumbnails in {thumbs})", highlight=False, markup=False)


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}"


def _pct_ci(v, ci) -> str:
    return _pct(v) + ("" if not ci else f" [{_pct(ci[0])}, {_pct(ci[1])}]")


def _threshold_text(t) -> str:
    return "inf (accept all)" if t is None or t == float("inf") else f"{t:.6g}"


@app.command("calibrate")
def calibrate_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder or run folder."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Labelled dataset to calibrate on (default: the run's own, its data.dataset)."),
    root: Path | None = typer.Option(None, "--root", "-r", help="Dataset root (default: the run's own, its data.root)."),
    far: str = far_option(),
    mode: str | None = mode_option(),
    unknown_fraction: float = unknown_fraction_option(),
    seed: int = sample_seed_option(),
    flip: bool | None = flip_option(),
    rerank: bool = rerank_option(),
    rerank_k1: int = rerank_k1_option(),
    rerank_k2: int = rerank_k2_option(),
    rerank_lambda: float = rerank_lambda_option(),
    device: str = device_option(),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    prefer: str = prefer_option(),
    resamples: int = resamples_option(),
    ci_seed: int = bootstrap_seed_option(),
    json_out: Path | None = json_option(),
) -> None:
    """Open-set calibration: choose a distance threshold per target false-accept rate, so that `rlq search
    --threshold calibrated` can answer "not in the gallery" (docs/open-set.md).

    On a labelled split (the run's held-out identities, data.val_holdout_ids, or the dataset's val protocol; else
    its test protocol, said in the output) some query identities lose their gallery images and become unknowns;
    the threshold at FAR f is the largest one that accepts at most a fraction f of them. Writes
    <checkpoint>.calibration.json beside the checkpoint (refused while a training holds the run folder), with the
    split, the feature settings (flip, precision, re-ranking: a search made otherwise refuses it) and the measured
    DIR and FAR with 95 % bootstrap intervals."""
    from ..deploy.calibration import calibrate, write_calibration
    from ..engine.evaluate import eval_dataset_and_root
    from ..engine.model_io import load_model_checkpoint
    from ..evaluation.open_set import parse_fars
    from ..runtime.device import resolve_device

    fars = parse_fars(far)
    if resamples < 1:
        raise typer.BadParameter(f"--resamples must be >= 1 (1000 for the reported intervals), got {resamples}")
    dev = resolve_device(None if device == "auto" else device)
    model, state = load_model_checkpoint(checkpoint, device=dev, prefer=prefer)
    ds_name, ds_root = eval_dataset_and_root(state, dataset, root)
    rec = calibrate(checkpoint, ds_name, ds_root, fars, mode=mode, unknown_fraction=unknown_fraction, seed=seed,
                    flip=flip, rerank=rerank_settings(rerank, rerank_k1, rerank_k2, rerank_lambda), device=dev,
                    batch_size=batch_size, workers=workers, prefer=prefer, num_resamples=resamples, ci_seed=ci_seed,
                    state=state, model=model)
    path = write_calibration(state["checkpoint"], rec)
    from rich.table import Table

    sp = rec["split"]
    t = Table(title=f"open-set calibration ({sp['dataset']} {sp['protocol']}, {sp['mode']}: {sp['num_known']} known, "
                    f"{sp['num_unknown']} unknown queries)")
    for col in ("target FAR", "threshold (distance <)", "FAR %", "DIR %"):
        t.add_column(col)
    for r in rec["thresholds"]:
        t.add_row(f"{r['far_target']:g}", _threshold_text(r["threshold"]), _pct_ci(r["far"], r["far_ci"]),
                  _pct_ci(r["dir"], r["dir_ci"]))
    shown = human(json_out)
    shown.print(t)
    console.print(f"split: {sp['source']}", highlight=False, markup=False, soft_wrap=True)
    f = rec["features"]
    console.print(f"features: flip {'on' if f['flip'] else 'off'}, {f['precision']}, {f['ranking']}; DIR and FAR: "
                  f"value [95 % percentile bootstrap interval over queries, {resamples} resamples, seed {ci_seed}]",
                  highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {path}", highlight=False, markup=False)
    write_json(json_out, {**rec, "path": str(path)})


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder or run folder."),
    onnx_path: Path = typer.Option(..., "--onnx", help="Output ONNX file; the model card goes to <file>.model-card.md."),
    check_images: Path | None = typer.Option(None, "--check-images", help="Image or folder of images for the parity check (default: synthetic images)."),
    max_check_images: int = typer.Option(8, min=1, help="Use at most this many images from --check-images (sorted)."),
    opset: int = typer.Option(17, help="ONNX opset."),
    flip: bool | None = flip_option(),
    atol: float = typer.Option(1e-4, help="Parity tolerance: max L2 distance between ONNX and PyTorch features."),
    prefer: str = typer.Option("best", help="In a run folder: best, best_val, or last."),
    json_out: Path | None = json_option(),
) -> None:
    """Export the inference feature to ONNX, check it against PyTorch, and write a model card next to it.

    The exported feature is the one the run was evaluated with (its eval.flip; fp32), so the card's numbers are
    reproduced by the exported model; --flip/--no-flip overrides, and the metadata and the card say so."""
    from ..deploy.search import image_files
    from ..export.onnx import export_onnx

    images = None
    if check_images is not None:
        if check_images.is_dir():
            images = image_files(check_images)[:max_check_images]
        elif check_images.is_file():
            images = [str(check_images)]
        if not images:
            raise RlqError(f"no images at {check_images} (looked for .jpg, .jpeg, .png, .bmp, .webp)")
    res = export_onnx(checkpoint, onnx_path, opset=opset, flip=flip, check_images=images, atol=atol, prefer=prefer)
    p = res["parity"]
    shown = human(json_out)
    shown.print(f"parity ({p['images']}, {p['num_images']} images, batch sizes {p['batch_sizes']}): "
              f"max |diff| {p['max_abs_diff']:.3g}, max L2 {p['max_l2_diff']:.3g}, min cosine {p['min_cosine']:.9f} "
              f"(criterion: max L2 <= {p['atol']:g}) -> passed", highlight=False, markup=False)
    shown.print(f"model: {res['onnx']} ({res['method']}, {res['backbone']}, input {res['input_size'][0]}x{res['input_size'][1]}, "
              f"{res['embed_dim']}-d, flip {'on' if res['flip'] else 'off'}, {res['precision']}, "
              f"sha256 {res['sha256'][:16]}...)", highlight=False, markup=False)
    shown.print(f"model card: {res['model_card']}", highlight=False, markup=False)
    write_json(json_out, res)
