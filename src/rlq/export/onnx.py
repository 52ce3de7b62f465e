"""ONNX export of the inference feature with a mandatory parity check against PyTorch (fast-reid style).

The exported graph is :class:`rlq.models.reid.Embedder`: input ``images`` (float32 RGB in [0, 1],
N x 3 x H x W, dynamic N), the model's own ImageNet normalisation, [f_CAL, f_BOT] (summed with the
horizontally flipped image when the run evaluated so, or when asked), one global L2 normalisation
(docs/method.md §2.5); output ``features`` (N x D).

Parity criterion: on real (or deterministic synthetic) images preprocessed like evaluation, run with batch
sizes 1 and 3 through ONNX Runtime (CPU) and PyTorch (CPU, fp32), every feature pair must satisfy
``||f_onnx - f_torch||_2 <= atol`` (default 1e-4). For unit vectors this implies ``max |diff| <= atol`` and
``cosine >= 1 - atol^2 / 2``, and it bounds the change of any retrieval score (a dot product of two
features) by ``2 * atol``, which is what matters for ranking. The model is serialised in memory and written
(atomically) only after the check passes, so a failed export leaves no file behind.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import ConfigError, RlqError
from ..io import atomic_write_bytes, atomic_write_text

__all__ = ["export_onnx", "check_onnx_parity", "synthetic_check_images", "model_card_path", "PARITY_CRITERION"]

log = logging.getLogger(__name__)

PARITY_CRITERION = "max L2 distance between ONNX and PyTorch features <= atol (implies max |diff| <= atol, cosine >= 1 - atol^2/2)"
_PARITY_BATCHES = (1, 3)
_DEFAULT_INPUT_SIZE = (384, 192)  # docs/method.md §2.1


def _import_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise RlqError(f"ONNX export needs onnx and onnxruntime ({e}); install the extra with `pip install 'rlq[export]'`") from None
    return onnx, onnxruntime


def model_card_path(onnx_path: str | os.PathLike) -> Path:
    """Where the model card of an exported model goes: ``<onnx_path>.model-card.md``."""
    return Path(os.fspath(onnx_path) + ".model-card.md")


def synthetic_check_images(n: int = 4, seed: int = 0) -> list[Image.Image]:
    """``n`` deterministic RGB test images of varied sizes: gradients, person-like blocks and noise."""
    rng = np.random.default_rng(seed)
    sizes = [(256, 128), (410, 170), (128, 64), (300, 150), (512, 256), (200, 120)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(40, 200, 3).astype(np.float32)
        img = base + 40 * np.stack([yy / h, xx / w, (yy + xx) / (h + w)], axis=-1)
        for top, bottom in ((0.15, 0.55), (0.55, 0.95)):  # "upper" and "lower" clothes regions
            x0, x1 = int(w * rng.uniform(0.15, 0.35)), int(w * rng.uniform(0.65, 0.85))
            img[int(h * top) : int(h * bottom), x0:x1] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 12, img.shape)
        out.append(Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB"))
    return out


def _preprocess(images: Sequence[Image.Image], height: int, width: int) -> np.ndarray:
    """Evaluation transform (docs/method.md §2.5 step 1): bilinear resize, uint8, then float32 / 255."""
    from ..data.transforms import resize_for_test, to_chw_uint8

    x = np.stack([to_chw_uint8(resize_for_test(im, height, width)) for im in images])
    return torch.from_numpy(x).float().div_(255.0).numpy()


def _onnx_features(session: Any, x: np.ndarray) -> np.ndarray:
    """Run the exported model on a float32 batch."""
    return session.run(["features"], {"images": x})[0]


def check_onnx_parity(
    onnx_model: bytes | str | os.PathLike,
    embedder: nn.Module,
    images: Sequence[Image.Image],
    input_size: tuple[int, int],
    *,
    atol: float = 1e-4,
    batch_sizes: Sequence[int] = _PARITY_BATCHES,
) -> dict[str, Any]:
    """Compare ONNX Runtime (CPU) with ``embedder`` (CPU, fp32) on ``images``; returns the numbers and ``passed``."""
    _, ort = _import_onnx()
    if not images:
        raise RlqError("the ONNX parity check needs at least one image")
    src = onnx_model if isinstance(onnx_model, bytes) else os.fspath(onnx_model)
    opts = ort.SessionOptions()
    # PyTorch runs between ONNX Runtime calls here: spinning ORT worker threads would steal its cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    h, w = input_size
    x_all = _preprocess(images, h, w)
    n = len(images)
    max_abs = max_l2 = 0.0
    min_cos = 1.0
    finite = True
    rows = 0
    embedder = embedder.eval()
    for b in batch_sizes:
        groups = -(-n // b)
        order = np.arange(groups * b) % n  # cycle through the images so every batch is full
        for g in range(groups):
            x = np.ascontiguousarray(x_all[order[g * b : (g + 1) * b]])
            with torch.no_grad():
                ref = embedder(torch.from_numpy(x)).double().numpy()
            got = np.asarray(_onnx_features(session, x), dtype=np.float64)
            if got.shape != ref.shape:
                raise RlqError(f"ONNX output has shape {got.shape} for a batch of {b}, PyTorch gives {ref.shape}")
            if not np.isfinite(got).all() or not np.isfinite(ref).all():
                finite = False
                continue
            d = got - ref
            max_abs = max(max_abs, float(np.abs(d).max()))
            max_l2 = max(max_l2, float(np.linalg.norm(d, axis=1).max()))
            cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
            min_cos = min(min_cos, float(cos.min()))
            rows += b
    passed = finite and max_l2 <= atol
    return {
        "passed": bool(passed),
        "finite": finite,
        "max_abs_diff": max_abs if finite else float("nan"),
        "max_l2_diff": max_l2 if finite else float("nan"),
        "min_cosine": min_cos if finite else float("nan"),
        "atol": float(atol),
        "criterion": PARITY_CRITERION,
        "batch_sizes": [int(b) for b in batch_sizes],
        "num_images": n,
        "num_compared": rows,
        "provider": "CPUExecutionProvider",
    }


def _load(checkpoint_or_model: Any, prefer: str) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(checkpoint_or_model, nn.Module):
        # a CPU fp32 copy: the caller's model keeps its device and mode
        return copy.deepcopy(checkpoint_or_model).float().cpu().eval(), {}
    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        from ..engine.model_io import load_model_checkpoint

        return load_model_checkpoint(checkpoint_or_model, device="cpu", prefer=prefer)
    raise RlqError(f"checkpoint_or_model must be a checkpoint path or an nn.Module, got {type(checkpoint_or_model).__name__}")


def export_onnx(
    checkpoint_or_model: str | os.PathLike | nn.Module,
    out_path: str | os.PathLike,
    *,
    input_size: tuple[int, int] | None = None,
    flip: bool | None = None,
    opset: int = 17,
    check_images: Sequence[str | os.PathLike] | None = None,
    atol: float = 1e-4,
    prefer: str = "best",
    write_card: bool = True,
) -> dict[str, Any]:
    """Export the inference feature to ONNX, check parity with PyTorch, then write the model and its card.

    ``flip`` None (the default) exports the feature the checkpoint's run was evaluated with (its ``eval.flip``,
    :func:`rlq.engine.model_io.run_eval_settings`; the flip-sum for a model or a checkpoint without a run spec), so
    the model card's numbers are the exported model's (docs/method.md §2.5); True/False overrides. The model
    computes in fp32; the metadata and the card record the flip and the precision.

    Raises RlqError (and writes nothing) when the parity check fails. Returns the paths, the model
    description and the parity numbers.
    """
    from ..engine.model_io import run_eval_settings
    from ..models.reid import Embedder
    from .model_card import build_model_card, find_run_results

    onnx, _ = _import_onnx()
    if not atol > 0:
        raise ConfigError(f"atol must be positive, got {atol!r}")
    model, state = _load(checkpoint_or_model, prefer)
    if not callable(getattr(model, "embed", None)):
        raise RlqError(f"{type(model).__name__} has no embed(x, flip) method; pass an rlq ReIDModel or a checkpoint")
    size = tuple(input_size or state.get("input_size") or _DEFAULT_INPUT_SIZE)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ConfigError(f"input_size must be (height, width) positive integers, got {size!r}")
    h, w = int(size[0]), int(size[1])
    run_flip, _ = run_eval_settings(state, torch.device("cpu"))  # the ONNX graph computes in fp32 whatever the run's amp
    flip_source = "the run's eval.flip" if flip is None else "set at export"
    flip = run_flip if flip is None else bool(flip)
    embedder = Embedder(model, flip=flip).eval()
    args = dict(getattr(model, "build_kwargs", None) or state.get("model_args") or {})
    method = str(args.get("method") or state.get("method") or "unknown")
    backbone = str(args.get("backbone") or "unknown")

    dummy = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 flags the (supported) TorchScript exporter
        torch.onnx.export(
            embedder, (dummy,), buf, dynamo=False, export_params=True, opset_version=opset, do_constant_folding=True,
            input_names=["images"], output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    embed_dim = int(proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value or getattr(model, "embed_dim", 0))
    import rlq

    meta = {
        "producer": f"rlq {rlq.__version__}", "method": method, "backbone": backbone, "input_height": str(h),
        "input_width": str(w), "flip": str(bool(flip)).lower(), "flip_source": flip_source,
        "run_eval_flip": str(bool(run_flip)).lower(), "precision": "fp32", "embed_dim": str(embed_dim),
        "input": "images: float32 RGB in [0, 1], N x 3 x H x W (normalisation is inside the model)",
        "output": "features: float32 N x D, L2-normalised; similarity = dot product",
        "checkpoint": str(state.get("checkpoint", "")),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()

    if check_images:
        from ..data.images import read_image

        images = [read_image(p) for p in check_images]
        source = "given"
    else:
        images = synthetic_check_images()
        source = "synthetic (seed 0)"
    parity = check_onnx_parity(data, embedder, images, (h, w), atol=atol)
    parity["images"] = source
    if not parity["passed"]:
        raise RlqError(
            f"ONNX parity check failed for {os.fspath(out_path)}: max L2 distance {parity['max_l2_diff']:.3g} > atol {atol:g} "
            f"(max |diff| {parity['max_abs_diff']:.3g}, min cosine {parity['min_cosine']:.9f}, finite={parity['finite']}); "
            "nothing was written. Try another --opset or report the model and versions."
        )
    out = Path(out_path)
    atomic_write_bytes(out, data)
    sha = hashlib.sha256(data).hexdigest()
    result: dict[str, Any] = {
        "onnx": str(out), "sha256": sha, "bytes": len(data), "method": method, "backbone": backbone,
        "input_size": [h, w], "flip": bool(flip), "flip_source": flip_source, "precision": "fp32",
        "run_eval_flip": bool(run_flip), "opset": opset, "embed_dim": embed_dim,
        "checkpoint": state.get("checkpoint"), "parity": parity, "model_card": None,
    }
    if write_card:
        results_path, results = find_run_results(state.get("checkpoint"))
        from ..deploy.calibration import load_calibration

        calibration = load_calibration(state["checkpoint"]) if state.get("checkpoint") else None
        card = build_model_card(
            onnx_file=out.name, method=method, backbone=backbone, input_size=(h, w), embed_dim=embed_dim, flip=flip,
            opset=opset, parity=parity, sha256=sha, checkpoint=state.get("checkpoint"), state=state, results=results,
            results_path=results_path, run_flip=run_flip if state.get("spec") else None, calibration=calibration,
        )
        card_path = model_card_path(out)
        atomic_write_text(card_path, card)
        result["model_card"] = str(card_path)
        result["results_json"] = None if results_path is None else str(results_path)
    log.info("exported %s (parity: max L2 %.3g, min cosine %.9f)", out, parity["max_l2_diff"], parity["min_cosine"])
    return result
