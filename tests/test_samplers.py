"""PK sampler invariants (docs/method.md §3.2): 4 per identity, disjoint across replicas, reproducible per epoch."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rlq.data.samplers import PKSampler, aug_seed, pk_epoch_indices


def _pids(n_ids=10, seed=0):
    rng = random.Random(seed)
    out = []
    for p in range(n_ids):
        out += [p] * rng.randint(1, 13)  # some identities have fewer than 4 images
    rng.shuffle(out)
    return out


def _reference(pids, k, seed, epoch, world, rank):
    """Independent re-statement of §3.2 steps 1-5."""
    rng = random.Random(seed + epoch)
    groups = {}
    for i, p in enumerate(pids):
        groups.setdefault(p, []).append(i)
    chunks = []
    for p in sorted(groups):
        idx = list(groups[p])
        if len(idx) < k:
            idx = [rng.choice(idx) for _ in range(k)]
        rng.shuffle(idx)
        chunks += [idx[j : j + k] for j in range(0, len(idx) - k + 1, k)]
    rng.shuffle(chunks)
    chunks = chunks[: len(chunks) // world * world]
    return [i for c in chunks[rank::world] for i in c]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_matches_reference_and_groups_of_four(world):
    pids = _pids()
    for epoch in range(3):
        for r in range(world):
            got = pk_epoch_indices(pids, 4, seed=7, epoch=epoch, world_size=world, rank=r)
            assert got == _reference(pids, 4, 7, epoch, world, r)
            assert len(got) % 4 == 0
            for j in range(0, len(got), 4):
                assert len({pids[i] for i in got[j : j + 4]}) == 1  # each chunk is one identity


def test_replicas_disjoint_chunks_and_equal_length():
    pids = list(range(40)) * 4  # every identity exactly 4 images: chunks are unique
    a = pk_epoch_indices(pids, 4, 1, 0, world_size=2, rank=0)
    b = pk_epoch_indices(pids, 4, 1, 0, world_size=2, rank=1)
    assert len(a) == len(b)
    assert not set(a) & set(b)
    assert sorted(a + b) == list(range(len(pids)))


def test_reproducible_per_epoch_and_changes_across_epochs():
    pids = _pids()
    s = PKSampler(pids, batch_size=8, seed=3)
    s.set_epoch(2)
    first = list(s)
    s.set_epoch(2)
    assert list(s) == first
    s.set_epoch(3)
    assert [i for i, _ in s] != [i for i, _ in first]
    assert len(first) % 8 == 0


def test_resume_start_batch_gives_the_same_tail_with_the_same_seeds():
    pids = _pids()
    s = PKSampler(pids, batch_size=8, seed=3)
    s.set_epoch(1)
    full = list(s)
    s.set_epoch(1, start_batch=2)
    assert list(s) == full[16:]
    assert len(s) == len(full) - 16


def test_batch_must_be_multiple_of_instances():
    with pytest.raises(ValueError, match="multiple"):
        PKSampler([0, 1], batch_size=6, num_instances=4)


def test_external_order_fixed_without_reshuffle_and_fraction():
    pids = [p for p in range(20) for _ in range(10)]
    s = PKSampler(pids, batch_size=8, seed=0, reshuffle=False)
    s.set_epoch(0)
    e0 = [i for i, _ in s]
    s.set_epoch(5)
    assert [i for i, _ in s] == e0  # `official`: identical order every epoch (docs/method.md §5.1)
    f = PKSampler(pids, batch_size=8, seed=0, fraction=0.4, fraction_mode="fixed")
    f.set_epoch(0)
    sub0 = {i for i, _ in f}
    f.set_epoch(1)
    sub1 = {i for i, _ in f}
    per_id = Counter(pids[i] for i in f._subset())
    assert set(per_id.values()) == {4}  # floor(10 * 0.4) per identity
    assert set(f._subset()) >= sub0 | sub1
    g = PKSampler(pids, batch_size=8, seed=0, fraction=0.4, fraction_mode="per_epoch")
    g.set_epoch(0)
    a = set(g._subset())
    g.set_epoch(1)
    assert set(g._subset()) != a


def test_aug_seed_depends_on_every_component():
    base = aug_seed(1, 2, 0, 5)
    assert aug_seed(1, 2, 0, 5) == base
    assert len({base, aug_seed(2, 2, 0, 5), aug_seed(1, 3, 0, 5), aug_seed(1, 2, 1, 5), aug_seed(1, 2, 0, 6),
                aug_seed(1, None, 0, 5), aug_seed(1, 2, 0, 5, stream=1)}) == 7


def test_fraction_by_image_and_unlabeled_stream():
    pids = list(range(50))  # an unlabeled folder: every image its own identity
    s = PKSampler(pids, batch_size=5, num_instances=1, seed=0, fraction=0.2, fraction_by="image")
    s.set_epoch(0)
    got = [i for i, _ in s]
    assert len(got) == 10 and len(set(got)) == 10  # floor(50 * 0.2) distinct images, no resampling
    full = PKSampler(pids, batch_size=5, num_instances=1, seed=0)
    full.set_epoch(0)
    assert sorted(i for i, _ in full) == pids
