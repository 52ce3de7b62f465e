"""Training and model commands: `rlq train`, `rlq eval` (checkpoints and features), `rlq extract`, `rlq model-info`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..methods.registry import get_method, method_names
from ._common import (
    app,
    batch_size_option,
    bootstrap_seed_option,
    camera_rule_option,
    console,
    device_option,
    dry_run_option,
    far_option,
    flip_option,
    human,
    json_option,
    lq_seed_option,
    out,
    prefer_option,
    protocol_option,
    rerank_k1_option,
    rerank_k2_option,
    rerank_lambda_option,
    rerank_option,
    rerank_settings,
    resamples_option,
    sample_seed_option,
    unknown_fraction_option,
    workers_option,
    write_json,
)


def _methods_text() -> str:
    """The registered methods with their one-line descriptions (rlq.methods; a plain table, no torch)."""
    return "Methods (`method=`): " + "; ".join(f"{m}: {get_method(m).description}" for m in method_names()) + "."


def load_run_spec(config: str | None, overrides: list[str]):
    """YAML preset (+ _base_ chain) + key=value overrides -> validated RunSpec (the config edge)."""
    from omegaconf import OmegaConf

    from ..config import load_config
    from ..engine.validate import validate_spec
    from ..spec import RunSpec

    cfg = load_config(config, overrides, schema=RunSpec)
    spec = OmegaConf.to_object(cfg)
    validate_spec(spec)
    return spec


@app.command("train", epilog=_methods_text())
def train(
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. data.root=/data/LTCC_ReID train.epochs=60"),
    config: str | None = typer.Option(None, "--config", "-c", help="YAML preset, e.g. configs/ltcc/rlq.yaml (see `rlq presets`)"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in `output` from its newest good checkpoint (an error when it has none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="If `output` holds a run, move it aside to <output>.old-<timestamp> and start anew."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count unparsable dataset files instead of refusing them (data.skip_bad=true)."),
    dry_run: bool = dry_run_option(),
) -> None:
    """Train a method (listed below) on a dataset.

    One process on CPU or one GPU; several GPUs with `torchrun --nproc_per_node N -m rlq.cli train ...`.
    Writes config.yaml, meta.json, metrics.jsonl, TensorBoard logs, checkpoints/ and results.json into `output`.
    An `output` folder that already holds a run is refused unless --resume or --overwrite is given.

    Config sections: method, preset, role, output, data.*, model.*, loss.*, optim.*, train.*, tad.*, eval.*;
    `rlq presets --keys [SECTION]` lists every key with its default.
    """
    spec = load_run_spec(config, [*(overrides or []), *(["data.skip_bad=true"] if skip_bad else [])])
    if dry_run:
        _print_spec(spec)
        return
    from ..engine.recipe import run_training

    report = run_training(spec, resume=resume, overwrite=overwrite)
    if _is_rank0():
        _print_report(report)
        console.print(f"run folder: {spec.output}")


def _print_spec(spec) -> None:
    """`--dry-run`: the resolved config as YAML on stdout (what the run would write to config.yaml)."""
    import dataclasses

    import yaml

    out.print(yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False), highlight=False, markup=False, soft_wrap=True)


def _init_world(device: str):
    """(DistInfo, device): under torchrun the process group (timeout: env RLQ_DIST_TIMEOUT_MIN, default 60 min)
    and this rank's device; else one process. The group is destroyed at exit."""
    import atexit

    from ..runtime.distributed import cleanup_distributed, init_distributed

    world, dev = init_distributed(device)
    if world.enabled:
        atexit.register(cleanup_distributed)
    return world, dev


