"""Generate SynthCC: a deterministic, download-free clothes-changing ReID dataset in the LTCC layout.

Layout (root = ``out``), see docs/datasets.md §3.3 / §3.7 / §5 for the formats:

* ``train/ query/ test/``: ``PPP_O_cCC_FFFFFF.png`` (LTCC naming; test = gallery, identities disjoint from train);
* ``poses/<split>/alphapose-results.json`` and ``parsing/<split>/<stem>.png`` (LIP ids, "P" mode);
* ``SynthCC_Gender.csv``, ``SynthCC_test_Gender.csv``, ``quality.csv``;
* ``external/{train,query,gallery}/<pid>_<index>_0.jpg``: other identities, all clean, Celeb-reID layout,
  with ``poses/external/<sub>/alphapose-results.json`` and ``SynthCC_external_Gender.csv``;
* ``preview.png`` (contact sheet) and ``synthcc.json`` (what was generated).

Every image has its own seed derived from (seed, split group, pid, outfit, camera, frame), so the output does not
depend on the number of worker processes; the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rlq.data.lip import LIP_LABELS, lip_palette
from rlq.data.synth.identities import (
    Camera,
    Identity,
    Outfit,
    Quality,
    draw_quality,
    make_cameras,
    sample_identity,
    sample_outfits,
)
from rlq.data.synth.render import render_person
from rlq.data.synth.skeleton import COCO_KEYPOINTS, Session, frame_pose, sample_session
from rlq.errors import ConfigError, DatasetError
from rlq.io import atomic_write_bytes, atomic_write_json, atomic_write_text, commit_staged_dir
from rlq.lq.reference import apply_artifact

__all__ = ["GENERATOR_VERSION", "SynthPreset", "SYNTH_PRESETS", "TARGET_SPLITS", "EXTERNAL_SPLITS",
           "generate_synthcc", "is_synthcc_root"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.1"
TARGET_SPLITS = ("train", "query", "test")
EXTERNAL_SPLITS = ("train", "query", "gallery")
_MANIFEST = "synthcc.json"

# Seed-sequence tags: (seed, tag, ...) keeps every stream independent.
_TAG_CAMERAS, _TAG_EXT_CAMERAS, _TAG_PIDS, _TAG_IDENTITY, _TAG_SESSION, _TAG_QUERY, _TAG_IMAGE = range(1, 8)
_GROUP = {"train": 0, "test": 1, "external": 2}  # split group of an identity (query images are in group test)

_P_NULL = {0: 0.004, 1: 0.01, 2: 0.03, 3: 0.13}  # P(no detection) by severity: heavily degraded images fail most
_P_EXTRA = 0.03  # P(a second, lower-score detection)


@dataclass(frozen=True)
class SynthPreset:
    """Sizes of one SynthCC preset (ranges are inclusive)."""

    train_ids: int
    test_ids: int
    external_ids: int
    external_test_ids: int
    cameras: int
    outfits: tuple[int, int]
    cameras_per_outfit: tuple[int, int]
    frames_per_session: tuple[int, int]
    queries_per_id: int
    external_images_per_id: tuple[int, int]
    # Session layout of the test identities, when it differs from train's (None: as train). A large test split
    # with few images per identity keeps evaluation cheap while giving many clothes-changing queries.
    test_outfits: tuple[int, int] | None = None
    test_cameras_per_outfit: tuple[int, int] | None = None
    test_frames_per_session: tuple[int, int] | None = None


SYNTH_PRESETS: dict[str, SynthPreset] = {
    # unit tests: ~140 target + ~24 external images, a few seconds
    "tiny": SynthPreset(8, 6, 6, 2, 6, (2, 3), (2, 2), (2, 2), 2, (3, 5)),
    # ~1,000 target images
    "small": SynthPreset(30, 16, 20, 6, 8, (2, 4), (2, 3), (2, 4), 3, (8, 14)),
    # the demo: ~1,700 train, 1,200 query (every one a valid clothes-changing query, so one query is 0.08 rank-1
    # points) and 1,800 gallery images, + ~1,000 external images. Test identities get 2-3 outfits x 2 cameras x 2
    # frames (one query per (outfit, camera) session), so the test split is wide (300 ids) but cheap to extract.
    "default": SynthPreset(60, 300, 50, 15, 12, (2, 5), (2, 3), (2, 4), 4, (14, 26),
                           test_outfits=(2, 3), test_cameras_per_outfit=(2, 2), test_frames_per_session=(2, 2)),
}


@dataclass(frozen=True)
class _Task:
    rel: str  # image path relative to the root
    split: str  # train / query / test / external/train / external/query / external/gallery
    key: str  # side-table key
    group: int
    ident: Identity
    outfit: Outfit
    camera: Camera
    frame: int
    t: int  # index of the frame in its session
    session: Session | None  # None: drawn per image (external)
    size: tuple[int, int] | None  # resize the rendered crop to this (w, h) (external), or keep its own size
    clean: bool
    parsing_rel: str | None
    seed: int


def _gen(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


# ------------------------------------------------------------------------------------------------ planning


def _target_plan(p: SynthPreset, seed: int, cams: list[Camera]) -> tuple[list[_Task], dict[int, Identity], dict]:
    n_ids = p.train_ids + p.test_ids
    rng = _gen(seed, _TAG_PIDS)
    pool = int(math.ceil(n_ids * 1.3))
    if pool > 1000:
        raise ConfigError(f"SynthCC pids are written with 3 digits: {n_ids} target identities is too many (max 769)")
    pids = sorted(int(v) for v in rng.choice(pool, n_ids, replace=False))  # non-contiguous, interleaved splits
    test_set = {int(v) for v in rng.choice(pids, p.test_ids, replace=False)}
    tasks: list[_Task] = []
    idents: dict[int, Identity] = {}
    for pid in pids:
        test = pid in test_set
        group = _GROUP["test" if test else "train"]
        r = _gen(seed, _TAG_IDENTITY, 0, pid)
        ident = sample_identity(pid, r)
        idents[pid] = ident
        n_outfits = (p.test_outfits or p.outfits) if test else p.outfits
        n_cams = (p.test_cameras_per_outfit or p.cameras_per_outfit) if test else p.cameras_per_outfit
        n_frames = (p.test_frames_per_session or p.frames_per_session) if test else p.frames_per_session
        lo = max(2, n_outfits[0]) if test else n_outfits[0]
        outfits = sample_outfits(ident, int(r.integers(lo, max(lo, n_outfits[1]) + 1)), r)
        c_lo = max(2, n_cams[0]) if test else n_cams[0]
        c_hi = min(len(cams), max(c_lo, n_cams[1]))
        route_n = min(len(cams), max(c_hi + 1, round(0.6 * len(cams))))
        route = r.choice(len(cams), size=route_n, replace=False)
        sessions: dict[int, list[tuple[int, list[int]]]] = {}
        for outfit in outfits:
            k = int(r.integers(c_lo, c_hi + 1))
            chosen = sorted(int(c) for c in r.choice(route, size=k, replace=False))
            sessions[outfit.index] = []
            for ci in chosen:
                f_lo = max(2, n_frames[0]) if test else n_frames[0]
                n_f = int(r.integers(f_lo, max(f_lo, n_frames[1]) + 1))
                start = int(r.integers(0, 990_000))
                frames = [start + int(v) for v in np.cumsum(r.integers(3, 40, n_f))]
                sessions[outfit.index].append((ci, frames))
        queries: set[tuple[int, int, int]] = set()
        if test:
            queries = _pick_queries(sessions, p.queries_per_id, _gen(seed, _TAG_QUERY, pid))
        for outfit in outfits:
            for ci, frames in sessions[outfit.index]:
                cam = cams[ci]
                session = sample_session(cam, _gen(seed, _TAG_SESSION, group, pid, outfit.index, cam.index))
                for t, frame in enumerate(frames):
                    stem = f"{pid:03d}_{outfit.index}_c{cam.index:02d}_{frame:06d}"
                    split = "train" if not test else ("query" if (outfit.index, ci, frame) in queries else "test")
                    tasks.append(_Task(
                        rel=f"{split}/{stem}.png", split=split, key=stem if split == "train" else f"{split}/{stem}",
                        group=group, ident=ident, outfit=outfit, camera=cam, frame=frame, t=t, session=session,
                        size=None, clean=False, parsing_rel=f"parsing/{split}/{stem}.png", seed=seed))
    return tasks, idents, {"train_pids": [q for q in pids if q not in test_set], "test_pids": sorted(test_set)}


def _pick_queries(sessions: dict[int, list[tuple[int, list[int]]]], n: int, rng: np.random.Generator
                  ) -> set[tuple[int, int, int]]:
    """Up to `n` queries spread over outfits and cameras, at most one per (outfit, camera) session."""
    order = [int(o) for o in rng.permutation(sorted(sessions))]
    used_sessions: set[tuple[int, int]] = set()
    used_cams: set[int] = set()
    out: set[tuple[int, int, int]] = set()
    while len(out) < n:
        progress = False
        for o in order:
            if len(out) >= n:
                break
            cands = [(c, f) for c, f in sessions[o] if (o, c) not in used_sessions and len(f) >= 2]
            if not cands:
                continue
            fresh = [x for x in cands if x[0] not in used_cams] or cands
            c, frames = fresh[int(rng.integers(len(fresh)))]
            out.add((o, c, frames[int(rng.integers(len(frames)))]))
            used_sessions.add((o, c))
            used_cams.add(c)
            progress = True
        if not progress:
            break
    return out


def _external_plan(p: SynthPreset, seed: int, cams: list[Camera]) -> tuple[list[_Task], dict[int, Identity], dict]:
    rng = _gen(seed, _TAG_PIDS, 1)
    pids = sorted(int(v) + 1 for v in rng.choice(3 * p.external_ids, p.external_ids, replace=False))
    test_set = {int(v) for v in rng.choice(pids, p.external_test_ids, replace=False)}
    tasks: list[_Task] = []
    idents: dict[int, Identity] = {}
    for pid in pids:
        r = _gen(seed, _TAG_IDENTITY, 1, pid)
        ident = sample_identity(pid, r)
        idents[pid] = ident
        outfits = sample_outfits(ident, int(r.integers(2, 5)), r)
        n = int(r.integers(p.external_images_per_id[0], p.external_images_per_id[1] + 1))
        n_query = max(1, round(0.2 * n)) if pid in test_set else 0
        for y in range(1, n + 1):
            if pid in test_set:
                split = "external/query" if y <= n_query else "external/gallery"
            else:
                split = "external/train"
            name = f"{pid}_{y}_0.jpg"
            tasks.append(_Task(
                rel=f"{split}/{name}", split=split, key=name[:-4], group=_GROUP["external"], ident=ident,
                outfit=outfits[int(r.integers(len(outfits)))], camera=cams[int(r.integers(len(cams)))], frame=y, t=0,
                session=None, size=(128, 256), clean=True, parsing_rel=None, seed=seed))
    return tasks, idents, {"train_pids": [q for q in pids if q not in test_set], "test_pids": sorted(test_set)}


# ------------------------------------------------------------------------------------------------ rendering


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1, optimize=False)  # fixed options: byte-identical reruns
    return buf.getvalue()


def _detections(rng: np.random.Generator, kp: np.ndarray, occluded: np.ndarray, labels: np.ndarray,
                severity: int, size: tuple[int, int]) -> list[dict[str, Any]]:
    w, h = size
    conf = np.where(occluded, rng.uniform(0.12, 0.45, 17), rng.uniform(0.7, 0.96, 17)) * (1 - 0.1 * severity)
    ys, xs = np.nonzero(labels)
    x0, y0 = max(0, int(xs.min()) - 2), max(0, int(ys.min()) - 2)
    x1, y1 = min(w - 1, int(xs.max()) + 2), min(h - 1, int(ys.max()) + 2)
    score = float(conf.mean() * 2.2 + rng.uniform(0.3, 0.8))
    main = _entry(kp, conf, score, [x0, y0, x1 - x0, y1 - y0])
    null = rng.random() < _P_NULL[severity]
    extra = rng.random() < _P_EXTRA
    if null:
        return []
    if not extra:
        return [main]
    # A partial, smaller person near one border: a lower-score second detection.
    f = rng.uniform(0.4, 0.7)
    anchor = np.array([rng.choice([0.0, w - 1.0]), rng.uniform(0.2, 0.6) * h])
    kp2 = anchor + (kp - kp.mean(axis=0)) * f
    kp2[:, 0] = np.clip(kp2[:, 0], 0, w - 1)
    kp2[:, 1] = np.clip(kp2[:, 1], 0, h - 1)
    conf2 = rng.uniform(0.05, 0.4, 17)
    bx0, by0 = kp2.min(axis=0)
    bx1, by1 = kp2.max(axis=0)
    second = _entry(kp2, conf2, score * float(rng.uniform(0.15, 0.5)),
                    [float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)])
    return [second, main] if rng.random() < 0.5 else [main, second]


def _entry(kp: np.ndarray, conf: np.ndarray, score: float, box: list[float]) -> dict[str, Any]:
    flat: list[float] = []
    for (x, y), c in zip(kp, conf):
        flat += [round(float(x), 3), round(float(y), 3), round(float(c), 4)]
    return {"category_id": 1, "keypoints": flat, "score": round(score, 4), "box": [round(float(v), 2) for v in box]}


def _render_image(task: _Task) -> tuple[Any, Quality, Image.Image, np.random.Generator]:
    """Render one task: (clean rendering, drawn quality, final degraded image, the image's generator)."""
    rng = _gen(task.seed, _TAG_IMAGE, task.group, task.ident.pid, task.outfit.index, task.camera.index, task.frame)
    cam = task.camera
    h = int(np.clip(round(cam.height * rng.uniform(0.88, 1.12)), 88, 208))
    w = int(round(h * cam.aspect * rng.uniform(0.94, 1.06)))
    session = task.session if task.session is not None else sample_session(cam, rng)
    pose = frame_pose(session, task.t, rng)
    out = render_person(task.ident, task.outfit, cam, pose, (w, h), rng)
    quality = Quality("clean", 0, 0.0, {}) if task.clean else draw_quality(cam, (w, h), rng)
    img = Image.fromarray(out.image)
    if task.size is not None:  # Celeb-reID style: crops of any size normalised to one size (bicubic)
        img = img.resize(task.size, Image.Resampling.BICUBIC)
    if quality.artifact != "clean":
        img = apply_artifact(img, quality.artifact, quality.params)
    return out, quality, img, rng


def _render_task(task: _Task, root: str) -> dict[str, Any]:
    """Render, degrade and write one image (and its parsing map); return its side-table rows."""
    out, quality, img, rng = _render_image(task)
    cam = task.camera
    w, h = img.size
    rootp = Path(root)
    if task.rel.endswith(".jpg"):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95, subsampling=0, optimize=False)
        data = buf.getvalue()
    else:
        data = _png_bytes(img)
    atomic_write_bytes(rootp / task.rel, data, fsync=False)  # the whole tree is committed by one rename
    if task.parsing_rel is not None:
        lab = Image.frombytes("P", (w, h), out.labels.tobytes())
        lab.putpalette(lip_palette())
        atomic_write_bytes(rootp / task.parsing_rel, _png_bytes(lab), fsync=False)
    kp, labels = out.keypoints, out.labels
    if (w, h) != (labels.shape[1], labels.shape[0]):  # external: keypoints follow the resize
        kp = (kp + 0.5) * np.array([w / labels.shape[1], h / labels.shape[0]]) - 0.5
        kp = np.clip(kp, 0, [w - 1, h - 1])
        labels = np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))
    dets = _detections(rng, kp, out.occluded, labels, quality.severity, (w, h))
    return {"rel": task.rel, "split": task.split, "key": task.key, "pid": task.ident.pid,
            "outfit": task.outfit.index, "camera": cam.index, "size": (w, h),
            "quality": (quality.artifact, quality.severity, quality.param), "detections": dets}


