#!/usr/bin/env python3
"""Reliability report (issue 7): kills survived, corrupt files and malformed inputs tried, nothing lost.

1. Fault injection: a SynthCC tiny run is SIGKILLed right after a step, in the middle of a checkpoint write
   and in the middle of an evaluation (in turn, through the test-only RLQ_FAULT_INJECT hook of
   rlq.engine.faults, so every kill lands where intended whatever the machine's speed) and resumed each
   time; the final weights, optimizer state, metrics and metrics log are compared with an uninterrupted run.
2. Corrupt and unusual images through `read_image` (what training uses) and `check-data`.
3. Malformed side inputs, manifests, configs and checkpoints through their readers: each must raise the
   project's own error naming the file.
4. The faults an outside probe found (issue 18: F1-F14 and the skipped NaN batch), each tried the way the probe
   tried it, through the CLI where the probe used it: each must now hold.
Writes benchmarks/results/reliability.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _util import add_common_args, env_info, write_json
from faults import (
    DEFAULT_PLAN,
    _env,
    final_state,
    metrics_lines,
    run_uninterrupted,
    run_with_kills,
    same_state,
    train_cmd,
)
from rlq.errors import RlqError


def corrupt_images(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    ok = Image.new("RGB", (32, 64), (120, 30, 200))
    buf = io.BytesIO()
    ok.save(buf, "PNG")
    good = buf.getvalue()
    files = {
        "truncated_png": good[: len(good) // 2],
        "zero_byte": b"",
        "random_bytes": bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
        "png_header_only": good[:16],
    }
    out = {}
    for name, data in files.items():
        (d / f"{name}.png").write_bytes(data)
        out[name] = d / f"{name}.png"
    for name, img in {
        "grayscale": Image.new("L", (32, 64), 90),
        "rgba": Image.new("RGBA", (32, 64), (10, 20, 30, 128)),
        "palette": Image.new("P", (32, 64), 3),
        "sixteen_bit": Image.fromarray(np.full((64, 32), 40000, np.uint16)),
        "tiny_8x4": Image.new("RGB", (8, 4), (1, 2, 3)),
        "cmyk_jpeg": Image.new("CMYK", (32, 64), (0, 50, 100, 0)),
    }.items():
        ext = ".jpg" if "jpeg" in name else ".png"
        img.save(d / f"{name}{ext}")
        out[name] = d / f"{name}{ext}"
    huge = d / "decompression_bomb.png"
    Image.new("1", (20000, 10000)).save(huge)  # 200 Mpx: over twice Pillow's limit
    out["decompression_bomb"] = huge
    return out


def try_images(files: dict[str, Path]) -> list[dict]:
    from rlq.data.images import read_image

    rows = []
    for name, p in files.items():
        try:
            img = read_image(p)
            rows.append({"file": name, "handled": "read", "result": f"{img.mode} {img.size[0]}x{img.size[1]}"})
        except RlqError as e:
            rows.append({"file": name, "handled": "clear error", "names_file": p.name in str(e), "message": str(e)[:160]})
        except Exception as e:  # noqa: BLE001 - the report must show any escape
            rows.append({"file": name, "handled": "UNEXPECTED", "error": f"{type(e).__name__}: {e}"[:160]})
    return rows


def malformed_inputs(d: Path) -> list[dict]:
    from rlq.config import load_config
    from rlq.data import sidecars as sc
    from rlq.data.datasets import load_dataset
    from rlq.engine.checkpoint import CheckpointManager, read_checkpoint
    from rlq.spec import RunSpec

    d.mkdir(parents=True, exist_ok=True)

    def w(name: str, text: str | bytes) -> Path:
        p = d / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p

    cases = [
        ("gender CSV: value 2", lambda: sc.read_gender_csv(w("g1.csv", "Category,ID,Gender\ntrain,001,2\n"))),
        ("gender CSV: duplicate id", lambda: sc.read_gender_csv(w("g2.csv", "Category,ID,Gender\ntrain,001,1\ntrain,1,0\n"))),
        ("gender CSV: wrong header", lambda: sc.read_gender_csv(w("g3.csv", "id,gender\n1,1\n"))),
        ("pose CSV: missing column", lambda: sc.read_pose_clusters(w("p1.csv", "Category,Image,R_LA_5\ntrain,a,1.0\n"), "R_LA_15")),
        ("pose CSV: non-integer label", lambda: sc.read_pose_clusters(w("p2.csv", "Category,Image,R_LA_15\ntrain,a,1.5\n"))),
        ("keypoints JSON: 50 numbers", lambda: sc.read_alphapose(w("k1.json", json.dumps([{"image_id": "a.jpg", "keypoints": [0] * 50, "score": 1}])))),
        ("keypoints JSON: not a list", lambda: sc.read_alphapose(w("k2.json", '{"a": 1}'))),
        ("parsing map: unknown label 25", lambda: _parsing(d, 25, sc)),
        ("parsing map: wrong size", lambda: sc.read_parsing(_parsing_file(d, 5, sc), expected_size=(99, 99))),
        ("faulty list: a CSV by mistake", lambda: sc.read_key_list(w("f.csv", "a,b\nc,d\n"))),
        ("manifest: missing pid column", lambda: load_dataset("manifest", w("m1.csv", "path,split\na.jpg,train\n"))),
        ("manifest: path escaping the root", lambda: load_dataset("manifest", w("m2.csv", "path,split,pid\n../../etc/passwd,train,1\n"))),
        ("manifest: unknown split", lambda: load_dataset("manifest", w("m3.csv", "path,split,pid\na.jpg,trian,1\n"))),
        ("config: unknown key", lambda: load_config(None, ["train.epoch=3"], schema=RunSpec)),
        ("config: wrong type", lambda: load_config(None, ["train.epochs=many"], schema=RunSpec)),
        ("config: not UTF-8", lambda: load_config(w("c.yaml", b"\xff\xfe"), [], schema=RunSpec)),
        ("checkpoint: flipped byte", lambda: _flipped_checkpoint(d, CheckpointManager, read_checkpoint)),
        ("checkpoint: pickle instead of safetensors", lambda: _pickled_checkpoint(d, CheckpointManager, read_checkpoint)),
    ]
    rows = []
    for name, fn in cases:
        try:
            fn()
            rows.append({"input": name, "handled": "ACCEPTED"})
        except RlqError as e:
            rows.append({"input": name, "handled": type(e).__name__, "message": str(e)[:200]})
        except Exception as e:  # noqa: BLE001 - anything but an RlqError is what this report is looking for
            rows.append({"input": name, "handled": "UNEXPECTED", "error": f"{type(e).__name__}: {e}"[:200]})
    return rows


def _parsing_file(d: Path, label: int, sc) -> Path:
    p = d / f"parse{label}.png"
    Image.fromarray(np.full((8, 4), label, np.uint8), mode="L").save(p)
    return p


def _parsing(d: Path, label: int, sc):
    return sc.read_parsing(_parsing_file(d, label, sc))


def _flipped_checkpoint(d: Path, mgr_cls, read):
    import torch

    ck = mgr_cls(d / "ck1").save("e0001-s00000001", {"w": torch.ones(3)}, {})
    f = ck / "weights.safetensors"
    b = bytearray(f.read_bytes())
    b[-1] ^= 1
    f.write_bytes(bytes(b))
    return read(ck)


def _pickled_checkpoint(d: Path, mgr_cls, read):
    import pickle

    import torch

    ck = mgr_cls(d / "ck2").save("e0001-s00000001", {"w": torch.ones(3)}, {})
    (ck / "weights.safetensors").write_bytes(pickle.dumps({"w": [1, 2]}))
    return read(ck, verify=False)


# -- 4. the probe's faults (issue 18) -------------------------------------------------------------------------
def _cli(args: list[str], fault: str | None = None, **kw) -> subprocess.CompletedProcess:
    """``rlq ARGS`` in a process of its own, with tests/faults.py's environment (one thread; ``fault``: the
    RLQ_FAULT_INJECT point, else none)."""
    return subprocess.run([sys.executable, "-m", "rlq.cli", *args], env=_env(fault), capture_output=True, text=True, **kw)


def _one_line(p: subprocess.CompletedProcess) -> bool:
    """Failed with a message and no traceback."""
    return p.returncode != 0 and "Traceback" not in p.stderr and bool(p.stderr.strip() or p.stdout.strip())


def probe_nan_skip(root: Path, d: Path) -> dict:
    """nonfinite=skip with NaN images at step 3 (RLQ_FAULT_INJECT=nan-input:3), clothes losses on: the state after the
    skipped step equals the state before it, bit for bit, and the run finishes."""
    import torch

    from rlq.engine.checkpoint import read_checkpoint

    out = d / "nan"
    p = _cli(["train", *train_cmd(root, out)[4:], "train.nonfinite=skip", "train.keep_last=50", "loss.start_epoch_cc=0",
              "loss.start_epoch_adv=0"], fault="nan-input:3")
    if p.returncode != 0:
        return {"held": False, "detail": p.stderr[-300:]}
    a, _ = read_checkpoint(out / "checkpoints" / "e0000-s00000002")
    b, st = read_checkpoint(out / "checkpoints" / "e0000-s00000003")
    changed = [k for k in a if not k.startswith("rng.") and not torch.equal(a[k], b[k])]
    finite = all(torch.isfinite(v).all() for v in read_checkpoint(out / "checkpoints" / "e0003-s00000012")[0].values()
                 if v.is_floating_point())
    return {"held": not changed and st["skipped_batches"] == 1 and finite,
            "detail": f"{len(a)} tensors compared, {len(changed)} changed by the skipped step; skipped_batches="
                      f"{st['skipped_batches']}; final weights finite: {finite}"}


def probe_history_escape(root: Path, d: Path) -> dict:
    """F1: latest.json lists ../../victim and an absolute path; --resume's clean-up must delete neither."""
    out = d / "runs" / "f1"
    run_uninterrupted(root, out)
    victims = [d / "victim", d / "abs_victim"]
    for v in victims:
        v.mkdir()
        (v / "keep.txt").write_text("x")
    ck = out / "checkpoints"
    latest = json.loads((ck / "latest.json").read_text())
    latest["history"] = ["../../../victim", str(victims[1]), *latest["history"]]
    (ck / "latest.json").write_text(json.dumps(latest))
    p = _cli(["train", "--resume", *train_cmd(root, out)[4:], "train.epochs=4"])
    kept = all((v / "keep.txt").is_file() for v in victims)
    return {"held": p.returncode == 0 and kept, "detail": f"exit {p.returncode}; victims kept: {kept}"}


