"""Assemble a training run from a typed :class:`~rlq.spec.RunSpec` and train: datasets and side inputs, loaders,
model, teacher, method, evaluator and trainer, then the run folder's config and metadata.

This is the glue the CLI calls after turning YAML into a RunSpec; from Python, build a RunSpec and call
:func:`run_training`. Its parts live beside it: the spec checks in :mod:`rlq.engine.validate`, checkpoints <-> models
in :mod:`rlq.engine.model_io`, the method, the external TAD stream and the LQ draw in :mod:`rlq.engine.build`, the
evaluation in :mod:`rlq.engine.evaluate`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
import yaml

from ..data.datasets import canonical_name, load_dataset
from ..data.loading import ImageCache, TrainSet
from ..data.recolor import PALETTES
from ..data.records import Dataset
from ..data.samplers import PKSampler
from ..data.side_tables import build_side_inputs, default_side_paths
from ..errors import ConfigError
from ..evaluation.bootstrap import ci_info
from ..io import atomic_write_json, atomic_write_text
from ..methods.registry import get_method
from ..models import build_model
from ..runtime.device import amp_mode
from ..runtime.distributed import DistInfo, cleanup_distributed, init_distributed
from ..spec import TEACHER_VARIANTS, RunSpec
from .build import build_method, external_loader, lq_draw, palette_name
from .evaluate import make_evaluator
from .model_io import load_teacher
from .run_dir import check_run_folder
from .trainer import LoaderSpec, Trainer
from .validate import dataset_options, validate_spec

__all__ = ["run_training"]

log = logging.getLogger(__name__)


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
    palette = PALETTES[palette_name(spec)]
    draw = lq_draw(spec, dataset) if spec.loss.lq_aug else None
    train_set = TrainSet(
        dataset.train, d.height, d.width, gender=side.gender, pose=side.pose, recolor=d.recolor,
        parsing_paths=side.parsing_paths, faulty=side.faulty, palette=palette,
        num_real_clothes=dataset.num_train_clothes, cache=cache, lq_draw=draw,
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
        loaders["external"] = external_loader(spec, dataset, dist, cache)
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
