"""`rlq import-official`: the authors' .pth.tar checkpoints become rlq checkpoint folders.

Synthetic checkpoints are built with exactly the published LTCC key/shape layout (tests/data/
official_layout_ltcc.json, copied from the authors' save_model layout). The imported model's embedding is
compared with a forward written here independently: torchvision ResNet-50 modules filled with the official
tensors, Max-Avg pooling, BatchNorm1d neck, flip-sum and one global L2 norm (docs/method.md §2.1-2.5).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from cli_helpers import run_cli
from rlq.engine.model_io import import_official
from rlq.engine.official import OfficialCheckpoint, official_to_rlq, read_official_checkpoint
from rlq.errors import CheckpointError, ConfigError, RlqError

LAYOUT = json.loads((Path(__file__).parent / "data" / "official_layout_ltcc.json").read_text())
J3 = [(k, tuple(s)) for k, s in LAYOUT["model_state_dict resnet50_joint3_3"]]
J2 = [(k, tuple(s)) for k, s in LAYOUT["model_state_dict resnet50_joint2"]]
CLS = [(k, tuple(s)) for k, s in LAYOUT["classifier_state_dict"]]
# LTCC's clothes head is [6493, 4096]; head widths differ per dataset, so a 64-class head keeps the files small.
CLOTHES = [(k, (64, *s[1:])) for k, s in LAYOUT["clothes_classifier_state_dict"]]
assert LAYOUT["clothes_classifier_state_dict"] == [["weight", [6493, 4096]]]
H, W = 64, 32  # small input keeps ResNet-50 fast on CPU
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # docs/method.md §2.5
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)




def synth(entries: list[tuple[str, tuple[int, ...]]], g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random tensors with the given layout; conv weights He-scaled, BN running variances positive."""
    sd: dict[str, torch.Tensor] = {}
    for key, shape in entries:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean"):
            sd[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 4:
            sd[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
        elif len(shape) == 1 and key.endswith("weight"):
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            sd[key] = 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.05 * torch.randn(shape, generator=g)
    return sd


@pytest.fixture(scope="module")
def official(tmp_path_factory, one_thread):
    """Synthetic official files: joint3_3 (RLQ) full dict, joint2 (BM) full dict with `module.` keys, joint3 bare."""
    g = torch.Generator().manual_seed(0)
    j3 = synth(J3, g)
    j2 = {k: j3[k] for k, _ in J2}  # the Base Model layout is the joint3_3 one without the pose branch
    cls = synth(CLS, g)
    clothes = synth(CLOTHES, g)
    d = tmp_path_factory.mktemp("official")
    files = {"rlq": d / "rlq_best_model.pth.tar", "bm": d / "celeb_checkpoint_ep200.pth.tar", "bare": d / "rlq_bare.pth"}
    torch.save({"model_state_dict": j3, "classifier_state_dict": cls, "clothes_classifier_state_dict": clothes,
                "rank1": np.float64(0.4171), "epoch": 57}, files["rlq"])
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in j2.items()},
                "classifier_state_dict": {f"module.{k}": v for k, v in cls.items()},
                "clothes_classifier_state_dict": {f"module.{k}": v for k, v in clothes.items()},
                "rank1": np.float64(0.581), "epoch": 199}, files["bm"])  # ..._ep200 holds index 199 (0-based)
    torch.save(j3, files["bare"])
    yield {"files": files, "j3": j3, "j2": j2, "cls": cls, "clothes": clothes}
    shutil.rmtree(d, ignore_errors=True)


# -- the independent reference ------------------------------------------------------------------------
def tv_net(sd: dict[str, torch.Tensor], own: dict[str, str]) -> torch.nn.Module:
    """torchvision ResNet-50 with last stride 1 whose stages come from the official prefixes in ``own``."""
    prefixes = {"conv1.": "common.0.", "bn1.": "common.1.", "layer1.": "common.4.", "layer2.": "common.5.", **own}
    net = torchvision.models.resnet50()
    net.layer4[0].conv2.stride = (1, 1)  # last stride 1 (docs/method.md §2.1)
    net.layer4[0].downsample[0].stride = (1, 1)
    state = {}
    for k, v in net.state_dict().items():
        if k.startswith("fc."):
            state[k] = v
            continue
        p = next(p for p in prefixes if k.startswith(p))
        state[k] = sd[prefixes[p] + k[len(p):]]
    net.load_state_dict(state, strict=True)
    return net.eval()


