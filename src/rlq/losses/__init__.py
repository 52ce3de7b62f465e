"""Small composable loss terms of the Base Model, CAP and TAD (docs/method.md §4, §5.4, §12)."""

from __future__ import annotations

from rlq.losses.adversarial import cal_adversarial_loss, pid2clothes_matrix, positive_clothes_mask
from rlq.losses.classification import clothes_ce, label_smoothed_ce
from rlq.losses.distillation import distillation_loss, ss_mse, tad_distillation
from rlq.losses.divergence import KL_WEIGHTINGS, OFFICIAL_KL_LAMBDA, kl_divergence
from rlq.losses.metric import abs_cos_loss, batch_hard_triplet, gather_with_local_grad

__all__ = [
    "KL_WEIGHTINGS",
    "OFFICIAL_KL_LAMBDA",
    "abs_cos_loss",
    "batch_hard_triplet",
    "cal_adversarial_loss",
    "clothes_ce",
    "distillation_loss",
    "gather_with_local_grad",
    "kl_divergence",
    "label_smoothed_ce",
    "pid2clothes_matrix",
    "positive_clothes_mask",
    "ss_mse",
    "tad_distillation",
]
