"""The `rlq` command line: thin Typer commands that parse arguments, call the library and print.

Each area registers its commands in its own module (``rlq.cli.<area>``); this module assembles them.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from ..errors import RlqError, root_message
from ._common import VERBOSE, app, console

# Command modules register themselves on `app` when imported; this order is the order of `rlq --help`.
# isort: off
from . import data as _data  # noqa: F401 - registers its commands
from . import train as _train  # noqa: F401 - registers its commands
from . import attributes as _attributes  # noqa: F401 - registers its commands
from . import demo as _demo  # noqa: F401 - registers its commands
from . import estimate as _estimate  # noqa: F401 - registers its commands
from . import analysis as _analysis  # noqa: F401 - registers its commands
from . import deploy as _deploy  # noqa: F401 - registers its commands
from . import compare as _compare  # noqa: F401 - registers its commands
from . import official as _official  # noqa: F401 - registers its commands
# isort: on

__all__ = ["app", "main"]


def _bare_json(args: list[str]) -> list[str]:
    """``--json`` with no path (last, or followed by another option) means ``--json -`` (JSON to stdout): the old
    flag spelling of `model-info` and `import-official` keeps working."""
    fixed: list[str] = []
    for i, a in enumerate(args):
        fixed.append(a)
        if a == "--json" and (i + 1 == len(args) or (args[i + 1].startswith("-") and args[i + 1] != "-")):
            fixed.append("-")
    return fixed


def _usage_fix(e: Exception) -> str:
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else "rlq"
    return f"see `{path} -h`"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning rlq errors into one clear line and exit code 2.

    Every error reads ``error: <cause>; <fix>`` on stderr (usage errors too: click's exit code 2 is kept)."""
    import typer
    import typer.main
    from typer import _click

    args = _bare_json(sys.argv[1:] if argv is None else list(argv))
    try:
        try:
            rv = typer.main.get_command(app).main(args=args, prog_name="rlq", standalone_mode=False)
        except _click.exceptions.ClickException as e:
            msg = " ".join(e.format_message().split()).rstrip(".")
            if msg.startswith("Invalid value: "):  # typer.BadParameter raised by a command, not tied to an option
                msg = msg[len("Invalid value: "):]
            console.print(f"[bold red]error:[/bold red] {escape(msg)}; {escape(_usage_fix(e))}", highlight=False,
                          soft_wrap=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            console.print("[yellow]aborted[/yellow]")
            sys.exit(1)
        # as click's standalone mode: always leave through SystemExit (typer.Exit(code) returns its code here)
        sys.exit(rv if isinstance(rv, int) else 0)
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
    except OSError as e:
        full = disk_full_error(e)
        if full is None:
            raise
        # A full disk (or quota) is the machine's state, not a bug: one line naming the folder and what to do.
        # Every file is written atomically (docs/design.md), so the last good checkpoint is intact.
        args = sys.argv[1:] if argv is None else list(argv)
        console.print(f"[bold red]error:[/bold red] {escape(disk_full_message(full, 'train' in args))}", highlight=False,
                      soft_wrap=True)
        if VERBOSE["on"]:
            import traceback

            console.print(escape("".join(traceback.format_exception(e))), highlight=False, soft_wrap=True)
        sys.exit(2)


def disk_full_error(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT OSError behind ``exc`` (itself or a cause in its chain), else None."""
    import errno

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__ or e.__context__
    return None


def disk_full_message(e: OSError, training: bool) -> str:
    """``disk full writing PATH: free space on MOUNT, then ...``: the file, the file system to clear, the next step."""
    import errno
    import os

    what = "disk quota exceeded" if e.errno == errno.EDQUOT else "disk full"
    path = os.path.abspath(os.fsdecode(e.filename)) if e.filename is not None else None
    mount = None
    if path is not None:
        mount = path
        while not os.path.ismount(mount) and os.path.dirname(mount) != mount:
            mount = os.path.dirname(mount)
    where = f"{what} writing {path}" if path else what
    space = f"free space on {mount}" if mount else "free disk space"
    then = ("then resume with the same `rlq train` command plus --resume (the last good checkpoint is intact)" if training
            else "then run the command again")
    return f"{where}: {space}, {then}"


if __name__ == "__main__":  # pragma: no cover
    main()
