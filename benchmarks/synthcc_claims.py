"""The paper's claims, each a test fixed in advance on SynthCC: effects with intervals and a verdict per schedule.

What is trained: seven methods (bm, cap, bm_g, bm_p, tad, rlq, and tad8 = TAD with the Fig. 6 fixed 8 %
per-identity subset of the external data, ``tad.fraction=0.08``) x 3 training seeds x 2 schedules, each with the
shipped presets configs/synthcc/*.yaml (the demo's backbone, input size and batch). Every (seed, schedule) trains
its OWN teacher (configs/teacher/synthcc.yaml with the same training seed), so the seed interval covers teacher
variation too. SynthCC ``default`` is generated once with data seed 0.

Schedules (fixed before any run; docs/claims.md):

* ``demo``: the presets' 3 epochs (what ``rlq demo`` trains; seed 0 is the demo's own run);
* ``long``: 9 epochs = 3x the demo, by ``rlq demo --epochs 9``'s rule (milestones at 60 % and 85 % of the epochs:
  [5, 7]; clothes losses from epoch 3; evaluation every 3 epochs; the teacher 9 epochs too). Every claim uses the
  model after the last epoch (``test@last``), never a checkpoint selected on the test split.

Resumable: each run lives in ``--work``/<schedule>/seed<S>/<method> (teacher: .../seed<S>/teacher) and is skipped
when finished; an unfinished one continues from its newest good checkpoint. The demo schedule is trained first
(all of it), then the long one. ``--jobs 2`` trains two runs side by side (the demo's scheduler, rlq.demo); a run's
numbers depend on ``--threads``, not on ``--jobs``.

    python benchmarks/synthcc_claims.py --jobs 2            # everything (both schedules), then the claims JSON
    python benchmarks/synthcc_claims.py --train-only --jobs 2   # only the trainings
    python benchmarks/synthcc_claims.py --quick             # smoke run: SynthCC tiny, tiny backbone, 2 steps
    python benchmarks/synthcc_claims.py --table             # markdown table from --out
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import add_common_args, env_info, quick_out, write_json
from rlq.evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_means
from rlq.report_format import fixed, pct
from synthcc_methods import _prepare_data, seed_interval

#: The trained arms: name -> (preset under configs/synthcc/, extra overrides). tad8: Fig. 6's ablation setting
#: (docs/method.md "Fig. 6": one fixed per-identity 8 % subset of the external data for the whole run).
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bm": ("bm", ()),
    "cap": ("cap", ()),
    "bm_g": ("bm_g", ()),
    "bm_p": ("bm_p", ()),
    "tad": ("tad", ()),
    "rlq": ("rlq", ()),
    "tad8": ("tad", ("tad.fraction=0.08", "tad.fraction_mode=fixed", "tad.fraction_by=identity")),
}
#: Schedules: name -> epochs (None: the presets' 3). The long one follows `rlq demo --epochs`'s rule (rlq.demo._spec).
SCHEDULES: dict[str, int | None] = {"demo": None, "long": 9}
QUICK_SCHEDULES: dict[str, int | None] = {"demo": 1, "long": 2}


def run_dir(work: Path, schedule: str, seed: int, arm: str) -> Path:
    return work / schedule / f"seed{seed}" / arm


def training_tasks(args: argparse.Namespace, root: Path, schedule: str) -> list[tuple[str, Any]]:
    """(name, RunSpec) of every training of one schedule: the seeds' teachers, then every arm of every seed."""
    from rlq.demo import DemoSettings, _spec

    work = Path(args.work)
    epochs = (QUICK_SCHEDULES if args.quick else SCHEDULES)[schedule]
    base = [f"train.device={args.device}"]
    if args.quick:  # a smoke run of the pipeline, not of the backbone: tiny network, 2 steps
        base += ["model.backbone=tiny", "model.pretrained=none"]
    common = dict(epochs=epochs, threads=args.threads, analysis=False, batch_size=8 if args.quick else None,
                  max_steps_per_epoch=2 if args.quick else 0)
    tasks: list[tuple[str, Any]] = []
    distils = any(ARMS[a][0] in ("tad", "rlq") for a in args.arms)
    for s in args.seeds if distils else ():
        # DemoSettings(seed=s) trains with train.seed = s + 1 (seed 0 is the demo's own training seed, 1)
        teacher = run_dir(work, schedule, s, "teacher")
        tasks.append((f"{schedule}/seed{s}/teacher",
                      _spec(DemoSettings(seed=s, overrides=tuple(base), **common), "configs/teacher/synthcc.yaml", root,
                            teacher, teacher=True)))
    for s in args.seeds:
        for arm in args.arms:
            preset, extra = ARMS[arm]
            if args.quick:  # SynthCC tiny's external split is too small for 8 % to fill a batch of 8
                extra = tuple("tad.fraction=0.9" if e == "tad.fraction=0.08" else e for e in extra)
            tasks.append((f"{schedule}/seed{s}/{arm}",
                          _spec(DemoSettings(seed=s, overrides=(*base, *extra), **common), f"configs/synthcc/{preset}.yaml",
                                root, run_dir(work, schedule, s, arm))))
    return tasks


