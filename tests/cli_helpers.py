"""Run the `rlq` CLI in-process from tests."""

from __future__ import annotations


def run_cli(args: list[str]) -> int:
    """``rlq ARGS`` in this process; the exit code (0 when the command returns normally)."""
    from rlq.cli import main  # rlq.cli registers every command module (search and export too)

    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0
