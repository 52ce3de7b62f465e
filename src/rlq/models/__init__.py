"""Backbone splitting, branches, pooling, heads and model assembly (docs/method.md §2)."""

from __future__ import annotations

from .backbones import (
    BACKBONES,
    IMAGENET_BACKBONES,
    MOBILENETV2_STAGES,
    STAGE_NAMES,
    BackboneStages,
    build_backbone,
    build_backbone_stages,
    imagenet_weights_path,
    mobilenetv2_imagenet_path,
)
from .layers import IMAGENET_MEAN, IMAGENET_STD, BNNeck, CosineClassifier, LinearHead, MaxAvgPool, Normalize
from .params import RESNET50_STAGE_PARAMS, count_parameters, parameter_report, stage_parameter_counts, table9_formula
from .reid import (
    FORWARD_MODES,
    POSE_SPLITS,
    SPLITS,
    Branch,
    Embedder,
    ReIDModel,
    ReIDOutput,
    build_clothes_classifier,
    build_model,
    method_parts,
)

__all__ = [
    "BACKBONES",
    "IMAGENET_BACKBONES",
    "MOBILENETV2_STAGES",
    "STAGE_NAMES",
    "BackboneStages",
    "build_backbone",
    "build_backbone_stages",
    "imagenet_weights_path",
    "mobilenetv2_imagenet_path",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BNNeck",
    "CosineClassifier",
    "LinearHead",
    "MaxAvgPool",
    "Normalize",
    "RESNET50_STAGE_PARAMS",
    "count_parameters",
    "parameter_report",
    "stage_parameter_counts",
    "table9_formula",
    "FORWARD_MODES",
    "POSE_SPLITS",
    "SPLITS",
    "Branch",
    "Embedder",
    "ReIDModel",
    "ReIDOutput",
    "build_clothes_classifier",
    "build_model",
    "method_parts",
]
