"""Benchmark: the built-in mediapipe estimators against SynthCC's true keypoints and LIP maps.

Generates SynthCC (preset ``small`` by default) in a temporary folder, then on its train split:

* runs :func:`rlq.attributes.estimators.estimate_poses` and reports, separately for clean and LQ images
  (``quality.csv``), the detection rate and the error of every keypoint mediapipe reports with
  visibility >= ``--conf`` (pixels, and as a fraction of the person's height = the true LIP map's
  foreground height), per keypoint too, plus PCK at 5 % / 10 % of the height and the share of
  detections whose left/right sides come out swapped;
* runs :func:`estimate_parsing` and reports IoU per region against the true maps (summed over images):
  background, upper {5,7,10}, lower {9,12}, head {1,2,4,13} (face + hair; hat and sunglasses too),
  arms {14,15}, legs {16,17}, shoes {18,19}, lower+legs and the person (foreground).
* (not with ``--quick``) detection rate and error for three input preparations (raw; upscaled to 256 px;
  upscaled + 20 % edge margin, the default), to back the defaults.

Needs the ``[pose]`` extra (mediapipe, numpy<2) in its own environment, e.g.::

    /work/venv-pose/bin/python benchmarks/estimators.py            # small preset, ~2-3 min on 2 cores
    /work/venv-pose/bin/python benchmarks/estimators.py --quick    # tiny preset, seconds

Writes ``benchmarks/results/estimators.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import Timer, add_common_args, env_info, write_json
from rlq.attributes.estimators import estimate_parsing, estimate_poses
from rlq.data.sidecars import read_alphapose, read_parsing, read_quality_csv, select_person

KEYPOINTS = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
             "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)  # COCO-17 left <-> right
REGIONS = {
    "background": (0,),
    "upper": (5, 7, 10),
    "lower": (9, 12),
    "head": (1, 2, 4, 13),
    "arms": (14, 15),
    "legs": (16, 17),
    "shoes": (18, 19),
    "lower+legs": (9, 12, 16, 17),
    "person": tuple(range(1, 20)),
}


def _r(x: float, n: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), n)


def pose_metrics(names: list[str], dets: dict[str, list], truth: dict[str, np.ndarray], heights: dict[str, float],
                 conf: float) -> dict[str, Any]:
    """Detection rate and keypoint errors of one group of images."""
    n_found = 0
    err_px: list[np.ndarray] = []
    err_fr: list[np.ndarray] = []
    which: list[np.ndarray] = []
    swapped = 0
    reported = np.zeros(17)
    for name in names:
        d = dets.get(name) or []
        if not d:
            continue
        n_found += 1
        kp = d[0].keypoints
        t = truth[name]
        ok = kp[:, 2] >= conf
        reported += ok
        e = np.linalg.norm(kp[:, :2] - t, axis=1)
        e_flip = np.linalg.norm(kp[list(FLIP), :2] - t, axis=1)
        lr = [i for i in range(5, 17) if ok[i]]  # body keypoints: is the whole skeleton mirrored?
        if lr and e_flip[lr].mean() < 0.5 * e[lr].mean():
            swapped += 1
        err_px.append(e[ok])
        err_fr.append(e[ok] / heights[name])
        which.append(np.nonzero(ok)[0])
    out: dict[str, Any] = {"images": len(names), "detected": n_found,
                           "detection_rate": _r(n_found / len(names)) if names else None}
    if not n_found:
        return out
    px, fr, idx = np.concatenate(err_px), np.concatenate(err_fr), np.concatenate(which)
    out.update({
        "keypoints_reported": int(px.size),
        "reported_fraction": _r(px.size / (17 * n_found)),
        "mean_error_px": _r(px.mean(), 2), "median_error_px": _r(np.median(px), 2),
        "mean_error_frac_height": _r(fr.mean()), "median_error_frac_height": _r(np.median(fr)),
        "pck_0.05": _r((fr < 0.05).mean()), "pck_0.10": _r((fr < 0.10).mean()),
        "left_right_swapped_detections": _r(swapped / n_found),
        "per_keypoint": {
            k: {"reported": _r(reported[i] / n_found, 3),
                "mean_frac": _r(fr[idx == i].mean()) if (idx == i).any() else None,
                "median_frac": _r(np.median(fr[idx == i])) if (idx == i).any() else None,
                "median_px": _r(np.median(px[idx == i]), 2) if (idx == i).any() else None}
            for i, k in enumerate(KEYPOINTS)
        },
    })
    return out


def parsing_metrics(names: list[str], est: dict[str, np.ndarray], tru: dict[str, np.ndarray]) -> dict[str, Any]:
    """IoU per region summed over the images (intersection and union pooled)."""
    inter = dict.fromkeys(REGIONS, 0)
    union = dict.fromkeys(REGIONS, 0)
    correct = total = 0
    for n in names:
        e, t = est[n], tru[n]
        for r, ids in REGIONS.items():
            me, mt = np.isin(e, ids), np.isin(t, ids)
            inter[r] += int((me & mt).sum())
            union[r] += int((me | mt).sum())
        correct += int((e == t).sum())
        total += t.size
    iou = {r: _r(inter[r] / union[r]) if union[r] else None for r in REGIONS}
    main = ["background", "upper", "lower", "head", "arms", "shoes"]
    return {"images": len(names), "iou": iou,
            "miou_bg_upper_lower_head_arms_shoes": _r(np.mean([iou[r] for r in main if iou[r] is not None])),
            "pixel_accuracy_lip_ids": _r(correct / total) if total else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, default_out="benchmarks/results/estimators.json")
    ap.add_argument("--preset", default="small", help="SynthCC preset (tiny with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conf", type=float, default=0.3, help="visibility threshold for scored keypoints")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    preset = "tiny" if args.quick else args.preset
    from rlq.data.synth import generate_synthcc

    with tempfile.TemporaryDirectory(prefix="rlq-est-") as tmp:
        root = Path(tmp) / "synthcc"
        with Timer() as t_gen:
            generate_synthcc(root, preset=preset, seed=args.seed, workers=2)
        quality = read_quality_csv(root / "quality.csv")
        images = sorted((root / "train").glob("*.png"))
        tru_dets = {k: select_person(v) for k, v in read_alphapose(root / "poses/train/alphapose-results.json").items()}
        tru_maps = {p.name: read_parsing(root / "parsing/train" / (p.stem + ".png")) for p in images}
        heights: dict[str, float] = {}
        for n, m in tru_maps.items():
            rows = np.nonzero((m > 0).any(axis=1))[0]
            heights[n] = float(rows[-1] - rows[0] + 1)
        art = {p.name: quality[p.stem][0] for p in images}
        groups = {"clean": [p.name for p in images if art[p.name] == "clean"],
                  "lq": [p.name for p in images if art[p.name] != "clean"]}
        for a in ("pixelation", "defocus", "motion"):
            groups[f"lq_{a}"] = [p.name for p in images if art[p.name] == a]
        # images without a true detection (SynthCC drops a few on purpose) cannot be scored for keypoints
        truth = {n: d.keypoints[:, :2] for n, d in tru_dets.items() if d is not None}
        kp_groups = {g: [n for n in ns if n in truth] for g, ns in groups.items()}

        with Timer() as t_pose:
            dets = estimate_poses(images)
        poses = {g: pose_metrics(ns, dets, truth, heights, args.conf) for g, ns in kp_groups.items()}

        with Timer() as t_parse:
            how = estimate_parsing(images, Path(tmp) / "est_parsing", root)
        est_maps = {p.name: read_parsing(Path(tmp) / "est_parsing/train" / (p.stem + ".png")) for p in images}
        found = {Path(k).name for k, v in how.items() if v == "pose"}
        parsing = {}
        for g, ns in groups.items():
            parsing[g] = {"all_images": parsing_metrics(ns, est_maps, tru_maps),
                          "person_found": parsing_metrics([n for n in ns if n in found], est_maps, tru_maps)}

        prep: dict[str, Any] = {}
        if not args.quick:
            for name, mh, pad in (("raw", 0, 0.0), ("upscale_256", 256, 0.0), ("upscale_256_pad_0.2", 256, 0.2)):
                d = dets if (mh, pad) == (256, 0.2) else estimate_poses(images, min_height=mh, pad=pad)
                prep[name] = {g: {k: v for k, v in pose_metrics(ns, d, truth, heights, args.conf).items()
                                  if k != "per_keypoint"} for g, ns in kp_groups.items() if g in ("clean", "lq")}

    result = {
        "benchmark": "estimators",
        "dataset": {"name": "SynthCC", "preset": preset, "seed": args.seed, "split": "train",
                    "images": len(images), **{f"{g}_images": len(ns) for g, ns in groups.items()},
                    "images_without_true_keypoints": len(images) - sum(1 for p in images if p.name in truth)},
        "settings": {"model_complexity": 1, "min_confidence": 0.3, "min_height": 256, "pad": 0.2,
                     "keypoint_visibility_threshold": args.conf, "parsing_conf_threshold": 0.3,
                     "mask_threshold": 0.5},
        "poses": poses,
        "parsing": parsing,
        "input_preparation": prep,
        "seconds": {"generate": _r(t_gen.seconds, 1), "poses": _r(t_pose.seconds, 1),
                    "parsing": _r(t_parse.seconds, 1),
                    "poses_per_image_ms": _r(1000 * t_pose.seconds / len(images), 1),
                    "parsing_per_image_ms": _r(1000 * t_parse.seconds / len(images), 1)},
        "env": env_info(),
    }
    try:
        import mediapipe

        result["env"]["mediapipe"] = mediapipe.__version__
    except ImportError:  # pragma: no cover
        pass
    write_json(args.out, result, quick=args.quick)
    c, q = poses["clean"], poses["lq"]
    print(f"poses clean: detected {c['detected']}/{c['images']}, median err {c.get('median_error_px')} px "
          f"({c.get('median_error_frac_height')} H); LQ: {q['detected']}/{q['images']}, "
          f"median {q.get('median_error_px')} px")
    print("parsing IoU (clean, all images):", parsing["clean"]["all_images"]["iou"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
