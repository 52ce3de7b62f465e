"""``FeatureExtractor``: the §2.5 inference feature of a trained model for paths, images, arrays or tensors.

Preprocessing is the evaluation transform (docs/method.md §2.5 step 1, :class:`rlq.data.loading.EvalSet`): a PIL
bilinear resize to the checkpoint's input size, uint8 quantisation, then /255 (the model normalises with the
ImageNet mean/std itself). Paths, PIL images, uint8 NumPy arrays and **uint8** tensors all take exactly this
route, so they give bit-identical features for the same pixels. **Float** tensors (0-1) are resized on the
device with ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``, the same triangle filter as
PIL but without PIL's uint8 rounding of the intermediate and final pixels: features then differ from the
uint8 route by roughly the quantisation error (cosine ~1 - 1e-5 for real images), never by a different
transform. A float tensor already at the input size is used as is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import ConfigError, RlqError
from ..runtime.device import AMP_MODES, autocast_context, precision_name, resolve_amp, resolve_device

__all__ = ["FeatureExtractor", "ImageInput", "AMP_MODES", "resolve_device", "resolve_amp"]

log = logging.getLogger(__name__)

#: What a FeatureExtractor accepts: one image or a list of images of one kind, or a batch tensor/array.
ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor | Sequence[Any]
_DEFAULT_INPUT_SIZE = (384, 192)  # docs/method.md §2.1 / §2.5: 384 x 192 (H x W)


def _kind(x: Any) -> str:
    """The input kind of one element: path, pil, array or tensor (ValueError-free: 'other' if unknown)."""
    if isinstance(x, (str, os.PathLike)):
        return "path"
    if isinstance(x, Image.Image):
        return "pil"
    if isinstance(x, np.ndarray):
        return "array"
    if isinstance(x, torch.Tensor):
        return "tensor"
    return "other"


_KIND_HELP = ("an image path (str or os.PathLike), a PIL image, a uint8 NumPy array H x W x 3 (RGB), a torch tensor "
              "3 x H x W or N x 3 x H x W (uint8 0-255 or float 0-1), or a list of one of these kinds")


def _check_array(a: np.ndarray, where: str, batch_ok: bool) -> None:
    ok_dims = (3, 4) if batch_ok else (3,)
    if a.ndim not in ok_dims or a.shape[-1] != 3:
        hint = ""
        if a.ndim in ok_dims and a.shape[-3] == 3:
            hint = " (it looks channels-first: arrays are H x W x 3 like PIL; use a.transpose(1, 2, 0))"
        elif a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 4)):
            hint = " (convert greyscale / RGBA to RGB first, e.g. with PIL .convert('RGB'))"
        want = "H x W x 3" + (" or N x H x W x 3" if batch_ok else "")
        raise RlqError(f"{where}: NumPy image must be {want} RGB, got shape {a.shape}{hint}")
    if a.dtype != np.uint8:
        raise RlqError(
            f"{where}: NumPy images must be uint8 (0-255 RGB), got {a.dtype}; convert with a.astype(np.uint8) after "
            "scaling to 0-255, or pass a float torch tensor with values in 0-1 (note: OpenCV arrays are BGR)"
        )
    if 0 in a.shape:
        raise RlqError(f"{where}: empty image, shape {a.shape}")


def _check_tensor(t: torch.Tensor, where: str, batch_ok: bool) -> None:
    ok_dims = (3, 4) if batch_ok else (3,)
    if t.ndim not in ok_dims or t.shape[-3] != 3:
        hint = ""
        if t.ndim in ok_dims and t.shape[-1] == 3:
            hint = " (it looks channels-last H x W x 3; use t.permute(2, 0, 1) for one image or t.permute(0, 3, 1, 2) for a batch)"
        want = "3 x H x W" + (" or N x 3 x H x W" if batch_ok else "")
        raise RlqError(f"{where}: image tensor must be {want} RGB, got shape {tuple(t.shape)}{hint}")
    if 0 in t.shape[-2:]:
        raise RlqError(f"{where}: empty image, shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return
    if not t.is_floating_point():
        raise RlqError(f"{where}: image tensors must be uint8 (0-255) or floating point (0-1), got {t.dtype}")
    if t.numel():
        finite = torch.isfinite(t).all().item()
        if not finite:
            raise RlqError(f"{where}: float image tensor has NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (it looks like 0-255 values: pass a uint8 tensor or divide by 255)" if hi > 1.0 else ""
            raise RlqError(f"{where}: float image tensors must hold RGB in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")


def _normalise_inputs(images: Any) -> tuple[str, Any, int]:
    """(kind, container, count): validate ``images`` and classify it without reading or resizing anything.

    kind "batch_tensor" / "batch_array": one 4-D tensor / array; otherwise a list of single images of one kind.
    """
    k = _kind(images)
    if k == "tensor":
        _check_tensor(images, "input", batch_ok=True)
        if images.ndim == 4:
            return "batch_tensor", images, int(images.shape[0])
        return "tensor", [images], 1
    if k == "array":
        _check_array(images, "input", batch_ok=True)
        if images.ndim == 4:
            return "batch_array", images, int(images.shape[0])
        return "array", [images], 1
    if k in ("path", "pil"):
        return k, [images], 1
    if isinstance(images, (list, tuple)):
        items = list(images)
        if not items:
            return "empty", items, 0
        kinds = [_kind(x) for x in items]
        bad = [i for i, kk in enumerate(kinds) if kk == "other"]
        if bad:
            raise RlqError(f"input[{bad[0]}] has unsupported type {type(items[bad[0]]).__name__}; expected {_KIND_HELP}")
        if len(set(kinds)) > 1:
            first = {kk: kinds.index(kk) for kk in dict.fromkeys(kinds)}
            found = ", ".join(f"{kk} (e.g. input[{i}])" for kk, i in first.items())
            raise RlqError(f"a list of images must hold one kind of input, found {found}; convert them to one kind first")
        kind = kinds[0]
        for i, x in enumerate(items):
            if kind == "array":
                _check_array(x, f"input[{i}]", batch_ok=False)
            elif kind == "tensor":
                _check_tensor(x, f"input[{i}]", batch_ok=False)
        return kind, items, len(items)
    raise RlqError(f"unsupported input type {type(images).__name__}; expected {_KIND_HELP}")


class FeatureExtractor:
    """Callable feature extractor (torchreid style): images in, L2-normalised float32 features (N x D) on CPU out.

    ``checkpoint_or_model`` is a checkpoint folder / run folder (its recorded input size is used) or a model
    with ``embed(x, flip)`` such as :class:`rlq.models.ReIDModel` (``input_size`` then defaults to 384 x 192).

    ``flip`` and ``amp`` default to None: features are made the way the checkpoint's run was evaluated (its
    ``eval.flip`` and precision, :func:`rlq.engine.model_io.run_eval_settings`), so they are the features behind the
    run's reported numbers (docs/method.md §2.5); for a model or a checkpoint without a run spec that is the flip-sum
    and ``amp="auto"``. ``flip=True/False`` and ``amp="off"|"bf16"|"fp16"|"auto"`` override, resolved by the
    trainer's rule (:func:`rlq.runtime.device.amp_mode`: ``auto`` is fp32 on the CPU; ``bf16`` / ``fp16`` autocast on
    the CPU too, slowly). The settings used are the attributes ``flip`` and ``precision`` (``fp32``, ``bf16`` or
    ``fp16``).

    A model passed in is moved to ``device``; it runs in eval mode and its train/eval mode is restored after
    each call.

    Inputs: a path, a PIL image, a uint8 RGB array H x W x 3 (or N x H x W x 3), a tensor 3 x H x W or
    N x 3 x H x W, or a list of one of these kinds (images may differ in size). Tensor values are told apart
    by dtype: ``torch.uint8`` means 0-255, floating point means 0-1 (checked: values outside [0, 1] are an
    error, not silently rescaled); other dtypes are refused. OpenCV arrays are BGR: convert them first.
    """

    def __init__(
        self,
        checkpoint_or_model: str | os.PathLike | nn.Module,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        flip: bool | None = None,
        amp: str | None = None,
        *,
        input_size: tuple[int, int] | None = None,
        prefer: str = "best",
    ) -> None:
        from ..engine.model_io import run_eval_settings

        self.device = resolve_device(device)
        amp_dtype = None if amp is None else resolve_amp(amp, self.device)  # the trainer's rule (rlq.runtime.device)
        if amp_dtype is not None and self.device.type != "cuda":
            log.warning("AMP on %s is slow on many CPUs; consider amp='off'", self.device.type)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.checkpoint: str | None = None
        self.state: dict[str, Any] = {}
        if isinstance(checkpoint_or_model, nn.Module):
            if not callable(getattr(checkpoint_or_model, "embed", None)):
                raise RlqError(f"{type(checkpoint_or_model).__name__} has no embed(x, flip) method; pass an rlq ReIDModel "
                               "or a checkpoint folder")
            model = checkpoint_or_model.to(self.device)
            size = input_size or _DEFAULT_INPUT_SIZE
        elif isinstance(checkpoint_or_model, (str, os.PathLike)):
            from ..engine.model_io import load_model_checkpoint

            model, self.state = load_model_checkpoint(checkpoint_or_model, device=self.device, prefer=prefer)
            self.checkpoint = str(self.state.get("checkpoint", checkpoint_or_model))
            size = input_size or tuple(self.state.get("input_size") or _DEFAULT_INPUT_SIZE)
        else:
            raise RlqError(f"checkpoint_or_model must be a checkpoint path or an nn.Module, got {type(checkpoint_or_model).__name__}")
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
            raise ConfigError(f"input_size must be (height, width) positive integers, got {size!r}")
        self.model = model
        run_flip, run_amp = run_eval_settings(self.state, self.device)  # as the run evaluated (docs/method.md §2.5)
        self.flip = run_flip if flip is None else bool(flip)
        self.amp_dtype = run_amp if amp is None else amp_dtype
        self.precision = precision_name(self.amp_dtype)
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.embed_dim: int | None = getattr(model, "embed_dim", None)

    def __repr__(self) -> str:
        amp = None if self.amp_dtype is None else str(self.amp_dtype).replace("torch.", "")
        return (f"FeatureExtractor(checkpoint={self.checkpoint!r}, input_size={self.input_size}, device={self.device}, "
                f"batch_size={self.batch_size}, flip={self.flip}, amp={amp})")

    # -- preprocessing ----------------------------------------------------------------------------------
    def _pil_to_uint8(self, img: Image.Image) -> np.ndarray:
        """Evaluation transform of a PIL image: bilinear resize to (W, H), uint8 3 x H x W (EvalSet)."""
        from ..data.images import to_rgb
        from ..data.transforms import resize_for_test, to_chw_uint8

        if img.mode != "RGB":
            img = to_rgb(img)
        h, w = self.input_size
        return to_chw_uint8(resize_for_test(img, h, w))

    def _one_uint8(self, kind: str, x: Any) -> np.ndarray:
        """One image of a uint8 route (path, PIL, array, uint8 tensor) -> uint8 3 x H x W at the input size."""
        if kind == "path":
            from ..data.images import read_image

            return self._pil_to_uint8(read_image(x))
        if kind == "pil":
            return self._pil_to_uint8(x)
        if kind == "array":
            return self._pil_to_uint8(Image.fromarray(np.ascontiguousarray(x), "RGB"))
        # uint8 tensor 3 x H x W: already at the input size -> unchanged (PIL's resize to the same size is a copy)
        a = x.detach().cpu().numpy()
        if tuple(a.shape[1:]) == self.input_size:
            return np.ascontiguousarray(a)
        return self._pil_to_uint8(Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)), "RGB"))

    def _float_batch(self, t: torch.Tensor) -> torch.Tensor:
        """0-1 float N x 3 x h x w -> float32 N x 3 x H x W on the device (antialiased bilinear when resizing)."""
        t = t.to(self.device, dtype=torch.float32)
        if tuple(t.shape[-2:]) != self.input_size:
            t = F.interpolate(t, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        return t

    def _uint8_to_device(self, batch: np.ndarray) -> torch.Tensor:
        # the same order of operations as extract_features: to device, float, / 255
        return torch.from_numpy(batch).to(self.device, non_blocking=True).float().div_(255.0)

    def _prepare(self, kind: str, chunk: Any) -> torch.Tensor:
        """A chunk of inputs -> float32 0-1 batch N x 3 x H x W on the device."""
        if kind == "batch_tensor":
            if chunk.dtype == torch.uint8:
                if tuple(chunk.shape[-2:]) == self.input_size:  # no resize: stay on the tensor's device
                    return chunk.to(self.device, non_blocking=True).float().div_(255.0)
                return self._uint8_to_device(np.stack([self._one_uint8("tensor", t) for t in chunk]))
            return self._float_batch(chunk)
        if kind == "batch_array":
            return self._uint8_to_device(np.stack([self._one_uint8("array", a) for a in chunk]))
        if kind == "tensor":
            if all(t.dtype == torch.uint8 for t in chunk):
                return self._uint8_to_device(np.stack([self._one_uint8("tensor", t) for t in chunk]))
            parts = []
            for t in chunk:
                parts.append(self._uint8_to_device(self._one_uint8("tensor", t)[None]) if t.dtype == torch.uint8
                             else self._float_batch(t[None]))
            return torch.cat(parts)
        return self._uint8_to_device(np.stack([self._one_uint8(kind, x) for x in chunk]))

    # -- extraction -------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, images: ImageInput) -> torch.Tensor:
        """Features (N x D float32, L2-normalised, CPU) of one image or a list/batch of images, in order."""
        kind, items, n = _normalise_inputs(images)
        if n == 0:
            return torch.zeros((0, self.embed_dim or 0), dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        feats = []
        try:
            for start in range(0, n, self.batch_size):
                x = self._prepare(kind, items[start : start + self.batch_size])
                with autocast_context(self.device, self.amp_dtype):
                    f = self.model.embed(x, flip=self.flip)
                feats.append(f.float().cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(feats)

    def search(self, images: ImageInput, index: Any, k: int = 10, *, threshold: Any = None, rerank: Any = None,
               far: float | None = None) -> list[dict[str, Any]]:
        """Search ``index`` (a :class:`~rlq.deploy.GalleryIndex`) with these images' features; each result carries
        ``is_match`` (see :class:`~rlq.deploy.searcher.Searcher`: ``threshold`` None, a distance, or
        ``"calibrated"``)."""
        from .searcher import Searcher

        return Searcher(self, index, threshold=threshold, rerank=rerank, far=far).search(images, k)
