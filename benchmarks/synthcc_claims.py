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
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthcc_methods import _prepare_data  # noqa: E402

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
    for s in args.seeds:
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


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _util import add_common_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_args(parser, default_out="benchmarks/results/synthcc_claims.json")
    parser.add_argument("--work", default=None, help="folder for the data and the runs "
                        "(default runs/bench-synthcc-claims, -quick with --quick)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="train and evaluate on cpu or cuda")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to train")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: the cores / --jobs)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side, each in its own process")
    parser.add_argument("--train-only", action="store_true", help="train, do not analyse")
    args = parser.parse_args(argv)
    args.work = args.work or ("runs/bench-synthcc-claims" + ("-quick" if args.quick else ""))
    from rlq.demo import DemoSettings, demo_jobs

    args.jobs, args.threads = demo_jobs(DemoSettings(jobs=args.jobs, threads=args.threads), args.device)
    t0 = time.time()
    secs = train_all(args)
    print(f"trainings finished in {time.time() - t0:.0f} s ({len(secs)} new)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
