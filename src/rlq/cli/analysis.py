"""Analysis commands: `rlq analyze robustness|lq-clusters|gender|buckets` and `rlq visualize`.

Each writes its numbers (`<command>.json`), its picture(s), and `report.md` + `analysis.json` into `--out`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import (
    analyze_app,
    app,
    batch_size_option,
    bootstrap_seed_option,
    console,
    device_option,
    flip_option,
    lq_seed_option,
    mode_option,
    out,
    prefer_option,
    protocol_option,
    resamples_option,
    sample_seed_option,
    top_k_option,
    workers_option,
)

_DATASET_HELP = "Dataset name (ltcc, prcc, last, deepchange, celebreid, vcclothes, synthcc, manifest)."
_CKPT_HELP = "Checkpoint folder, or a run folder (uses checkpoints/<prefer>, else the newest)."


def _opt_dataset() -> Any:
    return typer.Option(..., "--dataset", "-d", help=_DATASET_HELP)


def _opt_root() -> Any:
    return typer.Option(..., "--root", "-r", help="Dataset root (for `manifest`: the CSV file).")


def _opt_out() -> Any:
    return typer.Option(..., "--out", "-o", help="Output folder (JSON, PNG, report.md).")


def _have_matplotlib() -> bool:
    from ..analysis.report import _have_matplotlib as have

    if not have():
        console.print("[yellow]matplotlib is not installed (the 'viz' extra): writing numbers without plots[/yellow]")
        return False
    return True


def _setup(checkpoint: Path, dataset: str, root: Path, device: str, prefer: str, height: int | None,
           width: int | None, protocol: str = "test", flip: bool | None = None):
    """(model, state, (h, w), dataset, protocol, device, amp dtype, flip); flip and precision default to the run's own
    evaluation (``rlq.engine.evaluate.prepare_evaluation``), so the analyses see the embeddings behind the run's numbers."""
    from ..engine.evaluate import prepare_evaluation

    s = prepare_evaluation(checkpoint, dataset, root=root, protocol=protocol, device=device, prefer=prefer, flip=flip,
                           height=height, width=width)
    return s.model, s.state, (s.height, s.width), s.dataset, s.protocol, s.device, s.amp_dtype, s.flip


def _extract(model, ds, splits, hw, dev, amp, batch_size: int, workers: int, flip: bool) -> dict:
    from ..evaluation.extract import extract_protocol_features

    return extract_protocol_features(model, ds, splits=list(splits), height=hw[0], width=hw[1], device=dev,
                                     batch_size=batch_size, workers=workers, flip=flip, amp_dtype=amp, progress=True)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} must be a comma list of integers, got {text!r}") from None


