"""Tests for rlq.models: backbones, layers, assembly, forward modes and parameter counts (docs/method.md §2)."""

from __future__ import annotations

import itertools
import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from rlq.errors import CheckpointError, ConfigError
from rlq.models import (
    STAGE_NAMES,
    BNNeck,
    CosineClassifier,
    Embedder,
    LinearHead,
    MaxAvgPool,
    ReIDModel,
    ReIDOutput,
    build_backbone_stages,
    build_clothes_classifier,
    build_model,
    count_parameters,
    parameter_report,
    stage_parameter_counts,
    table9_formula,
)

ALL_METHODS = ["cal", "bm", "bm+g", "bm+p", "cap", "tad", "rlq"]
POSE = {"bm+p", "cap", "rlq"}
GENDER = {"bm+g", "cap", "rlq"}
TINY_FEAT = 2 * 128  # tiny: layer4 has 128 channels; Max-Avg doubles them


def tiny(method: str = "rlq", **kw) -> ReIDModel:
    kw.setdefault("num_ids", 5)
    if method in POSE:
        kw.setdefault("pose_clusters", 3)
    return build_model(method=method, backbone="tiny", **kw)


def rand_img(b: int = 2, h: int = 64, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def shapes(out: ReIDOutput) -> dict[str, tuple[int, ...] | None]:
    return {k: (None if v is None else tuple(v.shape)) for k, v in vars(out).items()}


# ---------------------------------------------------------------- parameter counts (docs/method.md §2.6, §8)


def test_resnet50_stage_sizes_match_spec():
    counts = stage_parameter_counts(build_backbone_stages("resnet50", "none"))
    assert counts == {
        "stem": 9_536,
        "layer1": 215_808,
        "layer2": 1_219_584,
        "layer3": 7_098_368,
        "layer4": 14_964_736,
    }


@pytest.mark.parametrize(
    "method,kw,table9",
    [
        ("bm", {}, 45_902_989),
        ("bm+g", {}, 45_902_989),
        ("cap", {"pose_clusters": 15}, 69_259_421),
        ("rlq", {"pose_clusters": 15}, 69_259_421),
        ("bm+p", {"pose_clusters": 15}, 69_259_421),
    ],
)
def test_table9_counts_resnet50_ltcc(method, kw, table9):
    m = build_model(method=method, num_ids=77, backbone="resnet50", **kw)
    rep = parameter_report(m)
    assert rep["inference_params"] == 45_587_520
    assert rep["table9_params"] == table9
    assert rep["table9_params"] == table9_formula(77, kw.get("pose_clusters"))
    assert rep["trunk"] == 1_444_928
    assert rep["cal_branch"] == rep["bot_branch"] == 22_063_104
    assert rep["heads"]["cal_id"] == rep["heads"]["bot_id"] == 4_097 * 77
    assert rep["heads"]["gender"] == (8_194 if method in GENDER else 0)
    if method in POSE:
        assert rep["pose_branch"] == 23_282_688
        assert rep["heads"]["pose"] == 4_097 * 16
    parts = rep["trunk"] + rep["cal_branch"] + rep["bot_branch"] + rep["pose_branch"]
    assert rep["total"] == parts + sum(rep["necks"].values()) + sum(rep["heads"].values())
    assert rep["total"] == sum(p.numel() for p in m.parameters())
    # the inference module set is exactly what inference_params counts
    assert count_parameters(m.inference_modules()) == rep["inference_params"]
    # last stride 1 in every layer4 copy, no dilation anywhere (§2.1)
    for branch in [m.cal_branch, m.bot_branch] + ([m.pose_branch] if method in POSE else []):
        first = branch.layers.layer4[0]
        assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    assert all(c.dilation == (1, 1) for c in m.modules() if isinstance(c, nn.Conv2d))


def test_inference_params_independent_of_num_ids():
    m = build_model(method="bm", num_ids=150, backbone="resnet50")
    assert parameter_report(m)["inference_params"] == 45_587_520
    assert parameter_report(m)["table9_params"] == 46_202_070  # PRCC, docs/method.md §8


def test_table9_formula_per_dataset():
    # docs/method.md §8: BM numbers; RLQ adds 23,356,432 (K = 15)
    assert table9_formula(77) == 45_902_989
    assert table9_formula(150) == 46_202_070
    assert table9_formula(450) == 47_431_170
    assert table9_formula(5000) == 66_072_520
    assert table9_formula(632) == 48_176_824
    for c in (77, 150, 450, 5000):
        assert table9_formula(c, 15) - table9_formula(c) == 23_356_432
    assert table9_formula(77, 15) == 69_259_421
    assert table9_formula(1, 4) - table9_formula(1) == 23_282_688 + 8_192 + 4_097 * 5
    with pytest.raises(ValueError):
        table9_formula(0)


def test_table9_for_cal_and_tiny_rules():
    m = tiny("cal", num_ids=7)
    rep = parameter_report(m)
    assert rep["trunk"] == 0 and rep["bot_branch"] == 0 and rep["necks"]["bot"] == 0
    assert rep["cal_branch"] == sum(stage_parameter_counts(build_backbone_stages("tiny")).values())
    assert rep["table9_params"] == rep["inference_params"] + (TINY_FEAT + 1) * 7
    m = tiny("cap", num_ids=7, pose_clusters=4, gender_on="both")
    rep = parameter_report(m)
    assert rep["heads"]["gender"] == 2 * TINY_FEAT * 2 + 2
    assert rep["table9_params"] == (
        rep["inference_params"] + rep["heads"]["bot_id"]
        + rep["pose_branch"] + rep["necks"]["pose"] + rep["heads"]["pose"]
    )


# ---------------------------------------------------------------- shapes and forward modes


def test_last_stride_one_spatial_sizes():
    st = build_backbone_stages("tiny")
    x = rand_img(1, 128, 64)
    sizes = {}
    for name in STAGE_NAMES:
        x = st.stage(name)(x)
        sizes[name] = tuple(x.shape[1:])
    assert sizes["stem"] == (16, 32, 16)
    assert sizes["layer2"] == (32, 16, 8)
    assert sizes["layer3"] == (64, 8, 4)
    assert sizes["layer4"] == (128, 8, 4)  # stride 1: same spatial size as layer3
    assert st.out_channels == 128 and st.stage_channels == (16, 16, 32, 64, 128)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_output_shapes_every_method_and_mode(method):
    m = tiny(method, num_ids=5).eval()
    x = rand_img()
    has_bot = method != "cal"
    f = (2, TINY_FEAT)
    bot = f if has_bot else None
    with torch.no_grad():
        train = shapes(m(x, "train"))
        tad = shapes(m(x, "tad"))
        feats = shapes(m(x, "features"))
        e = m(x, "embed")
        emb = m.embed(x)
    assert train == {
        "f_cal": f,
        "f_bot": bot,
        "f_pose": f if method in POSE else None,
        "logits_cal": (2, 5),
        "logits_bot": (2, 5) if has_bot else None,
        "logits_pose": (2, 4) if method in POSE else None,
        "logits_gender": (2, 2) if method in GENDER else None,
    }
    assert tad == {"f_cal": f, "f_bot": bot, "f_pose": None, "logits_cal": (2, 5),
                   "logits_bot": (2, 5) if has_bot else None, "logits_pose": None, "logits_gender": None}
    assert feats == {"f_cal": f, "f_bot": bot, "f_pose": None, "logits_cal": None, "logits_bot": None,
                     "logits_pose": None, "logits_gender": None}
    assert isinstance(e, torch.Tensor) and e.shape == (2, m.embed_dim) == emb.shape
    assert m.embed_dim == TINY_FEAT * (2 if has_bot else 1) and m.feat_dim == TINY_FEAT
    assert m.method == method and m.num_ids == 5 and m.backbone_name == "tiny"
    assert m.has_pose == (method in POSE) and m.has_gender == (method in GENDER)
    assert m.pose_clusters == (3 if method in POSE else None)
    with pytest.raises(ValueError, match="forward mode"):
        m(x, "bogus")


def test_tad_has_bm_architecture_and_rlq_has_cap_architecture():
    def keys(m):
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}

    assert keys(tiny("tad")) == keys(tiny("bm"))
    assert keys(tiny("rlq")) == keys(tiny("cap"))
    assert keys(tiny("bm+g")) != keys(tiny("bm"))