def _is_rank0() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _print_report(report: dict) -> None:
    from rich.table import Table

    if not any(report.get(k) for k in ("test@best_test", "test@last", "test@best_val")):
        out.print("no evaluation: the dataset has no query/gallery split (the last checkpoint is the model)")
        return

    t = Table(title="results (%)")
    t.add_column("selection")
    t.add_column("epoch")
    t.add_column("evaluation")
    t.add_column("R1", justify="right")
    t.add_column("mAP", justify="right")
    for label in ("test@best_test", "test@last", "test@best_val"):
        r = report.get(label)
        if not r:
            continue
        for name, m in r["results"].items():
            t.add_row(label, str(r["epoch"]), name, _pct_ci(m, "rank1"), _pct_ci(m, "mAP"))
    out.print(t)
    if any("rank1_ci" in m for r in report.values() if isinstance(r, dict) for m in (r.get("results") or {}).values()):
        console.print("R1 and mAP: value [95 % percentile bootstrap interval over queries]")


def _pct_ci(m: dict, k: str) -> str:
    """``41.2 [38.1, 44.0]`` (percent) when the result has an interval, else the value."""
    from ..report_format import pct

    def cell(x: float | None) -> str:  # None: undefined (no query with a match), null in results.json
        return "n/a" if x is None or x != x else pct(x)

    iv = m.get(f"{k}_ci")
    return cell(m.get(k)) + (f" [{cell(iv[0])}, {cell(iv[1])}]" if iv else "")


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder, a run folder (uses checkpoints/best, else the newest), "
                                      "or a features file (.npz from `rlq extract`)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset name (ltcc, prcc, last, deepchange, "
                                          "celebreid, vcclothes, synthcc, manifest). Default for a run's checkpoint: "
                                          "the dataset the run recorded (its data.dataset); required with a features file."),
    root: Path | None = typer.Option(None, "--root", "-r", help="Dataset root (for `manifest`: the CSV file). "
                                        "Default for a run's checkpoint: the root the run recorded (its data.root); "
                                        "with a features file only for `manifest`."),
    split: str = protocol_option(),
    height: int | None = typer.Option(None, help="Input height (default: the checkpoint's)."),
    width: int | None = typer.Option(None, help="Input width (default: the checkpoint's)."),
    batch_size: int = batch_size_option(),
    workers: int = workers_option(),
    device: str = device_option(),
    camera_rule: str = camera_rule_option(),
    flip: bool | None = flip_option(),
    json_out: Path | None = json_option(),
    prefer: str = prefer_option(),
    lq: str | None = typer.Option(
        None, "--lq",
        help="Evaluate under the authors' LQ test protocol (their --LR-MODE/--LR-TYPE, docs/method.md §12): "
             "official or official:KIND, KIND = mix (the dataset's training mix, the default), pixelation, gaussian "
             "or motion. Degrades query and gallery images at original resolution, seeded by --lq-seed; "
             "R1 and mAP with 95 % bootstrap intervals, as clean."),
    seed: int = lq_seed_option(),
    resamples: int = resamples_option(),
    ci_seed: int = bootstrap_seed_option(),
    quality_csv: Path | None = typer.Option(None, "--quality-csv", help="Quality table (Category,Image,Artifact,Severity,Param) "
                                               "for clean / LQ query rows (default: <root>/quality.csv when present)."),
    per_query: Path | None = typer.Option(None, "--per-query", help="Also write per-query results (.npz) here, for paired "
                                             "comparisons (`rlq compare`)."),
    rerank: bool = rerank_option(),
    rerank_k1: int = rerank_k1_option(),
    rerank_k2: int = rerank_k2_option(),
    rerank_lambda: float = rerank_lambda_option(),
    open_set: bool = typer.Option(False, "--open-set", help="Open-set identification instead (docs/open-set.md): some "
                                  "query identities lose their gallery images; DIR@FAR (rank-1 correct and below the "
                                  "threshold) with the threshold set on those unknowns, the curve over FAR targets, "
                                  "and DIR / FAR at the run's calibrated thresholds when `rlq calibrate` made them."),
    far: str = far_option(),
    unknown_fraction: float = unknown_fraction_option(),
    open_seed: int = sample_seed_option(),
) -> None:
    """Evaluate a checkpoint, or saved features (.npz), on a dataset's protocol (every mode it reports), with 95 %
    bootstrap intervals; clean, or under --lq (the authors' LQ test protocol).

    A run's checkpoint knows its dataset and root (the run's data.dataset / data.root): --dataset and --root
    override them. With a features file only --dataset, --root (manifest), --protocol, --device, --json and the
    interval options apply. Under torchrun the ranks share a checkpoint's extraction; rank 0 prints and writes.
    """
    if checkpoint.suffix == ".npz" and open_set:
        raise typer.BadParameter(f"--open-set evaluates a checkpoint or run, not the features file {checkpoint}")
    if checkpoint.suffix == ".npz":  # saved features, detected by the path
        from .data import evaluate_features_cmd

        if dataset is None:
            raise typer.BadParameter(f"evaluating the features file {checkpoint} needs --dataset NAME (the dataset "
                                     "whose protocol to apply)")

        evaluate_features_cmd(checkpoint, dataset, root, split, device=None if device == "auto" else device,
                              json_out=json_out, resamples=resamples, ci_seed=ci_seed, quality_csv=quality_csv,
                              per_query=per_query, rerank=rerank_settings(rerank, rerank_k1, rerank_k2, rerank_lambda))
        return
    from ..engine.evaluate import evaluate_model, prepare_evaluation
    from ..evaluation.bootstrap import ci_info
    from ..evaluation.protocols import format_table

    if open_set and lq is not None:
        raise typer.BadParameter("--open-set is not available with --lq; evaluate one or the other")
    if lq is not None and rerank:
        raise typer.BadParameter("--rerank is not available with --lq (the authors' LQ protocol ranks by cosine)")
    kind = _lq_kind(lq)
    _check_resamples(resamples)
    rr = rerank_settings(rerank, rerank_k1, rerank_k2, rerank_lambda)
    world, dev = _init_world(device)  # under torchrun the ranks share the extraction; rank 0 reports and writes
    # Evaluate as the run did: its eval.flip and its precision (the official/paper/default presets: fp32,
    # train.amp=off); a checkpoint without a run spec flips (docs/method.md §2.5) and keeps bf16 on CUDA.
    setup = prepare_evaluation(checkpoint, dataset, root=root, protocol=split, device=dev, prefer=prefer, flip=flip,
                               height=height, width=width, camera_rule=camera_rule)
    state, h, w, flip = setup.state, setup.height, setup.width, setup.flip
    if open_set:
        feats = setup.extract(batch_size=batch_size, workers=workers, progress=world.is_main, world=world)
        if world.is_main:
            _eval_open_set(feats, setup.protocol, state, far, unknown_fraction, open_seed, flip, setup.amp_dtype,
                           resamples, ci_seed, rr, json_out, setup.dataset_name, split)
        return
    ev = evaluate_model(setup, batch_size=batch_size, workers=workers, rerank=rr, lq=kind, lq_seed=seed,
                        quality_csv=quality_csv, bootstrap_resamples=resamples, bootstrap_seed=ci_seed,
                        per_query=per_query if kind is None else None, world=world, progress=world.is_main)
    if ev is None:  # another rank than 0
        return
    shown = human(json_out)
    head = {"checkpoint": state["checkpoint"], "dataset": setup.dataset_name, "protocol": split, "flip": flip}
    if ev.lq is not None:
        name = ev.lq["name"]
        shown.print(f"{name}: {ev.lq['label']}, LQ seed {seed}", highlight=False, markup=False, soft_wrap=True)
        shown.print(format_table(ev.results, selection=setup.protocol.selection), soft_wrap=True, markup=False,
                    highlight=False)
        console.print(_ci_note(resamples, ci_seed, groups=False))
        console.print(f"checkpoint: {state['checkpoint']} ({state.get('method')}, input {h}x{w}, flip {'on' if flip else 'off'})")
        write_json(json_out, {**head, "lq_protocol": name, "protocol_label": ev.lq["label"],
                              "definition": ev.lq["definition"], "seed": seed, "mix": ev.lq["mix"], name: ev.summary(),
                              "confidence_intervals": ci_info(resamples, ci_seed)})
        return
    shown.print(format_table(ev.results, selection=setup.protocol.selection), soft_wrap=True, markup=False,
                highlight=False)
    console.print(_ci_note(resamples, ci_seed))
    console.print(f"checkpoint: {state['checkpoint']} ({state.get('method')}, input {h}x{w}, flip {'on' if flip else 'off'}); "
                  f"dataset: {setup.dataset_name} at {setup.root}", highlight=False, markup=False, soft_wrap=True)
    if per_query:
        console.print(f"wrote {per_query}")
    write_json(json_out, {**head, "results": ev.summary(), "confidence_intervals": ci_info(resamples, ci_seed)})


