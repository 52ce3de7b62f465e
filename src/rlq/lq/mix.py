"""Per-dataset LQ artifact mixes and parameter ranges, drawn per image from an explicit numpy Generator.

docs/method.md §5.2: one artifact per external (Celeb-reID) image, chosen by r ~ U(0, 1) against thresholds that
depend on the *target* dataset; its parameters are drawn from the `official` (code) or `paper` ranges.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from rlq.errors import ConfigError

__all__ = [
    "ARTIFACT_CODES",
    "ARTIFACT_NAMES",
    "LQRanges",
    "LQ_RANGES",
    "LQMix",
    "LQ_MIXES",
    "mix_for_dataset",
    "draw_params",
    "draw_lq",
]

logger = logging.getLogger(__name__)

#: Integer codes used in the (code, params) pairs the loader hands to :func:`rlq.lq.batched.synthesize_batch`.
ARTIFACT_CODES: dict[str, int] = {"pixelation": 0, "defocus": 1, "motion": 2}
ARTIFACT_NAMES: dict[int, str] = {v: k for k, v in ARTIFACT_CODES.items()}


@dataclass(frozen=True)
class LQRanges:
    """Inclusive parameter ranges of the three artifacts (docs/method.md §5.2 table)."""

    name: str
    pixelation_s: tuple[int, int]  # shorter side after downsampling, integer, inclusive
    defocus_k: tuple[int, ...]  # odd Gaussian kernel sizes, uniform over the tuple
    defocus_sigma: tuple[float, float]  # sigma ~ U(lo, hi)
    motion_n: tuple[int, int]  # motion kernel size, integer, inclusive
    motion_angle: tuple[float, float]  # degrees; integer inclusive range, or [lo, hi) when continuous
    motion_angle_continuous: bool


#: docs/method.md §5.2 / §10 "Motion blur" row: `official` = the code (random.choice(range(...))), `paper` = the text.
LQ_RANGES: dict[str, LQRanges] = {
    "official": LQRanges(
        name="official",
        pixelation_s=(16, 63),  # range(16, 64)
        defocus_k=tuple(range(5, 22, 2)),  # range(4, 22, 2) + 1
        defocus_sigma=(0.1, 2.0),  # torchvision GaussianBlur default sigma range
        motion_n=(8, 19),  # range(8, 20)
        motion_angle=(0, 179),  # range(0, 180), integers
        motion_angle_continuous=False,
    ),
    "paper": LQRanges(
        name="paper",
        pixelation_s=(16, 64),  # "[16x16, 64x64]", inclusive like the motion range below
        defocus_k=tuple(range(5, 22, 2)),
        defocus_sigma=(0.1, 2.0),
        motion_n=(8, 20),  # "size in [8, 20]"
        motion_angle=(0.0, 180.0),  # "angle in [0, 180]": continuous in [0, 180)
        motion_angle_continuous=True,
    ),
}


@dataclass(frozen=True)
class LQMix:
    """Artifact choice by thresholds on r ~ U(0, 1).

    ``segments`` partition [0, 1] in order: ``(artifact, upper, upper_inclusive)`` means the artifact is
    chosen for ``prev_upper (<|<=) r < upper`` (``<= upper`` when inclusive), so the official comparisons
    (``r < 0.33``, ``0.33 <= r <= 0.63``, ``r > 0.63``) are represented exactly.
    """

    segments: tuple[tuple[str, float, bool], ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        if not self.segments:
            raise ConfigError(f"LQ mix {self.name!r} has no artifacts; give at least one of {sorted(ARTIFACT_CODES)}")
        prev = 0.0
        for artifact, upper, _ in self.segments:
            if artifact not in ARTIFACT_CODES:
                raise ConfigError(f"LQ mix {self.name!r}: unknown artifact {artifact!r}; expected one of {sorted(ARTIFACT_CODES)}")
            if not (prev <= upper <= 1.0):
                raise ConfigError(f"LQ mix {self.name!r}: thresholds must increase within [0, 1], got {self.segments}")
            prev = upper
        if self.segments[-1][1] != 1.0:
            raise ConfigError(f"LQ mix {self.name!r}: the last threshold must be 1.0, got {self.segments}")

    @classmethod
    def from_probs(cls, pixelation: float = 0.0, motion: float = 0.0, defocus: float = 0.0, name: str = "custom") -> LQMix:
        """A mix with the given probabilities (e.g. a manifest's ``lq_mix``); they must sum to 1."""
        probs = {"pixelation": pixelation, "motion": motion, "defocus": defocus}
        for k, p in probs.items():
            if not (math.isfinite(p) and p >= 0):
                raise ConfigError(f"LQ mix {name!r}: probability of {k} must be a finite number >= 0, got {p!r}")
        total = sum(probs.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"LQ mix {name!r}: probabilities {probs} sum to {total:g}; they must sum to 1 "
                "(e.g. lq_mix: {pixelation: 0.5, motion: 0.5})"
            )
        segments: list[tuple[str, float, bool]] = []
        acc = 0.0
        for k, p in probs.items():
            if p > 0:
                acc += p
                segments.append((k, acc, False))
        segments[-1] = (segments[-1][0], 1.0, True)
        return cls(tuple(segments), name=name)

    def select(self, r: float) -> str:
        """The artifact chosen for r in [0, 1]."""
        for artifact, upper, inclusive in self.segments:
            if r < upper or (inclusive and r == upper):
                return artifact
        return self.segments[-1][0]

    def probabilities(self) -> dict[str, float]:
        """Probability of each artifact (0 for artifacts not in the mix)."""
        out = dict.fromkeys(ARTIFACT_CODES, 0.0)
        prev = 0.0
        for artifact, upper, _ in self.segments:
            out[artifact] += upper - prev
            prev = upper
        return out


# docs/method.md §5.2 mix table (the official `flip_coin` comparisons). The authors' `--dataset-specific` choice
# gives Celeb-reID their "ltcc" class (pixelation 0.33, motion 0.30, Gaussian 0.37), in training and at test time
# (their only logged LQ evaluations, docs/method.md "Evaluation under low quality").
_MIX_LTCC = LQMix((("pixelation", 0.33, False), ("motion", 0.63, True), ("defocus", 1.0, True)), name="ltcc")
_MIX_PRCC = LQMix((("defocus", 0.5, True), ("pixelation", 1.0, True)), name="prcc")
_MIX_FALLBACK = LQMix((("motion", 0.5, True), ("pixelation", 1.0, True)), name="custom")  # r > 0.5: pixelation

_DATASET_MIXES = {
    "ltcc": _MIX_LTCC,
    "last": _MIX_LTCC,
    "synthcc": _MIX_LTCC,
    "celebreid": _MIX_LTCC,
    "prcc": _MIX_PRCC,
    "deepchange": _MIX_PRCC,
}
#: Mix names a run can ask for (``tad.lq_mix``): a registered target dataset, or the configurable fallback.
LQ_MIXES: tuple[str, ...] = (*_DATASET_MIXES, _MIX_FALLBACK.name)


def mix_for_dataset(name: str) -> LQMix:
    """The docs/method.md §5.2 mix for a target dataset; unknown / custom targets get the official fallback."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    mix = _DATASET_MIXES.get(key)
    if mix is None:
        logger.debug("no LQ mix registered for dataset %r; using the official fallback (pixelation 0.5, motion 0.5)", name)
        return _MIX_FALLBACK
    return mix


def _ranges(ranges: str | LQRanges) -> LQRanges:
    if isinstance(ranges, LQRanges):
        return ranges
    if ranges not in LQ_RANGES:
        raise ConfigError(f"unknown LQ ranges {ranges!r}; expected one of {sorted(LQ_RANGES)}")
    return LQ_RANGES[ranges]


def draw_params(rng: np.random.Generator, artifact: str, ranges: str | LQRanges = "official",
                sigma_rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw the 3 parameters of one artifact: pixelation (s, 0, 0), defocus (k, sigma, 0), motion (n, angle, 0).

    The Gaussian sigma comes from ``sigma_rng`` when given: in the authors' code it is torch's draw, which does
    not repeat across epochs when their Python RNG does (docs/method.md §6)."""
    rg = _ranges(ranges)
    out = np.zeros(3, dtype=np.float32)
    if artifact == "pixelation":
        out[0] = rng.integers(rg.pixelation_s[0], rg.pixelation_s[1] + 1)
    elif artifact == "defocus":
        out[0] = rg.defocus_k[int(rng.integers(len(rg.defocus_k)))]
        out[1] = (rng if sigma_rng is None else sigma_rng).uniform(*rg.defocus_sigma)
    elif artifact == "motion":
        out[0] = rng.integers(rg.motion_n[0], rg.motion_n[1] + 1)
        lo, hi = rg.motion_angle
        if rg.motion_angle_continuous:
            # float32 rounding could turn a draw just below `hi` into `hi`; keep the interval half-open.
            out[1] = min(np.float32(rng.uniform(lo, hi)), np.nextafter(np.float32(hi), np.float32(lo)))
        else:
            out[1] = rng.integers(int(lo), int(hi) + 1)
    else:
        raise ConfigError(f"unknown LQ artifact {artifact!r}; expected one of {sorted(ARTIFACT_CODES)}")
    return out


def draw_lq(rng: np.random.Generator, mix: LQMix, ranges: str | LQRanges = "official",
            sigma_rng: np.random.Generator | None = None) -> tuple[int, np.ndarray]:
    """Draw one image's artifact code and its float32 parameter vector (docs/method.md §5.2)."""
    artifact = mix.select(float(rng.random()))
    return ARTIFACT_CODES[artifact], draw_params(rng, artifact, ranges, sigma_rng=sigma_rng)
