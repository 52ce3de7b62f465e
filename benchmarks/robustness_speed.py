"""Speed of the robustness sweep (rlq.analysis.robustness_sweeps, docs/method.md §12) on SynthCC.

A random-init mobilenetv2 at 128 x 64 (the demo's backbone and size; no flip, as the demo evaluates), one thread
(``--threads``), CPU. Three timed parts, each in wall and process-CPU seconds, with the number of images embedded
(a counter around the sweep's ``extract_features``):

* ``shared``: the corruption grid with its three settings (query only, gallery only, both) in one
  ``robustness_sweeps`` call: the clean features once, each degraded split once per (artifact, level), the
  degraded gallery shared by "gallery" and "both";
* ``separate``: the same three settings as three ``robustness_sweep`` calls, each extracting its own clean and
  degraded features (what sharing saves); its metrics must equal ``shared``'s;
* ``rlq_query``: rlq's own grid on the queries (the default protocol), the clean features passed in (as
  ``rlq analyze robustness`` and the demo do).

Timings on a shared machine are noisy; compare the image counts and the CPU seconds.

    python benchmarks/robustness_speed.py                       # SynthCC `default` generated into a temp folder
    python benchmarks/robustness_speed.py --root data/synthcc   # an existing SynthCC folder
    python benchmarks/robustness_speed.py --quick               # SynthCC `tiny`, 2 artifacts, levels 0,1,5 (smoke run)

``--quick`` writes ``robustness_speed_quick.json`` into the system's temp folder unless ``--out`` is given, and
never into ``benchmarks/results/`` (whose files are the full runs').
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Timer, add_common_args, env_info, load, threads, write_json

RESULTS = Path(__file__).resolve().parent / "results"
HEIGHT, WIDTH = 128, 64


class _Counter:
    """Counts the images the robustness module embeds (clean and degraded)."""

    def __init__(self) -> None:
        import rlq.analysis.robustness as rob

        self.rob, self.real, self.images, self.calls = rob, rob.extract_features, 0, 0

    def __enter__(self) -> _Counter:
        def counted(model, paths, *a, **kw):
            self.images += len(paths)
            self.calls += 1
            return self.real(model, paths, *a, **kw)

        self.rob.extract_features = counted
        return self

    def __exit__(self, *exc: object) -> None:
        self.rob.extract_features = self.real


def _metrics(res: dict[str, Any]) -> str:
    """Every point's metrics as text (NaN, where no query is valid, compares equal to itself)."""
    return json.dumps({a: {lv: e.get("metrics") for lv, e in levels.items()} for a, levels in res["results"].items()},
                      sort_keys=True)


