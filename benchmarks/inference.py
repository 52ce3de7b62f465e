"""Inference speed: feature-extraction throughput per runtime, and exact torch search vs faiss.

(a) extraction: images/s of the §2.5 feature (two-branch Base Model, flip-sum, L2 norm) on preprocessed
    0-1 batches (decoding and resizing excluded), side by side in one run, for
      * eager PyTorch (fp32), * channels_last, * ``torch.compile`` (try/except; the error is recorded),
      * ONNX Runtime (the model exported by ``rlq.export.export_onnx``, whose parity numbers are recorded),
    on CPU for the ``tiny`` backbone and ResNet-50 at 384 x 192 (small batch), and on CUDA (when available)
    also with bf16 / fp16 autocast. Each variant's features are compared with eager fp32 (max |diff|).
(b) search: a random gallery of 125,000 x 8,192 (``--quick``: x 2,048) L2-normalised features, 1,000 queries
    (noisy copies of gallery rows, so each has one clear match and near-ties behind it), top-10 with
    ``GalleryIndex`` exact (chunked torch matmul + topk) vs faiss ``IndexFlatIP``: build and search times
    and the agreement of the results.

``--quick`` (tiny backbone only, no torch.compile, 2,048-d gallery) writes ``runs/bench-quick/inference.json``
unless ``--out`` is given (never ``benchmarks/results/``); the full run writes ``results/inference.json``. CPU timings on a shared
machine are noisy: compare the ratios inside one run, not absolute numbers across runs. On a loaded machine
``--threads 1`` avoids OpenMP barrier stalls that make multi-threaded eager PyTorch look several times slower
than it is; torch, ONNX Runtime and faiss always get the same thread count.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import MiB, Timer, add_common_args, env_info, rss_bytes, write_json
from rlq.deploy import GalleryIndex
from rlq.models import build_model
from rlq.models.reid import Embedder

log = logging.getLogger("inference")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, reps: int, min_seconds: float) -> tuple[float, int]:
    """(seconds, calls) of at least ``reps`` calls and ``min_seconds`` after one warm-up call."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    while n < reps or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    _sync(device)
    return time.perf_counter() - t0, n


