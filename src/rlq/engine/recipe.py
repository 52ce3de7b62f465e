"""Assemble a training run from a typed :class:`~rlq.spec.RunSpec`: datasets and side inputs,
loaders, model, teacher, method, evaluator and trainer; then train.

This is the glue the CLI calls after turning YAML into a RunSpec; from Python, build a RunSpec (or call
the builders below with explicit arguments) and call :func:`run_training`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..data.datasets import canonical_name, load_dataset
from ..data.loading import ExternalSet, ImageCache, TrainSet
from ..data.recolor import PALETTES, palette_for
from ..data.records import Dataset, Protocol
from ..data.samplers import PKSampler
from ..data.side_tables import build_side_inputs, default_side_paths, quality_groups
from ..errors import CheckpointError, ConfigError
from ..evaluation.bootstrap import ci_info
from ..io import atomic_write_json, atomic_write_text
from ..methods.registry import get_method
from ..models import build_model
from ..runtime.device import amp_mode, precision_name
from ..runtime.distributed import DistInfo, cleanup_distributed, init_distributed
from .checkpoint import read_checkpoint, resolve_checkpoint
from .run_dir import check_run_folder
from ..spec import TEACHER_VARIANTS, RunSpec, value_problems
from .trainer import AMP_DTYPES, LoaderSpec, Trainer

__all__ = [
    "run_training",
    "validate_spec",
    "load_model_checkpoint",
    "load_teacher",
    "build_method",
    "make_evaluator",
    "per_query_path",
    "run_per_query",
    "dataset_options",
    "amp_mode",
    "run_eval_settings",
    "precision_name",
    "checkpoint_description",
]

log = logging.getLogger(__name__)

def validate_spec(spec: RunSpec) -> None:
    """Reject bad values and impossible combinations before any work starts.

    First every field against its declared choices, pattern or range (engine/spec.py metadata; all the bad values
    are named in one line; ``method`` must be registered, rlq.methods), then the combinations, by what the method's
    registry entry needs."""
    problems = value_problems(spec)
    if problems:
        raise ConfigError("; ".join(problems))
    d, t = spec.data, spec.tad
    entry = get_method(spec.method)
    if d.batch_size % d.num_instances:
        raise ConfigError(f"data.batch_size={d.batch_size} is not divisible by data.num_instances={d.num_instances}")
    if entry.needs_external:
        if t.external_dataset != "folder" and t.external_batch_size % t.external_num_instances:
            raise ConfigError(
                f"tad.external_batch_size={t.external_batch_size} is not divisible by tad.external_num_instances={t.external_num_instances}"
            )
        if entry.needs_teacher and t.variant in TEACHER_VARIANTS and not t.teacher:
            raise ConfigError(f"method {spec.method!r} with TAD variant {t.variant!r} needs tad.teacher=CHECKPOINT (a Base Model "
                              "trained on the external data: `rlq train --config configs/teacher/celeb.yaml`)")
        if t.variant != "target_pairs" and not t.external_root:
            raise ConfigError(f"method {spec.method!r} needs tad.external_root (the external HQ images, e.g. Celeb-reID)")
    auto_side = canonical_name(d.dataset) == "synthcc"  # SynthCC carries its own side inputs
    if entry.parts.pose_branch and not d.pose_csv and not auto_side:
        raise ConfigError(f"method {spec.method!r} has a pose branch but data.pose_csv is not set; make one with "
                          "`rlq poses cluster` (or use the authors' LTCC_Pose_Cluster.csv)")
    if entry.parts.gender_head and not d.gender_csv and not auto_side:
        raise ConfigError(f"method {spec.method!r} has a gender head but data.gender_csv is not set "
                          "(`rlq gender sheet` makes a template for a new dataset)")
    if d.recolor and not d.parsing_root and not auto_side and canonical_name(d.dataset) != "manifest":
        raise ConfigError("clothes recolouring (data.recolor=true) needs data.parsing_root (SCHP LIP maps, or "
                          "`rlq parse estimate`); or set data.recolor=false")


def run_eval_settings(state: dict[str, Any], device: torch.device) -> tuple[bool, torch.dtype | None]:
    """How a checkpoint's own run evaluated: ``(flip, autocast dtype)``.

    ``flip`` is the run's ``eval.flip`` (docs/method.md §2.5: on; also for checkpoints without a run spec, e.g.
    imported ones). The dtype follows the run's ``train.amp`` on CUDA (bf16 for a checkpoint without a run spec)
    and is None (fp32) on CPU. Commands that re-evaluate a run use these as defaults, so they reproduce its numbers.
    """
    spec = state.get("spec") or {}
    flip = bool((spec.get("eval") or {}).get("flip", True))
    if device.type != "cuda":
        return flip, None
    return flip, AMP_DTYPES[amp_mode((spec.get("train") or {}).get("amp", "auto"), device)]


def checkpoint_description(state: dict[str, Any]) -> str:
    """Which weights a loaded checkpoint holds, in words, for pictures and reports (epochs counted from 1).

    ``best (selected on test, epoch 3)`` for a selected checkpoint; ``weights after the last epoch (epoch 3 of 3)``
    for the final numbered checkpoint of a finished run (what a run's ``test@last`` results were computed on);
    ``weights after epoch 2 of 3`` or ``weights mid-epoch 2 of 3`` for an earlier one; else the folder's name.
    """
    name = Path(str(state.get("checkpoint") or "")).name or "checkpoint"
    if state.get("selected_on") is not None and state.get("epoch") is not None:
        return f"{name} (selected on {state['selected_on']}, epoch {int(state['epoch']) + 1})"
    pos = state.get("position")
    if isinstance(pos, dict) and pos.get("epoch") is not None:
        total = ((state.get("spec") or {}).get("train") or {}).get("epochs")
        of = f" of {int(total)}" if total else ""
        done = int(pos["epoch"])
        if pos.get("phase", 0) or pos.get("batch", 0):
            return f"weights mid-epoch {done + 1}{of} ({name})"
        if total and done == int(total):
            return f"weights after the last epoch (epoch {done}{of})"
        return f"weights after epoch {done}{of} ({name})"
    return name


def dataset_options(name: str, skip_bad: bool = False, camera_rule: str = "unique") -> dict[str, Any]:
    """The parser options a dataset takes from the run spec."""
    opts: dict[str, Any] = {"skip_bad": skip_bad}
    if canonical_name(name) == "celebreid":
        opts["camera_rule"] = camera_rule
    return opts


# -- checkpoints as models ------------------------------------------------------------------------------
def load_model_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu", prefer: str = "best",
                          as_method: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint (folder or run folder) and load its weights; no pickle.

    ``as_method="bm"`` loads only the Base Model parts of a CAP/RLQ checkpoint (pose branch and train-only
    heads dropped), e.g. for a "CAP teacher".
    """
    ck = resolve_checkpoint(path, prefer=prefer)
    tensors, state = read_checkpoint(ck)
    args = dict(state.get("model_args") or {})
    if not args:
        raise CheckpointError(f"{ck} has no model_args: it was not written by `rlq train`")
    if as_method is not None:
        args["method"] = as_method
        if not get_method(as_method).parts.pose_branch:
            args["pose_clusters"] = None
    model = build_model(**args, pretrained="none")
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if as_method is not None:
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=as_method is None)
    except RuntimeError as e:  # shapes or names that do not fit the model its model_args describe
        detail = " ".join(str(e).split())
        raise CheckpointError(f"checkpoint {ck}: its weights do not fit the model its state.json describes "
                              f"({detail[:300]}); the checkpoint was edited or damaged: use another one") from None
    if missing:
        raise CheckpointError(f"{ck}: weights missing for {missing[:5]}")
    model.to(device).eval()
    return model, {**state, "checkpoint": str(ck)}


