#!/usr/bin/env python3
"""One unattended check of every CUDA code path of rlq on one GPU (issue 13 §3), in about 6 minutes.

Checks (each in try/except with its own time budget; a failure becomes a FAIL row, never an abort):
  env              torch / CUDA / cuDNN versions, GPU name and compute capability, bf16 support
  train_steps      one real engine step (``Trainer.step``) per method (cal, bm, cap, tad, rlq; tad/rlq also
                   their TAD step with a random-init teacher) at 384x192, AMP bf16 and fp16 (GradScaler),
                   channels_last on and off: losses finite, fp16 uses the scaler, memory format as asked
  bf16_vs_fp32     20 Base Model steps in bf16 and in fp32 (TF32 off) from the same weights on the same
                   batches: per-step relative difference of the total loss <= 5 % over the first 5 steps
  eval_parity      ``evaluate_features`` on CUDA == on CPU: a tie-free float64 problem (CMC / mAP to 1e-6,
                   first-match ranks identical) and a float32 problem with exact ties (identical results)
  eval_last_scale  ``evaluate_features`` on CUDA at LaST test scale (10,173 x 123,041, 4,096-d): time and
                   peak CUDA memory (torch.cuda.max_memory_allocated)
  torchrun_nccl    ``python -m torch.distributed.run --nproc_per_node=1`` on a script that sets the device
                   from LOCAL_RANK, initialises NCCL and takes 3 DDP-wrapped engine steps; then sharded
                   extraction (bitwise vs one process), the padded gather and the failure flag on that group
  step_ratio       Base Model engine step vs a plain ResNet-50 (last stride 1) + CE step on the same 2B
                   images, bf16, channels_last: alternating rounds, median of per-round ratios (target <= 1.9)
  lq_throughput    batched LQ synthesis (``rlq.lq.batched``) img/s on the GPU vs the SynthCC train loader's
                   img/s at 384x192 with N workers (ratio > 1: the synthesis keeps up with the loader)
  onnx             ONNX export + CPU parity (``rlq.export``); CUDA execution provider parity when available

Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/gpu_check.py [--budget-s 330] [--only a,b] [--skip c] [--out PATH]
    PYTHONPATH=src python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json   # CPU: toy sizes

``--dry-run`` runs every check's code path end to end at toy sizes on the CPU (tiny backbone, tiny images,
CPU autocast; the fp16 GradScaler runs on the CPU) so that a mistake in the script shows up without a GPU.
It writes ``runs/bench-quick/gpu_check.json`` unless ``--out`` is given, never ``benchmarks/results/``.
Prints one table, writes JSON atomically (also after every check), exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
if str(REPO / "src") not in sys.path:  # running from the repo without an installed rlq
    sys.path.insert(1, str(REPO / "src"))

from _training import external_batch, plain_ce_step, reid_method, stepper, tad_method, target_batch  # noqa: E402 - needs the sys.path set-up above
from _util import env_info, quick_out, write_json  # noqa: E402 - needs the sys.path set-up above

DEFAULT_OUT = "benchmarks/results/gpu_check.json"
METHODS = ("cal", "bm", "cap", "tad", "rlq")


class Skip(Exception):
    """Raised by a check that cannot run here (the message is the reason)."""


class CheckFailed(AssertionError):
    """A check ran but its result is wrong; ``details`` (what it measured) still go to the JSON."""

    def __init__(self, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class CheckTimeout(BaseException):
    """The check ran past its own time budget (a BaseException: no ``except Exception`` inside a check swallows it)."""


@dataclass
class Sizes:
    """Problem sizes: the real run on a GPU, or toy sizes for --dry-run on a CPU."""

    dry: bool
    device: torch.device
    backbone: str
    h: int
    w: int
    b: int  # sampled images per ReID batch (2b forwarded with the recoloured copies)
    src_hw: tuple[int, int]  # LQ source resolution of the external stream
    num_ids: int
    num_clothes: int
    curve_steps: int
    curve_early: int
    eval_small: tuple[int, int, int]  # tie-free parity problem (nq, ng, dim)
    eval_last: tuple[int, int, int, int]  # (nq, ng, dim, ids)
    ratio_rounds: int
    ratio_steps: int
    lq_batch: int
    lq_repeats: int
    loader_preset: str
    loader_workers: int
    loader_batches: int
    onnx_hw: tuple[int, int]
    torchrun_timeout_s: int

    @classmethod
    def make(cls, dry: bool) -> Sizes:
        if dry:
            return cls(dry=True, device=torch.device("cpu"), backbone="tiny", h=32, w=16, b=8, src_hw=(32, 16),
                       num_ids=8, num_clothes=16, curve_steps=3, curve_early=3, eval_small=(40, 300, 16),
                       eval_last=(100, 2000, 32, 60), ratio_rounds=2, ratio_steps=1, lq_batch=8, lq_repeats=2,
                       loader_preset="tiny", loader_workers=0, loader_batches=2, onnx_hw=(64, 32), torchrun_timeout_s=120)
        # LTCC label counts (77 ids, 256 clothes) for the heads; LaST test scale: 10,173 x 123,041 (docs/datasets.md)
        workers = max(1, min(8, (os.cpu_count() or 2) // 2))
        return cls(dry=False, device=torch.device("cuda", 0), backbone="resnet50", h=384, w=192, b=32, src_hw=(256, 128),
                   num_ids=77, num_clothes=256, curve_steps=20, curve_early=5, eval_small=(300, 4000, 256),
                   eval_last=(10_173, 123_041, 4_096, 5_806), ratio_rounds=5, ratio_steps=3, lq_batch=64, lq_repeats=10,
                   loader_preset="small", loader_workers=workers, loader_batches=16, onnx_hw=(384, 192),
                   torchrun_timeout_s=150)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def build(method: str, s: Sizes, seed: int = 0, num_ids: int | None = None):
    from rlq.models import build_model

    return build_model(method=method, num_ids=num_ids or s.num_ids, backbone=s.backbone, seed=seed,
                       pose_clusters=15 if method in ("cap", "rlq") else None)


def make_method(name: str, s: Sizes, teacher=None):
    if name in ("tad", "rlq"):
        return tad_method(name, s.num_ids, s.num_clothes, teacher, s.h, s.w)
    return reid_method(name, s.num_ids, s.num_clothes)  # recolouring on, as the presets (data.recolor: true)


@contextlib.contextmanager
def no_tf32():
    """A true fp32 reference on Ampere+ GPUs: TF32 off for cuDNN convolutions and cuBLAS matmuls."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _conv_weight(model: torch.nn.Module) -> torch.Tensor:
    return next(p for p in model.parameters() if p.dim() == 4)


