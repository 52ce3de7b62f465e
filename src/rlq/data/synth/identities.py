"""SynthCC identities (persistent biometric traits), outfits (clothes ids) and cameras (scene + quality).

Identity traits are what identifies a person: gender shapes body proportions and hair; stature, build,
head size, skin tone, hair colour/style, beard and glasses vary continuously or categorically with
deliberate overlap. Outfits draw from one shared colour palette, so clothes never identify a person.
Every sampler takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RGB",
    "GARMENT_PALETTE",
    "SKIN_TONES",
    "HAIR_COLOURS",
    "HAIR_STYLES",
    "UPPER_KINDS",
    "LOWER_KINDS",
    "PATTERNS",
    "BACKGROUNDS",
    "VIEWS",
    "QUALITY_ARTIFACTS",
    "Identity",
    "Garment",
    "Outfit",
    "Camera",
    "Quality",
    "sample_identity",
    "sample_outfits",
    "make_cameras",
    "draw_quality",
]

RGB = tuple[int, int, int]

#: Shared garment palette (name -> RGB). Every outfit of every identity draws from it.
GARMENT_PALETTE: dict[str, RGB] = {
    "black": (28, 28, 30),
    "white": (232, 232, 228),
    "grey": (128, 128, 130),
    "charcoal": (62, 64, 68),
    "navy": (30, 40, 85),
    "blue": (40, 80, 180),
    "lightblue": (130, 170, 215),
    "denim": (60, 90, 135),
    "red": (190, 30, 35),
    "maroon": (110, 25, 40),
    "green": (40, 130, 60),
    "olive": (100, 105, 50),
    "khaki": (190, 170, 125),
    "beige": (215, 200, 170),
    "brown": (110, 70, 40),
    "yellow": (230, 200, 40),
    "orange": (225, 120, 30),
    "pink": (225, 140, 170),
    "purple": (110, 50, 140),
    "teal": (30, 130, 130),
}
_UPPER_COLOURS = tuple(GARMENT_PALETTE)
_LOWER_COLOURS = ("black", "grey", "charcoal", "navy", "denim", "denim", "blue", "khaki", "beige", "brown", "olive",
                  "white", "maroon", "green", "red", "lightblue")
_SHOE_COLOURS = ("black", "black", "white", "white", "grey", "brown", "navy", "red", "beige")

SKIN_TONES: tuple[RGB, ...] = ((247, 218, 192), (236, 192, 160), (222, 170, 128), (196, 136, 96), (158, 104, 70),
                               (112, 74, 50))
_SKIN_WEIGHTS = (0.2, 0.24, 0.2, 0.16, 0.12, 0.08)
HAIR_COLOURS: dict[str, RGB] = {
    "black": (22, 20, 20),
    "darkbrown": (55, 38, 28),
    "brown": (100, 66, 40),
    "auburn": (128, 56, 32),
    "blonde": (200, 168, 108),
    "grey": (160, 158, 155),
}
_HAIR_WEIGHTS = (0.34, 0.24, 0.16, 0.08, 0.12, 0.06)
#: Dyed hair colours (generator 1.1): 45 % of identities have one, so hair tells more people apart across outfits.
DYED_HAIR_COLOURS: dict[str, RGB] = {
    "red": (168, 38, 34),
    "copper": (192, 98, 46),
    "platinum": (232, 224, 204),
    "blue": (44, 76, 172),
    "teal": (34, 132, 136),
    "pink": (216, 112, 162),
    "purple": (116, 58, 150),
    "green": (58, 132, 62),
    "orange": (226, 132, 40),
    "lilac": (182, 150, 212),
    "mint": (120, 200, 170),
    "wine": (120, 30, 62),
}
_P_DYED = 0.45
_P_HAT = 0.03  # per outfit (1.0: 0.12); a hat hides the hair, the strongest cue across outfits
HAIR_STYLES = ("bald", "buzz", "short", "medium", "long", "ponytail", "bun")
_HAIR_STYLE_WEIGHTS = {1: (0.05, 0.2, 0.45, 0.2, 0.06, 0.02, 0.02), 0: (0.0, 0.02, 0.1, 0.2, 0.38, 0.18, 0.12)}

UPPER_KINDS = ("tshirt", "longsleeve", "coat")
LOWER_KINDS = ("pants", "shorts", "skirt")
PATTERNS = ("solid", "stripes", "checks")
BACKGROUNDS = ("gradient", "bricks", "panels", "tiles", "foliage")
VIEWS = ("front", "back", "side", "mixed")
#: Probability of (front, back, side) per camera viewpoint tendency.
_VIEW_PROBS = {"front": (0.75, 0.15, 0.10), "back": (0.15, 0.75, 0.10), "side": (0.10, 0.10, 0.80),
               "mixed": (0.36, 0.30, 0.34)}
QUALITY_ARTIFACTS = ("pixelation", "defocus", "motion")


@dataclass(frozen=True)
class Identity:
    """Persistent traits of one person; lengths are in body heights (head top to sole = 1)."""

    pid: int
    gender: int  # 1 = male, 0 = female (docs/datasets.md §5.3)
    stature: float  # relative height (1.0 = average man); sets how much of the crop the person fills
    build: float  # girth factor for torso and limb widths
    shoulder: float  # half distance between the shoulder joints
    hip: float  # half distance between the hip joints
    waist: float  # half torso width at the waist
    head: float  # head height
    leg: float  # leg-length factor
    skin: RGB
    hair_colour: RGB
    hair_style: str
    beard: bool
    glasses: bool
    arm_swing: float  # walking arm-swing amplitude (degrees)
    stride: float  # walking thigh-swing amplitude (degrees)
    hair_volume: float = 1.0  # hair extent around the head (generator 1.1; 1.0 = generator 1.0's)


@dataclass(frozen=True)
class Garment:
    """One garment: kind, main colour, pattern and its second colour and period (body heights)."""

    kind: str
    colour: RGB
    colour_name: str
    pattern: str
    colour2: RGB
    period: float
    length: float = 1.0  # shorts/skirt/sleeve length factor


@dataclass(frozen=True)
class Outfit:
    """One clothes id of a person: upper and lower garment, shoes and optional hat / scarf."""

    index: int  # per-person outfit index, 1-based (LTCC file name field O)
    upper: Garment
    lower: Garment
    inner: RGB  # shirt colour seen under an open coat
    coat_open: bool
    shoes: RGB
    hat: RGB | None
    scarf: RGB | None


@dataclass(frozen=True)
class Camera:
    """A camera: viewpoint tendency, scene, illumination, crop size and quality profile."""

    index: int  # 1-based (LTCC file name field CC)
    view: str
    view_probs: tuple[float, float, float]  # P(front), P(back), P(side)
    side_right: float  # P(facing image right | side view)
    background: str
    wall: RGB
    wall2: RGB
    floor: RGB
    horizon: float  # wall/floor boundary as a fraction of the crop height
    texture_scale: float
    brightness: float
    cast: tuple[float, float, float]
    noise: float  # sensor noise std in grey levels
    height: int  # typical crop height (px)
    aspect: float  # typical crop width / height
    fill: float  # typical fraction of the crop height covered by an average person
    artifact: str  # 'clean' or one of QUALITY_ARTIFACTS
    level: int  # 0 for clean cameras, else 1..3
    p_lq: float  # probability that an image of this camera gets an artifact
    motion_angle: float  # dominant motion-blur direction (degrees)


@dataclass(frozen=True)
class Quality:
    """The artifact applied to one image: kind, severity 0..3, the reported param and the call params."""

    artifact: str  # 'clean', 'pixelation', 'defocus', 'motion'
    severity: int
    param: float  # pixelation: shorter side px; defocus: sigma; motion: kernel length px; clean: 0
    params: dict


def _rgb(values) -> RGB:
    """Three values as an RGB triple of ints."""
    r, g, b = (int(v) for v in values)
    return r, g, b


def _jitter_colour(rgb: RGB, rng: np.random.Generator, amount: float) -> RGB:
    c = np.asarray(rgb, dtype=np.float64) + rng.normal(0.0, amount, 3)
    return _rgb(np.clip(np.rint(c), 0, 255))


def sample_identity(pid: int, rng: np.random.Generator, gender: int | None = None) -> Identity:
    """Draw one identity's persistent traits; gender (1 male, 0 female) is drawn when not given."""
    if gender is None:
        gender = int(rng.random() < 0.55)
    male = gender == 1
    # Generator 1.1: stature and build vary as much as in real adults (1.0: sd 0.035 and 0.08), so the
    # silhouette, which survives blur and lighting, tells people apart.
    stature = float(np.clip(rng.normal(1.0 if male else 0.93, 0.05), 0.8, 1.14))
    build = float(np.clip(rng.normal(1.0 if male else 0.93, 0.13), 0.72, 1.38))
    shoulder = float(np.clip(rng.normal(0.121 if male else 0.105, 0.006), 0.092, 0.14)) * (0.85 + 0.15 * build)
    hip = float(np.clip(rng.normal(0.080 if male else 0.092, 0.005), 0.068, 0.106)) * (0.8 + 0.2 * build)
    waist = float(np.clip(rng.normal(0.092 if male else 0.080, 0.005), 0.066, 0.11)) * build
    head = float(np.clip(rng.normal(0.132 if male else 0.137, 0.006), 0.118, 0.152))
    leg = float(np.clip(rng.normal(1.0 if male else 1.01, 0.03), 0.92, 1.08))
    # Generator 1.1: skin is a continuous position on the tone ramp and hair colours spread wider (natural ones
    # vary more, 45 % are dyed), because 1.0's six skin tones and six hair colours, shared by 300 test
    # identities, left too little to recognise a person by across outfits (docs/benchmarks.md, "How the demo got here").
    tone = float(np.clip(rng.choice(len(SKIN_TONES), p=_SKIN_WEIGHTS) + rng.uniform(-0.5, 0.5), 0, len(SKIN_TONES) - 1))
    lo = int(math.floor(tone))
    hi = min(lo + 1, len(SKIN_TONES) - 1)
    ramp = (1 - (tone - lo)) * np.asarray(SKIN_TONES[lo], np.float64) + (tone - lo) * np.asarray(SKIN_TONES[hi], np.float64)
    skin = _jitter_colour(_rgb(np.rint(ramp)), rng, 6.0)
    if rng.random() < _P_DYED:
        hair_colour = _jitter_colour(DYED_HAIR_COLOURS[str(rng.choice(list(DYED_HAIR_COLOURS)))], rng, 12.0)
    else:
        hair_colour = _jitter_colour(HAIR_COLOURS[str(rng.choice(list(HAIR_COLOURS), p=_HAIR_WEIGHTS))], rng, 12.0)
    hair_style = str(rng.choice(HAIR_STYLES, p=_HAIR_STYLE_WEIGHTS[gender]))
    hair_volume = float(rng.uniform(0.95, 1.3)) if hair_style not in ("bald", "buzz") else 1.0
    beard = bool(male and rng.random() < 0.25)
    glasses = bool(rng.random() < 0.15)
    return Identity(
        pid=int(pid), gender=int(gender), stature=stature, build=build, shoulder=shoulder, hip=hip, waist=waist,
        head=head, leg=leg, skin=skin, hair_colour=hair_colour, hair_style=hair_style, beard=beard,
        glasses=glasses, arm_swing=float(np.clip(rng.normal(22, 5), 10, 34)),
        stride=float(np.clip(rng.normal(24, 3), 16, 32)), hair_volume=hair_volume,
    )


