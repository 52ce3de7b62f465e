"""Evaluation and extraction sharded over ranks (torchrun / gloo on CPU) against a single-process run.

Shards are contiguous blocks of whole batches (``rlq.runtime.distributed.shard_bounds``), so each rank forms exactly
the batches one process would: features are compared bitwise, metrics and per-query results exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cli_helpers import run_cli
from rlq.errors import ConfigError
from rlq.runtime.distributed import (
    DistInfo,
    RankFailure,
    check_all_ranks,
    dist_timeout_min,
    gather_rows,
    shard_bounds,
    sync_buffers,
)

gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                          reason="torch.distributed gloo backend unavailable")
H, W = 64, 32
WORLD = 2


# -- one process ------------------------------------------------------------------------------------------------
def test_shard_bounds_partition_whole_batches():
    """Brute force: the shards tile range(n) in rank order, start on batch boundaries, and the longest holds
    ceil(batches / world) batches."""
    for n in range(0, 30):
        for world in range(1, 5):
            for bs in range(1, 7):
                bounds = [shard_bounds(n, world, r, bs) for r in range(world)]
                rows = [i for a, b in bounds for i in range(a, b)]
                assert rows == list(range(n)), (n, world, bs)
                assert all(a % bs == 0 or a == n for a, _ in bounds)
                batches = -(-n // bs)
                longest = max(-(-(b - a) // bs) for a, b in bounds)
                assert longest == -(-batches // world), (n, world, bs, bounds)
    assert shard_bounds(10, 2, 0, 3) == (0, 6) and shard_bounds(10, 2, 1, 3) == (6, 10)
    assert shard_bounds(2, 2, 1, 3) == (2, 2)  # one batch: rank 1 has nothing
    with pytest.raises(ValueError):
        shard_bounds(5, 2, 2, 1)


def test_helpers_without_process_group():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert gather_rows(x, None) is x and gather_rows(x, DistInfo()) is x
    check_all_ranks(None, "step", DistInfo())
    err = ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        check_all_ranks(err, "step", None)
    with pytest.raises(RuntimeError, match="not initialised"):
        gather_rows(x, DistInfo(0, 2, 0))


def test_dist_timeout_setting(monkeypatch):
    monkeypatch.delenv("RLQ_DIST_TIMEOUT_MIN", raising=False)
    assert dist_timeout_min() == 60.0
    monkeypatch.setenv("RLQ_DIST_TIMEOUT_MIN", "150")
    assert dist_timeout_min() == 150.0
    assert dist_timeout_min(5) == 5.0  # the config key wins over the environment
    monkeypatch.setenv("RLQ_DIST_TIMEOUT_MIN", "soon")
    with pytest.raises(ConfigError, match="RLQ_DIST_TIMEOUT_MIN"):
        dist_timeout_min()
    with pytest.raises(ConfigError, match="dist_timeout_min"):
        dist_timeout_min(0)
    from rlq.engine.validate import validate_spec
    from rlq.spec import RunSpec

    spec = RunSpec()
    spec.train.dist_timeout_min = -1.0
    with pytest.raises(ConfigError, match="train.dist_timeout_min"):
        validate_spec(spec)


# -- two gloo processes, library level --------------------------------------------------------------------------
def _tiny_model(seed: int = 3):
    from rlq.models import build_model

    m = build_model(method="bm", num_ids=5, backbone="tiny", pretrained="none", seed=seed)
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():  # non-trivial BN statistics, so eval-mode BN matters
        if isinstance(mod, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
            mod.running_var.copy_(1 + 0.2 * torch.rand(mod.running_var.shape, generator=g))
    return m.eval()


def _shift_by_index(img: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """An index-dependent batch transform: equal results need the global image index on every rank."""
    return (img.int() + (idx % 7).view(-1, 1, 1, 1) * 9).clamp(0, 255).to(torch.uint8)


class _FailOn(torch.nn.Module):
    """Wraps a model; ``embed`` raises on one rank (deterministic fault injection)."""

    def __init__(self, model, rank: int, fail_rank: int):
        super().__init__()
        self.model, self.rank, self.fail_rank = model, rank, fail_rank

    def embed(self, x, flip=True):
        if self.rank == self.fail_rank:
            raise OSError("injected read failure")
        return self.model.embed(x, flip=flip)


def _worker(rank: int, init_file: str, out_dir: str, paths: list[str]) -> None:
    from rlq.evaluation.extract import extract_features

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    world = DistInfo(rank, WORLD, rank)
    out: dict = {}
    try:
        # uneven shards, one of them empty, gathered in blocks of 2 rows
        local = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)[:5] if rank == 0 else np.zeros((0, 3), np.float32)
        out["gather_empty"] = gather_rows(local, world, chunk_rows=2)
        local = np.full((3 + rank, 2), rank, dtype=np.float64)
        out["gather_uneven"] = gather_rows(local, world, chunk_rows=2)
        # BN statistics differ per rank after DDP steps; sync_buffers makes them rank 0's
        bn = torch.nn.BatchNorm1d(4)
        bn.running_mean.fill_(float(rank + 1))
        sync_buffers(bn, world)
        out["bn_mean"] = bn.running_mean.clone()
        # sharded extraction vs this process alone: 10 images, batches of 3 -> rows 0:6 and 6:10
        model = _tiny_model()
        common = dict(device="cpu", batch_size=3, workers=0, batch_transform=_shift_by_index)
        out["sharded"] = extract_features(model, paths, H, W, world=world, **common)
        out["single"] = extract_features(model, paths, H, W, **common)
        # a failure on rank 1 stops both ranks with a message naming rank 1
        try:
            extract_features(_FailOn(model, rank, 1), paths, H, W, world=world, **common)
            out["failure"] = None
        except RankFailure as e:
            out["failure"] = str(e)
        # the same check in training-time evaluation's shape: rank 0 fails after the gather
        try:
            check_all_ranks(KeyError("metric") if rank == 0 else None, "evaluation after epoch 3", world)
            out["failure0"] = None
        except RankFailure as e:
            out["failure0"] = str(e)
        # still in step afterwards: a collective completes
        out["after"] = gather_rows(np.full((1, 1), rank, np.float32), world)
    finally:
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
        dist.destroy_process_group()


@gloo
def test_two_ranks_library(synthcc_tiny, tmp_path):
    from rlq.data.datasets import load_dataset

    paths = [s.path for s in load_dataset("synthcc", synthcc_tiny).split("gallery")[:10]]
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), paths), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    full = np.arange(15, dtype=np.float32).reshape(5, 3)
    for r, o in enumerate(res):
        np.testing.assert_array_equal(o["gather_empty"], full)
        np.testing.assert_array_equal(o["gather_uneven"], np.array([[0.0] * 2] * 3 + [[1.0] * 2] * 4))
        assert torch.equal(o["bn_mean"], torch.ones(4))
        assert o["sharded"].shape == (10, o["single"].shape[1])
        assert o["sharded"].tobytes() == o["single"].tobytes(), f"rank {r}: sharded features differ"
        assert "failed on rank 1 of 2" in o["failure"] and f"this is rank {r}" in o["failure"]
        assert ("injected read failure" in o["failure"]) == (r == 1)
        assert "evaluation after epoch 3 failed on rank 0 of 2" in o["failure0"]
        np.testing.assert_array_equal(o["after"], [[0.0], [1.0]])
    # the index-dependent transform changed the features: equality above needed the global indices
    from rlq.evaluation.extract import extract_features

    plain = extract_features(_tiny_model(), paths, H, W, device="cpu", batch_size=3, workers=0)
    assert not np.array_equal(plain, res[0]["single"])


# -- two gloo processes under torchrun, through the CLI ---------------------------------------------------------
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "rlq.cli", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from rlq.engine.model_io import save_model_checkpoint

    return save_model_checkpoint(_tiny_model(), tmp_path_factory.mktemp("ck") / "model", input_size=(H, W))


@gloo
@pytest.mark.slow
def test_torchrun_extract_and_eval_match_one_process(synthcc_tiny, checkpoint, tmp_path, one_thread):
    from rlq.evaluation.bootstrap import load_per_query
    from rlq.evaluation.protocols import load_features

    # 12 queries, 52 gallery images, batches of 5: rank 0 rows 0:10 / 0:30, rank 1 rows 10:12 / 30:52
    data = ["--dataset", "synthcc", "--root", str(synthcc_tiny), "--batch-size", "5", "--workers", "0", "--device", "cpu"]
    p = _torchrun("extract", str(checkpoint), "--out", str(tmp_path / "ddp.npz"), *data)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (p.stdout + p.stderr).count("wrote ") == 1  # rank 0 alone writes and reports
    assert run_cli(["extract", str(checkpoint), "--out", str(tmp_path / "one.npz"), *data]) == 0
    (fa, la), (fb, lb) = load_features(tmp_path / "ddp.npz"), load_features(tmp_path / "one.npz")
    assert set(fa) == set(fb) == set(la) == {"query", "gallery"}
    for split in ("query", "gallery"):
        assert fa[split].shape[0] == {"query": 12, "gallery": 52}[split]
        assert fa[split].tobytes() == fb[split].tobytes(), split
        for k in ("pids", "camids", "clothes_ids", "keys", "paths"):
            np.testing.assert_array_equal(getattr(la[split], k), getattr(lb[split], k), err_msg=f"{split} {k}")

    ev = ["eval", str(checkpoint), *data, "--resamples", "50"]
    p = _torchrun(*ev, "--json", str(tmp_path / "ddp.json"), "--per-query", str(tmp_path / "ddp_pq.npz"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("checkpoint:") + p.stderr.count("checkpoint:") == 1
    assert run_cli([*ev, "--json", str(tmp_path / "one.json"), "--per-query", str(tmp_path / "one_pq.npz")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("ddp.json", "one.json"))
    assert a["results"] == b["results"] and a["results"]
    pa, pb = load_per_query(tmp_path / "ddp_pq.npz"), load_per_query(tmp_path / "one_pq.npz")
    assert set(pa) == set(pb)
    for name in pa:
        for field in ("keys", "ap", "hit", "valid"):
            np.testing.assert_array_equal(getattr(pa[name], field), getattr(pb[name], field))


@gloo
@pytest.mark.slow
def test_torchrun_eval_failure_on_one_rank_stops_all(synthcc_tiny, checkpoint, tmp_path):
    """A corrupt image in rank 1's shard (the last gallery image): both ranks stop with a message naming rank 1."""
    from rlq.data.datasets import load_dataset

    root = tmp_path / "synthcc"
    shutil.copytree(synthcc_tiny, root)
    last = Path(load_dataset("synthcc", root).split("gallery")[-1].path)
    last.write_bytes(b"not an image")
    p = _torchrun("eval", str(checkpoint), "--dataset", "synthcc", "--root", str(root), "--batch-size", "5",
                  "--workers", "0", "--device", "cpu", "--json", str(tmp_path / "r.json"))
    assert p.returncode != 0
    text = p.stdout + p.stderr
    assert "failed on rank 1 of 2 (this is rank 0)" in text, text[-3000:]
    assert "failed on rank 1 of 2 (this is rank 1)" in text and last.name in text, text[-3000:]
    assert not (tmp_path / "r.json").exists()


