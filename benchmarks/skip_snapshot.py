#!/usr/bin/env python3
"""What ``train.nonfinite=skip`` costs per step (issue 18): the copy of every buffer before the forward pass.

A skipped batch must leave every parameter, buffer and optimizer state as it was (rlq.engine.trainer._Undo).
The main optimizer steps last, after every check, so only the buffers (BatchNorm statistics, which the forward
pass updates) are copied each step; the clothes head and its optimizer are copied only when that stage steps.
The other way the issue names, "check a cheap forward statistic first", cannot see a NaN that appears in a loss
term after the forward pass, and BatchNorm statistics are updated by the forward pass itself, so it was not built.

Sides, timed in alternating rounds with equal threads: the engine step of the Base Model with
``nonfinite=error`` (no copy) and with ``nonfinite=skip`` (copy). Writes benchmarks/results/skip_snapshot.json.
Usage: ``python benchmarks/skip_snapshot.py [--quick] [--threads N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import reid_method, target_batch
from _util import add_common_args, alternate, env_info, median_ratio, threads, write_json
from rlq.engine.trainer import Trainer, _Undo
from rlq.models import build_model


def bench(backbone: str, b: int, h: int, w: int, rounds: int, nthreads: int) -> dict:
    num_ids, num_clothes = 77, 256
    batch = target_batch(b, h, w, num_ids, num_clothes)
    dev = torch.device("cpu")
    trainers = {}
    for mode in ("error", "skip"):
        torch.manual_seed(0)
        model = build_model(method="bm", num_ids=num_ids, backbone=backbone, pretrained="none")
        trainers[mode] = Trainer(model=model, method=reid_method("bm", num_ids, num_clothes), loaders={},
                                 run_dir="/tmp/rlq-bench-unused", epochs=1, device=dev, tensorboard=False, progress=False,
                                 nonfinite=mode)
    tr = trainers["skip"]
    sides = {
        "step_error": lambda: trainers["error"].step("reid", batch, epoch=30),  # epoch 30: clothes losses on
        "step_skip": lambda: trainers["skip"].step("reid", batch, epoch=30),
        "buffer_copy_only": lambda: _Undo(tr._buffer_modules()),
    }
    with threads(nthreads):
        tm = alternate(sides, rounds, warmup=1)
    nbuf = sum(x.numel() * x.element_size() for m in tr._buffer_modules() for x in m.buffers())
    return {
        "backbone": backbone, "input_hw": [h, w], "sampled_per_step": b, "threads_each_side": nthreads,
        "buffer_bytes": nbuf,
        "step_error_s": tm["median_s"]["step_error"], "step_skip_s": tm["median_s"]["step_skip"],
        "buffer_copy_s": tm["median_s"]["buffer_copy_only"],
        "ratio_skip_over_error": median_ratio(tm, "step_skip", "step_error"),
        "copy_share_of_step": tm["median_s"]["buffer_copy_only"] / tm["median_s"]["step_error"],
        "ratio_how": "median over alternating rounds of (skip step / error step) in the same round",
        "timing": tm,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p, "benchmarks/results/skip_snapshot.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    cases = [("tiny", 8, 64, 32)] if args.quick else [("resnet50", 8, 256, 128), ("mobilenetv2", 16, 256, 128)]
    rounds = 2 if args.quick else args.rounds
    results = {"env": env_info(), "command": "python benchmarks/skip_snapshot.py" + (" --quick" if args.quick else ""),
               "cases": [bench(c[0], c[1], c[2], c[3], rounds, args.threads) for c in cases]}
    for r in results["cases"]:
        print(f"{r['backbone']} b={r['sampled_per_step']} {r['input_hw']}: step {r['step_error_s'] * 1000:.0f} ms, with the "
              f"skip copy x{r['ratio_skip_over_error']:.3f}; copy alone {r['buffer_copy_s'] * 1e6:.0f} us "
              f"({100 * r['copy_share_of_step']:.2f} % of a step, {r['buffer_bytes'] / 1024:.0f} KiB of buffers)")
    write_json(args.out, results, quick=args.quick)
    return results


if __name__ == "__main__":
    main()
