"""Where tensors run and in which precision: one device resolver and one AMP rule for training and inference.

The AMP rule (docs/design.md, "The runtime layer"): ``auto`` is bf16 autocast on CUDA (fp16 where the GPU has no
bf16) and fp32 elsewhere (CPU bf16 autocast is very slow); ``off``, ``bf16`` and ``fp16`` are what they say on
every device, the CPU included (slow there, but an explicit choice is honoured, as the trainer always did). The
trainer (``train.amp``), the training-time evaluator and :class:`rlq.deploy.FeatureExtractor` (``amp=``) all
resolve through :func:`amp_mode` / :func:`resolve_amp`.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import ConfigError

__all__ = ["AMP_MODES", "AMP_DTYPES", "resolve_device", "amp_mode", "resolve_amp", "precision_name", "autocast_context"]

#: The ``amp`` settings: ``auto`` and the three modes it resolves to.
AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")
#: Autocast dtype of each mode after :func:`amp_mode` resolved ``auto`` (None: fp32, no autocast).
AMP_DTYPES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _local_gpu(local_rank: int | None) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device() if local_rank is None else local_rank)


def resolve_device(device: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """None or ``"auto"`` -> this process's GPU when CUDA is available, else the CPU; ``"cuda"`` -> this process's
    GPU; any other device as given. A CUDA device without CUDA is a :class:`~rlq.errors.ConfigError`.

    This process's GPU is ``cuda:<local_rank>`` (torchrun's LOCAL_RANK) when ``local_rank`` is given, else the
    current CUDA device (``cuda:0`` unless ``torch.cuda.set_device`` chose another); always with its index, so
    it compares equal to the device of the tensors placed on it.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return _local_gpu(local_rank) if torch.cuda.is_available() else torch.device("cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested but CUDA is not available; use device 'cpu' or 'auto' "
                          "(train.device=cpu or auto in a run spec)")
    if d.type == "cuda" and d.index is None:
        return _local_gpu(local_rank)
    return d


def amp_mode(amp: str, device: torch.device) -> str:
    """The AMP mode on ``device``: ``auto`` -> ``bf16`` on CUDA (``fp16`` where bf16 is unsupported), ``off``
    elsewhere (CPU bf16 autocast is very slow); ``off``, ``bf16`` and ``fp16`` unchanged on every device."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp must be one of {list(AMP_MODES)}, got {amp!r}")
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (:func:`amp_mode`); None means fp32, no autocast."""
    return AMP_DTYPES[amp_mode(amp, device)]


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How features were computed, as outputs record it: ``fp32`` (no autocast), ``bf16`` or ``fp16``."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None):
    """torch.autocast on ``device`` for ``amp_dtype``, or a no-op."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)