@pytest.mark.parametrize(
    "split,pose_split",
    list(itertools.product(["disjoint", "layer1", "layer2", "layer3"], ["layer1", "layer2", "bot_layer3"])),
)
def test_splits_and_pose_feeding_rule(split, pose_split):
    m = tiny("rlq", split=split, pose_split=pose_split).eval()
    s = {"disjoint": -1, "layer1": 1, "layer2": 2, "layer3": 3}[split]
    t = {"layer1": 1, "layer2": 2, "bot_layer3": 3}[pose_split]
    assert list(m.trunk._modules) == list(STAGE_NAMES[: s + 1])
    assert list(m.cal_branch.layers._modules) == list(STAGE_NAMES[s + 1 :])
    assert list(m.bot_branch.layers._modules) == list(STAGE_NAMES[s + 1 :])
    assert list(m.pose_branch.layers._modules) == list(STAGE_NAMES[t + 1 :])
    x = rand_img()
    with torch.no_grad():
        out = m(x, "train")
        # Independent reference: walk the BOT path (trunk then BOT branch) stage by stage.
        a = m.normalize(x)
        acts = {}
        for name, mod in list(m.trunk.named_children()) + list(m.bot_branch.layers.named_children()):
            a = mod(a)
            acts[name] = a
        ref_bot = m.bot_branch.neck(m.bot_branch.pool(a))
        ref_pose = m.pose_branch(acts[STAGE_NAMES[t]])
        shared = m.normalize(x)
        for mod in m.trunk:
            shared = mod(shared)
        ref_cal = m.cal_branch(shared)
    assert shapes(out)["f_pose"] == (2, TINY_FEAT)
    torch.testing.assert_close(out.f_bot, ref_bot)
    torch.testing.assert_close(out.f_cal, ref_cal)
    torch.testing.assert_close(out.f_pose, ref_pose)