# ---------------------------------------------------------------------------------------------------
# checks: each returns (summary, details) or raises Skip / CheckFailed / any exception


def _nccl_version() -> str | None:
    try:
        v = torch.cuda.nccl.version()
        return ".".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
    except Exception:  # noqa: BLE001 - informational only
        return None


def check_env(s: Sizes) -> tuple[str, dict]:
    info = env_info()
    info.update(torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                cuda_available=torch.cuda.is_available(), python_exe=sys.executable, platform=platform.platform())
    import rlq

    info["rlq"] = getattr(rlq, "__version__", None)
    info["rlq_path"] = str(Path(rlq.__file__).parent)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=list(torch.cuda.get_device_capability(0)), gpu_mem_gib=round(p.total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count(), bf16_supported=torch.cuda.is_bf16_supported(),
                    nccl=_nccl_version())
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["ort_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    if not s.dry and not torch.cuda.is_available():
        raise CheckFailed("CUDA is not available; run with --dry-run on a CPU-only machine")
    gpu = f"{info.get('gpu')} (sm {'.'.join(map(str, info.get('capability', [])))})" if torch.cuda.is_available() else "no GPU (dry run)"
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {info['cudnn']}, {gpu}", info


def check_train_steps(s: Sizes) -> tuple[str, dict]:
    dev = s.device
    rows = []
    teacher = build("bm", s, seed=1, num_ids=632)  # random-init teacher (PRCC id count), frozen by the method
    bad: list[str] = []
    for name in METHODS:
        model = build(name, s)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        for amp in ("bf16", "fp16"):
            for cl in (True, False):
                row: dict[str, Any] = {"method": name, "amp": amp, "channels_last": cl, "losses": {}}
                t0 = time.perf_counter()
                try:  # one failing configuration is reported; the others still run
                    model.load_state_dict(init)
                    model.to(memory_format=torch.contiguous_format)
                    method = make_method(name, s, teacher)
                    tr = stepper(model, method, dev, amp=amp, channels_last=cl)
                    if amp == "fp16" and tr.scaler is None:
                        raise CheckFailed("fp16 AMP built no GradScaler")
                    if _conv_weight(tr.raw_model).is_contiguous(memory_format=torch.channels_last) != cl:  # stem conv (k > 1)
                        raise CheckFailed("model memory format is not as asked")
                    for kind in ["reid", "tad"] if name in ("tad", "rlq") else ["reid"]:
                        batch = (target_batch(s.b, s.h, s.w, s.num_ids, s.num_clothes, seed=1) if kind == "reid"
                                 else external_batch(s.b, s.h, s.w, src=s.src_hw, seed=2))
                        out = tr.step(kind, batch, epoch=30)  # epoch >= 25: clothes-head update and L_CAL run (§4)
                        if out is None:
                            raise CheckFailed(f"{kind} step returned no output")
                        terms = {k: float(v.detach()) for k, v in out.losses.items()}
                        row["losses"][kind] = {"total": out.metrics["loss"], **terms, **out.metrics}
                        if not all(math.isfinite(v) for v in [out.metrics["loss"], *terms.values()]):
                            raise CheckFailed(f"{kind} step: non-finite loss {terms}")
                    sync(dev)
                    if tr.scaler is not None:
                        row["grad_scale"] = float(tr.scaler.get_scale()) if tr.scaler.is_enabled() else None
                except Exception as e:  # noqa: BLE001 - any failure becomes the row's error, and the check goes on
                    row["error"] = f"{type(e).__name__}: {e}"
                    row["traceback"] = traceback.format_exc()
                    bad.append(f"{name}/{amp}/channels_last={cl}: {row['error'][:300]}")
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
        del model, init
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    details = {"input_hw": [s.h, s.w], "sampled_per_step": s.b, "backbone": s.backbone, "steps": rows}
    if dev.type == "cuda":
        details["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if bad:
        raise CheckFailed(f"{len(bad)} of {len(rows)} configurations failed: " + "; ".join(bad), details)
    n = sum(len(r["losses"]) for r in rows)
    return f"{n} steps ({len(METHODS)} methods x bf16/fp16 x channels_last on/off), all losses finite", details


def check_bf16_vs_fp32(s: Sizes) -> tuple[str, dict]:
    dev = s.device
    batches = [target_batch(s.b, s.h, s.w, s.num_ids, s.num_clothes, seed=100 + i) for i in range(min(5, s.curve_steps))]
    model = build("bm", s)
    init = {k: v.clone() for k, v in model.state_dict().items()}

    def run(amp: str) -> list[float]:
        torch.manual_seed(0)
        model.load_state_dict(init)
        tr = stepper(model, make_method("bm", s), dev, amp=amp, channels_last=dev.type == "cuda")
        losses = []
        for i in range(s.curve_steps):
            tr.global_step = i
            out = tr.step("reid", batches[i % len(batches)], epoch=30)
            losses.append(out.metrics["loss"])
        return losses

    with no_tf32():
        fp32 = run("off")
    bf16 = run("bf16")
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(bf16, fp32)]
    early = max(rel[: s.curve_early])
    details = {"steps": s.curve_steps, "fp32_losses": fp32, "bf16_losses": bf16, "rel_diff": rel,
               f"max_rel_diff_first_{s.curve_early:d}": early, "max_rel_diff": max(rel), "tolerance_early": 0.05,
               "reference": "fp32 with TF32 off (cuDNN and cuBLAS)"}
    if not all(math.isfinite(v) for v in fp32 + bf16):
        raise CheckFailed(f"non-finite loss: fp32 {fp32}, bf16 {bf16}", details)
    if early > 0.05:
        raise CheckFailed(f"bf16 total loss differs from fp32 by {early:.1%} within the first {s.curve_early} steps (> 5%)", details)
    return f"max rel. diff {early:.2%} (first {s.curve_early} steps), {max(rel):.2%} over {s.curve_steps} steps", details


def _labels(rng: np.random.Generator, nq: int, ng: int, nid: int) -> dict[str, np.ndarray]:
    g_p = np.sort(np.concatenate([np.arange(nid), rng.integers(0, nid, ng - nid)]))
    q_p = rng.choice(g_p, nq)
    outfits = 3
    return {"q_pids": q_p, "g_pids": g_p, "q_camids": rng.integers(0, 6, nq), "g_camids": rng.integers(0, 6, ng),
            "q_clothes_ids": q_p * outfits + rng.integers(0, outfits, nq), "g_clothes_ids": g_p * outfits + rng.integers(0, outfits, ng)}


def _absdiff(x: Any, y: Any) -> float:
    """max |x - y| where NaN == NaN (a mode without valid queries is NaN on both devices)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        return math.inf
    same_nan = np.isnan(x) & np.isnan(y)
    d = np.where(same_nan, 0.0, np.abs(x - y))
    return float(np.where(np.isnan(d), math.inf, d).max()) if d.size else 0.0


def _compare(a: dict, b: dict, exact: bool) -> dict:
    out = {}
    for m in a:
        d = {"mAP": _absdiff(a[m]["mAP"], b[m]["mAP"]), "cmc": _absdiff(a[m]["cmc"], b[m]["cmc"]),
             "mINP": _absdiff(a[m]["mINP"], b[m]["mINP"]),
             "first_rank_mismatches": int((a[m]["first_rank"] != b[m]["first_rank"]).sum()),
             "ap_max_diff": _absdiff(a[m]["ap"], b[m]["ap"])}
        tol = 0.0 if exact else 1e-6
        d["ok"] = d["mAP"] <= tol and d["cmc"] <= tol and d["mINP"] <= tol and d["first_rank_mismatches"] == 0
        out[m] = d
    return out


def check_eval_parity(s: Sizes) -> tuple[str, dict]:
    from rlq.evaluation.ranking import evaluate_features

    other = "cuda" if s.device.type == "cuda" else "cpu"
    modes = ("general", "cc", "sc")
    rng = np.random.default_rng(0)
    nq, ng, dim = s.eval_small
    # (a) tie-free: float64 features with identity structure; checked to have no near-ties
    lab = _labels(rng, nq, ng, max(2, ng // 10))
    centers = rng.normal(size=(lab["g_pids"].max() + 1, dim))
    q = centers[lab["q_pids"]] + 2.0 * rng.normal(size=(nq, dim))
    g = centers[lab["g_pids"]] + 2.0 * rng.normal(size=(ng, dim))
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    min_gap = float(np.diff(np.sort(-(qn @ gn.T), axis=1), axis=1).min())
    if min_gap < 1e-12:  # float64 rounding differences between devices are ~1e-16 (seed 0: min gap 1.5e-10)
        raise CheckFailed(f"the tie-free problem has near-ties (min gap {min_gap:.3g}); change the seed")
    cs = max(1, nq // 3)  # several query chunks on both sides
    ref = evaluate_features(q, g, **lab, modes=modes, device="cpu", chunk_size=cs)
    got = evaluate_features(q, g, **lab, modes=modes, device=other, chunk_size=max(1, nq // 2))
    free = _compare(got, ref, exact=False)
    # (b) exact ties: {0,1} features with four ones (norm 2): every cosine is a multiple of 1/4 in float32
    lab2 = _labels(rng, nq, ng, max(2, ng // 20))
    d2 = 12

    def four_hot(n: int) -> np.ndarray:
        x = np.zeros((n, d2), np.float32)
        idx = np.argsort(rng.random((n, d2)), axis=1)[:, :4]
        np.put_along_axis(x, idx, 1.0, axis=1)
        return x

    q2, g2 = four_hot(nq), four_hot(ng)
    ref2 = evaluate_features(q2, g2, **lab2, modes=modes, device="cpu", chunk_size=cs)
    got2 = evaluate_features(torch.from_numpy(q2).to(other), torch.from_numpy(g2).to(other), **lab2, modes=modes, device=other)
    ties = _compare(got2, ref2, exact=True)
    details = {"device": other, "tie_free": {"shape": [nq, ng, dim], "dtype": "float64", "min_distance_gap": min_gap, "diff": free},
               "exact_ties": {"shape": [nq, ng, d2], "dtype": "float32", "diff": ties},
               "mAP_cpu": {m: ref[m]["mAP"] for m in modes}}
    bad = [f"tie-free {m}: {d}" for m, d in free.items() if not d["ok"]] + [f"ties {m}: {d}" for m, d in ties.items() if not d["ok"]]
    if bad:
        raise CheckFailed("; ".join(bad), details)
    worst = max(max(d["mAP"], d["cmc"]) for d in free.values())
    return f"{other} == cpu: tie-free max |diff| {worst:.1e}, exact-tie problem identical", details


def check_eval_last_scale(s: Sizes) -> tuple[str, dict]:
    from rlq.evaluation.ranking import evaluate_features

    dev = s.device
    nq, ng, dim, nid = s.eval_last
    rng = np.random.default_rng(1)
    lab = _labels(rng, nq, ng, nid)
    gen = torch.Generator(device=dev).manual_seed(0)
    sigma = math.sqrt(1.0 / (4.0 / math.sqrt(dim)) - 1.0)  # same-identity cosine ~4/sqrt(dim), as benchmarks/eval_speed.py
    centers = torch.randn(nid, dim, generator=gen, device=dev)
    g_p = torch.from_numpy(lab["g_pids"]).to(dev)
    q_p = torch.from_numpy(lab["q_pids"]).to(dev)
    g = torch.empty(ng, dim, device=dev)
    for a in range(0, ng, 16384):
        b = min(ng, a + 16384)
        g[a:b] = centers[g_p[a:b]] + sigma * torch.randn(b - a, dim, generator=gen, device=dev)
    q = centers[q_p] + sigma * torch.randn(nq, dim, generator=gen, device=dev)
    del centers
    sync(dev)
    base = 0
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    res = evaluate_features(q, g, **lab, modes=("general", "cc"), device=dev)
    sync(dev)
    dt = time.perf_counter() - t0
    details = {"shape": [nq, ng, dim], "ids": nid, "seconds": dt, "device": str(dev), "chunk_size": res["general"]["chunk_size"],
               "mAP": {m: r["mAP"] for m, r in res.items()}, "rank1": {m: r["rank1"] for m, r in res.items()},
               "features_gib": (nq + ng) * dim * 4 / 2**30}
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        details.update(peak_cuda_gib=peak / 2**30, peak_above_features_gib=(peak - base) / 2**30)
    del q, g
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if not all(math.isfinite(r["mAP"]) for r in res.values()):
        raise CheckFailed(f"non-finite mAP: {details['mAP']}", details)
    mem = f", peak {details['peak_cuda_gib']:.1f} GiB (+{details['peak_above_features_gib']:.1f} over the features)" if "peak_cuda_gib" in details else ""
    return f"{nq:,} x {ng:,} x {dim}: {dt:.1f} s{mem}, mAP {details['mAP']['general']:.3f}", details


_TORCHRUN_CHILD = r'''
import datetime, json, os, sys, tempfile
import torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
from _training import reid_method, stepper, target_batch
from rlq.runtime.distributed import DistInfo, all_reduce_flags, barrier, broadcast_object
from rlq.engine.trainer import Trainer
from rlq.models import build_model

backend, out_path, backbone, h, w, b = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
local = int(os.environ["LOCAL_RANK"])
if backend == "nccl":
    torch.cuda.set_device(local)  # before init_process_group, as rlq.runtime.distributed.init_distributed does
    device = torch.device("cuda", local)
else:
    device = torch.device("cpu")
dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=120))


class OneReplicaDDP(DistInfo):  # DDP even with one process, so the wrapped model and NCCL collectives run
    @property
    def enabled(self):
        return True


info = OneReplicaDDP(dist.get_rank(), dist.get_world_size(), local)
model = build_model(method="bm", num_ids=8, backbone=backbone, seed=0)
with tempfile.TemporaryDirectory() as run_dir:
    tr = Trainer(model=model, method=reid_method("bm", 8, 16), loaders={}, run_dir=run_dir, epochs=1, device=device,
                 dist=info, amp="bf16" if device.type == "cuda" else "off", channels_last=device.type == "cuda",
                 tensorboard=False, progress=False)
    losses = []
    for i in range(3):
        tr.global_step = i
        losses.append(tr.step("reid", target_batch(b, h, w, 8, 16, seed=i), epoch=30).metrics["loss"])
flags = all_reduce_flags([True, False], device)
obj = broadcast_object({"rank": dist.get_rank()})
barrier()
# sharded evaluation's collectives (rlq.runtime.distributed) on this group: extraction vs one process, gather, failure
import numpy as np
from PIL import Image
from rlq.runtime.distributed import RankFailure, check_all_ranks, gather_rows, sync_buffers
from rlq.evaluation.extract import extract_features
sync_buffers(tr.raw_model, info)
with tempfile.TemporaryDirectory() as img_dir:
    rng = np.random.default_rng(0)
    paths = [f"{img_dir}/{i}.png" for i in range(9)]
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
    kw = dict(device=device, batch_size=4, workers=0, amp_dtype=torch.bfloat16 if device.type == "cuda" else None)
    shard_equal = extract_features(tr.raw_model, paths, h, w, world=info, **kw).tobytes() == \
        extract_features(tr.raw_model, paths, h, w, **kw).tobytes()
x = rng.normal(size=(11, 3)).astype(np.float32)
gather_equal = bool(np.array_equal(gather_rows(x, info, chunk_rows=4), x))
try:
    check_all_ranks(OSError("injected"), "gpu check", info)
    failure = None
except RankFailure as e:
    failure = str(e)
res = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "local_rank": local, "device": str(device),
       "current_device": torch.cuda.current_device() if device.type == "cuda" else None,
       "ddp": type(tr.model).__name__, "losses": losses, "flags": flags, "broadcast": obj,
       "sharded": {"extract_equal": shard_equal, "gather_equal": gather_equal, "failure": failure}}
dist.destroy_process_group()
with open(out_path, "w") as f:
    json.dump(res, f)
'''


def _run_group(cmd: list[str], env: dict, timeout: float, cwd: str) -> tuple[int, str]:
    """Run a command in its own process group; kill the whole group on timeout or any exception."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise


def check_torchrun_nccl(s: Sizes) -> tuple[str, dict]:
    import json

    backend = "nccl" if s.device.type == "cuda" else "gloo"
    if backend == "nccl" and not torch.distributed.is_nccl_available():
        raise CheckFailed("torch.distributed reports NCCL unavailable")
    with tempfile.TemporaryDirectory() as tmp:
        script, out = Path(tmp) / "ddp_child.py", Path(tmp) / "result.json"
        script.write_text(_TORCHRUN_CHILD)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("OMP_NUM_THREADS", "1")
        b, h, w = (8, 64, 32) if s.dry else (16, 256, 128)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script), str(HERE),
               backend, str(out), s.backbone, str(h), str(w), str(b)]
        t0 = time.perf_counter()
        rc, log = _run_group(cmd, env, s.torchrun_timeout_s, str(REPO))
        dt = time.perf_counter() - t0
        if rc != 0 or not out.exists():
            raise CheckFailed(f"torchrun exited {rc}; last output:\n{log[-3000:]}",
                              {"returncode": rc, "command": cmd, "output": log[-20000:], "seconds": dt})
        res = json.loads(out.read_text())
    res.update(seconds=dt, command=" ".join(cmd[:5]) + " CHILD ...")
    if res["backend"] != backend or res["ddp"] != "DistributedDataParallel" or res["flags"] != [True, False]:
        raise CheckFailed(f"unexpected child result {res}", res)
    if not all(math.isfinite(v) for v in res["losses"]):
        raise CheckFailed(f"non-finite DDP losses {res['losses']}", res)
    sh = res["sharded"]
    if not (sh["extract_equal"] and sh["gather_equal"] and "gpu check failed on rank 0 of 1" in (sh["failure"] or "")):
        raise CheckFailed(f"sharded evaluation collectives: {sh}", res)
    return (f"{backend}, world 1, 3 DDP steps, losses {', '.join(f'{v:.2f}' for v in res['losses'])}; sharded extraction, "
            f"gather and failure flag ok ({dt:.0f} s)"), res