def save_model_checkpoint(model: torch.nn.Module, out_dir: str | os.PathLike, *, input_size: tuple[int, int] = (384, 192),
                          extra_tensors: dict[str, torch.Tensor] | None = None, **meta: Any) -> Path:
    """Write a weights-only checkpoint folder (safetensors + JSON + checksums) that `rlq eval`, `rlq export`
    and :func:`load_model_checkpoint` read; ``meta`` goes into its state (e.g. role="teacher", dataset=...).
    ``extra_tensors`` (names outside ``model.``, e.g. ``clothes.weight``) are stored alongside."""
    from .checkpoint import write_checkpoint_dir

    out = Path(out_dir)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        if k.startswith("model."):
            raise ValueError(f"extra tensor {k!r} would overwrite a model weight")
        tensors[k] = v
    state = {"method": model.method, "model_args": model.build_kwargs, "input_size": list(input_size),
             "weights_only": True, **meta}
    return write_checkpoint_dir(out, tensors, state)  # no manager: it would create a stray checkpoints/ folder


def load_teacher(path: str, *, force: bool, device: torch.device) -> torch.nn.Module:
    """A frozen Base Model teacher (docs/method.md §5.3); refuses checkpoints without teacher-recipe metadata."""
    ck = resolve_checkpoint(path, prefer="last")
    _, state = read_checkpoint(ck)
    role = state.get("role")
    method = (state.get("model_args") or {}).get("method")
    if role != "teacher" and not force:
        raise CheckpointError(
            f"{ck} was not trained with a teacher recipe (role={role!r}, method={method!r}); train one with "
            "`rlq train --config configs/teacher/celeb.yaml` or pass tad.force_teacher=true to use it anyway"
        )
    parts = get_method(method).parts if method is not None else None
    if parts is not None and not parts.bot_branch:
        raise CheckpointError(f"{ck} is a single-branch CAL model (method {method!r}); a TAD teacher needs the "
                              "two-branch Base Model")
    # the "CAP teacher" variant: the Base Model parts only (pose branch and gender head dropped)
    as_method = "bm" if parts is not None and (parts.pose_branch or parts.gender_head) else None
    teacher, _ = load_model_checkpoint(ck, device=device, prefer="last", as_method=as_method)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


