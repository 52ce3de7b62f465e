"""Cross-replica batch-hard triplet on 2 gloo CPU processes vs a single-process reference (docs/method.md §4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlq.losses import batch_hard_triplet

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed gloo backend unavailable"
)

WORLD = 2
MARGIN = 0.3
# Rank 0 holds rows 0:3, rank 1 rows 3:8 (unequal on purpose: exercises the padded gather). Rank 0's ids
# (0, 0, 7) need rank 1's rows for a second positive of id 7 and for most negatives.
SLICES = [(0, 3), (3, 8)]
PIDS = [0, 0, 7, 7, 1, 1, 0, 2]


def _all_features() -> np.ndarray:
    return np.random.default_rng(11).normal(size=(8, 4))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        lo, hi = SLICES[rank]
        local = torch.tensor(_all_features()[lo:hi], dtype=torch.float64, requires_grad=True)
        pids = torch.tensor(PIDS[lo:hi])
        loss = batch_hard_triplet(local, pids, margin=MARGIN)
        loss.backward()
        # The same through an explicit group, and a local-only call for contrast.
        local2 = local.detach().clone().requires_grad_(True)
        loss_group = batch_hard_triplet(local2, pids, margin=MARGIN, group=dist.new_group([0, 1]))
        loss_group.backward()
        loss_local = batch_hard_triplet(local.detach(), pids, margin=MARGIN, cross_replica=False)
        torch.save(
            {
                "loss": loss.item(),
                "grad": local.grad,
                "loss_group": loss_group.item(),
                "grad_group": local2.grad,
                "loss_local": loss_local.item(),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _ref_loss_np(feats: np.ndarray, lo: int, hi: int) -> float:
    """Anchors lo:hi against all rows, explicit loops."""
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    losses = []
    for i in range(lo, hi):
        d_ap, d_an = -math.inf, math.inf
        for j in range(len(f)):
            d = 1.0 - float(np.dot(f[i], f[j]))
            if PIDS[j] == PIDS[i]:
                d_ap = max(d_ap, d)
            else:
                d_an = min(d_an, d)
        losses.append(max(0.0, d_ap - d_an + MARGIN))
    return sum(losses) / len(losses)


def _ref_loss_torch(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Same loss, written elementwise in torch so autograd gives the single-process gradient."""
    norms = [torch.sqrt((x[i] * x[i]).sum()) for i in range(x.shape[0])]
    total = x.new_zeros(())
    for i in range(lo, hi):
        ap = [1 - (x[i] * x[j]).sum() / (norms[i] * norms[j]) for j in range(x.shape[0]) if PIDS[j] == PIDS[i]]
        an = [1 - (x[i] * x[j]).sum() / (norms[i] * norms[j]) for j in range(x.shape[0]) if PIDS[j] != PIDS[i]]
        total = total + torch.clamp(torch.stack(ap).max() - torch.stack(an).min() + MARGIN, min=0)
    return total / (hi - lo)


def test_cross_replica_triplet_matches_single_process(tmp_path: Path) -> None:
    init_file = tmp_path / "dist_init"
    mp.spawn(_worker, args=(str(init_file), str(tmp_path)), nprocs=WORLD, join=True)
    feats = _all_features()
    for rank, (lo, hi) in enumerate(SLICES):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        ref = _ref_loss_np(feats, lo, hi)
        assert res["loss"] == pytest.approx(ref, rel=1e-12)
        assert res["loss_group"] == pytest.approx(ref, rel=1e-12)
        # The gathered candidates matter: local-only candidates give a different number on this data.
        assert res["loss_local"] != pytest.approx(ref, rel=1e-6)

        x = torch.tensor(feats, dtype=torch.float64, requires_grad=True)
        _ref_loss_torch(x, lo, hi).backward()
        ref_grad = x.grad
        # Anchors local: the rank's gradient is the slice of the single-process gradient for its rows ...
        torch.testing.assert_close(res["grad"], ref_grad[lo:hi], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(res["grad_group"], ref_grad[lo:hi], rtol=1e-10, atol=1e-12)
        # ... and the single-process loss does send gradient to the other rank's rows, which DDP drops.
        other = torch.cat([ref_grad[:lo], ref_grad[hi:]])
        assert other.abs().sum() > 1e-6
