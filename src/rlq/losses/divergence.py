"""The KL box of docs/method.md §4: temperature-softened KL between two logit sets, `official` or `paper` weighting."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from rlq.errors import ConfigError

#: λ of the authors' KL_Loss (docs/method.md §4 KL box); with τ = 0.8, λ·τ² = 0.4096.
OFFICIAL_KL_LAMBDA = 0.64
KL_WEIGHTINGS = ("official", "paper")


def kl_divergence(
    target_logits: Tensor, pred_logits: Tensor, tau: float = 0.8, weighting: str = "official"
) -> Tensor:
    """KL(p || q) with p = softmax(target/tau), q = softmax(pred/tau); both arguments receive gradients.

    `official`: 0.64 * tau^2 * sum_{i,k} p_ik (log p_ik - log q_ik) / (N*K), i.e. (0.4096/K) x batch-mean KL
    at tau = 0.8. `paper`: (1/N) sum_i KL(p_i || q_i). (docs/method.md §4 KL box.)
    """
    if target_logits.dim() != 2 or target_logits.shape != pred_logits.shape:
        raise ValueError(
            f"kl_divergence: target and prediction logits must both be (N, K) with equal shapes, got "
            f"{tuple(target_logits.shape)} and {tuple(pred_logits.shape)}"
        )
    if tau <= 0:
        raise ConfigError(f"kl_divergence: tau must be > 0, got {tau}; docs/method.md §4 uses 0.8")
    if weighting not in KL_WEIGHTINGS:
        raise ConfigError(f"kl_divergence: weighting must be one of {KL_WEIGHTINGS}, got {weighting!r}")
    # Not detached: docs/method.md §4 "both get gradients".
    log_p = F.log_softmax(target_logits / tau, dim=1)
    log_q = F.log_softmax(pred_logits / tau, dim=1)
    total = F.kl_div(log_q, log_p, reduction="sum", log_target=True)
    n, k = target_logits.shape
    if weighting == "official":
        return OFFICIAL_KL_LAMBDA * tau * tau * total / (n * k)
    return total / n
