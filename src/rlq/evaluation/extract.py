"""Feature extraction with the §2.5 inference feature (flip-sum, one global L2 normalisation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..runtime.device import autocast_context

__all__ = ["extract_features", "extract_protocol_features", "autocast_context"]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    paths: Sequence[str],
    height: int,
    width: int,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int = 2,
    flip: bool = True,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "extracting",
    cache=None,
    batch_transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    image_transform: Callable | None = None,
    world=None,
) -> np.ndarray:
    """L2-normalised float32 features (N, D) of the images at ``paths``, in order.

    ``model`` must have ``embed(x, flip)`` taking 0-1 RGB (a ReIDModel); it is put in eval mode and
    restored afterwards. ``batch_transform(images_uint8 (N,3,H,W), indices (N,)) -> uint8 images`` is
    applied to each resized batch before the model (e.g. a seeded degradation for robustness analysis);
    ``image_transform(pil_image, index) -> pil_image`` to each original-resolution image before the resize
    (the authors' LQ test protocol).

    ``world`` (a :class:`rlq.runtime.distributed.DistInfo`) shards the extraction over the ranks of the initialised
    process group: every rank must call this with the same arguments; each extracts a contiguous, batch-aligned
    block of ``paths`` (:func:`~rlq.runtime.distributed.shard_bounds`, the same batches a single process forms, with
    the same global indices for the transforms) and every rank returns all N rows in order. A failure on any rank
    raises :class:`~rlq.runtime.distributed.RankFailure` on all of them. ``None`` or one rank: a single process.
    """
    from ..runtime.distributed import check_all_ranks, gather_rows, shard_bounds

    if world is None or not world.enabled:
        return _extract(model, paths, height, width, device=device, batch_size=batch_size, workers=workers, flip=flip,
                        amp_dtype=amp_dtype, channels_last=channels_last, progress=progress, desc=desc, cache=cache,
                        batch_transform=batch_transform, image_transform=image_transform)
    rows = shard_bounds(len(paths), world.world_size, world.rank, batch_size)
    local, error = None, None
    try:
        local = _extract(model, paths, height, width, device=device, batch_size=batch_size, workers=workers, flip=flip,
                         amp_dtype=amp_dtype, channels_last=channels_last, progress=progress and world.is_main,
                         desc=desc, cache=cache, batch_transform=batch_transform, image_transform=image_transform,
                         rows=rows)
    except Exception as e:  # noqa: BLE001 - reported on every rank by check_all_ranks
        error = e
    check_all_ranks(error, f"feature extraction ({desc}, rows {rows[0]}:{rows[1]} of {len(paths)} on this rank)", world)
    return gather_rows(local, world)


def extract_protocol_features(
    model: nn.Module,
    dataset: Any,
    protocol: Any = "test",
    *,
    splits: Sequence[str] | None = None,
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int = 2,
    flip: bool = True,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "extract {split}",
    cache=None,
    batch_transform_for: Callable[[str], Callable | None] | None = None,
    image_transform_for: Callable[[str], Callable | None] | None = None,
    world=None,
) -> dict[str, tuple[np.ndarray, Sequence[Any]]]:
    """``{split: (features, samples)}`` for every split of a dataset's protocol (the input of
    :func:`rlq.evaluation.protocols.evaluate_protocol`), each split through :func:`extract_features`.

    ``protocol`` is a :class:`~rlq.data.records.Protocol` or the name of one of ``dataset.protocols``; ``splits``
    (default: the protocol's ``split_names``) picks which splits, in that order (then ``protocol`` is not read). ``batch_transform_for(split)`` and
    ``image_transform_for(split)`` give that split's ``batch_transform`` / ``image_transform`` (None: none), e.g. a
    degradation seeded per split. ``desc`` is the progress label, ``{split}`` filled in. Every other argument goes
    to :func:`extract_features` (with ``world``, every rank must call this and gets every row)."""
    if splits is None:
        splits = (dataset.protocols[protocol] if isinstance(protocol, str) else protocol).split_names
    out: dict[str, tuple[np.ndarray, Sequence[Any]]] = {}
    for split in splits:
        samples = dataset.split(split)
        out[split] = (extract_features(
            model, [s.path for s in samples], height, width, device=device, batch_size=batch_size, workers=workers,
            flip=flip, amp_dtype=amp_dtype, progress=progress, desc=desc.format(split=split), cache=cache,
            batch_transform=batch_transform_for(split) if batch_transform_for is not None else None,
            image_transform=image_transform_for(split) if image_transform_for is not None else None, world=world,
        ), samples)
    return out


def _extract(model, paths, height, width, *, device, batch_size, workers, flip, amp_dtype, channels_last, progress, desc,
             cache, batch_transform, image_transform, rows: tuple[int, int] | None = None) -> np.ndarray:
    """One process: rows ``rows`` (default all) of ``paths``; transforms see indices into the whole ``paths``."""
    from tqdm.auto import tqdm

    from ..data.loading import EvalSet, usable_workers

    device = torch.device(device)
    was_training = model.training
    model.eval()
    ds = EvalSet(paths, height, width, cache=cache, image_transform=image_transform)
    if rows is not None:
        ds = Subset(ds, range(*rows))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=usable_workers(workers),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    out = np.zeros((len(ds), getattr(model, "embed_dim", 0) or 1), dtype=np.float32)
    feats_list = []
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
            img = batch["img"]
            if batch_transform is not None:
                img = batch_transform(img, batch["index"])
            x = img.to(device, non_blocking=True).float().div_(255.0)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp_dtype):
                f = model.embed(x, flip=flip)
            feats_list.append(f.float().cpu().numpy())
    finally:
        model.train(was_training)
    if feats_list:
        out = np.concatenate(feats_list, axis=0)
    else:
        out = out[:0]
    return out
