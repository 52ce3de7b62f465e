"""The run specification moved to :mod:`rlq.spec` (below the methods, which read it; docs/design.md "Layers").
This module keeps ``from rlq.engine.spec import RunSpec`` working for code written against the old path."""

from ..spec import *  # noqa: F403 - the old import path, re-exported whole
from ..spec import __all__  # noqa: F401
