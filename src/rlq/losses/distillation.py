"""TAD feature distillation to a frozen teacher, and the SS_MSE self-supervision ablation (docs/method.md §5.4, §12)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _normalised_sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """mean_i ||n(a_i) - n(b_i)||^2 with n = L2 normalisation; in [0, 4]."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"feature pairs must both be (N, D) with equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype in (torch.float16, torch.bfloat16):
        a = a.float()
    if b.dtype in (torch.float16, torch.bfloat16):
        b = b.float()
    diff = F.normalize(a, p=2, dim=1) - F.normalize(b, p=2, dim=1)
    return diff.pow(2).sum(dim=1).mean()


def distillation_loss(teacher_feats: Sequence[Tensor], student_feats: Sequence[Tensor]) -> Tensor:
    """L_D = sum over (teacher, student) pairs of mean_i ||n(T_i) - n(S_i)||^2; teachers detached (docs/method.md §5.4)."""
    if len(teacher_feats) != len(student_feats) or not teacher_feats:
        raise ValueError(
            f"distillation_loss: need the same non-zero number of teacher and student tensors, got "
            f"{len(teacher_feats)} and {len(student_feats)}"
        )
    terms = []
    for idx, (t, s) in enumerate(zip(teacher_feats, student_feats)):
        try:
            terms.append(_normalised_sq_dist(t.detach(), s))
        except ValueError as e:
            raise ValueError(f"distillation_loss pair {idx}: {e}") from None
    return torch.stack(terms).sum()


def tad_distillation(
    t_cal: Tensor, t_bot: Tensor, s_cal_hq: Tensor, s_cal_lq: Tensor, s_bot_hq: Tensor, s_bot_lq: Tensor
) -> Tensor:
    """The 4-term TAD L_D: T_CAL vs S_CAL^HQ, S_CAL^LQ and T_BOT vs S_BOT^HQ, S_BOT^LQ (each term in [0, 4])."""
    return distillation_loss([t_cal, t_cal, t_bot, t_bot], [s_cal_hq, s_cal_lq, s_bot_hq, s_bot_lq])


def ss_mse(student_hq: Tensor, student_lq: Tensor) -> Tensor:
    """SS_MSE ablation (docs/method.md §12, Table 7): mean_i ||n(HQ_i) - n(LQ_i)||^2, both sides receive gradients."""
    return _normalised_sq_dist(student_hq, student_lq)
