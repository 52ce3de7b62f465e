"""`rlq compare`: paired bootstrap intervals of the differences between runs evaluated on the same queries."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import app, bootstrap_seed_option, console, human, json_option, resamples_option, write_json


@app.command("compare")
def compare_cmd(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders (their per_query/ files) or per-query .npz files "
                                      "(`rlq eval --per-query`); every run is compared with the first."),
    selection: str = typer.Option("test@last", help="In a run folder: which results.json entry (test@last, test@best_test, test@best_val)."),
    evaluation: list[str] | None = typer.Option(None, "--eval", help="Evaluation names to compare (default: every one the runs share)."),
    resamples: int = resamples_option(),
    ci_seed: int = bootstrap_seed_option(),
    json_out: Path | None = json_option(),
) -> None:
    """Each run minus the first: R1 and mAP differences with 95 % paired bootstrap intervals (same queries resampled)."""
    from ..engine.evaluate import run_per_query
    from ..evaluation.bootstrap import ci_info, load_per_query, paired_bootstrap_ci

    if len(runs) < 2:
        raise typer.BadParameter("give at least two runs")
    if resamples < 1:
        raise typer.BadParameter(f"--resamples must be >= 1, got {resamples}")
    pqs = [load_per_query(run_per_query(r, selection)) for r in runs]
    names = evaluation or [n for n in pqs[0] if all(n in p for p in pqs[1:])]
    rows, payload = [], {}
    for r, pq in zip(runs[1:], pqs[1:]):
        for n in names:
            for side, p in (("first", pqs[0]), (str(r), pq)):
                if n not in p:
                    raise typer.BadParameter(f"run {side} has no evaluation {n!r}; it has {sorted(p)}")
            d = paired_bootstrap_ci(pq[n], pqs[0][n], num_resamples=resamples, seed=ci_seed,
                                    what=f"{r} vs {runs[0]} ({n})")
            payload.setdefault(str(r), {})[n] = d
            rows.append((str(r), n, d))
    head = ["run - first", "eval", "ΔR1", "ΔmAP", "queries"]

    def cell(v: float, ci: list) -> str:
        return f"{100 * v:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"

    table = [head, ["---"] * 5] + [[r, n, cell(d["rank1_diff"], d["rank1_diff_ci"]), cell(d["mAP_diff"], d["mAP_diff_ci"]),
                                    str(d["num_queries"])] for r, n, d in rows]
    w = [max(len(t[i]) for t in table) for i in range(5)]
    text = "\n".join("| " + " | ".join(c.ljust(x) for c, x in zip(t, w)) + " |" for t in table)
    human(json_out).print(text, highlight=False, markup=False, soft_wrap=True)
    console.print(f"first run: {runs[0]}; intervals: 95 % paired percentile bootstrap, {resamples} resamples, seed {ci_seed}")
    write_json(json_out, {"first": str(runs[0]), "selection": selection, "differences": payload,
                          "confidence_intervals": ci_info(resamples, ci_seed)}, say=True)