@gloo
@pytest.mark.slow
def test_torchrun_training_evaluation_matches_one_process(synthcc_tiny, tmp_path, one_thread):
    """Training-time evaluation under DDP (sharded) gives the metrics a one-process `rlq eval` of the last
    checkpoint gives (same batches: eval.batch_size)."""
    from rlq.evaluation.bootstrap import load_per_query

    run = tmp_path / "ddp"
    p = _torchrun("train", "method=bm", "data.dataset=synthcc", f"data.root={synthcc_tiny}", f"output={run}",
                  "data.height=64", "data.width=32", "data.batch_size=4", "data.num_instances=2", "data.workers=0",
                  "model.backbone=tiny", "model.pretrained=none", "train.epochs=1", "train.max_steps_per_epoch=2",
                  "train.progress=false", "train.tensorboard=false", "eval.workers=0", "eval.batch_size=5",
                  "eval.bootstrap_resamples=50", "train.dist_timeout_min=30")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "collective timeout 30 min" in p.stderr
    last = json.loads((run / "results.json").read_text())["test@last"]
    assert run_cli(["eval", str(run), "--prefer", "last", "--dataset", "synthcc", "--root", str(synthcc_tiny),
                     "--batch-size", "5", "--workers", "0", "--device", "cpu", "--resamples", "50",
                     "--json", str(tmp_path / "one.json"), "--per-query", str(tmp_path / "one_pq.npz")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())["results"]
    for name, r in last["results"].items():
        for k in ("rank1", "mAP", "rank1_ci", "mAP_ci"):
            assert one[name][k] == r[k], (name, k)
    pa = load_per_query(run / "per_query" / f"test_epoch{last['epoch']:04d}.npz")
    pb = load_per_query(tmp_path / "one_pq.npz")
    for name in pa:
        np.testing.assert_array_equal(pa[name].ap, pb[name].ap)


# -- one GPU, NCCL ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()),
                    reason="needs a CUDA GPU and the nccl backend")
