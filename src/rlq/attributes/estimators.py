"""Built-in keypoints and approximate LIP parsing maps from mediapipe, for users without AlphaPose or SCHP.

Two layers:

* Pure numpy logic (always importable, unit-tested): :data:`MEDIAPIPE_TO_COCO`, :func:`landmarks_to_coco`
  (mediapipe's 33 pose landmarks -> one COCO-17 :class:`~rlq.data.sidecars.Detection`) and
  :func:`split_person_mask` (a person mask + COCO-17 keypoints -> an approximate LIP label map).
* The mediapipe backend (:func:`estimate_poses`, :func:`estimate_poses_tree`, :func:`estimate_parsing`),
  which imports mediapipe lazily. mediapipe 0.10.21 needs numpy<2 and protobuf 4, so it is the optional
  extra ``rlq[pose]`` and lives in its own environment; nothing else in rlq needs it.

The legacy ``mediapipe.solutions.pose`` API is used because its wheel ships the detector, the
``model_complexity=1`` ("full") landmark model and the segmentation head, so it runs offline. It finds
at most one person per image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlq.data.sidecars import ALPHAPOSE_FILE, Detection, parsing_path, write_alphapose, write_parsing
from rlq.errors import RlqError, SideInputError

__all__ = [
    "MEDIAPIPE_TO_COCO",
    "IMAGE_EXTS",
    "POSE_INSTALL_HINT",
    "landmarks_to_coco",
    "split_person_mask",
    "list_images",
    "require_mediapipe",
    "estimate_poses",
    "estimate_poses_tree",
    "estimate_parsing",
]

logger = logging.getLogger(__name__)

#: mediapipe pose landmark index of each COCO-17 keypoint (docs/datasets.md §5.1 order; left/right are the
#: person's own in both). mediapipe order: 0 nose, 2 left eye, 5 right eye, 7 left ear, 8 right ear,
#: 11/12 shoulders, 13/14 elbows, 15/16 wrists, 23/24 hips, 25/26 knees, 27/28 ankles.
MEDIAPIPE_TO_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
_NUM_MP = 33
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
POSE_INSTALL_HINT = (
    "install the pose extra in its own environment (mediapipe 0.10.21 needs numpy<2 and protobuf 4): "
    "python -m venv venv-pose && venv-pose/bin/pip install 'rlq[pose]'"
)

# LIP ids (docs/datasets.md §5.2)
_BG, _HAIR, _UPPER, _PANTS, _FACE = 0, 2, 5, 9, 13
_ARM = {"left": 14, "right": 15}
_SHOE = {"left": 18, "right": 19}
# COCO-17 indices (docs/datasets.md §5.1)
_NOSE, _EYES, _EARS = 0, (1, 2), (3, 4)
_SHO, _ELB, _WRI, _HIP, _KNEE, _ANK = (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)

# Body proportions in units of the torso length T = hip line - shoulder line (adult anthropometry:
# shoulders at 0.82 H, hip joints at 0.52 H, ankles at 0.045 H above the floor, so T ~ 0.30 H).
_NECK = 0.10  # the head region ends this far above the shoulder line (collars reach a little higher)
_FACE_AX, _FACE_AY = 0.14, 0.19  # face ellipse half-width / half-height (hairline to chin)
_FACE_DY = {"nose": -0.04, "eye": 0.04, "ear": 0.02}  # face-ellipse centre minus the keypoint's y
_CHIN_TO_CENTRE = 0.39  # without face keypoints: ellipse centre this far above the shoulder line
_SHOE_TOP = 0.06  # shoes start this far above the ankle
_LEG = 1.58  # hip line -> ankle, when the ankles are not seen
_ARM_R = 0.10  # forearm + sleeve half-width
_HAND = 0.4  # the hand reaches this fraction of the forearm beyond the wrist
# Fallback without shoulders and hips: fractions of the mask's bounding-box height from its top.
_FRAC_SHO, _FRAC_HIP = 0.18, 0.48


# --------------------------------------------------------------------------------------------------
# Pure logic
# --------------------------------------------------------------------------------------------------


def landmarks_to_coco(landmarks: np.ndarray, width: int, height: int) -> Detection:
    """One COCO-17 Detection in pixels from mediapipe's (33, 4) normalised landmarks (x, y, z, visibility).

    Pixel-centre convention (pixel i covers [i - 0.5, i + 0.5]): x_px = x_norm * W - 0.5, clipped into the
    image like AlphaPose's. Confidence = visibility clipped to [0, 1]; score = mean confidence of the 17;
    box = [x, y, w, h] around all 33 clipped landmarks (heels and toes included).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] != _NUM_MP or lm.shape[1] < 4:
        raise ValueError(f"landmarks must be a ({_NUM_MP}, 4) array (x, y, z, visibility), got shape {lm.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not np.isfinite(lm[:, [0, 1, 3]]).all():
        raise ValueError("landmarks contain NaN or infinite coordinates / visibilities")
    xy = lm[:, :2] * np.array([width, height], dtype=np.float64) - 0.5
    xy = np.clip(xy, 0.0, [width - 1.0, height - 1.0])
    conf = np.clip(lm[:, 3], 0.0, 1.0)
    idx = list(MEDIAPIPE_TO_COCO)
    kp = np.concatenate([xy[idx], conf[idx, None]], axis=1)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return Detection(kp, float(conf[idx].mean()), (float(x0), float(y0), float(x1 - x0), float(y1 - y0)))


@dataclass
class _Frame:
    """Body levels (pixels) that drive the split of a person mask."""

    t: float  # torso length
    sho_y: float
    hip_y: float
    face: tuple[float, float]  # face-ellipse centre (x, y)
    ankles: dict[str, np.ndarray]  # side -> (x, y), measured or estimated


def _mean_pt(kp: np.ndarray, ok: np.ndarray, idx: Sequence[int]) -> np.ndarray | None:
    sel = [i for i in idx if ok[i]]
    return kp[sel, :2].mean(axis=0) if sel else None


def _body_frame(mask: np.ndarray, kp: np.ndarray, ok: np.ndarray) -> _Frame:
    """Levels from the keypoints, completing what is missing from the mask's bounding box."""
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    y0, y1 = float(rows[0]) - 0.5, float(rows[-1]) + 0.5  # pixel edges of the mask's extent
    hb = y1 - y0
    sho, hip = _mean_pt(kp, ok, _SHO), _mean_pt(kp, ok, _HIP)
    if sho is not None and hip is not None and hip[1] - sho[1] >= 2.0:
        sho_y, hip_y = float(sho[1]), float(hip[1])
    elif sho is not None and sho[1] < y1 - 2.0:  # no hips: the mask's bottom is the floor
        sho_y = float(sho[1])
        hip_y = sho_y + (y1 - sho_y) * (_FRAC_HIP - _FRAC_SHO) / (1.0 - _FRAC_SHO)
    elif hip is not None and hip[1] > y0 + 2.0:  # no shoulders: the mask's top is the crown
        hip_y = float(hip[1])
        sho_y = hip_y - (hip_y - y0) * (_FRAC_HIP - _FRAC_SHO) / _FRAC_HIP
    else:  # height fractions of the mask's bounding box
        sho_y, hip_y = y0 + _FRAC_SHO * hb, y0 + _FRAC_HIP * hb
    t = hip_y - sho_y

    # face-ellipse centre: mean of what the seen face keypoints say; else the head band's middle column
    est = []
    if ok[_NOSE]:
        est.append(kp[_NOSE, :2] + [0.0, _FACE_DY["nose"] * t])
    for group, dy in ((_EYES, _FACE_DY["eye"]), (_EARS, _FACE_DY["ear"])):
        p = _mean_pt(kp, ok, group)
        if p is not None:
            est.append(p + [0.0, dy * t])
    if est:
        face = tuple(float(v) for v in np.mean(est, axis=0))
    else:
        head_rows = mask[: max(1, int(np.ceil(sho_y - _NECK * t)))]
        hx = np.nonzero(head_rows.any(axis=0))[0]
        cx = float(np.median(hx)) if hx.size else float(np.median(cols))
        face = (cx, sho_y - _CHIN_TO_CENTRE * t)

    # ankles: measured, else from the knee (knee->ankle ~ hip->knee), else below the hip
    hip_mid = hip if hip is not None else np.array([float(np.median(cols)), hip_y])
    ankles: dict[str, np.ndarray] = {}
    for j, side in enumerate(("left", "right")):
        a, k, h = _ANK[j], _KNEE[j], _HIP[j]
        if ok[a]:
            ankles[side] = kp[a, :2].copy()
            continue
        hx = kp[h, 0] if ok[h] else hip_mid[0] + (0.1 if side == "left" else -0.1) * t  # assume facing us
        if ok[k]:
            ankles[side] = np.array([2 * kp[k, 0] - hx, 2 * kp[k, 1] - hip_y])
        else:
            ankles[side] = np.array([hx, hip_y + _LEG * t])
    return _Frame(t=t, sho_y=sho_y, hip_y=hip_y, face=face, ankles=ankles)


def _forearm(xx: np.ndarray, yy: np.ndarray, elb: np.ndarray, wri: np.ndarray, r: float) -> np.ndarray:
    """Pixels within r of the segment elbow -> hand (wrist + _HAND of the forearm), none before the elbow."""
    hand = wri + _HAND * (wri - elb)
    d = hand - elb
    dd = float(d @ d)
    px, py = xx - elb[0], yy - elb[1]
    if dd < 1e-9:
        return px**2 + py**2 <= r * r
    t = (px * d[0] + py * d[1]) / dd
    tc = np.clip(t, 0.0, 1.0)
    dist2 = (px - tc * d[0]) ** 2 + (py - tc * d[1]) ** 2
    return (t >= 0.0) & (dist2 <= r * r)


def split_person_mask(mask: np.ndarray, keypoints: np.ndarray, conf_threshold: float = 0.3) -> np.ndarray:
    """An approximate LIP label map (uint8 H x W) from a person mask and COCO-17 keypoints (x, y, c) in pixels.

    Geometry, with T = hip line - shoulder line (the mean y of the seen shoulders / hips):

    * outside the mask: background 0;
    * above ``shoulder - 0.10 T`` (head): face 13 inside an ellipse (half-axes 0.14 T x 0.19 T) centred from
      the seen nose / eyes / ears, plus the column below its centre (chin, neck); hair 2 elsewhere;
    * down to the hip line: upper clothes 5 (long sleeves included);
    * below the hip line: pants 9 (bare legs, shorts and skirts cannot be told apart by geometry, so the
      leg ids 16/17 and skirt 12 are never used);
    * from ``ankle - 0.06 T`` down: shoes 18 / 19, each pixel going to the nearer ankle;
    * last, within 0.10 T of each elbow -> hand segment (the hand = 0.4 forearm beyond the wrist; nothing
      above the elbow, so sleeves stay upper clothes): left arm 14 / right arm 15.

    Keypoints with confidence below ``conf_threshold`` count as missing. Missing hips / shoulders are
    placed from the mask's bounding box by adult proportions (shoulders at 18 %, hips at 48 % of its
    height from the top); missing ankles are placed from the knees or 1.58 T below the hips (no shoes if
    that falls outside the image); with no face keypoints the face sits in the head band's middle column;
    with no side information the person is assumed to face the camera (their left = image right).
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty H x W array, got shape {m.shape}")
    m = m > 0.5 if m.dtype.kind == "f" else m.astype(bool)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (17, 3):
        raise ValueError(f"keypoints must be a (17, 3) array of (x, y, confidence), got shape {kp.shape}")
    labels = np.zeros(m.shape, dtype=np.uint8)
    if not m.any():
        return labels
    ok = np.isfinite(kp).all(axis=1) & (kp[:, 2] >= conf_threshold)
    fr = _body_frame(m, kp, ok)
    t = fr.t
    h, w = m.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    labels[m] = _UPPER
    labels[m & (yy >= fr.hip_y)] = _PANTS
    head = m & (yy < fr.sho_y - _NECK * t)
    cx, cy = fr.face
    ax, ay = _FACE_AX * t, _FACE_AY * t
    face = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
    face |= (yy >= cy) & (np.abs(xx - cx) <= ax)
    labels[head] = _HAIR
    labels[head & face] = _FACE

    # shoes: lower-body pixels go to the nearer ankle, shoes from just above it down
    lower = m & (yy >= fr.hip_y)
    d = {s: (xx - a[0]) ** 2 + (yy - a[1]) ** 2 for s, a in fr.ankles.items()}
    near_left = d["left"] <= d["right"]
    for side, here in (("left", near_left), ("right", ~near_left)):
        top = fr.ankles[side][1] - _SHOE_TOP * t
        labels[lower & here & (yy >= top)] = _SHOE[side]

    # forearms and hands, below the elbow only
    for j, side in enumerate(("left", "right")):
        s, e, wr = _SHO[j], _ELB[j], _WRI[j]
        if not ok[wr]:
            continue
        if ok[e]:
            elb = kp[e, :2]
        elif ok[s]:
            elb = (kp[s, :2] + kp[wr, :2]) / 2
        else:
            continue
        labels[m & _forearm(xx, yy, elb, kp[wr, :2], _ARM_R * t)] = _ARM[side]
    return labels


# --------------------------------------------------------------------------------------------------
# Image discovery
# --------------------------------------------------------------------------------------------------


def list_images(
    images_root: str | os.PathLike, *, recursive: bool = True, exclude: Sequence[str | os.PathLike] = ()
) -> list[Path]:
    """Image files (``IMAGE_EXTS``, any case) under a folder, sorted; ``exclude`` folders are skipped."""
    root = Path(images_root)
    if not root.is_dir():
        raise SideInputError(f"image folder {root} does not exist or is not a folder; pass the dataset's image folder")
    skip = {os.path.abspath(p) for p in exclude}
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) not in skip
                             and not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if os.path.splitext(f)[1].lower() in IMAGE_EXTS]
        if not recursive:
            break
    return out


# --------------------------------------------------------------------------------------------------
# mediapipe backend
# --------------------------------------------------------------------------------------------------


def require_mediapipe() -> Any:
    """The mediapipe module, or RlqError saying how to install the ``[pose]`` extra."""
    try:
        import mediapipe as mp  # optional dependency, imported lazily
    except ImportError as e:
        raise RlqError(f"the built-in pose / parsing estimator needs mediapipe, which cannot be imported ({e}); "
                       f"{POSE_INSTALL_HINT}") from None
    return mp


_MODEL_FILES = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite", 2: "pose_landmark_heavy.tflite"}


def _pose_model(mp: Any, model_complexity: int, min_confidence: float, segmentation: bool, min_height: int,
                pad: float) -> Any:
    if min_height < 0 or not 0.0 <= pad <= 2.0:
        raise RlqError(f"min_height {min_height!r} must be >= 0 and pad {pad!r} in [0, 2]")
    if model_complexity not in _MODEL_FILES:
        raise RlqError(f"model_complexity {model_complexity!r} must be 0 (lite), 1 (full) or 2 (heavy)")
    if not 0.0 <= min_confidence <= 1.0:
        raise RlqError(f"min_confidence {min_confidence!r} must be in [0, 1]")
    model = Path(mp.__file__).parent / "modules" / "pose_landmark" / _MODEL_FILES[model_complexity]
    if not model.is_file():
        logger.warning("mediapipe's wheel does not ship %s; mediapipe will try to download it (model_complexity=1 "
                       "runs offline)", model.name)
    try:
        return mp.solutions.pose.Pose(static_image_mode=True, model_complexity=model_complexity,
                                      enable_segmentation=segmentation, min_detection_confidence=min_confidence)
    except Exception as e:  # noqa: BLE001 - download failures, graph errors: one clear message
        raise RlqError(f"cannot start mediapipe Pose (model_complexity={model_complexity}): {type(e).__name__}: {e}; "
                       "model_complexity=1 uses the model shipped in the wheel and runs offline") from None


def _infer(
    model: Any, path: Path, min_height: int, pad: float
) -> tuple[np.ndarray | None, np.ndarray | None, tuple[int, int]]:
    """(landmarks (33, 4) normalised to the original image or None, person probability H x W or None, (W, H))."""
    from PIL import Image

    from rlq.data.images import read_image

    img = read_image(path)
    w, h = img.size
    # ReID crops are small and tight. Upscaling them and adding an edge-replicated margin (so the person
    # does not fill the frame, as in the detector's training images) finds far more people. SynthCC `small`
    # train, clean / LQ images found: raw 91 % / 30 %, upscaled 93 % / 37 %, upscaled + 0.2 margin
    # 97 % / 73 %, with slightly lower keypoint errors (benchmarks/results/estimators.json).
    run = img
    if min_height > 0 and h < min_height:
        s = min_height / h
        run = img.resize((max(1, round(w * s)), min_height), Image.Resampling.BICUBIC)
    rw, rh = run.size
    p = int(round(pad * rh))
    arr = np.asarray(run)
    if p > 0:
        arr = np.pad(arr, ((p, p), (p, p), (0, 0)), mode="edge")
    res = model.process(np.ascontiguousarray(arr))
    if res.pose_landmarks is None:
        return None, None, (w, h)
    lm = np.array([[q.x, q.y, q.z, q.visibility] for q in res.pose_landmarks.landmark], dtype=np.float64)
    # normalised padded frame -> normalised original frame (continuous coordinates, scale-free)
    lm[:, 0] = (lm[:, 0] * (rw + 2 * p) - p) / rw
    lm[:, 1] = (lm[:, 1] * (rh + 2 * p) - p) / rh
    seg = getattr(res, "segmentation_mask", None)
    if seg is not None:
        seg = np.asarray(seg, dtype=np.float32)[p:p + rh, p:p + rw]
        if seg.shape != (h, w):
            seg = np.asarray(Image.fromarray(np.ascontiguousarray(seg), mode="F").resize((w, h), Image.Resampling.BILINEAR))
    return lm, seg, (w, h)


def estimate_poses(
    image_paths: Sequence[str | os.PathLike],
    *,
    model_complexity: int = 1,
    min_confidence: float = 0.3,
    min_height: int = 256,
    pad: float = 0.2,
    progress: bool = False,
) -> dict[str, list[Detection]]:
    """COCO-17 detections per image basename (AlphaPose's ``image_id``); an empty list means no person found.

    Images shorter than ``min_height`` px are upscaled (bicubic) and then get an edge-replicated margin of
    ``pad`` x their height on every side before inference; keypoints are in the original image's pixels.
    ``min_confidence`` is mediapipe's person-detection threshold.
    """
    mp = require_mediapipe()
    from tqdm.auto import tqdm

    paths = [Path(p) for p in image_paths]
    seen: dict[str, Path] = {}
    for p in paths:
        if p.name in seen:
            raise SideInputError(
                f"images {seen[p.name]} and {p} share the name {p.name!r}; AlphaPose results are keyed by basename, "
                "so estimate each leaf folder separately (estimate_poses_tree / `rlq poses estimate`)"
            )
        seen[p.name] = p
    out: dict[str, list[Detection]] = {}
    with _pose_model(mp, model_complexity, min_confidence, False, min_height, pad) as model:
        for p in tqdm(paths, desc="poses", unit="img", disable=not progress):
            lm, _, (w, h) = _infer(model, p, min_height, pad)
            out[p.name] = [] if lm is None else [landmarks_to_coco(lm, w, h)]
    found = sum(1 for v in out.values() if v)
    logger.info("mediapipe found a person in %d of %d images", found, len(out))
    return out


def estimate_poses_tree(
    images_root: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    recursive: bool = True,
    dataset_root: str | os.PathLike | None = None,
    model_complexity: int = 1,
    min_confidence: float = 0.3,
    min_height: int = 256,
    pad: float = 0.2,
    progress: bool = False,
) -> dict[Path, tuple[int, int]]:
    """Write AlphaPose-format keypoints for every image under ``images_root``; {file written: (images, found)}.

    ``out_root`` ending in ``.json`` is one file (all images must be in one folder); otherwise it is a
    folder with one ``alphapose-results.json`` per leaf folder in a tree mirroring ``dataset_root``
    (default ``images_root``; docs/datasets.md §5.1), e.g. images ``<ds>/train``, dataset root ``<ds>`` ->
    ``<out_root>/train/alphapose-results.json``. A flat folder gives ``<out_root>/alphapose-results.json``.
    """
    require_mediapipe()
    root = Path(images_root)
    base = Path(dataset_root) if dataset_root is not None else root
    rel_root = os.path.relpath(os.path.abspath(root), os.path.abspath(base))
    if rel_root == os.pardir or rel_root.startswith(os.pardir + os.sep):
        raise SideInputError(f"image folder {root} is not under the dataset root {base}; pass the matching root")
    out_root = Path(out_root)
    single = out_root.suffix.lower() == ".json"
    images = list_images(root, recursive=recursive, exclude=[] if single else [out_root])
    if not images:
        raise SideInputError(f"no images ({', '.join(IMAGE_EXTS)}) in {root}{'' if recursive else ' (not recursive)'}")
    by_leaf: dict[Path, list[Path]] = {}
    for p in images:
        by_leaf.setdefault(Path(os.path.normpath(Path(rel_root) / p.parent.relative_to(root))), []).append(p)
    if single and len(by_leaf) > 1:
        raise SideInputError(
            f"{root} has images in {len(by_leaf)} folders (e.g. {', '.join(str(k) for k in list(by_leaf)[:3])}) but "
            f"--out {out_root} is one JSON file; AlphaPose image ids are basenames, so pass a folder to get one "
            "results file per leaf folder (docs/datasets.md §5.1), or --no-recursive"
        )
    written: dict[Path, tuple[int, int]] = {}
    for leaf, paths in by_leaf.items():
        dets = estimate_poses(paths, model_complexity=model_complexity, min_confidence=min_confidence,
                              min_height=min_height, pad=pad, progress=progress)
        target = out_root if single else out_root / leaf / ALPHAPOSE_FILE
        write_alphapose(target, dets)
        written[target] = (len(paths), sum(1 for v in dets.values() if v))
        logger.info("wrote %s (%d images, %d with a person)", target, *written[target])
    return written


def estimate_parsing(
    image_paths: Sequence[str | os.PathLike],
    out_root: str | os.PathLike,
    images_root: str | os.PathLike,
    *,
    model_complexity: int = 1,
    min_confidence: float = 0.3,
    min_height: int = 256,
    pad: float = 0.2,
    conf_threshold: float = 0.3,
    mask_threshold: float = 0.5,
    skip_existing: bool = False,
    progress: bool = False,
) -> dict[str, str]:
    """Write an approximate LIP map per image at ``parsing_path(out_root, images_root, image)`` (SCHP names).

    The person mask is mediapipe Pose's segmentation (probability > ``mask_threshold``), split by
    :func:`split_person_mask` with the same pass's keypoints (``conf_threshold``). An image where no
    person is found gets an all-background map (recolouring then leaves it unchanged). Returns
    {image path: "pose" | "none" | "skipped"}.
    """
    mp = require_mediapipe()
    from tqdm.auto import tqdm

    if not 0.0 < mask_threshold < 1.0:
        raise RlqError(f"mask_threshold {mask_threshold!r} must be in (0, 1)")
    paths = [Path(p) for p in image_paths]
    targets = [parsing_path(out_root, images_root, p) for p in paths]  # checks every path first
    out: dict[str, str] = {}
    with _pose_model(mp, model_complexity, min_confidence, True, min_height, pad) as model:
        for p, target in tqdm(list(zip(paths, targets)), desc="parsing", unit="img", disable=not progress):
            if skip_existing and target.is_file():
                out[str(p)] = "skipped"
                continue
            lm, seg, (w, h) = _infer(model, p, min_height, pad)
            if lm is None or seg is None:
                labels = np.zeros((h, w), dtype=np.uint8)
                out[str(p)] = "none"
            else:
                kp = landmarks_to_coco(lm, w, h).keypoints
                labels = split_person_mask(seg > mask_threshold, kp, conf_threshold)
                out[str(p)] = "pose"
            write_parsing(target, labels)
    n_none = sum(1 for v in out.values() if v == "none")
    if n_none:
        logger.warning("no person found in %d of %d images: wrote all-background maps for them", n_none, len(out))
    return out
