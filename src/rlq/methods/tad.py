"""TAD and RLQ (docs/method.md §5, §6): Task Agnostic Distillation steps on an external HQ stream with
synthetic LQ copies, alternating with the ReID/CAP step of :mod:`rlq.methods.reid`.

`tad` = Base Model + TAD; `rlq` = CAP + TAD. Both share one main optimizer between their TAD and
ReID steps (the trainer's). Alternation: `epoch` (official: a full TAD epoch, then a full ReID
epoch) or `step` (paper: one TAD step before every ReID step, the external loader cycling).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..data.batch_ops import apply_erasing, to_float
from ..data.records import Dataset
from ..losses import kl_divergence, ss_mse, tad_distillation
from ..spec import TAD_ALTERNATIONS, TAD_VARIANTS, TEACHER_VARIANTS, RunSpec, TADSpec
from .base import Phase, StepContext, StepOutput, StepResult
from .reid import ReIDMethod, lq_views

__all__ = ["TADMethod", "TAD_VARIANTS"]


@contextlib.contextmanager
def _frozen_bn(model: nn.Module, enabled: bool):
    """Temporarily put BatchNorm layers in eval mode (the `frozen_stats` ablation, §5.4)."""
    if not enabled:
        yield
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in bns:
        m.eval()
    try:
        yield
    finally:
        for m in bns:
            m.train()


class TADMethod(ReIDMethod):
    """ReID/CAP steps plus TAD steps against a frozen teacher."""

    def __init__(self, name: str, *, teacher: nn.Module | None, tad: TADSpec, height: int, width: int, **reid_kwargs: Any) -> None:
        super().__init__(name, **reid_kwargs)
        if tad.variant not in TAD_VARIANTS:
            raise ValueError(f"unknown TAD variant {tad.variant!r}; choose from {TAD_VARIANTS}")
        self.uses_teacher = tad.variant in TEACHER_VARIANTS
        if self.uses_teacher and teacher is None:
            raise ValueError(f"TAD variant {tad.variant!r} needs a teacher checkpoint (tad.teacher=PATH)")
        if tad.alternation not in TAD_ALTERNATIONS:
            raise ValueError(f"tad.alternation must be one of {TAD_ALTERNATIONS}, got {tad.alternation!r}")
        self.teacher = teacher
        self.tad = tad
        self.h, self.w = height, width

    @classmethod
    def from_run(cls, name: str, spec: RunSpec, dataset: Dataset, *, palette_size: int | None,
                 teacher: nn.Module | None = None) -> TADMethod:
        """The TAD strategy of a run: the ReID / CAP settings plus ``spec.tad``, the input size and the teacher."""
        return cls(name, teacher=teacher, tad=spec.tad, height=spec.data.height, width=spec.data.width,
                   **cls._reid_kwargs(spec, dataset, palette_size))

    def setup(self, model: nn.Module, device: torch.device, ddp_wrap) -> None:
        super().setup(model, device, ddp_wrap)
        self.has_unused_parameters = True  # the pose branch and gender head are idle in TAD steps
        if self.teacher is not None:
            self.teacher = self.teacher.to(device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

    def phases(self, epoch: int) -> list[Phase]:
        if self.tad.alternation == "epoch":  # §6 official: TAD first, then CAP
            return [Phase("tad", "external", "tad"), Phase("reid", "target", "reid")]
        return [Phase("alt", "target", "reid", paired=("external", "tad"))]

    def training_step(self, kind: str, batch: Mapping[str, Any], ctx: StepContext) -> StepResult:
        if kind == "tad":
            return self.tad_step(batch, ctx)
        return super().training_step(kind, batch, ctx)

    def tad_step(self, batch: Mapping[str, Any], ctx: StepContext) -> StepOutput:
        t = self.tad
        kw = dict(tau=self.loss.kl_tau, weighting=self.loss.kl_weighting)
        hq = apply_erasing(to_float(batch["hq"].to(ctx.device, non_blocking=True)), batch["hq_erase"])
        lq = lq_views(batch, ctx, self.h, self.w)
        b = hq.shape[0]
        x = torch.cat([hq, lq])
        if ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _frozen_bn(ctx.raw_model, t.frozen_stats), ctx.autocast():
            # §5.4 step 1: pose branch skipped (§10 fix); `official` runs it unused (mode "train").
            out = ctx.model(x, mode="train" if t.run_pose_branch else "tad")
        s_cal_hq, s_cal_lq = out.f_cal.float().split(b)
        s_bot_hq, s_bot_lq = out.f_bot.float().split(b)
        y_cal_hq, y_cal_lq = out.logits_cal.float().split(b)
        y_bot_hq, y_bot_lq = out.logits_bot.float().split(b)
        losses: dict[str, torch.Tensor] = {}
        if self.uses_teacher:
            with torch.no_grad(), ctx.autocast():
                tout = self.teacher(hq.contiguous(memory_format=torch.channels_last) if ctx.channels_last else hq, mode="features")
            losses["distill"] = t.w_distill * tad_distillation(
                tout.f_cal.float(), tout.f_bot.float(), s_cal_hq, s_cal_lq, s_bot_hq, s_bot_lq
            )
        if t.variant in ("ss_mse_tad", "ss_mse_nt", "target_pairs"):
            losses["ss_mse"] = t.w_ss_mse * (ss_mse(s_cal_hq, s_cal_lq) + ss_mse(s_bot_hq, s_bot_lq))
        # §5.4 step 3: HQ logits are the target, LQ the prediction; both get gradients.
        losses["ss_kl"] = t.w_ss * (kl_divergence(y_cal_hq, y_cal_lq, **kw) + kl_divergence(y_bot_hq, y_bot_lq, **kw))
        if t.clothes_kl:  # `paper` (§5.4 step 4): raw cosines of non-detached f_CAL, head frozen
            c_hq = self.clf_raw(s_cal_hq, detach_weight=True)
            c_lq = self.clf_raw(s_cal_lq, detach_weight=True)
            losses["clothes_kl"] = t.w_ss * kl_divergence(c_hq, c_lq, **kw)
        return StepOutput(losses=losses, num_images=x.shape[0])
