"""The one evaluation pipeline: a model or checkpoint and a dataset's protocol -> features -> metrics -> intervals
(docs/design.md, "Evaluation").

:func:`evaluate_model` is what the trainer's evaluator (:func:`make_evaluator`), `rlq eval` and the authors' LQ test
protocol (:func:`rlq.analysis.robustness.official_lq_evaluate`) run; :func:`prepare_evaluation` is its first half
(checkpoint, dataset, protocol and the run's own flip and precision), which the analysis commands and the demo use
before their own measures. Features come from :func:`rlq.evaluation.extract.extract_protocol_features`, metrics from
:func:`rlq.evaluation.protocols.evaluate_protocol`, intervals from :func:`rlq.evaluation.bootstrap.with_intervals`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.records import Dataset, Protocol
from ..errors import CheckpointError, ConfigError
from ..runtime.device import precision_name, resolve_amp, resolve_device
from .model_io import load_model_checkpoint, run_eval_settings
from .validate import dataset_options

__all__ = [
    "EvalSetup",
    "EvalResult",
    "prepare_evaluation",
    "evaluate_model",
    "eval_dataset_and_root",
    "make_evaluator",
    "per_query_path",
    "run_per_query",
]

_DEFAULT_INPUT_SIZE = (384, 192)  # docs/method.md §2.1; for a model or checkpoint that records none


@dataclass
class EvalSetup:
    """A model ready to be evaluated on a dataset's protocol, with the settings its features are made with."""

    model: nn.Module
    state: dict[str, Any]  #: the checkpoint's state (``checkpoint``: its folder), or what the caller gave for a model
    dataset: Dataset
    dataset_name: str  #: as given (or as the run recorded it)
    root: Path | None
    protocol: Protocol
    protocol_name: str
    device: torch.device
    height: int
    width: int
    flip: bool
    amp_dtype: torch.dtype | None

    @property
    def checkpoint(self) -> str | None:
        return self.state.get("checkpoint")

    @property
    def precision(self) -> str:
        return precision_name(self.amp_dtype)

    def extract(self, splits: Sequence[str] | None = None, *, batch_size: int = 128, workers: int = 2,
                progress: bool = False, cache: Any = None, world: Any = None, desc: str = "extract {split}",
                batch_transform_for: Callable[[str], Any] | None = None,
                image_transform_for: Callable[[str], Any] | None = None) -> dict[str, tuple[np.ndarray, Sequence[Any]]]:
        """``{split: (features, samples)}`` of the protocol's splits (or ``splits``) with these settings
        (:func:`rlq.evaluation.extract.extract_protocol_features`)."""
        from ..evaluation.extract import extract_protocol_features

        return extract_protocol_features(
            self.model, self.dataset, self.protocol, splits=splits, height=self.height, width=self.width,
            device=self.device, batch_size=batch_size, workers=workers, flip=self.flip, amp_dtype=self.amp_dtype,
            progress=progress, desc=desc, cache=cache, batch_transform_for=batch_transform_for,
            image_transform_for=image_transform_for, world=world,
        )


@dataclass
class EvalResult:
    """What :func:`evaluate_model` measured."""

    #: per evaluation name (and ``<name>/clean``, ``<name>/LQ`` rows where the query quality is known): the
    #: :func:`~rlq.evaluation.protocols.evaluate_protocol` result with its per-query arrays, plus ``rank1_ci`` /
    #: ``mAP_ci`` (unless intervals were turned off)
    results: dict[str, dict[str, Any]]
    setup: EvalSetup
    #: under the authors' LQ test protocol: ``name`` (official_lq:<kind>), ``kind``, ``mix`` (the artifact
    #: probabilities), ``seed``, ``label``, ``definition``; else None
    lq: dict[str, Any] | None = None
    per_query_path: Path | None = None

    def summary(self) -> dict[str, dict[str, Any]]:
        """JSON-able metrics per evaluation (:func:`rlq.evaluation.protocols.summarize`)."""
        from ..evaluation.protocols import summarize

        return summarize(self.results)

    def per_query(self) -> dict[str, Any]:
        """``{evaluation name: PerQuery}`` (:class:`rlq.evaluation.bootstrap.PerQuery`), for paired comparisons."""
        from ..evaluation.bootstrap import PerQuery

        return {n: PerQuery.from_result(r) for n, r in self.results.items()}


