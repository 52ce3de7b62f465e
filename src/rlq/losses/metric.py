"""Feature-geometry losses: cross-replica batch-hard triplet (BOT branch) and the |cos| orthogonality loss (CAP)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from rlq.errors import ConfigError


def _upcast(x: Tensor) -> Tensor:
    # Distances and cosines of half-precision features lose too much; compute them in float32.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _distributed_active(group: dist.ProcessGroup | None) -> bool:
    return group is not None or (dist.is_available() and dist.is_initialized())


def gather_with_local_grad(
    features: Tensor, labels: Tensor, group: dist.ProcessGroup | None = None
) -> tuple[Tensor, Tensor, int]:
    """All-gather (features, labels) over `group`; only the local slice keeps its autograd graph.

    Returns the concatenated features, concatenated labels and the offset of this rank's slice. Replicas may
    hold different numbers of rows (they are padded for the collective and trimmed afterwards).
    """
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    n_local = torch.tensor([features.shape[0]], device=features.device, dtype=torch.long)
    sizes_t = [torch.zeros_like(n_local) for _ in range(world)]
    dist.all_gather(sizes_t, n_local, group=group)
    sizes = [int(s.item()) for s in sizes_t]
    n_max = max(sizes)

    def _padded(x: Tensor) -> Tensor:
        x = x.detach().contiguous()
        if x.shape[0] == n_max:
            return x
        pad = x.new_zeros((n_max - x.shape[0], *x.shape[1:]))
        return torch.cat([x, pad], dim=0)

    feats_p, labels_p = _padded(features), _padded(labels)
    feats_all = [torch.empty_like(feats_p) for _ in range(world)]
    labels_all = [torch.empty_like(labels_p) for _ in range(world)]
    dist.all_gather(feats_all, feats_p, group=group)
    dist.all_gather(labels_all, labels_p, group=group)
    feat_slices = [f[:s] for f, s in zip(feats_all, sizes)]
    label_slices = [lab[:s] for lab, s in zip(labels_all, sizes)]
    # Gathered copies carry no graph; put the local tensor back so the gradient flows through it only
    # (docs/method.md §4, L_Trip: "gradient only through the local slice").
    feat_slices[rank] = features
    label_slices[rank] = labels
    offset = sum(sizes[:rank])
    return torch.cat(feat_slices, dim=0), torch.cat(label_slices, dim=0), offset


def batch_hard_triplet(
    features: Tensor,
    pids: Tensor,
    margin: float = 0.3,
    group: dist.ProcessGroup | None = None,
    *,
    cross_replica: bool = True,
) -> Tensor:
    """Batch-hard triplet on L2-normalised features with d = 1 - cos; local anchors vs all-gathered candidates.

    d_ap = max over candidates of the anchor's identity (the anchor itself included, d = 0), d_an = min over
    candidates of other identities, loss = mean over local anchors of max(0, d_ap - d_an + margin)
    (docs/method.md §4). An anchor without any negative has d_an = min(empty) = +inf, so it contributes 0 but still
    counts in the mean (as in the authors' code). Candidates are gathered from every replica when
    torch.distributed is initialised or `group` is given, unless `cross_replica=False`; gradients flow only
    through this replica's features.
    """
    if features.dim() != 2:
        raise ValueError(f"batch_hard_triplet: features must be (N, D), got shape {tuple(features.shape)}")
    if pids.dim() != 1 or pids.shape[0] != features.shape[0]:
        raise ValueError(
            f"batch_hard_triplet: pids must be (N,) with N = {features.shape[0]}, got shape {tuple(pids.shape)}"
        )
    if margin < 0:
        raise ConfigError(f"batch_hard_triplet: margin must be >= 0, got {margin}; docs/method.md §4 uses 0.3")
    anchors = F.normalize(_upcast(features), p=2, dim=1)
    pids = pids.to(anchors.device)
    if cross_replica and _distributed_active(group):
        candidates, cand_pids, _ = gather_with_local_grad(anchors, pids, group)
    else:
        candidates, cand_pids = anchors, pids
    # Keep the distances in float32 even under autocast (a bf16 matmul would blur near-tied distances).
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        dist_mat = 1.0 - anchors @ candidates.t()
    same = pids.unsqueeze(1) == cand_pids.unsqueeze(0)
    d_ap = dist_mat.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = dist_mat.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(d_ap - d_an + margin).mean()


#: |cos| variants (docs/method.md §12, Table 6 ablation).
COS_VARIANTS: tuple[str, ...] = ("abs", "relu")


def abs_cos_loss(f_a: Tensor, f_b: Tensor, eps: float = 1e-8, variant: str = "abs") -> Tensor:
    """Orthogonality loss mean_i |cos(f_a,i, f_b,i)| (variant "relu": mean ReLU(cos)); not detached (docs/method.md §4)."""
    if f_a.shape != f_b.shape or f_a.dim() != 2:
        raise ValueError(
            f"abs_cos_loss: f_a and f_b must both be (N, D) with equal shapes, got {tuple(f_a.shape)} and "
            f"{tuple(f_b.shape)}"
        )
    cos = F.cosine_similarity(_upcast(f_a), _upcast(f_b), dim=1, eps=eps)
    if variant == "abs":
        return cos.abs().mean()
    if variant == "relu":
        # docs/method.md §12 (Table 6 ablation): ReLU(cos) instead of |cos|.
        return F.relu(cos).mean()
    raise ConfigError(f"abs_cos_loss: variant must be one of {', '.join(COS_VARIANTS)}, got {variant!r}")