def _render_chunk(args: tuple[list[_Task], str]) -> list[dict[str, Any]]:
    tasks, root = args
    return [_render_task(t, root) for t in tasks]


def _run(tasks: list[_Task], root: Path, workers: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="SynthCC", unit="img", disable=not progress)
    chunk = 16
    chunks = [(tasks[i:i + chunk], str(root)) for i in range(0, len(tasks), chunk)]
    results: list[dict[str, Any]] = []
    try:
        if workers <= 1:
            for c in chunks:
                results += _render_chunk(c)
                bar.update(len(c[0]))
        else:
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("forkserver" if "forkserver" in
                                              multiprocessing.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                for res in ex.map(_render_chunk, chunks):  # map keeps the task order
                    results += res
                    bar.update(len(res))
    finally:
        bar.close()
    return results


# ------------------------------------------------------------------------------------------------ side files


def _csv(header: str, rows: Iterable[Iterable[Any]]) -> str:
    return "\n".join([header, *(",".join(str(v) for v in r) for r in rows)]) + "\n"


def _write_poses(root: Path, folder: str, results: list[dict[str, Any]]) -> None:
    entries = []
    for res in sorted(results, key=lambda r: r["rel"]):
        name = res["rel"].rsplit("/", 1)[1]
        for det in res["detections"]:
            entries.append({"image_id": name, **det})
    atomic_write_text(root / "poses" / folder / "alphapose-results.json", json.dumps(entries) + "\n", fsync=False)


def _camera_row(cam: Camera) -> dict[str, Any]:
    d = asdict(cam)
    d["camera"] = d.pop("index")
    return d


def is_synthcc_root(path: str | os.PathLike) -> bool:
    """True when `path` holds a SynthCC dataset (its synthcc.json names SynthCC)."""
    f = Path(path) / _MANIFEST
    try:
        return json.loads(f.read_text(encoding="utf-8")).get("name") == "SynthCC"
    except (OSError, ValueError, AttributeError):
        return False


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def generate_synthcc(out: str | os.PathLike, preset: str = "default", seed: int = 0, workers: int | None = None,
                     progress: bool = False, overwrite: bool = False) -> dict:
    """Generate SynthCC at `out`; returns the synthcc.json content.

    `out` must be new or an empty folder. A folder that holds files (an earlier SynthCC, with e.g. the Quick
    start's ``pose_clusters.csv``, or anything else) is refused unless ``overwrite``: then, once the new tree is
    ready, the old folder is moved aside whole to ``<name>.old-<UTC timestamp>`` (nothing is deleted), the rule
    for run folders (:mod:`rlq.engine.run_dir`)."""
    if preset not in SYNTH_PRESETS:
        raise ConfigError(f"unknown SynthCC preset {preset!r}; choose one of {sorted(SYNTH_PRESETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"SynthCC seed must be an integer >= 0, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"workers must be None or an integer >= 0, got {workers!r}")
    p = SYNTH_PRESETS[preset]
    out = Path(out).absolute()
    if out.exists():
        if not out.is_dir():
            raise DatasetError(f"SynthCC output {out} exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not overwrite:
            what = "an earlier SynthCC dataset" if is_synthcc_root(out) else f"other files (no {_MANIFEST})"
            raise DatasetError(f"SynthCC output folder {out} is not empty: it holds {what}; choose an empty or new "
                               f"folder, or pass --overwrite (Python: overwrite=True) to move it aside to "
                               f"{out.name}.old-<timestamp> (nothing is deleted)")
    out.parent.mkdir(parents=True, exist_ok=True)
    n_workers = _default_workers() if workers is None else max(1, workers)
    t0 = time.perf_counter()

    cams = make_cameras(p.cameras, _gen(seed, _TAG_CAMERAS))
    ext_cams = make_cameras(6, _gen(seed, _TAG_EXT_CAMERAS), lq=False)
    tasks, idents, ids = _target_plan(p, seed, cams)
    ext_tasks, ext_idents, ext_ids = _external_plan(p, seed, ext_cams)

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.synthcc-", dir=out.parent))
    try:
        os.chmod(staging, 0o755)
        folders = [*TARGET_SPLITS, *(f"parsing/{s}" for s in TARGET_SPLITS), *(f"external/{s}" for s in EXTERNAL_SPLITS)]
        for d in folders:
            (staging / d).mkdir(parents=True, exist_ok=True)
        results = _run(tasks + ext_tasks, staging, n_workers, progress)
        target = [r for r in results if not r["split"].startswith("external/")]
        external = [r for r in results if r["split"].startswith("external/")]
        manifest = _write_side_files(staging, preset, p, seed, cams, ext_cams, idents, ext_idents, ids, ext_ids,
                                     target, external)
        from rlq.data.synth.preview import make_contact_sheet

        sheet = make_contact_sheet(staging)
        atomic_write_bytes(staging / "preview.png", _png_bytes(sheet), fsync=False)
        atomic_write_json(staging / _MANIFEST, manifest)
        commit_staged_dir(staging, out)  # an old folder is kept whole (rlq.io)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("SynthCC %s (seed %d): %d target + %d external images in %.1f s with %d worker(s) -> %s", preset, seed,
                len(target), len(external), time.perf_counter() - t0, n_workers, out)
    return manifest


def _write_side_files(root: Path, preset: str, p: SynthPreset, seed: int, cams: list[Camera], ext_cams: list[Camera],
                      idents: dict[int, Identity], ext_idents: dict[int, Identity], ids: dict, ext_ids: dict,
                      target: list[dict[str, Any]], external: list[dict[str, Any]]) -> dict:
    by_split = {s: [r for r in target if r["split"] == s] for s in TARGET_SPLITS}
    for s in TARGET_SPLITS:
        _write_poses(root, s, by_split[s])
    for s in EXTERNAL_SPLITS:
        _write_poses(root, f"external/{s}", [r for r in external if r["split"] == f"external/{s}"])
    # quality.csv: Category,Image,Artifact,Severity,Param (keys as in docs/datasets.md §1 for LTCC)
    rows = [(r["split"], r["key"], r["quality"][0], r["quality"][1], repr(float(r["quality"][2])))
            for s in TARGET_SPLITS for r in sorted(by_split[s], key=lambda r: r["key"])]
    atomic_write_text(root / "quality.csv", _csv("Category,Image,Artifact,Severity,Param", rows), fsync=False)
    # gender CSVs (docs/datasets.md §5.3): ids zero-padded like LTCC; external unpadded like Celeb-reID
    atomic_write_text(root / "SynthCC_Gender.csv", _csv("Category,ID,Gender", [
        ("train", f"{pid:03d}", idents[pid].gender) for pid in ids["train_pids"]]), fsync=False)
    test_rows = [(s, f"{pid:03d}", idents[pid].gender) for s in ("query", "test")
                 for pid in sorted({r["pid"] for r in by_split[s]})]
    atomic_write_text(root / "SynthCC_test_Gender.csv", _csv("Category,ID,Gender", test_rows), fsync=False)
    atomic_write_text(root / "SynthCC_external_Gender.csv", _csv("Category,ID,Gender", [
        ("train", str(pid), ext_idents[pid].gender) for pid in ext_ids["train_pids"]]), fsync=False)

    def counts(rs: list[dict[str, Any]]) -> dict[str, Any]:
        q: dict[str, int] = {}
        for r in rs:
            q[r["quality"][0]] = q.get(r["quality"][0], 0) + 1
        return {"images": len(rs), "ids": len({r["pid"] for r in rs}),
                "outfits": len({(r["pid"], r["outfit"]) for r in rs}),
                "quality": dict(sorted(q.items())),
                "no_detection": sum(1 for r in rs if not r["detections"]),
                "two_detections": sum(1 for r in rs if len(r["detections"]) > 1)}

    return {
        "name": "SynthCC",
        "generator_version": GENERATOR_VERSION,
        "preset": preset,
        "preset_params": asdict(p),
        "seed": int(seed),
        "counts": {**{s: counts(by_split[s]) for s in TARGET_SPLITS},
                   **{f"external/{s}": counts([r for r in external if r["split"] == f"external/{s}"])
                      for s in EXTERNAL_SPLITS}},
        "gender": {"train": _gender_counts(idents, ids["train_pids"]), "test": _gender_counts(idents, ids["test_pids"]),
                   "external": _gender_counts(ext_idents, list(ext_idents))},
        "cameras": [_camera_row(c) for c in cams],
        "external_cameras": [_camera_row(c) for c in ext_cams],
        "lip_labels": list(LIP_LABELS),
        "coco_keypoints": list(COCO_KEYPOINTS),
        "files": {
            "train/, query/, test/": "LTCC layout (docs/datasets.md §3.3): PPP_O_cCC_FFFFFF.png = pid, per-person outfit "
                                     "index, camera (1-based), frame; test/ is the gallery; test ids are disjoint "
                                     "from train ids",
            "poses/<split>/alphapose-results.json": "AlphaPose JSON (docs/datasets.md §5.1), true keypoints with synthetic "
                                                    "confidences; some images have no entry, a few have two",
            "parsing/<split>/<stem>.png": "true LIP label map (docs/datasets.md §5.2), 8-bit palette PNG, index = LIP id",
            "SynthCC_Gender.csv": "Category,ID,Gender for train ids (1 male, 0 female)",
            "SynthCC_test_Gender.csv": "Category (query/test),ID,Gender, analysis only",
            "quality.csv": "Category,Image,Artifact,Severity,Param per target image; Image = train stem or "
                           "<split>/<stem>; Param: pixelation shorter side px, defocus sigma, motion length px, 0",
            "external/": "Celeb-reID layout (docs/datasets.md §3.7): train/ query/ gallery/ <pid>_<index>_0.jpg, 128x256, "
                         "other identities, all clean (TAD external data / teacher training)",
            "poses/external/<sub>/alphapose-results.json": "AlphaPose JSON for the external images",
            "SynthCC_external_Gender.csv": "Category,ID,Gender for external train ids (unpadded)",
            "preview.png": "contact sheet: rows = identities across outfits, cameras and quality",
        },
    }


def _gender_counts(idents: dict[int, Identity], pids: list[int]) -> dict[str, int]:
    male = sum(idents[p].gender for p in pids)
    return {"male": male, "female": len(pids) - male}

