"""Identity (PK) sampling, DDP-aware and seeded per epoch (docs/method.md §3.2).

Every yielded item is ``(dataset_index, aug_seed)``: the augmentation seed is a pure function of
(seed, epoch, rank, position in the epoch), so a sample's augmentation does not depend on the number
of loader workers or on where a resumed run restarts. With ``reseed_aug_each_epoch=False`` (the
`official` external stream) items are ``(dataset_index, repeating_seed, per_epoch_seed)``: the first
seeds the draws that repeat every epoch, the second the flips and the Gaussian sigma (docs/method.md §6).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["pk_epoch_indices", "PKSampler", "SequentialSampler", "aug_seed", "FRACTION_BY", "FRACTION_MODES"]

#: How ``fraction`` < 1 subsamples a stream (docs/method.md §5.1): ⌊n_id·p⌋ images of every identity,
#: ⌊n·p⌋ of all images, or ⌊C·p⌋ whole identities (the authors' `--sampling` percent sampler).
FRACTION_BY = ("identity", "image", "identities")
#: The subsample is drawn once for the whole run or anew every epoch (docs/method.md §5.1).
FRACTION_MODES = ("fixed", "per_epoch")

_MASK63 = (1 << 63) - 1


def aug_seed(seed: int, epoch: int | None, rank: int, position: int, stream: int = 0) -> int:
    """A 63-bit seed for one sample's augmentation; ``epoch=None`` gives the same seed every epoch."""
    ss = np.random.SeedSequence([seed & _MASK63, 0 if epoch is None else epoch + 1, rank, position, stream], pool_size=4)
    return int(ss.generate_state(2, dtype=np.uint64)[0] & np.uint64(_MASK63))


def pk_epoch_indices(
    pids: Sequence[int], num_instances: int, seed: int, epoch: int, world_size: int = 1, rank: int = 0
) -> list[int]:
    """The indices replica ``rank`` visits in ``epoch`` (docs/method.md §3.2 steps 1-5)."""
    rng = random.Random(seed + epoch)  # §3.2: shuffle seed = seed + epoch, same on every replica
    by_pid: dict[int, list[int]] = {}
    for i, p in enumerate(pids):
        by_pid.setdefault(int(p), []).append(i)
    chunks: list[list[int]] = []
    for p in sorted(by_pid):
        idxs = list(by_pid[p])
        if len(idxs) < num_instances:  # step 1: resample with replacement up to num_instances
            idxs = [rng.choice(idxs) for _ in range(num_instances)]
        rng.shuffle(idxs)
        for s in range(0, len(idxs) - num_instances + 1, num_instances):  # step 2: drop the remainder
            chunks.append(idxs[s : s + num_instances])
    rng.shuffle(chunks)  # step 3
    chunks = chunks[: len(chunks) - len(chunks) % world_size]  # step 4
    mine = chunks[rank::world_size]  # step 5
    return [i for c in mine for i in c]