def run(root: Path, *, artifacts: Sequence[str], levels: Sequence[int], rlq_levels: Sequence[int], workers: int,
        nthreads: int) -> dict[str, Any]:
    from rlq.analysis.robustness import APPLY_TO, robustness_sweep, robustness_sweeps
    from rlq.data.datasets import load_dataset
    from rlq.data.loading import ImageCache
    from rlq.evaluation.extract import extract_features
    from rlq.models import build_model

    ds = load_dataset("synthcc", root)
    proto = ds.protocols["test"]
    cache = ImageCache()
    cache.preload([s.path for n in proto.split_names for s in ds.split(n)])  # decoding is not what is timed
    model = build_model(method="bm", num_ids=max(1, ds.num_train_pids), backbone="mobilenetv2", last_stride=2,
                        pretrained="none", seed=0)
    common = dict(height=HEIGHT, width=WIDTH, device="cpu", batch_size=64, workers=workers, flip=False, cache=cache,
                  seed=0)
    out: dict[str, Any] = {"sizes": {n: len(ds.split(n)) for n in proto.split_names}, "artifacts": list(artifacts),
                           "levels": list(levels), "rlq_levels": list(rlq_levels)}
    with threads(nthreads):
        with _Counter() as c, Timer() as t:
            shared = robustness_sweeps(model, ds, grid="corruption", artifacts=artifacts, levels=levels,
                                       apply_to=APPLY_TO, **common)
        out["shared"] = {"seconds": round(t.seconds, 2), "cpu_seconds": round(t.cpu, 2), "images_embedded": c.images,
                         "extract_calls": c.calls}
        with _Counter() as c, Timer() as t:
            separate = {st: robustness_sweep(model, ds, grid="corruption", artifacts=artifacts, levels=levels,
                                             apply_to=st, **common) for st in APPLY_TO}
        out["separate"] = {"seconds": round(t.seconds, 2), "cpu_seconds": round(t.cpu, 2), "images_embedded": c.images,
                           "extract_calls": c.calls}
        out["shared_equals_separate"] = all(_metrics(shared[st]) == _metrics(separate[st]) for st in APPLY_TO)
        with Timer() as t0:
            clean = {n: extract_features(model, [s.path for s in ds.split(n)], HEIGHT, WIDTH, device="cpu", batch_size=64,
                                         workers=workers, flip=False, cache=cache) for n in proto.split_names}
        with _Counter() as c, Timer() as t:
            robustness_sweep(model, ds, grid="rlq", artifacts=artifacts, levels=rlq_levels, clean_features=clean,
                             **common)
        out["rlq_query"] = {"seconds": round(t.seconds, 2), "cpu_seconds": round(t.cpu, 2), "images_embedded": c.images,
                            "extract_calls": c.calls, "clean_extraction_seconds": round(t0.seconds, 2)}
    out["speedup_shared_vs_separate"] = round(out["separate"]["seconds"] / max(out["shared"]["seconds"], 1e-9), 2)
    out["images_saved_by_sharing"] = out["separate"]["images_embedded"] - out["shared"]["images_embedded"]
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_out=str(RESULTS / "robustness_speed.json"))
    parser.set_defaults(out=None)  # --quick writes into the temp folder unless --out is given
    parser.add_argument("--root", type=Path, default=None, help="an existing SynthCC folder (default: generate one)")
    parser.add_argument("--seed", type=int, default=0, help="SynthCC data seed when generating")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="loader workers (default 0: images are cached)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(Path(tempfile.gettempdir()) / "robustness_speed_quick.json") if args.quick else str(
            RESULTS / "robustness_speed.json")
    if args.quick and Path(args.out).resolve().is_relative_to(RESULTS.resolve()):
        parser.error(f"--quick does not write into {RESULTS} (its files are the full runs'); pass --out elsewhere")

    from rlq.data.synth import GENERATOR_VERSION, generate_synthcc

    preset = "tiny" if args.quick else "default"
    artifacts = ("defocus", "motion") if args.quick else ("pixelation", "defocus", "motion", "jpeg")
    levels = (0, 1, 5) if args.quick else (0, 1, 2, 3, 4, 5)
    rlq_levels = (0, 1, 4) if args.quick else (0, 1, 2, 3, 4)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "synthcc"
            generate_synthcc(root, preset=preset, seed=args.seed, progress=False)
        load0 = load()
        res = run(root, artifacts=artifacts, levels=levels, rlq_levels=rlq_levels, workers=args.workers,
                  nthreads=args.threads)
    payload = {"env": env_info(), "quick": args.quick, "load_start": load0, "load_end": load(),
               "generator_version": GENERATOR_VERSION,
               "synthcc": {"preset": preset if args.root is None else str(args.root), "seed": args.seed},
               "model": {"backbone": "mobilenetv2", "init": "random", "input": [HEIGHT, WIDTH], "flip": False},
               "threads": args.threads, **res}
    write_json(args.out, payload)
    for k in ("shared", "separate", "rlq_query"):
        r = res[k]
        print(f"{k:10s} {r['seconds']:8.1f} s wall {r['cpu_seconds']:8.1f} s CPU  {r['images_embedded']:7d} images embedded")
    print(f"sharing saves {res['images_saved_by_sharing']} images ({res['speedup_shared_vs_separate']}x); metrics equal: "
          f"{res['shared_equals_separate']}")
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
