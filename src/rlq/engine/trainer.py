"""The one training loop (docs/design.md boundary 4).

The trainer owns device placement, AMP, DDP, the main optimizer and its schedule, checkpoints and
exact resume, signal handling, logging and the evaluation cadence; a :class:`~rlq.methods.base.Method`
contributes the phases of an epoch and turns batches into loss terms.

Exact resume: every sample's augmentation is seeded by (seed, epoch, rank, position) (see
:mod:`rlq.data.samplers`), the learning rate is a pure function of the epoch, and a checkpoint stores
the model, both optimizers, the data position (epoch, phase, batch, external-stream position), the
selection history and the RNG states, so a killed run continues bit-identically on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.loading import usable_workers
from ..errors import CheckpointError, TrainingError
from ..io import atomic_write_json
from ..methods.base import MAIN, Method, Phase, StepContext, StepOutput
from ..runtime.device import AMP_DTYPES, autocast_context
from ..runtime.distributed import DistInfo, RankFailure, all_reduce_flags, barrier, check_all_ranks, sync_buffers
from ..runtime.state import optimizer_state_from_flat, optimizer_state_to_flat
from ..spec import NONFINITE_POLICIES
from .checkpoint import (
    CheckpointManager,
    capture_rng,
    read_checkpoint,
    restore_rng,
)
from .faults import fault_active, fault_hold, fault_point
from .metrics_log import MetricsLogger
from .run_dir import RunFolder, claim_run_folder

__all__ = ["AMP_DTYPES", "LoaderSpec", "Trainer", "TrainingInterrupted", "lr_at_epoch", "Selection"]

log = logging.getLogger(__name__)


class TrainingInterrupted(TrainingError):
    """Raised after SIGTERM / Ctrl-C once a resumable checkpoint has been written."""


def lr_at_epoch(epoch: int, base_lr: float, milestones: list[int], gamma: float, warmup_epochs: int = 0, warmup_factor: float = 0.1) -> float:
    """MultiStep schedule stepped per epoch, with optional BoT-style linear warmup (docs/method.md §6, §10)."""
    lr = base_lr * gamma ** sum(1 for m in milestones if epoch >= m)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        lr *= warmup_factor * (1 - alpha) + alpha
    return lr


@dataclass
class LoaderSpec:
    """A dataset with its (PK) sampler; the trainer builds the DataLoader."""

    dataset: torch.utils.data.Dataset
    sampler: Any  # rlq.data.samplers.PKSampler
    batch_size: int
    workers: int = 0


class _NaNInputs:
    """Test-only (``RLQ_FAULT_INJECT=nan-input:N``): the wrapped model is called with NaN images."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.model(torch.full_like(x, float("nan")), *args, **kwargs)


