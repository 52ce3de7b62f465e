"""Run folders: a run never silently overwrites, restarts or mixes with another one.

A folder that already holds files is refused unless the caller says what to do with it:

- ``resume``: continue the run from its newest good checkpoint (an error when there is none);
- ``overwrite``: move the old folder aside to ``<name>.old-<UTC timestamp>`` with one atomic rename
  (nothing is deleted; remove the old folder yourself when you no longer need it), then start anew.

The folder is created only when training is about to start (after the data and model are validated),
and if this invocation created it and training fails before its first step, it is removed again (and a
folder moved aside by ``overwrite`` is put back), so a failed start leaves the disk as it was.

One process at a time: a claimed folder is locked (an OS file lock on ``<folder>/.rlq.lock``, which names the
holder's PID; the OS drops it when the process ends, however it ends). A second ``train``, ``--resume``,
``--overwrite`` or ``rlq demo`` on a locked folder is refused with the holder's PID, before any work.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: folders are not locked
    fcntl = None  # type: ignore[assignment] - None where the module does not exist

from ..errors import ConfigError
from ..io import aside_name

__all__ = ["RunFolderError", "RunFolder", "FolderLock", "LOCK_NAME", "check_run_folder", "claim_run_folder",
           "folder_holds_files", "lock_folder", "lock_holder"]

#: The lock file inside a claimed folder (never counted as a file the folder "holds").
LOCK_NAME = ".rlq.lock"

log = logging.getLogger(__name__)


class RunFolderError(ConfigError):
    """The output folder holds another run (or, with resume, no resumable one)."""


def folder_holds_files(path: Path) -> bool:
    """True when ``path`` exists and is not an empty folder (its lock file aside)."""
    if not path.exists():
        return False
    if not path.is_dir():
        return True
    return any(c.name != LOCK_NAME for c in path.iterdir())


class FolderLock:
    """An exclusive OS lock (``flock``) on ``<folder>/.rlq.lock``, held until :meth:`release` or process exit."""

    def __init__(self, folder: Path, fd: int | None) -> None:
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # no stale PID left behind
            except OSError:
                pass
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _describe_holder(lock_file: Path) -> str:
    try:
        text = lock_file.read_text(encoding="utf-8", errors="replace").split("\n")[0].strip()
    except OSError:
        text = ""
    return text or "unknown PID"


def lock_holder(folder: str | os.PathLike) -> str | None:
    """Who holds ``folder``'s lock (``"PID 1234 on host: rlq train"``), or None when nobody does. Creates nothing."""
    f = Path(folder) / LOCK_NAME
    if fcntl is None or not f.is_file():
        return None
    try:
        fd = os.open(f, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe_holder(f)
    finally:
        os.close(fd)
    return None


def _in_use(folder: Path, holder: str) -> RunFolderError:
    return RunFolderError(f"{folder} is in use by another rlq process ({holder}); wait for it to finish or stop it, "
                          "or choose another `output=`")


def lock_folder(folder: str | os.PathLike, what: str = "rlq") -> FolderLock:
    """Take ``folder``'s lock (the folder must exist); :class:`RunFolderError` naming the holder when another
    process has it. ``what`` is recorded for the message another process would get (e.g. ``rlq train``)."""
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover
        return FolderLock(folder, None)
    f = folder / LOCK_NAME
    try:
        fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunFolderError(f"cannot create the lock file {f}: {e.strerror or e}; choose another `output=`") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _in_use(folder, _describe_holder(f)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}: {what}\n".encode())
    return FolderLock(folder, fd)


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
    holder = lock_holder(p) if p.is_dir() else None
    if holder is not None:
        raise _in_use(p, holder)
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
            "(Python: run_training(spec, resume=True) / run_training(spec, overwrite=True)), or choose another `output=`"
        )


@dataclass
class RunFolder:
    """A claimed run folder: what this invocation did to it, so that a failed start can be undone."""

    path: Path
    mode: str  # new, resume or overwrite
    created: bool = False
    moved_aside: Path | None = None
    was_empty: bool = False  # an existing empty folder: on failure it is emptied again, not removed
    lock: FolderLock | None = None  # held from the claim until release() (or the process ends)

    def release(self) -> None:
        """Drop the folder's lock (the run is over); the lock file stays, empty of meaning."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def resume(self) -> bool:
        return self.mode == "resume"

    def abandon(self) -> None:
        """Undo the claim after a failure before the first step: remove the folder this invocation created
        and put back the one it moved aside. A resumed (pre-existing) folder is never touched."""
        try:
            self._undo()
        finally:
            self.release()

    def _undo(self) -> None:
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


def claim_run_folder(path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                     what: str = "rlq train") -> RunFolder:
    """Check ``path`` as :func:`check_run_folder` does, then make it ready and lock it: move an old run aside
    (``overwrite``, only when no process holds it) and create the folder. Returns what was done (see
    :meth:`RunFolder.abandon`); the lock is held until :meth:`RunFolder.release` or the process ends."""
    p = Path(path)
    check_run_folder(p, resume=resume, overwrite=overwrite)
    claim = RunFolder(p, _mode(resume, overwrite))
    if claim.mode == "resume":
        claim.lock = lock_folder(p, f"{what} --resume")
        return claim
    if claim.mode == "overwrite" and folder_holds_files(p):
        old_lock = lock_folder(p, f"{what} --overwrite")  # refused while another process uses the old run
        try:
            aside = aside_name(p)
            os.replace(p, aside)  # one atomic rename: the old run is kept whole under its new name
        finally:
            old_lock.release()
        claim.moved_aside = aside
        log.warning("--overwrite: moved the earlier run %s aside to %s", p, aside)
    if not p.is_dir():
        try:
            p.mkdir(parents=True)
        except FileExistsError:
            pass  # another process made it a moment ago: the lock below decides
        except OSError as e:
            if claim.moved_aside is not None:
                os.replace(claim.moved_aside, p)
            raise ConfigError(f"cannot create the output folder {p}: {e.strerror or e}; choose another `output=`") from None
        else:
            claim.created = True
    if not claim.created:
        claim.was_empty = True
    try:
        claim.lock = lock_folder(p, what)
        if folder_holds_files(p):  # another process claimed, used and released it between our check and our lock
            raise RunFolderError(f"the output folder {p} was filled by another process while this one started; "
                                 "pass --resume to continue it, or choose another `output=`")
    except BaseException:
        if claim.lock is not None:
            claim.release()
        elif claim.created:
            shutil.rmtree(p, ignore_errors=True)
            claim.created = False
        if claim.moved_aside is not None and not p.exists():
            os.replace(claim.moved_aside, p)
        raise
    return claim
