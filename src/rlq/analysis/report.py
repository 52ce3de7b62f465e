"""The analysis report (``report.md`` + ``analysis.json``) and the analyses the SynthCC demo adds to its report."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlq.io import atomic_write_json, atomic_write_text

__all__ = ["write_report", "demo_analysis", "REPORT_NAME", "NUMBERS_NAME"]

logger = logging.getLogger(__name__)

REPORT_NAME = "report.md"
NUMBERS_NAME = "analysis.json"
_DEMO_LQ_IMAGES = 400  # gallery images compared clean vs degraded in the demo
# the paper's three low-quality kinds (docs/method.md §5.2); `rlq analyze robustness` adds JPEG
_DEMO_ROBUSTNESS_ARTIFACTS = ("pixelation", "defocus", "motion")
# The demo's robustness runs every query of the CC evaluation at levels 0, 2 and 4 of rlq's grid only (not 1 and 3),
# to stay within its 15-minute budget on 2 cores; the report says so. `rlq analyze robustness` runs all five.
_DEMO_ROBUSTNESS_LEVELS = (0, 2, 4)
#: What the demo's results table reports (the demo trains without a validation split and selects nothing on test).
_DEMO_CHECKPOINT = "the demo table's test@last"
_DEMO_FOCUS_METHODS = ("bm", "rlq")  # models of the costly analyses (re-extraction per model): the baseline and ours


def write_report(
    out_dir: str | os.PathLike,
    sections: Mapping[str, Mapping[str, Any] | str],
    images: Mapping[str, str | os.PathLike],
    *,
    title: str = "rlq analysis",
    numbers: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.md`` (sections in order, then images) and ``analysis.json`` into ``out_dir``, atomically.

    A ``str`` section is markdown, written as is; a ``dict`` section is numbers: written to the report as a JSON
    block and to ``analysis.json`` under its name (with ``numbers``, which only go to the JSON). Images are linked
    relative to ``out_dir``. Returns the report path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"title": title, "numbers": {}, "images": {}}
    lines = [f"# {title}", ""]
    for name, body in sections.items():
        lines += [f"## {name}", ""]
        if isinstance(body, str):
            lines += [body.rstrip(), ""]
        else:
            payload["numbers"][name] = body
            lines += ["```json", json.dumps(body, indent=2, default=_jsonable, allow_nan=True), "```", ""]
    payload["numbers"].update(numbers or {})
    if images:
        lines += ["## Figures", ""]
    for name, path in images.items():
        rel = Path(os.path.relpath(Path(path).absolute(), out.absolute())).as_posix()
        payload["images"][name] = rel
        lines += [f"### {name}", "", f"![{name}]({rel})", ""]
    atomic_write_json(out / NUMBERS_NAME, payload)
    report = out / REPORT_NAME
    atomic_write_text(report, "\n".join(lines).rstrip() + "\n")
    return report


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def demo_analysis(
    out: str | os.PathLike,
    root: str | os.PathLike,
    ds: Any,
    methods: Sequence[str],
    *,
    height: int,
    width: int,
    say: Callable[[str], None] | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Robustness, LQ clusters, quality buckets, gender of mistakes and ranked results for the demo's trained runs.

    Runs are ``<out>/<method>`` (weights after the last epoch). Figures go to ``<out>/figures``; returns
    ``{"figures": {name: path relative to out}, "sections": {title: markdown}, "numbers": {...}}``. Without
    matplotlib only the pictures that need it are skipped.
    """
    import numpy as np

    from rlq.data.loading import ImageCache
    from rlq.data.sidecars import read_quality_csv
    from rlq.engine.evaluate import prepare_evaluation
    from rlq.engine.model_io import checkpoint_description
    from rlq.errors import CheckpointError
    from rlq.evaluation.extract import extract_protocol_features

    from .buckets import buckets_markdown, plot_buckets, protocol_bucket_metrics, quality_buckets, quality_order
    from .lq_clusters import lq_cluster_diagnostics, lq_clusters_markdown
    from .ranklist import gender_awareness, gender_markdown, load_test_gender, rank_list_figure
    from .robustness import plot_robustness, robustness_markdown, robustness_sweep

    tell = say or logger.info
    out, root = Path(out), Path(root)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    plots = _have_matplotlib()
    # the demo replaces its "figures" entry with ours: keep the pictures already in the folder
    figures: dict[str, str] = {p.stem: f"figures/{p.name}" for p in sorted(figs.glob("*.png"))}
    sections: dict[str, str] = {}
    numbers: dict[str, Any] = {}
    models, flips, amps, labels = {}, {}, {}, {}
    for m in methods:
        try:
            setup = prepare_evaluation(out / m, ds, device=device, prefer="last")
            # as the run evaluated (the demo: no flip, fp32 on CPU)
            models[m], flips[m], amps[m] = setup.model, setup.flip, setup.amp_dtype
            labels[m] = checkpoint_description(setup.state)
        except CheckpointError as e:
            tell(f"analysis: no weights for `{m}` ({e}); skipped")
    if not models:
        return {"figures": figures, "sections": sections, "numbers": numbers}
    timings: dict[str, float] = {}
    proto = ds.protocols["test"]
    cache = ImageCache()
    cache.preload([s.path for n in proto.split_names for s in ds.split(n)])
    common = dict(height=height, width=width, device=device, batch_size=64, workers=0)
    main_m = "rlq" if "rlq" in models else list(models)[-1]
    spec = proto.spec(proto.selection)
    # robustness, LQ clusters and gender re-extract features per model: only for these (bounded demo cost)
    focus = [m for m in dict.fromkeys((*_DEMO_FOCUS_METHODS, main_m)) if m in models] or list(models)
    feats_by_model: dict[str, dict[str, Any]] = {}

    def feats_of(m: str) -> dict[str, Any]:
        if m not in feats_by_model:
            feats_by_model[m] = extract_protocol_features(models[m], ds, proto, cache=cache, flip=flips[m],
                                                          amp_dtype=amps[m], **common)
        return feats_by_model[m]

    def robustness() -> None:
        # The Base Model and the main method (bounded cost), on every query (the numbers of the results table),
        # queries degraded (rlq's protocol, docs/method.md §12), clean features shared with the other analyses.
        rob = {}
        for m in focus:
            clean = {n: f for n, (f, _) in feats_of(m).items()}
            rob[m] = robustness_sweep(models[m], ds, artifacts=_DEMO_ROBUSTNESS_ARTIFACTS, levels=_DEMO_ROBUSTNESS_LEVELS,
                                      seed=seed, cache=cache, flip=flips[m], amp_dtype=amps[m], clean_features=clean,
                                      checkpoint=f"{labels[m]}, {_DEMO_CHECKPOINT}", **common)
        numbers["robustness"] = rob
        first = next(iter(rob.values()))
        n_q = first["num_queries"].get(proto.selection)
        skipped = [x for x in range(max(_DEMO_ROBUSTNESS_LEVELS) + 1) if x not in _DEMO_ROBUSTNESS_LEVELS]
        sections["Robustness per artifact (rlq's own protocol, docs/method.md §12)"] = (
            robustness_markdown(rob) + f"\n\nModels: {', '.join(f'`{m}` ({labels[m]})' for m in rob)}: the weights "
            f"after the last epoch, which the results table reports as test@last, so level 0 is its number. Every "
            f"query is degraded at every point ({n_q:,} {proto.selection} queries), the gallery stays clean; bands: "
            f"95 % percentile bootstrap over queries ({first['intervals']['resamples']} resamples). The demo runs "
            f"levels {', '.join(map(str, _DEMO_ROBUSTNESS_LEVELS))} of rlq's grid (it skips level(s) "
            f"{', '.join(map(str, skipped)) or 'none'} to fit its time budget); `rlq analyze robustness` runs all.")
        if plots:
            plot_robustness(rob, figs / "robustness.png", metric="rank1")
            figures["robustness"] = "figures/robustness.png"

    def lq_clusters() -> None:
        gal = list(ds.split(spec.gallery))
        if len(gal) > _DEMO_LQ_IMAGES:  # bounded cost: a seeded subset
            keep = np.sort(np.random.default_rng(seed).choice(len(gal), size=_DEMO_LQ_IMAGES, replace=False))
            gal = [gal[i] for i in keep]
        tsne_for = [main_m]  # one t-SNE picture (the main method's); the numbers cover every focus model
        lqc = {}
        for m in focus:
            model = models[m]
            png = figs / f"tsne_{m}.png" if (plots and m in tsne_for) else None
            lqc[m] = lq_cluster_diagnostics(model, [s.path for s in gal], [s.pid for s in gal], artifact_mix=ds.name,
                                            seed=seed, tsne=png is not None, out_png=png, max_tsne_points=800,
                                            model_name=m, flip=flips[m], **common)
            if png is not None:
                figures[f"tsne_{m}"] = f"figures/{png.name}"
        numbers["lq_clusters"] = lqc
        sections["LQ clustering (paper Fig. 7)"] = lq_clusters_markdown(lqc)

    def buckets() -> None:
        quality = root / "quality.csv"
        if not quality.is_file():
            return
        table = read_quality_csv(quality)
        qsamples = [s for sp in proto.specs for s in ds.split(sp.query)]
        b = {}
        for coarse in (True, False):
            bk = quality_buckets(qsamples, table, coarse=coarse)
            b["coarse" if coarse else "fine"] = protocol_bucket_metrics(feats_of(main_m), proto, bk,
                                                                        order=quality_order(bk.values()))
        numbers["quality_buckets"] = {main_m: b}
        sel = proto.selection
        sections[f"Query quality buckets (`{main_m}`, SynthCC quality.csv)"] = (
            buckets_markdown({sel: b["coarse"][sel]}) + "\n" + buckets_markdown({sel: b["fine"][sel]}))
        if plots:
            plot_buckets({sel: b["fine"][sel]}, figs / "quality_buckets.png",
                         title=f"{main_m}: query quality buckets (SynthCC quality.csv)")
            figures["quality_buckets"] = "figures/quality_buckets.png"

    def gender() -> None:
        gender_csv = next(iter(sorted(root.glob("*_test_Gender.csv"))), None)
        if gender_csv is None:
            return
        qs, gs = ds.split(spec.query), ds.split(spec.gallery)
        gmap, _ = load_test_gender(gender_csv, list(qs) + list(gs))
        g = {}
        for m in focus:
            f = feats_of(m)
            g[m] = gender_awareness(
                f[spec.query][0], f[spec.gallery][0], [s.pid for s in qs], [s.pid for s in gs], gmap,
                q_camids=[s.camid for s in qs], g_camids=[s.camid for s in gs], q_clothes_ids=[s.clothes_id for s in qs],
                g_clothes_ids=[s.clothes_id for s in gs], mode=spec.mode)
        numbers["gender"] = g
        sections["Gender of top-1 mistakes (paper Fig. 8 right)"] = gender_markdown(g)

    def ranked() -> None:
        # The main method's hardest queries, and for each focus model (the Base Model too) what its correct rank-1
        # answers look like (a seeded draw among them, labelled as such): what fails, and whether it matches people
        # across outfits.
        numbers["ranked"], texts = {}, []
        for m, order, suffix in [(main_m, "worst", ""), *((m, "hits", "_hits") for m in focus)]:
            f, name = feats_of(m), f"ranked_{m}{suffix}"
            rl = rank_list_figure(f[spec.query][1], f[spec.gallery][1], query_feats=f[spec.query][0],
                                  gallery_feats=f[spec.gallery][0], mode=spec.mode, order=order, num_queries=6, top_k=8,
                                  seed=seed, out_png=figs / f"{name}.png", out_html=figs / f"{name}.html",
                                  label=f"{spec.name} ({m})")
            figures[name] = f"figures/{name}.png"
            numbers["ranked"].setdefault(m, {})[order] = {k: rl[k] for k in ("order_text", "legend", "rows")}
            texts.append(f"`{figures[name]}`: {rl['order_text']}. Static page: [figures/{name}.html](figures/{name}.html).")
        sections["Ranked results (paper Fig. 9)"] = "\n\n".join([*texts, rl["legend"] + "."])

    for name, part in (("robustness per artifact", robustness), ("LQ clusters", lq_clusters),
                       ("quality buckets", buckets), ("gender of mistakes", gender), ("ranked results", ranked)):
        tell(f"analysis: {name} ...")
        t0 = time.perf_counter()
        try:
            part()
            timings[name] = round(time.perf_counter() - t0, 1)
        except Exception as e:  # one failing analysis must not cost the demo its report after training
            logger.exception("demo analysis %r failed", name)
            tell(f"analysis: {name} failed ({type(e).__name__}: {e}); continuing")
            sections[f"{name} (failed)"] = f"`{type(e).__name__}: {e}`"
    numbers["seconds"] = timings
    return {"figures": figures, "sections": sections, "numbers": numbers}