def _lq_kind(lq: str | None) -> str | None:
    """The official LQ kind of `--lq` (rlq.lq.official_test), or None."""
    if lq is None:
        return None
    from ..errors import ConfigError
    from ..lq.official_test import parse_lq_option

    try:
        return parse_lq_option(lq)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise typer.BadParameter(f"--resamples must be >= 1 (1000 for the reported intervals), got {resamples}")


def _eval_open_set(feats, protocol, state, far, unknown_fraction, seed, flip, amp, resamples, ci_seed, rr, json_out,
                   dataset, split) -> None:
    """`rlq eval --open-set`: DIR@FAR rows per evaluation (docs/open-set.md), and at the calibrated thresholds."""
    from rich.table import Table

    from ..deploy.calibration import load_calibration, settings_mismatch
    from ..deploy.search import weights_sha256
    from ..evaluation.bootstrap import ci_info
    from ..evaluation.open_set import evaluate_open_set, parse_fars
    from ..runtime.device import precision_name

    fars = parse_fars(far)
    cal = load_calibration(state["checkpoint"])
    cal_note = "no calibration beside the checkpoint (`rlq calibrate RUN` makes one)"
    calibration = None
    if cal is not None:
        diff = settings_mismatch(cal, flip, precision_name(amp), rr, weights_sha256(state["checkpoint"]))
        if diff:
            cal_note = f"calibration {cal['path']} not used: {'; '.join(diff)}"
        else:
            calibration = ([r["far_target"] for r in cal["thresholds"]],
                           [float("inf") if r["threshold"] is None else r["threshold"] for r in cal["thresholds"]])
            cal_note = f"calibrated rows: thresholds of {cal['path']} ({cal['split']['source']})"
    res = evaluate_open_set(feats, protocol, fars, unknown_fraction=unknown_fraction, seed=seed, rerank=rr,
                            num_resamples=resamples, ci_seed=ci_seed, calibration=calibration)

    def pct(x, ci=None):
        s = "n/a" if x is None or x != x else f"{100 * x:.1f}"
        return s + ("" if not ci else f" [{pct(ci[0])}, {pct(ci[1])}]")

    t = Table(title=f"open-set identification ({dataset} {split}; % with 95 % intervals)")
    for col in ("evaluation", "threshold from", "target FAR", "threshold (distance <)", "FAR (FPIR)", "DIR"):
        t.add_column(col)
    for name, r in res.items():
        for src, rows in (("these unknowns", r["rows"]), ("calibration", r.get("calibrated") or [])):
            for row in rows:
                th = row["threshold"]
                t.add_row(name, src, f"{row['far_target']:g}", "inf" if th == float("inf") else f"{th:.6g}",
                          pct(row["far"], row["far_ci"]), pct(row["dir"], row["dir_ci"]))
    human(json_out).print(t)
    for name, r in res.items():
        console.print(f"{name}: {r['num_known']} known and {r['num_unknown']} unknown queries ({len(r['unknown_ids'])} "
                      f"identities made unknown, --unknown-fraction {unknown_fraction}, --sample-seed {seed}); "
                      f"{r['num_excluded']} queries with only junk left out", highlight=False, markup=False,
                      soft_wrap=True)
    console.print(f"{cal_note}; DIR: known queries with a correct rank-1 below the threshold; FAR: unknown queries "
                  f"accepted; value [95 % percentile bootstrap interval over queries, {resamples} resamples, seed {ci_seed}; "
                  "thresholds set on these unknowns are chosen again in every resample]", highlight=False, markup=False,
                  soft_wrap=True)
    write_json(json_out, {"checkpoint": state["checkpoint"], "dataset": dataset, "protocol": split, "flip": flip,
                          "precision": precision_name(amp), "rerank": None if rr is None else rr.as_dict(),
                          "calibration": None if cal is None else cal["path"], "calibration_note": cal_note,
                          "open_set": res, "confidence_intervals": ci_info(resamples, ci_seed)})


