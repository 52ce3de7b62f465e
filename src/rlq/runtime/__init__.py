"""The runtime layer: where and how tensors run, below data, evaluation, methods and engine (docs/design.md).

``device``: one :func:`~rlq.runtime.device.resolve_device` and one AMP rule
(:func:`~rlq.runtime.device.resolve_amp`) for training and inference; ``distributed``: the process group
and the collectives of sharded evaluation; ``meta``: the versions and git hash a run records. Nothing here
imports another rlq package but :mod:`rlq.errors`; the submodules are imported on use (``import rlq.runtime``
stays torch-free).
"""
