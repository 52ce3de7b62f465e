"""Shared fixtures: one SynthCC `tiny` dataset per test session (generated in a few seconds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/dataset_trees.py and friends

# Keep test processes from oversubscribing the 2 CI cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def synthcc_tiny(tmp_path_factory) -> Path:
    """Path of a SynthCC `tiny` dataset (seed 0) with pose clusters written next to it."""
    from rlq.attributes.pose_io import cluster_dataset_poses
    from rlq.data.datasets import load_dataset
    from rlq.data.synth import generate_synthcc

    root = tmp_path_factory.mktemp("synthcc") / "synthcc"
    generate_synthcc(root, preset="tiny", seed=0, workers=0)
    ds = load_dataset("synthcc", root)
    cluster_dataset_poses(root, ds.train, root / "poses", root / "pose_clusters.csv", ks=(15,), seed=0)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on shared CI cores: one intra-op thread avoids OpenMP oversubscription stalls (restored after)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
