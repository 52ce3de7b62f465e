"""torch Datasets for training, evaluation and the external TAD stream.

Items are requested as ``(index, aug_seed)`` pairs (see :mod:`rlq.data.samplers`), so augmentation
is a pure function of the sample and its seed. Images leave the loader as uint8; erasing, recolouring
and LQ synthesis happen batched on the device (:mod:`rlq.data.batch_ops`, :mod:`rlq.lq`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from .images import read_image
from .recolor import draw_recolor, synthetic_label
from .records import Sample
from .transforms import apply_geo, draw_erase_box, draw_geo_params, resize_for_test, to_chw_uint8

__all__ = ["ImageCache", "TrainSet", "EvalSet", "ExternalSet", "PathSet", "usable_workers"]


def usable_workers(requested: int) -> int:
    """Loader worker processes to start for ``requested``: at most the CPUs this process may use. More only
    compete for the same cores (torch warns that the loader may run slowly or freeze). Which worker decodes an
    image changes nothing in the batches (every sample's augmentation has its own seed), so the data are the same."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(0, min(int(requested), cpus))

log = logging.getLogger(__name__)

_NO_BOX = np.array([-1, -1, 0, 0], dtype=np.int64)


class ImageCache:
    """Optional in-memory store of decoded images (and parsing maps), filled once in the main process
    before loader workers fork, so small datasets (the SynthCC demo) are decoded only once."""

    def __init__(self) -> None:
        self._images: dict[str, Image.Image] = {}
        self._labels: dict[str, Image.Image] = {}

    def preload(self, paths: Sequence[str], progress: bool = False, desc: str = "caching images",
                parsing_paths: Sequence[str | None] | None = None) -> None:
        """Decode ``paths`` (and the matching parsing maps, when given) into memory."""
        from tqdm.auto import tqdm

        parsing = parsing_paths if parsing_paths is not None else [None] * len(paths)
        for p, lp in tqdm(list(zip(paths, parsing)), desc=desc, disable=not progress, leave=False):
            if p not in self._images:
                img = read_image(p)
                img.load()
                self._images[p] = img
            if lp is not None and lp not in self._labels:
                self._labels[lp] = _read_labels(lp, self._images[p].size)

    def get(self, path: str) -> Image.Image:
        img = self._images.get(path)
        return img if img is not None else read_image(path)

    def get_labels(self, path: str, size: tuple[int, int]) -> Image.Image:
        lab = self._labels.get(path)
        return lab if lab is not None else _read_labels(path, size)


def _read_labels(path: str, size: tuple[int, int]) -> Image.Image:
    from .sidecars import read_parsing

    arr = read_parsing(path, expected_size=size)
    return Image.fromarray(arr, mode="L")


def _lq_ingredients(
    rng: np.random.Generator,
    img: Image.Image,
    height: int,
    width: int,
    source_size: tuple[int, int],
    draw_lq: Callable[..., tuple[int, np.ndarray]],
    geo=None,
    erase: np.ndarray | None = None,
    fresh_rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray | int | bool]:
    """What the device needs to make one LQ view: the source image at a fixed size, the LQ draw, and the
    view's own geometry and erase box (drawn here unless shared, e.g. the `aligned` ablation). ``fresh_rng``
    (when given) draws the flip and the Gaussian sigma, the draws that do not repeat in the `official` stream."""
    if geo is None:
        geo = draw_geo_params(rng, height, width, flip_rng=fresh_rng)
        erase = np.asarray(draw_erase_box(rng, height, width), np.int64)
    art, params = draw_lq(rng) if fresh_rng is None else draw_lq(rng, fresh_rng)
    src_h, src_w = source_size
    src = img if img.size == (src_w, src_h) else img.resize((src_w, src_h), Image.BILINEAR)
    return {
        "lq_src": to_chw_uint8(src),
        "lq_crop": np.asarray(geo.crop if geo.crop is not None else (-1, -1), np.int64),
        "lq_flip": geo.flip,
        "lq_erase": erase,
        "lq_artifact": int(art),
        "lq_params": np.asarray(params, np.float32),
    }


class TrainSet(TorchDataset):
    """Target-dataset train items: the augmented original plus (optionally) its recolour ingredients.

    Per item: ``img`` uint8 (3,H,W) after §3.1 geometry, ``erase`` box, labels ``pid``, ``camid``,
    ``clothes``, ``gender`` (-1 unknown), ``pose`` (0 null); with ``recolor``: ``copy_img`` and
    ``copy_labels`` (its own independent geometry, label map resized NEAREST), ``copy_erase``,
    palette colours, ``copy_faulty``, ``copy_enabled`` and the synthetic ``copy_clothes`` label.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        height: int,
        width: int,
        *,
        gender: np.ndarray | None = None,
        pose: np.ndarray | None = None,
        recolor: bool = False,
        parsing_paths: Sequence[str | None] | None = None,
        faulty: np.ndarray | None = None,
        palette: Sequence[tuple[int, int, int]] = (),
        num_real_clothes: int = 0,
        cache: ImageCache | None = None,
        lq_draw: Callable[[np.random.Generator], tuple[int, np.ndarray]] | None = None,
        lq_source_size: tuple[int, int] = (256, 128),
    ) -> None:
        self.samples = list(samples)
        self.h, self.w = height, width
        self.lq_draw, self.lq_source_size = lq_draw, lq_source_size
        n = len(self.samples)
        self.gender = np.full(n, -1, np.int64) if gender is None else np.asarray(gender, np.int64)
        self.pose = np.zeros(n, np.int64) if pose is None else np.asarray(pose, np.int64)
        self.recolor = recolor
        if recolor:
            if parsing_paths is None or len(parsing_paths) != n:
                raise ValueError("recolor=True needs one parsing-map path (or None) per sample")
            if not palette:
                raise ValueError("recolor=True needs a palette")
        self.parsing_paths = list(parsing_paths) if parsing_paths is not None else [None] * n
        self.faulty = np.zeros(n, bool) if faulty is None else np.asarray(faulty, bool)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        self.num_real_clothes = num_real_clothes
        self.cache = cache or ImageCache()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, ...]) -> dict[str, np.ndarray | int]:
        idx, seed = item[0], item[1]
        s = self.samples[idx]
        rng = np.random.default_rng(seed)
        img = self.cache.get(s.path)
        geo = draw_geo_params(rng, self.h, self.w)
        out: dict[str, np.ndarray | int] = {
            "img": to_chw_uint8(apply_geo(img, self.h, self.w, geo)),
            "erase": np.asarray(draw_erase_box(rng, self.h, self.w), np.int64),
            "pid": s.pid,
            "camid": s.camid,
            "clothes": s.clothes_id,
            "gender": int(self.gender[idx]),
            "pose": int(self.pose[idx]),
            "index": idx,
        }
        if self.recolor:
            # §3.3 step 4: the copy gets its own, independent train transform.
            cgeo = draw_geo_params(rng, self.h, self.w)
            ppath = self.parsing_paths[idx]
            if ppath is not None:
                labels = self.cache.get_labels(ppath, img.size)
                out["copy_labels"] = np.array(apply_geo(labels, self.h, self.w, cgeo, Image.NEAREST), np.uint8)
            else:  # lenient mode: an unmodified copy keeping the real clothes label (§3.3 options)
                out["copy_labels"] = np.zeros((self.h, self.w), np.uint8)
            faulty = bool(self.faulty[idx])
            i_lower, i_upper = draw_recolor(rng, faulty, len(self.palette))
            out["copy_img"] = to_chw_uint8(apply_geo(img, self.h, self.w, cgeo))
            out["copy_erase"] = np.asarray(draw_erase_box(rng, self.h, self.w), np.int64)
            out["copy_upper"] = self.palette[i_upper]
            out["copy_lower"] = self.palette[i_lower]
            out["copy_faulty"] = faulty
            out["copy_enabled"] = ppath is not None
            out["copy_clothes"] = (
                synthetic_label(self.num_real_clothes, s.pid, i_lower, i_upper, len(self.palette))
                if ppath is not None
                else s.clothes_id
            )
        if self.lq_draw is not None:  # Table 7 "BM + LQ Aug.": an extra LQ view with the real clothes label
            out.update(_lq_ingredients(rng, img, self.h, self.w, self.lq_source_size, self.lq_draw))
        return out


class EvalSet(TorchDataset):
    """Test-transform items (§2.5 step 1): uint8 (3,H,W) resized image and its index.

    ``image_transform(img, index) -> img`` (optional) runs on the original-resolution image before the resize,
    e.g. the authors' LQ test protocol (:class:`rlq.lq.official_test.OfficialLQTransform`)."""

    def __init__(self, paths: Sequence[str], height: int, width: int, cache: ImageCache | None = None,
                 image_transform: Callable[[Image.Image, int], Image.Image] | None = None) -> None:
        self.paths = list(paths)
        self.h, self.w = height, width
        self.cache = cache or ImageCache()
        self.image_transform = image_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, np.ndarray | int]:
        idx = item[0] if isinstance(item, tuple) else item
        img = self.cache.get(self.paths[idx])
        if self.image_transform is not None:
            img = self.image_transform(img, idx)
        return {"img": to_chw_uint8(resize_for_test(img, self.h, self.w)), "index": idx}