# -- method, evaluator -------------------------------------------------------------------------------------
def build_method(spec: RunSpec, dataset: Dataset, teacher: torch.nn.Module | None):
    """The training strategy for ``spec.method``: its registry entry's strategy class, built from the run."""
    palette_size = len(PALETTES[_palette_name(spec)]) if spec.data.recolor else None
    strategy = get_method(spec.method).strategy_class()
    return strategy.from_run(spec.method, spec, dataset, palette_size=palette_size, teacher=teacher)


def _palette_name(spec: RunSpec) -> str:
    return palette_for(spec.data.dataset) if spec.data.palette == "auto" else spec.data.palette


def per_query_path(run_dir: str | os.PathLike, epoch: int, protocol: str = "test") -> Path:
    """Where the evaluation after ``epoch`` saved its per-query results (:func:`rlq.evaluation.load_per_query`)."""
    return Path(run_dir) / "per_query" / f"{protocol}_epoch{epoch:04d}.npz"


def run_per_query(run: str | os.PathLike, selection: str = "test@last") -> Path:
    """The per-query file behind a run's ``results.json`` entry ``selection`` (or ``run`` itself when it is a file)."""
    import json

    p = Path(run)
    if p.is_file():
        return p
    res = p / "results.json"
    try:
        rep = json.loads(res.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{res} is missing or unreadable ({type(e).__name__}); give a run folder of `rlq train` "
                              "or a per-query .npz (`rlq eval --per-query`)") from None
    entry = rep.get(selection)
    if not entry:
        raise CheckpointError(f"{res} has no {selection!r} entry; choose one of test@last, test@best_test, test@best_val")
    f = per_query_path(p, int(entry["epoch"]), "test")
    if not f.is_file():
        raise CheckpointError(f"{f} does not exist: the run predates per-query results; re-evaluate it with "
                              "`rlq eval ... --per-query FILE`")
    return f