def _names(paths: list[Path]) -> list[str]:
    """Short unique labels for checkpoints (folder name, else the path as given)."""
    names = [p.name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{i}: {n}" for i, n in enumerate(names)]
    return names


def _ckpt_info(state: dict, flip: bool) -> dict:
    return {"checkpoint": state.get("checkpoint"), "method": state.get("method"), "flip": flip}


def _done(out_dir: Path, files: list[Path]) -> None:
    console.print(f"wrote {', '.join(str(f.relative_to(out_dir)) if f.is_relative_to(out_dir) else str(f) for f in files)} "
                  f"in {out_dir}")


_LQ_PROTOCOL_HELP = (
    "Robustness protocols to run, a comma list (docs/method.md §12): rlq (default): rlq's own graded grid, levels 0-4, "
    "on the queries; official: the authors' LQ test protocol (query and gallery degraded at original resolution with "
    "the training ranges; kinds from --official-lq, default mix); corruption: a corruption-benchmark grid "
    "(ImageNet-C's severities 1-5 of pixelation, defocus, motion blur and JPEG, as Market-1501-C uses them), "
    "reported for the query only, the gallery only and both.")
_APPLY_TO_HELP = ("Splits the rlq and corruption grids degrade: a comma list of query, gallery, both (default: query "
                  "for rlq, docs/method.md §12; all three for corruption). The official protocol always degrades both.")


def _choices(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    vals = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    bad = [v for v in vals if v not in allowed]
    if bad or not vals:
        raise typer.BadParameter(f"{option} {text!r}: expected a comma list of {', '.join(allowed)}"
                                 + (f" ({', '.join(map(repr, bad))} is not one)" if bad else ""))
    return vals


@analyze_app.command("robustness")
def robustness_cmd(
    checkpoints: list[Path] = typer.Argument(..., help=f"{_CKPT_HELP} Several give one curve each."),
    dataset: str = _opt_dataset(),
    root: Path = _opt_root(),
    out_dir: Path = _opt_out(),
    lq_protocol: str = typer.Option("rlq", "--lq-protocol", help=_LQ_PROTOCOL_HELP),
    artifacts: str = typer.Option("pixelation,defocus,motion,jpeg",
                                  help="Comma list of artifacts (rlq.lq.severity; the corruption grid has the same four)."),
    levels: str | None = typer.Option(None, help="Comma list of severity levels, 0 = clean (default: 0-4 for rlq, "
                                         "0-5 for corruption)."),
    apply_to: str | None = typer.Option(None, "--apply-to", help=_APPLY_TO_HELP),
    seed: int = lq_seed_option(),
    protocol: str = protocol_option(),
    metric: str = typer.Option("rank1", help="Metric plotted first (rank1 and mAP are always plotted)."),
    evaluation: str | None = typer.Option(None, help="Evaluation plotted (default: the protocol's selection, e.g. cc)."),
    height: int | None = typer.Option(None, help="Input height (default: the checkpoint's)."),
    width: int | None = typer.Option(None, help="Input width (default: the checkpoint's)."),
    resamples: int = resamples_option(),
    bootstrap_seed: int = bootstrap_seed_option(),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    device: str = device_option(),
    prefer: str = prefer_option(),
    flip: bool | None = flip_option(),
    cache_images: bool = typer.Option(False, "--cache-images", help="Decode the test images once into memory (small datasets)."),
    official_lq: str | None = typer.Option(
        None, "--official-lq",
        help="Also run the authors' LQ test protocol (--LR-MODE/--LR-TYPE, docs/method.md §12) for these kinds, beside "
             "rlq's grid: a comma list of mix, pixelation, gaussian, motion (or `all`). Degrades query and gallery at "
             "original resolution with the training ranges, seeded by --lq-seed; reported under `official_lq:<kind>`."),
) -> None:
    """Metrics per artifact and severity level (paper Fig. 8 left), one curve per checkpoint, under labelled protocols
    (--lq-protocol rlq|official|corruption, docs/method.md §12).

    Every point carries a 95 % percentile-bootstrap interval over queries (--resamples, 0 = none), drawn as a band.
    Each model's clean features are extracted once; each degraded split once per artifact and level."""
    from ..analysis.report import write_report
    from ..analysis.robustness import (
        APPLY_TO,
        CORRUPTION_DEFINITION,
        CORRUPTION_PROTOCOL,
        LQ_PROTOCOLS,
        ROBUSTNESS_PROTOCOL,
        SETTING_TEXT,
        plot_robustness,
        robustness_markdown,
        robustness_sweeps,
    )
    from ..engine.model_io import checkpoint_description
    from ..evaluation.extract import extract_features
    from ..io import atomic_write_json
    from ..lq.corruption import CORRUPTION_SOURCE
    from ..lq.official_test import OFFICIAL_LQ_KINDS, OFFICIAL_LQ_LABEL

    protocols = _choices(lq_protocol, LQ_PROTOCOLS, "--lq-protocol")
    arts = [a.strip() for a in artifacts.split(",") if a.strip()]
    lv = _ints(levels, "--levels") if levels is not None else None
    settings = _choices(apply_to, APPLY_TO, "--apply-to") if apply_to is not None else None
    if resamples < 0:
        raise typer.BadParameter(f"--resamples must be >= 0 (0 = no intervals; 1000 for the reported ones), got {resamples}")
    kinds: list[str] = []
    if official_lq:
        kinds = list(OFFICIAL_LQ_KINDS) if official_lq.strip() == "all" else [k.strip() for k in official_lq.split(",") if k.strip()]
        bad = [k for k in kinds if k not in OFFICIAL_LQ_KINDS]
        if bad or not kinds:
            raise typer.BadParameter(f"--official-lq {official_lq!r}: expected `all` or a comma list of {', '.join(OFFICIAL_LQ_KINDS)}")
        if "official" not in protocols:  # --official-lq KINDS: the authors' protocol beside the others, as before
            protocols.append("official")
    elif "official" in protocols:
        kinds = ["mix"]
    grids = {g: (settings or (["query"] if g == "rlq" else list(APPLY_TO))) for g in ("rlq", "corruption") if g in protocols}
    if settings is not None and not grids:
        console.print("[yellow]--apply-to is ignored: the official protocol always degrades query and gallery[/yellow]")
    boot = dict(bootstrap_resamples=resamples, bootstrap_seed=bootstrap_seed)
    swept: dict[str, dict[str, dict[str, Any]]] = {g: {} for g in grids}  # grid -> model -> {setting: result}
    infos, official = {}, {}
    for name, ck in zip(_names(checkpoints), checkpoints):
        model, state, hw, ds, proto, dev, amp, ck_flip = _setup(ck, dataset, root, device, prefer, height, width, protocol,
                                                                flip=flip)
        label = checkpoint_description(state)
        cache = None
        if cache_images:
            from ..data.loading import ImageCache

            cache = ImageCache()
            cache.preload([s.path for n in proto.split_names for s in ds.split(n)], progress=True)
        console.print(f"robustness of {name} ({state.get('method')}, {label}, input {hw[0]}x{hw[1]}): "
                      f"{', '.join(protocols)} ...")
        common = dict(seed=seed, height=hw[0], width=hw[1], device=dev, batch_size=batch_size, workers=workers,
                      protocol=protocol, flip=ck_flip, amp_dtype=amp, cache=cache, progress=True, checkpoint=label)
        if grids:  # the clean features, once per model, shared by both grids
            clean = {n: extract_features(model, [s.path for s in ds.split(n)], hw[0], hw[1], device=dev,
                                         batch_size=batch_size, workers=workers, flip=ck_flip, amp_dtype=amp, progress=True,
                                         desc=f"extract {n} (clean)", cache=cache) for n in proto.split_names}
            for g, sts in grids.items():
                swept[g][name] = robustness_sweeps(model, ds, grid=g, artifacts=arts, levels=lv, apply_to=sts,
                                                   clean_features=clean, **boot, **common)
        if kinds:
            from ..analysis.robustness import official_lq_evaluate

            official[name] = official_lq_evaluate(model, ds, kinds=kinds, **boot, **common)
        infos[name] = _ckpt_info(state, ck_flip)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"protocols": protocols}
    by_setting = {g: {st: {n: r[st] for n, r in swept[g].items()} for st in sts} for g, sts in grids.items()}
    if "rlq" in grids:  # rlq's grid keeps the layout of earlier files: its (first) setting's models at the top
        first = grids["rlq"][0]
        payload.update({"protocol_label": ROBUSTNESS_PROTOCOL, "apply_to": first,
                        "models": {n: {**infos[n], **r} for n, r in by_setting["rlq"][first].items()}})
        if len(grids["rlq"]) > 1:
            payload["rlq_settings"] = {st: {"models": {n: {**infos[n], **r} for n, r in m.items()}}
                                       for st, m in by_setting["rlq"].items()}
    if "corruption" in grids:
        payload["corruption"] = {"protocol_label": CORRUPTION_PROTOCOL, "definition": CORRUPTION_DEFINITION,
                                 "source": CORRUPTION_SOURCE,
                                 "settings": {st: {"models": {n: {**infos[n], **r} for n, r in m.items()}}
                                              for st, m in by_setting["corruption"].items()}}
    if official:  # the authors' protocol, under its own key and label
        payload["official_lq"] = {"protocol_label": OFFICIAL_LQ_LABEL,
                                  "models": {n: {**infos[n], **r} for n, r in official.items()}}
    atomic_write_json(out_dir / "robustness.json", payload)
    files, images, sections = [out_dir / "robustness.json"], {}, {}
    plots = _have_matplotlib()
    for g, sts in grids.items():
        for i, st in enumerate(sts):
            results = by_setting[g][st]
            stem = "robustness" if (g == "rlq" and i == 0) else f"robustness_{g}_{st}"
            title = f"{'rlq grid' if g == 'rlq' else 'corruption grid'}, {SETTING_TEXT[st]}"
            if plots:
                for m in dict.fromkeys([metric, "rank1", "mAP"]):
                    png = plot_robustness(results, out_dir / f"{stem}_{m}.png", metric=m, evaluation=evaluation)
                    images[f"robustness: {title} ({m})"] = png
                    files.append(png)
            md = robustness_markdown(results, evaluation)
            out.print(md)
            sections["Robustness per artifact" if stem == "robustness" else f"Robustness per artifact: {title}"] = md
    if official:
        from ..analysis.robustness import official_lq_markdown

        md_off = official_lq_markdown(official, evaluation)
        out.print(md_off)
        sections["The authors' LQ test protocol"] = md_off
    files.append(write_report(out_dir, sections, images, title="rlq analysis: robustness",
                              numbers={"robustness": payload}))
    _done(out_dir, files)


def _parse_mix(mix: str | None, dataset: str):
    if mix is None:
        return dataset
    if ":" in mix:
        art, _, lv = mix.partition(":")
        try:
            return (art.strip(), int(lv))
        except ValueError:
            raise typer.BadParameter(f"--mix {mix!r}: expected a dataset mix name (ltcc, prcc, ...) or ARTIFACT:LEVEL") from None
    return mix


@analyze_app.command("lq-clusters")
def lq_clusters_cmd(
    checkpoint: Path = typer.Argument(..., help=_CKPT_HELP),
    dataset: str = _opt_dataset(),
    root: Path = _opt_root(),
    out_dir: Path = _opt_out(),
    split: str = typer.Option("gallery", help="Split whose images are compared clean vs degraded."),
    max_images: int = typer.Option(1000, help="At most this many images (a seeded random subset)."),
    mix: str | None = typer.Option(None, help="LQ source: a dataset's training mix (ltcc, prcc, ...; default: "
                                      "--dataset's) or ARTIFACT:LEVEL of the severity grid (e.g. motion:3)."),
    ranges: str = typer.Option("official", help="Training-mix parameter ranges: official or paper (docs/method.md §5.2)."),
    seed: int = lq_seed_option(),
    sample_seed: int = sample_seed_option(),
    tsne: bool = typer.Option(True, "--tsne/--no-tsne", help="Draw the t-SNE picture (paper Fig. 7)."),
    tsne_points: int = typer.Option(1000, help="At most this many points in the t-SNE picture."),
    height: int | None = typer.Option(None, help="Input height (default: the checkpoint's)."),
    width: int | None = typer.Option(None, help="Input width (default: the checkpoint's)."),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    device: str = device_option(),
    prefer: str = prefer_option(),
    flip: bool | None = flip_option(),
) -> None:
    """Do LQ images cluster regardless of identity? Nearest-neighbour rates, HQ/LQ probe, silhouette, t-SNE (paper Figure 7).

    --sample-seed draws the --max-images subset; --lq-seed draws the degradations and also seeds the probe folds and
    t-SNE."""
    import numpy as np

    from ..analysis.lq_clusters import lq_cluster_diagnostics, lq_clusters_markdown
    from ..analysis.report import write_report
    from ..io import atomic_write_json

    model, state, hw, ds, _, dev, amp, flip = _setup(checkpoint, dataset, root, device, prefer, height, width, flip=flip)
    samples = list(ds.split(split))
    if max_images < 2:
        raise typer.BadParameter("--max-images must be >= 2")
    if len(samples) > max_images:
        keep = np.sort(np.random.default_rng(sample_seed).choice(len(samples), size=max_images, replace=False))
        samples = [samples[i] for i in keep]
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "lq_tsne.png" if (tsne and _have_matplotlib()) else None
    res = lq_cluster_diagnostics(model, [s.path for s in samples], [s.pid for s in samples],
                                 artifact_mix=_parse_mix(mix, dataset), seed=seed, height=hw[0], width=hw[1], device=dev,
                                 batch_size=batch_size, workers=workers, ranges=ranges, amp_dtype=amp, flip=flip, tsne=png is not None,
                                 out_png=png, max_tsne_points=tsne_points, progress=True,
                                 model_name=f"{Path(checkpoint).name or checkpoint} ({state.get('method')})")
    res = {**_ckpt_info(state, flip), "dataset": dataset, "split": split, **res}
    atomic_write_json(out_dir / "lq_clusters.json", res)
    md = lq_clusters_markdown({Path(checkpoint).name or str(checkpoint): res})
    out.print(md)
    images = {"t-SNE of HQ and LQ features": png} if png is not None else {}
    report = write_report(out_dir, {"LQ clustering": md}, images, title="rlq analysis: LQ clusters",
                          numbers={"lq_clusters": res})
    _done(out_dir, [out_dir / "lq_clusters.json", *images.values(), report])


def _default_gender_csv(dataset: str, root: Path) -> Path:
    """SynthCC writes its test gender CSV itself; other datasets need --gender-csv."""
    from ..data.synth import is_synthcc_root

    if is_synthcc_root(root) and (root / "SynthCC_test_Gender.csv").is_file():
        return root / "SynthCC_test_Gender.csv"
    raise typer.BadParameter(f"--gender-csv is required for {dataset} (the test gender CSV in the authors' format, "
                             "e.g. annotations/LTCC_test_Gender.csv); only SynthCC ships its own")


@analyze_app.command("gender")
def gender_cmd(
    checkpoints: list[Path] = typer.Argument(..., help=f"{_CKPT_HELP} Several give one group of bars each."),
    dataset: str = _opt_dataset(),
    root: Path = _opt_root(),
    out_dir: Path = _opt_out(),
    gender_csv: Path | None = typer.Option(None, "--gender-csv", help="Test gender CSV in the authors' format "
                                              "(Category,ID,Gender; e.g. LTCC_test_Gender.csv). Default on SynthCC: "
                                              "its SynthCC_test_Gender.csv."),
    categories: str | None = typer.Option(None, help="Only rows of these categories (comma list; default: all)."),
    keep_junk: bool = typer.Option(False, "--keep-junk", help="Take the top-1 over the whole gallery (default: delete "
                                   "the query's junk first, as the evaluation does)."),
    protocol: str = protocol_option(),
    height: int | None = typer.Option(None, help="Input height (default: the checkpoint's)."),
    width: int | None = typer.Option(None, help="Input width (default: the checkpoint's)."),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    device: str = device_option(),
    prefer: str = prefer_option(),
    flip: bool | None = flip_option(),
) -> None:
    """Gender awareness: F1 of the female class among top-1 mistakes, per evaluation and checkpoint (paper Fig. 8 right)."""
    from ..analysis.ranklist import gender_awareness, gender_markdown, load_test_gender, plot_gender
    from ..analysis.report import write_report
    from ..io import atomic_write_json

    gender_csv = gender_csv or _default_gender_csv(dataset, root)
    cats = [c.strip() for c in categories.split(",")] if categories else None
    models: dict[str, dict] = {}
    cover: dict = {}
    for name, ck in zip(_names(checkpoints), checkpoints):
        model, state, hw, ds, proto, dev, amp, ck_flip = _setup(ck, dataset, root, device, prefer, height, width, protocol,
                                                                flip=flip)
        if not cover:
            all_samples = [s for n in proto.split_names for s in ds.split(n)]
            gmap, cover = load_test_gender(gender_csv, all_samples, cats)
        feats = _extract(model, ds, proto.split_names, hw, dev, amp, batch_size, workers, ck_flip)
        res = {}
        for spec in proto.specs:
            (qf, qs), (gf, gs) = feats[spec.query], feats[spec.gallery]
            junk = {} if keep_junk else dict(q_camids=[s.camid for s in qs], g_camids=[s.camid for s in gs],
                                             q_clothes_ids=[s.clothes_id for s in qs],
                                             g_clothes_ids=[s.clothes_id for s in gs], mode=spec.mode)
            res[spec.name] = gender_awareness(qf, gf, [s.pid for s in qs], [s.pid for s in gs], gmap, **junk)
        models[name] = {**_ckpt_info(state, ck_flip), "results": res}
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"dataset": dataset, "gender_csv": str(gender_csv), "coverage": cover, "models": models}
    atomic_write_json(out_dir / "gender.json", payload)
    images = {}
    several = len(models) > 1
    flat = {(f"{m}: {e}" if several else e): r for m, v in models.items() for e, r in v["results"].items()}
    if _have_matplotlib():
        images["gender of top-1 mistakes"] = plot_gender(flat, out_dir / "gender.png")
    md = gender_markdown(flat) + f"\n\nGender known for {cover['num_with_gender']} of {cover['num_ids']} test identities."
    out.print(md)
    report = write_report(out_dir, {"Gender awareness": md}, images, title="rlq analysis: gender of mistakes",
                          numbers={"gender": payload})
    _done(out_dir, [out_dir / "gender.json", *images.values(), report])


