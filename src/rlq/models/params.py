"""Parameter counting, including the paper's Table 9 convention (docs/method.md §2.6)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .backbones import STAGE_NAMES, BackboneStages
from .reid import ReIDModel

__all__ = [
    "RESNET50_STAGE_PARAMS",
    "count_parameters",
    "stage_parameter_counts",
    "parameter_report",
    "table9_formula",
]

#: ResNet-50 stage sizes (conv + BN weights and biases), docs/method.md §2.6.
RESNET50_STAGE_PARAMS: dict[str, int] = {
    "stem": 9_536,
    "layer1": 215_808,
    "layer2": 1_219_584,
    "layer3": 7_098_368,
    "layer4": 14_964_736,
}
_RESNET50_FEAT_DIM = 4096


def count_parameters(module: nn.Module | None) -> int:
    """Number of parameters (not buffers) of ``module``; 0 for None."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def stage_parameter_counts(stages: BackboneStages) -> dict[str, int]:
    """Parameters of each backbone stage (stem, layer1..layer4)."""
    return {name: count_parameters(stages.stage(name)) for name in STAGE_NAMES}


def parameter_report(model: ReIDModel) -> dict[str, Any]:
    """Per-part parameter counts, the inference-network size and the Table 9 count (docs/method.md §2.6).

    ``table9_params`` = trunk + CAL and BOT branches + their BN-necks + BOT-ID head, plus pose branch, pose
    neck and pose head for +P methods. For method ``cal`` (no BOT branch) its only ID head, CAL-ID, stands in
    for BOT-ID. Never counted there: CAL-ID (when a BOT-ID exists), gender and clothes heads, BN buffers.
    """
    def neck(branch: Any) -> int:
        return 0 if branch is None else count_parameters(branch.neck)

    def layers(branch: Any) -> int:
        return 0 if branch is None else count_parameters(branch.layers)

    parts = {
        "trunk": count_parameters(model.trunk),
        "cal_branch": layers(model.cal_branch),
        "bot_branch": layers(model.bot_branch),
        "pose_branch": layers(model.pose_branch),
    }
    necks = {"cal": neck(model.cal_branch), "bot": neck(model.bot_branch), "pose": neck(model.pose_branch)}
    heads = {
        "cal_id": count_parameters(model.cal_id_head),
        "bot_id": count_parameters(model.bot_id_head),
        "pose": count_parameters(model.pose_head),
        "gender": count_parameters(model.gender_head),
    }
    inference = parts["trunk"] + parts["cal_branch"] + parts["bot_branch"] + necks["cal"] + necks["bot"]
    table9 = inference + (heads["bot_id"] if model.has_bot else heads["cal_id"])
    if model.has_pose:
        table9 += parts["pose_branch"] + necks["pose"] + heads["pose"]
    return {
        **parts,
        "necks": necks,
        "heads": heads,
        "inference_params": inference,
        "table9_params": table9,
        "total": count_parameters(model),
    }


def table9_formula(num_ids: int, pose_clusters: int | None = None) -> int:
    """Table 9 count for resnet50 with default splits: P_BM(C) = 45,587,520 + 4,097·C, +P adds the pose part."""
    if isinstance(num_ids, bool) or not isinstance(num_ids, int) or num_ids < 1:
        raise ValueError(f"num_ids must be an integer >= 1, got {num_ids!r}")
    s = RESNET50_STAGE_PARAMS
    neck = 2 * _RESNET50_FEAT_DIM  # BatchNorm1d weight + bias
    head = _RESNET50_FEAT_DIM + 1  # per class: weights + bias
    trunk = s["stem"] + s["layer1"] + s["layer2"]
    branch = s["layer3"] + s["layer4"]
    total = trunk + 2 * branch + 2 * neck + head * num_ids
    if pose_clusters is not None:
        if isinstance(pose_clusters, bool) or not isinstance(pose_clusters, int) or pose_clusters < 1:
            raise ValueError(f"pose_clusters must be an integer >= 1 or None, got {pose_clusters!r}")
        total += s["layer2"] + branch + neck + head * (pose_clusters + 1)
    return total