class PKSampler:
    """PK identity sampler for one replica; call :meth:`set_epoch` each epoch.

    ``batch_size`` is the per-replica number of sampled images B; the index list is cut to a
    multiple of B (``drop_last``). ``set_epoch(e, start_batch)`` skips batches already consumed
    (exact resume). For an external stream (docs/method.md §5.1): ``reshuffle=False`` reproduces the
    `official` order that never changes across epochs; ``fraction`` < 1 keeps ⌊n_id·p⌋ images per
    identity (or ⌊n·p⌋ of all images with ``fraction_by="image"``, or ⌊C·p⌋ whole identities with
    ``fraction_by="identities"``, the authors' `--sampling` percent sampler, whose epoch holds as many
    chunks as the ⌊C·p⌋ smallest identities give), ``fixed`` for the whole run or drawn ``per_epoch``.
    For an unlabeled stream give every image its own id and ``num_instances=1``.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int = 4,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
        reshuffle: bool = True,
        fraction: float = 1.0,
        fraction_mode: str = "fixed",
        reseed_aug_each_epoch: bool = True,
        stream: int = 0,
        fraction_by: str = "identity",
    ) -> None:
        if batch_size <= 0 or batch_size % num_instances:
            raise ValueError(f"batch size {batch_size} is not a positive multiple of instances per identity {num_instances}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if fraction_mode not in FRACTION_MODES:
            raise ValueError(f"fraction_mode must be 'fixed' or 'per_epoch', got {fraction_mode!r}")
        if fraction_by not in FRACTION_BY:
            raise ValueError(f"fraction_by must be one of {FRACTION_BY}, got {fraction_by!r}")
        self.fraction_by = fraction_by
        self.pids = [int(p) for p in pids]
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.reshuffle = reshuffle
        self.fraction = fraction
        self.fraction_mode = fraction_mode
        self.reseed_aug_each_epoch = reseed_aug_each_epoch
        self.stream = stream
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _by_pid(self) -> dict[int, list[int]]:
        by_pid: dict[int, list[int]] = {}
        for i, p in enumerate(self.pids):
            by_pid.setdefault(p, []).append(i)
        return by_pid

    def _subset(self) -> list[int]:
        if self.fraction >= 1.0:
            return list(range(len(self.pids)))
        rng = random.Random(self.seed if self.fraction_mode == "fixed" else self.seed + self.epoch)
        if self.fraction_by == "image":
            return sorted(rng.sample(range(len(self.pids)), int(len(self.pids) * self.fraction)))
        by_pid = self._by_pid()
        if self.fraction_by == "identities":  # the authors' `--sampling`: ⌊C·p⌋ whole identities
            chosen = rng.sample(sorted(by_pid), int(len(by_pid) * self.fraction))
            return sorted(i for p in chosen for i in by_pid[p])
        keep: list[int] = []
        for p in sorted(by_pid):
            idxs = by_pid[p]
            keep += rng.sample(idxs, int(len(idxs) * self.fraction))
        return sorted(keep)

    def _identities_cap(self) -> int:
        """The authors' percent sampler sizes its epoch by the ⌊C·p⌋ identities with the fewest images:
        that many chunks of ``num_instances`` (cut to a multiple of the world size), whichever identities
        were drawn."""
        k = self.num_instances
        sizes = sorted(len(v) for v in self._by_pid().values())[: int(len(self._by_pid()) * self.fraction)]
        chunks = sum(max(n, k) // k for n in sizes)
        return chunks // self.world_size * k

    def _indices(self) -> list[int]:
        sub = self._subset()
        order_epoch = self.epoch if self.reshuffle else 0
        local = pk_epoch_indices([self.pids[i] for i in sub], self.num_instances, self.seed, order_epoch,
                                 self.world_size, self.rank)
        idx = [sub[i] for i in local]
        if self.fraction_by == "identities" and self.fraction < 1.0:
            idx = idx[: self._identities_cap()]
        return idx[: len(idx) - len(idx) % self.batch_size]

    def num_batches(self) -> int:
        return len(self._indices()) // self.batch_size

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start_batch * self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        idx = self._indices()
        start = self.start_batch * self.batch_size
        if self.reseed_aug_each_epoch:
            for pos in range(start, len(idx)):
                yield idx[pos], aug_seed(self.seed, self.epoch, self.rank, pos, self.stream)
            return
        # The `official` quirk (docs/method.md §6): the draws the authors' code takes from Python's `random`
        # (crop, erasing, LQ choice and parameters) repeat every epoch, so they get a seed without the epoch;
        # the draws from torch's RNG (flips, the Gaussian sigma) do not repeat: a second, per-epoch seed.
        for pos in range(start, len(idx)):
            yield (idx[pos], aug_seed(self.seed, None, self.rank, pos, self.stream),
                   aug_seed(self.seed, self.epoch, self.rank, pos, self.stream))


class SequentialSampler:
    """All indices in order (evaluation / extraction); items carry a dummy seed for a uniform dataset API."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((i, 0) for i in range(self.n))
