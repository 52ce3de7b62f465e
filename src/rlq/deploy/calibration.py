"""Open-set calibration: distance thresholds at target false-accept rates, stored beside the checkpoint.

``rlq calibrate RUN`` writes ``<checkpoint>.calibration.json`` next to the checkpoint folder (e.g.
``RUN/checkpoints/best.calibration.json``); ``rlq search --threshold calibrated`` and :class:`Searcher` read it. A
threshold holds only for features made as they were at calibration: the weights (SHA-256), flip, precision and the
ranking (cosine, or k-reciprocal re-ranking with its k1/k2/lambda) are recorded and any difference is refused,
named (docs/open-set.md).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, RlqError

__all__ = ["CALIBRATION_FORMAT", "calibration_path", "feature_settings", "settings_mismatch", "load_calibration",
           "write_calibration", "calibrated_threshold", "run_folder_of"]

CALIBRATION_FORMAT = "rlq-open-set-calibration"
CALIBRATION_VERSION = 1
SUFFIX = ".calibration.json"


def calibration_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint folder>.calibration.json`` beside the (resolved) checkpoint folder."""
    from ..engine.checkpoint import resolve_checkpoint

    ck = resolve_checkpoint(checkpoint).resolve()
    return ck.parent / (ck.name + SUFFIX)


def run_folder_of(checkpoint_dir: Path) -> Path | None:
    """The run folder holding ``RUN/checkpoints/<name>``, else None."""
    return checkpoint_dir.parent.parent if checkpoint_dir.parent.name == "checkpoints" else None


def feature_settings(flip: bool, precision: str, rerank: Any = None) -> dict[str, Any]:
    """How features and distances are made, as a calibration records them."""
    return {"flip": bool(flip), "precision": str(precision),
            "ranking": "cosine" if rerank is None else "k-reciprocal re-ranking",
            "rerank": None if rerank is None else dict(rerank.as_dict()),
            "distance": "1 - cosine similarity" if rerank is None else "re-ranked distance"}


def settings_mismatch(calibration: Mapping[str, Any], flip: bool, precision: str, rerank: Any = None,
                      weights_sha256: str | None = None) -> list[str]:
    """Each difference between how the calibration's features were made and these, as a phrase; [] when none."""
    cal = calibration.get("features") or {}
    now = feature_settings(flip, precision, rerank)
    out = []
    if weights_sha256 and calibration.get("weights_sha256") and calibration["weights_sha256"] != weights_sha256:
        out.append(f"weights: calibrated with sha256 {str(calibration['weights_sha256'])[:12]}..., searching with "
                   f"{weights_sha256[:12]}... (retrained or another checkpoint)")
    if cal.get("flip") is not None and bool(cal["flip"]) != now["flip"]:
        out.append(f"flip: calibrated with flip {'on' if cal['flip'] else 'off'}, searching with flip "
                   f"{'on' if now['flip'] else 'off'} (pass {'--flip' if cal['flip'] else '--no-flip'})")
    if cal.get("precision") is not None and cal["precision"] != now["precision"]:
        out.append(f"precision: calibrated in {cal['precision']}, searching in {now['precision']}")
    if (cal.get("rerank") or None) != now["rerank"]:
        def say(r: Any) -> str:
            return "cosine (no --rerank)" if not r else "re-ranking " + ", ".join(f"{k}={v}" for k, v in r.items())
        out.append(f"re-ranking: calibrated with {say(cal.get('rerank'))}, searching with {say(now['rerank'])}")
    return out


