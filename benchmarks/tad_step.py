"""TAD training-step benchmarks.

(a) the TAD step itself: not yet implemented (added with the TAD method; see ``bench_tad_step``).
(b) LQ synthesis (METHOD.md §5.2): throughput in images/s of the batched tensor path
    (``rlq.lq.batched.synthesize_batch``, CPU and CUDA when available) against, measured in the same run,
      * the per-image path of the official code: PIL bicubic/bilinear resizes, torchvision ``gaussian_blur``
        on the PIL image, OpenCV ``warpAffine`` + ``filter2D`` for motion blur, then the PIL bilinear train
        Resize (one process with 1 torch / OpenCV thread, as in one DataLoader worker);
      * the per-image numpy/scipy reference (``rlq.lq.batched.reference_synthesize``).
    Batches of 64 images drawn with the LTCC mix, source 256x128, output 256x128 and 384x192.
    It also records how far the batched output is from the official per-image path (grey levels).

Usage: ``python benchmarks/tad_step.py [--quick] [--device auto|cpu|cuda] [--threads N] [--out PATH]``.
Timings on shared CPUs are noisy; compare numbers from the same run only. On an oversubscribed machine
OpenMP threads contend badly (a tiny depthwise conv went from 0.1 ms to 30 ms with 2 threads on 2 busy
cores): pass ``--threads 1`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import add_common_args, env_info, write_json  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from rlq.lq.batched import reference_synthesize, synthesize_batch  # noqa: E402
from rlq.lq.mix import ARTIFACT_NAMES, draw_lq, mix_for_dataset  # noqa: E402

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


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    import cv2

    old_torch, old_cv = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        cv2.setNumThreads(old_cv)


def _time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall seconds of ``fn`` after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_lq_synthesis(
    batch: int = 64,
    sizes: Sequence[tuple[tuple[int, int], tuple[int, int]]] = DEFAULT_SIZES,
    devices: Sequence[str] = ("cpu",),
    repeats: int = 5,
    dataset: str = "ltcc",
    seed: int = 0,
    include_reference: bool = True,
) -> dict[str, Any]:
    """Images/s of batched LQ synthesis per device vs the per-image official and reference paths."""
    mix = mix_for_dataset(dataset)
    rng = np.random.default_rng(seed)
    draws = [draw_lq(rng, mix) for _ in range(batch)]
    codes = torch.tensor([c for c, _ in draws])
    params = torch.from_numpy(np.stack([p for _, p in draws]))
    result: dict[str, Any] = {
        "batch": batch,
        "dataset_mix": dataset,
        "artifact_counts": {ARTIFACT_NAMES[c]: int((codes == c).sum()) for c in ARTIFACT_NAMES},
        "repeats": repeats,
        "torch_threads_batched": torch.get_num_threads(),
        "threads_per_image": 1,
        "cases": [],
    }
    for src_hw, out_hw in sizes:
        imgs = make_images(batch, *src_hw, seed=seed + 1)
        pil = [Image.fromarray(im) for im in imgs]
        src = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
        case: dict[str, Any] = {"src_hw": list(src_hw), "out_hw": list(out_hw), "images_per_s": {}, "seconds_per_batch": {}}

        def official() -> list[np.ndarray]:
            return [official_per_image(im, int(c), p, out_hw) for im, c, p in zip(pil, codes.tolist(), params.numpy())]

        def ref() -> list[np.ndarray]:
            return [reference_synthesize(im, int(c), p, out_hw) for im, c, p in zip(pil, codes.tolist(), params.numpy())]

        with _single_thread():  # one DataLoader worker
            t = _time(official, repeats)
            case["seconds_per_batch"]["per_image_official"] = t
            case["images_per_s"]["per_image_official"] = batch / t
            if include_reference:
                t = _time(ref, repeats)
                case["seconds_per_batch"]["per_image_reference"] = t
                case["images_per_s"]["per_image_reference"] = batch / t
            official_out = np.stack(official()).astype(np.int64)
        for device in devices:
            dev = torch.device(device)
            sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
            s_dev, c_dev, p_dev = src.to(dev), codes.to(dev), params.to(dev)

            def batched() -> torch.Tensor:
                return synthesize_batch(s_dev, c_dev, p_dev, out_hw)

            t = _time(batched, repeats, sync)
            key = f"batched_{dev.type}"
            case["seconds_per_batch"][key] = t
            case["images_per_s"][key] = batch / t
            case[f"speedup_{dev.type}_vs_per_image_official"] = case["images_per_s"]["per_image_official"] and (
                case["images_per_s"][key] / case["images_per_s"]["per_image_official"]
            )
            got = (batched().cpu() * 255).round().to(torch.int64).permute(0, 2, 3, 1).numpy()
            diff = np.abs(got - official_out)
            case[f"grey_level_diff_{dev.type}_vs_official"] = {
                ARTIFACT_NAMES[c]: {"mean": float(diff[codes.numpy() == c].mean()), "max": int(diff[codes.numpy() == c].max())}
                for c in ARTIFACT_NAMES
                if (codes == c).any()
            }
        result["cases"].append(case)
    return result


def bench_tad_step(*args: Any, **kwargs: Any) -> dict[str, Any]:
    # ---------------------------------------------------------------------------------------------
    # PART (a), TO BE FILLED IN: time one TAD student step (teacher forward, student forward on
    # [HQ; LQ], L_D + L_S, backward, Adam step) on a realistic batch. Added with the TAD method.
    # ---------------------------------------------------------------------------------------------
    raise NotImplementedError("part (a) is added with the TAD method")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_out="benchmarks/results/tad_step.json")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = cpu, plus cuda when available")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the batched CPU path (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
        devices = [args.device]
    if args.quick:
        lq = bench_lq_synthesis(batch=8, sizes=(((64, 32), (64, 32)), ((64, 32), (96, 48))), devices=devices, repeats=2)
    else:
        lq = bench_lq_synthesis(devices=devices)
    results: dict[str, Any] = {"env": env_info(), "quick": args.quick, "lq_synthesis": lq}
    try:
        results["tad_step"] = bench_tad_step()
    except NotImplementedError:
        results["tad_step"] = "not yet implemented"
    write_json(args.out, results)
    for case in lq["cases"]:
        rates = ", ".join(f"{k} {v:.0f} img/s" for k, v in case["images_per_s"].items())
        print(f"LQ synthesis {case['src_hw']} -> {case['out_hw']} (batch {lq['batch']}): {rates}")
        for k, v in case.items():
            if k.startswith("speedup_"):
                print(f"  {k}: {v:.2f}x")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