def train_all(args: argparse.Namespace, say=print) -> dict[str, float]:
    """Generate the data and train every unfinished run, the demo schedule first; returns seconds per new run."""
    from rlq.demo import DemoSettings, _train_runs

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = _prepare_data(work, "tiny" if args.quick else "default", say)
    seconds: dict[str, float] = {}
    for schedule in args.schedules:
        tasks = training_tasks(args, root, schedule)
        done = _train_runs(tasks, DemoSettings(resume=True, threads=args.threads), args.jobs, say)
        seconds.update({n: t for n, (_, t) in done.items() if t})
    return seconds


# ------------------------------------------------------------------------------------------- the claims


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and its SynthCC test (docs/claims.md). ``measure`` names the per-query quantity
    (``cc_hit``: rank-1 hit on the CC protocol; ``c8_loss``, ``c9_lq_nn``, ``c10_cross_gender``: the feature-based
    measures of :func:`feature_measures`); the effect is ``a - b`` of it (``interaction``: C7's LQ-minus-clean)."""

    id: str
    title: str
    evidence: str
    a: str
    b: str
    measure: str = "cc_hit"
    kind: str = "paired"  # paired | interaction
    direction: int = 1


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "CAP > BM on CC", "Table 2 (docs/method.md §11): LTCC CC R1 41.1 -> 43.4 (+2.3)", "cap", "bm"),
    Claim("C2", "BM+G > BM", "Table 9: LTCC CC R1 43.5 vs 41.1 (+2.4)", "bm_g", "bm"),
    Claim("C3", "BM+P > BM", "Table 9: LTCC CC R1 42.5 vs 41.1 (+1.4)", "bm_p", "bm"),
    Claim("C4", "BM+TAD > BM on CC", "Table 2: LTCC CC R1 43.4 vs 41.1 (+2.3)", "tad", "bm"),
    Claim("C5", "RLQ > BM+TAD", "Table 2: LTCC CC R1 46.4 vs 43.4 (+3.0)", "rlq", "tad"),
    Claim("C6", "RLQ > CAP (the components add up)", "Table 2: LTCC CC R1 46.4 vs 43.4 (+3.0)", "rlq", "cap"),
    Claim("C7", "TAD helps LQ queries more than clean ones", "§1/§5: TAD targets low-quality inputs", "tad", "bm",
          kind="interaction"),
    Claim("C8", "RLQ loses less CC R1 than BM as artifacts grow", "Fig. 8 left", "bm", "rlq", measure="c8_loss"),
    Claim("C9", "BM features cluster LQ images more than RLQ's", "Fig. 7", "bm", "rlq", measure="c9_lq_nn"),
    Claim("C10", "CAP makes fewer cross-gender top-1 mistakes than BM", "Fig. 8 right", "bm", "cap",
          measure="c10_cross_gender"),
    Claim("C11", "TAD with all external data > with ~8 %", "Fig. 6", "tad", "tad8"),
)
VERDICTS = ("supported", "contradicted", "not resolved")


