"""The parts of a training run built from its spec: the method's strategy (:func:`build_method`), the external TAD
stream (:func:`external_loader`, from a dataset, a folder of images or identity folders) and the per-image LQ draw
of the target dataset's mix (:func:`lq_draw`, docs/method.md §5.2)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import load_dataset
from ..data.loading import ExternalSet, ImageCache
from ..data.recolor import PALETTES, palette_for
from ..data.records import Dataset
from ..data.samplers import PKSampler
from ..errors import ConfigError
from ..methods.registry import get_method
from ..runtime.distributed import DistInfo
from ..spec import RunSpec
from .trainer import LoaderSpec
from .validate import dataset_options

__all__ = ["build_method", "palette_name", "external_loader", "identity_folder_samples", "folder_samples", "lq_draw",
           "LQDraw"]

log = logging.getLogger(__name__)


def build_method(spec: RunSpec, dataset: Dataset, teacher: torch.nn.Module | None):
    """The training strategy for ``spec.method``: its registry entry's strategy class, built from the run."""
    palette_size = len(PALETTES[palette_name(spec)]) if spec.data.recolor else None
    strategy = get_method(spec.method).strategy_class()
    return strategy.from_run(spec.method, spec, dataset, palette_size=palette_size, teacher=teacher)


def palette_name(spec: RunSpec) -> str:
    """The recolouring palette of the run: ``data.palette``, or the dataset's own for ``auto``."""
    return palette_for(spec.data.dataset) if spec.data.palette == "auto" else spec.data.palette


def external_loader(spec: RunSpec, dataset: Dataset, dist: DistInfo, cache: ImageCache | None) -> LoaderSpec:
    """The external HQ stream for TAD: Celeb-reID layout (or any supported dataset), or the target itself."""
    t = spec.tad
    if t.variant == "target_pairs":
        ext_samples = list(dataset.train)
    elif t.external_dataset in ("folder", "identity_folders"):
        ext_samples = folder_samples(t.external_root) if t.external_dataset == "folder" else identity_folder_samples(t.external_root)
        if cache is not None:
            cache.preload([s.path for s in ext_samples], progress=spec.train.progress and dist.is_main, desc="caching external images")
    else:
        ext = load_dataset(t.external_dataset, t.external_root, **dataset_options(t.external_dataset, spec.data.skip_bad))
        ext_samples = list(ext.train)
        if cache is not None:
            cache.preload([s.path for s in ext_samples], progress=spec.train.progress and dist.is_main, desc="caching external images")
    draw = lq_draw(spec, dataset)
    ds = ExternalSet(ext_samples, spec.data.height, spec.data.width, (t.source_height, t.source_width), draw,
                     aligned=t.aligned, cache=cache)
    # An unlabeled folder: every image is its own "identity", so the PK sampler degenerates to a shuffle.
    k = 1 if t.external_dataset == "folder" else t.external_num_instances
    sampler = PKSampler([s.pid for s in ext_samples], t.external_batch_size, k, seed=spec.train.seed,
                        world_size=dist.world_size, rank=dist.rank, reshuffle=t.reshuffle, fraction=t.fraction,
                        fraction_mode=t.fraction_mode, reseed_aug_each_epoch=t.reseed_aug, stream=1,
                        fraction_by="image" if t.external_dataset == "folder" else t.fraction_by)
    return LoaderSpec(ds, sampler, t.external_batch_size, spec.data.workers)


def identity_folder_samples(root: str | os.PathLike) -> list:
    """An external stream with identities (paper Table 8, NTU): one subfolder of ``root`` per identity, its images
    anywhere below it. Identities are numbered 0.. in sorted folder order; labels feed only the PK sampler."""
    from ..data.images import image_files
    from ..data.records import Sample

    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"tad.external_root {root} is not a folder (tad.external_dataset=identity_folders wants one "
                          "subfolder per identity)")
    out: list = []
    empty: list[str] = []
    for d in sorted(d for d in r.iterdir() if d.is_dir()):
        files = [Path(p) for p in image_files(d)]
        if not files:
            empty.append(d.name)
        pid = len(out) and out[-1].pid + 1
        out += [Sample(str(p), pid, 0, pid, p.relative_to(r).with_suffix("").as_posix(), {"raw_pid": d.name}) for p in files]
    if not out:
        raise ConfigError(f"no images in the identity subfolders of tad.external_root={root}; "
                          "tad.external_dataset=identity_folders wants ROOT/<identity>/<images>")
    if empty:
        log.warning("%d identity folder(s) under %s hold no images (e.g. %s); they are skipped", len(empty), root, empty[0])
    return out


def folder_samples(root: str | os.PathLike) -> list:
    """Every image under ``root`` (recursive, sorted) as an unlabeled sample (its own pid) for the TAD stream."""
    from ..data.images import image_files
    from ..data.records import Sample

    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"tad.external_root {root} is not a folder of images")
    paths = [Path(p) for p in image_files(r)]
    if not paths:
        raise ConfigError(f"no images (.jpg/.png/.bmp/.webp) under tad.external_root={root}")
    return [Sample(str(p), i, 0, i, p.relative_to(r).with_suffix("").as_posix()) for i, p in enumerate(paths)]


def lq_draw(spec: RunSpec, dataset: Dataset | None = None) -> LQDraw:
    """The per-image LQ draw of the target dataset's mix (docs/method.md §5.2) with the spec's ranges; a manifest's
    ``lq_mix`` (its protocol YAML) is used when the spec says ``auto``."""
    from ..lq.mix import LQMix, mix_for_dataset

    t = spec.tad
    custom = (dataset.info or {}).get("lq_mix") if dataset is not None else None
    if t.lq_mix == "auto" and isinstance(custom, dict):
        bad = sorted(set(custom) - {"pixelation", "motion", "defocus"})
        if bad:
            raise ConfigError(f"the manifest's lq_mix has unknown artifact(s) {bad}; use pixelation, motion and defocus")
        return LQDraw(LQMix.from_probs(**{k: float(v) for k, v in custom.items()}, name="manifest"), t.lq_ranges)
    return LQDraw(mix_for_dataset(spec.data.dataset if t.lq_mix == "auto" else t.lq_mix), t.lq_ranges)


class LQDraw:
    """Picklable per-image LQ draw for loader workers."""

    def __init__(self, mix, ranges: str) -> None:
        self.mix, self.ranges = mix, ranges

    def __call__(self, rng: np.random.Generator, sigma_rng: np.random.Generator | None = None):
        from ..lq.mix import draw_lq

        return draw_lq(rng, self.mix, self.ranges, sigma_rng=sigma_rng)