def load_calibration(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The calibration beside ``checkpoint``, or None when there is none."""
    p = calibration_path(checkpoint)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {p}: {e}; recompute it with `rlq calibrate RUN`") from None
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise CheckpointError(f"{p} is not an rlq open-set calibration (format {CALIBRATION_FORMAT!r}); recompute it "
                              "with `rlq calibrate RUN`")
    data["path"] = str(p)
    return data


def write_calibration(checkpoint: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` atomically beside the checkpoint; refused while a training holds the run folder's lock."""
    from ..engine.checkpoint import resolve_checkpoint
    from ..engine.run_dir import lock_holder
    from ..io import atomic_write_json

    ck = resolve_checkpoint(checkpoint).resolve()
    for folder in filter(None, (run_folder_of(ck), ck.parent)):
        holder = lock_holder(folder)
        if holder is not None:
            raise ConfigError(f"{folder} is in use by another rlq process ({holder}); calibrate after it finishes "
                              "(the checkpoints may still change)")
    p = calibration_path(ck)
    atomic_write_json(p, {"format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, **payload})
    return p


def calibrated_threshold(calibration: Mapping[str, Any], far: float | None = None) -> tuple[float, float]:
    """(target FAR, threshold) of the calibration: the given target, else the first one calibrated."""
    rows = calibration.get("thresholds") or []
    if not rows:
        raise CheckpointError(f"{calibration.get('path', 'the calibration')} holds no thresholds; recompute it with "
                              "`rlq calibrate RUN`")
    if far is None:
        row = rows[0]
    else:
        match = [r for r in rows if math.isclose(float(r["far_target"]), far, rel_tol=0, abs_tol=1e-12)]
        if not match:
            raise RlqError(f"{calibration.get('path', 'the calibration')} has no threshold at FAR {far:g}; it has "
                           f"{[r['far_target'] for r in rows]}: choose one, or recalibrate with `rlq calibrate RUN "
                           f"--far {far:g}`")
        row = match[0]
    t = row["threshold"]
    return float(row["far_target"]), (math.inf if t is None else float(t))


def calibrate(checkpoint: str | os.PathLike, dataset: str, root: str | os.PathLike, fars: list[float], *,
              mode: str | None = None, unknown_fraction: float = 0.5, seed: int = 0, flip: bool | None = None,
              rerank: Any = None, device: Any = "cpu", batch_size: int = 64, workers: int = 0, prefer: str = "best",
              num_resamples: int = 1000, ci_seed: int = 0, state: Mapping[str, Any] | None = None,
              model: Any = None) -> dict[str, Any]:
    """Choose a threshold per target FAR on a labelled split with unknown identities; returns the calibration
    record (not written: :func:`write_calibration`).

    The split: the run's identity hold-out (``data.val_holdout_ids``, rebuilt with the run's seed) or the dataset's
    own ``val`` protocol; without either, the ``test`` protocol (recorded, with a note: figures measured on the
    same test split are then not independent). ``round(unknown_fraction * #query identities)`` query identities
    (seeded) lose their gallery images and become the unknowns."""
    import torch

    from ..data.datasets import canonical_name, load_dataset
    from ..engine.model_io import load_model_checkpoint, run_eval_settings
    from ..engine.validate import dataset_options
    from ..evaluation.bootstrap import ci_info
    from ..evaluation.extract import extract_features
    from ..evaluation.open_set import dir_at_far, open_set_split, rank1_outcomes, threshold_at_far
    from ..runtime.device import precision_name
    from .search import weights_sha256

    dev = torch.device(device)
    if model is None:
        model, state = load_model_checkpoint(checkpoint, device=dev, prefer=prefer)
    state = dict(state or {})
    spec = state.get("spec") or {}
    data = spec.get("data") or {}
    ds = load_dataset(dataset, root, **dataset_options(dataset))
    holdout = int(data.get("val_holdout_ids") or 0)
    same_ds = data.get("dataset") and canonical_name(str(data["dataset"])) == canonical_name(dataset)
    if holdout and same_ds:
        from ..data.holdout import identity_holdout

        train_seed = int((spec.get("train") or {}).get("seed", 0))
        ds = identity_holdout(ds, holdout, seed=train_seed)
        source = (f"identity hold-out of {holdout} train identities (data.val_holdout_ids, seed {train_seed}): "
                  "identities the model did not train on")
        protocol_name = "val"
    elif "val" in ds.protocols:
        protocol_name, source = "val", f"{dataset}'s own validation split"
    else:
        protocol_name = "test"
        source = (f"{dataset}'s test split: the run holds out no identities (train with data.val_holdout_ids=N to "
                  "calibrate on identities apart from the test); open-set figures on this test split are not independent")
    protocol = ds.protocols[protocol_name]
    by_name = {s.name: s for s in protocol.specs}
    by_mode = {s.mode: s for s in protocol.specs}
    ev = by_name.get(mode or protocol.selection) or by_mode.get(mode)  # an evaluation name, or a mode
    if ev is None or ev.mode not in ("general", "cc"):
        raise ConfigError(f"--mode {mode}: choose a general or cc evaluation of the {protocol_name} protocol of "
                          f"{dataset}: {sorted(s.name for s in protocol.specs if s.mode in ('general', 'cc'))}")
    mode = ev.mode
    h, w = state.get("input_size", [384, 192])
    run_flip, amp = run_eval_settings(state, dev)
    flip = run_flip if flip is None else bool(flip)
    qs, gs = ds.split(ev.query), ds.split(ev.gallery)
    gal_pids = {s.pid for s in gs}
    unknown_ids = open_set_split([s.pid for s in qs if s.pid in gal_pids], unknown_fraction, seed)
    keep_g = [s for s in gs if s.pid not in set(unknown_ids)]
    kw = dict(device=dev, batch_size=batch_size, workers=workers, flip=flip, amp_dtype=amp, progress=False)
    qf = extract_features(model, [s.path for s in qs], h, w, desc="extract calibration queries", **kw)
    gf = extract_features(model, [s.path for s in keep_g], h, w, desc="extract calibration gallery", **kw)
    o = rank1_outcomes(qf, gf, [s.pid for s in qs], [s.pid for s in keep_g], [s.camid for s in qs],
                       [s.camid for s in keep_g], [s.clothes_id for s in qs], [s.clothes_id for s in keep_g],
                       mode=mode, rerank=rerank)
    ts = [threshold_at_far(o["distance"][o["unknown"]], f) for f in fars]
    rows = dir_at_far(o["distance"], o["correct"], o["known"], o["unknown"], fars, thresholds=ts,
                      num_resamples=num_resamples, seed=ci_seed)
    ck = str(Path(state.get("checkpoint", checkpoint)).resolve())
    return {
        "checkpoint": ck, "weights_sha256": weights_sha256(ck), "method": state.get("method"),
        "input_size": [int(h), int(w)], "features": feature_settings(flip, precision_name(amp), rerank),
        "accept": "a query's rank-1 gallery image is a match when its distance < threshold",
        "split": {"dataset": dataset, "root": str(root), "protocol": protocol_name, "source": source, "mode": mode,
                  "query_split": ev.query, "gallery_split": ev.gallery, "unknown_fraction": unknown_fraction,
                  "seed": seed, "unknown_ids": unknown_ids, "num_queries": len(qs),
                  "num_known": int(o["known"].sum()), "num_unknown": int(o["unknown"].sum()),
                  "num_excluded": int((~(o["known"] | o["unknown"])).sum()), "num_gallery": len(keep_g),
                  "unknown_query_keys": [s.key for s, u in zip(qs, o["unknown"]) if u]},
        "thresholds": [{k: r[k] for k in ("far_target", "threshold", "far", "far_ci", "dir", "dir_ci", "num_known",
                                          "num_unknown")} for r in rows],
        "confidence_intervals": ci_info(num_resamples, ci_seed),
    }