def test_branches_own_separate_copies():
    m = tiny("rlq", split="layer2", pose_split="layer1")
    w_cal = m.cal_branch.layers.layer3[0].conv1.weight
    w_bot = m.bot_branch.layers.layer3[0].conv1.weight
    w_pose = m.pose_branch.layers.layer3[0].conv1.weight
    assert torch.equal(w_cal, w_bot) and torch.equal(w_cal, w_pose)  # copies of the same init
    assert len({w_cal.data_ptr(), w_bot.data_ptr(), w_pose.data_ptr()}) == 3


class _Counter:
    def __init__(self, modules):
        self.n = 0
        for mod in modules:
            mod.register_forward_hook(self)

    def __call__(self, *_):
        self.n += 1


def test_pose_branch_and_heads_not_run_outside_train():
    m = tiny("rlq").train()
    pose = _Counter([m.pose_branch])
    heads = _Counter([m.cal_id_head, m.bot_id_head, m.pose_head, m.gender_head])
    x = rand_img(4)
    running = m.pose_branch.neck.running_mean.clone()
    m(x, "tad")
    assert pose.n == 0 and heads.n == 2  # only the two ID heads
    assert torch.equal(m.pose_branch.neck.running_mean, running)  # pose BN stats untouched in TAD (§10)
    m(x, "features")
    m(x, "embed")
    m.eval()
    with torch.no_grad():
        m.embed(x)
    assert pose.n == 0 and heads.n == 2
    m.train()
    m(x, "train")
    assert pose.n == 1 and heads.n == 6


def test_gender_placement_and_cos_partner():
    x = rand_img()
    for on, dim in [("bot", TINY_FEAT), ("cal", TINY_FEAT), ("both", 2 * TINY_FEAT)]:
        m = tiny("cap", gender_on=on, cos_partner=on).eval()
        assert m.gender_head.in_features == dim and m.cos_partner == on and m.gender_on == on
        with torch.no_grad():
            out = m(x, "train")
        ref_in = {"bot": out.f_bot, "cal": out.f_cal, "both": torch.cat([out.f_cal, out.f_bot], 1)}[on]
        torch.testing.assert_close(out.logits_gender, ref_in @ m.gender_head.weight.T + m.gender_head.bias)


# ---------------------------------------------------------------- inference feature


def test_embed_is_flip_sum_then_one_global_l2():
    m = tiny("bm").eval()
    x = rand_img(3)
    with torch.no_grad():
        feats = m(x, "features")
        e = m(x, "embed")
        e_flip = m(x[:, :, :, torch.arange(x.shape[3] - 1, -1, -1)], "embed")
        got = m.embed(x)
        got_noflip = m.embed(x, flip=False)
    torch.testing.assert_close(e, torch.cat([feats.f_cal, feats.f_bot], 1))  # order [f_CAL, f_BOT]
    s = e + e_flip
    torch.testing.assert_close(got, s / s.norm(dim=1, keepdim=True))
    torch.testing.assert_close(got_noflip, e / e.norm(dim=1, keepdim=True))
    torch.testing.assert_close(got.norm(dim=1), torch.ones(3))
    # not per-branch normalised: the two halves generally have different norms
    assert not torch.allclose(got[:, :TINY_FEAT].norm(dim=1), got[:, TINY_FEAT:].norm(dim=1))
    assert got.dtype == torch.float32
    torch.testing.assert_close(Embedder(m)(x), got)