def ref_feature(net: torch.nn.Module, sd: dict[str, torch.Tensor], bn: str, x: torch.Tensor) -> torch.Tensor:
    """Post-BN-neck feature: ResNet stages, [global max, global avg], BatchNorm1d in eval mode (eps 1e-5)."""
    h = (x - MEAN) / STD
    h = net.maxpool(net.relu(net.bn1(net.conv1(h))))
    h = net.layer4(net.layer3(net.layer2(net.layer1(h))))
    f = torch.cat([h.amax(dim=(2, 3)), h.mean(dim=(2, 3))], dim=1)
    return (f - sd[f"{bn}.running_mean"]) / torch.sqrt(sd[f"{bn}.running_var"] + 1e-5) * sd[f"{bn}.weight"] + sd[f"{bn}.bias"]


class Reference:
    """The official model's inference feature and heads, from official-named tensors only."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        self.sd = sd
        self.cal = tv_net(sd, {"layer3.": "branch1.0.", "layer4.": "branch1.1."})
        self.bot = tv_net(sd, {"layer3.": "branch2.0.", "layer4.": "branch2.1."})
        self.pose = (tv_net(sd, {"layer2.": "branch3.0.", "layer3.": "branch3.1.", "layer4.": "branch3.2."})
                     if "bn3.weight" in sd else None)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ref_feature(self.cal, self.sd, "bn1", x), ref_feature(self.bot, self.sd, "bn2", x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.cat(self.features(x), dim=1) + torch.cat(self.features(torch.flip(x, dims=[3])), dim=1)
        return e / e.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def pose_feature(self, x: torch.Tensor) -> torch.Tensor:
        assert self.pose is not None
        return ref_feature(self.pose, self.sd, "bn3", x)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def ref3(official) -> Reference:
    return Reference(official["j3"])


@pytest.fixture(scope="module")
def ref2(official) -> Reference:
    return Reference(official["j2"])


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    assert a.shape == b.shape
    assert torch.isfinite(b).all() and b.std() > 0  # a non-degenerate reference
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


# -- import for every method ---------------------------------------------------------------------------
def _check_model(model, ref: Reference, official: dict, images: torch.Tensor, pose: bool) -> None:
    """Embedding, branch features and every head equal the reference built from the official tensors."""
    with torch.no_grad():
        _close(model.embed(images), ref.embed(images), 1e-5)
        out = model(images, mode="train")
    f_cal, f_bot = ref.features(images)
    _close(out.f_cal, f_cal)
    _close(out.f_bot, f_bot)
    cls, j3 = official["cls"], official["j3"]
    _close(out.logits_cal, F.linear(f_cal, cls["classifier.weight"], cls["classifier.bias"]))
    _close(out.logits_bot, F.linear(f_bot, j3["identity_classifier.classifier.weight"],
                                    j3["identity_classifier.classifier.bias"]))
    if pose:
        f_pose = ref.pose_feature(images)
        _close(out.f_pose, f_pose)
        _close(out.logits_pose, F.linear(f_pose, j3["identity_classifier2.classifier.weight"],
                                         j3["identity_classifier2.classifier.bias"]))
    else:
        assert out.f_pose is None and out.logits_pose is None


@pytest.mark.parametrize("method", ["rlq", "bm"])
def test_import_writes_checkpoint_equal_to_reference(method, official, ref3, ref2, images, tmp_path):
    """The written folder, read back the way `rlq eval` / `extract` / `export` read it, is the official model."""
    from rlq.engine.checkpoint import read_checkpoint
    from rlq.engine.model_io import load_model_checkpoint

    pose = method == "rlq"
    res = import_official(official["files"]["rlq" if pose else "bm"], tmp_path / "ck", method=method,
                          num_ids=77 if pose else None, dataset="ltcc", input_size=(H, W))
    assert (res.num_ids, res.pose_clusters, res.num_clothes) == (77, 15 if pose else None, 64)
    assert res.official_backbone == ("resnet50_joint3_3" if pose else "resnet50_joint2")
    model, state = load_model_checkpoint(res.checkpoint)
    assert state["method"] == method and state["role"] == "model" and state["dataset"] == "ltcc"
    assert state["imported_from"]["rank1"] == pytest.approx(0.4171 if pose else 0.581)
    # their file's `epoch` key is the 0-based loop index; their file names count from 1 (checkpoint_ep200 <- 199)
    frm = state["imported_from"]
    assert "epoch" not in frm
    assert (frm["epoch_index_0based"], frm["epoch_1based"]) == ((57, 58) if pose else (199, 200))
    assert state["missing_heads"] == [] and state["input_size"] == [H, W]
    assert state["not_imported"] == (["gender_head"] if pose else [])
    _check_model(model, ref3 if pose else ref2, official, images, pose)
    tensors, _ = read_checkpoint(res.checkpoint)
    assert torch.equal(tensors["clothes.weight"], official["clothes"]["weight"])


@pytest.mark.parametrize("method", ["cap", "tad"])
def test_convert_other_methods(method, official, ref3, ref2, images):
    """cap shares rlq's architecture (resnet50_joint3_3), tad the Base Model's (resnet50_joint2)."""
    pose = method == "cap"
    ck = read_official_checkpoint(official["files"]["rlq" if pose else "bm"])
    model, clothes_w, info = official_to_rlq(ck, method=method)
    assert model.method == method and info["num_ids"] == 77 and info["num_clothes"] == 64
    assert torch.equal(clothes_w, official["clothes"]["weight"])
    _check_model(model, ref3 if pose else ref2, official, images, pose)


def test_bare_state_dict_extract_search(official, ref3, images, tmp_path, synthcc_tiny):
    """A bare model state dict imports (CAL-ID and clothes heads reported missing); TAD's teacher loader, `rlq
    extract --images` and `rlq search` read the folder and give the reference features."""
    from PIL import Image

    from rlq.engine.model_io import load_model_checkpoint, load_teacher

    res = import_official(official["files"]["bare"], tmp_path / "bare", method="rlq", role="teacher", input_size=(H, W))
    assert res.missing_heads == ["cal_id_head", "clothes"] and res.num_clothes is None
    assert res.num_ids == 77 and res.pose_clusters == 15
    assert any("bare model state dict" in n for n in res.notes)
    model, state = load_model_checkpoint(res.checkpoint)
    assert state["imported_from"]["bare_state_dict"] is True and state["imported_from"]["rank1"] is None
    with torch.no_grad():
        _close(model.embed(images), ref3.embed(images), 1e-5)
    teacher = load_teacher(str(res.checkpoint), force=False, device=torch.device("cpu"))  # teachers use no heads (§5.3)
    assert teacher.pose_branch is None  # the "CAP teacher" variant drops the pose branch
    with torch.no_grad():
        out = teacher(images, mode="features")
    f_cal, f_bot = ref3.features(images)
    _close(out.f_cal, f_cal)
    _close(out.f_bot, f_bot)

    pics = tmp_path / "pics"  # at the checkpoint's input size, so extraction resizes nothing
    pics.mkdir()
    u8 = (images * 255).round().to(torch.uint8)
    for i in range(len(u8)):
        Image.fromarray(u8[i].permute(1, 2, 0).numpy()).save(pics / f"p{i}.png")
    feats = tmp_path / "g.npz"
    assert run_cli(["extract", str(res.checkpoint), "--images", str(pics), "--out", str(feats), "--workers", "0",
                    "--device", "cpu"]) == 0
    with np.load(feats, allow_pickle=False) as z:
        got = torch.from_numpy(z["images/feats"]).float()
    _close(got, ref3.embed(u8.float() / 255), 1e-4)  # p0, p1, p2 in name order
    assert run_cli(["search", "--gallery", str(feats), "--query", str(pics / "p1.png"), "--top-k", "2",
                    "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"), "--device", "cpu"]) == 0
    assert "p1.png" in (tmp_path / "r.json").read_text()
    # and `rlq eval` runs the imported model over a dataset protocol
    assert run_cli(["eval", str(res.checkpoint), "--dataset", "synthcc", "--root", str(synthcc_tiny), "--workers", "0",
                    "--device", "cpu", "--json", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["checkpoint"] == str(res.checkpoint) and {k for k in ev["results"] if "/" not in k} == {"general", "cc", "sc"}  # + clean/LQ rows


def test_cli_imports_celeb_teacher(official, ref2, images, tmp_path, capsys):
    """`rlq import-official --role teacher` on a Base Model file: TAD's teacher loader accepts the folder."""
    from rlq.engine.model_io import load_teacher

    ck = tmp_path / "teacher"
    assert run_cli(["import-official", str(official["files"]["bm"]), "--method", "bm", "--num-ids", "77",
                    "--role", "teacher", "--dataset", "celebreid", "--no-clothes-head", "--out", str(ck)]) == 0
    assert "resnet50_joint2" in capsys.readouterr().out
    state = json.loads((ck / "state.json").read_text())
    assert state["role"] == "teacher" and state["num_clothes"] is None and state["dataset"] == "celebreid"
    assert state["input_size"] == [384, 192]  # docs/method.md §2.1
    teacher = load_teacher(str(ck), force=False, device=torch.device("cpu"))
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    with torch.no_grad():
        out = teacher(images, mode="features")
    f_cal, f_bot = ref2.features(images)
    _close(out.f_cal, f_cal)
    _close(out.f_bot, f_bot)


# -- safe loading ----------------------------------------------------------------------------------------
def _tiny_official(rank1) -> dict:
    return {"model_state_dict": {"common.0.weight": torch.zeros(2)}, "classifier_state_dict": None,
            "clothes_classifier_state_dict": None, "rank1": rank1, "epoch": 3}


def _numpy1_names(data: bytes) -> bytes:
    """Rewrite a torch zip file's pickle to NumPy 1.x module paths (numpy.core.multiarray)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            blob = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in blob
                blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(info.filename, blob)
    return buf.getvalue()


@pytest.mark.parametrize("rank1, variant", [(np.float64(0.625), "zip"), (np.float64(0.625), "numpy1"),
                                             (np.float64(0.625), "legacy"), (np.float32(0.625), "zip"),
                                             (np.array(0.625), "zip"), (0.625, "zip")])
def test_numpy_rank1_loads(rank1, variant, tmp_path):
    """rank1 as a NumPy number (NumPy 2 or NumPy 1 module paths), 0-d array or float; zip or legacy torch format."""
    buf = io.BytesIO()
    torch.save(_tiny_official(rank1), buf, _use_new_zipfile_serialization=variant != "legacy")
    data = _numpy1_names(buf.getvalue()) if variant == "numpy1" else buf.getvalue()
    p = tmp_path / "x.pth.tar"
    p.write_bytes(data)
    ck = read_official_checkpoint(p)
    assert ck.rank1 == 0.625 and ck.epoch == 3 and not ck.bare
    assert isinstance(ck.rank1, float)


def _side_effect(path: str) -> None:  # would run if the unpickler executed the payload
    Path(path).write_text("pwned")


class Payload:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (_side_effect, (str(self.path),))


class PlainObject:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("kind", ["reduce", "plain", "numpy_object"])
def test_refuses_pickled_objects(kind, tmp_path):
    marker = tmp_path / "marker.txt"
    evil = {"reduce": Payload(marker), "plain": PlainObject(), "numpy_object": np.array([PlainObject()], dtype=object)}[kind]
    p = tmp_path / "evil.pth.tar"
    torch.save({**_tiny_official(np.float64(0.5)), "rank1": evil}, p)
    with pytest.raises(CheckpointError, match="refusing to load") as e:
        read_official_checkpoint(p)
    assert str(p) in str(e.value) and "weights_only" in str(e.value)
    assert not marker.exists()


def test_not_an_official_file(tmp_path):
    p = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], p)
    with pytest.raises(CheckpointError, match="not an official RLQ checkpoint"):
        read_official_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_official_checkpoint(tmp_path / "nope.pth.tar")
    torn = tmp_path / "torn.pth.tar"
    buf = io.BytesIO()
    torch.save(_tiny_official(0.5), buf)
    torn.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CheckpointError, match=r"torn\.pth\.tar' is a truncated or damaged PyTorch checkpoint"):
        read_official_checkpoint(torn)


# -- files that are not checkpoints, or cut short: named as such, not as "pickled objects" --------------------------------
def _import_error(path, tmp_path, capsys) -> str:
    from cli_helpers import run_cli

    assert run_cli(["import-official", str(path), "--method", "bm", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and str(path) in err, err
    assert not (tmp_path / "out").exists()
    return err


def test_random_bytes_are_not_a_checkpoint(tmp_path, capsys):
    import random

    p = tmp_path / "noise.pth.tar"
    p.write_bytes(b"\x13" + random.Random(0).randbytes(4095))  # not b"PK\x03\x04" nor a pickle protocol header
    err = _import_error(p, tmp_path, capsys)
    assert "not a PyTorch checkpoint (no zip or pickle header)" in err
    assert "pickled objects" not in err and "re-save" not in err


def test_text_file_is_not_a_checkpoint(tmp_path, capsys):
    p = tmp_path / "notes.pth.tar"
    p.write_text("epoch,rank1\n1,0.41\n", encoding="utf-8")
    err = _import_error(p, tmp_path, capsys)
    assert "not a PyTorch checkpoint (no zip or pickle header)" in err and "as a torch checkpoint" not in err


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_checkpoint_names_the_cause(zip_format, tmp_path, capsys):
    whole = tmp_path / "whole.pth.tar"
    torch.save(_tiny_official(0.5), whole, _use_new_zipfile_serialization=zip_format)
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    err = _import_error(cut, tmp_path, capsys)
    assert "is a truncated or damaged PyTorch checkpoint" in err and "download or copy the file again" in err
    assert "pickled objects" not in err and "internal" not in err


# -- wrong method, widths, keys, shapes -------------------------------------------------------------------
def test_method_mismatch_names_the_right_method(official):
    with pytest.raises(CheckpointError) as e:
        import_official(official["files"]["bm"], "/nonexistent/never", method="rlq")
    msg = str(e.value)
    assert str(official["files"]["bm"]) in msg and "branch3" in msg and "resnet50_joint2" in msg and "--method bm" in msg
    with pytest.raises(CheckpointError) as e:
        import_official(official["files"]["rlq"], "/nonexistent/never", method="tad")
    msg = str(e.value)
    assert "resnet50_joint3_3" in msg and "--method rlq" in msg and "branch3." in msg


def test_width_mismatches(official, tmp_path, capsys):
    with pytest.raises(ConfigError) as e:
        import_official(official["files"]["rlq"], tmp_path / "o", method="rlq", num_ids=150)
    msg = str(e.value)
    assert "--num-ids 150" in msg and "77" in msg and "identity_classifier.classifier.weight" in msg and "[77, 4096]" in msg
    with pytest.raises(ConfigError, match=r"--pose-clusters 10 .*K = 15"):
        import_official(official["files"]["rlq"], tmp_path / "o", method="cap", pose_clusters=10)
    with pytest.raises(ConfigError, match=r"--num-clothes 12 .*\[64, 4096\].*--num-clothes 64"):
        import_official(official["files"]["rlq"], tmp_path / "o", method="rlq", num_clothes=12)
    with pytest.raises(ConfigError, match="only to --method rlq or cap"):
        import_official(official["files"]["bm"], tmp_path / "o", method="bm", pose_clusters=15)
    assert not (tmp_path / "o").exists()
    # the CLI turns it into one line naming both numbers, exit code 2
    assert run_cli(["import-official", str(official["files"]["bm"]), "--method", "bm", "--num-ids", "632",
                    "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "632" in err and "77" in err and str(official["files"]["bm"]) in " ".join(err.split())


def _bm_ck(official, model: dict | None = None, cls: dict | None = None) -> OfficialCheckpoint:
    return OfficialCheckpoint(path=Path("celeb.pth.tar"), model=dict(model if model is not None else official["j2"]),
                              classifier=dict(cls if cls is not None else official["cls"]),
                              clothes=dict(official["clothes"]))


def test_missing_key(official):
    sd = {k: v for k, v in official["j2"].items() if k != "branch2.1.2.conv3.weight"}
    with pytest.raises(CheckpointError) as e:
        official_to_rlq(_bm_ck(official, sd), method="bm")
    msg = str(e.value)
    assert "celeb.pth.tar" in msg and "missing keys" in msg and "branch2.1.2.conv3.weight" in msg
    assert "bot_branch.layers.layer4.2.conv3.weight" in msg and "[2048, 512, 1, 1]" in msg


def test_wrong_shape(official):
    sd = dict(official["j2"])
    sd["branch1.0.3.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    with pytest.raises(CheckpointError) as e:
        official_to_rlq(_bm_ck(official, sd), method="bm")
    msg = str(e.value)
    assert "branch1.0.3.conv2.weight" in msg and "[256, 256, 1, 1]" in msg and "[256, 256, 3, 3]" in msg
    assert "--method" in msg and "--num-ids" in msg
    # heads that disagree with each other
    cls = {"classifier.weight": torch.zeros(80, 4096), "classifier.bias": torch.zeros(80)}
    with pytest.raises(CheckpointError, match=r"identity heads disagree.*\[77, 4096\].*\[80, 4096\]"):
        official_to_rlq(_bm_ck(official, cls=cls), method="bm")
    sd = {k: (torch.zeros(1024) if k.startswith("bn1.") and v.dim() == 1 else v) for k, v in official["j2"].items()}
    with pytest.raises(CheckpointError, match=r"bn1.weight.*\[1024\].*\[4096\].*ResNet-50"):
        official_to_rlq(_bm_ck(official, sd), method="bm")


def test_unexpected_key(official):
    sd = {**official["j2"], "branch4.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: model_state_dict\['branch4.weight'\] \[3\]"):
        official_to_rlq(_bm_ck(official, sd), method="bm")


def test_output_and_role_checks(official, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an empty folder"):
        import_official(official["files"]["bm"], tmp_path / "full", method="bm")
    with pytest.raises(ConfigError, match="unknown --role"):
        import_official(official["files"]["bm"], tmp_path / "o", method="bm", role="student")
    with pytest.raises(RlqError, match="unknown --method"):
        import_official(official["files"]["bm"], tmp_path / "o", method="cal")
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_plain_cal_checkpoint_is_named_by_its_layout(tmp_path, one_thread):
    from rlq.engine.model_io import import_official

    g = torch.Generator().manual_seed(0)
    cal = {"base.0.weight": torch.randn(64, 3, 7, 7, generator=g), "base.1.weight": torch.ones(64),
           "bn.weight": torch.ones(4096), "bn.bias": torch.zeros(4096)}
    f = tmp_path / "cal_best_model.pth.tar"
    torch.save({"model_state_dict": cal, "classifier_state_dict": {"classifier.weight": torch.zeros(5, 4096)},
                "clothes_classifier_state_dict": {"weight": torch.zeros(7, 4096)}, "rank1": 0.4, "epoch": 89}, f)
    for method in ("cal", "bm", "rlq"):
        with pytest.raises(CheckpointError, match=r"plain CAL checkpoint.*'base\.\*' \+ 'bn\.\*'.*resnet50_joint2"):
            import_official(f, tmp_path / f"out-{method}", method=method)
        assert not (tmp_path / f"out-{method}").exists()
