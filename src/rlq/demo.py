"""`rlq demo`: the paper's story on SynthCC, end to end, on a CPU in minutes.

Generates SynthCC (if missing), clusters its keypoints into pose clusters, trains a small teacher on the
clean external split, then CAL, the Base Model, CAP, BM+TAD and RLQ on the low-quality target, and
writes ``results.json`` (with its own wall-clock timing in ``_meta.timing``) and ``report.md``. To run on 2
CPU cores it fine-tunes the ImageNet-pretrained ``mobilenetv2`` at a 128x64 input for 3 epochs (the paper:
ResNet-50, 384x192, 200 epochs, docs/method.md §6); the numbers are therefore a demonstration of the pipeline,
not the paper's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RlqError, TrainingError
from .io import atomic_write_json, atomic_write_text
from .methods.registry import get_method
from .report_format import fixed, pct
from .spec import RunSpec

__all__ = ["DemoSettings", "DemoRunFailed", "run_demo", "demo_tasks", "chance_rank1", "comparison_pairs", "DEMO_METHODS"]

log = logging.getLogger(__name__)

DEMO_METHODS = ("cal", "bm", "cap", "tad", "rlq")


@dataclass
class DemoSettings:
    """What the demo runs. Training settings come from the shipped presets ``configs/synthcc/<method>.yaml``
    and ``configs/teacher/synthcc.yaml`` (ImageNet-pretrained mobilenetv2 at 128x64, 3 epochs), so
    ``rlq train --config configs/synthcc/rlq.yaml`` reproduces a demo row; the fields below override them."""

    synth_preset: str = "default"
    seed: int = 0  # SynthCC's generation seed
    train_seed: int | None = None  # the trainings' train.seed (None: seed + 1)
    methods: tuple[str, ...] = DEMO_METHODS
    epochs: int | None = None  # None: the presets' (3; teacher 3)
    batch_size: int | None = None  # None: the presets' (32)
    threads: int = 0  # torch CPU threads per training (0: the cores / jobs)
    jobs: int = 0  # trainings side by side, each in its own process (0: auto, see demo_jobs)
    analysis: bool = True
    max_steps_per_epoch: int = 0
    overrides: tuple[str, ...] = ()  # extra key=value overrides for every run
    resume: bool = False  # continue unfinished method runs from their checkpoints
    overwrite: bool = False  # retrain unfinished runs from scratch, moving them aside (<name>.old-<timestamp>)
    retrain_finished: bool = False  # with overwrite: finished runs too (the CLI sets it when --methods names them)
    stop_grace_s: float = 120.0  # side by side: how long stopped runs may take to write their checkpoints


class DemoRunFailed(TrainingError):
    """A training of the demo failed; the runs beside it were stopped with resumable checkpoints."""


def _chance_terms(q_pids, g_pids, q_camids, g_camids, q_clothes=None, g_clothes=None, mode: str = "general") -> list[float]:
    """#good / #(non-junk gallery items) for each valid query (one with a true match) under ``mode``'s rule."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    vals = []
    for i in range(len(q_pids)):
        same_id = g_pids == q_pids[i]
        same_cam = g_camids == q_camids[i]
        if mode == "general":
            good, junk = same_id & ~same_cam, same_id & same_cam
        else:
            same_clo = np.asarray(g_clothes) == np.asarray(q_clothes)[i]
            if mode == "cc":
                good, junk = same_id & ~same_cam & ~same_clo, same_id & (same_cam | same_clo)
            else:
                good, junk = same_id & ~same_cam & same_clo, same_id & (same_cam | ~same_clo)
        n_good = int(good.sum())
        if n_good:
            vals.append(n_good / int((~junk).sum()))
    return vals


def chance_rank1(q_pids, g_pids, q_camids, g_camids, q_clothes=None, g_clothes=None, mode: str = "general") -> float:
    """Expected rank-1 of a random ranking: mean over valid queries of #good / #(non-junk gallery items)."""
    vals = _chance_terms(q_pids, g_pids, q_camids, g_camids, q_clothes, g_clothes, mode)
    return float(np.mean(vals)) if vals else float("nan")