def verdict(direction: int, ci_seeds: Sequence[float], ci_queries: Sequence[float]) -> str:
    """docs/claims.md: *supported* when both intervals exclude 0 on the side of ``direction``, *contradicted* when
    both exclude it on the other side, else *not resolved* (also when an interval is missing / NaN)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    ivs = [tuple(float(x) for x in ci) for ci in (ci_seeds, ci_queries)]
    if any(len(ci) != 2 or not all(math.isfinite(x) for x in ci) for ci in ivs):
        return "not resolved"
    if all(direction * lo > 0 and direction * hi > 0 for lo, hi in ivs):
        return "supported"
    if all(direction * lo < 0 and direction * hi < 0 for lo, hi in ivs):
        return "contradicted"
    return "not resolved"


def _percentile(stats: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def paired_effect(a: np.ndarray, b: np.ndarray, *, num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """``a - b`` for per-query values (seeds x queries, row i of both = seed i, column j = query j): the mean, the
    per-seed means with their Student-t interval, and the percentile bootstrap over queries of the seed-averaged
    per-query difference (rlq.evaluation.bootstrap's resampling)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired values must both be seeds x queries, got {a.shape} and {b.shape}")
    d = a - b
    per_seed = d.mean(axis=1)
    stats = bootstrap_means(d.mean(axis=0), num_resamples, seed)[:, 0]
    return {"effect": float(d.mean()), "per_seed": [float(x) for x in per_seed],
            "ci_seeds": seed_interval(per_seed, level)["t_ci"], "ci_queries": _percentile(stats, level),
            "num_queries": int(d.shape[1])}


def interaction_effect(d_lq: np.ndarray, d_clean: np.ndarray, *, num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """C7: mean(d over LQ queries) - mean(d over clean queries), d = per-query paired differences (seeds x queries of
    each group). The query bootstrap resamples within each group (group sizes kept): LQ with ``seed``, clean with
    ``seed + 1``, the seed-averaged d of each."""
    d_lq, d_clean = np.asarray(d_lq, dtype=np.float64), np.asarray(d_clean, dtype=np.float64)
    if d_lq.ndim != 2 or d_clean.ndim != 2 or d_lq.shape[0] != d_clean.shape[0]:
        raise ValueError(f"both groups must be seeds x queries with the same seeds, got {d_lq.shape}, {d_clean.shape}")
    if d_lq.shape[1] == 0 or d_clean.shape[1] == 0:
        raise ValueError("the interaction needs LQ and clean queries")
    per_seed = d_lq.mean(axis=1) - d_clean.mean(axis=1)
    m_lq = bootstrap_means(d_lq.mean(axis=0), num_resamples, seed)[:, 0]
    m_clean = bootstrap_means(d_clean.mean(axis=0), num_resamples, seed + 1)[:, 0]
    return {"effect": float(d_lq.mean() - d_clean.mean()), "per_seed": [float(x) for x in per_seed],
            "ci_seeds": seed_interval(per_seed, level)["t_ci"], "ci_queries": _percentile(m_lq - m_clean, level),
            "num_queries": int(d_lq.shape[1] + d_clean.shape[1]),
            "groups": {"LQ": {"num_queries": int(d_lq.shape[1]), "effect": float(d_lq.mean())},
                       "clean": {"num_queries": int(d_clean.shape[1]), "effect": float(d_clean.mean())}}}


def _aligned(rows: Sequence[tuple[np.ndarray, np.ndarray]], what: str) -> tuple[np.ndarray, np.ndarray]:
    """(keys, values seeds x n) of per-seed (keys, values) aligned on the first seed's key order."""
    keys = rows[0][0]
    out = []
    for k, v in rows:
        pos = {x: i for i, x in enumerate(k.tolist())}
        if set(pos) != set(keys.tolist()):
            raise ValueError(f"{what}: the runs were measured on different queries; they cannot be paired")
        out.append(np.asarray(v, dtype=np.float64)[[pos[x] for x in keys.tolist()]])
    return keys, np.stack(out)


def claim_result(claim: Claim, measures: Mapping[str, Mapping[int, Mapping[str, tuple[np.ndarray, np.ndarray]]]],
                 seeds: Sequence[int], *, num_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """The effect, its two intervals and the verdict of ``claim`` from ``measures[arm][seed][measure] = (keys,
    values)`` (values per query / image; for C7 also ``cc_hit/LQ`` and ``cc_hit/clean``)."""
    def paired(measure: str) -> tuple[np.ndarray, np.ndarray]:
        """Arm a's and arm b's values of ``measure`` (seeds x queries), b's columns in a's query order."""
        ka, va = _aligned([measures[claim.a][s][measure] for s in seeds], f"{claim.id} {claim.a}")
        kb, vb = _aligned([measures[claim.b][s][measure] for s in seeds], f"{claim.id} {claim.b}")
        pos = {x: i for i, x in enumerate(kb.tolist())}
        if set(pos) != set(ka.tolist()):
            raise ValueError(f"{claim.id}: {claim.a} and {claim.b} were measured on different queries ({measure})")
        return va, vb[:, [pos[x] for x in ka.tolist()]]

    if claim.kind == "interaction":
        d = {g: np.subtract(*paired(f"cc_hit/{g}")) for g in ("LQ", "clean")}
        res = interaction_effect(d["LQ"], d["clean"], num_resamples=num_resamples)
    else:
        res = paired_effect(*paired(claim.measure), num_resamples=num_resamples)
    return {"id": claim.id, "title": claim.title, "evidence": claim.evidence, "test": f"{claim.a} - {claim.b}",
            "measure": claim.measure, "kind": claim.kind, "seeds": [int(s) for s in seeds],
            "direction": claim.direction, **res,
            "verdict": verdict(claim.direction, res["ci_seeds"], res["ci_queries"])}


# ----------------------------------------------------------------------------------------- measurements

#: C8's grid (docs/claims.md): Fig. 8 left's three artifacts at rlq's severity levels 1-4, on the query only.
C8_ARTIFACTS = ("pixelation", "defocus", "motion")
C8_LEVELS = (0, 1, 2, 3, 4)
#: Which feature-based measures each arm needs (the claims that use them).
FEATURE_MEASURES: dict[str, tuple[str, ...]] = {}
for _c in CLAIMS:
    if _c.measure != "cc_hit":
        for _arm in (_c.a, _c.b):
            FEATURE_MEASURES.setdefault(_arm, ())
            FEATURE_MEASURES[_arm] = tuple(dict.fromkeys((*FEATURE_MEASURES[_arm], _c.measure)))
for _arm in ("bm", "cap"):  # D2 (docs/claims.md)
    FEATURE_MEASURES[_arm] = (*FEATURE_MEASURES.get(_arm, ()), "d2_gender_probe")
#: D1's arms (a pose head) and its chance level, ln K for K = 15 pose clusters (docs/method.md §3.4)
D1_ARMS = ("cap", "rlq", "bm_p")
D1_CHANCE = math.log(15)


def per_query_measures(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cc_hit``, ``cc_hit/LQ``, ``cc_hit/clean``: (keys, 0/1) of the valid queries of the run's test@last."""
    from rlq.engine.evaluate import run_per_query
    from rlq.evaluation.bootstrap import load_per_query

    pq = load_per_query(run_per_query(run, "test@last"))
    out = {}
    for name, ev in (("cc_hit", "cc"), ("cc_hit/LQ", "cc/LQ"), ("cc_hit/clean", "cc/clean")):
        if ev in pq:
            p = pq[ev]
            out[name] = (p.keys[p.valid], p.hit[p.valid].astype(np.float64))
    return out


def feature_measures(run: Path, root: Path, needed: Sequence[str], *, device: str = "cpu",
                     say: Callable[[str], None] = print) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """C8 / C9 / C10 per-query (C9: per-image) measures of a run's weights after the last epoch, cached in
    ``<run>/claims_measures.npz`` (recomputed when the checkpoint or the list of measures changes)."""
    import torch

    from rlq.analysis.lq_clusters import lq_cluster_diagnostics
    from rlq.analysis.ranklist import top1_after_junk
    from rlq.data.datasets import load_dataset
    from rlq.data.loading import ImageCache
    from rlq.deploy.search import weights_sha256
    from rlq.engine.model_io import load_model_checkpoint, run_eval_settings
    from rlq.evaluation.extract import extract_features
    from rlq.io import atomic_open

    cache_file = run / "claims_measures.npz"
    model, state = load_model_checkpoint(run, device=device, prefer="last")
    tag = f"{weights_sha256(state['checkpoint'])}:{','.join(needed)}"
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            if str(z["tag"]) == tag:
                return {k[:-5]: (z[k], z[k[:-5] + ".vals"]) for k in z.files if k.endswith(".keys")}
    flip = run_eval_settings(state, torch.device(device))[0]
    h, w = (int(x) for x in state["input_size"])
    ds = load_dataset("synthcc", root)
    proto = ds.protocols["test"]
    spec = proto.spec("cc")
    qs, gs = ds.split(spec.query), ds.split(spec.gallery)
    cache = ImageCache()
    cache.preload([s.path for s in (*qs, *gs)])
    common = dict(device=device, batch_size=64, workers=0, flip=flip, cache=cache)
    qkeys = np.asarray([s.key for s in qs]).astype(np.str_)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "c10_cross_gender" in needed or "d2_gender_probe" in needed:
        qf = extract_features(model, [s.path for s in qs], h, w, desc="query", **common)
        gf = extract_features(model, [s.path for s in gs], h, w, desc="gallery", **common)
        gmap = gmap_of(root, qs, gs)
    if "c10_cross_gender" in needed:
        top1 = top1_after_junk(qf, gf, [s.pid for s in qs], [s.pid for s in gs], [s.camid for s in qs],
                               [s.camid for s in gs], [s.clothes_id for s in qs], [s.clothes_id for s in gs], mode="cc")
        keep = top1 >= 0
        cross = np.array([gmap[s.pid] != gmap[gs[t].pid] for s, t in zip(qs, top1) if t >= 0], dtype=np.float64)
        out["c10_cross_gender"] = (qkeys[keep], cross)
    if "d2_gender_probe" in needed:
        out["d2_gender_probe"] = (np.asarray(["all"]), np.asarray(
            [gender_probe(np.concatenate([qf, gf]), [s.pid for s in (*qs, *gs)], gmap)]))
    if "c9_lq_nn" in needed:
        res = lq_cluster_diagnostics(model, [s.path for s in gs], [s.pid for s in gs], artifact_mix="synthcc", seed=0,
                                     height=h, width=w, device=device, batch_size=64, workers=0, flip=flip, tsne=False,
                                     per_image=True)
        out["c9_lq_nn"] = (np.asarray([s.key for s in gs]).astype(np.str_),
                           res["per_image"]["lq_nn_other_lq"].astype(np.float64))
    if "c8_loss" in needed:
        out["c8_loss"] = c8_losses(model, ds, h, w, flip=flip, device=device, cache=cache)
    payload = {"tag": np.asarray(tag)}
    for k, (keys, vals) in out.items():
        payload[f"{k}.keys"], payload[f"{k}.vals"] = keys, vals
    with atomic_open(cache_file, "wb") as f:
        np.savez(f, **payload)
    say(f"  measured {', '.join(needed)} for {run}")
    return out


def gmap_of(root: Path, qs, gs) -> dict[int, int]:
    """SynthCC's gender (0/1) per test identity, from its test gender CSV."""
    from rlq.analysis.ranklist import load_test_gender

    gender_csv = next(iter(sorted(root.glob("*_test_Gender.csv"))))
    return load_test_gender(gender_csv, list(qs) + list(gs))[0]


def gender_probe(feats: np.ndarray, pids: Sequence[int], gender_of_pid: Mapping[int, int], folds: int = 5) -> float:
    """D2: accuracy of a linear gender probe (standardised features, logistic regression), cross-validated with
    ``folds`` folds grouped by identity (no person in both the fitting and the scored part)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray([gender_of_pid[int(p)] for p in pids])
    probe = make_pipeline(StandardScaler(), LogisticRegression(solver="lbfgs", max_iter=1000))
    return float(np.mean(cross_val_score(probe, np.asarray(feats, np.float64), y, groups=np.asarray(pids),
                                         cv=GroupKFold(n_splits=folds))))


def trained_at(run: Path) -> str | None:
    """The commit the run was trained with (its meta.json, written by rlq.runtime.meta)."""
    try:
        return json.loads((run / "meta.json").read_text(encoding="utf-8")).get("git")
    except (OSError, ValueError):
        return None


def log_diagnostics(run: Path) -> dict[str, float]:
    """D1 and D3's inputs from a run's metrics.jsonl: the last train window's pose loss (when the run has a pose
    head) and the mean identity loss (id_cal + id_bot) over the first epoch's windows."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in recs if r.get("type") == "train"]
    out: dict[str, float] = {}
    if train and "pose" in train[-1]:
        out["d1_pose_ce_last"] = float(train[-1]["pose"])
    first = [r["id_cal"] + r["id_bot"] for r in train if r.get("epoch") == 0 and "id_cal" in r and "id_bot" in r]
    if first:
        out["d3_id_loss_epoch1"] = float(np.mean(first))
    return out


def c8_losses(model, ds, h: int, w: int, *, flip: bool, device: str, cache) -> tuple[np.ndarray, np.ndarray]:
    """C8: each CC query's rank-1 hit when clean minus its mean hit over (artifact, level >= 1) of
    :data:`C8_ARTIFACTS` x :data:`C8_LEVELS` (query only; levels that cannot run at h x w are left out)."""
    from rlq.analysis.robustness import robustness_sweep

    _, pq = robustness_sweep(model, ds, artifacts=C8_ARTIFACTS, levels=C8_LEVELS, grid="rlq", apply_to="query",
                             seed=0, height=h, width=w, device=device, batch_size=64, workers=0, flip=flip, cache=cache,
                             bootstrap_resamples=0, keep_per_query=True)  # pq[artifact][level][evaluation]: PerQuery
    clean = pq[C8_ARTIFACTS[0]]["0"]["cc"]
    keys = clean.keys[clean.valid]
    degraded = [pq[a][lv]["cc"] for a in C8_ARTIFACTS for lv in pq[a] if lv != "0"]
    if not degraded:
        raise ValueError("C8: no severity level could run at this input size")
    hits = []
    for p in degraded:
        pos = {k: i for i, k in enumerate(p.keys.tolist())}
        hits.append(p.hit[[pos[k] for k in keys.tolist()]].astype(np.float64))
    return keys, clean.hit[clean.valid].astype(np.float64) - np.mean(hits, axis=0)


# ------------------------------------------------------------------------------------------------ analysis


def analyse(args: argparse.Namespace, say=print) -> dict[str, Any]:
    """Every claim at every schedule whose runs are finished; the others are listed as pending."""
    from rlq.demo import _finished
    from rlq.evaluation.bootstrap import ci_info

    work = Path(args.work)
    root = work / "synthcc"
    claims: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    for schedule in args.schedules:
        epochs = (QUICK_SCHEDULES if args.quick else SCHEDULES)[schedule] or 3
        measures: dict[str, dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
        missing = []
        for arm in ARMS:
            for s in args.seeds:
                run = run_dir(work, schedule, s, arm)
                if _finished(run, epochs) is None:
                    missing.append(f"{schedule}/seed{s}/{arm}")
                    continue
                m = per_query_measures(run)
                if arm in FEATURE_MEASURES:
                    m.update(feature_measures(run, root, FEATURE_MEASURES[arm], device=args.device, say=say))
                measures.setdefault(arm, {})[s] = m
                runs[f"{schedule}/seed{s}/{arm}"] = {**{k: float(v.mean()) for k, (_, v) in m.items()},
                                                     **log_diagnostics(run), "trained_at_git": trained_at(run)}
        for c in CLAIMS:
            need = [f"{schedule}/seed{s}/{arm}" for arm in (c.a, c.b) for s in args.seeds]
            lacking = [n for n in need if n in missing]
            if lacking:
                claims.append({"id": c.id, "title": c.title, "evidence": c.evidence, "test": f"{c.a} - {c.b}",
                               "schedule": schedule, "seeds": [int(s) for s in args.seeds], "direction": c.direction,
                               "effect": None, "ci_seeds": None, "ci_queries": None, "verdict": "pending",
                               "missing_runs": lacking})
                continue
            claims.append({**claim_result(c, measures, args.seeds, num_resamples=args.resamples), "schedule": schedule})
        diagnostics[schedule] = schedule_diagnostics(runs, schedule, args.seeds)
    return {"env": env_info(), "args": {k: v for k, v in vars(args).items() if k != "table"},
            "design": __doc__.split("\n\n")[1].replace("\n", " "),
            "schedules": {k: {"epochs": v or 3} for k, v in (QUICK_SCHEDULES if args.quick else SCHEDULES).items()},
            "arms": {k: {"preset": f"configs/synthcc/{p}.yaml", "overrides": list(o)} for k, (p, o) in ARMS.items()},
            "rules": "docs/claims.md", "confidence_intervals": ci_info(args.resamples),
            "units": "effects and intervals are fractions (x100 for points)", "runs": runs, "claims": claims,
            "diagnostics": diagnostics}


def schedule_diagnostics(runs: Mapping[str, Mapping[str, float]], schedule: str, seeds: Sequence[int]) -> dict[str, Any]:
    """D1-D3 (docs/claims.md) of one schedule from the per-run numbers: per seed, and the mean (None where a run
    is missing)."""
    def per_seed(arm: str, key: str) -> list[float | None]:
        return [runs.get(f"{schedule}/seed{s}/{arm}", {}).get(key) for s in seeds]

    def mean(v: Sequence[float | None]) -> float | None:
        return float(np.mean(v)) if v and all(x is not None for x in v) else None

    d1 = {arm: per_seed(arm, "d1_pose_ce_last") for arm in D1_ARMS}
    d2 = {arm: per_seed(arm, "d2_gender_probe") for arm in ("bm", "cap")}
    id_cap, id_bm = per_seed("cap", "d3_id_loss_epoch1"), per_seed("bm", "d3_id_loss_epoch1")
    d3 = [a - b if a is not None and b is not None else None for a, b in zip(id_cap, id_bm)]
    return {
        "D1": {"what": "pose head training cross-entropy, last logged window", "chance": D1_CHANCE,
               "per_seed": d1, "mean": {a: mean(v) for a, v in d1.items()}},
        "D2": {"what": "linear gender probe accuracy on clean CC query + gallery features (5 folds by identity)",
               "per_seed": d2, "mean": {a: mean(v) for a, v in d2.items()}},
        "D3": {"what": "first-epoch mean identity loss (id_cal + id_bot), cap - bm", "per_seed": d3, "mean": mean(d3)},
    }


def _pt(x: float | None) -> str:
    return "n/a" if x is None or x != x else pct(x, sign=True)


def markdown_table(payload: Mapping[str, Any]) -> str:
    """The README's claims table (points; one row per claim, one column group per schedule)."""
    scheds = list(dict.fromkeys(c["schedule"] for c in payload["claims"]))
    by = {(c["id"], c["schedule"]): c for c in payload["claims"]}
    head = "| claim | paper | " + " | ".join(f"{s}: effect [95% seeds] [95% queries] | {s}: verdict" for s in scheds) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(scheds))]
    for cid in dict.fromkeys(c["id"] for c in payload["claims"]):
        first = next(c for c in payload["claims"] if c["id"] == cid)
        a, b = first["test"].split(" - ")
        cells = [f"{cid}: {first['title']} (`{a}` − `{b}`)", first["evidence"]]
        for s in scheds:
            c = by.get((cid, s))
            if c is None or c["effect"] is None:
                cells += ["—", "pending" if c is None else f"pending ({len(c.get('missing_runs', []))} runs)"]
                continue
            lo, hi = c["ci_seeds"]
            qlo, qhi = c["ci_queries"]
            cells += [f"{_pt(c['effect'])} [{_pt(lo)}, {_pt(hi)}] [{_pt(qlo)}, {_pt(qhi)}]", f"**{c['verdict']}**"]
        lines.append("| " + " | ".join(cells) + " |")
    diag = payload.get("diagnostics") or {}
    if diag:
        lines += ["", "Diagnostics (docs/claims.md; mean over the seeds):", "",
                  "| schedule | D1 pose-head CE, last window (chance 2.71): cap / rlq / bm_p | "
                  "D2 gender probe accuracy: bm / cap | D3 first-epoch identity loss, cap − bm |", "|---|---|---|---|"]

        def f(x: float | None, percent: bool = False) -> str:
            return "—" if x is None else (f"{pct(x)} %" if percent else fixed(x, 3))

        for sched, d in diag.items():
            d1 = " / ".join(f(d["D1"]["mean"][a]) for a in D1_ARMS)
            d2 = " / ".join(f(d["D2"]["mean"][a], percent=True) for a in ("bm", "cap"))
            d3 = "—" if d["D3"]["mean"] is None else fixed(d["D3"]["mean"], 3, sign=True)
            lines.append(f"| {sched} | {d1} | {d2} | {d3} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_args(parser, default_out="benchmarks/results/synthcc_claims.json")
    parser.add_argument("--work", default=None, help="folder for the data and the runs "
                        "(default runs/bench-synthcc-claims, -quick with --quick)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="train and evaluate on cpu or cuda")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2; --quick: 0 1)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to train")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: the cores / --jobs)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side, each in its own process")
    parser.add_argument("--train-only", action="store_true", help="train, do not analyse")
    parser.add_argument("--analyse-only", action="store_true", help="analyse the finished runs, do not train")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 1000)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    if args.table:
        print(markdown_table(json.loads(Path(args.out).read_text(encoding="utf-8"))))
        return 0
    if args.quick and args.out == "benchmarks/results/synthcc_claims.json":
        args.out = quick_out(args.out)
    args.work = args.work or ("runs/bench-synthcc-claims" + ("-quick" if args.quick else ""))
    from rlq.demo import DemoSettings, demo_jobs

    args.jobs, args.threads = demo_jobs(DemoSettings(jobs=args.jobs, threads=args.threads), args.device)
    if not args.analyse_only:
        t0 = time.time()
        secs = train_all(args)
        print(f"trainings finished in {time.time() - t0:.0f} s ({len(secs)} new)")
        if args.train_only:
            return 0
    payload = analyse(args)
    write_json(args.out, {**payload, "quick": args.quick}, quick=args.quick)
    print(markdown_table(payload))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
