#!/usr/bin/env python3
"""Open-set search on SynthCC (issue 23): calibration and DIR@FAR of the demo's Base Model and RLQ runs.

For each of ``bm`` and ``rlq`` in a demo folder (``rlq demo --out DIR --methods bm,rlq``) it runs, through the CLI:

    rlq calibrate DIR/M --far 0.05,0.01 --json ...            # thresholds at 5 % and 1 % false accepts
    rlq eval DIR/M --open-set --far 0.05,0.01 --sample-seed 1 --json ...   # DIR@FAR, other unknown identities

The demo presets hold out no identities, so calibration falls back to SynthCC's test split (said in its output);
the evaluation draws other unknown identities from the same split (``--sample-seed 1``), so the two are not
independent. Writes benchmarks/results/synthcc_open_set.json (every number with its 95 % bootstrap interval, the
commands) and docs/images/open_set.png (DIR against FAR, general and clothes-changing rule, with intervals).
Usage: ``python benchmarks/synthcc_open_set.py --runs runs/demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import env_info, write_json
from rlq.report_format import pct

METHODS = ("bm", "rlq")
FARS = "0.05,0.01"


def _rlq(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    p = subprocess.run([sys.executable, "-m", "rlq.cli", *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"rlq {' '.join(args)} failed:\n{p.stderr[-2000:]}")


def measure(runs: Path, tmp: Path) -> dict:
    out: dict = {}
    for m in METHODS:
        cal_cmd = ["calibrate", str(runs / m), "--far", FARS, "--workers", "1", "--json", str(tmp / f"cal-{m}.json")]
        eval_cmd = ["eval", str(runs / m), "--open-set", "--far", FARS, "--sample-seed", "1", "--workers", "1",
                    "--json", str(tmp / f"eval-{m}.json")]
        _rlq(cal_cmd)
        _rlq(eval_cmd)
        out[m] = {"commands": ["rlq " + " ".join(cal_cmd[:-2]), "rlq " + " ".join(eval_cmd[:-2])],
                  "calibration": json.loads((tmp / f"cal-{m}.json").read_text()),
                  "evaluation": json.loads((tmp / f"eval-{m}.json").read_text())}
    return out


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlq.io import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=False)
    for ax, mode in zip(axes, ("general", "cc")):
        for m, color in zip(METHODS, ("tab:blue", "tab:red")):
            curve = results[m]["evaluation"]["open_set"][mode]["curve"]
            far = [100 * c["far"] for c in curve]
            dir_ = [100 * c["dir"] for c in curve]
            lo = [100 * c["dir_ci"][0] for c in curve]
            hi = [100 * c["dir_ci"][1] for c in curve]
            ax.plot(far, dir_, marker="o", ms=3, color=color, label=m.upper() if m == "rlq" else "Base Model")
            ax.fill_between(far, lo, hi, color=color, alpha=0.15)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("false accepts of unknown people (FAR, %)")
        ax.set_ylabel("detected and identified (DIR, %)")
        ax.set_title({"general": "general rule", "cc": "clothes-changing rule"}[mode])
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    fig.suptitle("SynthCC open-set search (demo runs; 95 % bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/demo"), help="a demo folder holding bm/ and rlq/")
    p.add_argument("--out", default="benchmarks/results/synthcc_open_set.json")
    p.add_argument("--figure", default="docs/images/open_set.png")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = measure(args.runs, Path(tmp))
    report = {"env": env_info(), "runs": str(args.runs), "fars": FARS, "results": runs,
              "note": "calibration on SynthCC's test split (the demo holds out no identities); evaluation with other "
                      "unknown identities of the same split (--sample-seed 1): not independent of the calibration"}
    write_json(args.out, report)
    figure(runs, Path(args.figure))
    for m in METHODS:
        for mode in ("general", "cc"):
            for r in runs[m]["evaluation"]["open_set"][mode]["rows"]:
                print(f"{m} {mode}: FAR target {r['far_target']}: FAR {pct(r['far'])} DIR {pct(r['dir'])} "
                      f"[{pct(r['dir_ci'][0])}, {pct(r['dir_ci'][1])}] ({r['threshold_from']})")
    print(f"wrote {args.out} and {args.figure}")
    return report


if __name__ == "__main__":
    main()
