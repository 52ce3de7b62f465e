"""CAL clothes-based adversarial loss and the positive-clothes masks it needs (docs/method.md §3.3, §4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlq.errors import ConfigError


def pid2clothes_matrix(
    pids: Sequence[int] | Tensor,
    clothes: Sequence[int] | Tensor,
    num_pids: int,
    num_real_clothes: int,
    synthetic_block: int = 0,
) -> Tensor:
    """(num_pids, num_real_clothes + synthetic_block*num_pids) bool matrix of each identity's positive clothes.

    Row p is True at the real outfits worn by identity p (from the paired per-image `pids` / `clothes`) and,
    when `synthetic_block` = M > 0, on p's whole synthetic block num_real_clothes + p*M ... + M - 1
    (docs/method.md §3.3, "Positive-clothes set").
    """
    pid_t = torch.as_tensor(pids, dtype=torch.long).reshape(-1)
    cl_t = torch.as_tensor(clothes, dtype=torch.long).reshape(-1)
    if pid_t.shape != cl_t.shape:
        raise ValueError(
            f"pid2clothes_matrix: {pid_t.numel()} pids but {cl_t.numel()} clothes labels; pass one of each per image"
        )
    if synthetic_block < 0:
        raise ConfigError(f"pid2clothes_matrix: synthetic_block must be >= 0, got {synthetic_block}")
    if pid_t.numel():
        bad_p = pid_t[(pid_t < 0) | (pid_t >= num_pids)]
        if bad_p.numel():
            raise ValueError(
                f"pid2clothes_matrix: pid {int(bad_p[0])} outside [0, {num_pids}); pids must be relabelled train ids"
            )
        bad_c = cl_t[(cl_t < 0) | (cl_t >= num_real_clothes)]
        if bad_c.numel():
            raise ValueError(
                f"pid2clothes_matrix: clothes label {int(bad_c[0])} outside [0, {num_real_clothes}); pass real "
                "(relabelled) outfit ids only, synthetic ones come from synthetic_block"
            )
    out = torch.zeros(num_pids, num_real_clothes + synthetic_block * num_pids, dtype=torch.bool)
    out[pid_t, cl_t] = True
    if synthetic_block:
        blocks = torch.arange(num_pids).unsqueeze(1) * synthetic_block + torch.arange(synthetic_block)
        out.scatter_(1, num_real_clothes + blocks, True)
    return out


def positive_clothes_mask(pids: Tensor, pid2clothes: Tensor) -> Tensor:
    """(B, n_clothes) bool positive-clothes mask P_i: the rows of the (C, n_clothes) `pid2clothes` for `pids`."""
    if pid2clothes.dim() != 2:
        raise ValueError(
            f"positive_clothes_mask: pid2clothes must be (C, n_clothes), got shape {tuple(pid2clothes.shape)}"
        )
    return pid2clothes.to(device=pids.device, dtype=torch.bool)[pids.long()]


def cal_adversarial_loss(
    cosines: Tensor,
    clothes_labels: Tensor,
    pos_mask: Tensor,
    scale: float = 16.0,
    epsilon: float = 0.1,
) -> Tensor:
    """CAL adversarial loss L_CAL (docs/method.md §4).

    z = scale*cos; log q_ik = z_ik - log(sum_{j not in P_i} e^{z_ij} + e^{z_ik});
    t_ik = (1-epsilon)*[k = c_i] + (epsilon/|P_i|)*[k in P_i]; L = mean_i sum_k -t_ik log q_ik.
    """
    if cosines.dim() != 2:
        raise ValueError(
            f"cal_adversarial_loss: cosines must be (B, n_clothes), got shape {tuple(cosines.shape)}"
        )
    if pos_mask.shape != cosines.shape:
        raise ValueError(
            f"cal_adversarial_loss: pos_mask shape {tuple(pos_mask.shape)} must equal cosines shape "
            f"{tuple(cosines.shape)}"
        )
    if clothes_labels.dim() != 1 or clothes_labels.shape[0] != cosines.shape[0]:
        raise ValueError(
            f"cal_adversarial_loss: clothes_labels must be (B,) with B = {cosines.shape[0]}, got shape "
            f"{tuple(clothes_labels.shape)}"
        )
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"cal_adversarial_loss: epsilon must be in [0, 1], got {epsilon}; docs/method.md §4 uses 0.1")
    z = scale * (cosines.float() if cosines.dtype in (torch.float16, torch.bfloat16) else cosines)
    pos = pos_mask.to(device=z.device, dtype=torch.bool)
    # log sum_{j not in P_i} e^{z_ij}; a large finite fill (not -inf) keeps the gradient finite when P_i covers
    # every class, in which case log q_ik = 0.
    very_neg = torch.finfo(z.dtype).min
    lse_neg = torch.logsumexp(z.masked_fill(pos, very_neg), dim=1, keepdim=True)
    log_q = z - torch.logaddexp(lse_neg, z)
    onehot = torch.zeros_like(z).scatter_(1, clothes_labels.to(z.device).long().unsqueeze(1), 1.0)
    n_pos = pos.sum(dim=1, keepdim=True).clamp_min(1).to(z.dtype)
    target = (1.0 - epsilon) * onehot + (epsilon / n_pos) * pos.to(z.dtype)
    # Only entries with t_ik > 0 contribute; masking also avoids 0 * (anything non-finite).
    per_entry = torch.where(target > 0, -target * log_q, torch.zeros_like(log_q))
    return per_entry.sum(dim=1).mean()
