"""The CAL+BOT Base Model with optional CAP heads/branch, and its forward modes (docs/method.md §2).

Which optional parts a model has (BOT branch, pose branch, gender head) is its method's
:class:`rlq.methods.ModelParts` in the method registry (``tad`` has the ``bm`` parts and ``rlq`` the ``cap`` ones,
docs/method.md §1); the model reads them by the method's name, so a checkpoint's ``model_args`` rebuild it.

Layout (default splits): a shared trunk (stem, layer1, layer2), a CAL branch and a BOT branch (each its own
layer3, layer4, Max-Avg pooling and BN-neck), an optional pose branch (own layer2..layer4, fed after layer1),
and linear heads. Every part is a separate copy of the same backbone stage (§2.1). The stage names are ResNet's;
``mobilenetv2`` is cut into stages of the same names at the same output strides (``MOBILENETV2_STAGES``).

Pose-branch feeding rule (ablations of Tables 13/14): the pose branch forks from the *BOT path* (trunk
followed by the BOT branch) right after its pose split stage t, and owns its own copies of every stage after t.
If t lies inside the shared trunk it takes the trunk's activation; if t lies after the CAL/BOT split it takes
the BOT branch's activation after stage t (``bot_layer3`` is the explicit form of this; the BOT branch is the
default |cos| partner). So every (split, pose_split) combination is well defined; e.g. split=layer1 with
pose_split=layer2 feeds the pose branch from the BOT branch's own layer2, and the pose branch owns layer3-4.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .backbones import BACKBONES, STAGE_NAMES, BackboneStages, build_backbone_stages
from .layers import BNNeck, CosineClassifier, LinearHead, MaxAvgPool, Normalize

if TYPE_CHECKING:
    from ..methods.registry import ModelParts

__all__ = [
    "SPLITS",
    "POSE_SPLITS",
    "PLACEMENTS",
    "FORWARD_MODES",
    "ReIDOutput",
    "Branch",
    "ReIDModel",
    "Embedder",
    "build_model",
    "build_clothes_classifier",
    "method_parts",
]

log = logging.getLogger(__name__)

#: CAL/BOT split points -> index of the last shared stage in STAGE_NAMES (-1: nothing shared).
_SPLIT_INDEX: dict[str, int] = {"disjoint": -1, "layer1": 1, "layer2": 2, "layer3": 3}
#: Pose split points -> index of the stage after which the pose branch forks from the BOT path.
_POSE_INDEX: dict[str, int] = {"layer1": 1, "layer2": 2, "bot_layer3": 3}
SPLITS: tuple[str, ...] = tuple(_SPLIT_INDEX)
POSE_SPLITS: tuple[str, ...] = tuple(_POSE_INDEX)
#: Where the gender head / the |cos| partner attach (Table 6).
PLACEMENTS: tuple[str, ...] = ("bot", "cal", "both")
FORWARD_MODES: tuple[str, ...] = ("train", "tad", "features", "embed")


@dataclass
class ReIDOutput:
    """What a non-``embed`` forward returns; parts a mode or method does not compute are None."""

    f_cal: torch.Tensor | None = None
    f_bot: torch.Tensor | None = None
    f_pose: torch.Tensor | None = None
    logits_cal: torch.Tensor | None = None
    logits_bot: torch.Tensor | None = None
    logits_pose: torch.Tensor | None = None
    logits_gender: torch.Tensor | None = None


class Branch(nn.Module):
    """A branch: its own backbone stages, Max-Avg pooling and BN-neck (docs/method.md §2.1-2.2)."""

    def __init__(self, layers: nn.Sequential, feat_dim: int) -> None:
        super().__init__()
        self.layers = layers
        self.pool = MaxAvgPool()
        self.neck = BNNeck(feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Post-BN-neck feature of the branch."""
        return self.neck(self.pool(self.layers(x)))

    def forward_with_tap(self, x: torch.Tensor, tap_after: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Post-neck feature plus the activation after the first ``tap_after`` stages (>= 1)."""
        x, tapped = _run_with_tap(self.layers, x, tap_after)
        assert tapped is not None
        return self.neck(self.pool(x)), tapped


def _run_with_tap(
    seq: nn.Sequential, x: torch.Tensor, tap_after: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``seq``; also return the activation after its first ``tap_after`` modules (0: the input)."""
    tapped = x if tap_after == 0 else None
    for i, module in enumerate(seq):
        x = module(x)
        if tap_after == i + 1:
            tapped = x
    return x, tapped


def _take(stages: BackboneStages, names: tuple[str, ...]) -> nn.Sequential:
    """Own deep copies of the named stages, keyed by stage name."""
    return nn.Sequential(OrderedDict((n, copy.deepcopy(stages.stage(n))) for n in names))


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {list(choices)}")
    return value


def _check_count(what: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def method_parts(method: object) -> ModelParts:
    """The model parts of a registered method (the registry is a torch-free table in the methods layer)."""
    from ..methods.registry import get_method

    if not isinstance(method, str):
        raise ConfigError(f"method must be a registered method name, got {method!r}")
    return get_method(method).parts


class ReIDModel(nn.Module):
    """CAL / Base Model / CAP model; takes 0-1 RGB, normalises inside (docs/design.md boundary 5).

    Its optional parts are those of ``method`` in the method registry (:func:`method_parts`)."""

    def __init__(
        self,
        *,
        method: str,
        num_ids: int,
        pose_clusters: int | None = None,
        backbone: str = "resnet50",
        pretrained: str | os.PathLike | None = "none",
        split: str = "layer2",
        pose_split: str = "layer1",
        gender_on: str = "bot",
        cos_partner: str = "bot",
        num_genders: int = 2,
        last_stride: int = 1,
    ) -> None:
        super().__init__()
        parts = method_parts(method)
        self.method = method
        self.backbone_name = _check_choice("backbone", backbone, BACKBONES)
        self.split = _check_choice("CAL/BOT split", split, SPLITS)
        self.pose_split = _check_choice("pose split", pose_split, POSE_SPLITS)
        self.gender_on = _check_choice("gender_on", gender_on, PLACEMENTS)
        self.cos_partner = _check_choice("cos_partner", cos_partner, PLACEMENTS)
        self.num_ids = _check_count("num_ids", num_ids, 1)
        self.num_genders = _check_count("num_genders", num_genders, 2)
        self.has_bot = parts.bot_branch
        self.has_pose = parts.pose_branch
        self.has_gender = parts.gender_head
        if self.has_pose:
            if pose_clusters is None:
                raise ConfigError(
                    f"method {method!r} has a pose branch and needs pose_clusters (the number K of pose "
                    f"clusters; the pose head gets K+1 classes, docs/method.md §3.4), e.g. pose_clusters=15"
                )
            self.pose_clusters: int | None = _check_count("pose_clusters", pose_clusters, 1)
        else:
            self.pose_clusters = None

        self.last_stride = int(last_stride)
        stages = build_backbone_stages(backbone, pretrained, self.last_stride)
        self.feat_dim = 2 * stages.out_channels  # Max-Avg pooling doubles the channels (§2.2)
        self.embed_dim = self.feat_dim * (2 if self.has_bot else 1)

        # without a BOT branch (method "cal") the CAL branch is a single full-ResNet branch: nothing is shared.
        s = _SPLIT_INDEX[self.split] if self.has_bot else -1
        self.normalize = Normalize()
        self.trunk = _take(stages, STAGE_NAMES[: s + 1])
        branch_names = STAGE_NAMES[s + 1 :]
        self.cal_branch = Branch(_take(stages, branch_names), self.feat_dim)
        self.bot_branch = Branch(_take(stages, branch_names), self.feat_dim) if self.has_bot else None
        # (where, n): tap the pose input after the first n modules of the trunk or of the BOT branch.
        self._pose_tap: tuple[str, int] | None = None
        self.pose_branch: Branch | None = None
        if self.has_pose:
            t = _POSE_INDEX[self.pose_split]
            self._pose_tap = ("trunk", t + 1) if t <= s else ("bot", t - s)
            self.pose_branch = Branch(_take(stages, STAGE_NAMES[t + 1 :]), self.feat_dim)
        del stages

        # Heads (docs/method.md §2.3).
        self.cal_id_head = LinearHead(self.feat_dim, self.num_ids)
        self.bot_id_head = LinearHead(self.feat_dim, self.num_ids) if self.has_bot else None
        self.pose_head = LinearHead(self.feat_dim, self.pose_clusters + 1) if self.pose_clusters else None
        self.gender_head: LinearHead | None = None
        if self.has_gender:
            gender_dim = self.feat_dim * (2 if self.gender_on == "both" else 1)
            self.gender_head = LinearHead(gender_dim, self.num_genders)

    @property
    def build_kwargs(self) -> dict[str, Any]:
        """The ``build_model`` keyword arguments that rebuild this architecture (without weights)."""
        return {
            "method": self.method,
            "num_ids": self.num_ids,
            "pose_clusters": self.pose_clusters,
            "backbone": self.backbone_name,
            "split": self.split,
            "pose_split": self.pose_split,
            "gender_on": self.gender_on,
            "cos_partner": self.cos_partner,
            "num_genders": self.num_genders,
            "last_stride": self.last_stride,
        }

    def inference_modules(self) -> nn.ModuleDict:
        """The submodules that run at inference: normalize, trunk, CAL (and BOT) branch with their necks."""
        mods: dict[str, nn.Module] = {"normalize": self.normalize, "trunk": self.trunk, "cal_branch": self.cal_branch}
        if self.bot_branch is not None:
            mods["bot_branch"] = self.bot_branch
        return nn.ModuleDict(mods)

    def _branches(
        self, x: torch.Tensor, with_pose: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Normalise and run trunk, CAL, BOT and (if asked) pose branches; returns post-neck features."""
        x = self.normalize(x)
        tap = self._pose_tap if (with_pose and self.pose_branch is not None) else None
        shared, pose_in = _run_with_tap(self.trunk, x, tap[1] if tap and tap[0] == "trunk" else None)
        f_cal = self.cal_branch(shared)
        f_bot = None
        if self.bot_branch is not None:
            if tap and tap[0] == "bot":
                f_bot, pose_in = self.bot_branch.forward_with_tap(shared, tap[1])
            else:
                f_bot = self.bot_branch(shared)
        f_pose = self.pose_branch(pose_in) if (tap and self.pose_branch is not None) else None
        return f_cal, f_bot, f_pose

    def forward(self, x: torch.Tensor, mode: str = "embed") -> ReIDOutput | torch.Tensor:
        """Run one forward mode (docs/method.md §2.4) on B x 3 x H x W RGB in [0, 1].

        ``train``: all branches and heads; ``tad``: CAL and BOT with their ID heads (pose branch not run);
        ``features``: f_cal and f_bot, no heads (teacher); ``embed``: the tensor [f_CAL, f_BOT] (f_CAL alone
        without a BOT branch, method ``cal``), no heads, no flip, no normalisation (see ``embed``).
        """
        if mode == "embed":
            f_cal, f_bot, _ = self._branches(x, with_pose=False)
            return f_cal if f_bot is None else torch.cat([f_cal, f_bot], dim=1)
        if mode == "features":
            f_cal, f_bot, _ = self._branches(x, with_pose=False)
            return ReIDOutput(f_cal=f_cal, f_bot=f_bot)
        if mode == "tad":
            f_cal, f_bot, _ = self._branches(x, with_pose=False)
            return ReIDOutput(
                f_cal=f_cal,
                f_bot=f_bot,
                logits_cal=self.cal_id_head(f_cal),
                logits_bot=self.bot_id_head(f_bot) if (self.bot_id_head is not None and f_bot is not None) else None,
            )
        if mode == "train":
            f_cal, f_bot, f_pose = self._branches(x, with_pose=True)
            out = ReIDOutput(f_cal=f_cal, f_bot=f_bot, f_pose=f_pose, logits_cal=self.cal_id_head(f_cal))
            if self.bot_id_head is not None and f_bot is not None:
                out.logits_bot = self.bot_id_head(f_bot)
            if self.pose_head is not None and f_pose is not None:
                out.logits_pose = self.pose_head(f_pose)
            if self.gender_head is not None and f_bot is not None:
                g_in = {"bot": f_bot, "cal": f_cal}.get(self.gender_on)
                out.logits_gender = self.gender_head(g_in if g_in is not None else torch.cat([f_cal, f_bot], dim=1))
            return out
        raise ValueError(f"unknown forward mode {mode!r}; choose one of {list(FORWARD_MODES)}")

    def embed(self, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
        """Inference feature: L2-normalise(e(x) + e(hflip(x))) once, globally, as float32 (docs/method.md §2.5)."""
        e = self.forward(x, "embed")
        assert isinstance(e, torch.Tensor)
        if flip:
            e_flip = self.forward(torch.flip(x, dims=[3]), "embed")
            assert isinstance(e_flip, torch.Tensor)
            e = e + e_flip
        return F.normalize(e.float(), dim=1)

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, backbone={self.backbone_name!r}, num_ids={self.num_ids}, "
            f"pose_clusters={self.pose_clusters}, split={self.split!r}, pose_split={self.pose_split!r}, "
            f"gender_on={self.gender_on!r}, cos_partner={self.cos_partner!r}, feat_dim={self.feat_dim}"
        )


class Embedder(nn.Module):
    """``x -> model.embed(x, flip)`` as a plain module (for export, extraction and tracing); shares weights."""

    def __init__(self, model: ReIDModel, flip: bool = True) -> None:
        super().__init__()
        self.model = model
        self.flip = flip
        self.train(model.training)  # a fresh module defaults to train mode; follow the model's mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised inference feature of a 0-1 RGB batch."""
        return self.model.embed(x, flip=self.flip)


def build_model(
    *,
    method: str,
    num_ids: int,
    pose_clusters: int | None = None,
    backbone: str = "resnet50",
    pretrained: str | os.PathLike | None = "none",
    split: str = "layer2",
    pose_split: str = "layer1",
    gender_on: str = "bot",
    cos_partner: str = "bot",
    num_genders: int = 2,
    seed: int | None = 0,
    last_stride: int = 1,
) -> ReIDModel:
    """Build a ReID model; random parts are drawn from ``seed`` without touching the global RNG (None: global)."""
    kwargs: dict[str, Any] = dict(
        method=method,
        num_ids=num_ids,
        pose_clusters=pose_clusters,
        backbone=backbone,
        pretrained=pretrained,
        split=split,
        pose_split=pose_split,
        gender_on=gender_on,
        cos_partner=cos_partner,
        num_genders=num_genders,
        last_stride=last_stride,
    )
    if seed is None:
        return ReIDModel(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ReIDModel(**kwargs)


def build_clothes_classifier(model: ReIDModel, num_clothes: int, seed: int | None = 0) -> CosineClassifier:
    """The clothes cosine classifier on the f_CAL dimension (own optimizer; docs/method.md §2.3, §4 step 2)."""
    n = _check_count("num_clothes", num_clothes, 1)
    if seed is None:
        return CosineClassifier(model.feat_dim, n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CosineClassifier(model.feat_dim, n)