def _garment(kind: str, names: tuple[str, ...], patterns: tuple[float, float, float], rng: np.random.Generator,
             length: float = 1.0) -> Garment:
    name = str(rng.choice(names))
    colour = _jitter_colour(GARMENT_PALETTE[name], rng, 8.0)
    pattern = str(rng.choice(PATTERNS, p=patterns))
    other = [n for n in _UPPER_COLOURS if n != name]
    colour2 = _jitter_colour(GARMENT_PALETTE[str(rng.choice(other))], rng, 8.0)
    return Garment(kind=kind, colour=colour, colour_name=name, pattern=pattern, colour2=colour2,
                   period=float(rng.uniform(0.035, 0.07)), length=length)


def sample_outfits(identity: Identity, n: int, rng: np.random.Generator) -> list[Outfit]:
    """Draw `n` mutually different outfits (indices 1..n) for one identity."""
    outfits: list[Outfit] = []
    seen: set[tuple[str, str, str, str]] = set()
    lower_p = (0.8, 0.2, 0.0) if identity.gender == 1 else (0.5, 0.18, 0.32)
    while len(outfits) < n:
        upper_kind = str(rng.choice(UPPER_KINDS, p=(0.4, 0.35, 0.25)))
        upper = _garment(upper_kind, _UPPER_COLOURS, (0.6, 0.25, 0.15), rng,
                         length=float(rng.uniform(0.35, 0.55)) if upper_kind == "tshirt" else 1.0)
        lower_kind = str(rng.choice(LOWER_KINDS, p=lower_p))
        length = {"pants": 1.0, "shorts": float(rng.uniform(0.45, 0.8)), "skirt": float(rng.uniform(0.6, 1.15))}
        lower = _garment(lower_kind, _LOWER_COLOURS, (0.86, 0.04, 0.10), rng, length=length[lower_kind])
        sig = (upper_kind, upper.colour_name, lower_kind, lower.colour_name)
        if sig in seen:  # outfits of one person must look different
            continue
        seen.add(sig)
        coat = upper_kind == "coat"
        outfits.append(Outfit(
            index=len(outfits) + 1, upper=upper, lower=lower,
            inner=_jitter_colour(GARMENT_PALETTE[str(rng.choice(_UPPER_COLOURS))], rng, 8.0),
            coat_open=bool(coat and rng.random() < 0.5),
            shoes=_jitter_colour(GARMENT_PALETTE[str(rng.choice(_SHOE_COLOURS))], rng, 6.0),
            hat=_jitter_colour(GARMENT_PALETTE[str(rng.choice(_UPPER_COLOURS))], rng, 8.0)
            if rng.random() < _P_HAT else None,
            scarf=_jitter_colour(GARMENT_PALETTE[str(rng.choice(_UPPER_COLOURS))], rng, 8.0)
            if coat and rng.random() < 0.3 else None,
        ))
    return outfits


