"""Shared CLI objects: the Typer app, the console, logging set-up."""

from __future__ import annotations

import logging

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
console = Console(stderr=True)
out = Console()


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages.")) -> None:
    """rlq: clothes-changing person re-identification robust to low-quality images."""
    setup_logging(verbose)


def setup_logging(verbose: bool = False) -> None:
    """Route library logging to a rich handler on stderr."""
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
