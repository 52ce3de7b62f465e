"""Data commands: `rlq synth`, `rlq frames`, `rlq check-data`, `rlq presets` (and the deprecated `rlq evaluate`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ._common import (
    app,
    bootstrap_seed_option,
    camera_rule_option,
    console,
    device_option,
    human,
    json_option,
    out,
    protocol_option,
    rerank_k1_option,
    rerank_k2_option,
    rerank_lambda_option,
    rerank_option,
    rerank_settings,
    resamples_option,
    seed_option,
    write_json,
)


@app.command("synth")
def synth(
    out_dir: Path = typer.Option(Path("data/synthcc"), "--out", "-o", help="Output folder: new or empty unless --overwrite (written atomically)."),
    preset: str = typer.Option("default", help="tiny (unit tests, seconds), small, or default (the demo's, < 60 s)."),
    seed: int = seed_option(),
    workers: int | None = typer.Option(None, help="Processes (default: all cores); the output does not depend on it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start anew in a folder that holds files: it is moved aside to <name>.old-<timestamp> (nothing is deleted)."),
) -> None:
    """Generate SynthCC: a procedural clothes-changing ReID dataset in the LTCC layout, with keypoints,
    parsing maps, gender labels, per-image quality labels, a clean external split and preview.png."""
    from ..data.synth import generate_synthcc

    info = generate_synthcc(out_dir, preset=preset, seed=seed, workers=workers, progress=True, overwrite=overwrite)
    counts = info.get("counts", {})
    out.print(f"SynthCC `{preset}` (seed {seed}) in {out_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if not isinstance(v, dict)))
    out.print(f"preview: {out_dir / 'preview.png'}; check it with `rlq check-data synthcc {out_dir}`")


@app.command("frames")
def frames(
    videos: Path = typer.Argument(..., metavar="VIDEOS", help="Folder of videos, one subfolder per identity "
                                  "(NTU: <pid>/<action>/<camera>/<video>); any depth below the identity folder."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder of identity folders + manifest.csv: new or empty "
                                 "unless --overwrite (written atomically)."),
    masks: Path | None = typer.Option(None, "--masks", help="Folder of person masks mirroring VIDEOS (an image or a "
                                         "video per video, same relative path); the frame is cropped to the mask's "
                                         "non-zero box. Without it whole frames are kept."),
    height: int = typer.Option(0, "--frame-height", help="Resize each crop to this height (aspect kept); 0 = full "
                               "resolution, the authors' value."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start anew in a folder that holds files: it is moved aside to <name>.old-<timestamp> (nothing is deleted)."),
) -> None:
    """Identity folders from videos, the authors' way (paper Table 8, NTU as the TAD external stream): the middle
    frame of every video, cropped to the person mask when --masks is given, at full resolution by default.
    Writes OUT/<identity>/<video>.png (for `tad.external_dataset=identity_folders`) and OUT/manifest.csv (every
    image a train row, for `configs/teacher/ntu.yaml`)."""
    from tqdm.auto import tqdm

    from ..data.frames import prepare_identity_frames

    bar = tqdm(desc="frames", unit="video", disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        info = prepare_identity_frames(videos, out_dir, masks=masks, height=height, overwrite=overwrite, progress=progress)
    finally:
        bar.close()
    crop = "cropped to the mask" if masks is not None else "whole frames (no --masks)"
    out.print(f"{info['images']} frames of {info['identities']} identities in {out_dir} ({crop}; "
              f"{'full resolution' if not height else f'height {height}'}); manifest: {out_dir / 'manifest.csv'}",
              highlight=False, markup=False, soft_wrap=True)


def _name_and_root(name: str | None, root: Path | None, dataset_opt: str | None,
                   root_opt: Path | None) -> tuple[str, Path]:
    """check-data takes `NAME ROOT` (positional, as before) or `-d NAME -r ROOT` (as every other command)."""
    if dataset_opt is not None and name is not None and root is None and root_opt is None:
        name, root = None, Path(name)  # `check-data -d NAME ROOT`
    if name is not None and dataset_opt is not None and name != dataset_opt:
        raise typer.BadParameter(f"two dataset names: {name!r} and -d {dataset_opt!r}; give one")
    if root is not None and root_opt is not None and root != root_opt:
        raise typer.BadParameter(f"two roots: {root} and -r {root_opt}; give one")
    name, root = name or dataset_opt, root or root_opt
    if name is None or root is None:
        raise typer.BadParameter("give the dataset and its root: `rlq check-data -d NAME -r ROOT` (or `NAME ROOT`)")
    return name, root


@app.command("check-data")
def check_data_cmd(
    name: str | None = typer.Argument(None, metavar="NAME", help="ltcc, prcc, last, deepchange, celebreid, vcclothes, "
                                         "synthcc or manifest (or -d NAME, as in the other commands)."),
    root: Path | None = typer.Argument(None, metavar="ROOT", help="Dataset root (the top folder of its tree; for "
                                          "`manifest`: the CSV file) (or -r ROOT)."),
    dataset_opt: str | None = typer.Option(None, "--dataset", "-d", help="Dataset name (instead of NAME)."),
    root_opt: Path | None = typer.Option(None, "--root", "-r", help="Dataset root (instead of ROOT)."),
    quick: bool = typer.Option(False, "--quick", help="Only read image headers instead of decoding every image."),
    no_images: bool = typer.Option(False, "--no-images", help="Do not open images at all (layout and names only)."),
    max_list: int = typer.Option(10, help="How many bad files to list before counting."),
    camera_rule: str = camera_rule_option(),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Judge as `rlq train --skip-bad` would: unparsable files are skipped, not fatal."),
) -> None:
    """Check a dataset folder: layout (printing the expected tree when wrong), counts per split against the
    published statistics, unparsable names and unreadable images. The verdict is what `rlq train` (with the
    same --skip-bad) will do: exits non-zero when training would refuse the dataset."""
    from ..data.check import check_data, format_report
    from ..data.datasets import canonical_name

    name, root = _name_and_root(name, root, dataset_opt, root_opt)
    opts = {"camera_rule": camera_rule} if canonical_name(name) == "celebreid" else {}
    rep = check_data(name, root, verify_images=not no_images, full_decode=not quick, max_list=max_list, progress=True,
                     skip_bad=skip_bad, **opts)
    out.print(format_report(rep), highlight=False, markup=False)
    if not rep.usable:
        raise typer.Exit(code=1)


def evaluate_features_cmd(features: Path, dataset: str, root: Path | None, protocol_name: str = "test",
                          max_rank: int = 50, device: str | None = None, json_out: Path | None = None,
                          resamples: int = 1000, ci_seed: int = 0, quality_csv: Path | None = None,
                          per_query: Path | None = None, rerank=None) -> None:
    """`rlq eval FEATURES.npz`: every mode of a dataset's protocol on saved features (CMC + mAP, CAL semantics,
    95 % bootstrap intervals)."""
    from ..data.datasets import load_dataset, standard_protocols
    from ..data.side_tables import quality_groups
    from ..evaluation.bootstrap import ci_info, with_intervals
    from ..evaluation.protocols import evaluate_features_file, format_table, summarize
    from .train import _check_resamples, _ci_note, _save_per_query

    if root is not None:
        protocols = load_dataset(dataset, root).protocols
    else:
        protocols = standard_protocols(dataset)
    if protocol_name not in protocols:
        raise typer.BadParameter(f"dataset {dataset} has no {protocol_name!r} protocol; it has {sorted(protocols)}")
    protocol = protocols[protocol_name]
    res = evaluate_features_file(features, protocol, max_rank=max_rank, device=device, rerank=rerank)
    groups = quality_groups(".", quality_csv) if quality_csv is not None else None
    _check_resamples(resamples)
    res = with_intervals(res, groups=groups, source=str(quality_csv), num_resamples=resamples, seed=ci_seed)
    human(json_out).print(format_table(res, selection=protocol.selection), soft_wrap=True, markup=False, highlight=False)
    console.print(_ci_note(resamples, ci_seed))
    if per_query:
        _save_per_query(per_query, res, {"features": str(features), "dataset": dataset, "protocol": protocol_name})
    write_json(json_out, {"features": str(features), "dataset": dataset, "protocol": protocol_name,
                          "results": summarize(res), "confidence_intervals": ci_info(resamples, ci_seed)}, say=True)


@app.command("evaluate", hidden=True)
def evaluate_cmd(
    features: Path = typer.Argument(..., help="Features file (.npz) written by `rlq extract`."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset whose protocol to apply."),
    root: Path | None = typer.Option(None, "--root", "-r", help="Only for `manifest` (its protocol lives next to the CSV)."),
    protocol_name: str = protocol_option(),
    max_rank: int = typer.Option(50, help="CMC length."),
    device: str = device_option(),
    json_out: Path | None = json_option(),
    resamples: int = resamples_option(),
    ci_seed: int = bootstrap_seed_option(),
    quality_csv: Path | None = typer.Option(None, "--quality-csv", help="Quality table (Category,Image,Artifact,Severity,Param, "
                                               "e.g. SynthCC's quality.csv): adds clean / LQ query rows."),
    per_query: Path | None = typer.Option(None, "--per-query", help="Also write per-query results (.npz) here, for paired "
                                             "comparisons (`rlq compare`)."),
    rerank: bool = rerank_option(),
    rerank_k1: int = rerank_k1_option(),
    rerank_k2: int = rerank_k2_option(),
    rerank_lambda: float = rerank_lambda_option(),
) -> None:
    """Deprecated: use `rlq eval FEATURES.npz --dataset NAME` (same options)."""
    console.print("[yellow]`rlq evaluate` is deprecated: use `rlq eval FEATURES.npz --dataset NAME` "
                  "(it takes a checkpoint, a run folder or a features file)[/yellow]")
    evaluate_features_cmd(features, dataset, root, protocol_name, max_rank, None if device == "auto" else device,
                          json_out, resamples, ci_seed,
                          quality_csv, per_query, rerank_settings(rerank, rerank_k1, rerank_k2, rerank_lambda))


@app.command("presets")
def presets(
    filter_: str | None = typer.Argument(None, metavar="FILTER", help="Only presets whose path contains this "
                                            "(with --keys: only keys that contain it, e.g. tad or data.root)."),
    keys: bool = typer.Option(False, "--keys", help="List every config key (section.key) with its type, default and "
                              "meaning instead of the presets."),
) -> None:
    """List the shipped YAML presets (use with `rlq train --config configs/<preset>`), or with --keys every config key.

    A preset names its parents in `_base_` (merged first, in order): a path relative to the file, or a shipped
    preset such as `synthcc/bm.yaml`. Any key can be overridden on the command line: `rlq train ... train.epochs=5`.
    """
    from ..config import PACKAGE_CONFIGS

    if keys:
        from ..config import schema_keys
        from ..spec import RunSpec

        rows = [r for r in schema_keys(RunSpec) if not filter_ or filter_ in r["key"]]
        if not rows:
            raise typer.BadParameter(f"no config key contains {filter_!r}; `rlq presets --keys` lists them all")
        width = max(len(r["key"]) for r in rows)
        for r in rows:
            default = r["default"] if isinstance(r["default"], str) else json.dumps(r["default"])
            note = f"  # {r['help']}" if r["help"] else ""
            out.print(f"{r['key']:{width}s} = {default!s:14s} ({r['type']}){note}", highlight=False, markup=False,
                      soft_wrap=True)
        return
    for p in sorted(PACKAGE_CONFIGS.rglob("*.yaml")):
        rel = p.relative_to(PACKAGE_CONFIGS).as_posix()
        if p.name.startswith("_") or rel.startswith(("_base_/", "datasets/", "methods/")) or (filter_ and filter_ not in rel):
            continue
        first = p.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        out.print(f"configs/{rel:38s} {first}", highlight=False, markup=False, soft_wrap=True)
