"""Shared CLI objects: the Typer app, the console, logging set-up."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler

app = typer.Typer(
    name="rlq",
    help="rlq: clothes-changing person re-identification robust to low-quality images (RLQ = CAP + TAD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: paragraphs are re-wrapped to the terminal (no docstring line breaks mid-sentence) and
    # usage errors are not drawn as boxes (`rlq.cli.main` prints them as one `error:` line).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
#: Command groups shared by several modules (each module adds its commands to the group).
poses_app = typer.Typer(help="Pose keypoints and clusters for CAP (docs/method.md §3.4).", no_args_is_help=True)
parse_app = typer.Typer(help="Human parsing (LIP label maps) for clothes recolouring (docs/method.md §3.3).", no_args_is_help=True)
gender_app = typer.Typer(help="Gender labels for CAP (docs/method.md §3.5).", no_args_is_help=True)
lq_app = typer.Typer(help="Synthetic low-quality images (docs/method.md §5.2).", no_args_is_help=True)
analyze_app = typer.Typer(help="Analyses of trained models: robustness, LQ clusters, gender, quality buckets.", no_args_is_help=True)
app.add_typer(poses_app, name="poses")
app.add_typer(parse_app, name="parse")
app.add_typer(gender_app, name="gender")
app.add_typer(lq_app, name="lq")
app.add_typer(analyze_app, name="analyze")


def _console_width(stream: Any) -> int | None:
    """None (rich measures the terminal) on a terminal; else $COLUMNS, or wide enough that nothing wraps.

    Not on a terminal (a log file, CI, a pipe) rich would wrap at 80 columns: tables and long lines are kept whole.
    """
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):
        pass
    cols = os.environ.get("COLUMNS", "")
    return int(cols) if cols.isdigit() and int(cols) > 0 else 10_000


console = Console(stderr=True, width=_console_width(sys.stderr))
out = Console(width=_console_width(sys.stdout))


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages and full error tracebacks.")) -> None:
    """rlq: clothes-changing person re-identification robust to low-quality images."""
    setup_logging(verbose)


#: Set by the root `--verbose/-v` option: show full tracebacks of errors (otherwise one line, root cause first).
VERBOSE = {"on": False}


def setup_logging(verbose: bool = False) -> None:
    """Route library logging to a rich handler on stderr."""
    VERBOSE["on"] = verbose
    root = logging.getLogger("rlq")
    if not any(getattr(h, "_rlq", False) for h in root.handlers):
        if _console_width(sys.stderr) is None:  # a terminal: rich's handler
            h: logging.Handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
        else:  # a log file or CI: plain lines (rich pads every record to the console width)
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
        h._rlq = True  # type: ignore[attr-defined] - our marker on the handler, so a second call adds none
        root.addHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


@app.command("version")
def version() -> None:
    """Print the rlq, torch and Python versions."""
    import platform

    import rlq

    try:
        import torch

        tv = torch.__version__
    except ImportError:  # pragma: no cover
        tv = "not installed"
    out.print(f"rlq {rlq.__version__} (torch {tv}, Python {platform.python_version()})")


FLIP_HELP = ("Add the flipped image's embedding (docs/method.md §2.5). Default: as the checkpoint's run was evaluated "
             "(its eval.flip, and its precision), so the features and numbers reproduce the run's; on for a "
             "checkpoint without a run spec. Outputs record which was used.")


def flip_option() -> Any:
    """The `--flip/--no-flip` option of every command that embeds images: None (not given) = as the run evaluated
    (``rlq.engine.model_io.run_eval_settings``, docs/method.md §2.5)."""
    return typer.Option(None, "--flip/--no-flip", help=FLIP_HELP)


RERANK_HELP = ("Rank by k-reciprocal re-ranked distances (Zhong et al., CVPR 2017) instead of cosine. Labelled as "
               "such in every output; the paper's numbers use no re-ranking.")
RERANK_K1_HELP = "Re-ranking k1 (k-reciprocal neighbours)."
RERANK_K2_HELP = "Re-ranking k2 (local query expansion)."
RERANK_LAMBDA_HELP = "Re-ranking lambda: weight of the original distance (1 - lambda goes to the Jaccard distance)."


def rerank_settings(rerank: bool, k1: int, k2: int, lam: float):
    """The RerankSettings of the --rerank options, or None without --rerank."""
    if not rerank:
        return None
    from ..evaluation.rerank import RerankSettings

    return RerankSettings(k1, k2, lam)



# -- one vocabulary for options shared by several commands ----------------------------------------------------------
# Every command declares these through the factories below, so a name means one thing with one type and one default
# everywhere (tests/test_cli_ux.py walks the app and checks it).

JSON_HELP = ("Also write the results as JSON to this file; `-` prints the JSON to stdout instead of the table "
             "(a bare --json means `-`).")
BATCH_SIZE_HELP = "Images per forward pass when extracting features (speed and memory only; the features do not depend on it)."
BATCH_SIZE_DEFAULT = 64
SEED_HELP = "Seed of the generated data: the same seed gives byte-identical files."
LQ_SEED_HELP = "Seed of the synthetic low-quality degradations: the same seed degrades the same images the same way."
SAMPLE_SEED_HELP = "Seed of the images or queries drawn at random for the output."
KMEANS_SEED_HELP = "K-means random_state (docs/method.md §3.4: 0)."
BOOTSTRAP_SEED_HELP = ("Seed of the bootstrap resamples of the queries (paired comparisons resample the same query "
                       "indices for every run). --ci-seed is its old name.")
RESAMPLES_HELP = "Bootstrap resamples of the queries for the 95 % intervals of R1 and mAP."
TOP_K_HELP = "Gallery images shown per query."
DRY_RUN_HELP = "Validate the config, print it resolved, and stop (nothing is trained or written)."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."
WORKERS_HELP = "Loader workers."
PREFER_HELP = "In a run folder: best, best_val, or last."
PROTOCOL_HELP = "Which protocol: test or val."
CAMERA_RULE_HELP = "Celeb-reID camid rule: unique (default) or official."
FAR_HELP = ("Open-set: target false-accept rates (comma-separated fractions): the fraction of queries of unknown "
            "identities whose rank-1 distance may fall below the threshold (docs/open-set.md).")
UNKNOWN_FRACTION_HELP = ("Open-set: fraction of the query identities made unknown (their gallery images removed), "
                         "drawn with --sample-seed.")


def _json_path(value: Path | None) -> Path | None:
    if value is not None and str(value).startswith("-") and str(value) != "-":
        raise typer.BadParameter(f"--json takes a file path (or - for stdout), got {str(value)!r}; "
                                 "put the path right after --json")
    return value


def json_option() -> Any:
    """``--json PATH``: also write the command's results as JSON (``-``: to stdout, instead of the table)."""
    return typer.Option(None, "--json", metavar="PATH", help=JSON_HELP, callback=_json_path)


