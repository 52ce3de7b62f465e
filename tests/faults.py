"""Fault-injection helpers shared by tests/test_reliability.py and benchmarks/reliability.py (not a test module)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

TINY_TRAIN = ["method=bm", "data.dataset=synthcc", "data.height=64", "data.width=32", "data.batch_size=8",
              "data.workers=1", "data.cache_images=true", "model.backbone=tiny", "model.pretrained=none",
              "train.epochs=3", "train.eval_every=1", "train.max_steps_per_epoch=4", "train.ckpt_every_steps=1",
              "train.progress=false", "train.tensorboard=false", "eval.workers=0", "loss.start_epoch_cc=1",
              "loss.start_epoch_adv=1", "optim.milestones=[1,2]", "train.seed=5", "train.num_threads=1", "train.log_every=3"]  # >1: the log average spans checkpoints


def train_cmd(root: Path, out: Path, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "rlq.cli", "train", *(["--resume"] if resume else []), f"data.root={root}",
            f"output={out}", *TINY_TRAIN]


def _env(fault: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RLQ_FAULT_INJECT"}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["RLQ_FAULT_INJECT"] = fault  # test-only hook, see rlq.engine.faults
    return env


def run_uninterrupted(root: Path, out: Path) -> None:
    """Run to the end (no time limit: a loaded machine is only slower)."""
    p = subprocess.run(train_cmd(root, out), env=_env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])


def latest_step(out: Path) -> int:
    """Global step of the newest good checkpoint (0 when there is none)."""
    from rlq.engine.checkpoint import CheckpointManager

    good = CheckpointManager(out, create=False).latest_good()
    if good is None:
        return 0
    return int(json.loads((good / "state.json").read_text())["global_step"])


#: Kill points (rlq.engine.faults): ("step", k) kills k steps after the newest checkpoint's step; the others
#: count their occurrences in the killed process (2nd checkpoint write, 1st evaluation).
DEFAULT_PLAN = (("step", 2), ("ckpt-write", 2), ("eval", 1))


def run_with_kills(root: Path, out: Path, plan=DEFAULT_PLAN) -> list[dict]:
    """Start the run and SIGKILL it at each point of ``plan`` in turn (deterministically, through the
    test-only RLQ_FAULT_INJECT hook), resuming after each kill; then let it finish.

    Each event records the injected point, whether the process really died of SIGKILL, and what the
    run folder looked like afterwards."""
    events = []
    for kind, n in plan:
        resume = latest_step(out) > 0
        point = f"step:{latest_step(out) + n}" if kind == "step" else f"{kind}:{n}"
        p = subprocess.run(train_cmd(root, out, resume=resume), env=_env(point), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        killed = p.returncode == -signal.SIGKILL
        events.append({"fault": point, "killed": killed, "returncode": p.returncode, "state_at_kill": describe(out)})
        if not killed:
            if p.returncode != 0:
                raise RuntimeError(f"{point}: exit {p.returncode}: {p.stderr[-3000:]}")
            break
    p = subprocess.run(train_cmd(root, out, resume=True), env=_env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    events.append({"final": True, "stderr_tail": p.stderr[-500:]})
    return events


def describe(out: Path) -> str:
    """What the run folder looked like right after a kill (which files were mid-write)."""
    ck = out / "checkpoints"
    if not ck.is_dir():
        return "no checkpoint yet"
    tmp = [p.name for p in ck.iterdir() if ".tmp-" in p.name]
    try:
        latest = json.loads((ck / "latest.json").read_text())["latest"]
    except (OSError, ValueError, KeyError):
        latest = None
    return f"latest={latest}" + (f", torn temp folders={tmp}" if tmp else "")


def final_state(out: Path) -> tuple[dict, dict]:
    """(weights of the newest good checkpoint, results.json) of a finished run."""
    from rlq.engine.checkpoint import CheckpointManager, read_checkpoint

    tensors, _ = read_checkpoint(CheckpointManager(out, create=False).latest_good())
    results = json.loads((out / "results.json").read_text())
    return ({k: v for k, v in tensors.items() if not k.startswith("rng.")}, results)


def same_state(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    import torch

    wa, ra = a
    wb, rb = b
    if wa.keys() != wb.keys() or any(not torch.equal(wa[k], wb[k]) for k in wa):
        return False
    keys = ("test@last", "test@best_test", "official")
    return all(ra.get(k) == rb.get(k) for k in keys)


def metrics_lines(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (which differ between any two runs)."""
    timing = {"img_per_s", "data_s", "step_s", "seconds"}
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (out / "metrics.jsonl").read_text().splitlines()]