def bench_extraction(backbone: str, height: int, width: int, batch: int, device: torch.device, reps: int,
                     min_seconds: float, with_compile: bool, amp_modes: list[str]) -> dict[str, Any]:
    """Throughput of each runtime for one backbone / size / batch on ``device``."""
    model = build_model(method="bm", num_ids=77, backbone=backbone, pretrained="none", seed=0).eval().to(device)
    x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    emb = Embedder(model).eval()
    with torch.no_grad():
        ref = emb(x).float().cpu()
    out: dict[str, Any] = {"backbone": backbone, "input": [height, width], "batch": batch, "device": str(device),
                           "embed_dim": int(ref.shape[1]), "variants": {}}

    def record(name: str, fn: Callable[[], torch.Tensor], extra: dict[str, Any] | None = None) -> None:
        try:
            with torch.no_grad():
                feats = fn().float().cpu()
                sec, calls = time_calls(fn, device, reps, min_seconds)
            out["variants"][name] = {"images_per_s": batch * calls / sec, "seconds": sec, "calls": calls,
                                     "max_abs_diff_vs_eager": float((feats - ref).abs().max()), **(extra or {})}
            log.info("%s %s %s: %.1f img/s", backbone, device, name, batch * calls / sec)
        except Exception as e:  # noqa: BLE001 - record and go on: one runtime failing must not hide the others
            out["variants"][name] = {"error": f"{type(e).__name__}: {e}"[:2000], **(extra or {})}
            log.warning("%s %s %s failed: %s", backbone, device, name, e)

    for amp in amp_modes:
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]

        def eager(dtype=dtype) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return emb(x)

        record(f"eager_{amp}", eager)
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        cl_emb = Embedder(cl_model).eval()
        xcl = x.contiguous(memory_format=torch.channels_last)

        def channels_last(dtype=dtype, cl_emb=cl_emb, xcl=xcl) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return cl_emb(xcl)

        record(f"channels_last_{amp}", channels_last)
        if with_compile:
            try:
                compiled = torch.compile(Embedder(copy.deepcopy(model)).eval())
                t0 = time.perf_counter()
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    compiled(x)
                _sync(device)
                compile_s = time.perf_counter() - t0

                def comp(dtype=dtype, compiled=compiled) -> torch.Tensor:
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        return compiled(x)

                record(f"compile_{amp}", comp, {"compile_seconds": compile_s})
            except Exception as e:  # noqa: BLE001 - a failed compile is a row of the report, not the end of it
                out["variants"][f"compile_{amp}"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                log.warning("torch.compile failed: %s", e)
        elif amp == amp_modes[0]:
            out["variants"]["compile_fp32"] = {"skipped": "--quick (compiling takes minutes on CPU)"}
    out["variants"].update(bench_onnxruntime(model, x, ref, device, reps, min_seconds, height, width))
    return out


def bench_onnxruntime(model: torch.nn.Module, x: torch.Tensor, ref: torch.Tensor, device: torch.device, reps: int,
                      min_seconds: float, height: int, width: int) -> dict[str, Any]:
    """Export with rlq.export.export_onnx (parity-checked) and time ONNX Runtime (CPU EP; CUDA EP on CUDA)."""
    try:
        import onnxruntime as ort

        from rlq.export.onnx import export_onnx
    except ImportError as e:
        return {"onnxruntime": {"error": f"not installed: {e}"}}
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            t0 = time.perf_counter()
            info = export_onnx(copy.deepcopy(model).cpu(), Path(tmp) / "m.onnx", input_size=(height, width), write_card=False)
            export_s = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - a failed export is a row of the report, not the end of it
            return {"onnxruntime": {"error": f"export failed: {type(e).__name__}: {e}"[:2000]}}
        parity = {k: info["parity"][k] for k in ("max_abs_diff", "max_l2_diff", "min_cosine", "passed")}
        xs = x.cpu().numpy()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider"]
        for prov in providers:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as PyTorch
            sess = ort.InferenceSession(info["onnx"], sess_options=opts, providers=[prov])
            name = "onnxruntime_cpu" if prov == "CPUExecutionProvider" else "onnxruntime_cuda"
            try:
                feats = torch.from_numpy(sess.run(["features"], {"images": xs})[0])
                sec, calls = time_calls(lambda sess=sess: sess.run(["features"], {"images": xs}), torch.device("cpu"), reps, min_seconds)
                res[name] = {"images_per_s": xs.shape[0] * calls / sec, "seconds": sec, "calls": calls,
                             "max_abs_diff_vs_eager": float((feats - ref).abs().max()), "export_seconds": export_s,
                             "intra_op_threads": opts.intra_op_num_threads, "parity": parity,
                             "note": "input copied from host each call" if prov != "CPUExecutionProvider" else ""}
                log.info("onnxruntime %s: %.1f img/s", prov, xs.shape[0] * calls / sec)
            except Exception as e:  # noqa: BLE001 - one runtime failing must not hide the others
                res[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    return res


def make_gallery(n: int, d: int, nq: int, seed: int, block: int = 8192) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm random gallery (block by block) and queries = noisy copies of random gallery rows."""
    rng = np.random.default_rng(seed)
    g = np.empty((n, d), np.float32)
    for a in range(0, n, block):
        b = rng.standard_normal((min(block, n - a), d), dtype=np.float32)
        g[a : a + len(b)] = b / np.linalg.norm(b, axis=1, keepdims=True)
    src = rng.choice(n, nq, replace=False)
    q = g[src] + rng.standard_normal((nq, d), dtype=np.float32) / np.sqrt(d)  # cosine to its source ~0.7
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return g, q, src


def bench_search(n: int, d: int, nq: int, k: int, seed: int) -> dict[str, Any]:
    """GalleryIndex exact vs faiss: build and search time and agreement of the top-k."""
    with Timer() as t:
        g, q, src = make_gallery(n, d, nq, seed)
    keys = np.array([f"g{i:06d}" for i in range(n)])
    out: dict[str, Any] = {"gallery": [n, d], "queries": nq, "k": k, "generate_seconds": t.seconds,
                           "features_gib": g.nbytes / 2**30, "torch_threads": torch.get_num_threads()}
    with Timer() as tb:
        exact = GalleryIndex.build(g, keys, "exact")
    with Timer() as ts:
        se, ie = exact.search(q, k)
    out["exact"] = {"build_seconds": tb.seconds, "search_seconds": ts.seconds, "queries_per_s": nq / ts.seconds,
                    "top1_is_source": float((ie[:, 0] == src).mean())}
    log.info("exact search: %.2f s", ts.seconds)
    del exact
    try:
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())  # the same thread budget as torch
        out["faiss_threads"] = faiss.omp_get_max_threads()
        rss0 = rss_bytes()
        with Timer() as tb:
            fidx = GalleryIndex.build(g, keys, "faiss")
        rss1 = rss_bytes()
        with Timer() as ts:
            sf, i_f = fidx.search(q, k)
        del fidx
        same_list = (ie == i_f).all(axis=1)
        same_set = np.array([set(a) == set(b) for a, b in zip(ie, i_f)])
        # where lists differ, is it a near-tie? (the scores at the first differing rank within 1e-5)
        diff_rows = np.flatnonzero(~same_list)
        gaps = []
        for r in diff_rows:
            j = int(np.flatnonzero(ie[r] != i_f[r])[0])
            gaps.append(float(abs(se[r, j] - sf[r, j])))
        out["faiss"] = {"build_seconds": tb.seconds, "search_seconds": ts.seconds, "queries_per_s": nq / ts.seconds,
                        "index_extra_mib": (rss1 - rss0) / MiB, "speedup_vs_exact": out["exact"]["search_seconds"] / ts.seconds}
        out["agreement"] = {"identical_topk_lists": float(same_list.mean()), "identical_topk_sets": float(same_set.mean()),
                            "identical_top1": float((ie[:, 0] == i_f[:, 0]).mean()),
                            "max_abs_score_diff": float(np.abs(se - sf).max()),
                            "differing_rows": int(len(diff_rows)), "max_score_gap_at_first_difference": max(gaps, default=0.0)}
        log.info("faiss search: %.2f s; identical lists %.4f", ts.seconds, same_list.mean())
    except ImportError as e:
        out["faiss"] = {"error": f"not installed: {e}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, default_out="benchmarks/results/inference.json")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads for torch, ONNX Runtime and faiss (0: torch's default)")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-extraction", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"env": env_info(), "quick": args.quick, "threads": torch.get_num_threads(),
                              "notes": ["CPU timings come from a machine shared with other jobs; compare ratios within "
                                        "one run", "extraction timings exclude image decoding and resizing"]}
    t_all = time.perf_counter()
    if not args.skip_extraction:
        cpu = torch.device("cpu")
        if args.quick:
            configs = [("tiny", 384, 192, 8)]
        else:
            configs = [("tiny", 384, 192, 16), ("resnet50", 384, 192, 4)]
        result["extraction_cpu"] = [
            bench_extraction(b, h, w, bs, cpu, reps=2 if args.quick else 3, min_seconds=0.5 if args.quick else 3.0,
                             with_compile=not args.quick, amp_modes=["fp32"])
            for b, h, w, bs in configs
        ]
        if torch.cuda.is_available():
            gpu = torch.device("cuda")
            gconfigs = [("tiny", 384, 192, 64)] if args.quick else [("tiny", 384, 192, 256), ("resnet50", 384, 192, 64)]
            amps = ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
            result["extraction_cuda"] = [
                bench_extraction(b, h, w, bs, gpu, reps=5 if args.quick else 20, min_seconds=1.0 if args.quick else 5.0,
                                 with_compile=not args.quick, amp_modes=amps)
                for b, h, w, bs in gconfigs
            ]
        else:
            result["extraction_cuda"] = None
    if not args.skip_search:
        result["search"] = bench_search(125_000, 2048 if args.quick else 8192, 1000, 10, seed=0)
    result["total_seconds"] = time.perf_counter() - t_all
    write_json(args.out, result, quick=args.quick)
    log.info("wrote %s (%.0f s)", args.out, result["total_seconds"])


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
