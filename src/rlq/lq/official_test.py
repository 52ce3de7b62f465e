"""The authors' LQ test protocol (their `--LR-MODE` / `--LR-TYPE` evaluation), docs/method.md §12.

Every query **and** gallery image gets one synthetic artifact at its original resolution, drawn from the
*training* ranges (docs/method.md §5.2, `official` column), before the usual test resize. `--LR-TYPE` picks one
artifact (LR = pixelation, OOF = Gaussian out-of-focus, MB = motion blur); without it the target dataset's
training mix is used. The authors drew from unseeded Python/torch RNGs; rlq seeds each image's draw from
(seed, split, image index), so a result is reproducible and does not depend on batching or loader workers.
This is a different protocol from rlq's own graded-severity robustness grid (:mod:`rlq.lq.severity`);
every result carries its name.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from rlq.errors import ConfigError

from . import reference
from .mix import ARTIFACT_NAMES, LQMix, draw_lq, mix_for_dataset

__all__ = [
    "OFFICIAL_LQ_KINDS",
    "OFFICIAL_LQ_LABEL",
    "OFFICIAL_LQ_DEFINITION",
    "official_lq_name",
    "parse_lq_option",
    "official_lq_mix",
    "split_seed",
    "OfficialLQTransform",
    "official_lq_transforms",
]

#: `--lq official:KIND`: mix = the target dataset's training mix (no --LR-TYPE); the others = --LR-TYPE LR / OOF / MB.
OFFICIAL_LQ_KINDS = ("mix", "pixelation", "gaussian", "motion")
_SINGLE = {"pixelation": "pixelation", "gaussian": "defocus", "motion": "motion"}

OFFICIAL_LQ_LABEL = "the authors' LQ test protocol (--LR-MODE/--LR-TYPE, docs/method.md §12)"
OFFICIAL_LQ_DEFINITION = (
    "Query and gallery images each get one synthetic artifact at original resolution with the official training "
    "ranges (pixelation: shorter side 16..63; Gaussian: odd k 5..21, sigma U(0.1, 2); motion: 8..19 px, 0..179 deg), "
    "then the test resize. `mix` uses the target dataset's training mix; seeded per (seed, split, image)."
)


def official_lq_name(kind: str) -> str:
    """The protocol's name in results and table titles, e.g. ``official_lq:mix``."""
    return f"official_lq:{kind}"


def parse_lq_option(text: str) -> str:
    """``official`` -> ``mix``; ``official:pixelation|gaussian|motion|mix`` -> that kind."""
    head, _, kind = text.strip().partition(":")
    kind = kind.strip() or "mix"
    if head.strip() != "official" or kind not in OFFICIAL_LQ_KINDS:
        raise ConfigError(f"--lq {text!r}: expected official or official:KIND with KIND one of {', '.join(OFFICIAL_LQ_KINDS)}")
    return kind


def official_lq_mix(kind: str, dataset: str) -> LQMix:
    """The artifact choice of ``kind``: the target dataset's training mix (``mix``) or one artifact."""
    if kind == "mix":
        return mix_for_dataset(dataset)
    if kind not in _SINGLE:
        raise ConfigError(f"unknown official LQ test kind {kind!r}; expected one of {OFFICIAL_LQ_KINDS}")
    return LQMix(((_SINGLE[kind], 1.0, True),), name=kind)


def split_seed(seed: int, split: str) -> int:
    """A split's own seed, so the gallery's draws are not a copy of the query's."""
    return int(np.random.SeedSequence([int(seed) & ((1 << 63) - 1), zlib.crc32(split.encode("utf-8"))]).generate_state(1)[0])


class OfficialLQTransform:
    """``transform(img, index) -> img``: image ``index``'s artifact at its original resolution (picklable for workers)."""

    def __init__(self, mix: LQMix, seed: int, ranges: str = "official") -> None:
        self.mix, self.seed, self.ranges = mix, int(seed), ranges

    def draw(self, index: int) -> tuple[str, np.ndarray]:
        """The artifact name and its parameters for image ``index`` (a pure function of seed and index)."""
        rng = np.random.default_rng([self.seed, int(index)])
        code, params = draw_lq(rng, self.mix, self.ranges)
        return ARTIFACT_NAMES[code], params

    def __call__(self, img: Image.Image, index: int) -> Image.Image:
        artifact, p = self.draw(index)
        img = img.convert("RGB")
        if artifact == "pixelation":  # shorter side to s; the test Resize brings it back (bilinear)
            return reference.pixelate(img, int(round(float(p[0]))))
        if artifact == "defocus":
            return reference.defocus(img, int(round(float(p[0]))), float(p[1]))
        return reference.motion_blur(img, int(round(float(p[0]))), float(p[1]))


def official_lq_transforms(mix: LQMix, seed: int):
    """``transform_for(split)``: each split's :class:`OfficialLQTransform`, seeded by (``seed``, split)."""

    def transform_for(split: str) -> OfficialLQTransform:
        return OfficialLQTransform(mix, split_seed(seed, split))

    return transform_for