def make_evaluator(dataset: Dataset, spec: RunSpec, device: torch.device, amp: str, cache: ImageCache | None = None,
                   world: DistInfo | None = None):
    """evaluator(model, epoch) -> (test results, val results or None), metrics as fractions (rank1, mAP, ...).

    With a multi-rank ``world`` every rank must call it: the ranks share the extraction
    (:func:`rlq.evaluation.extract.extract_features` with ``world``), rank 0 alone computes the metrics and writes
    the per-query files, and the other ranks get ``(None, None)``.

    Each result also has ``rank1_ci`` / ``mAP_ci`` (percentile bootstrap over queries, ``spec.eval.bootstrap_*``);
    where the dataset has a quality table the test results add ``<name>/clean`` and ``<name>/LQ`` rows (queries of
    that quality against the whole gallery). Per-query results go to :func:`per_query_path` in ``spec.output``.
    """
    from ..evaluation.bootstrap import PerQuery, add_intervals, save_per_query
    from ..evaluation.extract import extract_features
    from ..evaluation.protocols import evaluate_protocol, query_group_results

    amp_dtype = AMP_DTYPES[amp]
    groups = quality_groups(dataset.root, spec.eval.quality_csv)
    boot = dict(num_resamples=spec.eval.bootstrap_resamples, seed=spec.eval.bootstrap_seed)

    def run(protocol: Protocol, model, epoch: int, name: str, with_groups: bool) -> dict:
        feats = {}
        for split in protocol.split_names:
            samples = dataset.split(split)
            f = extract_features(
                model, [s.path for s in samples], spec.data.height, spec.data.width, device=device,
                batch_size=spec.eval.batch_size, workers=spec.eval.workers, flip=spec.eval.flip, amp_dtype=amp_dtype,
                progress=spec.train.progress, desc=f"extract {split}", cache=cache, world=world,
            )
            feats[split] = (f, samples)
        if world is not None and not world.is_main:
            return None
        res = evaluate_protocol(feats, protocol, max_rank=spec.eval.max_rank, chunk_size=spec.eval.chunk_size, device=device)
        if with_groups and groups is not None:
            res.update(query_group_results(res, groups, source=spec.eval.quality_csv or f"{dataset.root}/quality.csv"))
        res = add_intervals(res, **boot)
        save_per_query(per_query_path(spec.output, epoch, name), {n: PerQuery.from_result(r) for n, r in res.items()},
                       extra={"epoch": epoch, "protocol": name, "dataset": dataset.name})
        keep = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_valid_queries", "num_queries")
        counts = ("num_valid_queries", "num_queries")  # integers in results.json, the rates floats
        return {n: {**{k: (int if k in counts else float)(r[k]) for k in keep if k in r}, "rank1_ci": r["rank1_ci"],
                    "mAP_ci": r["mAP_ci"], **({"note": r["note"]} if "note" in r else {})} for n, r in res.items()}

    def evaluator(model, epoch: int):
        test = run(dataset.protocols["test"], model, epoch, "test", True)
        val = run(dataset.protocols["val"], model, epoch, "val", False) if "val" in dataset.protocols else None
        return test, val

    return evaluator


# -- the run ---------------------------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _write_spec(spec: RunSpec, run_dir: Path, dist: DistInfo, extra: dict) -> None:
    from ..runtime.meta import run_metadata

    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False))
    atomic_write_json(run_dir / "meta.json", run_metadata({"seed": spec.train.seed, "world_size": dist.world_size,
                                                           "batch_per_replica": spec.data.batch_size, **extra}))


def _check_writable(run_dir: Path) -> None:
    """Fail before training when the output folder cannot be written (read-only, disk full); creates nothing:
    the test file goes into the folder, or its nearest existing parent."""
    import shutil
    import tempfile

    probe = Path(os.path.abspath(run_dir))
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is a file")
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".rlq-write-test-", delete=True) as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ConfigError(f"cannot write to the output folder {run_dir}: {e.strerror or e}; choose another `output=`") from None
    free = shutil.disk_usage(probe).free
    if free < 200 * 2**20:
        raise ConfigError(f"only {free / 2**20:.0f} MiB free under {run_dir}; checkpoints need more space")


def _check_train_identities(dataset: Dataset, root: str, batch_size: int, num_instances: int) -> None:
    """Refuse a train split with fewer identities than one PK batch needs (docs/method.md §3.2): batch_size /
    num_instances of them, at least 2. With one identity every loss is exactly 0 and nothing is learnt."""
    from ..data.check import MIN_TRAIN_IDS

    n = len({s.pid for s in dataset.train})
    per_batch = batch_size // max(1, num_instances)
    need = max(MIN_TRAIN_IDS, per_batch)
    if n >= need:
        return
    if n < MIN_TRAIN_IDS:
        fix = (f"training needs at least {MIN_TRAIN_IDS} (with one identity every loss is exactly 0); add identities "
               "to the train split")
    else:
        fix = (f"one PK batch needs data.batch_size / data.num_instances = {batch_size} / {num_instances} = {per_batch}; "
               f"use fewer identities per batch (lower data.batch_size or raise data.num_instances, e.g. "
               f"data.batch_size={n * num_instances}) or add identities")
    raise ConfigError(f"the train split of {root} has {n} identit{'y' if n == 1 else 'ies'}: {fix}")


