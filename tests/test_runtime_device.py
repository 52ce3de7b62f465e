"""The runtime layer's one device rule and one AMP rule (docs/design.md "The runtime layer"), shared by training,
the training-time evaluator and FeatureExtractor."""

from __future__ import annotations

import pytest
import torch

from rlq.errors import ConfigError
from rlq.runtime.device import (
    AMP_DTYPES,
    AMP_MODES,
    amp_mode,
    autocast_context,
    precision_name,
    resolve_amp,
    resolve_device,
)

CPU = torch.device("cpu")


def test_amp_rule_on_the_cpu():
    # auto is fp32 on the CPU; an explicit mode is honoured there (the trainer's behaviour, now the extractor's too)
    assert [amp_mode(m, CPU) for m in AMP_MODES] == ["off", "off", "bf16", "fp16"]
    assert [resolve_amp(m, CPU) for m in AMP_MODES] == [None, None, torch.bfloat16, torch.float16]
    assert AMP_MODES == ("auto", *AMP_DTYPES)
    with pytest.raises(ConfigError, match="amp must be one of"):
        amp_mode("fp8", CPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_rule_on_cuda():
    gpu = resolve_device("cuda")
    auto = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert [amp_mode(m, gpu) for m in AMP_MODES] == [auto, "off", "bf16", "fp16"]


def test_precision_names_and_autocast():
    assert [precision_name(resolve_amp(m, CPU)) for m in ("off", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with autocast_context(CPU, None):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")


def test_resolve_device():
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == CPU
    if torch.cuda.is_available():
        for d in (None, "auto", "cuda", torch.device("cuda")):
            assert resolve_device(d).type == "cuda" and resolve_device(d).index is not None
        assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    else:
        assert resolve_device(None) == resolve_device("auto") == resolve_device("auto", local_rank=1) == CPU
        for d in ("cuda", "cuda:1", torch.device("cuda")):
            with pytest.raises(ConfigError, match="CUDA is not available"):
                resolve_device(d)


def test_one_rule_everywhere():
    """The trainer, the recipe, the evaluator, the extractor and the old engine path share these objects."""
    import rlq.deploy.extractor as ex
    import rlq.engine.distributed as old
    import rlq.engine.evaluate as evaluate
    import rlq.engine.model_io as model_io
    import rlq.engine.recipe as recipe
    import rlq.engine.trainer as trainer
    import rlq.evaluation.extract as ev
    import rlq.runtime.device as dev
    import rlq.runtime.distributed as rd

    assert recipe.amp_mode is dev.amp_mode is model_io.amp_mode and evaluate.precision_name is dev.precision_name
    assert trainer.AMP_DTYPES is dev.AMP_DTYPES and ex.AMP_MODES is dev.AMP_MODES
    assert ex.resolve_amp is dev.resolve_amp and ex.resolve_device is dev.resolve_device is old.resolve_device
    assert ev.autocast_context is dev.autocast_context
    assert all(getattr(old, n) is getattr(rd, n) for n in rd.__all__)


def test_resolve_device_picks_this_process_gpu(monkeypatch):
    """With CUDA (faked here: only the choice is tested, nothing runs on a GPU): auto and an unindexed cuda
    name this process's GPU with its index, LOCAL_RANK's when given (torchrun), else the current device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    for d in (None, "auto", "cuda", torch.device("cuda")):
        assert resolve_device(d) == torch.device("cuda", 2)
        assert resolve_device(d, local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda", 3) and resolve_device("cpu", 1) == CPU
