"""Loader workers are capped at the CPUs the process may use: asking for more starts no extra processes (torch warns
they may run slowly or freeze) and changes no feature."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from rlq.data.loading import usable_workers


def test_usable_workers_caps_at_the_affinity():
    cpus = len(os.sched_getaffinity(0))
    assert usable_workers(0) == 0 and usable_workers(1) == 1
    assert usable_workers(cpus + 7) == cpus and usable_workers(10_000) == cpus


def test_extraction_with_too_many_workers_warns_nothing_and_equals_no_workers(synthcc_tiny, one_thread):
    from rlq.data.datasets import load_dataset
    from rlq.evaluation.extract import extract_features
    from rlq.models import build_model

    paths = [s.path for s in load_dataset("synthcc", synthcc_tiny).split("query")][:6]
    torch.manual_seed(0)
    model = build_model(method="bm", num_ids=8, backbone="tiny", pretrained="none").eval()
    ref = extract_features(model, paths, 64, 32, device="cpu", batch_size=4, workers=0, flip=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "This DataLoader will create N worker processes" would raise here
        many = extract_features(model, paths, 64, 32, device="cpu", batch_size=4, workers=64, flip=False, progress=False)
    np.testing.assert_array_equal(ref, many)
