"""TAD training-step benchmarks.

(a) the TAD step itself: not yet implemented (added with the TAD method; see ``bench_tad_step``).
(b) LQ synthesis (docs/method.md §5.2): throughput in images/s of the batched tensor path
    (``rlq.lq.batched.synthesize_batch``, CPU and CUDA when available) against, measured in the same run,
      * the per-image path of the official code: PIL bicubic/bilinear resizes, torchvision ``gaussian_blur``
        on the PIL image, OpenCV ``warpAffine`` + ``filter2D`` for motion blur, then the PIL bilinear train
        Resize (one process with 1 torch / OpenCV thread, as in one DataLoader worker);
      * the per-image numpy/scipy reference (``rlq.lq.batched.reference_synthesize``).
    Batches of 64 images drawn with the LTCC mix, source 256x128, output 256x128 and 384x192.
    It also records how far the batched output is from the official per-image path (grey levels).

Usage: ``python benchmarks/tad_step.py [--quick] [--device auto|cpu|cuda] [--threads N] [--rounds R] [--out PATH]``.
Both parts run every side with the same thread count (``--threads``, default 1) and alternate the sides
round by round; ratios are medians of per-round ratios. Timings on shared CPUs are noisy; compare numbers
from the same run only (on an oversubscribed machine OpenMP threads contend badly: a tiny depthwise conv
went from 0.1 ms to 30 ms with 2 threads on 2 busy cores).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from PIL import Image

from _util import add_common_args, alternate, env_info, load, median_ratio, threads, write_json
from rlq.lq.batched import reference_synthesize, synthesize_batch
from rlq.lq.mix import ARTIFACT_NAMES, draw_lq, mix_for_dataset

DEFAULT_SIZES = (((256, 128), (256, 128)), ((256, 128), (384, 192)))


def make_images(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """Textured uint8 test images (smooth colour field + noise + a few hard edges)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
        img = img + rng.integers(-20, 21, img.shape)
        img[h // 3 : h // 3 + 4] = 250
        img[:, w // 2 : w // 2 + 3] = 5
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def official_per_image(img: Image.Image, code: int, params: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The official code's per-image operators (PIL / torchvision / OpenCV), then the PIL bilinear train Resize."""
    import cv2
    from torchvision.transforms.functional import gaussian_blur

    h, w = out_size
    artifact = ARTIFACT_NAMES[int(code)]
    if artifact == "pixelation":
        s = int(params[0])
        ratio = s / min(img.size)
        lq = img.resize((round(img.width * ratio), round(img.height * ratio)), Image.Resampling.BICUBIC)
    elif artifact == "defocus":
        lq = gaussian_blur(img, [int(params[0])] * 2, [float(params[1])] * 2)
    else:
        n, angle = int(params[0]), float(params[1])
        k = np.zeros((n, n), dtype=np.float32)
        k[(n - 1) // 2, :] = 1.0
        k = cv2.warpAffine(k, cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), angle, 1.0), (n, n))
        lq = Image.fromarray(cv2.filter2D(np.asarray(img), -1, k * (1.0 / np.sum(k))))
    return np.asarray(lq.resize((w, h), Image.Resampling.BILINEAR))


def bench_lq_synthesis(
    batch: int = 64,
    sizes: Sequence[tuple[tuple[int, int], tuple[int, int]]] = DEFAULT_SIZES,
    devices: Sequence[str] = ("cpu",),
    repeats: int = 5,
    dataset: str = "ltcc",
    seed: int = 0,
    include_reference: bool = True,
    nthreads: int = 1,
) -> dict[str, Any]:
    """Images/s of batched LQ synthesis per device vs the per-image official and reference paths.

    Every side runs with ``nthreads`` torch / OpenCV / BLAS threads, and the sides alternate round by
    round; speed-ups are medians of per-round ratios."""
    import cv2  # noqa: F401 - imported before threads() so that its thread count is set too

    mix = mix_for_dataset(dataset)
    rng = np.random.default_rng(seed)
    draws = [draw_lq(rng, mix) for _ in range(batch)]
    codes = torch.tensor([c for c, _ in draws])
    params = torch.from_numpy(np.stack([p for _, p in draws]))
    result: dict[str, Any] = {
        "batch": batch,
        "dataset_mix": dataset,
        "artifact_counts": {ARTIFACT_NAMES[c]: int((codes == c).sum()) for c in ARTIFACT_NAMES},
        "rounds": repeats,
        "threads_each_side": nthreads,
        "cases": [],
    }
    for src_hw, out_hw in sizes:
        imgs = make_images(batch, *src_hw, seed=seed + 1)
        pil = [Image.fromarray(im) for im in imgs]
        src = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        case: dict[str, Any] = {"src_hw": list(src_hw), "out_hw": list(out_hw), "images_per_s": {}, "seconds_per_batch": {}}

        def official(pil=pil, out_hw=out_hw) -> list[np.ndarray]:
            return [official_per_image(im, int(c), p, out_hw) for im, c, p in zip(pil, codes.tolist(), params.numpy())]

        def ref(pil=pil, out_hw=out_hw) -> list[np.ndarray]:
            return [reference_synthesize(im, int(c), p, out_hw) for im, c, p in zip(pil, codes.tolist(), params.numpy())]

        sides: dict[str, Callable[[], Any]] = {"per_image_official": official}
        if include_reference:
            sides["per_image_reference"] = ref
        syncs = []
        for device in devices:
            dev = torch.device(device)
            s_dev, c_dev, p_dev = src.to(dev), codes.to(dev), params.to(dev)
            sides[f"batched_{dev.type}"] = (lambda s_dev=s_dev, c_dev=c_dev, p_dev=p_dev, out_hw=out_hw:
                                            synthesize_batch(s_dev, c_dev, p_dev, out_hw))
            if dev.type == "cuda":
                syncs.append(lambda dev=dev: torch.cuda.synchronize(dev))
        with threads(nthreads):
            tm = alternate(sides, repeats, warmup=1, sync=lambda syncs=syncs: [f() for f in syncs])
        case["timing"] = tm
        for k, t in tm["median_s"].items():
            case["seconds_per_batch"][k] = t
            case["images_per_s"][k] = batch / t
        official_out = np.stack(official()).astype(np.int64)
        for device in devices:
            dev = torch.device(device)
            key = f"batched_{dev.type}"
            case[f"speedup_{dev.type}_vs_per_image_official"] = median_ratio(tm, "per_image_official", key)
            if dev.type == "cpu":
                case["cpu_time_speedup_cpu_vs_per_image_official"] = median_ratio(tm, "per_image_official", key,
                                                                                  "cpu_runs")
            got = (sides[key]().cpu() * 255).round().to(torch.int64).permute(0, 2, 3, 1).numpy()
            diff = np.abs(got - official_out)
            case[f"grey_level_diff_{dev.type}_vs_official"] = {
                ARTIFACT_NAMES[c]: {"mean": float(diff[codes.numpy() == c].mean()), "max": int(diff[codes.numpy() == c].max())}
                for c in ARTIFACT_NAMES
                if (codes == c).any()
            }
        result["cases"].append(case)
    return result


def bench_tad_step(device: str = "cpu", b: int = 4, h: int = 256, w: int = 128, backbone: str = "resnet50",
                   repeats: int = 5, nthreads: int | None = None) -> dict[str, Any]:
    """Part (a): our TAD step vs a naive one that keeps the teacher's autograd graph and runs the pose
    branch (as the authors' code does), on the same batch, through the engine's optimizer step."""
    from _training import external_batch, stepper, tad_method
    from rlq.methods.tad import TADMethod
    from rlq.models import build_model

    dev = torch.device(device)
    num_ids, num_clothes = 77, 256
    batch = external_batch(b, h, w)

    class NaiveTAD(TADMethod):
        def tad_step(self, batch, ctx):  # teacher graph kept (no no_grad, grads on), pose branch run
            from rlq.data.batch_ops import apply_erasing, to_float
            from rlq.losses import kl_divergence, tad_distillation
            from rlq.methods.base import StepOutput
            from rlq.methods.reid import lq_views

            hq = apply_erasing(to_float(batch["hq"].to(ctx.device)), batch["hq_erase"])
            lq = lq_views(batch, ctx, self.h, self.w)
            out = ctx.model(torch.cat([hq, lq]), mode="train")
            tout = self.teacher(hq, mode="features")
            n = hq.shape[0]
            sc, sb = out.f_cal.split(n), out.f_bot.split(n)
            yc, yb = out.logits_cal.split(n), out.logits_bot.split(n)
            loss = tad_distillation(tout.f_cal, tout.f_bot, sc[0], sc[1], sb[0], sb[1])
            ss = kl_divergence(yc[0], yc[1]) + kl_divergence(yb[0], yb[1])
            return StepOutput(losses={"distill": loss, "ss_kl": ss}, num_images=2 * n)

    def make(naive: bool) -> Callable[[], Any]:
        student = build_model(method="rlq", num_ids=num_ids, pose_clusters=15, backbone=backbone)
        teacher = build_model(method="bm", num_ids=632, backbone=backbone, seed=1)
        m = tad_method("rlq", num_ids, num_clothes, teacher, h, w, cls=NaiveTAD if naive else TADMethod)
        tr = stepper(student, m, dev)
        if naive:  # the authors' teacher: eval mode but autograd on
            for p in m.teacher.parameters():
                p.requires_grad_(True)
        return lambda: tr.step("tad", batch, epoch=0)

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    n = nthreads or torch.get_num_threads()
    with threads(n):
        tm = alternate({"ours": make(False), "naive": make(True)}, repeats, warmup=1, sync=sync)
    o, nv = tm["median_s"]["ours"], tm["median_s"]["naive"]
    return {"device": device, "backbone": backbone, "external_batch": b, "forwarded": 2 * b, "input_hw": [h, w],
            "threads_each_side": n, "ours_step_s": o, "naive_step_s": nv,
            "naive_over_ours": median_ratio(tm, "naive", "ours"),
            "cpu_time_naive_over_ours": median_ratio(tm, "naive", "ours", "cpu_runs"), "timing": tm,
            "ours": "teacher under no_grad, pose branch skipped (docs/method.md §5.3, §10 default)",
            "naive": "teacher autograd graph kept, pose branch computed (the authors' code)"}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_out="benchmarks/results/tad_step.json")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cpu, plus cuda when available")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch / OpenCV / BLAS threads, the same for every side of a comparison (default 1: "
                             "the per-image path is one DataLoader worker)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5, 2 with --quick)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
        devices = [args.device]
    if args.quick:
        lq = bench_lq_synthesis(batch=8, sizes=(((64, 32), (64, 32)), ((64, 32), (96, 48))), devices=devices,
                                repeats=rounds, nthreads=args.threads)
    else:
        lq = bench_lq_synthesis(devices=devices, repeats=rounds, nthreads=args.threads)
    results: dict[str, Any] = {"env": env_info(), "quick": args.quick, "load_start": load(), "lq_synthesis": lq}
    results["tad_step"] = [bench_tad_step("cpu", nthreads=args.threads, repeats=rounds,
                                          **(dict(b=2, h=128, w=64, backbone="tiny") if args.quick else {}))]
    if "cuda" in devices:
        results["tad_step"].append(bench_tad_step("cuda", b=32, h=384, w=192, repeats=10))
    results["load_end"] = load()
    for r in results["tad_step"]:
        print(f"TAD step on {r['device']}: ours {r['ours_step_s'] * 1000:.0f} ms, naive {r['naive_step_s'] * 1000:.0f} ms "
              f"-> naive/ours {r['naive_over_ours']:.2f}x")
    write_json(args.out, results, quick=args.quick)
    for case in lq["cases"]:
        rates = ", ".join(f"{k} {v:.0f} img/s" for k, v in case["images_per_s"].items())
        print(f"LQ synthesis {case['src_hw']} -> {case['out_hw']} (batch {lq['batch']}): {rates}")
        for k, v in case.items():
            if k.startswith(("speedup_", "cpu_time_speedup_")):
                print(f"  {k}: {v:.2f}x")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