def _ci_note(resamples: int, seed: int, groups: bool = True) -> str:
    return (f"R1 and mAP: value [95 % percentile bootstrap interval over queries, {resamples} resamples, seed {seed}]"
            + ("; <name>/clean and <name>/LQ: queries of that quality against the whole gallery" if groups else ""))


def _save_per_query(path: Path, res: dict, extra: dict) -> None:
    from ..evaluation.bootstrap import PerQuery, save_per_query

    save_per_query(path, {n: PerQuery.from_result(r) for n, r in res.items()}, extra=extra)
    console.print(f"wrote {path}")


@app.command("extract")
def extract_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder or run folder."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Output features file (.npz)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset name (with --root)."),
    root: Path | None = typer.Option(None, "--root", "-r", help="Dataset root."),
    images: Path | None = typer.Option(None, "--images", help="A folder of images (searched recursively) instead of a dataset."),
    splits: str | None = typer.Option(None, help="Comma-separated splits to extract (default: the test protocol's)."),
    batch_size: int = batch_size_option(),
    workers: int = typer.Option(2, help="Loader workers."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    prefer: str = typer.Option("best", help="In a run folder: best, best_val, or last."),
    flip: bool | None = flip_option(),
) -> None:
    """Extract L2-normalised features (docs/method.md §2.5) for a dataset's splits or a folder of images, as the
    run was evaluated (its eval.flip and precision, so `rlq eval FEATURES.npz` gives `rlq eval RUN`'s numbers);
    the file's meta records the flip and the precision.

    Under torchrun the ranks share the images (contiguous blocks of whole batches); rank 0 writes the file."""
    from ..deploy.search import model_identity
    from ..engine.model_io import load_model_checkpoint, run_eval_settings
    from ..engine.validate import dataset_options
    from ..evaluation.extract import extract_features, extract_protocol_features
    from ..evaluation.protocols import save_features
    from ..runtime.device import precision_name

    if (images is None) == (dataset is None):
        raise typer.BadParameter("give either --images DIR or --dataset NAME --root DIR")
    world, dev = _init_world(device)
    model, state = load_model_checkpoint(checkpoint, device=dev, prefer=prefer)
    h, w = state.get("input_size", [384, 192])
    run_flip, amp = run_eval_settings(state, dev)  # as `rlq eval RUN` (docs/method.md §2.5)
    flip = run_flip if flip is None else flip
    meta = {"checkpoint": str(Path(state["checkpoint"]).resolve()), "method": state.get("method"), "input_size": [h, w],
            **model_identity(state["checkpoint"], (h, w), flip=flip, precision=precision_name(amp))}  # weights by sha256
    if images is not None:
        from ..data.images import image_files
        from ..data.records import Sample

        paths = image_files(images)
        if not paths:
            raise typer.BadParameter(f"no images under {images}")
        f = extract_features(model, paths, h, w, device=dev, batch_size=batch_size, workers=workers, amp_dtype=amp,
                             flip=flip, progress=world.is_main, desc="extract images", world=world)
        if not world.is_main:
            return
        samples = [Sample(p, -1, -1, -1, str(Path(p).relative_to(images))) for p in paths]
        save_features(out_path, {"images": f}, {"images": samples}, {**meta, "images_root": str(Path(images).resolve())})
    else:
        from ..data.datasets import load_dataset

        if root is None:
            raise typer.BadParameter("--dataset needs --root")
        ds = load_dataset(dataset, root, **dataset_options(dataset))
        names = splits.split(",") if splits else list(ds.protocols["test"].split_names)
        got = extract_protocol_features(model, ds, splits=names, height=h, width=w, device=dev, batch_size=batch_size,
                                        workers=workers, flip=flip, amp_dtype=amp, progress=world.is_main, world=world)
        if not world.is_main:
            return
        save_features(out_path, {n: f for n, (f, _) in got.items()}, {n: ss for n, (_, ss) in got.items()},
                      {**meta, "dataset": dataset, "root": str(root)})
    console.print(f"wrote {out_path} (flip {'on' if flip else 'off'}, {precision_name(amp)})")


