"""The ReID / CAP step (docs/method.md §4): CAL single branch, the Base Model, and its +G / +P / CAP variants.

One step on the 2B-image batch [x0, x̃0, x1, x̃1, ...] (originals interleaved with their recoloured
copies, §3.2) has two stages: the clothes-head loss for its own optimizer (from ``start_epoch_cc``), then
the backbone loss terms for the main optimizer. The trainer takes both steps, in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.batch_ops import apply_erasing, to_float
from ..data.recolor import positive_clothes_matrix, recolor_batch
from ..data.records import Dataset
from ..losses import (
    abs_cos_loss,
    batch_hard_triplet,
    cal_adversarial_loss,
    clothes_ce,
    kl_divergence,
    label_smoothed_ce,
)
from ..models import build_clothes_classifier
from ..spec import LossSpec, RunSpec
from .base import Method, Phase, StepContext, StepOutput, StepResult

__all__ = ["ReIDMethod", "assemble_target_batch", "lq_views"]


def lq_views(batch: Mapping[str, Any], ctx: StepContext, height: int, width: int) -> torch.Tensor:
    """Synthesize a batch's LQ views on the device, then give them their own §3.1 geometry and erasing."""
    from ..data.batch_ops import geo_batch
    from ..lq.batched import synthesize_batch

    dev = ctx.device
    lq = synthesize_batch(batch["lq_src"].to(dev, non_blocking=True), batch["lq_artifact"].to(dev),
                          batch["lq_params"].to(dev), (height, width))
    lq = geo_batch(lq, height, width, batch["lq_crop"], batch["lq_flip"])
    return apply_erasing(lq, batch["lq_erase"])