def test_nccl_one_process_runs_the_collective_paths(tmp_path):
    """One GPU can hold only one NCCL rank, so this runs the sharded code paths on a 1-rank NCCL group (a world
    marked multi-rank; tensors on the GPU for every collective) against the plain single-process results."""
    from dataclasses import dataclass

    from PIL import Image

    import rlq.runtime.distributed as rd
    from rlq.evaluation.extract import extract_features

    @dataclass(frozen=True)
    class Forced(DistInfo):
        @property
        def enabled(self) -> bool:
            return True

    rng = np.random.default_rng(0)
    paths = []
    for i in range(23):
        p = tmp_path / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (80, 40, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        world = Forced(0, 1, 0)
        assert rd._comm_device().type == "cuda"
        model = _tiny_model().cuda()
        for amp in (None, torch.bfloat16):
            common = dict(device="cuda", batch_size=5, workers=0, amp_dtype=amp, batch_transform=_shift_by_index)
            a = extract_features(model, paths, H, W, world=world, **common)
            b = extract_features(model, paths, H, W, **common)
            assert a.shape == (23, b.shape[1]) and a.tobytes() == b.tobytes()
        x = rng.normal(size=(11, 3)).astype(np.float32)
        np.testing.assert_array_equal(gather_rows(x, world, chunk_rows=4), x)
        bn = torch.nn.BatchNorm1d(3).cuda()
        sync_buffers(bn, world)
        check_all_ranks(None, "step", world)
        with pytest.raises(RankFailure, match="step failed on rank 0 of 1"):
            check_all_ranks(OSError("x"), "step", world)
    finally:
        dist.destroy_process_group()


def test_one_named_gpu_under_torchrun_is_refused(monkeypatch):
    """torchrun with 2 processes and train.device=cuda:1 would put both ranks on GPU 1: refused before any
    process group or CUDA call, naming the fix."""
    from rlq.runtime.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        init_distributed("cuda:1")