def json_to_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def human(path: Path | None) -> Console:
    """Where the human-readable output goes: stdout, or stderr when ``--json -`` puts the JSON on stdout."""
    return console if json_to_stdout(path) else out


def write_json(path: Path | None, payload: Any, *, say: bool = False) -> None:
    """``--json PATH``: write ``payload`` there atomically (strict JSON), or print it to stdout for ``-``."""
    from ..io import atomic_write_json, json_dumps

    if path is None:
        return
    if json_to_stdout(path):
        sys.stdout.write(json_dumps(payload, indent=2) + "\n")
        sys.stdout.flush()
        return
    atomic_write_json(path, payload)
    if say:
        console.print(f"wrote {path}", highlight=False, markup=False)


def batch_size_option() -> Any:
    return typer.Option(BATCH_SIZE_DEFAULT, "--batch-size", min=1, help=BATCH_SIZE_HELP)


def seed_option() -> Any:
    return typer.Option(0, "--seed", help=SEED_HELP)


def lq_seed_option() -> Any:
    return typer.Option(0, "--lq-seed", help=LQ_SEED_HELP)


def sample_seed_option() -> Any:
    return typer.Option(0, "--sample-seed", help=SAMPLE_SEED_HELP)


def kmeans_seed_option() -> Any:
    return typer.Option(0, "--kmeans-seed", help=KMEANS_SEED_HELP)