def make_cameras(n: int, rng: np.random.Generator, lq: bool = True, height: int | None = None,
                 aspect: float | None = None) -> list[Camera]:
    """Draw `n` cameras (indices 1..n); with `lq`, about 40 % get a low-quality profile (>= one per artifact)."""
    if n < 1:
        raise ValueError(f"need at least one camera, got {n}")
    views = [VIEWS[i % len(VIEWS)] for i in range(n)]
    rng.shuffle(views)
    bgs = [BACKGROUNDS[i % len(BACKGROUNDS)] for i in range(n)]
    rng.shuffle(bgs)
    heights = np.linspace(100, 184, n) if n > 1 else np.array([140.0])
    heights = rng.permutation(heights) + rng.uniform(-6, 6, n)
    profiles = [("clean", 0)] * n
    if lq and n >= 2:
        n_lq = min(n - 1, max(3, round(0.4 * n))) if n >= 4 else 1
        levels = [2, 3, 1, 3, 2, 1]
        lq_cams = rng.choice(n, size=n_lq, replace=False)
        for j, cam in enumerate(lq_cams):
            profiles[int(cam)] = (QUALITY_ARTIFACTS[j % 3], levels[j % len(levels)])
    cams = []
    for i in range(n):
        wall = _rgb(rng.integers(60, 220, 3))
        wall2 = _rgb(np.clip(v + rng.integers(-50, 50), 20, 240) for v in wall)
        floor = _rgb(rng.integers(50, 170, 3))
        if bgs[i] == "foliage":
            wall = (int(rng.integers(40, 90)), int(rng.integers(90, 150)), int(rng.integers(40, 80)))
            wall2 = (int(rng.integers(60, 120)), int(rng.integers(70, 120)), int(rng.integers(60, 110)))
            floor = _rgb([rng.integers(95, 140)] * 3)
        art, level = profiles[i]
        cast = rng.normal(1.0, 0.05, 3)
        cams.append(Camera(
            index=i + 1, view=views[i], view_probs=_VIEW_PROBS[views[i]], side_right=float(rng.uniform(0.2, 0.8)),
            background=bgs[i], wall=wall, wall2=wall2, floor=floor,
            horizon=float(rng.uniform(0.55, 0.8)), texture_scale=float(rng.uniform(0.7, 1.4)),
            brightness=float(rng.uniform(0.78, 1.15)), cast=tuple(float(c) for c in np.clip(cast, 0.88, 1.12)),
            noise=float(rng.uniform(1.0, 4.0)), height=int(height or round(heights[i])),
            aspect=float(aspect or rng.uniform(0.40, 0.52)), fill=float(rng.uniform(0.84, 0.9)),
            artifact=art, level=level, p_lq=0.8 if art != "clean" else (0.1 if lq else 0.0),
            motion_angle=float(rng.choice([0.0, 0.0, 90.0, 45.0, 135.0]) + rng.uniform(-15, 15)) % 180.0,
        ))
    return cams


