"""Run folders: a run never silently overwrites, restarts or mixes with another one.

A folder that already holds files is refused unless the caller says what to do with it:

- ``resume``: continue the run from its newest good checkpoint (an error when there is none);
- ``overwrite``: move the old folder aside to ``<name>.old-<UTC timestamp>`` with one atomic rename
  (nothing is deleted; remove the old folder yourself when you no longer need it), then start anew.

The folder is created only when training is about to start (after the data and model are validated),
and if this invocation created it and training fails before its first step, it is removed again (and a
folder moved aside by ``overwrite`` is put back), so a failed start leaves the disk as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["RunFolderError", "RunFolder", "check_run_folder", "claim_run_folder", "folder_holds_files"]

log = logging.getLogger(__name__)


class RunFolderError(ConfigError):
    """The output folder holds another run (or, with resume, no resumable one)."""


def folder_holds_files(path: Path) -> bool:
    """True when ``path`` exists and is not an empty folder."""
    if not path.exists():
        return False
    if not path.is_dir():
        return True
    return any(path.iterdir())


def _mode(resume: bool, overwrite: bool) -> str:
    if resume and overwrite:
        raise ConfigError("choose one of --resume (continue the run) and --overwrite (start anew), not both")
    return "resume" if resume else "overwrite" if overwrite else "new"


def check_run_folder(path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse early (without touching the disk) what :func:`claim_run_folder` would refuse."""
    p = Path(path)
    mode = _mode(resume, overwrite)
    if p.exists() and not p.is_dir():
        raise RunFolderError(f"the output {p} is a file, not a folder; choose another `output=`")
    if mode == "resume":
        from .checkpoint import CheckpointManager

        if not p.is_dir():
            raise RunFolderError(f"--resume: the run folder {p} does not exist; drop --resume to start a new run there")
        if CheckpointManager(p, create=False).latest_good() is None:
            raise RunFolderError(
                f"--resume: {p} holds no resumable checkpoint (checkpoints/ has no complete e*-s* folder); "
                "start it anew with --overwrite (the old folder is moved aside) or choose another `output=`"
            )
    elif mode == "new" and folder_holds_files(p):
        raise RunFolderError(
            f"the output folder {p} already holds a run (or other files); pass --resume to continue it, "
            f"or --overwrite to move it aside to {p.name}.old-<timestamp> and start anew "
            "(Python: Trainer.fit(resume=True) / Trainer.fit(overwrite=True)), or choose another `output=`"
        )


@dataclass
class RunFolder:
    """A claimed run folder: what this invocation did to it, so that a failed start can be undone."""

    path: Path
    mode: str  # new, resume or overwrite
    created: bool = False
    moved_aside: Path | None = None
    was_empty: bool = False  # an existing empty folder: on failure it is emptied again, not removed

    @property
    def resume(self) -> bool:
        return self.mode == "resume"

    def abandon(self) -> None:
        """Undo the claim after a failure before the first step: remove the folder this invocation created
        and put back the one it moved aside. A resumed (pre-existing) folder is never touched."""
        if self.was_empty:
            for child in list(self.path.iterdir()):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
            log.info("training failed before its first step: emptied %s again", self.path)
            self.was_empty = False
            return
        if not self.created:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if self.moved_aside is not None and self.moved_aside.exists() and not self.path.exists():
            os.replace(self.moved_aside, self.path)
            log.info("training failed before its first step: moved %s back to %s", self.moved_aside, self.path)
        else:
            log.info("training failed before its first step: removed the new run folder %s", self.path)
        self.created = False


def _aside_name(p: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    cand = p.with_name(f"{p.name}.old-{stamp}")
    i = 1
    while cand.exists():
        cand = p.with_name(f"{p.name}.old-{stamp}-{i}")
        i += 1
    return cand


def claim_run_folder(path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> RunFolder:
    """Check ``path`` as :func:`check_run_folder` does, then make it ready: move an old run aside
    (``overwrite``) and create the folder. Returns what was done (see :meth:`RunFolder.abandon`)."""
    p = Path(path)
    check_run_folder(p, resume=resume, overwrite=overwrite)
    claim = RunFolder(p, _mode(resume, overwrite))
    if claim.mode == "resume":
        return claim
    if claim.mode == "overwrite" and folder_holds_files(p):
        aside = _aside_name(p)
        os.replace(p, aside)  # one atomic rename: the old run is kept whole under its new name
        claim.moved_aside = aside
        log.warning("--overwrite: moved the earlier run %s aside to %s", p, aside)
    if not p.is_dir():
        try:
            p.mkdir(parents=True)
        except OSError as e:
            if claim.moved_aside is not None:
                os.replace(claim.moved_aside, p)
            raise ConfigError(f"cannot create the output folder {p}: {e.strerror or e}; choose another `output=`") from None
        claim.created = True
    else:
        claim.was_empty = True
    return claim