@analyze_app.command("buckets")
def buckets_cmd(
    checkpoint: Path = typer.Argument(..., help=_CKPT_HELP),
    dataset: str = _opt_dataset(),
    root: Path = _opt_root(),
    out_dir: Path = _opt_out(),
    size_csv: Path | None = typer.Option(None, "--size-csv", help="The authors' size table (LTCC_Size.csv / PRCC_Size.csv)."),
    quality_csv: Path | None = typer.Option(None, "--quality-csv", help="SynthCC's quality.csv (artifact + severity buckets)."),
    protocol: str = protocol_option(),
    height: int | None = typer.Option(None, help="Input height (default: the checkpoint's)."),
    width: int | None = typer.Option(None, help="Input width (default: the checkpoint's)."),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    device: str = device_option(),
    prefer: str = prefer_option(),
    flip: bool | None = flip_option(),
) -> None:
    """Metrics per query-quality bucket against the full gallery (paper Table 10 style).

    Buckets: rlq's own size buckets from the image height (default), the authors' size CSV, or SynthCC's quality CSV.
    """
    from ..analysis.buckets import (
        SIZE_BUCKETS,
        buckets_markdown,
        plot_buckets,
        protocol_bucket_metrics,
        quality_buckets,
        quality_order,
        size_buckets,
        size_csv_buckets,
    )
    from ..analysis.report import write_report
    from ..data.sidecars import read_quality_csv, read_size_csv
    from ..io import atomic_write_json

    if size_csv is not None and quality_csv is not None:
        raise typer.BadParameter("give at most one of --size-csv and --quality-csv")
    model, state, hw, ds, proto, dev, amp, flip = _setup(checkpoint, dataset, root, device, prefer, height, width,
                                                         protocol, flip=flip)
    queries = [s for n in dict.fromkeys(sp.query for sp in proto.specs) for s in ds.split(n)]
    tables: dict[str, tuple[dict, list]] = {}
    if quality_csv is not None:
        table = read_quality_csv(quality_csv)
        for coarse in (False, True):
            b = quality_buckets(queries, table, coarse=coarse, source=f"quality CSV {quality_csv}")
            tables["quality, clean vs LQ" if coarse else "quality, artifact and severity"] = (b, quality_order(b.values()))
    elif size_csv is not None:
        b = size_csv_buckets(queries, read_size_csv(size_csv), source=f"size CSV {size_csv}")
        tables["size (authors' CSV)"] = (b, list(SIZE_BUCKETS))
    else:
        tables["size (rlq's edges on the image height)"] = (size_buckets(queries), list(SIZE_BUCKETS))
    feats = _extract(model, ds, proto.split_names, hw, dev, amp, batch_size, workers, flip)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {name: protocol_bucket_metrics(feats, proto, b, order=order, device=dev) for name, (b, order) in tables.items()}
    payload = {**_ckpt_info(state, flip), "dataset": dataset, "source": str(quality_csv or size_csv or "image height"),
               "results": results}
    atomic_write_json(out_dir / "buckets.json", payload)
    sections, images = {}, {}
    plots = _have_matplotlib()
    for i, (name, r) in enumerate(results.items()):
        sections[f"Buckets: {name}"] = buckets_markdown(r)
        out.print(sections[f"Buckets: {name}"])
        if plots:
            images[f"buckets: {name}"] = plot_buckets(r, out_dir / f"buckets_{i}.png", title=f"query buckets: {name}")
    report = write_report(out_dir, sections, images, title="rlq analysis: query buckets", numbers={"buckets": payload})
    _done(out_dir, [out_dir / "buckets.json", *images.values(), report])