def _plain_net(s: Sizes) -> torch.nn.Module:
    import torchvision
    from torchvision.models.resnet import BasicBlock, ResNet

    from rlq.models.backbones import set_last_stride_one

    net = torchvision.models.resnet50(num_classes=s.num_ids) if not s.dry else ResNet(BasicBlock, [1, 1, 1, 1], num_classes=s.num_ids)
    set_last_stride_one(net.layer4)
    return net


def check_step_ratio(s: Sizes) -> tuple[str, dict]:
    dev = s.device
    amp = "bf16"
    cl = dev.type == "cuda"
    batch = target_batch(s.b, s.h, s.w, s.num_ids, s.num_clothes, seed=3)
    tr = stepper(build("bm", s), make_method("bm", s), dev, amp=amp, channels_last=cl)
    x2 = torch.cat([batch["img"], batch["copy_img"]]).to(dev)
    y2 = torch.cat([batch["pid"], batch["pid"]]).to(dev)
    plain = plain_ce_step(_plain_net(s), x2, y2, dev, channels_last=cl, dtype=torch.bfloat16)

    def bm() -> None:
        tr.step("reid", batch, epoch=30)

    def timed(fn: Callable[[], None]) -> float:
        sync(dev)
        t = time.perf_counter()
        for _ in range(s.ratio_steps):
            fn()
        sync(dev)
        return (time.perf_counter() - t) / s.ratio_steps

    bm(), plain(), bm(), plain()  # warm-up (cuDNN / allocator)
    rounds = []
    for r in range(s.ratio_rounds):
        if r % 2 == 0:
            a = timed(bm)
            p = timed(plain)
        else:
            p = timed(plain)
            a = timed(bm)
        rounds.append({"bm_s": a, "resnet50_s": p, "ratio": a / p})
    ratio = statistics.median(r["ratio"] for r in rounds)
    met = ratio <= 1.9
    details = {"amp": amp, "channels_last": cl, "input_hw": [s.h, s.w], "forwarded_per_step": 2 * s.b, "rounds": rounds,
               "median_ratio": ratio, "target_ratio_max": 1.9, "meets_target": met,
               "baseline": "torchvision resnet50, last stride 1, + linear + CE on the same 2B images (benchmarks/train_step.py)"}
    if not math.isfinite(ratio):
        raise CheckFailed(f"ratio is not finite: {rounds}")
    return (f"BM/ResNet-50 step {ratio:.2f}x (target <= 1.9: {'met' if met else 'NOT met'}), "
            f"BM {2 * s.b / statistics.median(r['bm_s'] for r in rounds):.0f} img/s"), details


