"""The run specification moved to :mod:`rlq.spec` (below the methods, which read it; docs/design.md "Layers").
This module keeps ``from rlq.engine.spec import RunSpec`` working for code written against the old path."""

from .. import spec as _spec

__all__ = list(_spec.__all__)
globals().update({name: getattr(_spec, name) for name in __all__})