def _check_images(dataset: Dataset, progress: bool) -> None:
    """Every image of every split has a readable header before the run folder is claimed (a bad query or gallery
    image would otherwise stop the run at its first evaluation, after an epoch whose checkpoint is never written)."""
    import time

    from ..data.check import require_readable_images

    t0 = time.perf_counter()
    n = require_readable_images(dataset, progress=progress)
    log.debug("checked the headers of %d images of %s in %.1f s", n, dataset.root, time.perf_counter() - t0)


def run_training(spec: RunSpec, *, resume: bool = False, overwrite: bool = False, role: str | None = None) -> dict:
    """Train ``spec.method`` on ``spec.data``; returns the selection report written to ``results.json``.

    ``spec.output`` must be new or empty unless ``resume`` (continue the run in it) or ``overwrite`` (move
    it aside to ``<name>.old-<timestamp>`` first); see :mod:`rlq.engine.run_dir`. The folder is created
    only once the data and model are ready, and removed again if training fails before its first step.
    """
    validate_spec(spec)
    check_run_folder(spec.output, resume=resume, overwrite=overwrite)  # refuse before any work
    dist, device = init_distributed(spec.train.device, spec.train.dist_timeout_min)
    try:
        return _run(spec, dist, device, resume, overwrite, role)
    finally:
        cleanup_distributed()


