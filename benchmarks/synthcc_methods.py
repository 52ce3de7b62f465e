"""SynthCC: CAL, the Base Model, CAP, BM+TAD and RLQ with the demo's pretrained backbone, 3 seeds each.

What varies between seeds: the training seed of every student run (initialisation of the new layers, sampling,
augmentation). What does not: the data (SynthCC ``default`` generated once with data seed 0) and the TAD
teacher (ONE shared teacher, trained once with training seed 1 on SynthCC's clean external split, like the
demo's); so the intervals measure training noise and query sampling, not data-set or teacher variation.

Reported per method and evaluation (general, cc, cc/clean, cc/LQ: the query-quality rows that rlq writes for
SynthCC, docs/datasets.md "Confidence intervals"):

* across seeds: mean, 95 % Student-t interval (n - 1 degrees of freedom) and min / max of the per-seed values;
* across queries: percentile bootstrap over queries (rlq.evaluation.bootstrap) of the seed-averaged per-query
  hit and AP (each query's value is its mean over the seeds, then the queries are resampled);
* paired differences vs ``bm`` (same seeds, same queries): per-seed differences with their t interval, and
  the paired bootstrap over queries of the seed-averaged per-query difference.

Size: every run uses the shipped presets configs/synthcc/<method>.yaml (the demo's backbone, input size and
schedule); ``--epochs`` overrides the schedule as `rlq demo --epochs` does. 15 student runs + 1 teacher.
Resumable: each (method, seed) run lives in ``--work``/seed<S>/<method> and is skipped when finished; an
unfinished one continues from its newest good checkpoint; the JSON is rewritten (atomically) after every run.
``--jobs 2`` trains two runs side by side in worker processes (the demo's scheduler, rlq.demo); a run's numbers
depend on ``--threads``, not on ``--jobs``.

    python benchmarks/synthcc_methods.py --jobs 2 --threads 1   # full run (42 min on the 2-core machine, 2026-12-01)
    python benchmarks/synthcc_methods.py --quick         # smoke run: SynthCC tiny, 2 steps of batch 8, tiny backbone
    python benchmarks/synthcc_methods.py --table         # markdown table from --out
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import add_common_args, env_info, write_json
from rlq.evaluation.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    PerQuery,
    bootstrap_ci,
    bootstrap_means,
    ci_info,
)
from rlq.report_format import pct

METHODS = ("cal", "bm", "cap", "tad", "rlq")
EVALS = ("general", "cc", "cc/clean", "cc/LQ")
BASELINE = "bm"


# ------------------------------------------------------------------------------------------- aggregation


def seed_interval(values: Sequence[float], level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Mean, Student-t interval (n - 1 dof) and min/max of per-seed values (NaN-free); t interval NaN for n < 2."""
    from scipy import stats

    v = np.asarray([x for x in values if x == x], dtype=np.float64)
    n = v.size
    if n == 0:
        return {"mean": math.nan, "t_ci": [math.nan, math.nan], "min": math.nan, "max": math.nan, "n": 0}
    mean = float(v.mean())
    if n < 2:
        lo = hi = math.nan
    else:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
        lo, hi = mean - half, mean + half
    return {"mean": mean, "t_ci": [lo, hi], "min": float(v.min()), "max": float(v.max()), "n": int(n)}