def eval_dataset_and_root(state: Mapping[str, Any], dataset: str | None,
                          root: str | os.PathLike | None) -> tuple[str, Path]:
    """(dataset, root) to evaluate a checkpoint on: the arguments, else what its run recorded (spec.data.dataset /
    spec.data.root). The run's root is used only for the run's own dataset."""
    data = (state.get("spec") or {}).get("data") or {}
    run_ds, run_root = data.get("dataset") or None, data.get("root") or None
    ck = state.get("checkpoint", "the checkpoint")
    if dataset is None:
        if run_ds is None:
            raise ConfigError(f"{ck} records no dataset (not a run of `rlq train`, e.g. an imported checkpoint): "
                              "pass --dataset NAME --root DIR")
        dataset = str(run_ds)
    if root is None:
        from ..data.datasets import canonical_name

        same = run_ds is not None and canonical_name(str(run_ds)) == canonical_name(dataset)
        if not same or run_root is None:
            raise ConfigError(f"{ck} records no root for dataset {dataset!r}"
                              + (f" (its run trained on {run_ds})" if run_ds and not same else "")
                              + ": pass --root DIR (the dataset's folder)")
        root = Path(str(run_root))
    return dataset, Path(root)


def _amp_dtype(amp: str | torch.dtype | None, run_amp: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """None: the run's precision; a dtype as given; ``off`` / ``bf16`` / ``fp16`` / ``auto`` by the AMP rule
    (:func:`rlq.runtime.device.amp_mode`)."""
    if amp is None:
        return run_amp
    if isinstance(amp, torch.dtype):
        return amp
    return resolve_amp(amp, device)


def prepare_evaluation(
    model_or_checkpoint: nn.Module | str | os.PathLike,
    dataset: Dataset | str | None = None,
    *,
    root: str | os.PathLike | None = None,
    protocol: str = "test",
    device: str | torch.device | None = "auto",
    prefer: str = "best",
    flip: bool | None = None,
    amp: str | torch.dtype | None = None,
    height: int | None = None,
    width: int | None = None,
    camera_rule: str = "unique",
    state: Mapping[str, Any] | None = None,
) -> EvalSetup:
    """Load the model (a checkpoint or run folder, ``prefer`` picking one in a run) and the dataset, and fix the
    feature settings, as the run evaluated unless overridden.

    ``dataset`` is a :class:`~rlq.data.records.Dataset`, a dataset name (read from ``root``), or None: the dataset
    and root the checkpoint's run recorded (:func:`eval_dataset_and_root`). ``flip`` / ``amp`` None: the run's
    ``eval.flip`` and precision (:func:`rlq.engine.model_io.run_eval_settings`: fp32 on the CPU; for a model
    without a run, the flip-sum and bf16 on CUDA); ``amp`` may be an AMP mode (``off``, ``bf16``, ``fp16``,
    ``auto``) or an autocast dtype. ``height`` / ``width`` None: the checkpoint's input size (384 x 192 when it
    records none). A model passed in stays where it is; ``state`` stands for its run's state.
    """
    dev = resolve_device(device)
    if isinstance(model_or_checkpoint, nn.Module):
        model, st = model_or_checkpoint, dict(state or {})
    else:
        model, st = load_model_checkpoint(model_or_checkpoint, device=dev, prefer=prefer)
    h, w = st.get("input_size") or _DEFAULT_INPUT_SIZE
    if isinstance(dataset, Dataset):
        ds, name, ds_root = dataset, dataset.name, (Path(root) if root is not None else Path(dataset.root))
    else:
        from ..data.datasets import load_dataset

        name, ds_root = eval_dataset_and_root(st, dataset, root)
        ds = load_dataset(name, ds_root, **dataset_options(name, camera_rule=camera_rule))
    if protocol not in ds.protocols:
        raise ConfigError(f"dataset {name} has no {protocol!r} protocol; it has {sorted(ds.protocols)}")
    run_flip, run_amp = run_eval_settings(st, dev)
    return EvalSetup(model=model, state=st, dataset=ds, dataset_name=name, root=ds_root, protocol=ds.protocols[protocol],
                     protocol_name=protocol, device=dev, height=int(height or h), width=int(width or w),
                     flip=run_flip if flip is None else bool(flip), amp_dtype=_amp_dtype(amp, run_amp, dev))


def evaluate_model(
    model_or_checkpoint: nn.Module | str | os.PathLike | EvalSetup,
    dataset: Dataset | str | None = None,
    *,
    root: str | os.PathLike | None = None,
    protocol: str = "test",
    device: str | torch.device | None = "auto",
    prefer: str = "best",
    camera_rule: str = "unique",
    state: Mapping[str, Any] | None = None,
    flip: bool | None = None,
    amp: str | torch.dtype | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 128,
    workers: int = 2,
    max_rank: int = 50,
    chunk_size: int | None = None,
    rerank: Any = None,
    lq: str | None = None,
    lq_seed: int = 0,
    quality_groups: bool | Mapping[str, str] | None = True,
    quality_csv: str | os.PathLike | None = None,
    bootstrap_resamples: int | None = 1000,
    bootstrap_seed: int = 0,
    per_query: str | os.PathLike | None = None,
    per_query_extra: Mapping[str, Any] | None = None,
    cache: Any = None,
    world: Any = None,
    progress: bool = False,
) -> EvalResult | None:
    """Evaluate a model or checkpoint on a dataset's protocol (every evaluation it reports), as `rlq eval` and the
    trainer do: extract every split, rank, add query-quality rows and 95 % bootstrap intervals, optionally write the
    per-query file.

    Loading (``dataset``, ``root``, ``protocol``, ``device``, ``prefer``, ``camera_rule``, ``state``, ``flip``,
    ``amp``, ``height``, ``width``): :func:`prepare_evaluation`, or an :class:`EvalSetup` it made passed as the
    first argument. Ranking: ``max_rank``, ``chunk_size`` and ``rerank`` (a
    :class:`~rlq.evaluation.rerank.RerankSettings`, or None for cosine) go to
    :func:`~rlq.evaluation.protocols.evaluate_protocol`.

    ``lq`` evaluates under the authors' LQ test protocol instead of clean (docs/method.md §12): ``official``,
    ``official:<kind>`` or a kind (``mix``, ``pixelation``, ``gaussian``, ``motion``); every query and gallery image
    degraded at original resolution, seeded by ``lq_seed``; no re-ranking and no quality rows there.
    ``quality_groups``: True adds ``<name>/clean`` and ``<name>/LQ`` rows when the dataset has a quality table
    (``quality_csv``, default ``<root>/quality.csv``); a ``{image key: "clean" | "LQ"}`` mapping gives the groups;
    False / None adds none. ``bootstrap_resamples`` / ``bootstrap_seed``: the intervals (None: no intervals).
    ``per_query`` writes the per-query file (:func:`rlq.evaluation.bootstrap.save_per_query`) with
    ``per_query_extra`` as its meta (default: checkpoint, dataset, protocol, flip). ``cache`` (an
    :class:`~rlq.data.loading.ImageCache`), ``world`` (sharded extraction: every rank must call this; rank 0 alone
    ranks and writes, the others get None) and ``progress`` go to the extraction.
    """
    from ..evaluation.bootstrap import save_per_query, with_intervals
    from ..evaluation.protocols import evaluate_protocol

    if bootstrap_resamples is not None and bootstrap_resamples < 1:
        raise ConfigError(f"bootstrap resamples must be >= 1 (1000 for the reported intervals), got {bootstrap_resamples}")
    kind = _lq_kind(lq, rerank)
    setup = model_or_checkpoint if isinstance(model_or_checkpoint, EvalSetup) else prepare_evaluation(
        model_or_checkpoint, dataset, root=root, protocol=protocol, device=device, prefer=prefer, flip=flip, amp=amp,
        height=height, width=width, camera_rule=camera_rule, state=state)
    lq_info, transforms, desc = None, None, "extract {split}"
    if kind is not None:
        from ..lq.official_test import (
            OFFICIAL_LQ_DEFINITION,
            OFFICIAL_LQ_LABEL,
            official_lq_mix,
            official_lq_name,
            official_lq_transforms,
        )

        mix = official_lq_mix(kind, setup.dataset.name)
        transforms = official_lq_transforms(mix, lq_seed)
        desc = "{split} official LQ " + kind
        lq_info = {"name": official_lq_name(kind), "kind": kind, "mix": mix.probabilities(), "seed": int(lq_seed),
                   "label": OFFICIAL_LQ_LABEL, "definition": OFFICIAL_LQ_DEFINITION}
    feats = setup.extract(batch_size=batch_size, workers=workers, progress=progress, cache=cache, world=world,
                          desc=desc, image_transform_for=transforms)
    if world is not None and not world.is_main:
        return None
    res = evaluate_protocol(feats, setup.protocol, max_rank=max_rank, chunk_size=chunk_size, device=setup.device,
                            rerank=rerank)
    groups, source = None, "the quality table"
    if kind is None and quality_groups is not None and quality_groups is not False:
        from ..data.side_tables import quality_groups as read_quality_groups

        root_dir = setup.dataset.root
        groups = read_quality_groups(root_dir, quality_csv) if quality_groups is True else quality_groups
        source = str(quality_csv or Path(root_dir) / "quality.csv")
    res = with_intervals(res, groups=groups, source=source, num_resamples=bootstrap_resamples, seed=bootstrap_seed)
    out = EvalResult(results=res, setup=setup, lq=lq_info)
    if per_query is not None:
        extra = dict(per_query_extra) if per_query_extra is not None else {
            "checkpoint": setup.checkpoint, "dataset": setup.dataset_name, "protocol": setup.protocol_name,
            "flip": setup.flip}
        save_per_query(per_query, out.per_query(), extra=extra)
        out.per_query_path = Path(per_query)
    return out


def _lq_kind(lq: str | None, rerank: Any) -> str | None:
    """The official LQ kind of ``lq`` (``official``, ``official:<kind>`` or a kind), refusing re-ranking with it."""
    if lq is None:
        return None
    from ..lq.official_test import OFFICIAL_LQ_KINDS, parse_lq_option

    kind = lq if lq in OFFICIAL_LQ_KINDS else parse_lq_option(lq)
    if rerank is not None:
        raise ConfigError("re-ranking is not available with the authors' LQ test protocol (it ranks by cosine)")
    return kind


# -- the trainer's evaluator and its per-query files -----------------------------------------------------------------
def make_evaluator(dataset: Dataset, spec: Any, device: torch.device, amp: str, cache: Any = None, world: Any = None):
    """evaluator(model, epoch) -> (test results, val results or None), metrics as fractions (rank1, mAP, ...).

    Each protocol goes through :func:`evaluate_model` with the run's settings (``spec.data`` input size, ``spec.eval``
    batch size, workers, flip, CMC length, chunking and intervals; the training precision ``amp``, a resolved AMP
    mode). With a multi-rank ``world`` every rank must call it: the ranks share the extraction, rank 0 alone
    computes the metrics and writes the per-query files, and the other ranks get ``(None, None)``.

    Each result also has ``rank1_ci`` / ``mAP_ci`` (percentile bootstrap over queries, ``spec.eval.bootstrap_*``);
    where the dataset has a quality table the test results add ``<name>/clean`` and ``<name>/LQ`` rows (queries of
    that quality against the whole gallery). Per-query results go to :func:`per_query_path` in ``spec.output``.
    """
    from ..data.side_tables import quality_groups

    groups = quality_groups(dataset.root, spec.eval.quality_csv)  # read once: a missing table fails before training

    def run(model, epoch: int, name: str, with_groups: bool) -> dict | None:
        r = evaluate_model(
            model, dataset, protocol=name, device=device, flip=spec.eval.flip, amp=amp, height=spec.data.height,
            width=spec.data.width, batch_size=spec.eval.batch_size, workers=spec.eval.workers,
            max_rank=spec.eval.max_rank, chunk_size=spec.eval.chunk_size, quality_groups=groups if with_groups else None,
            quality_csv=spec.eval.quality_csv, bootstrap_resamples=spec.eval.bootstrap_resamples,
            bootstrap_seed=spec.eval.bootstrap_seed, per_query=per_query_path(spec.output, epoch, name),
            per_query_extra={"epoch": epoch, "protocol": name, "dataset": dataset.name}, cache=cache, world=world,
            progress=spec.train.progress)
        if r is None:
            return None
        keep = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_valid_queries", "num_queries")
        counts = ("num_valid_queries", "num_queries")  # integers in results.json, the rates floats
        return {n: {**{k: (int if k in counts else float)(x[k]) for k in keep if k in x}, "rank1_ci": x["rank1_ci"],
                    "mAP_ci": x["mAP_ci"], **({"note": x["note"]} if "note" in x else {})} for n, x in r.results.items()}

    def evaluator(model, epoch: int):
        test = run(model, epoch, "test", True)
        val = run(model, epoch, "val", False) if "val" in dataset.protocols else None
        return test, val

    return evaluator


def per_query_path(run_dir: str | os.PathLike, epoch: int, protocol: str = "test") -> Path:
    """Where the evaluation after ``epoch`` saved its per-query results (:func:`rlq.evaluation.load_per_query`)."""
    return Path(run_dir) / "per_query" / f"{protocol}_epoch{epoch:04d}.npz"


def run_per_query(run: str | os.PathLike, selection: str = "test@last") -> Path:
    """The per-query file behind a run's ``results.json`` entry ``selection`` (or ``run`` itself when it is a file)."""
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
