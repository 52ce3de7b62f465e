"""The `rlq` command line: thin Typer commands that parse arguments, call the library and print.

Each area registers its commands in its own module (``rlq.cli.<area>``); this module assembles them.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from ..errors import RlqError, root_message
from ._common import VERBOSE, app, console

# Command modules register themselves on `app` when imported.
from . import data as _data  # noqa: F401,E402
from . import train as _train  # noqa: F401,E402
from . import attributes as _attributes  # noqa: F401,E402
from . import demo as _demo  # noqa: F401,E402
from . import estimate as _estimate  # noqa: F401,E402
from . import analysis as _analysis  # noqa: F401,E402
from . import deploy as _deploy  # noqa: F401,E402
from . import compare as _compare  # noqa: F401,E402
from . import official as _official  # noqa: F401,E402

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning rlq errors into one clear line and exit code 2."""
    try:
        app(args=argv, prog_name="rlq")
    except RlqError as e:
        # the root cause first (an error from a loader worker carries the worker's traceback in its text)
        console.print(f"[bold red]error:[/bold red] {escape(root_message(e))}", highlight=False, soft_wrap=True)
        if VERBOSE["on"]:
            import traceback

            console.print(escape("".join(traceback.format_exception(e))), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
