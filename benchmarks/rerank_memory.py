"""Peak memory of the two k-reciprocal re-ranking forms against the problem size (1 thread, own process each).

Each figure is ``evaluate_features(..., rerank=RerankSettings(), rerank_form=FORM)`` in a fresh process:
peak RSS (VmHWM, reset once the synthetic features exist) minus the RSS at that point, i.e. everything the
re-ranking and the ranking kernel allocate above the caller's features. The dense form is measured with
query = gallery = N / 2 (PRCC-like), the sparse form with query = N / 7 (the 10,000 x 60,000 shape of
``eval_speed.py --parts rerank_large``). ``--fit`` prints the least-squares growth law of each form
(bytes = a N² + b N + c for dense, bytes = b N + c for sparse) and compares it with the library's estimate
(:func:`rlq.evaluation.rerank.dense_peak_bytes` / :func:`rlq.evaluation.rerank.sparse_peak_bytes`).

    PYTHONPATH=src python benchmarks/rerank_memory.py                       # default sizes, ~5 min
    PYTHONPATH=src python benchmarks/rerank_memory.py --dense 2000 --sparse 10000 --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import MiB, Timer, add_common_args, env_info, load, peak_in_child, write_json
from eval_speed import labels_of, make_problem
from rlq.evaluation import evaluate_features
from rlq.evaluation import rerank as rr

log = logging.getLogger("rerank_memory")


def _child(mark, form: str, nq: int, ng: int, dim: int, seed: int, budget_mb: float) -> dict[str, Any]:
    import torch

    P = make_problem(nq, ng, dim, seed)
    q, g = torch.from_numpy(P["q"]), torch.from_numpy(P["g"])
    mark()
    with Timer() as t:
        r = evaluate_features(q, g, *labels_of(P), rerank=rr.RerankSettings(), rerank_form=form,
                              memory_budget_mb=budget_mb)
    mark.stop()
    return {"form": r["rerank_form"], "seconds": t.seconds, "cpu_seconds": t.cpu, "mAP": r["mAP"],
            "features_bytes": P["q"].nbytes + P["g"].nbytes}


def _fit(rows: list[dict[str, Any]], quadratic: bool) -> dict[str, float]:
    n = np.array([r["n"] for r in rows], dtype=np.float64)
    y = np.array([r["memory"]["peak_above_inputs_bytes"] for r in rows], dtype=np.float64)
    cols = ([n * n] if quadratic else []) + [n, np.ones_like(n)]
    A = np.stack(cols, 1)
    coef = np.linalg.lstsq(A, y, rcond=None)[0] if len(n) >= A.shape[1] else np.full(A.shape[1], np.nan)
    names = (["bytes_per_n2"] if quadratic else []) + ["bytes_per_n", "constant_bytes"]
    out = {k: float(v) for k, v in zip(names, coef)}
    if quadratic:
        out["peak_over_n2"] = [float(v) for v in y / (n * n)]
    else:
        out["peak_over_n"] = [float(v) for v in y / n]
    return out


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser, str(here / "results" / "rerank_memory.json"))
    parser.add_argument("--dense", default="2000,4000,6000", help="N = query + gallery of the dense rows")
    parser.add_argument("--sparse", default="10000,20000,40000", help="N = query + gallery of the sparse rows")
    parser.add_argument("--dim", type=int, default=512, help="feature width")
    parser.add_argument("--budget-mb", type=float, default=1024.0, help="memory_budget_mb passed to evaluate_features")
    parser.add_argument("--sparse-budgets", default="256",
                        help="further memory budgets (MiB) of the sparse rows, to see the stage scratch follow it")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.dense, args.sparse, args.dim, args.sparse_budgets = "300,600", "700,1400", 32, "4"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sizes = {"dense": [int(s) for s in args.dense.split(",") if s],
             "sparse": [int(s) for s in args.sparse.split(",") if s]}
    st = rr.RerankSettings()
    result: dict[str, Any] = {"benchmark": "rerank_memory", "quick": args.quick, "env": env_info(), "load_start": load(),
                              "dim": args.dim, "memory_budget_mb": args.budget_mb, "threads": args.threads,
                              "settings": st.as_dict()}
    runs = [("dense", args.budget_mb), ("sparse", args.budget_mb)]
    runs += [("sparse", float(b)) for b in args.sparse_budgets.split(",") if b and float(b) != args.budget_mb]
    for form, budget in runs:
        rows = []
        for n in sizes[form]:
            nq = n // 2 if form == "dense" else n // 7
            ng = n - nq
            r = peak_in_child(_child, form, nq, ng, args.dim, args.seed, budget, nthreads=args.threads)
            r.update(n=n, queries=nq, gallery=ng, memory_budget_mb=budget)
            est = (rr.dense_peak_bytes(nq, ng, args.dim) if form == "dense"
                   else rr.sparse_peak_bytes(nq, ng, args.dim, budget, st))
            r["library_estimate_mib"] = round(est / MiB, 1)
            log.info("%s N=%d (%d x %d x %d), budget %g MiB: %.1f s, peak %.1f MiB above the features (library "
                     "estimate %.1f MiB)", form, n, nq, ng, args.dim, budget, r["seconds"],
                     r["memory"]["peak_above_inputs_mib"], r["library_estimate_mib"])
            rows.append(r)
        key = form if budget == args.budget_mb else f"{form}_budget_{budget:g}"
        result[key] = {"memory_budget_mb": budget, "rows": rows, "fit": _fit(rows, quadratic=form == "dense")}
        log.info("%s fit: %s", key, result[key]["fit"])
        write_json(args.out, result, quick=args.quick)
    result["load_end"] = load()
    write_json(args.out, result, quick=args.quick)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
