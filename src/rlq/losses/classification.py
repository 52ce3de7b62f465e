"""Classification losses: label-smoothed CE (ID, pose, gender heads) and the CosFace clothes-head CE."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rlq.errors import ConfigError


def _check_logits_target(logits: Tensor, target: Tensor, what: str) -> None:
    if logits.dim() != 2:
        raise ValueError(f"{what}: logits must be (N, n_classes), got shape {tuple(logits.shape)}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{what}: target must be (N,) with N = {logits.shape[0]} to match the logits, got shape "
            f"{tuple(target.shape)}"
        )


def label_smoothed_ce(
    logits: Tensor, target: Tensor, eps: float = 0.1, ignore_index: int | None = None
) -> Tensor:
    """CE against (1-eps)*onehot + eps/n_classes, averaged over the non-ignored samples (docs/method.md §4)."""
    _check_logits_target(logits, target, "label_smoothed_ce")
    if not 0.0 <= eps < 1.0:
        raise ConfigError(f"label_smoothed_ce: eps must be in [0, 1), got {eps}; docs/method.md §4 uses 0.1")
    if ignore_index is None:
        # F.cross_entropy's default ignore_index (-100) would silently drop such rows; use the plain mean.
        per_sample = F.cross_entropy(logits, target, reduction="none", label_smoothing=eps)
        return per_sample.mean()
    # torch's reduction="mean" gives NaN when every row is ignored; divide by max(count, 1) instead, so an
    # all-ignored batch yields 0 that is still attached to the graph.
    per_sample = F.cross_entropy(
        logits, target, reduction="none", label_smoothing=eps, ignore_index=ignore_index
    )
    count = (target != ignore_index).sum().clamp_min(1)
    return per_sample.sum() / count


def clothes_ce(cosines: Tensor, target: Tensor, scale: float = 16.0) -> Tensor:
    """Clothes-head loss L_CL = CE(scale*cos, c): CosFace with s=16, m=0, no smoothing (docs/method.md §4 step 2)."""
    _check_logits_target(cosines, target, "clothes_ce")
    return F.cross_entropy(scale * cosines, target)