def check_lq_throughput(s: Sizes) -> tuple[str, dict]:
    from torch.utils.data import DataLoader

    from rlq.data.datasets import load_dataset
    from rlq.data.loading import TrainSet
    from rlq.data.recolor import PALETTES
    from rlq.data.samplers import PKSampler
    from rlq.data.side_tables import build_side_inputs
    from rlq.data.synth import generate_synthcc
    from rlq.lq.batched import synthesize_batch
    from rlq.lq.mix import draw_lq, mix_for_dataset

    dev = s.device
    # (a) batched LQ synthesis on the device (LTCC mix, source -> train size)
    rng = np.random.default_rng(0)
    draws = [draw_lq(rng, mix_for_dataset("ltcc")) for _ in range(s.lq_batch)]
    codes = torch.tensor([c for c, _ in draws], device=dev)
    params = torch.from_numpy(np.stack([p for _, p in draws])).to(dev)
    src = torch.randint(0, 256, (s.lq_batch, 3, *s.src_hw), dtype=torch.uint8, device=dev)
    out = synthesize_batch(src, codes, params, (s.h, s.w))
    if out.shape != (s.lq_batch, 3, s.h, s.w) or not bool(torch.isfinite(out).all()):
        raise CheckFailed(f"synthesize_batch gave {tuple(out.shape)} or non-finite values")
    times = []
    for _ in range(s.lq_repeats):
        sync(dev)
        t = time.perf_counter()
        synthesize_batch(src, codes, params, (s.h, s.w))
        sync(dev)
        times.append(time.perf_counter() - t)
    lq_ips = s.lq_batch / statistics.median(times)
    # (b) the SynthCC train loader (decode + geometry + recolour ingredients) at the train size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthcc"
        t0 = time.perf_counter()
        generate_synthcc(root, preset=s.loader_preset, seed=0, workers=s.loader_workers)
        gen_s = time.perf_counter() - t0
        ds = load_dataset("synthcc", root)
        side = build_side_inputs(ds, need_parsing=True, parsing_root=str(root / "parsing"))
        ts = TrainSet(ds.train, s.h, s.w, recolor=True, parsing_paths=side.parsing_paths, faulty=side.faulty,
                      palette=PALETTES["default"], num_real_clothes=ds.num_train_clothes)
        bs = min(32, s.b)
        sampler = PKSampler([x.pid for x in ds.train], bs, 4, seed=0)
        if sampler.num_batches() == 0:
            raise CheckFailed(f"SynthCC {s.loader_preset} gives no full PK batch of {bs}")
        kw = dict(persistent_workers=True, prefetch_factor=4) if s.loader_workers else {}
        loader = DataLoader(ts, batch_size=bs, sampler=sampler, num_workers=s.loader_workers, drop_last=True,
                            pin_memory=dev.type == "cuda", **kw)
        n, epoch, t = 0, 0, None
        while n < s.loader_batches + 1:
            sampler.set_epoch(epoch, 0)
            for _ in loader:
                if t is None:  # start the clock after the first batch (worker start-up)
                    t = time.perf_counter()
                    n = 1
                    continue
                n += 1
                if n >= s.loader_batches + 1:
                    break
            epoch += 1
        load_s = time.perf_counter() - t
        del loader
    loader_ips = (n - 1) * bs / load_s  # sampled images/s (each also brings its recolour ingredients)
    ratio = lq_ips / loader_ips
    details = {"device": str(dev), "lq_batch": s.lq_batch, "src_hw": list(s.src_hw), "out_hw": [s.h, s.w],
               "lq_img_per_s": lq_ips, "lq_runs_s": times, "loader_img_per_s": loader_ips, "loader_workers": s.loader_workers,
               "loader_batch": bs, "loader_batches": n - 1, "synthcc_preset": s.loader_preset, "synthcc_generate_s": gen_s,
               "ratio_lq_over_loader": ratio}
    return (f"LQ synthesis {lq_ips:,.0f} img/s vs loader {loader_ips:,.0f} img/s ({s.loader_workers} workers): "
            f"{ratio:.1f}x"), details


