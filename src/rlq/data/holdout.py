"""An identity-disjoint validation hold-out carved from the train split (docs/method.md §7 `default`).

LTCC and PRCC have no retrieval validation set, so `test@best_val` needs an opt-in, seeded hold-out
of train identities; it shrinks the train set. Each held-out identity contributes one query image per
camera (in a seeded order) and the rest of its images to the gallery.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from ..errors import ConfigError
from .records import Dataset, EvalSpec, Protocol, Sample

__all__ = ["identity_holdout"]


def identity_holdout(dataset: Dataset, num_ids: int, seed: int = 0) -> Dataset:
    """A copy of ``dataset`` with ``num_ids`` train identities moved to ``val_query``/``val_gallery``."""
    pids = sorted({s.pid for s in dataset.train})
    if not 0 < num_ids < len(pids) - 1:
        raise ConfigError(f"data.val_holdout_ids={num_ids} must be between 1 and {len(pids) - 2} for {dataset.name}")
    if "val" in dataset.protocols:
        raise ConfigError(f"{dataset.name} has its own validation split; data.val_holdout_ids is for LTCC/PRCC-like data")
    rng = random.Random(seed)
    held = set(rng.sample(pids, num_ids))
    kept_pids = [p for p in pids if p not in held]
    new_pid = {p: i for i, p in enumerate(kept_pids)}
    kept_clothes = sorted({s.clothes_id for s in dataset.train if s.pid not in held})
    new_clo = {c: i for i, c in enumerate(kept_clothes)}
    train = tuple(dataclasses.replace(s, pid=new_pid[s.pid], clothes_id=new_clo[s.clothes_id])
                  for s in dataset.train if s.pid not in held)
    p2c = np.zeros((len(kept_pids), len(kept_clothes)), dtype=bool)
    for s in train:
        p2c[s.pid, s.clothes_id] = True
    query: list[Sample] = []
    gallery: list[Sample] = []
    for p in sorted(held):
        items = [s for s in dataset.train if s.pid == p]
        rng.shuffle(items)
        seen_cams: set[int] = set()
        for s in items:
            (gallery if s.camid in seen_cams else query).append(s)
            seen_cams.add(s.camid)
    order = {s.path: i for i, s in enumerate(dataset.train)}
    query.sort(key=lambda s: order[s.path])
    gallery.sort(key=lambda s: order[s.path])
    test = dataset.protocols["test"]
    val = Protocol(tuple(EvalSpec(sp.name, "val_query", "val_gallery", sp.mode) for sp in test.specs
                         if sp.query == test.specs[0].query),
                   test.selection if any(sp.name == test.selection and sp.query == test.specs[0].query for sp in test.specs)
                   else test.specs[0].name,
                   notes=f"identity hold-out of {num_ids} train identities (seed {seed}); one query per camera")
    splits = {**dataset.splits, "train": train, "val_query": tuple(query), "val_gallery": tuple(gallery)}
    return dataclasses.replace(
        dataset, splits=splits, protocols={**dataset.protocols, "val": val}, num_train_pids=len(kept_pids),
        num_train_clothes=len(kept_clothes), pid2clothes=p2c,
        train_pid_names=tuple(dataset.train_pid_names[p] for p in kept_pids) if dataset.train_pid_names else (),
        train_clothes_names=tuple(dataset.train_clothes_names[c] for c in kept_clothes) if dataset.train_clothes_names else (),
        info={**dict(dataset.info), "val_holdout": {"num_ids": num_ids, "seed": seed, "held_out": sorted(held)}},
    )