def probe_lock(root: Path, d: Path) -> dict:
    """F2: while another process holds a run folder, train / --resume / --overwrite / demo are refused naming its
    PID, and nothing in the folder changes."""
    out = d / "f2"
    run_uninterrupted(root, out)
    before = {q: q.read_bytes() for q in out.rglob("*") if q.is_file() and q.name != ".rlq.lock"}
    code = ("import sys; from rlq.engine.run_dir import lock_folder; l = lock_folder(sys.argv[1], 'rlq train'); "
            "print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        base = train_cmd(root, out)[4:]
        tries = {"train": _cli(["train", *base]), "--resume": _cli(["train", "--resume", *base]),
                 "--overwrite": _cli(["train", "--overwrite", *base]), "demo": _cli(["demo", "--out", str(out)])}
    finally:
        holder.stdin.close()
        holder.wait()
    after = {q: q.read_bytes() for q in out.rglob("*") if q.is_file() and q.name != ".rlq.lock"}
    refused = {k: _one_line(v) and f"PID {holder.pid}" in v.stderr + v.stdout for k, v in tries.items()}
    return {"held": all(refused.values()) and before == after and not list(d.glob("f2.old-*")),
            "detail": f"refused naming the holder's PID: {refused}; folder unchanged: {before == after}"}


def probe_index_flip(root: Path, d: Path) -> dict:
    """F3: one flipped byte in a saved search index's features.npy is refused on load, naming the file."""
    from rlq.deploy.search import GalleryIndex

    g = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    idx = GalleryIndex.build(g, [f"k{i}" for i in range(50)], backend="exact").save(d / "idx")
    f = idx / "features.npy"
    b = bytearray(f.read_bytes())
    b[-5] ^= 0x40  # an exponent bit of the last row: a "cosine" far above 1 before the fix
    f.write_bytes(bytes(b))
    try:
        GalleryIndex.load(idx)
    except RlqError as e:
        return {"held": "features.npy" in str(e), "detail": str(e)[:200]}
    return {"held": False, "detail": "the flipped index loaded"}


def probe_synth_overwrite(root: Path, d: Path) -> dict:
    """F4: `rlq synth --out` on an existing SynthCC folder is refused without --overwrite; pose_clusters.csv survives."""
    out = d / "synthcc"
    shutil.copytree(root, out)
    (out / "pose_clusters.csv").write_text("Category,Image,R_LA_15\n")
    p = _cli(["synth", "--preset", "tiny", "--out", str(out), "--workers", "1"])
    kept = (out / "pose_clusters.csv").is_file()
    return {"held": _one_line(p) and kept, "detail": f"exit {p.returncode}; pose_clusters.csv kept: {kept}; "
                                                     f"{(p.stderr or p.stdout).strip()[:160]}"}


def probe_bad_numbers(root: Path, d: Path) -> dict:
    """F5 and bad choices: zero / negative / NaN settings and bogus choice values are refused by --dry-run, nothing written."""
    cases = ["train.eval_every=0", "train.ckpt_every_epochs=0", "train.log_every=0", "data.num_instances=0",
             "data.batch_size=0", "optim.lr=nan", "optim.lr=-1", "train.max_steps_per_epoch=-1", "tad.variant=bogus",
             "tad.alternation=sometimes", "model.split=layer9", "loss.kl_weighting=whatever", "model.backbone=resnet9000",
             "train.nonfinite=ignore"]
    refused = {}
    for c in cases:
        p = _cli(["train", "--config", "configs/synthcc/rlq.yaml", f"output={d / 'out'}", f"data.root={root}", c, "--dry-run"],
                 cwd=d)
        refused[c] = _one_line(p) and c.split("=")[0] in p.stderr
    written = [q.name for q in d.iterdir()]
    return {"held": all(refused.values()) and written == [], "detail": f"refused naming the key: {sum(refused.values())} "
            f"of {len(cases)}; files written: {written}"}


def probe_state_edit(root: Path, d: Path) -> dict:
    """F6: state.json edited (input_size [100000, 100000]) with its checksum recomputed is refused naming the field."""
    from rlq.engine.checkpoint import MANIFEST, STATE, WEIGHTS
    from rlq.io import sha256_file

    out = d / "run"
    run_uninterrupted(root, out)
    ck = out / "checkpoints" / "best"
    state = json.loads((ck / STATE).read_text())
    state["input_size"] = [100000, 100000]
    (ck / STATE).write_text(json.dumps(state))
    files = {f: {"sha256": sha256_file(ck / f), "size": (ck / f).stat().st_size} for f in (WEIGHTS, STATE)}
    (ck / MANIFEST).write_text(json.dumps({"files": files}))
    p = _cli(["eval", str(ck), "--dataset", "synthcc", "--root", str(root)])
    return {"held": _one_line(p) and "input_size" in p.stderr, "detail": (p.stderr or p.stdout).strip()[:200]}


def probe_symlink_escape(root: Path, d: Path) -> dict:
    """F8: a symlinked folder inside a manifest's folder (escape -> /) cannot reach outside it."""
    from rlq.data.datasets import load_dataset

    m = d / "manifest"
    m.mkdir()
    (m / "escape").symlink_to("/", target_is_directory=True)
    (m / "data.csv").write_text("path,split,pid\nescape/etc/hostname,train,1\n")
    try:
        load_dataset("manifest", m / "data.csv")
    except RlqError as e:
        return {"held": True, "detail": str(e)[:200]}
    return {"held": False, "detail": "the manifest reached outside its folder"}


def probe_one_identity(root: Path, d: Path) -> dict:
    """F9: a one-identity dataset is NOT USABLE for check-data and refused by train."""
    from PIL import Image as _Image

    m = d / "one"
    m.mkdir()
    rows = ["path,split,pid,camid,clothes"]
    for i in range(8):
        _Image.new("RGB", (32, 64), (10 * i, 20, 30)).save(m / f"{i}.png")
        rows.append(f"{i}.png,{'train' if i < 4 else ('query' if i < 6 else 'gallery')},{1 if i < 4 else 2},{i % 2},{i % 2}")
    (m / "data.csv").write_text("\n".join(rows) + "\n")
    chk = _cli(["check-data", "manifest", str(m / "data.csv")])
    tr = _cli(["train", "--config", "configs/synthcc/bm.yaml", "data.dataset=manifest", f"data.root={m / 'data.csv'}",
               "data.recolor=false", f"output={d / 'out'}", "train.epochs=1"])
    not_usable = "NOT USABLE" in chk.stdout + chk.stderr
    err = (tr.stderr or tr.stdout).strip().splitlines()
    return {"held": not_usable and _one_line(tr) and "training needs at least" in tr.stderr and not (d / "out").exists(),
            "detail": f"check-data NOT USABLE: {not_usable}; train: {err[-1][:200] if err else ''}"}


def probe_alias_bomb(root: Path, d: Path) -> dict:
    """F10: a 7-line YAML alias bomb given to `rlq train --config` is refused at once (no hang, no memory growth)."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdef", "bcdefg"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    (d / "bomb.yaml").write_text("\n".join(lines) + "\n")
    try:
        p = _cli(["train", "--config", str(d / "bomb.yaml"), "--dry-run"], timeout=120)
    except subprocess.TimeoutExpired:
        return {"held": False, "detail": "still running after 120 s"}
    return {"held": _one_line(p) and "bomb.yaml" in p.stderr, "detail": p.stderr.strip()[:200]}


def probe_disk_full(root: Path, d: Path) -> dict:
    """F11: a full disk at the 2nd checkpoint write is one line (no traceback); --resume then finishes the run."""
    out = d / "run"
    p = _cli(train_cmd(root, out)[3:], fault="disk-full:2")
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    r = _cli(train_cmd(root, out, resume=True)[3:])
    return {"held": _one_line(p) and "disk full" in p.stderr and r.returncode == 0,
            "detail": f"{lines[-1][:160] if lines else ''}; resume exit {r.returncode}"}


def probe_bad_gallery_image(root: Path, d: Path) -> dict:
    """F12: a corrupt gallery image is found before training (no run folder), named with its split."""
    bad = d / "synthcc"
    shutil.copytree(root, bad)
    victim = sorted((bad / "test").glob("*.png"))[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    p = _cli(train_cmd(bad, d / "out")[3:])
    return {"held": _one_line(p) and victim.name in p.stderr and not (d / "out").exists(), "detail": p.stderr.strip()[-200:]}


def probe_formula_injection(root: Path, d: Path) -> dict:
    """F13: a manifest id =HYPERLINK(...) is written quoted into gender_template.csv."""
    from PIL import Image as _Image

    m = d / "m"
    m.mkdir()
    rows = ["path,split,pid,camid,clothes"]
    for i, pid in enumerate(['=HYPERLINK("http://x","y")', "p2", "p3", "p4"]):
        _Image.new("RGB", (32, 64), (10 * i, 20, 30)).save(m / f"{i}.png")
        rows.append(f'{i}.png,train,"{pid.replace(chr(34), chr(34) * 2)}",0,0')
    (m / "data.csv").write_text("\n".join(rows) + "\n")
    p = _cli(["gender", "sheet", "-d", "manifest", "-r", str(m / "data.csv"), "-o", str(d / "sheet")])
    t = d / "sheet" / "gender_template.csv"
    text = t.read_text() if t.is_file() else ""
    cells = [c for line in text.splitlines() for c in line.split(",")]
    raw = [c for c in cells if c.strip('"').startswith("=")]
    return {"held": p.returncode == 0 and bool(text) and not raw,
            "detail": f"exit {p.returncode}; cells starting with '=': {raw[:2]}"}


def probe_strict_json(root: Path, d: Path) -> dict:
    """F14: results with no matching query are strict JSON (null, not NaN)."""
    from rlq.evaluation.ranking import evaluate_features
    from rlq.io import atomic_write_json

    f = np.eye(4, dtype=np.float32)
    res = evaluate_features(f[:2], f[2:], [0, 1], [2, 3], [0, 0], [1, 1], mode="general")
    atomic_write_json(d / "r.json", res)

    def refuse(c):
        raise ValueError(c)

    try:
        json.loads((d / "r.json").read_text(), parse_constant=refuse)
    except ValueError as e:
        return {"held": False, "detail": f"bare {e}"}
    return {"held": True, "detail": f"rank1={json.loads((d / 'r.json').read_text()).get('rank1')!r}"}


PROBES = {"nan_batch_skipped_changes_nothing": probe_nan_skip, "F1_history_outside_the_run": probe_history_escape,
          "F2_run_folder_lock": probe_lock, "F3_index_integrity": probe_index_flip, "F4_synth_out": probe_synth_overwrite,
          "F5_bad_values_dry_run": probe_bad_numbers, "F6_state_json_edit": probe_state_edit,
          "F8_manifest_symlink": probe_symlink_escape, "F9_one_identity": probe_one_identity,
          "F10_alias_bomb": probe_alias_bomb, "F11_disk_full": probe_disk_full, "F12_bad_gallery_image": probe_bad_gallery_image,
          "F13_formula_injection": probe_formula_injection, "F14_strict_json": probe_strict_json}


def probe_faults(root: Path, d: Path, only: list[str] | None = None) -> list[dict]:
    rows = []
    for name, fn in PROBES.items():
        if only and name not in only:
            continue
        sub = d / name
        sub.mkdir(parents=True)
        try:
            rows.append({"case": name, "what": (fn.__doc__ or "").split("\n")[0], **fn(root, sub)})
        except Exception as e:  # noqa: BLE001 - the report must show any escape
            rows.append({"case": name, "held": False, "detail": f"UNEXPECTED {type(e).__name__}: {e}"[:300]})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, "benchmarks/results/reliability.json")
    p.add_argument("--kills", type=int, default=4, help="kills, cycling through after-a-step, mid-checkpoint-write, mid-evaluation")
    p.add_argument("--probe", action="append", help="run only this probe case (repeatable; default: all)")
    args = p.parse_args(argv)
    from rlq.data.synth import generate_synthcc

    report: dict = {"env": env_info()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "synthcc"
        generate_synthcc(root, preset="tiny", seed=0, workers=0)
        kills = 1 if args.quick else args.kills
        plan = [DEFAULT_PLAN[i % len(DEFAULT_PLAN)] for i in range(kills)]
        run_uninterrupted(root, tmp / "ref")
        events = run_with_kills(root, tmp / "killed", plan=plan)
        match = (same_state(final_state(tmp / "ref"), final_state(tmp / "killed"))
                 and metrics_lines(tmp / "ref") == metrics_lines(tmp / "killed"))
        report["fault_injection"] = {
            "kills_attempted": kills,
            "kills_survived": sum(e.get("killed", False) for e in events), "events": events,
            "final_state_matches_uninterrupted": match,
            "note": "checkpoints every step, log_every=3 (the logged averages span checkpoints); SIGKILL via RLQ_FAULT_INJECT (step / ckpt-write / eval, in turn), then --resume",
        }
        report["corrupt_images"] = try_images(corrupt_images(tmp / "images"))
        from rlq.data.check import check_data

        bad_root = tmp / "bad"
        shutil.copytree(root, bad_root, ignore=shutil.ignore_patterns("external", "parsing", "poses"))
        victims = sorted((bad_root / "train").glob("*.png"))[:3]
        victims[0].write_bytes(b"")
        victims[1].write_bytes(victims[1].read_bytes()[:80])
        victims[2].write_bytes(b"not an image at all")
        rep = check_data("synthcc", bad_root)
        report["check_data_on_corrupt_dataset"] = {"usable": rep.usable, "n_bad_images": rep.n_bad_images,
                                                   "listed": rep.bad_images}
        report["malformed_inputs"] = malformed_inputs(tmp / "inputs")
        report["probe_faults"] = probe_faults(root, tmp / "probe", only=args.probe)
    unexpected = [r for r in report["corrupt_images"] + report["malformed_inputs"] if r["handled"] in ("UNEXPECTED", "ACCEPTED")]
    report["summary"] = {
        "kills_survived": report["fault_injection"]["kills_survived"],
        "final_state_matches": report["fault_injection"]["final_state_matches_uninterrupted"],
        "corrupt_images_tried": len(report["corrupt_images"]),
        "malformed_inputs_tried": len(report["malformed_inputs"]),
        "unexpected_outcomes": len(unexpected),
        "probe_faults_held": f"{sum(r['held'] for r in report['probe_faults'])} of {len(report['probe_faults'])}",
        "nothing_lost": (report["fault_injection"]["final_state_matches_uninterrupted"] and not unexpected
                         and all(r["held"] for r in report["probe_faults"])),
    }
    write_json(args.out, report, quick=args.quick)
    s = report["summary"]
    print(f"kills survived: {s['kills_survived']} (final state matches an uninterrupted run: {s['final_state_matches']})")
    for r in report["corrupt_images"]:
        print(f"  image {r['file']:20s} -> {r['handled']}: {r.get('result') or r.get('message') or r.get('error')}")
    print(f"check-data on a dataset with 3 corrupt train images: {report['check_data_on_corrupt_dataset']['n_bad_images']} listed")
    for r in report["malformed_inputs"]:
        print(f"  {r['input']:40s} -> {r['handled']}")
    for r in report["probe_faults"]:
        print(f"  probe {r['case']:40s} -> {'held' if r['held'] else 'FAILED'}: {r['detail'][:120]}")
    print(f"unexpected outcomes: {s['unexpected_outcomes']}; probe faults held: {s['probe_faults_held']}; "
          f"nothing lost: {s['nothing_lost']}")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
