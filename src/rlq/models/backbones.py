"""ResNet backbones split into stages (stem, layer1..layer4) with last stride 1 (docs/method.md §2.1)."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ..errors import CheckpointError, ConfigError

__all__ = [
    "BACKBONES",
    "IMAGENET_BACKBONES",
    "STAGE_NAMES",
    "BackboneStages",
    "build_backbone",
    "build_backbone_stages",
    "imagenet_weights_path",
    "load_resnet_state_dict",
    "set_last_stride_one",
]

log = logging.getLogger(__name__)

#: Stage names in network order; "stem" is conv1, bn1, relu, maxpool.
STAGE_NAMES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")

# name -> (block, blocks per stage, widths of layer1..4 (planes), stem width)
_SPECS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int], tuple[int, int, int, int], int]] = {
    "resnet18": (tv_resnet.BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), 64),
    "resnet34": (tv_resnet.BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet50": (tv_resnet.Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    # Small variants for CPU tests and the demo (not in the paper).
    "tiny": (tv_resnet.BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128), 16),
    "narrow": (tv_resnet.BasicBlock, (2, 2, 2, 2), (32, 64, 128, 256), 32),
}

#: Every backbone name ``build_backbone`` accepts.
BACKBONES: tuple[str, ...] = tuple(_SPECS)

#: Backbones with torchvision IMAGENET1K_V1 weights (the paper's "pretrained=True", docs/method.md §2.1).
IMAGENET_BACKBONES: dict[str, str] = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}


class _ResNetTrunk(nn.Module):
    """A torchvision-layout ResNet without avgpool/fc (state-dict keys match torchvision's)."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], widths: tuple[int, ...], stem: int) -> None:
        super().__init__()
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.out_channels = self.inplanes
        # Same initialisation as torchvision.models.ResNet.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        expansion = block.expansion  # type: ignore[attr-defined]
        downsample = None
        if stride != 1 or self.inplanes != planes * expansion:
            downsample = nn.Sequential(
                tv_resnet.conv1x1(self.inplanes, planes * expansion, stride), nn.BatchNorm2d(planes * expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


@dataclass
class BackboneStages:
    """The five stages of a ResNet as separate modules, plus the channel count of each stage's output."""

    stem: nn.Sequential
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    out_channels: int
    stage_channels: tuple[int, int, int, int, int]

    def stage(self, name: str) -> nn.Module:
        """Return the stage called ``name`` (one of STAGE_NAMES)."""
        return getattr(self, name)


def set_last_stride_one(layer4: nn.Sequential) -> None:
    """Set stride 1 on layer4's first block (its strided 3x3 conv and downsample conv); no dilation (§2.1)."""
    first = layer4[0]
    conv = first.conv2 if isinstance(first, tv_resnet.Bottleneck) else first.conv1
    conv.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    first.stride = 1


def imagenet_weights_path(backbone: str) -> tuple[Path, str]:
    """Where torchvision's IMAGENET1K_V1 file for ``backbone`` must lie in the hub cache, and its URL."""
    if backbone not in IMAGENET_BACKBONES:
        raise ConfigError(
            f"pretrained='imagenet' is only available for {sorted(IMAGENET_BACKBONES)}, not backbone "
            f"{backbone!r}; use pretrained='none' or a path to a state dict"
        )
    from torchvision import models as tv_models

    weights = getattr(tv_models, IMAGENET_BACKBONES[backbone]).IMAGENET1K_V1
    url: str = weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a tensor-only state dict from .safetensors or .pth/.pt (weights_only, never arbitrary pickles)."""
    if not path.is_file():
        raise CheckpointError(
            f"backbone weights file {str(path)!r} does not exist; pretrained must be 'imagenet', 'none' "
            f"or the path of a torchvision-format ResNet state dict (.safetensors, .pth or .pt)"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        elif suffix in (".pth", ".pt", ".bin"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"backbone weights file {str(path)!r} has unknown extension {suffix!r}; "
                f"use .safetensors, .pth or .pt"
            )
    except CheckpointError:
        raise
    except Exception as exc:  # torn file, pickled objects refused by weights_only, ...
        raise CheckpointError(
            f"cannot read backbone weights {str(path)!r} as a tensor-only state dict ({exc}); re-save it with "
            f"torch.save(model.state_dict(), ...) or safetensors"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"backbone weights {str(path)!r} are not a flat name -> tensor state dict")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_resnet_state_dict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy a torchvision-format ResNet state dict into ``net`` (fc.* ignored); errors name the bad keys."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        def _few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if bad_shape:
            parts.append(f"shape mismatch: {_few(bad_shape)}")
        raise CheckpointError(
            f"backbone weights {source} do not fit this backbone ({'; '.join(parts)}); pass weights of the same "
            f"ResNet variant in torchvision key layout"
        )
    net.load_state_dict(state, strict=True)


def build_backbone(name: str, pretrained: str | os.PathLike | None = "none") -> nn.Module:
    """A torchvision-layout ResNet (conv1..layer4, no fc) with last stride 1, initialised as requested."""
    if name not in _SPECS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    block, layers, widths, stem = _SPECS[name]
    net = _ResNetTrunk(block, layers, widths, stem)
    if pretrained is None or (isinstance(pretrained, str) and pretrained.lower() == "none"):
        pass
    elif isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        path, url = imagenet_weights_path(name)
        if not path.is_file():
            # Never download: this machine may be offline, and silent downloads are not reproducible.
            raise CheckpointError(
                f"ImageNet weights for {name} not found: put the file {path.name!r} into {str(path.parent)!r} "
                f"(download it elsewhere from {url}), or pass pretrained=PATH to a torchvision-format state "
                f"dict, or pretrained='none' for random init"
            )
        load_resnet_state_dict(net, _read_state_dict(path), repr(str(path)))
        log.info("loaded ImageNet weights for %s from %s", name, path)
    else:
        path = Path(pretrained)
        load_resnet_state_dict(net, _read_state_dict(path), repr(str(path)))
        log.info("loaded backbone weights for %s from %s", name, path)
    set_last_stride_one(net.layer4)
    return net


def build_backbone_stages(name: str, pretrained: str | os.PathLike | None = "none") -> BackboneStages:
    """Build a ResNet (last stride 1) and return its stages as separate modules (docs/method.md §2.1)."""
    net = build_backbone(name, pretrained)
    stem = nn.Sequential(OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool))
    widths = _SPECS[name][2]
    expansion = _SPECS[name][0].expansion  # type: ignore[attr-defined]
    channels = (net.conv1.out_channels, *(w * expansion for w in widths))
    return BackboneStages(
        stem=stem,
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
        out_channels=net.out_channels,
        stage_channels=channels,  # type: ignore[arg-type]
    )