def _stack(pqs: Sequence[PerQuery]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """keys (of the first), hits and APs (seeds x queries) aligned on the first run's key order."""
    keys = pqs[0].keys
    hits, aps = [], []
    for pq in pqs:
        pos = {k: i for i, k in enumerate(pq.keys.tolist())}
        if set(pos) != set(keys.tolist()):
            raise ValueError("the seeds were evaluated on different query sets; they cannot be pooled")
        idx = np.array([pos[k] for k in keys.tolist()], dtype=np.int64)
        if not np.array_equal(pq.valid[idx], pqs[0].valid):
            raise ValueError("the seeds disagree on which queries are valid (different galleries?)")
        hits.append(pq.hit[idx].astype(np.float64))
        aps.append(pq.ap[idx])
    valid = pqs[0].valid
    return keys[valid], np.stack(hits)[:, valid], np.stack(aps)[:, valid]


def pooled_query_ci(pqs: Sequence[PerQuery], *, num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                    level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Bootstrap over queries of the seed-averaged per-query hit and AP (rank1, mAP and their intervals)."""
    _, hit, ap = _stack(pqs)
    return bootstrap_ci(ap.mean(axis=0), hit.mean(axis=0), num_resamples=num_resamples, seed=seed, level=level)


def paired_difference(a: Sequence[PerQuery], b: Sequence[PerQuery], *, num_resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """``a - b`` over the same seeds (a[i] pairs b[i]) and queries: per-seed t interval and paired query bootstrap."""
    if len(a) != len(b):
        raise ValueError(f"paired difference needs the same seeds: {len(a)} vs {len(b)} runs")
    ka, ha, apa = _stack(a)
    kb, hb, apb = _stack(b)
    pos = {k: i for i, k in enumerate(kb.tolist())}
    if set(pos) != set(ka.tolist()):
        raise ValueError("the two methods were evaluated on different valid queries; they cannot be paired")
    idx = np.array([pos[k] for k in ka.tolist()], dtype=np.int64)
    d_hit, d_ap = ha - hb[:, idx], apa - apb[:, idx]  # seeds x queries
    per_seed = {"rank1": seed_interval(d_hit.mean(axis=1), level), "mAP": seed_interval(d_ap.mean(axis=1), level)}
    stats = bootstrap_means(np.stack([d_hit.mean(axis=0), d_ap.mean(axis=0)]), num_resamples, seed)
    q = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {"rank1_diff": float(d_hit.mean()), "mAP_diff": float(d_ap.mean()),
            "rank1_diff_query_ci": [float(q[0, 0]), float(q[1, 0])], "mAP_diff_query_ci": [float(q[0, 1]), float(q[1, 1])],
            "per_seed": per_seed, "num_queries": int(ka.size)}


def aggregate(per_query: Mapping[str, Mapping[int, Mapping[str, PerQuery]]], *, num_resamples: int = DEFAULT_RESAMPLES,
              baseline: str = BASELINE) -> dict[str, Any]:
    """``per_query[method][seed][evaluation]`` -> {"methods": {m: {ev: ...}}, "vs_<baseline>": {m: {ev: ...}}}."""
    out: dict[str, Any] = {"methods": {}, f"vs_{baseline}": {}}
    for m, by_seed in per_query.items():
        seeds = sorted(by_seed)
        evs = [e for e in EVALS if all(e in by_seed[s] for s in seeds)]
        res = {}
        for e in evs:
            pqs = [by_seed[s][e] for s in seeds]
            valid = [pq.valid for pq in pqs]
            r1 = [float(pq.hit[v].mean()) if v.any() else math.nan for pq, v in zip(pqs, valid)]
            mp = [float(pq.ap[v].mean()) if v.any() else math.nan for pq, v in zip(pqs, valid)]
            res[e] = {"seeds": seeds, "rank1_per_seed": r1, "mAP_per_seed": mp,
                      "rank1": seed_interval(r1), "mAP": seed_interval(mp),
                      "query_bootstrap": pooled_query_ci(pqs, num_resamples=num_resamples)}
        out["methods"][m] = res
    if baseline in per_query:
        base = per_query[baseline]
        for m, by_seed in per_query.items():
            if m == baseline:
                continue
            seeds = sorted(set(by_seed) & set(base))
            if not seeds:
                continue
            out[f"vs_{baseline}"][m] = {
                e: paired_difference([by_seed[s][e] for s in seeds], [base[s][e] for s in seeds],
                                     num_resamples=num_resamples)
                for e in EVALS if all(e in by_seed[s] and e in base[s] for s in seeds)}
    return out


def _p(x: float | None) -> str:
    return "n/a" if x is None or x != x else pct(x)  # None: NaN read back from the (strict) JSON


def markdown_table(payload: Mapping[str, Any]) -> str:
    """Markdown tables (percent) of an aggregated result: per method, then differences vs the baseline."""
    agg = payload["aggregate"]
    lines = ["| method | eval | R1 mean [95% t, seeds] (min-max) | R1 [95% bootstrap, queries] | "
             "mAP mean [95% t] (min-max) | mAP [95% bootstrap] |", "|---|---|---|---|---|---|"]
    for m, res in agg["methods"].items():
        for e, r in res.items():
            cells = []
            for k in ("rank1", "mAP"):
                s, q = r[k], r["query_bootstrap"]
                lo, hi = s["t_ci"]
                cells.append(f"{_p(s['mean'])} [{_p(lo)}, {_p(hi)}] ({_p(s['min'])}-{_p(s['max'])})")
                qlo, qhi = q[f"{k}_ci"]
                cells.append(f"{_p(q[k])} [{_p(qlo)}, {_p(qhi)}]")
            lines.append(f"| {m} | {e} | " + " | ".join(cells) + " |")
    key = next((k for k in agg if k.startswith("vs_")), None)
    if key and agg[key]:
        lines += ["", f"Paired differences vs `{key[3:]}` (points; same seeds and queries):", "",
                  "| method | eval | dR1 [95% t, seeds] | dR1 [95% bootstrap, queries] | dmAP [95% t] | dmAP [95% bootstrap] |",
                  "|---|---|---|---|---|---|"]
        for m, res in agg[key].items():
            for e, d in res.items():
                cells = []
                for k in ("rank1", "mAP"):
                    s = d["per_seed"][k]
                    q = d[f"{k}_diff_query_ci"]
                    cells.append(f"{_p(s['mean'])} [{_p(s['t_ci'][0])}, {_p(s['t_ci'][1])}]")
                    cells.append(f"{_p(d[f'{k}_diff'])} [{_p(q[0])}, {_p(q[1])}]")
                lines.append(f"| {m} | {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ runs


def _prepare_data(work: Path, preset: str, say) -> Path:
    from rlq.attributes.pose_io import cluster_dataset_poses
    from rlq.data.datasets import load_dataset
    from rlq.data.synth import generate_synthcc, is_synthcc_root

    root = work / "synthcc"
    if not is_synthcc_root(root):
        say(f"generating SynthCC `{preset}` (data seed 0) into {root} ...")
        generate_synthcc(root, preset=preset, seed=0)
    if not (root / "pose_clusters.csv").is_file():
        ds = load_dataset("synthcc", root)
        cluster_dataset_poses(root, ds.train, root / "poses", root / "pose_clusters.csv", ks=(15,), seed=0)
    return root


def run_all(args: argparse.Namespace, say=print) -> dict[str, Any]:
    """Generate the data, train the teacher and every (method, seed) run that is not finished; returns the payload."""
    from rlq.demo import DemoSettings, _spec, _train_runs
    from rlq.engine.evaluate import run_per_query
    from rlq.evaluation.bootstrap import load_per_query

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = _prepare_data(work, "tiny" if args.quick else "default", say)
    overrides = [f"train.device={args.device}", f"tad.teacher={work / 'teacher'}", f"eval.bootstrap_resamples={args.resamples}"]
    if args.quick:  # a smoke run of the pipeline, not of the backbone: tiny network, 2 steps
        overrides += ["model.backbone=tiny", "model.pretrained=none"]
    settings = dict(epochs=args.epochs, threads=args.threads, analysis=False, batch_size=8 if args.quick else None,
                    max_steps_per_epoch=2 if args.quick else 0, overrides=tuple(overrides))
    payload: dict[str, Any] = {"env": env_info(), "args": vars(args), "runs": {}, "seconds": {},
                               "design": __doc__.split("\n\n")[1].replace("\n", " ")}

    # Every run (the teacher first: TAD and RLQ distil from it), trained `--jobs` at a time by the demo's scheduler
    # (rlq.demo._train_runs: worker processes, finished runs skipped, an unfinished one resumed); the JSON is
    # rewritten after every finished run.
    tasks: list[tuple[str, Any]] = []
    if any(m in ("tad", "rlq") for m in args.methods):
        tasks.append(("teacher", _spec(DemoSettings(seed=0, **settings), "configs/teacher/synthcc.yaml", root,
                                       work / "teacher", teacher=True)))
    for s in args.seeds:
        for m in args.methods:
            tasks.append((f"{m}/seed{s}", _spec(DemoSettings(seed=s, **settings), f"configs/synthcc/{m}.yaml", root,
                                                work / f"seed{s}" / m)))
    per_query: dict[str, dict[int, dict[str, PerQuery]]] = {}
    order = {name: i for i, (name, _) in enumerate(tasks)}  # (seed, method) order, whatever finished first

    def collect(name: str, rep: dict, seconds: float) -> None:
        nonlocal per_query
        if seconds:
            payload["seconds"][name] = seconds
        if name == "teacher":
            return
        m, s = name.split("/seed")
        pq = load_per_query(run_per_query(work / f"seed{s}" / m, "test@last"))
        per_query.setdefault(m, {})[int(s)] = pq
        per_query = {k: dict(sorted(v.items())) for k, v in sorted(per_query.items(), key=lambda kv: METHODS.index(kv[0]))}
        payload["runs"][name] = {e: {"rank1": float(p.hit[p.valid].mean()), "mAP": float(np.mean(p.ap[p.valid]))}
                                 for e, p in pq.items() if p.valid.any()}
        payload["runs"] = dict(sorted(payload["runs"].items(), key=lambda kv: order[kv[0]]))
        payload["aggregate"] = aggregate(per_query, num_resamples=args.resamples)
        payload["confidence_intervals"] = ci_info(args.resamples)
        write_json(args.out, payload, quick=args.quick)  # atomic; rewritten after every run

    t0 = time.time()
    _train_runs(tasks, DemoSettings(resume=True, **settings), args.jobs, say, on_done=collect)
    payload["seconds"]["total (wall)"] = time.time() - t0
    payload["jobs"], payload["threads_per_job"] = args.jobs, args.threads
    write_json(args.out, payload, quick=args.quick)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_args(parser, default_out="benchmarks/results/synthcc_methods.json")
    parser.add_argument("--work", default=None,
                        help="folder for the data and the runs (default runs/bench-synthcc-methods, -quick with --quick)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="train and evaluate on cpu or cuda")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2; --quick: 0 1)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to run")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default: the presets' configs/synthcc/*.yaml; --quick: 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: the cores / --jobs)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side, each in its own process "
                        "(the demo's scheduler; numbers depend on --threads, not on --jobs)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 1000)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = parser.parse_args(argv)
    if args.table:
        import json

        print(markdown_table(json.loads(Path(args.out).read_text(encoding="utf-8"))))
        return 0
    if args.quick:
        args.seeds = args.seeds or [0, 1]
        args.epochs = args.epochs or 1
    args.seeds = args.seeds or [0, 1, 2]
    args.work = args.work or ("runs/bench-synthcc-methods" + ("-quick" if args.quick else ""))
    from rlq.demo import DemoSettings, demo_jobs

    if args.jobs > 1:  # the demo's rule: the cores shared among the jobs unless --threads says otherwise
        args.threads = demo_jobs(DemoSettings(jobs=args.jobs, threads=args.threads), args.device)[1]
    payload = run_all(args)
    print(markdown_table(payload))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
