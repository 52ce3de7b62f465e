"""The project's exception types. Every message names the file or value at fault and the fix."""

from __future__ import annotations


class RlqError(Exception):
    """Base class of every error rlq raises on purpose."""


class DatasetError(RlqError):
    """A dataset folder, file name, image or manifest is missing or malformed."""


class SideInputError(RlqError):
    """A side input (keypoints, parsing maps, gender / pose / faulty CSVs) is missing or malformed."""


class ConfigError(RlqError):
    """A configuration file or override is invalid."""


class CheckpointError(RlqError):
    """A checkpoint or feature file is missing, torn, or unsafe to load."""


class TrainingError(RlqError):
    """Training cannot continue (non-finite loss, impossible setting, ...)."""


class RankFailure(RlqError):
    """A step failed on some rank of a torchrun job; raised on every rank so none waits for the others."""


def root_message(exc: BaseException) -> str:
    """The message of the error that started it all: for an error re-raised from a DataLoader worker (whose
    text is a worker traceback ending in the original ``Type: message``), that original message."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    for name in (f"{type(exc).__module__}.{type(exc).__qualname__}: ", f"{type(exc).__name__}: "):
        i = text.rfind(name)
        if i >= 0:
            return text[i + len(name):].strip()
    return text