@app.command("visualize")
def visualize_cmd(
    checkpoint: Path = typer.Argument(..., help=_CKPT_HELP),
    dataset: str = _opt_dataset(),
    root: Path = _opt_root(),
    out_dir: Path = _opt_out(),
    mode: str | None = mode_option(),
    queries: str = typer.Option("worst", help="worst (lowest AP first), random (by --sample-seed), hits (a --sample-seed draw among the "
                                "queries whose rank-1 is correct), or a comma list of query keys (with or without the "
                                "split prefix, e.g. query/001_1_c08_028453 or 001_1_c08_028453)."),
    num_queries: int = typer.Option(8, help="Rows (queries) to draw."),
    top_k: int = top_k_option(),
    show_junk: bool = typer.Option(False, "--show-junk", help="Keep junk in the list (grey); default: removed as in the evaluation."),
    seed: int = sample_seed_option(),
    protocol: str = protocol_option(),
    height: int | None = typer.Option(None, help="Input height (default: the checkpoint's)."),
    width: int | None = typer.Option(None, help="Input width (default: the checkpoint's)."),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    device: str = device_option(),
    prefer: str = prefer_option(),
    flip: bool | None = flip_option(),
) -> None:
    """Ranked results (paper Figure 9): each query with its top-k gallery images, as a PNG and a static HTML page."""
    from ..analysis.ranklist import rank_list_figure
    from ..analysis.report import write_report
    from ..data.records import MODES
    from ..io import atomic_write_json

    model, state, hw, ds, proto, dev, amp, flip = _setup(checkpoint, dataset, root, device, prefer, height, width,
                                                         protocol, flip=flip)
    names = [s.name for s in proto.specs]
    if mode is None or mode in names:
        spec = proto.spec(mode or proto.selection)
        rule, label = spec.mode, spec.name
    elif mode in MODES:
        spec = proto.spec(proto.selection)
        rule, label = mode, f"{mode} rule on {spec.query} -> {spec.gallery}"
    else:
        raise typer.BadParameter(f"--mode {mode!r} is neither an evaluation of this protocol {names} nor a rule {MODES}")
    feats = _extract(model, ds, dict.fromkeys([spec.query, spec.gallery]), hw, dev, amp, batch_size, workers, flip)
    (qf, qs), (gf, gs) = feats[spec.query], feats[spec.gallery]
    order, idx = queries, None
    if queries not in ("worst", "random", "hits"):
        pos = {s.key: i for i, s in enumerate(qs)}
        prefix = f"{spec.query}/"  # keys are "<split>/<file>": accept the bare file name too
        keys = [k if k in pos or k.startswith(prefix) else prefix + k for k in (k.strip() for k in queries.split(",")) if k]
        unknown = [k for k in keys if k not in pos]
        if unknown or not keys:
            raise typer.BadParameter(f"--queries: unknown query key(s) {unknown[:5]} in split {spec.query!r} "
                                     f"(keys look like {qs[0].key!r}); or use worst / random / hits")
        order, idx = "given", [pos[k] for k in keys]
    out_dir.mkdir(parents=True, exist_ok=True)
    res = rank_list_figure(qs, gs, query_feats=qf, gallery_feats=gf, mode=rule, order=order, query_indices=idx,
                           num_queries=num_queries, top_k=top_k, show_junk=show_junk, seed=seed,
                           out_png=out_dir / "ranked.png", out_html=out_dir / "ranked.html", label=label)
    payload = {**_ckpt_info(state, flip), "dataset": dataset, "evaluation": label, **res}
    atomic_write_json(out_dir / "ranked.json", payload)
    md = (f"{res['order_text']}; {res['legend']}. Static page with the file names: [ranked.html](ranked.html).")
    report = write_report(out_dir, {"Ranked results": md}, {"ranked results": out_dir / "ranked.png"},
                          title="rlq: ranked results", numbers={"ranked": payload})
    _done(out_dir, [out_dir / "ranked.png", out_dir / "ranked.html", out_dir / "ranked.json", report])