def _spec(s: DemoSettings, preset: str, root: Path, run_dir: Path, teacher: bool = False) -> RunSpec:
    """A RunSpec from a shipped SynthCC preset with the demo's paths and overrides."""
    from omegaconf import OmegaConf

    from .config import load_config

    ov = [f"output={run_dir}", f"tad.teacher={run_dir.parent / 'teacher'}", f"tad.external_root={root / 'external'}",
          f"data.root={root / 'external' if teacher else root}", f"train.seed={s.seed + 1 if s.train_seed is None else s.train_seed}", f"train.num_threads={s.threads}",
          f"train.max_steps_per_epoch={s.max_steps_per_epoch}", "train.tensorboard=false"]
    if s.batch_size:
        ov += [f"data.batch_size={s.batch_size}", f"tad.external_batch_size={s.batch_size}"]
    if s.epochs:
        e = s.epochs
        adv = e if teacher else max(1, e // 3)
        ov += [f"train.epochs={e}", f"train.eval_every={e if teacher else max(1, e // 3)}",
               f"optim.milestones=[{max(1, int(e * 0.6))},{max(1, int(e * 0.85))}]",
               f"loss.start_epoch_cc={adv}", f"loss.start_epoch_adv={adv}"]
    cfg = load_config(preset, [*ov, *s.overrides], schema=RunSpec)
    return OmegaConf.to_object(cfg)


#: Relative cost of a demo run (measured, docs/demo.md): the scheduler starts the teacher first (TAD and RLQ
#: distil from it), then the longest ready run, so two side-by-side jobs finish close together.
_RUN_COST = {"teacher": 9, "rlq": 5, "tad": 4, "cap": 3, "bm": 2, "cal": 1}


def demo_jobs(s: DemoSettings, device: str = "auto") -> tuple[int, int]:
    """``(jobs, threads per job)`` for the demo's trainings.

    On a CPU with at least 2 cores the auto setting runs 2 trainings side by side, each in its own process with
    half the cores: small networks use one core far better than two, so on 2 cores two 1-thread runs finish the
    demo's trainings about 20 % sooner than one 2-thread run after another (docs/demo.md). On CUDA it runs
    them one after another. A training's numbers depend on its thread count (float sums in another order), not on
    what runs beside it.
    """
    import torch

    cores = os.cpu_count() or 1
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    jobs = s.jobs if s.jobs > 0 else (1 if cuda or cores < 2 else 2)
    threads = s.threads if s.threads > 0 else (0 if jobs == 1 else max(1, cores // jobs))
    return jobs, threads


def _train_job(spec: RunSpec, overwrite: bool, resume: bool) -> dict:
    """One training (in this process, or in a child of :func:`_train_runs`)."""
    from .engine.recipe import run_training
    from .engine.run_dir import folder_holds_files

    if overwrite and folder_holds_files(Path(spec.output)):
        return run_training(spec, overwrite=True)
    return run_training(spec, resume=resume and folder_holds_files(Path(spec.output)))


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _die_with_parent() -> None:
    """Linux: this child gets SIGTERM when the demo process dies, however it dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux: the demo's own clean-up still stops its children
        pass


def _child(conn, spec: RunSpec, overwrite: bool, resume: bool) -> None:
    """A side-by-side training: its own process group, so a Ctrl-C in the terminal (or `timeout -s INT`) reaches
    only the demo, which stops each child exactly once (SIGTERM: the trainer finishes its step and writes a
    resumable checkpoint). Until the trainer takes over the signals, SIGTERM raises here, so a run stopped before
    its first step leaves no folder (rlq.engine.run_dir)."""
    import signal

    os.setpgrp()
    _die_with_parent()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        conn.send(("ok", _train_job(spec, overwrite, resume)))
    except BaseException as e:  # noqa: BLE001 - reported to the demo, which stops the others and exits non-zero
        from .errors import root_message

        msg = root_message(e) if isinstance(e, RlqError) else (f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        conn.send(("error", msg.strip().splitlines()[0] if msg.strip() else type(e).__name__))
    finally:
        conn.close()


def _check_folders(todo: list[tuple[str, RunSpec]], s: DemoSettings, out: Path | None) -> None:
    """Every run folder the demo will train into is checked before anything trains: one error lists each folder
    that cannot be used as asked, with the command that can."""
    from .engine.checkpoint import CheckpointManager
    from .engine.run_dir import RunFolderError, check_run_folder, folder_holds_files

    where = f" --out {out}" if out is not None else ""
    problems = []
    for name, spec in todo:
        p = Path(spec.output)
        try:
            if s.overwrite:
                check_run_folder(p, overwrite=True)
            elif s.resume and folder_holds_files(p):
                check_run_folder(p, resume=True)
            else:
                check_run_folder(p)
        except RunFolderError as e:
            if "in use" in str(e):
                problems.append(str(e))
            elif s.resume or CheckpointManager(p, create=False).latest_good() is None:
                problems.append(f"`{name}` ({p}) holds no resumable checkpoint: retrain it with "
                                f"`rlq demo{where} --methods {name} --overwrite` (the old folder is moved aside)")
            else:
                problems.append(f"`{name}` ({p}) is unfinished: continue it with `rlq demo{where} --resume`, or start "
                                f"it anew with `rlq demo{where} --overwrite` (the old folder is moved aside)")
    if problems:
        raise RunFolderError("; ".join(problems))


def _train_runs(tasks: list[tuple[str, RunSpec]], s: DemoSettings, jobs: int, say: Callable[[str], None],
                on_done: Callable[[str, dict, float], None] | None = None, out: Path | None = None
                ) -> dict[str, tuple[dict, float]]:
    """Train every task not finished earlier; ``{name: (report, seconds)}`` in completion order, each also passed
    to ``on_done(name, report, seconds)`` as it arrives (seconds 0 for a run finished earlier).

    Every folder is checked first (:func:`_check_folders`). ``jobs`` > 1: that many trainings side by side, each
    in a spawned child process of its own (no forked OpenMP state), without progress bars; the teacher first, and
    runs that distil from it only once it is finished. When a run fails, or the demo gets SIGINT / SIGTERM, every
    running child is stopped once (it finishes its step and writes a resumable checkpoint; after
    ``s.stop_grace_s``, or a second signal, it is killed, which exact resume also survives) and the demo raises:
    no process is left behind, and ``--resume`` continues each run. Also used by benchmarks/synthcc_methods.py.
    """
    done: dict[str, tuple[dict, float]] = {}

    def record(name: str, rep: dict, seconds: float) -> None:
        done[name] = (rep, seconds)
        _say_done(name, rep, seconds, say)
        if on_done is not None:
            on_done(name, rep, seconds)

    todo: list[tuple[str, RunSpec]] = []
    for name, spec in tasks:
        rep = None if (s.overwrite and s.retrain_finished) else _finished(Path(spec.output), spec.train.epochs)
        if rep is None:
            todo.append((name, spec))
        else:
            say(f"`{name}`: finished earlier in {spec.output}; reused")
            record(name, rep, 0.0)
    _check_folders(todo, s, out)
    if jobs <= 1 or len(todo) <= 1:
        for name, spec in todo:
            say(_start_text(name, spec))
            t0 = time.time()
            rep = _train_job(spec, s.overwrite, s.resume)
            record(name, rep, time.time() - t0)
        return done
    # two progress bars would garble each other
    todo = [(n, dataclasses.replace(sp, train=dataclasses.replace(sp.train, progress=False))) for n, sp in todo]
    _side_by_side(todo, s, jobs, say, record, out)
    return done


def _side_by_side(todo: list[tuple[str, RunSpec]], s: DemoSettings, jobs: int, say: Callable[[str], None],
                  record: Callable[[str, dict, float], None], out: Path | None) -> None:
    import multiprocessing as mp
    import signal
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    running: dict[str, tuple[Any, Any, RunSpec, float]] = {}  # name -> (process, connection, spec, start)

    def is_teacher(spec: RunSpec) -> bool:
        return spec.role == "teacher"

    def ready(item: tuple[str, RunSpec]) -> bool:  # runs that distil wait until the teacher is trained
        teacher_busy = any(is_teacher(sp) for _, sp in todo) or any(is_teacher(sp) for _, _, sp, _ in running.values())
        return is_teacher(item[1]) or not get_method(item[1].method).needs_teacher or not teacher_busy

    def cost(item: tuple[str, RunSpec]) -> int:
        return _RUN_COST.get("teacher" if is_teacher(item[1]) else item[1].method, 0)

    old_term = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops the demo as Ctrl-C does (not a hard exit)
    except ValueError:  # not the main thread: signals stay as they are
        old_term = None
    existed = {n: Path(sp.output).exists() for n, sp in todo}
    try:
        while todo or running:
            for item in sorted(filter(ready, todo), key=lambda t: -cost(t))[: jobs - len(running)]:
                todo.remove(item)
                name, spec = item
                say(_start_text(name, spec) + f" (side by side, {jobs} at a time)")
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(send, spec, s.overwrite, s.resume), name=f"rlq-demo-{name}",
                                   daemon=False)
                proc.start()
                send.close()
                running[name] = (proc, recv, spec, time.time())
            wait([r[1] for r in running.values()] + [r[0].sentinel for r in running.values()])
            for name, (proc, conn, _spec, t0) in list(running.items()):
                if not (conn.poll() or not proc.is_alive()):
                    continue
                status, payload = _child_result(proc, conn)
                del running[name]
                if status != "ok":
                    raise DemoRunFailed(f"`{name}` failed: {payload}")
                record(name, payload, time.time() - t0)
    except BaseException as e:
        stopped = _stop_children(running, s.stop_grace_s, say)
        _remove_unstarted(running, existed, say)
        where = f" --out {out}" if out is not None else ""
        hint = (f"; {', '.join(f'`{n}`' for n in stopped)} stopped with resumable checkpoints" if stopped else "")
        if isinstance(e, DemoRunFailed):
            raise DemoRunFailed(f"{e}{hint}; fix the cause, then continue with `rlq demo{where} --resume`") from None
        if isinstance(e, KeyboardInterrupt):
            raise TrainingError(f"the demo was stopped by a signal{hint}; continue with `rlq demo{where} --resume`") from None
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _child_result(proc, conn) -> tuple[str, Any]:
    """(status, report or message) of a finished child; a child that died without a word was killed."""
    msg = None
    try:
        if conn.poll():
            msg = conn.recv()
    except (EOFError, OSError):
        msg = None
    proc.join()
    conn.close()
    if msg is None:
        return "error", f"the training process exited with code {proc.exitcode} without a result (killed?)"
    return msg


def _stop_children(running: dict, grace_s: float, say: Callable[[str], None]) -> list[str]:
    """Stop every running child exactly once and wait for it; kill what outlives ``grace_s`` or a second signal.
    Returns the names that ended with a resumable checkpoint (their folder holds one)."""
    import signal

    from .engine.checkpoint import CheckpointManager

    if not running:
        return []
    say(f"stopping {', '.join(f'`{n}`' for n in running)}: each finishes its step and writes a resumable checkpoint "
        "(a second Ctrl-C kills them; exact resume survives that too)")
    for proc, *_ in running.values():
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    try:
        for proc, *_ in running.values():
            proc.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    for proc, conn, _, _ in running.values():
        if proc.is_alive():
            proc.kill()
        proc.join()
        conn.close()
    return [n for n, (_, _, spec, _) in running.items()
            if CheckpointManager(Path(spec.output), create=False).latest_good() is not None]


def _remove_unstarted(running: dict, existed: dict[str, bool], say: Callable[[str], None]) -> None:
    """A run killed before its first checkpoint in a folder this demo created leaves no folder (as one stopped by
    the trainer itself would)."""
    from .engine.checkpoint import CheckpointManager
    from .engine.run_dir import lock_holder

    for name, (_, _, spec, _) in running.items():
        p = Path(spec.output)
        if (p.is_dir() and not existed.get(name, True) and lock_holder(p) is None
                and CheckpointManager(p, create=False).latest_good() is None):
            shutil.rmtree(p, ignore_errors=True)
            say(f"`{name}` had not written a checkpoint yet: removed its folder {p}")


def _start_text(name: str, spec: RunSpec) -> str:
    if spec.role == "teacher":
        return (f"training the teacher (Base Model, docs/method.md §9) on the clean external split for "
                f"{spec.train.epochs} epochs ...")
    return f"training `{name}` ..."


def _say_done(name: str, rep: dict, seconds: float, say: Callable[[str], None]) -> None:
    r = _short(rep)
    if name == "teacher" or "cc" not in r:
        say(f"  {name}: done ({seconds:.0f} s)")
        return
    say(f"  {name}: CC R1 {_pct(r['cc']['rank1'])} mAP {_pct(r['cc']['mAP'])} | general R1 "
        f"{_pct(r['general']['rank1'])} mAP {_pct(r['general']['mAP'])}  ({seconds:.0f} s)")


def _finished(run_dir: Path, epochs: int) -> dict | None:
    """The results of a completed earlier run in ``run_dir`` (so a re-run of the demo skips it)."""
    f = run_dir / "results.json"
    try:
        r = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    last = r.get("test@last") or {}
    return r if last.get("epoch") == epochs - 1 else None


def run_demo(out: str | os.PathLike = "runs/demo", settings: DemoSettings | None = None, *, progress: bool = True,
             say: Callable[[str], None] = print) -> dict:
    """Run the demo into ``out``; returns the content of ``results.json``. ``out`` is locked while it runs
    (rlq.engine.run_dir): a second demo there is refused with this one's PID."""
    from .engine.run_dir import lock_folder

    s = settings or DemoSettings()
    out = Path(out)
    _check_demo_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out, "rlq demo")  # one demo at a time in a folder (each training also locks its own)
    try:
        return _run_demo(out, s, progress, say)
    finally:
        lock.release()


#: Written into the demo's folder when it starts, so a later demo knows the folder is a demo's.
DEMO_MARKER = ".rlq-demo"


def _check_demo_folder(out: Path) -> None:
    """The demo writes into an empty folder or an earlier demo's, never into a training run or other files."""
    from .engine.run_dir import RunFolderError, check_run_folder, folder_holds_files

    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; choose another --out")
    if out.is_dir():
        check_run_folder(out, overwrite=True)  # refused while another process holds it, naming its PID
    if not folder_holds_files(out) or (out / DEMO_MARKER).is_file():
        return
    names = {p.name for p in out.iterdir()}
    legacy = (out / "synthcc" / "synthcc.json").is_file() or "report.md" in names  # a demo from before the marker
    if legacy and not {"checkpoints", "config.yaml", "meta.json"} & names:
        return
    what = "a training run (checkpoints/, config.yaml)" if {"checkpoints", "config.yaml"} & names else "other files"
    raise RunFolderError(f"--out {out} holds {what}, not an earlier demo; the demo writes synthcc/, teacher/ and one "
                         "folder per method there: choose an empty or new --out")


def demo_tasks(out: str | os.PathLike, s: DemoSettings) -> list[tuple[str, RunSpec]]:
    """The demo's trainings as (name, RunSpec): the teacher when a method distils, then each method."""
    out = Path(out)
    root = out / "synthcc"
    tasks: list[tuple[str, RunSpec]] = []
    if any(get_method(m).needs_teacher for m in s.methods):
        tasks.append(("teacher", _spec(s, "configs/teacher/synthcc.yaml", root, out / "teacher", teacher=True)))
    tasks += [(m, _spec(s, f"configs/synthcc/{m.replace('+', '_')}.yaml", root, out / m)) for m in s.methods]
    return tasks


def _run_demo(out: Path, s: DemoSettings, progress: bool, say: Callable[[str], None]) -> dict:
    from .attributes.pose_io import cluster_dataset_poses
    from .data.datasets import load_dataset
    from .data.synth import generate_synthcc, is_synthcc_root
    from .evaluation.bootstrap import ci_info

    if not (out / DEMO_MARKER).is_file():
        atomic_write_text(out / DEMO_MARKER, "a folder of `rlq demo` (see docs/demo.md)\n")
    timings: dict[str, float] = {}
    t_all = time.time()
    root = out / "synthcc"
    probe = _spec(s, "configs/synthcc/bm.yaml", root, out / "bm")
    say(f"rlq demo: backbone `{probe.model.backbone}` at {probe.data.height}x{probe.data.width}, {probe.train.epochs} epochs "
        f"per method, on SynthCC `{s.synth_preset}` (the paper: ResNet-50 at 384x192 for 200 epochs; these settings "
        "are sized for 2 CPU cores); presets configs/synthcc/*.yaml")

    t0 = time.time()
    made = {"synthcc": not is_synthcc_root(root), "pose_clusters": not (root / "pose_clusters.csv").is_file()}
    if made["synthcc"]:
        say(f"generating SynthCC `{s.synth_preset}` into {root} ...")
        generate_synthcc(root, preset=s.synth_preset, seed=s.seed, workers=None, progress=progress)
    timings["synthcc"] = time.time() - t0

    ds = load_dataset("synthcc", root)
    t0 = time.time()
    pose_csv = root / "pose_clusters.csv"
    if not pose_csv.is_file():
        hist = cluster_dataset_poses(root, ds.train, root / "poses", pose_csv, ks=(15,), seed=0)
        say("pose clusters (R_LA_15): " + ", ".join(f"{k}: {v}" for k, v in sorted(hist["R_LA_15"].items())))
    timings["pose_clusters"] = time.time() - t0

    results: dict[str, Any] = {}
    q, g = ds.split("query"), ds.split("gallery")
    args = ([x.pid for x in q], [x.pid for x in g], [x.camid for x in q], [x.camid for x in g],
            [x.clothes_id for x in q], [x.clothes_id for x in g])
    terms = {m: _chance_terms(*args, mode=m) for m in ("general", "cc")}
    results["chance_rank1"] = {m: float(np.mean(v)) if v else float("nan") for m, v in terms.items()}
    results["valid_queries"] = {m: len(v) for m, v in terms.items()}

    # The runs: the teacher (TAD and RLQ distil from it), then the methods; `jobs` of them side by side.
    jobs, threads = demo_jobs(s, probe.train.device)
    tasks = demo_tasks(out, dataclasses.replace(s, threads=threads))
    if jobs > 1:
        say(f"{jobs} trainings side by side, {threads} thread(s) each (--jobs / --threads)")
    t0 = time.time()
    trained = _train_runs(tasks, s, jobs, say, out=out)
    timings["training (wall)"] = time.time() - t0
    for name, _ in tasks:
        rep, seconds = trained[name]
        timings[name] = seconds
        results[name] = {"external": _short(rep)} if name == "teacher" else _short(rep)
    meta_jobs = {"jobs": jobs, "threads_per_job": threads}
    diffs = _paired_differences(out, s.methods, say, num_resamples=probe.eval.bootstrap_resamples,
                                seed=probe.eval.bootstrap_seed)
    if diffs:
        results["paired_differences"] = diffs

    analysis: dict[str, Any] = {}
    if s.analysis:
        t0 = time.time()
        try:
            analysis = _analysis(out, root, ds, s, probe, say)
        except (ImportError, RlqError) as e:  # e.g. matplotlib missing (the [viz] extra): numbers still written
            say(f"analysis skipped: {e}")
        timings["analysis"] = time.time() - t0
    timings["total"] = time.time() - t_all
    meta = {"settings": dataclasses.asdict(s), "seconds": timings, **meta_jobs,
            "timing": _timing(timings, [n for n, _ in tasks], made, analysis, meta_jobs),
            "run": {"backbone": probe.model.backbone, "height": probe.data.height, "width": probe.data.width,
                    "epochs": probe.train.epochs, "batch_size": probe.data.batch_size, "presets": "configs/synthcc/*.yaml"},
            "selection": "test@last: the weights after the last epoch (no selection on the test set)",
            "confidence_intervals": ci_info(probe.eval.bootstrap_resamples, probe.eval.bootstrap_seed)}
    payload = {**results, "_meta": meta}
    if analysis:
        payload["_analysis"] = analysis
    atomic_write_json(out / "results.json", payload)
    atomic_write_text(out / "report.md", _report(results, analysis, meta, out))
    say(f"wrote {out / 'results.json'} and {out / 'report.md'} in {fixed(timings['total'] / 60)} min")
    return payload


def _timing(timings: dict[str, float], trainings: list[str], made: dict[str, bool], analysis: dict,
            jobs: dict[str, int]) -> dict[str, Any]:
    """This run's own wall-clock timing for results.json (``_meta.timing``; README, The demo, quotes it):
    ``end_to_end`` only when it generated SynthCC and the pose clusters, trained every run itself and ran the
    analyses."""
    reused = [n for n in trainings if not timings.get(n)]  # a run finished earlier is reused with 0 s
    return {
        "what": "wall-clock seconds of this `rlq demo` run (time.time()); trainings_s are each run's own wall time, "
                "which overlap when jobs > 1; training_wall_s is the wall time of all of them",
        "total_s": timings["total"],
        "end_to_end": all(made.values()) and not reused and "analysis" in timings,
        "synthcc_s": timings["synthcc"], "synthcc_generated": made["synthcc"],
        "pose_clusters_s": timings["pose_clusters"], "pose_clusters_made": made["pose_clusters"],
        "training_wall_s": timings["training (wall)"],
        "trainings_s": {n: timings[n] for n in trainings},
        "reused_runs": reused,
        "analysis_s": timings.get("analysis"),
        "analyses_s": dict(((analysis or {}).get("numbers") or {}).get("seconds") or {}),
        **jobs, "cpu_count": os.cpu_count(),
    }


def _short(rep: dict) -> dict:
    """{"general": {"rank1", "mAP", "rank1_ci", "mAP_ci"}, "cc": {...}, "cc/LQ": ...} from a run's test@last results."""
    res = (rep.get("test@last") or {}).get("results", {})
    keep = ("rank1", "mAP", "rank1_ci", "mAP_ci")
    return {name: {k: r[k] for k in keep if k in r} for name, r in res.items()}


def comparison_pairs(methods) -> list[tuple[str, str]]:
    """(a, b) pairs reported as a - b: every method against `bm`, then `rlq` against its parts and `cal`."""
    ms = list(methods)
    pairs = [(m, "bm") for m in ms if m != "bm" and "bm" in ms]
    pairs += [("rlq", b) for b in ("cap", "tad", "cal") if "rlq" in ms and b in ms]
    return pairs


def _paired_differences(out: Path, methods, say, **boot: Any) -> dict:
    """Paired bootstrap differences on the same test queries, from each run's per-query file of its last epoch."""
    from .engine.evaluate import run_per_query
    from .evaluation.bootstrap import compare_runs, load_per_query

    pairs = comparison_pairs(methods)
    if not pairs:
        return {}
    try:
        pq = {m: load_per_query(run_per_query(out / m, "test@last")) for m in {x for p in pairs for x in p}}
        return compare_runs(pq, pairs, **boot)
    except RlqError as e:  # e.g. runs from an older rlq without per-query files
        say(f"paired differences skipped: {e}")
        return {}


def _analysis(out: Path, root: Path, ds, s: DemoSettings, probe: RunSpec, say) -> dict:
    """Pictures and numbers for the report: pose clusters, ranked results, robustness, LQ clusters, quality buckets."""
    from .attributes.sheets import cluster_contact_sheet
    from .data.sidecars import read_pose_clusters

    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    info: dict[str, Any] = {"figures": {}}
    labels = read_pose_clusters(root / "pose_clusters.csv")
    by_cluster: dict[int, list[str]] = {}
    for smp in ds.train:
        by_cluster.setdefault(labels.get(smp.key, 0), []).append(smp.path)
    cluster_contact_sheet(by_cluster, figs / "pose_clusters.png", per_cluster=8, seed=0)
    info["figures"]["pose_clusters"] = "figures/pose_clusters.png"
    shutil.copyfile(root / "preview.png", figs / "synthcc_preview.png")
    info["figures"]["synthcc_preview"] = "figures/synthcc_preview.png"
    try:
        from .analysis import demo_analysis  # issue 6 analyses, when installed
    except ImportError:
        return info
    extra = demo_analysis(out, root, ds, list(s.methods), height=probe.data.height, width=probe.data.width, say=say)
    figures = {**info["figures"], **extra.pop("figures", {})}
    info.update(extra)
    info["figures"] = figures
    return info


def _reading(results: dict) -> list[str]:
    """Plain statements of what the table shows and what it does not (from the numbers, no judgement calls)."""
    out = ["## What these numbers show, and what they do not", ""]
    n = (results.get("valid_queries") or {}).get("cc")
    ch = (results.get("chance_rank1") or {}).get("cc", float("nan"))
    if n:
        out.append(f"* {n} clothes-changing queries: one query is {100 / n:.2f} rank-1 points. Chance (a random "
                   f"ranking) is {_pct(ch)} % CC rank-1.")
    for m in DEMO_METHODS:
        r = (results.get(m) or {}).get("cc")
        if not r or ch != ch or ch <= 0:
            continue
        lo = (r.get("rank1_ci") or [float("nan")])[0]
        above = "its whole interval lies above chance" if lo == lo and lo > ch else "its interval reaches down to chance"
        out.append(f"* `{m}`: CC rank-1 {_pct(r['rank1'])} % = {fixed(r['rank1'] / ch)}x chance; {above}.")
    diffs = results.get("paired_differences") or {}
    resolved, unresolved = [], []
    for pair, d in diffs.items():
        c = d.get("cc")
        if not c:
            continue
        lo, hi = c["rank1_diff_ci"]
        (resolved if lo > 0 or hi < 0 else unresolved).append(f"{pair.replace('-', ' - ')} ({_diff(c, 'rank1')})")
    if resolved:
        out.append("* CC rank-1 differences these queries resolve (95 % interval excludes 0): " + "; ".join(resolved) + ".")
    if unresolved:
        out.append("* CC rank-1 differences they do not resolve (interval includes 0): " + "; ".join(unresolved) + ".")
    out += ["* Not shown: the paper's numbers (other backbone, input size, schedule and real data); training noise "
            "(one training seed: the intervals resample queries only; `benchmarks/synthcc_methods.py` trains 3 seeds); "
            "how the methods rank on real clothes-changing data (SynthCC's identity cues are drawn, not photographed).", ""]
    return out


def _pct(x: float | None) -> str:
    """Percent with one decimal; "n/a" for a metric with no matching query (NaN, or null read back from JSON)."""
    return "n/a" if x is None or x != x else pct(x)


def _ci(r: dict | None, metric: str) -> str:
    """``41.2 [38.1, 44.0]``: the value and its 95 % bootstrap interval (percent), when known."""
    if not r or metric not in r:
        return "n/a"
    iv = r.get(f"{metric}_ci")
    return _pct(r[metric]) if not iv else f"{_pct(r[metric])} [{_pct(iv[0])}, {_pct(iv[1])}]"


def _diff(d: dict | None, metric: str) -> str:
    if not d:
        return "n/a"
    v, (lo, hi) = d[f"{metric}_diff"], d[f"{metric}_diff_ci"]
    return f"{pct(v, sign=True)} [{pct(lo, sign=True)}, {pct(hi, sign=True)}]"


def _report(results: dict, analysis: dict, meta: dict, out: Path) -> str:
    s = {**meta["settings"], **meta["run"]}
    ci = meta.get("confidence_intervals") or {"resamples": 1000, "seed": 0}
    boot = f"{ci['resamples']} resamples, seed {ci['seed']}"
    lines = [
        "# rlq demo on SynthCC",
        "",
        f"Backbone `{s['backbone']}` at {s['height']}x{s['width']}, {s['epochs']} epochs per method, batch "
        f"{s['batch_size']} images ({s['batch_size'] // 4} identities x 4, + recoloured copies), SynthCC `{s['synth_preset']}`, seed {s['seed']}. "
        "The paper trains ResNet-50 at 384x192 for 200 epochs; these settings are sized for 2 CPU cores, so the numbers "
        "show the pipeline working, not the paper's results.",
        "",
        f"Selection: {meta['selection']}.",
        "",
        f"Trainings: {meta.get('jobs', 1)} at a time, {meta.get('threads_per_job', 0) or 'all'} CPU thread(s) each "
        "(a run's numbers depend on its thread count, not on what runs beside it); `seconds` is each run's own wall "
        "time" + (", so they overlap." if meta.get("jobs", 1) > 1 else "."),
        "",
        f"Each cell: value [95 % interval], a percentile bootstrap over the test queries ({boot}; "
        "the gallery is fixed).",
        "",
        "| method | CC R1 | CC mAP | general R1 | general mAP | seconds |",
        "|---|---|---|---|---|---|",
    ]
    ch = results.get("chance_rank1", {})
    lines.append(f"| chance (random ranking) | {_pct(ch.get('cc', float('nan')))} | | {_pct(ch.get('general', float('nan')))} | | |")
    for m in DEMO_METHODS:
        if m in results:
            r = results[m]
            lines.append(f"| {m} | {_ci(r['cc'], 'rank1')} | {_ci(r['cc'], 'mAP')} | {_ci(r['general'], 'rank1')} | "
                         f"{_ci(r['general'], 'mAP')} | {fixed(meta['seconds'].get(m, 0), 0)} |")
    shown = [m for m in DEMO_METHODS if m in results]
    if any("cc/LQ" in results[m] for m in shown):
        lines += ["", "CC by query quality (SynthCC quality.csv): clean queries and low-quality (LQ) queries, each against "
                  "the whole gallery.", "",
                  "| method | CC R1 clean | CC R1 LQ | CC mAP clean | CC mAP LQ |", "|---|---|---|---|---|"]
        for m in shown:
            r = results[m]
            lines.append(f"| {m} | {_ci(r.get('cc/clean'), 'rank1')} | {_ci(r.get('cc/LQ'), 'rank1')} | "
                         f"{_ci(r.get('cc/clean'), 'mAP')} | {_ci(r.get('cc/LQ'), 'mAP')} |")
    diffs = results.get("paired_differences") or {}
    if diffs:
        lq = any("cc/LQ" in d for d in diffs.values())
        lines += ["", "Paired differences (percentage points, a - b on the same test queries): value [95 % interval], "
                  f"a paired percentile bootstrap (the same resampled queries for both runs, {boot}). "
                  "An interval that excludes 0 is a difference these queries resolve.", "",
                  "| a - b | ΔCC R1 | ΔCC mAP |" + (" ΔCC R1 LQ | ΔCC mAP LQ |" if lq else ""),
                  "|---|---|---|" + ("---|---|" if lq else "")]
        for pair, d in diffs.items():
            row = f"| {pair.replace('-', ' - ')} | {_diff(d.get('cc'), 'rank1')} | {_diff(d.get('cc'), 'mAP')} |"
            if lq:
                row += f" {_diff(d.get('cc/LQ'), 'rank1')} | {_diff(d.get('cc/LQ'), 'mAP')} |"
            lines.append(row)
    lines += ["", *_reading(results)]
    if shown:  # the registry's one-line descriptions (rlq.methods)
        lines += ["", "Methods: " + "; ".join(f"`{m}` = {get_method(m).description}" for m in shown) + ".", ""]
    if "teacher" in results:
        t = results["teacher"]["external"].get("general", {})
        lines += [f"Teacher on its own (clean) external query/gallery: R1 {_pct(t.get('rank1', float('nan')))}, "
                  f"mAP {_pct(t.get('mAP', float('nan')))}.", ""]
    for section, body in (analysis or {}).get("sections", {}).items():
        lines += [f"## {section}", "", body, ""]
    for name, rel in (analysis or {}).get("figures", {}).items():
        lines += [f"![{name}]({rel})", ""]
    lines += ["## Time", "", ", ".join(f"{k} {fixed(v, 0)} s" for k, v in meta["seconds"].items()), ""]
    return "\n".join(lines)