def test_normalisation_is_inside_the_model():
    m = tiny("bm").eval()
    x = rand_img()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = m(x, "embed")
        m.normalize = nn.Identity()
        manual = m((x - mean) / std, "embed")
        raw = m(x, "embed")
    torch.testing.assert_close(ref, manual)
    assert not torch.allclose(ref, raw, atol=1e-3)
    assert not any("normalize" in k for k in tiny("bm").state_dict())  # buffers are not persistent


def test_channels_last_matches_contiguous():
    m = tiny("rlq").eval()
    x = rand_img(2, 64, 32)
    with torch.no_grad():
        ref = m.embed(x)
        ref_train = m(x, "train")
        m = m.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        got = m.embed(xc)
        got_train = m(xc, "train")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_train.f_pose, ref_train.f_pose, atol=1e-4, rtol=1e-4)


def test_autocast_cpu_bfloat16():
    m = tiny("rlq").train()
    x = rand_img(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, "train")
        loss = sum(t.float().sum() for t in vars(out).values() if t is not None)
    loss.backward()
    assert torch.isfinite(loss)
    m.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        e = m.embed(x)
    assert e.dtype == torch.float32 and torch.allclose(e.norm(dim=1), torch.ones(4))


def test_any_input_size_and_grad_flow():
    m = tiny("cap").train()
    out = m(rand_img(4, 96, 48), "train")
    (out.logits_bot.sum() + out.logits_pose.sum() + out.logits_gender.sum() + out.logits_cal.sum()).backward()
    assert m.trunk.stem.conv1.weight.grad is not None
    assert m.pose_branch.layers.layer4[0].conv1.weight.grad is not None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_embed_smoke(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = tiny("bm").eval()
    x = rand_img(2, 64, 32)
    path = tmp_path / "embed.onnx"
    wrapper = Embedder(m)
    assert not wrapper.training  # follows the model's eval mode
    with torch.no_grad():
        torch.onnx.export(wrapper, (x,), str(path), dynamo=False, input_names=["images"],
                          output_names=["embedding"], dynamic_axes={"images": {0: "batch"}})
        ref = wrapper.eval()(rand_img(3, 64, 32, seed=1)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": rand_img(3, 64, 32, seed=1).numpy()})[0]
    assert got.shape == (3, 2 * TINY_FEAT)
    assert abs(got - ref).max() < 1e-4


# ---------------------------------------------------------------- layers and init


def test_maxavg_pool_matches_torch_pools():
    x = torch.randn(2, 5, 6, 3)
    ref = torch.cat([F.adaptive_max_pool2d(x, 1).flatten(1), F.adaptive_avg_pool2d(x, 1).flatten(1)], 1)
    torch.testing.assert_close(MaxAvgPool()(x), ref)


def test_neck_and_head_init_statistics():
    torch.manual_seed(0)
    neck = BNNeck(4096)
    assert abs(neck.weight.mean().item() - 1.0) < 0.002
    assert 0.018 < neck.weight.std().item() < 0.022
    assert torch.all(neck.bias == 0) and neck.weight.requires_grad and neck.bias.requires_grad
    head = LinearHead(4096, 50)
    assert abs(head.weight.std().item() - 0.001) < 0.00005 and abs(head.weight.mean().item()) < 1e-5
    assert torch.all(head.bias == 0)
    m = tiny("cap", num_ids=300)
    for b in (m.cal_branch, m.bot_branch, m.pose_branch):
        assert abs(b.neck.weight.mean().item() - 1) < 0.01 and 0.01 < b.neck.weight.std().item() < 0.03
        assert torch.all(b.neck.bias == 0)
    for h in (m.cal_id_head, m.bot_id_head):
        assert abs(h.weight.std().item() - 0.001) < 0.0001 and torch.all(h.bias == 0)


def test_cosine_classifier():
    clf = build_clothes_classifier(tiny("bm"), 40)
    assert isinstance(clf, CosineClassifier) and clf.weight.shape == (40, TINY_FEAT)
    torch.testing.assert_close(clf.weight.norm(dim=1), torch.ones(40))
    # before normalisation rows were U(-1, 1): entries of a unit row of dim d stay within [-1, 1]·sqrt(3/d)·~2
    assert clf.weight.abs().max() < 4 * (3 / TINY_FEAT) ** 0.5
    f = torch.randn(3, TINY_FEAT, requires_grad=True)
    cos = clf(f)
    ref = torch.stack([torch.stack([F.cosine_similarity(f[i], clf.weight[k], dim=0) for k in range(40)])
                       for i in range(3)])
    torch.testing.assert_close(cos, ref)
    assert cos.abs().max() <= 1 + 1e-6
    clf(f, detach_weight=True).sum().backward()
    assert clf.weight.grad is None and f.grad is not None
    clf(f).sum().backward()
    assert clf.weight.grad is not None
    with pytest.raises(ConfigError):
        build_clothes_classifier(tiny("bm"), 0)


def test_seeded_build_is_deterministic_and_leaves_global_rng():
    state = torch.get_rng_state()
    a, b, c = tiny("cap", seed=3), tiny("cap", seed=3), tiny("cap", seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["bot_id_head.weight"], sc["bot_id_head.weight"])
    assert build_model(**a.build_kwargs).state_dict().keys() == sa.keys()


# ---------------------------------------------------------------- errors and weight loading


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"method": "rlqq"}, "method"),
        ({"method": "bm", "backbone": "resnet51"}, "backbone"),
        ({"method": "bm", "split": "layer4"}, "split"),
        ({"method": "cap", "pose_split": "layer3"}, "pose split"),
        ({"method": "cap", "gender_on": "pose"}, "gender_on"),
        ({"method": "cap", "cos_partner": "pose"}, "cos_partner"),
        ({"method": "bm", "num_ids": 0}, "num_ids"),
        ({"method": "cap", "pose_clusters": None}, "pose_clusters"),
        ({"method": "rlq", "pose_clusters": 0}, "pose_clusters"),
        ({"method": "bm+p", "pose_clusters": None}, "pose_clusters"),
        ({"method": "bm", "pretrained": "imagenet"}, "imagenet"),
    ],
)
def test_config_errors(kw, match):
    kw = {"num_ids": 5, "backbone": "tiny", "pose_clusters": 3, **kw}
    with pytest.raises(ConfigError, match=match):
        build_model(**kw)