@app.command("model-info")
def model_info(
    method: str = typer.Option("bm", help=f"A registered method: {', '.join(method_names())} (`rlq train --help` "
                               "describes them)."),
    num_ids: int = typer.Option(77, help="Train identities C (LTCC 77, PRCC 150, DeepChange 450, LaST 5000)."),
    pose_clusters: int = typer.Option(15, help="Pose clusters K (pose methods)."),
    backbone: str = typer.Option("resnet50", help="resnet50, resnet34, resnet18, mobilenetv2, narrow or tiny."),
    json_out: Path | None = json_option(),
) -> None:
    """Parameter counts per part, at inference, and as paper Table 9 counts them (docs/method.md §2.6)."""
    from ..models import build_model
    from ..models.params import parameter_report

    model = build_model(method=method, num_ids=num_ids, pose_clusters=pose_clusters, backbone=backbone, pretrained="none")
    rep = parameter_report(model)
    rep = {"method": method, "backbone": backbone, "num_ids": num_ids,
           "pose_clusters": pose_clusters if model.has_pose else None, **rep}
    if json_out is not None:
        write_json(json_out, rep, say=True)
        if str(json_out) == "-":
            return
    from rich.table import Table

    t = Table(title=f"{method} / {backbone}, C={num_ids}" + (f", K={pose_clusters}" if model.has_pose else ""))
    t.add_column("part")
    t.add_column("parameters", justify="right")
    for k, v in rep.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(f"{k}.{kk}", f"{vv:,}" if isinstance(vv, int) else str(vv))
        elif isinstance(v, int) and k not in ("num_ids", "pose_clusters"):
            t.add_row(k, f"{v:,}")
    out.print(t)
    out.print(f"Table 9 count: {rep['table9_params'] / 1e6:.1f}M; inference network: {rep['inference_params']:,}")


@app.command("train-teacher")
def train_teacher(
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. data.root=/data/Celeb-reID"),
    config: str = typer.Option("configs/teacher/celeb.yaml", "--config", "-c", help="Teacher recipe preset."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its newest good checkpoint (an error when it has none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="If `output` holds a run, move it aside to <output>.old-<timestamp> and start anew."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count unparsable dataset files instead of refusing them (data.skip_bad=true)."),
    dry_run: bool = dry_run_option(),
) -> None:
    """Train the TAD teacher (docs/method.md §9): a Base Model on Celeb-reID with labels, no recolouring, seed 4,
    200 epochs; its checkpoints carry the teacher-recipe metadata that TAD requires (tad.teacher=RUN)."""
    from ..engine.recipe import run_training

    spec = load_run_spec(config, [*(overrides or []), *(["data.skip_bad=true"] if skip_bad else [])])
    if dry_run:
        _print_spec(spec)
        return
    report = run_training(spec, resume=resume, overwrite=overwrite, role="teacher")
    if _is_rank0():
        _print_report(report)
        console.print(f"teacher run: {spec.output} (use tad.teacher={spec.output})")