def check_onnx(s: Sizes) -> tuple[str, dict]:
    try:
        import onnx  # noqa: F401 - only whether it imports: export_onnx needs it
        import onnxruntime as ort
    except ImportError as e:
        raise Skip(f"onnx / onnxruntime not importable ({e})") from None
    from rlq.export.onnx import _preprocess, export_onnx, synthetic_check_images
    from rlq.models.reid import Embedder

    model = build("bm", s).eval()
    h, w = s.onnx_hw
    details: dict[str, Any] = {"providers": ort.get_available_providers(), "input_hw": [h, w], "backbone": s.backbone}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        res = export_onnx(model, path, input_size=(h, w), write_card=False)
        details["export_and_cpu_parity_s"] = time.perf_counter() - t0
        details["cpu_parity"] = res["parity"]
        if not res["parity"]["passed"]:
            raise CheckFailed(f"CPU parity failed: {res['parity']}", details)
        summary = f"export + CPU parity max L2 {res['parity']['max_l2_diff']:.1e}"
        if "CUDAExecutionProvider" not in details["providers"]:
            details["cuda_ep"] = {"skipped": f"CUDAExecutionProvider not available (providers: {details['providers']})"}
            return summary + "; CUDA EP skipped: not available", details
        if s.device.type != "cuda":
            details["cuda_ep"] = {"skipped": "no CUDA device"}
            return summary + "; CUDA EP skipped: no CUDA device", details
        # use_tf32=0: full fp32 convolutions / matmuls, like the PyTorch reference under no_tf32()
        try:
            sess = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - an onnxruntime / CUDA library mismatch, not an rlq failure
            details["cuda_ep"] = {"skipped": f"could not create a CUDA EP session: {type(e).__name__}: {e}"}
            return summary + f"; CUDA EP skipped: session failed ({type(e).__name__})", details
        used = sess.get_providers()
        if used[0] != "CUDAExecutionProvider":  # an onnxruntime build whose CUDA libraries do not load here
            details["cuda_ep"] = {"skipped": f"CUDAExecutionProvider is listed but onnxruntime fell back to {used}"}
            return summary + f"; CUDA EP skipped: listed but fell back to {used[0]}", details
        x = _preprocess(synthetic_check_images(8), h, w)
        got = sess.run(["features"], {"images": x})[0].astype(np.float64)
        emb = Embedder(copy.deepcopy(model).to(s.device), flip=True).eval()
        with torch.no_grad(), no_tf32():
            ref = emb(torch.from_numpy(x).to(s.device)).double().cpu().numpy()
        l2 = float(np.linalg.norm(got - ref, axis=1).max())
        # features are L2-normalised: an L2 difference of 1e-2 is a cosine of at least 0.99995
        details["cuda_ep"] = {"providers_used": used, "max_l2_diff_vs_torch_cuda": l2, "tolerance": 1e-2}
        if not l2 <= 1e-2:
            raise CheckFailed(f"CUDA EP features differ from PyTorch CUDA by L2 {l2:.3g} (> 1e-2)", details)
    return summary + f"; CUDA EP max L2 vs torch {l2:.1e}", details