def assemble_target_batch(batch: Mapping[str, Any], ctx: StepContext, recolor: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Move a target batch to the device, erase/recolour there, and interleave originals with copies."""
    dev = ctx.device
    x = apply_erasing(to_float(batch["img"].to(dev, non_blocking=True)), batch["erase"])
    labels = {k: batch[k].to(dev, non_blocking=True).long() for k in ("pid", "clothes", "gender", "pose", "camid")}
    if recolor:
        copy = recolor_batch(
            batch["copy_img"].to(dev, non_blocking=True),
            batch["copy_labels"].to(dev, non_blocking=True),
            batch["copy_upper"].to(dev),
            batch["copy_lower"].to(dev),
            batch["copy_faulty"].to(dev),
            batch["copy_enabled"].to(dev),
        )
        copy = apply_erasing(to_float(copy), batch["copy_erase"])
        x = torch.stack([x, copy], dim=1).flatten(0, 1)  # [x0, x̃0, x1, x̃1, ...] (§3.2)
        copy_clothes = batch["copy_clothes"].to(dev).long()
        labels = {k: v.repeat_interleave(2) for k, v in labels.items()}
        labels["clothes"] = torch.stack([batch["clothes"].to(dev).long(), copy_clothes], dim=1).flatten()
    if "lq_src" in batch:  # Table 7 "BM + LQ Aug.": append LQ views that keep the real clothes labels
        base = {k: batch[k].to(dev, non_blocking=True).long() for k in ("pid", "clothes", "gender", "pose", "camid")}
        x = torch.cat([x, lq_views(batch, ctx, x.shape[2], x.shape[3])])
        labels = {k: torch.cat([v, base[k]]) for k, v in labels.items()}
    if ctx.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, labels


class ReIDMethod(Method):
    """CAL (single branch), BM, BM+G, BM+P and CAP as one strategy parameterised by the model's parts.

    A subclass inherits :meth:`from_run` (it builds the subclass) and may extend :meth:`reid_step`."""

    def __init__(
        self,
        name: str,
        *,
        num_ids: int,
        pid2clothes: np.ndarray,
        palette_size: int | None,
        loss: LossSpec,
        clothes_lr: float,
        weight_decay: float,
    ) -> None:
        self.name = name
        self.num_ids = num_ids
        self.pid2clothes = pid2clothes
        self.palette_size = palette_size
        self.loss = loss
        self.clothes_lr = clothes_lr
        self.weight_decay = weight_decay
        self.recolor = palette_size is not None
        self.clf: nn.Module | None = None
        self.clf_raw: nn.Module | None = None
        self.clf_opt: torch.optim.Optimizer | None = None
        self.pos_matrix: torch.Tensor | None = None

    @classmethod
    def from_run(cls, name: str, spec: RunSpec, dataset: Dataset, *, palette_size: int | None,
                 teacher: nn.Module | None = None) -> ReIDMethod:
        """The ReID / CAP strategy of a run (the spec's loss and clothes-optimizer settings); no teacher."""
        return cls(name, **cls._reid_kwargs(spec, dataset, palette_size))

    @staticmethod
    def _reid_kwargs(spec: RunSpec, dataset: Dataset, palette_size: int | None) -> dict[str, Any]:
        return {"num_ids": dataset.num_train_pids, "pid2clothes": dataset.pid2clothes, "palette_size": palette_size,
                "loss": spec.loss, "clothes_lr": spec.optim.clothes_lr, "weight_decay": spec.optim.weight_decay}

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, model: nn.Module, device: torch.device, ddp_wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.pos_matrix = positive_clothes_matrix(self.pid2clothes, self.palette_size).to(device)
        self.clf_raw = build_clothes_classifier(model, self.pos_matrix.shape[1]).to(device)
        self.clf = ddp_wrap(self.clf_raw)
        # §6: a separate Adam on the clothes head, same lr and weight decay, no schedule.
        self.clf_opt = torch.optim.Adam(self.clf_raw.parameters(), lr=self.clothes_lr, weight_decay=self.weight_decay)
        self.has_unused_parameters = bool(getattr(model, "has_pose", False) or getattr(model, "has_gender", False))

    def phases(self, epoch: int) -> list[Phase]:
        return [Phase("reid", "target", "reid")]

    def train_modules(self) -> list[nn.Module]:
        return [self.clf_raw] if self.clf_raw is not None else []

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"clothes": self.clf_opt} if self.clf_opt is not None else {}

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from ..runtime.state import optimizer_state_to_flat

        tensors = {f"clothes.{k}": v for k, v in self.clf_raw.state_dict().items()}
        t, meta = optimizer_state_to_flat(self.clf_opt, "clothes_optim")
        tensors.update(t)
        return tensors, {"clothes_optim": meta}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        from ..runtime.state import optimizer_state_from_flat

        sd = {k[len("clothes.") :]: v for k, v in tensors.items() if k.startswith("clothes.")}
        self.clf_raw.load_state_dict(sd)
        optimizer_state_from_flat(self.clf_opt, "clothes_optim", tensors, meta["clothes_optim"])

    # -- the step --------------------------------------------------------------------------------
    def training_step(self, kind: str, batch: Mapping[str, Any], ctx: StepContext) -> StepResult:
        if kind != "reid":
            raise ValueError(f"{self.name} has no step of kind {kind!r}")
        return self.reid_step(batch, ctx)

    def reid_step(self, batch: Mapping[str, Any], ctx: StepContext) -> Iterator[StepOutput]:
        L = self.loss
        x, y = assemble_target_batch(batch, ctx, self.recolor)
        with ctx.autocast():
            out = ctx.model(x, mode="train")
        f_cal = out.f_cal.float()
        pid, clo = y["pid"], y["clothes"]
        losses: dict[str, torch.Tensor] = {}

        # §4 step 2: clothes-head update from epoch start_epoch_cc, on detached f_CAL, its own optimizer
        # (the trainer checks the term and takes the step before this generator goes on).
        if ctx.epoch >= L.start_epoch_cc:
            l_cl = clothes_ce(self.clf(f_cal.detach()), clo, scale=L.clothes_scale)
            yield StepOutput(losses={"clothes_ce": l_cl}, optimizer="clothes")

        eps = L.label_smooth
        losses["id_cal"] = L.w_id * label_smoothed_ce(out.logits_cal.float(), pid, eps=eps)
        if out.f_bot is not None:
            f_bot = out.f_bot.float()
            logits_bot = out.logits_bot.float()
            losses["id_bot"] = L.w_id * label_smoothed_ce(logits_bot, pid, eps=eps)
            # KL(p_BOT ‖ p_CAL): BOT is the target, CAL the prediction; both get gradients (§4).
            losses["id_kl"] = L.w_kl * kl_divergence(logits_bot, out.logits_cal.float(), tau=L.kl_tau, weighting=L.kl_weighting)
            losses["triplet"] = L.w_triplet * batch_hard_triplet(f_bot, pid, margin=L.triplet_margin)
        elif L.cal_triplet:
            losses["triplet"] = L.w_triplet * batch_hard_triplet(f_cal, pid, margin=L.triplet_margin)
        if out.logits_pose is not None:
            f_pose = out.f_pose.float()
            losses["pose"] = L.w_pose * label_smoothed_ce(out.logits_pose.float(), y["pose"], eps=eps)
            partner = getattr(ctx.raw_model, "cos_partner", "bot")
            cos_terms = []
            if partner in ("bot", "both"):
                cos_terms.append(abs_cos_loss(out.f_bot.float(), f_pose, variant=L.cos_variant))
            if partner in ("cal", "both"):
                cos_terms.append(abs_cos_loss(f_cal, f_pose, variant=L.cos_variant))
            losses["cos"] = L.w_cos * sum(cos_terms)
        if out.logits_gender is not None:
            losses["gender"] = L.w_gender * label_smoothed_ce(out.logits_gender.float(), y["gender"], eps=eps, ignore_index=-1)
        # §4 L_CAL from start_epoch_adv, with the (just updated) head's weights detached (step 3).
        if ctx.epoch >= L.start_epoch_adv:
            head = self.clf_raw
            cos = head(f_cal, detach_weight=True)
            losses["cal"] = L.w_cal * cal_adversarial_loss(
                cos, clo, self.pos_matrix[pid], scale=L.clothes_scale, epsilon=L.cal_epsilon
            )
        yield StepOutput(losses=losses, num_images=x.shape[0])