# Severity tables (SynthCC's own choice): pixelation shorter side, defocus sigma, motion length per level.
_PIX_SHORT = {1: 40, 2: 28, 3: 18}
_DEFOCUS_SIGMA = {1: 1.0, 2: 1.7, 3: 2.6}
_MOTION_LEN = {1: 7, 2: 11, 3: 15}


def draw_quality(camera: Camera, size: tuple[int, int], rng: np.random.Generator) -> Quality:
    """Draw the artifact of one image of `camera` whose (w, h) is `size` (camera profile + per-image randomness)."""
    if rng.random() >= camera.p_lq:
        return Quality("clean", 0, 0.0, {})
    if camera.artifact != "clean":
        art = camera.artifact
        level = camera.level if rng.random() < 0.6 else int(rng.integers(1, 4))
    else:
        art = str(rng.choice(QUALITY_ARTIFACTS))
        level = int(rng.integers(1, 4))
    if art == "pixelation":
        short = min(size)
        s = int(_PIX_SHORT[level] + rng.integers(-2, 3))
        s = max(8, min(s, round(0.75 * short)))  # always a real downsampling
        return Quality(art, level, float(s), {"s": s, "restore_size": tuple(size)})
    if art == "defocus":
        sigma = round(float(_DEFOCUS_SIGMA[level] * rng.uniform(0.88, 1.12)), 3)
        k = min(21, 2 * math.ceil(3 * sigma) + 1)
        return Quality(art, level, sigma, {"k": k, "sigma": sigma})
    n = int(_MOTION_LEN[level] + rng.integers(-1, 2))
    if camera.artifact == "motion":
        angle = float(camera.motion_angle + rng.normal(0, 12)) % 180.0
    else:
        angle = float(rng.uniform(0, 180))
    return Quality("motion", level, float(n), {"n": n, "angle": round(angle, 2)})
