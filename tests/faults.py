"""Fault-injection helpers shared by tests/test_reliability.py and benchmarks/reliability.py (not a test module)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

TINY_TRAIN = ["method=bm", "data.dataset=synthcc", "data.height=64", "data.width=32", "data.batch_size=8",
              "data.workers=1", "data.cache_images=true", "model.backbone=tiny", "model.pretrained=none",
              "train.epochs=3", "train.eval_every=1", "train.max_steps_per_epoch=4", "train.ckpt_every_steps=1",
              "train.progress=false", "train.tensorboard=false", "eval.workers=0", "loss.start_epoch_cc=1",
              "loss.start_epoch_adv=1", "optim.milestones=[1,2]", "train.seed=5", "train.num_threads=1"]


def train_cmd(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rlq.cli", "train", "--resume", f"data.root={root}", f"output={out}", *TINY_TRAIN]


def run_uninterrupted(root: Path, out: Path, timeout: float = 600) -> float:
    """Run to the end; returns the wall time (process start included)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.time()
    p = subprocess.run(train_cmd(root, out), env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return time.time() - t


def run_with_kills(root: Path, out: Path, kills: int, full_s: float, seed: int = 0, timeout: float = 900) -> list[dict]:
    """Start the run, SIGKILL it after a random delay, resume; `kills` times; then let it finish.

    Delays are drawn between 35 % and 80 % of ``full_s`` (an uninterrupted run's wall time, process start
    included), so each kill lands in training, evaluation or a checkpoint write of the remaining work."""
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    events = []
    deadline = time.time() + timeout
    for _ in range(kills):
        delay = rng.uniform(0.35, 0.8) * full_s
        p = subprocess.Popen(train_cmd(root, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            p.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            finished = False
        events.append({"delay_s": round(delay, 2), "killed": not finished, "state_at_kill": describe(out)})
        if finished or time.time() > deadline:
            break
    p = subprocess.run(train_cmd(root, out), env=env, capture_output=True, text=True, timeout=max(60, deadline - time.time()))
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