class _Undo:
    """What a skipped batch must put back: the buffers (BatchNorm statistics, updated by the forward pass)
    of the model and the method's modules, and the parameters and state of any method optimizer stepped
    before the main stage turned out non-finite. The main optimizer steps last, after every check, so it
    needs nothing. Costs one copy of the buffers per step (measured: benchmarks/results/skip_snapshot.json)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        self.params: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.optimizers: list[tuple[torch.optim.Optimizer, dict]] = []
        self.scaler_state: dict | None = None

    def save_optimizer(self, opt: torch.optim.Optimizer) -> None:
        import copy

        self.params += [(p, p.detach().clone()) for g in opt.param_groups for p in g["params"]]
        self.optimizers.append((opt, copy.deepcopy(opt.state_dict())))

    @torch.no_grad()
    def restore(self) -> None:
        for live, saved in [*self.buffers, *self.params]:
            live.copy_(saved)
        for opt, sd in self.optimizers:
            opt.load_state_dict(sd)


_METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def _nan_for_none(x: Any, default: float = float("nan")) -> Any:
    return default if x is None else x


def _nan_metrics(obj: Any) -> Any:
    """Metric values read back as null (no matching query) become NaN again, at any depth."""
    if isinstance(obj, dict):
        return {k: (_nan_for_none(v) if k in _METRIC_KEYS else _nan_metrics(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_metrics(v) for v in obj]
    return obj


def _empty_window() -> dict[str, Any]:
    return {"sums": {}, "n": 0, "images": 0}


def _worker_init(_: int) -> None:
    # Ctrl-C goes to the whole process group: workers ignore it so the main process can checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


@dataclass
class Selection:
    """Model selection records (docs/method.md §7)."""

    metric: str  # the protocol evaluation whose R1 selects (e.g. "cc")
    best_test: dict | None = None  # {"epoch", "results"}
    best_val: dict | None = None  # {"epoch", "results", "val"}
    last: dict | None = None
    max_map: float = -1.0  # official: reported mAP is the maximum over all evaluations
    history: list[dict] = field(default_factory=list)

    def update(self, epoch: int, test: Mapping[str, Mapping[str, float]], val: Mapping[str, Mapping[str, float]] | None) -> dict[str, bool]:
        """Record one evaluation; returns which bests it improved."""
        r1, m = test[self.metric]["rank1"], test[self.metric]["mAP"]
        improved = {"test": False, "val": False}
        self.history.append({"epoch": epoch, "test": dict(test), **({"val": dict(val)} if val else {})})
        # A new best needs a higher R1; on an R1 tie it wins if its mAP beats the best mAP seen so far.
        if self.best_test is None:
            improved["test"] = True
        else:
            b = self.best_test["results"][self.metric]
            improved["test"] = r1 > b["rank1"] or (r1 == b["rank1"] and m > self.max_map)
        self.max_map = max(self.max_map, m if not math.isnan(m) else -1.0)
        if improved["test"]:
            self.best_test = {"epoch": epoch, "results": dict(test)}
        if val:
            vm = next(iter(val)) if self.metric not in val else self.metric
            vr1, vmap = val[vm]["rank1"], val[vm]["mAP"]
            if self.best_val is None:
                improved["val"] = True
            else:
                bv = self.best_val["val"][vm]
                improved["val"] = vr1 > bv["rank1"] or (vr1 == bv["rank1"] and vmap > bv["mAP"])
            if improved["val"]:
                self.best_val = {"epoch": epoch, "results": dict(test), "val": dict(val)}
        self.last = {"epoch": epoch, "results": dict(test)}
        return improved

    def to_json(self) -> dict:
        return {
            "metric": self.metric, "best_test": self.best_test, "best_val": self.best_val, "last": self.last,
            "max_map": self.max_map, "history": self.history,
        }

    @classmethod
    def from_json(cls, d: Mapping) -> Selection:
        """Inverse of :meth:`to_json`; a metric written as null (strict JSON has no NaN: no query had a match)
        comes back as NaN, so comparisons after a resume behave as before it."""
        return cls(metric=d["metric"], best_test=_nan_metrics(d.get("best_test")), best_val=_nan_metrics(d.get("best_val")),
                   last=_nan_metrics(d.get("last")), max_map=_nan_for_none(d.get("max_map", -1.0), -1.0),
                   history=[_nan_metrics(h) for h in d.get("history", [])])

    def report(self) -> dict:
        """The three labelled results of the `default` preset plus the official best-on-test numbers."""
        out: dict[str, Any] = {"selection_metric": self.metric}
        if self.best_test:
            out["test@best_test"] = {"epoch": self.best_test["epoch"], "selected_on": "test", "results": self.best_test["results"]}
            r = self.best_test["results"][self.metric]
            out["official"] = {"rank1": r["rank1"], "mAP_max_over_evaluations": self.max_map,
                               "note": "selected on the test set (paper convention, docs/method.md §7)"}
        if self.last:
            out["test@last"] = {"epoch": self.last["epoch"], "results": self.last["results"]}
        out["test@best_val"] = (
            {"epoch": self.best_val["epoch"], "selected_on": "val", "results": self.best_val["results"], "val": self.best_val["val"]}
            if self.best_val else None
        )
        out["history"] = self.history
        return out


class Trainer:
    """Runs a method's phases epoch by epoch with checkpoints, evaluation and exact resume."""

    def __init__(
        self,
        *,
        model: nn.Module,
        method: Method,
        loaders: Mapping[str, LoaderSpec],
        run_dir: str | os.PathLike,
        epochs: int,
        device: torch.device,
        dist: DistInfo = DistInfo(),
        lr: float = 3.5e-4,
        weight_decay: float = 5e-4,
        milestones: list[int] | tuple[int, ...] = (20, 40),
        gamma: float = 0.1,
        warmup_epochs: int = 0,
        warmup_factor: float = 0.1,
        amp: str = "off",
        channels_last: bool = False,
        seed: int = 1,
        evaluator: Callable[[nn.Module, int], tuple[dict, dict | None]] | None = None,
        selection_metric: str = "general",
        eval_every: int = 10,
        eval_start: int = 0,
        ckpt_every_epochs: int = 1,
        ckpt_every_steps: int = 0,
        keep_last: int = 2,
        log_every: int = 20,
        tensorboard: bool = True,
        progress: bool = True,
        max_steps_per_epoch: int = 0,
        nonfinite: str = "error",
        run_state: Mapping[str, Any] | None = None,
    ) -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got {nonfinite!r}")
        self.raw_model = model.to(device)
        self.method = method
        self.loaders = dict(loaders)
        self.run_dir = Path(run_dir)
        self.epochs = epochs
        self.device = device
        self.dist = dist
        self.lr, self.milestones, self.gamma = lr, list(milestones), gamma
        self.warmup_epochs, self.warmup_factor = warmup_epochs, warmup_factor
        self.seed = seed
        self.evaluator = evaluator
        self.eval_every, self.eval_start = eval_every, eval_start
        self.ckpt_every_epochs, self.ckpt_every_steps = ckpt_every_epochs, ckpt_every_steps
        self.log_every = log_every
        self.progress = progress and dist.is_main
        self.max_steps = max_steps_per_epoch
        self.nonfinite = nonfinite
        self.run_state = dict(run_state or {})
        self.channels_last = channels_last
        self.amp_dtype = AMP_DTYPES[amp]
        if self.amp_dtype is not None and device.type != "cuda":
            log.warning("AMP on %s is slow on many CPUs; consider train.amp=off", device.type)
        if channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)

        def ddp_wrap(m: nn.Module) -> nn.Module:
            if not dist.enabled:
                return m
            return nn.parallel.DistributedDataParallel(
                m, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=getattr(method, "has_unused_parameters", False),
            )

        method.setup(self.raw_model, device, ddp_wrap)
        self.model = ddp_wrap(self.raw_model)
        self.optimizer = torch.optim.Adam(self.raw_model.parameters(), lr=lr, weight_decay=weight_decay)  # §6
        # The scaler follows the training device: GradScaler("cuda") on a CPU run (e.g. train.device=cpu on a
        # GPU machine) would try to unscale CPU gradients with CUDA kernels.
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        self.ckpt = CheckpointManager(self.run_dir, keep_last=keep_last, create=False)  # the folder: open_run_dir()
        self.run_folder: RunFolder | None = None
        self._logger: MetricsLogger | None = None
        self._resume_lines: int | None = None
        self.selection = Selection(selection_metric)
        self.pos = {"epoch": 0, "phase": 0, "batch": 0, "ext_epoch": 0, "ext_batch": 0}
        self.global_step = 0
        self.skipped_batches = 0
        # The log_every averaging window of the current phase (sums of each logged value and the number of steps
        # in them), checkpointed with the position so a resumed run logs the same averages as an uninterrupted one.
        self._window: dict[str, Any] = _empty_window()
        self.tensorboard = tensorboard
        self._stop = False
        self._dl_cache: dict[str, DataLoader] = {}

    # -- helpers -----------------------------------------------------------------------------------
    def _autocast(self):
        return autocast_context(self.device, self.amp_dtype)

    def _loader(self, name: str) -> DataLoader:
        if name not in self._dl_cache:
            spec = self.loaders[name]
            workers = usable_workers(spec.workers)
            self._dl_cache[name] = DataLoader(
                spec.dataset,
                batch_size=spec.batch_size,
                sampler=spec.sampler,
                num_workers=workers,
                drop_last=True,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                worker_init_fn=_worker_init if workers > 0 else None,
                prefetch_factor=4 if workers > 0 else None,
            )
        return self._dl_cache[name]

    def _set_lr(self, epoch: int) -> float:
        lr = lr_at_epoch(epoch, self.lr, self.milestones, self.gamma, self.warmup_epochs, self.warmup_factor)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _install_signals(self) -> Callable[[], None]:
        if not self.dist.is_main and not self.dist.enabled:
            return lambda: None
        old = {}

        def handler(signum, frame):
            if self._stop:  # a second signal: give up immediately
                raise KeyboardInterrupt
            self._stop = True
            log.warning("signal %d: finishing this step, then writing a resumable checkpoint", signum)

        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                old[s] = signal.signal(s, handler)
            except ValueError:  # not in the main thread
                pass

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    # -- checkpointing -----------------------------------------------------------------------------
    def _checkpoint_payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.raw_model.state_dict().items()}
        t, opt_meta = optimizer_state_to_flat(self.optimizer, "optim")
        tensors.update(t)
        mt, m_meta = self.method.state_tensors()
        tensors.update(mt)
        rt, r_meta = capture_rng()
        tensors.update(rt)
        state = {
            **self.run_state,
            "position": dict(self.pos),
            "global_step": self.global_step,
            "skipped_batches": self.skipped_batches,
            "optimizer": opt_meta,
            "method_state": m_meta,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": r_meta,
            "selection": self.selection.to_json(),
            "world_size": self.dist.world_size,
            "metrics_lines": self._logger.lines if self._logger is not None else None,
            # mid-phase only: at a phase boundary the next phase starts a new window
            "log_window": self._window if self.pos["batch"] > 0 else _empty_window(),
        }
        return tensors, state

    def save_checkpoint(self, name: str | None = None) -> Path | None:
        """Write a resumable checkpoint at the current position (rank 0 only)."""
        path = None
        if self.dist.is_main:
            tensors, state = self._checkpoint_payload()
            name = name or f"e{self.pos['epoch']:04d}-s{self.global_step:08d}"
            path = self.ckpt.save(name, tensors, state)
            log.debug("checkpoint %s", path)
        barrier()
        return path

    def _save_weights(self, name: str, extra: dict) -> None:
        if not self.dist.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.raw_model.state_dict().items()}
        self.ckpt.save(name, tensors, {**self.run_state, **extra, "weights_only": True}, pointer=False)

    def resume(self) -> bool:
        """Continue from the newest good checkpoint in the run folder; False when there is none."""
        good = self.ckpt.latest_good()
        if good is None:
            return False
        tensors, state = read_checkpoint(good)
        if state.get("method") and state["method"] != self.run_state.get("method"):
            raise CheckpointError(f"{good} was written by method {state['method']!r}, this run is {self.run_state.get('method')!r}")
        ws = state.get("world_size", 1)
        if ws != self.dist.world_size:
            log.warning("resuming a %d-replica checkpoint with %d replicas: the data order changes", ws, self.dist.world_size)
        missing = [k for k in ("position", "global_step", "optimizer", "selection") if k not in state]
        if missing or state.get("weights_only"):
            raise CheckpointError(f"{good} is not a resumable checkpoint (state.json lacks {', '.join(missing) or 'nothing'}"
                                  f"{'; it holds weights only' if state.get('weights_only') else ''}); restore it or start "
                                  "anew with --overwrite")
        msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.raw_model.load_state_dict(msd)
            optimizer_state_from_flat(self.optimizer, "optim", tensors, state["optimizer"])
            self.method.load_state_tensors(tensors, state.get("method_state", {}))
        except (RuntimeError, ValueError, KeyError) as e:  # shapes or names that do not fit this run's model
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{good} does not fit this run's model ({first}); resume with the settings the run "
                                  "was started with (its config.yaml), or start anew with --overwrite") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(tensors, state.get("rng", {}))
        self.pos = dict(state["position"])
        self.global_step = int(state["global_step"])
        self.skipped_batches = int(state.get("skipped_batches", 0))
        self.selection = Selection.from_json(state["selection"])
        self._resume_lines = state.get("metrics_lines")
        self._window = dict(state.get("log_window") or _empty_window())
        log.info("resumed from %s (epoch %d, phase %d, batch %d)", good, self.pos["epoch"], self.pos["phase"], self.pos["batch"])
        return True

    # -- the loop ----------------------------------------------------------------------------------
    def _iterate_phase(self, phase: Phase, epoch: int) -> Iterator[tuple[str, Any, bool]]:
        """Yield (kind, batch, advances_main) for one phase, starting at the saved batch position."""
        spec = self.loaders[phase.loader]
        spec.sampler.set_epoch(epoch, self.pos["batch"])
        main_iter = iter(self._loader(phase.loader))
        if phase.paired is None:
            for batch in main_iter:
                yield phase.kind, batch, True
            return
        p_loader, p_kind = phase.paired
        pspec = self.loaders[p_loader]

        def paired_stream() -> Iterator[Any]:
            while True:
                pspec.sampler.set_epoch(self.pos["ext_epoch"], self.pos["ext_batch"])
                if pspec.sampler.num_batches() == 0:
                    raise TrainingError(f"the {p_loader} loader has no full batch")
                yield from self._loader(p_loader)
                self.pos["ext_epoch"] += 1
                self.pos["ext_batch"] = 0

        ext = paired_stream()
        for batch in main_iter:
            yield p_kind, next(ext), False
            yield phase.kind, batch, True

    def step(self, kind: str, batch: Any, epoch: int) -> StepOutput | None:
        """One training step: run the method's stages, check each for finiteness, take each stage's optimizer
        step. Returns the main stage (with the other stages' terms among its metrics), or None when the batch
        was skipped (``nonfinite=skip``): then every parameter, buffer and optimizer state is as before it.
        :meth:`fit` calls it for every batch; the step benchmarks call it directly (a loader-less trainer)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1_000_003 + epoch * 10_007 + self.dist.rank * 101 + self.global_step) % (2**62))
        model = self.model
        if fault_active("nan-input", self.global_step + 1):  # test-only hook (rlq.engine.faults)
            model = _NaNInputs(self.model)
        ctx = StepContext(
            model=model, raw_model=self.raw_model, device=self.device, epoch=epoch, step=self.global_step,
            generator=gen, autocast=self._autocast, channels_last=self.channels_last,
        )
        undo = _Undo(self._buffer_modules()) if self.nonfinite == "skip" else None
        result = self.method.training_step(kind, batch, ctx)
        stages = iter([result]) if isinstance(result, StepOutput) else result
        side_metrics: dict[str, float] = {}
        stepped_scaler = False
        try:
            for out in stages:
                total = torch.stack([v.float() for v in out.losses.values()]).sum()
                if not self._stage_ok(out, total, kind, epoch):
                    if undo is not None:
                        undo.restore()
                        if stepped_scaler:  # forget this step's per-optimizer records, keep the scale as it was
                            self.scaler.update()
                            self.scaler.load_state_dict(undo.scaler_state)
                    return None
                if out.optimizer == MAIN:
                    self._backward_step(self.optimizer, total)
                    if self.scaler is not None:
                        self.scaler.update()  # once per step, after every optimizer stepped
                    if next(stages, None) is not None:
                        raise TrainingError(f"method {self.method.name!r}: the main stage of a step must come last")
                    out.metrics.update(side_metrics)
                    out.metrics["loss"] = float(total.detach())
                    return out
                opt = self.method.optimizers().get(out.optimizer)
                if opt is None:
                    raise TrainingError(f"method {self.method.name!r} yielded a stage for unknown optimizer {out.optimizer!r}")
                if undo is not None:
                    undo.save_optimizer(opt)
                    if self.scaler is not None and undo.scaler_state is None:
                        undo.scaler_state = self.scaler.state_dict()
                self._backward_step(opt, total)
                stepped_scaler = self.scaler is not None
                side_metrics.update({k: float(v.detach()) for k, v in out.losses.items()})
            raise TrainingError(f"method {self.method.name!r}: a {kind} step yielded no main stage")
        finally:
            close = getattr(stages, "close", None)
            if close is not None:
                close()

    def _backward_step(self, opt: torch.optim.Optimizer, total: torch.Tensor) -> None:
        """Back-propagate ``total`` into ``opt``'s parameters and step it (through GradScaler under fp16)."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(opt)
        else:
            total.backward()
            opt.step()

    def _buffer_modules(self) -> list[nn.Module]:
        return [self.raw_model, *self.method.train_modules()]

    def _stage_ok(self, out: StepOutput, total: torch.Tensor, kind: str, epoch: int) -> bool:
        """Every replica agrees whether this stage's terms are finite; False: skip the batch (or raise)."""
        bad_local = not bool(torch.isfinite(total))
        bad_any, stop_any = all_reduce_flags([bad_local, self._stop], self.device)
        self._stop = self._stop or stop_any
        if not bad_any:
            return True
        if bad_local:
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.losses.items())
            msg = f"non-finite loss at epoch {epoch}, step {self.global_step} ({kind} step): {terms}"
        else:
            msg = f"non-finite loss on another replica at epoch {epoch}, step {self.global_step}"
        if self.nonfinite == "skip":
            self.skipped_batches += 1
            log.warning("%s; skipping the batch (%d skipped so far)", msg, self.skipped_batches)
            self.optimizer.zero_grad(set_to_none=True)
            for opt in self.method.optimizers().values():
                opt.zero_grad(set_to_none=True)
            return False
        raise TrainingError(msg + ". The last good checkpoint is kept; lower the learning rate, check the data, "
                            "or pass train.nonfinite=skip to skip such batches.")

    def _evaluate(self, epoch: int, logger: MetricsLogger) -> None:
        """Every rank calls the evaluator (it shards the extraction); rank 0 uses its results and writes files.
        A failure on any rank stops every rank with :class:`~rlq.runtime.distributed.RankFailure`."""
        if self.evaluator is None:
            return
        sync_buffers(self.raw_model, self.dist)  # rank 0's BN statistics (the checkpointed ones) on every rank
        error = None
        try:
            t0 = time.time()
            test, val = self.evaluator(self.raw_model, epoch)
            if self.dist.is_main:
                self._record_evaluation(epoch, logger, test, val, time.time() - t0)
        except RankFailure:
            raise  # already agreed on by every rank (a failed sharded extraction)
        except Exception as e:  # noqa: BLE001 - re-raised (one process) or reported on every rank
            error = e
        check_all_ranks(error, f"evaluation after epoch {epoch}", self.dist)
        if self.dist.enabled:
            from ..runtime.distributed import broadcast_object

            self.selection = broadcast_object(self.selection)

    def _record_evaluation(self, epoch: int, logger: MetricsLogger, test: dict, val: dict | None, seconds: float) -> None:
        improved = self.selection.update(epoch, test, val)
        rec = {"type": "eval", "epoch": epoch, "step": self.global_step, "seconds": seconds}
        for name, r in test.items():
            rec.update({f"{name}_rank1": r["rank1"], f"{name}_mAP": r["mAP"]})
        for name, r in (val or {}).items():
            rec.update({f"val_{name}_rank1": r["rank1"], f"val_{name}_mAP": r["mAP"]})
        logger.log(rec)
        sel = test[self.selection.metric]
        # people count epochs from 1, as the presets do (train.epochs=3: epochs 1-3); the JSON files keep the 0-based index
        log.info("epoch %d/%d: %s R1 %.1f mAP %.1f%s", epoch + 1, self.epochs, self.selection.metric, 100 * sel["rank1"],
                 100 * sel["mAP"],
                 " (new best on test)" if improved["test"] else "")
        if improved["test"]:
            self._save_weights("best", {"selected_on": "test", "epoch": epoch, "results": test})
        if improved["val"]:
            self._save_weights("best_val", {"selected_on": "val", "epoch": epoch, "results": test, "val": val})
        fault_point("eval")  # test-only hook (rlq.engine.faults); a no-op unless RLQ_FAULT_INJECT is set
        atomic_write_json(self.run_dir / "results.json", {**self.run_state.get("summary", {}), **self.selection.report()})

    def open_run_dir(self, *, resume: bool = False, overwrite: bool = False) -> RunFolder:
        """Claim ``run_dir`` (see :mod:`rlq.engine.run_dir`): a folder holding files is refused unless
        ``resume`` (continue it; it must hold a good checkpoint) or ``overwrite`` (move it aside to
        ``<name>.old-<timestamp>`` and start anew). Only rank 0 touches the disk. :meth:`fit` calls it
        when the caller has not."""
        if self.run_folder is not None:
            raise TrainingError(f"{self.run_dir} is already open for this trainer")
        if self.dist.is_main:
            self.run_folder = claim_run_folder(self.run_dir, resume=resume, overwrite=overwrite)
        else:
            self.run_folder = RunFolder(self.run_dir, "resume" if resume else "overwrite" if overwrite else "new")
        return self.run_folder

    def fit(self, resume: bool | None = None, overwrite: bool = False) -> dict:
        """Train to ``epochs``; returns the selection report (also written to ``results.json``).

        By default ``run_dir`` must be new or empty; ``resume=True`` continues the run in it from its newest
        good checkpoint, ``overwrite=True`` moves an earlier run aside first (see :meth:`open_run_dir`).
        If training fails before its first step, a folder this call created is removed again.
        """
        if self.run_folder is None:
            self.open_run_dir(resume=bool(resume), overwrite=overwrite)
        elif resume is not None and bool(resume) != self.run_folder.resume:
            raise ValueError(f"fit(resume={resume}) but the run folder was opened with mode {self.run_folder.mode!r}")
        resume = self.run_folder.resume
        start_step = self.global_step
        try:
            if resume and not self.resume():
                raise CheckpointError(f"--resume: {self.run_dir} holds no resumable checkpoint")
            start_step = self.global_step
            return self._fit(resume)
        except BaseException:
            if self.global_step == start_step and self.dist.is_main:
                self.run_folder.abandon()  # nothing trained: leave no folder behind (never for a resumed run)
            raise
        finally:
            self.run_folder.release()  # the folder's lock (rlq.engine.run_dir): the run is over

    def _fit(self, resume: bool) -> dict:
        logger = self._logger = MetricsLogger(self.run_dir, enabled=self.dist.is_main, tensorboard=self.tensorboard,
                                              resume_step=self.global_step if resume else None,
                                              resume_lines=self._resume_lines if resume else None)
        restore_signals = self._install_signals()
        try:
            while self.pos["epoch"] < self.epochs:
                epoch = self.pos["epoch"]
                lr = self._set_lr(epoch)
                self.method.on_epoch_start(epoch)
                self.raw_model.train()
                for m in self.method.train_modules():
                    m.train()
                phases = self.method.phases(epoch)
                while self.pos["phase"] < len(phases):
                    phase = phases[self.pos["phase"]]
                    self._run_phase(phase, epoch, lr, logger)
                    self.pos["phase"] += 1
                    self.pos["batch"] = 0
                due = (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs
                if due and epoch >= self.eval_start:
                    self._evaluate(epoch, logger)
                self.pos = {**self.pos, "epoch": epoch + 1, "phase": 0, "batch": 0}
                if (epoch + 1) % self.ckpt_every_epochs == 0 or epoch + 1 == self.epochs:
                    self.save_checkpoint()
        finally:
            restore_signals()
            logger.close()
            self._logger = None
        report = self.selection.report()
        report["skipped_batches"] = self.skipped_batches
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "results.json", {**self.run_state.get("summary", {}), **report})
        return report

    def _run_phase(self, phase: Phase, epoch: int, lr: float, logger: MetricsLogger) -> None:
        from tqdm.auto import tqdm

        spec = self.loaders[phase.loader]
        spec.sampler.set_epoch(epoch, 0)
        total_batches = spec.sampler.num_batches()
        if self.max_steps:
            total_batches = min(total_batches, self.max_steps)
        if total_batches == 0:
            raise TrainingError(
                f"the {phase.loader} loader yields no full batch (batch size {spec.batch_size}); use a smaller batch size "
                "or more identities"
            )
        if self.pos["batch"] == 0:  # a phase from its start has a new window; one resumed mid-phase goes on with its own
            self._window = _empty_window()
        if self.pos["batch"] >= total_batches:
            return
        bar = tqdm(total=total_batches, initial=self.pos["batch"], desc=f"epoch {epoch + 1}/{self.epochs} {phase.name}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        t_data = time.perf_counter()
        data_time = step_time = 0.0
        win = self._window
        try:
            for kind, batch, advances in self._iterate_phase(phase, epoch):
                t0 = time.perf_counter()
                data_time += t0 - t_data
                out = self.step(kind, batch, epoch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                step_time += time.perf_counter() - t0
                self.global_step += 1
                fault_point("step", self.global_step)  # test-only hook (rlq.engine.faults)
                if fault_active("hold", self.global_step) and self.dist.is_main:  # test-only: wait for a signal
                    fault_hold(self.run_dir, lambda: self._stop)
                if not advances:
                    self.pos["ext_batch"] += 1
                if out is not None:
                    win["images"] += out.num_images
                    sums = win["sums"]
                    for k, v in {**{kk: float(vv.detach()) for kk, vv in out.losses.items()}, **out.metrics}.items():
                        sums[k] = sums.get(k, 0.0) + v
                    win["n"] += 1
                if advances:
                    self.pos["batch"] += 1
                    bar.update(1)
                if self.global_step % self.log_every == 0 and win["n"]:
                    avg = {k: v / win["n"] for k, v in win["sums"].items()}
                    ips = win["images"] / max(step_time + data_time, 1e-9)
                    rec = {"type": "train", "epoch": epoch, "phase": phase.name, "step": self.global_step, "lr": lr,
                           "img_per_s": ips, "data_s": data_time, "step_s": step_time, **avg}
                    logger.log(rec)
                    bar.set_postfix(loss=f"{avg.get('loss', float('nan')):.3f}", img_s=f"{ips:.0f}",
                                    data=f"{data_time / max(data_time + step_time, 1e-9):.0%}")
                    win = self._window = _empty_window()
                    data_time, step_time = 0.0, 0.0
                # A stop waits for the main step of a pair (step alternation): the resumed run starts with a pair.
                if self._stop and advances:
                    path = self.save_checkpoint()
                    raise TrainingInterrupted(
                        f"stopped by a signal at epoch {epoch}, step {self.global_step}; resumable checkpoint "
                        f"{path or 'written by rank 0'}: continue with --resume"
                    )
                if self.ckpt_every_steps and self.global_step % self.ckpt_every_steps == 0 and advances:
                    self.save_checkpoint()
                if advances and self.max_steps and self.pos["batch"] >= self.max_steps:
                    break
                t_data = time.perf_counter()
        finally:
            bar.close()