@pytest.fixture
def no_download(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)


def test_missing_imagenet_weights_names_file_and_place(tmp_path, monkeypatch, no_download):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CheckpointError) as err:
        build_model(method="bm", num_ids=3, backbone="resnet18", pretrained="imagenet")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg and "pretrained" in msg


def test_imagenet_weights_loaded_from_hub_cache(tmp_path, monkeypatch, no_download):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(1)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(sd, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    m = build_model(method="bm", num_ids=3, backbone="resnet18", pretrained="imagenet")
    torch.testing.assert_close(m.trunk.stem.conv1.weight, sd["conv1.weight"])
    torch.testing.assert_close(m.bot_branch.layers.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_path_state_dict(tmp_path, suffix):
    torch.manual_seed(2)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    m = build_model(method="bm+p", num_ids=3, pose_clusters=2, backbone="resnet18", pretrained=str(path), seed=9)
    torch.testing.assert_close(m.trunk.stem.conv1.weight, sd["conv1.weight"])
    torch.testing.assert_close(m.trunk.layer2[0].conv1.weight, sd["layer2.0.conv1.weight"])
    for branch in (m.cal_branch, m.bot_branch, m.pose_branch):
        torch.testing.assert_close(branch.layers.layer3[0].conv1.weight, sd["layer3.0.conv1.weight"])
        torch.testing.assert_close(branch.layers.layer4[0].downsample[0].weight, sd["layer4.0.downsample.0.weight"])
    torch.testing.assert_close(m.pose_branch.layers.layer2[1].bn1.bias, sd["layer2.1.bn1.bias"])
    # last stride still applied after loading
    assert m.cal_branch.layers.layer4[0].conv1.stride == (1, 1)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_pretrained_files(tmp_path):
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model(method="bm", num_ids=3, backbone="resnet34", pretrained=str(tmp_path / "r18.pth"))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model(method="bm", num_ids=3, backbone="tiny", pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(CheckpointError, match="extension"):
        build_model(method="bm", num_ids=3, backbone="tiny", pretrained=str(tmp_path / "w.txt"))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": Evil()}))
    with pytest.raises(CheckpointError, match="tensor-only"):
        build_model(method="bm", num_ids=3, backbone="tiny", pretrained=str(tmp_path / "evil.pth"))
