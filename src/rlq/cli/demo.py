"""`rlq demo`: SynthCC end to end (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import app, console, dry_run_option, out, seed_option


@app.command("demo")
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder (re-running skips finished runs; an unfinished one needs --resume or --overwrite)."),
    synth_preset: str = typer.Option("default", help="SynthCC preset: tiny, small or default."),
    epochs: int | None = typer.Option(None, help="Epochs per method (default: the presets', 3; teacher 3)."),
    methods: str | None = typer.Option(None, help="Which methods to train, comma-separated (default: cal,bm,cap,tad,rlq). "
                                          "With --overwrite, the methods named here are retrained even if finished."),
    seed: int = seed_option(),
    train_seed: int | None = typer.Option(None, "--train-seed", help="The trainings' train.seed (default: --seed + 1)."),
    threads: int = typer.Option(0, help="torch CPU threads per training (0: the cores divided among --jobs)."),
    jobs: int = typer.Option(0, help="Trainings run side by side, each in its own process (0: auto = 2 on a CPU with 2 "
                             "or more cores, 1 on CUDA; 1: one after another, as before). Numbers depend on the "
                             "threads per training, not on what runs beside it."),
    no_analysis: bool = typer.Option(False, "--no-analysis", help="Skip the robustness / LQ-cluster / ranked-result analyses."),
    max_steps: int = typer.Option(0, help="Cut each epoch after this many steps (smoke tests)."),
    batch_size: int | None = typer.Option(None, "--train-batch-size", help="Sampled images per training step (default "
                                             "32; 8 for the tiny preset)."),
    resume: bool = typer.Option(False, "--resume", help="Continue unfinished method runs in --out from their checkpoints."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start unfinished runs anew, moving them aside to <method>.old-<timestamp> "
                                   "(finished runs are kept, unless --methods names them)."),
    dry_run: bool = dry_run_option(),
    overrides: list[str] = typer.Argument(None, help="key=value overrides for every run, e.g. model.backbone=narrow"),
) -> None:
    """Generate SynthCC, cluster poses, train a teacher and CAL / BM / CAP / TAD / RLQ on a CPU, and report.

    Fine-tunes the ImageNet-pretrained `mobilenetv2` at 128x64 for 3 epochs per method (presets
    configs/synthcc/*.yaml; docs/demo.md gives the measured time); writes results.json and report.md into --out.
    """
    from ..demo import DEMO_METHODS, DemoSettings, run_demo

    chosen = tuple(m for m in methods.split(",") if m) if methods else DEMO_METHODS
    s = DemoSettings(synth_preset=synth_preset, seed=seed, train_seed=train_seed, methods=chosen, retrain_finished=bool(methods) and overwrite,
                     threads=threads, jobs=jobs, analysis=not no_analysis, max_steps_per_epoch=max_steps, epochs=epochs,
                     batch_size=batch_size or (8 if synth_preset == "tiny" else None), overrides=tuple(overrides or ()),
                     resume=resume, overwrite=overwrite)
    if dry_run:  # every training's resolved config; nothing is generated, trained or written
        import dataclasses

        import yaml

        from ..demo import demo_tasks

        for name, spec in demo_tasks(out_dir, s):
            out.print(f"# {name}\n" + yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False), highlight=False,
                      markup=False)
        return
    run_demo(out_dir, s, say=lambda m: console.print(m, highlight=False, markup=False))