def bootstrap_seed_option() -> Any:
    return typer.Option(0, "--bootstrap-seed", "--ci-seed", help=BOOTSTRAP_SEED_HELP)


def resamples_option() -> Any:
    return typer.Option(1000, "--resamples", help=RESAMPLES_HELP)


def rerank_option() -> Any:
    return typer.Option(False, "--rerank", help=RERANK_HELP)


def rerank_k1_option() -> Any:
    return typer.Option(20, "--rerank-k1", help=RERANK_K1_HELP)


def rerank_k2_option() -> Any:
    return typer.Option(6, "--rerank-k2", help=RERANK_K2_HELP)


def rerank_lambda_option() -> Any:
    return typer.Option(0.3, "--rerank-lambda", help=RERANK_LAMBDA_HELP)


def top_k_option() -> Any:
    return typer.Option(10, "--top-k", min=1, help=TOP_K_HELP)


def dry_run_option() -> Any:
    return typer.Option(False, "--dry-run", help=DRY_RUN_HELP)


def device_option() -> Any:
    return typer.Option("auto", "--device", help=DEVICE_HELP)


def workers_option() -> Any:
    return typer.Option(2, "--workers", help=WORKERS_HELP)


def prefer_option() -> Any:
    return typer.Option("best", "--prefer", help=PREFER_HELP)


def protocol_option() -> Any:
    return typer.Option("test", "--protocol", help=PROTOCOL_HELP)


def camera_rule_option() -> Any:
    return typer.Option("unique", "--camera-rule", help=CAMERA_RULE_HELP)


MODE_HELP = ("An evaluation name of the protocol (e.g. cc, sc, general), or a rule (general / cc / sc) applied to the "
             "selection's splits. Default: the selection.")


def mode_option() -> Any:
    return typer.Option(None, "--mode", help=MODE_HELP)


def far_option() -> Any:
    return typer.Option("0.01,0.001", "--far", help=FAR_HELP)


def unknown_fraction_option() -> Any:
    return typer.Option(0.5, "--unknown-fraction", help=UNKNOWN_FRACTION_HELP)


#: Names several commands declare with a meaning that depends on the command ("this command's output", "its dataset
#: root", ...): the same type everywhere, but their own help and default. Any other name declared by two commands
#: must come from one factory above (same help, same default); tests/test_cli_ux.py holds both rules.
CONTEXTUAL_OPTIONS = {
    "--out": "the command's output (a file or a folder, said in its help)",
    "--dataset": "the dataset the command reads (import-official: the one to record)",
    "--root": "the dataset root (or the root an output tree mirrors)",
    "--images": "a folder of images the command reads",
    "--split": "the split the command reads",
    "--config": "the YAML preset (train: any; train-teacher: the teacher recipe)",
    "--method": "the method of the model to build or import",
    "--num-ids": "train identities C (model-info: to build; import-official: to check)",
    "--pose-clusters": "pose clusters K (model-info: to build; import-official: to check)",
    "--k": "the K values of pose clustering",
    "--kind": "the pose vector kind",
    "--keypoints": "keypoints (AlphaPose tree / JSON)",
    "--levels": "severity levels (lq preview: to show; robustness: to evaluate)",
    "--quality-csv": "SynthCC's quality table (eval: clean / LQ rows; buckets: the buckets)",
    "--workers": "parallel workers (loader workers; synth: processes)",
    "--resume": "continue unfinished runs",
    "--overwrite": "move earlier output aside and start anew",
    "--skip-bad": "skip unparsable dataset files",
    "--flip": "flip-sum of embeddings (their defaults are being settled with the extraction defaults)",
    "--no-flip": "flip-sum of embeddings (their defaults are being settled with the extraction defaults)",
}