def _run(spec: RunSpec, dist: DistInfo, device: torch.device, resume: bool, overwrite: bool, role: str | None) -> dict:
    run_dir = Path(spec.output)
    if spec.train.num_threads > 0:
        torch.set_num_threads(spec.train.num_threads)
    if spec.train.deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _seed_everything(spec.train.seed + dist.rank)  # §6: replica r uses s + r
    amp = amp_mode(spec.train.amp, device)
    channels_last = spec.train.channels_last == "on" or (spec.train.channels_last == "auto" and device.type == "cuda")

    d = spec.data
    dataset = load_dataset(d.dataset, d.root, **dataset_options(d.dataset, d.skip_bad, d.camera_rule))
    if d.val_holdout_ids:
        from ..data.holdout import identity_holdout

        dataset = identity_holdout(dataset, d.val_holdout_ids, seed=spec.train.seed)
    _check_train_identities(dataset, d.root, d.batch_size, d.num_instances)
    _check_images(dataset, progress=spec.train.progress and dist.is_main)
    if dist.is_main:  # after the dataset parsed, before anything heavy (creates nothing)
        _check_writable(run_dir)
    defaults = default_side_paths(canonical_name(d.dataset), d.root)
    entry = get_method(spec.method)
    need_pose, need_gender = entry.parts.pose_branch, entry.parts.gender_head
    side = build_side_inputs(
        dataset,
        need_gender=need_gender,
        need_pose=need_pose,
        need_parsing=d.recolor,
        gender_csv=d.gender_csv or defaults.get("gender_csv"),
        gender_missing=d.gender_missing,
        pose_csv=d.pose_csv or defaults.get("pose_csv"),
        pose_column=d.pose_column,
        pose_missing=d.pose_missing,
        pose_clusters=spec.model.pose_clusters if need_pose else None,
        parsing_root=d.parsing_root or defaults.get("parsing_root"),
        parsing_missing=d.parsing_missing,
        faulty_pant=d.faulty_pant,
        faulty_shirt=d.faulty_shirt,
    )
    cache = ImageCache() if d.cache_images else None
    if cache is not None:
        cache.preload([s.path for s in dataset.train], progress=spec.train.progress and dist.is_main, desc="caching train images",
                      parsing_paths=side.parsing_paths)
    palette = PALETTES[_palette_name(spec)]
    lq_draw = _lq_draw(spec, dataset) if spec.loss.lq_aug else None
    train_set = TrainSet(
        dataset.train, d.height, d.width, gender=side.gender, pose=side.pose, recolor=d.recolor,
        parsing_paths=side.parsing_paths, faulty=side.faulty, palette=palette,
        num_real_clothes=dataset.num_train_clothes, cache=cache, lq_draw=lq_draw,
        lq_source_size=(spec.tad.source_height, spec.tad.source_width),
    )
    loaders = {
        "target": LoaderSpec(
            train_set,
            PKSampler([s.pid for s in dataset.train], d.batch_size, d.num_instances, seed=spec.train.seed,
                      world_size=dist.world_size, rank=dist.rank),
            d.batch_size, d.workers,
        )
    }
    teacher = None
    if entry.needs_external:
        loaders["external"] = _external_loader(spec, dataset, dist, cache)
    if entry.needs_teacher and spec.tad.variant in TEACHER_VARIANTS:
        teacher = load_teacher(spec.tad.teacher, force=spec.tad.force_teacher, device=device)

    m = spec.model
    model = build_model(
        method=spec.method, num_ids=dataset.num_train_pids, pose_clusters=m.pose_clusters if need_pose else None,
        backbone=m.backbone, pretrained=m.pretrained, split=m.split, pose_split=m.pose_split, gender_on=m.gender_on,
        cos_partner=m.cos_partner, seed=spec.train.seed, last_stride=m.last_stride,
    )
    if teacher is not None and teacher.feat_dim != model.feat_dim:
        raise ConfigError(f"teacher features are {teacher.feat_dim}-d but the student's are {model.feat_dim}-d; use the same backbone")
    method = build_method(spec, dataset, teacher)
    has_test = "test" in dataset.protocols
    if not has_test:  # e.g. identity folders for a TAD teacher (Table 8): nothing to evaluate; the last weights count
        log.warning("%s has no query/gallery split: training without evaluation; the last checkpoint is the model",
                    d.root)
    selection_metric = dataset.protocols["test"].selection if has_test else "general"
    run_role = role or spec.role
    run_state = {
        "method": spec.method,
        "role": run_role,
        "model_args": model.build_kwargs,
        "dataset": canonical_name(d.dataset),
        "input_size": [d.height, d.width],
        "num_train_ids": dataset.num_train_pids,
        "num_train_clothes": dataset.num_train_clothes,
        "spec": dataclasses.asdict(spec),
        "summary": {"method": spec.method, "dataset": canonical_name(d.dataset), "preset": spec.preset,
                    "world_size": dist.world_size, "batch_per_replica": d.batch_size, "notes": side.notes,
                    "confidence_intervals": ci_info(spec.eval.bootstrap_resamples, spec.eval.bootstrap_seed)},
    }
    trainer = Trainer(
        model=model, method=method, loaders=loaders, run_dir=run_dir, epochs=spec.train.epochs, device=device, dist=dist,
        lr=spec.optim.lr, weight_decay=spec.optim.weight_decay, milestones=spec.optim.milestones, gamma=spec.optim.gamma,
        warmup_epochs=spec.optim.warmup_epochs, warmup_factor=spec.optim.warmup_factor, amp=amp,
        channels_last=channels_last, seed=spec.train.seed,
        evaluator=make_evaluator(dataset, spec, device, amp, cache=None, world=dist) if has_test else None,
        selection_metric=selection_metric,
        eval_every=spec.train.eval_every, eval_start=spec.train.eval_start, ckpt_every_epochs=spec.train.ckpt_every_epochs,
        ckpt_every_steps=spec.train.ckpt_every_steps, keep_last=spec.train.keep_last, log_every=spec.train.log_every,
        tensorboard=spec.train.tensorboard, progress=spec.train.progress, max_steps_per_epoch=spec.train.max_steps_per_epoch,
        nonfinite=spec.train.nonfinite, run_state=run_state,
    )
    claim = trainer.open_run_dir(resume=resume, overwrite=overwrite)  # data and model are ready: now the folder
    if dist.is_main:
        try:
            _write_spec(spec, run_dir, dist, {"role": run_role})
        except BaseException:
            claim.abandon()
            raise
    return trainer.fit()


