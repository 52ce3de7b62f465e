#!/usr/bin/env python3
"""Base Model training step vs a plain torchvision ResNet-50 step on the same batch, side by side.

The Base Model (docs/method.md §2: shared stem..layer2, two layer3+layer4 branches, Max-Avg pooling,
BN-necks, heads, recolouring, CAL adversarial loss with its own clothes-head update, triplet, KL) does
about 1.7x the arithmetic of one ResNet-50 with the ReID last stride of 1 (stem..layer2 once, layer3
and the stride-1 layer4 twice); target: its full engine step (``Trainer.step`` with the ReID strategy,
epoch >= 25 so every loss term and the clothes-head update run) costs at most 1.9x a plain torchvision
ResNet-50 (last stride 1) + linear classifier + CE step on the same 2B images. The ratio against the
stock stride-2 ResNet-50 is reported too (the BM then does about 2.7x its arithmetic). Data loading is measured
separately: the real TrainSet on SynthCC through a DataLoader. Writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training import plain_ce_step, reid_method, stepper, target_batch
from _util import add_common_args, alternate, env_info, load, median_ratio, threads, write_json
from rlq.models import build_model
from rlq.models.backbones import set_last_stride_one


def bench_device(device: torch.device, b: int, h: int, w: int, backbone: str, rounds: int, amp: str,
                 nthreads: int | None, warmup: int = 2) -> dict:
    num_ids, num_clothes = 77, 256  # LTCC
    batch = target_batch(b, h, w, num_ids, num_clothes)
    model = build_model(method="bm", num_ids=num_ids, backbone=backbone)
    method = reid_method("bm", num_ids, num_clothes)
    channels_last = device.type == "cuda"
    tr = stepper(model, method, device, amp=amp, channels_last=channels_last)

    x2 = torch.cat([batch["img"], batch["copy_img"]]).to(device)
    y2 = torch.cat([batch["pid"], batch["pid"]]).to(device)
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def plain(last_stride_one: bool):
        """A torchvision ResNet-50 + linear classifier + CE step on the same 2B images."""
        net = torchvision.models.resnet50(num_classes=num_ids)
        if last_stride_one:
            set_last_stride_one(net.layer4)
        return plain_ce_step(net, x2, y2, device, channels_last=channels_last, dtype=dtype)

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sides = {"bm": lambda: tr.step("reid", batch, epoch=30), "resnet50_ls1": plain(True), "resnet50": plain(False)}
    n = nthreads or torch.get_num_threads()
    with threads(n):  # every side runs with the same threads, in rotating order, round after round
        tm = alternate(sides, rounds, warmup=warmup, sync=sync)
    bm, p1, p2 = (tm["median_s"][k] for k in ("bm", "resnet50_ls1", "resnet50"))
    ratio = median_ratio(tm, "bm", "resnet50_ls1")
    return {
        "device": str(device), "backbone": backbone, "input_hw": [h, w], "sampled_per_step": b, "forwarded_per_step": 2 * b,
        "amp": amp, "channels_last": channels_last, "threads_each_side": n,
        "bm_step_s": bm, "resnet50_step_s": p1, "ratio": ratio, "target_ratio_max": 1.9, "meets_target": ratio <= 1.9,
        "ratio_how": "median over alternating rounds of (BM step / ResNet-50 step) in the same round",
        "baseline": "torchvision resnet50 with last stride 1 (the ReID convention; BM arithmetic ~1.7x)",
        "resnet50_stride2_step_s": p2, "ratio_vs_stride2": median_ratio(tm, "bm", "resnet50"),
        "cpu_time_ratio": median_ratio(tm, "bm", "resnet50_ls1", "cpu_runs"),
        "cpu_time_ratio_vs_stride2": median_ratio(tm, "bm", "resnet50", "cpu_runs"),
        "bm_img_per_s": 2 * b / bm, "resnet50_img_per_s": 2 * b / p1, "timing": tm,
    }


def bench_data(h: int, w: int, b: int, workers: int, batches: int, preset: str = "small") -> dict:
    """Real TrainSet (PIL geometry + recolour ingredients) on SynthCC through a DataLoader."""
    from torch.utils.data import DataLoader

    from rlq.data.datasets import load_dataset
    from rlq.data.loading import TrainSet
    from rlq.data.recolor import PALETTES
    from rlq.data.samplers import PKSampler
    from rlq.data.side_tables import build_side_inputs
    from rlq.data.synth import generate_synthcc

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthcc"
        generate_synthcc(root, preset=preset, seed=0, workers=0)
        ds = load_dataset("synthcc", root)
        side = build_side_inputs(ds, need_parsing=True, parsing_root=str(root / "parsing"))
        ts = TrainSet(ds.train, h, w, recolor=True, parsing_paths=side.parsing_paths, faulty=side.faulty,
                      palette=PALETTES["default"], num_real_clothes=ds.num_train_clothes)
        sampler = PKSampler([s.pid for s in ds.train], b, 4, seed=0)
        loader = DataLoader(ts, batch_size=b, sampler=sampler, num_workers=workers, drop_last=True)
        it = iter(loader)
        next(it)
        t = time.perf_counter()
        n = 0
        for _ in range(batches):
            try:
                next(it)
            except StopIteration:
                break
            n += 1
        dt = time.perf_counter() - t
    return {"input_hw": [h, w], "batch": b, "workers": workers, "batches": n, "seconds": dt,
            "sampled_img_per_s": n * b / dt, "forwarded_img_per_s": 2 * n * b / dt,
            "note": "decode + resize + 1.125x crop + flip for the original and its recoloured copy, plus the parsing map"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, "benchmarks/results/train_step.json")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cpu, plus cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch / BLAS threads, the same for every side (default: torch's)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5 on CPU, 10 on CUDA, 2 with --quick)")
    args = p.parse_args(argv)
    devices = [torch.device("cpu")] if args.device == "cpu" else []
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "auto":
        devices.insert(0, torch.device("cpu"))
    out = {"env": env_info(), "quick": args.quick, "load_start": load(), "steps": [], "data": None}
    for dev in devices:
        if dev.type == "cpu":
            # 2 sampled x 2 (recolour) images at 384x192 keeps a CPU run to a few minutes.
            # --quick: a smoke run (tiny BM backbone), its ratio means nothing
            cfg = dict(b=4, h=64, w=32, rounds=2, backbone="tiny", warmup=1) if args.quick else dict(
                b=4, h=384, w=192, rounds=5, backbone="resnet50", warmup=2)
            amp = "off"
        else:
            cfg = dict(b=32, h=384, w=192, rounds=10, backbone="resnet50", warmup=2)
            amp = "bf16"
        r = bench_device(dev, cfg["b"], cfg["h"], cfg["w"], cfg["backbone"], args.rounds or cfg["rounds"], amp,
                         args.threads, cfg["warmup"])
        out["steps"].append(r)
        print(f"{dev}: BM step {r['bm_step_s'] * 1000:.0f} ms ({r['bm_img_per_s']:.1f} img/s) vs ResNet-50 "
              f"{r['resnet50_step_s'] * 1000:.0f} ms ({r['resnet50_img_per_s']:.1f} img/s, last stride 1): ratio "
              f"{r['ratio']:.2f} (target <= 1.9); vs stock stride-2 ResNet-50: {r['ratio_vs_stride2']:.2f}")
    out["data"] = bench_data(*((128, 64, 8) if args.quick else (384, 192, 32)), workers=2,
                             batches=2 if args.quick else 12, preset="tiny" if args.quick else "small")
    out["load_end"] = load()
    d = out["data"]
    print(f"data loading: {d['forwarded_img_per_s']:.0f} forwarded img/s with {d['workers']} workers at "
          f"{d['input_hw'][0]}x{d['input_hw'][1]}")
    write_json(args.out, out, quick=args.quick)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