CHECKS: list[tuple[str, Callable[[Sizes], tuple[str, dict]], float]] = [
    # (name, function, own time budget in seconds on the GPU run)
    ("env", check_env, 20),
    ("train_steps", check_train_steps, 90),
    ("bf16_vs_fp32", check_bf16_vs_fp32, 60),
    ("eval_parity", check_eval_parity, 40),
    ("eval_last_scale", check_eval_last_scale, 90),
    ("torchrun_nccl", check_torchrun_nccl, 160),
    ("step_ratio", check_step_ratio, 60),
    ("lq_throughput", check_lq_throughput, 90),
    ("onnx", check_onnx, 120),
]
CUDA_ONLY = ("train_steps", "bf16_vs_fp32", "eval_parity", "eval_last_scale", "torchrun_nccl", "step_ratio", "lq_throughput", "onnx")


@dataclass
class Result:
    name: str
    status: str = "SKIP"
    seconds: float = 0.0
    budget_s: float = 0.0
    summary: str = ""
    details: dict = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CheckTimeout in the main thread after ``seconds`` (interrupts Python code, not a blocking kernel)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise CheckTimeout(f"ran past its time budget of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_check(name: str, fn: Callable[[Sizes], tuple[str, dict]], s: Sizes, budget: float) -> Result:
    r = Result(name, budget_s=budget)
    t0 = time.perf_counter()
    try:
        if s.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with time_limit(budget):
            r.summary, r.details = fn(s)
            sync(s.device)  # surface asynchronous CUDA errors inside this check
        r.status = "PASS"
    except Skip as e:
        r.status, r.summary = "SKIP", str(e)
    except BaseException as e:  # every failure becomes a row
        if isinstance(e, KeyboardInterrupt):
            raise
        r.status = "FAIL"
        r.details = getattr(e, "details", None) or {}
        r.error = f"{type(e).__name__}: {e}"
        r.summary = r.error.splitlines()[0][:200]
        r.traceback = traceback.format_exc()
    finally:
        r.seconds = time.perf_counter() - t0
        if s.device.type == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
    return r


def print_table(results: list[Result]) -> None:
    w = max(len(r.name) for r in results)
    print(f"\n{'check':<{w}}  status  seconds  summary", flush=True)
    print(f"{'-' * w}  ------  -------  -------", flush=True)
    for r in results:
        print(f"{r.name:<{w}}  {r.status:<6}  {r.seconds:7.1f}  {r.summary}", flush=True)


def main(argv: list[str] | None = None) -> int:
    names = [c[0] for c in CHECKS]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help=f"JSON results path, written atomically (default {DEFAULT_OUT}; "
                   "with --dry-run runs/bench-quick/gpu_check.json)")
    p.add_argument("--budget-s", type=float, default=330.0,
                   help="global deadline in seconds: checks that cannot start in time are skipped with reason 'budget' (default 330)")
    p.add_argument("--only", default="", help=f"comma-separated checks to run (default all): {','.join(names)}")
    p.add_argument("--skip", default="", help="comma-separated checks not to run")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU self-check of this script: every check at toy sizes (tiny backbone, tiny images, CPU autocast)")
    args = p.parse_args(argv)
    args.out = args.out or (quick_out(DEFAULT_OUT) if args.dry_run else DEFAULT_OUT)
    only = [n for n in args.only.split(",") if n]
    skip = [n for n in args.skip.split(",") if n]
    unknown = sorted(set(only + skip) - set(names))
    if unknown:
        p.error(f"unknown check(s) {unknown}; choose from {names}")
    if args.dry_run:
        torch.set_num_threads(1)
    s = Sizes.make(args.dry_run)
    cuda_ok = torch.cuda.is_available()
    print(f"gpu_check: {'dry run on CPU (toy sizes)' if s.dry else 'GPU run'}, budget {args.budget_s:.0f} s, out {args.out}", flush=True)
    start = time.perf_counter()
    results: list[Result] = []
    meta = {"dry_run": s.dry, "budget_s": args.budget_s, "argv": sys.argv[1:] if argv is None else list(argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "env": env_info()}  # env: commit, dirty flag, script hash

    def save() -> None:
        write_json(args.out, {**meta, "elapsed_s": time.perf_counter() - start, "passed": not any(r.status == "FAIL" for r in results),
                              "checks": [r.to_json() for r in results]})

    for i, (name, fn, budget) in enumerate(CHECKS, 1):
        if s.dry:
            budget = 120.0  # toy sizes; the limit only guards against a hang
        left = args.budget_s - (time.perf_counter() - start)
        if (only and name not in only) or name in skip:
            r = Result(name, summary="not selected (--only / --skip)")
        elif not s.dry and not cuda_ok and name in CUDA_ONLY:
            r = Result(name, summary="no CUDA device (use --dry-run on a CPU-only machine)")
        elif left < min(budget, 30.0):
            r = Result(name, budget_s=budget, summary=f"budget ({left:.0f} s left of --budget-s {args.budget_s:.0f})")
        else:
            print(f"[{i}/{len(CHECKS)}] {name} (budget {min(budget, left):.0f} s) ...", flush=True)
            r = run_check(name, fn, s, min(budget, left))
        print(f"[{i}/{len(CHECKS)}] {name}: {r.status} {r.seconds:.1f} s  {r.summary}", flush=True)
        if r.status == "FAIL" and r.traceback:
            print(r.traceback, file=sys.stderr, flush=True)
        results.append(r)
        save()
    print_table(results)
    save()
    failed = [r.name for r in results if r.status == "FAIL"]
    print(f"\n{'FAILED: ' + ', '.join(failed) if failed else 'all run checks passed'} "
          f"({time.perf_counter() - start:.0f} s); wrote {args.out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
