"""The TAD external stream: the `official` per-epoch RNG quirk, identity-folder datasets and the authors'
percent-of-identities sampler (docs/method.md §5.1, §6)."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from rlq.data.loading import ExternalSet
from rlq.data.records import Sample
from rlq.data.samplers import PKSampler
from rlq.engine.build import LQDraw, identity_folder_samples
from rlq.errors import ConfigError
from rlq.lq.mix import ARTIFACT_CODES, mix_for_dataset

H, W = 32, 16


def _images(tmp_path, n_ids=6, per_id=4):
    rng = np.random.default_rng(0)
    out = []
    for p in range(n_ids):
        for j in range(per_id):
            path = tmp_path / f"{p}_{j}.png"
            Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(path)
            out.append(Sample(str(path), p, 0, p, path.stem))
    return out


def _epoch_items(samples, reseed: bool, epoch: int):
    sampler = PKSampler([s.pid for s in samples], batch_size=8, seed=3, reshuffle=False, reseed_aug_each_epoch=reseed,
                        stream=1)
    ds = ExternalSet(samples, H, W, (40, 20), LQDraw(mix_for_dataset("ltcc"), "official"))
    sampler.set_epoch(epoch)
    return [ds[item] for item in sampler]


def test_official_quirk_repeats_python_rng_draws_but_not_flips_and_sigma(tmp_path):
    samples = _images(tmp_path) * 8  # 192 items: enough defocus draws and flips to see them change
    e0, e1 = _epoch_items(samples, False, 0), _epoch_items(samples, False, 1)
    assert [a["index"] for a in e0] == [b["index"] for b in e1]  # official order: the same every epoch
    flips_differ = sigma_differs = 0
    defocus = ARTIFACT_CODES["defocus"]
    for a, b in zip(e0, e1):
        # repeat every epoch: crop, erasing, LQ choice and LQ parameters (the code's Python `random` draws)
        assert np.array_equal(a["lq_crop"], b["lq_crop"])
        assert np.array_equal(a["hq_erase"], b["hq_erase"]) and np.array_equal(a["lq_erase"], b["lq_erase"])
        assert a["lq_artifact"] == b["lq_artifact"]
        assert a["lq_params"][0] == b["lq_params"][0]
        if a["lq_artifact"] != defocus:
            assert np.array_equal(a["lq_params"], b["lq_params"])
        else:
            sigma_differs += a["lq_params"][1] != b["lq_params"][1]
        # the HQ crop repeats too: the HQ views are equal, or mirror images when only the flip changed
        same = np.array_equal(a["hq"], b["hq"])
        assert same or np.array_equal(a["hq"], b["hq"][:, :, ::-1])
        flips_differ += (not same) + (a["lq_flip"] != b["lq_flip"])
    # flips and the Gaussian sigma come from torch's RNG in the code: not forced equal across epochs
    assert flips_differ > 0 and sigma_differs > 0


def test_proper_seeding_changes_every_draw_across_epochs(tmp_path):
    samples = _images(tmp_path) * 4
    e0, e1 = _epoch_items(samples, True, 0), _epoch_items(samples, True, 1)
    assert [a["index"] for a in e0] == [b["index"] for b in e1]  # reshuffle=False keeps the order
    assert any(not np.array_equal(a["lq_crop"], b["lq_crop"]) for a, b in zip(e0, e1))
    assert any(a["lq_artifact"] != b["lq_artifact"] for a, b in zip(e0, e1))
    # and within one epoch the draws are a pure function of the seed
    again = _epoch_items(samples, True, 1)
    assert all(np.array_equal(a["hq"], b["hq"]) and np.array_equal(a["lq_params"], b["lq_params"]) for a, b in zip(e1, again))


# -- identity folders (paper Table 8, NTU) ---------------------------------------------------------------------
def _identity_tree(root, counts):
    for name, n in counts.items():
        d = root / name / "cam0"
        d.mkdir(parents=True)
        for j in range(n):
            Image.new("RGB", (8, 16), (j * 20 % 256, 0, 0)).save(d / f"img{j}.jpg")


def test_identity_folders_become_identities_sampled_pk(tmp_path):
    counts = {"p07": 6, "p01": 3, "p03": 9, "p05": 4}
    _identity_tree(tmp_path, counts)
    (tmp_path / "empty_id").mkdir()
    samples = identity_folder_samples(tmp_path)
    assert len(samples) == sum(counts.values())
    by_id = Counter(s.meta["raw_pid"] for s in samples)
    assert by_id == Counter(counts)
    # identities numbered 0.. in sorted folder order, each sample's pid naming its folder
    assert {s.meta["raw_pid"]: s.pid for s in samples} == {"p01": 0, "p03": 1, "p05": 2, "p07": 3}
    assert all(f"/{s.meta['raw_pid']}/" in s.path for s in samples)
    sampler = PKSampler([s.pid for s in samples], batch_size=4, num_instances=2, seed=0)
    sampler.set_epoch(0)
    idx = [i for i, _ in sampler]
    chunks = [idx[j : j + 2] for j in range(0, len(idx), 2)]
    assert chunks and all(samples[a].pid == samples[b].pid for a, b in chunks)  # P x K over identities


def test_identity_folders_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        identity_folder_samples(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    with pytest.raises(ConfigError, match="identity_folders"):
        identity_folder_samples(tmp_path)


# -- the authors' percent-of-identities sampler (`--sampling`) -------------------------------------------------
def _pids():
    rng = random.Random(1)
    return [p for p in range(50) for _ in range(rng.randint(2, 12))]


@pytest.mark.parametrize("world", [1, 2])
def test_percent_of_identities_sampler(world):
    pids, k, frac = _pids(), 4, 0.2
    sizes = Counter(pids)
    n_keep = math.floor(50 * frac)
    # the epoch holds as many chunks as the n_keep identities with the fewest images would give (the code's quirk)
    smallest = sorted(sizes.values())[:n_keep]
    cap = sum(max(n, k) // k for n in smallest) // world * k
    seen = []
    for rank in range(world):
        s = PKSampler(pids, batch_size=4, num_instances=k, seed=2, world_size=world, rank=rank, fraction=frac,
                      fraction_by="identities", fraction_mode="per_epoch")
        s.set_epoch(0)
        got = [i for i, _ in s]
        assert len(got) == cap - cap % 4
        ids = {pids[i] for i in got}
        assert len(ids) <= n_keep
        assert set(s._subset()) == {i for i, p in enumerate(pids) if p in {pids[j] for j in s._subset()}}  # whole ids
        assert len({pids[i] for i in s._subset()}) == n_keep
        seen.append((rank, ids))
        s.set_epoch(1)
        assert {pids[i] for i in s._subset()} != {pids[i] for i in PKSampler(
            pids, 4, k, seed=2, fraction=frac, fraction_by="identities", fraction_mode="per_epoch")._subset()}
    fixed = PKSampler(pids, 4, k, seed=2, fraction=frac, fraction_by="identities", fraction_mode="fixed")
    fixed.set_epoch(0)
    a = fixed._subset()
    fixed.set_epoch(7)
    assert fixed._subset() == a  # `fixed`: one subset of identities for the whole run


def test_run_spec_builds_an_identity_folder_stream(tmp_path):
    from types import SimpleNamespace

    from rlq.engine.build import external_loader
    from rlq.runtime.distributed import DistInfo
    from rlq.spec import RunSpec, TADSpec

    _identity_tree(tmp_path, {"a": 5, "b": 4, "c": 8})
    spec = RunSpec(method="tad", tad=TADSpec(external_dataset="identity_folders", external_root=str(tmp_path),
                                             external_batch_size=4, external_num_instances=2, source_height=16,
                                             source_width=8))
    loader = external_loader(spec, SimpleNamespace(info={}), DistInfo(), None)
    assert {s.pid for s in loader.dataset.samples} == {0, 1, 2}
    assert loader.sampler.num_instances == 2 and loader.batch_size == 4
    loader.sampler.set_epoch(0)
    idx = [i for i, _ in loader.sampler]
    pids = [loader.dataset.samples[i].pid for i in idx]
    assert all(pids[j] == pids[j + 1] for j in range(0, len(pids), 2))


def test_bad_fraction_options_are_config_errors():
    from rlq.engine.validate import validate_spec
    from rlq.spec import RunSpec, TADSpec

    with pytest.raises(ConfigError, match="tad.fraction_by"):
        validate_spec(RunSpec(method="tad", tad=TADSpec(fraction_by="ids")))
    with pytest.raises(ConfigError, match="tad.fraction_mode"):
        validate_spec(RunSpec(method="rlq", tad=TADSpec(fraction_mode="sometimes")))
    with pytest.raises(ConfigError, match=r"tad.fraction=0"):
        validate_spec(RunSpec(method="tad", tad=TADSpec(fraction=0.0)))