def PathSet(paths: Sequence[str], height: int, width: int) -> EvalSet:
    """Evaluation items for an arbitrary list of image paths."""
    return EvalSet(paths, height, width)


class ExternalSet(TorchDataset):
    """External HQ stream for TAD (docs/method.md §5): the HQ view plus the ingredients of its LQ view.

    Per item: ``hq`` uint8 (3,H,W) after §3.1 geometry and its ``hq_erase`` box; ``lq_src`` the
    original resized to ``source_size`` (h, w) (identity for Celeb-reID's 256x128 images), the LQ
    view's own independent geometry (``lq_crop``, ``lq_flip``) and ``lq_erase``, and the LQ draw
    (``lq_artifact`` code, ``lq_params``) from ``draw_lq(rng)``. With ``aligned`` the LQ view shares
    the HQ view's crop, flip and erase box (ablation). Labels are returned only for the PK sampler's sake.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        height: int,
        width: int,
        source_size: tuple[int, int],
        draw_lq: Callable[[np.random.Generator], tuple[int, np.ndarray]],
        aligned: bool = False,
        cache: ImageCache | None = None,
    ) -> None:
        self.samples = list(samples)
        self.h, self.w = height, width
        self.src_h, self.src_w = source_size
        self.draw_lq = draw_lq
        self.aligned = aligned
        self.cache = cache or ImageCache()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, ...]) -> dict[str, np.ndarray | int]:
        # (index, seed), or (index, repeating seed, per-epoch seed) for the `official` stream (samplers.PKSampler)
        idx, seed, *fresh = item
        s = self.samples[idx]
        rng = np.random.default_rng(seed)
        fresh_rng = np.random.default_rng(fresh[0]) if fresh else None
        img = self.cache.get(s.path)
        geo = draw_geo_params(rng, self.h, self.w, flip_rng=fresh_rng)
        hq_erase = np.asarray(draw_erase_box(rng, self.h, self.w), np.int64)
        shared = (geo, hq_erase) if self.aligned else (None, None)
        return {
            "hq": to_chw_uint8(apply_geo(img, self.h, self.w, geo)),
            "hq_erase": hq_erase,
            **_lq_ingredients(rng, img, self.h, self.w, (self.src_h, self.src_w), self.draw_lq, *shared,
                              fresh_rng=fresh_rng),
            "pid": s.pid,
            "index": idx,
        }