def _external_loader(spec: RunSpec, dataset: Dataset, dist: DistInfo, cache: ImageCache | None) -> LoaderSpec:
    """The external HQ stream for TAD: Celeb-reID layout (or any supported dataset), or the target itself."""
    t = spec.tad
    if t.variant == "target_pairs":
        ext_samples = list(dataset.train)
    elif t.external_dataset in ("folder", "identity_folders"):
        ext_samples = folder_samples(t.external_root) if t.external_dataset == "folder" else identity_folder_samples(t.external_root)
        if cache is not None:
            cache.preload([s.path for s in ext_samples], progress=spec.train.progress and dist.is_main, desc="caching external images")
    else:
        ext = load_dataset(t.external_dataset, t.external_root, **dataset_options(t.external_dataset, spec.data.skip_bad))
        ext_samples = list(ext.train)
        if cache is not None:
            cache.preload([s.path for s in ext_samples], progress=spec.train.progress and dist.is_main, desc="caching external images")
    draw = _lq_draw(spec, dataset)
    ds = ExternalSet(ext_samples, spec.data.height, spec.data.width, (t.source_height, t.source_width), draw,
                     aligned=t.aligned, cache=cache)
    # An unlabeled folder: every image is its own "identity", so the PK sampler degenerates to a shuffle.
    k = 1 if t.external_dataset == "folder" else t.external_num_instances
    sampler = PKSampler([s.pid for s in ext_samples], t.external_batch_size, k, seed=spec.train.seed,
                        world_size=dist.world_size, rank=dist.rank, reshuffle=t.reshuffle, fraction=t.fraction,
                        fraction_mode=t.fraction_mode, reseed_aug_each_epoch=t.reseed_aug, stream=1,
                        fraction_by="image" if t.external_dataset == "folder" else t.fraction_by)
    return LoaderSpec(ds, sampler, t.external_batch_size, spec.data.workers)


def identity_folder_samples(root: str | os.PathLike) -> list:
    """An external stream with identities (paper Table 8, NTU): one subfolder of ``root`` per identity, its images
    anywhere below it. Identities are numbered 0.. in sorted folder order; labels feed only the PK sampler."""
    from ..data.images import image_files
    from ..data.records import Sample

    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"tad.external_root {root} is not a folder (tad.external_dataset=identity_folders wants one "
                          "subfolder per identity)")
    out: list = []
    empty: list[str] = []
    for d in sorted(d for d in r.iterdir() if d.is_dir()):
        files = [Path(p) for p in image_files(d)]
        if not files:
            empty.append(d.name)
        pid = len(out) and out[-1].pid + 1
        out += [Sample(str(p), pid, 0, pid, p.relative_to(r).with_suffix("").as_posix(), {"raw_pid": d.name}) for p in files]
    if not out:
        raise ConfigError(f"no images in the identity subfolders of tad.external_root={root}; "
                          "tad.external_dataset=identity_folders wants ROOT/<identity>/<images>")
    if empty:
        log.warning("%d identity folder(s) under %s hold no images (e.g. %s); they are skipped", len(empty), root, empty[0])
    return out


def folder_samples(root: str | os.PathLike) -> list:
    """Every image under ``root`` (recursive, sorted) as an unlabeled sample (its own pid) for the TAD stream."""
    from ..data.images import image_files
    from ..data.records import Sample

    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"tad.external_root {root} is not a folder of images")
    paths = [Path(p) for p in image_files(r)]
    if not paths:
        raise ConfigError(f"no images (.jpg/.png/.bmp/.webp) under tad.external_root={root}")
    return [Sample(str(p), i, 0, i, p.relative_to(r).with_suffix("").as_posix()) for i, p in enumerate(paths)]


def _lq_draw(spec: RunSpec, dataset: Dataset | None = None) -> "_LQDraw":
    """The per-image LQ draw of the target dataset's mix (docs/method.md §5.2) with the spec's ranges; a manifest's
    ``lq_mix`` (its protocol YAML) is used when the spec says ``auto``."""
    from ..lq.mix import LQMix, mix_for_dataset

    t = spec.tad
    custom = (dataset.info or {}).get("lq_mix") if dataset is not None else None
    if t.lq_mix == "auto" and isinstance(custom, dict):
        bad = sorted(set(custom) - {"pixelation", "motion", "defocus"})
        if bad:
            raise ConfigError(f"the manifest's lq_mix has unknown artifact(s) {bad}; use pixelation, motion and defocus")
        return _LQDraw(LQMix.from_probs(**{k: float(v) for k, v in custom.items()}, name="manifest"), t.lq_ranges)
    return _LQDraw(mix_for_dataset(spec.data.dataset if t.lq_mix == "auto" else t.lq_mix), t.lq_ranges)


class _LQDraw:
    """Picklable per-image LQ draw for loader workers."""

    def __init__(self, mix, ranges: str) -> None:
        self.mix, self.ranges = mix, ranges

    def __call__(self, rng: np.random.Generator, sigma_rng: np.random.Generator | None = None):
        from ..lq.mix import draw_lq

        return draw_lq(rng, self.mix, self.ranges, sigma_rng=sigma_rng)
