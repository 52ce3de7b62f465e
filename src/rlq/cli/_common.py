"""Shared CLI objects: the Typer app, the console, logging set-up."""

from __future__ import annotations

import logging
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
    context_settings={"help_option_names": ["-h", "--help"]},
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
console = Console(stderr=True)
out = Console()


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
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(console=console, show_path=False, show_time=False, markup=False))
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
    (``rlq.engine.recipe.run_eval_settings``, docs/method.md §2.5)."""
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

