"""Draw one SynthCC person: a LIP label map first (docs/datasets.md §5.2 ids), then its colour image.

Everything is drawn at 2x with PIL polygons on "L" images (label, instance and shading layers); the
colour image is box-downsampled to 1x for smooth edges and the label map is sampled nearest. Labels
left/right (14-19) are the person's own sides, like COCO keypoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from rlq.data.synth.identities import Camera, Identity, Outfit
from rlq.data.synth.skeleton import Pose, Skeleton, build_skeleton, coco_keypoints

__all__ = ["Rendered", "render_person", "render_background"]

_HAT, _HAIR, _GLASSES, _UPPER, _COAT, _PANTS, _SCARF, _SKIRT, _FACE = 1, 2, 4, 5, 7, 9, 11, 12, 13
_ARM = {1: 14, -1: 15}
_LEG = {1: 16, -1: 17}
_SHOE = {1: 18, -1: 19}
_SHADE_UNIT = 160.0  # shading layer value for brightness 1.0


@dataclass(frozen=True)
class Rendered:
    """A rendered person (before any LQ artifact): colour image, LIP labels, COCO keypoints in pixels."""

    image: np.ndarray  # (h, w, 3) uint8
    labels: np.ndarray  # (h, w) uint8 LIP ids
    keypoints: np.ndarray  # (17, 2) float64, 1x pixel coordinates (x, y)
    occluded: np.ndarray  # (17,) bool


# ------------------------------------------------------------------------------------------- geometry


_ARC = np.linspace(0.0, -math.pi, 6)  # half-circle offsets for capsule caps
_CIRCLE = np.linspace(0.0, 2 * math.pi, 12, endpoint=False)


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> list[tuple[float, float]]:
    """Polygon of a tapered capsule (segment p0-p1, radii r0, r1, round caps)."""
    d = p1 - p0
    length = math.hypot(d[0], d[1])
    if length < 1e-6:
        r = max(r0, r1)
        pts = np.stack([p0[0] + r * np.cos(_CIRCLE), p0[1] + r * np.sin(_CIRCLE)], axis=1)
        return [tuple(p) for p in pts.tolist()]
    an = math.atan2(d[0] / length, -d[1] / length)  # angle of the normal (-u_y, u_x)
    a1 = an + _ARC  # cap at p1: normal -> direction -> -normal
    a0 = a1 - math.pi  # cap at p0: -normal -> -direction -> normal
    xs = np.concatenate([p1[0] + r1 * np.cos(a1), p0[0] + r0 * np.cos(a0)])
    ys = np.concatenate([p1[1] + r1 * np.sin(a1), p0[1] + r0 * np.sin(a0)])
    return list(zip(xs.tolist(), ys.tolist()))


def _hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Convex hull (monotone chain) of a few 2-D points."""
    pts = sorted({(float(x), float(y)) for x, y in points})
    if len(pts) <= 2:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


class _Canvas:
    """Three 2x "L" layers drawn together: LIP label, instance id and shading."""

    def __init__(self, w: int, h: int) -> None:
        self.lab = Image.new("L", (w, h), 0)
        self.inst = Image.new("L", (w, h), 0)
        self.shade = Image.new("L", (w, h), int(_SHADE_UNIT * 0.8))
        self._dl = ImageDraw.Draw(self.lab)
        self._di = ImageDraw.Draw(self.inst)
        self._ds = ImageDraw.Draw(self.shade)
        self.n = 0

    def poly(self, pts, label: int, shade: float = 1.0, core=None) -> None:
        if len(pts) < 3:
            return
        self.n = min(self.n + 1, 255)
        self._dl.polygon(pts, fill=label)
        self._di.polygon(pts, fill=self.n)
        self._ds.polygon(pts, fill=int(min(255, shade * _SHADE_UNIT * 0.92)))
        if core is not None and len(core) >= 3:
            self._ds.polygon(core, fill=int(min(255, shade * _SHADE_UNIT * 1.06)))

    def ellipse(self, c, rx: float, ry: float, label: int, shade: float = 1.0) -> None:
        box = [float(c[0] - rx), float(c[1] - ry), float(c[0] + rx), float(c[1] + ry)]
        if box[2] - box[0] < 0.5 or box[3] - box[1] < 0.5:
            return
        self.n = min(self.n + 1, 255)
        self._dl.ellipse(box, fill=label)
        self._di.ellipse(box, fill=self.n)
        self._ds.ellipse(box, fill=int(min(255, shade * _SHADE_UNIT * 0.95)))
        core = [float(c[0] - rx * 0.55), float(c[1] - ry * 0.6), float(c[0] + rx * 0.45), float(c[1] + ry * 0.5)]
        self._ds.ellipse(core, fill=int(min(255, shade * _SHADE_UNIT * 1.06)))

    def chord(self, box, start: float, end: float, label: int) -> None:
        """A filled chord (e.g. a hat's crown) on the three layers, as one new instance, unshaded."""
        self.n = min(self.n + 1, 255)
        self._dl.chord(box, start, end, fill=label)
        self._di.chord(box, start, end, fill=self.n)
        self._ds.chord(box, start, end, fill=int(_SHADE_UNIT))

    def capsule(self, p0, p1, r0: float, r1: float, label: int, shade: float = 1.0) -> None:
        self.poly(_capsule(p0, p1, r0, r1), label, shade, _capsule(p0, p1, r0 * 0.5, r1 * 0.5))


@dataclass
class _Frame:
    """Maps body-frame points to 2x pixel coordinates."""

    sk: Skeleton
    cx: float
    foot_y: float
    scale: float  # pixels per body height

    def px(self, p3: np.ndarray) -> np.ndarray:
        xy = self.sk.xy(p3)
        return np.array([self.cx + xy[0] * self.scale, self.foot_y + (xy[1] - 1.0) * self.scale])

    def j(self, name: str) -> np.ndarray:
        return self.px(self.sk.joints[name])

    def half_width(self, a: float, b: float) -> float:
        """Projected half-width of an elliptic cross-section (lateral half-axis a, depth half-axis b)."""
        return self.scale * math.hypot(a * self.sk.cos, b * self.sk.sin)


def _levels_poly(levels: list[tuple[np.ndarray, float]]) -> list[tuple[float, float]]:
    """Polygon through (centre pixel, half-width px) levels, left side down then right side up."""
    left = [(float(c[0] - hw), float(c[1])) for c, hw in levels]
    right = [(float(c[0] + hw), float(c[1])) for c, hw in reversed(levels)]
    return left + right


def _axis_point(fr: _Frame, y: float) -> np.ndarray:
    """Body-frame point on the trunk axis at height y (between neck and pelvis, lean included)."""
    j = fr.sk.joints
    top = j["neck"]
    bot = (j["l_hip"] + j["r_hip"]) / 2
    t = (y - top[1]) / max(bot[1] - top[1], 1e-6)
    p = top + (bot - top) * t
    return np.array([0.0, y, p[2]])


# ------------------------------------------------------------------------------------------- the person


def _draw_person(cv: _Canvas, fr: _Frame, ident: Identity, outfit: Outfit) -> list[tuple[str, object]]:
    """Draw all parts into the canvas in depth order; returns colour-only details (eyes, mouth, beard)."""
    sk = fr.sk
    j = sk.joints
    S = fr.scale
    b = ident.build
    hh = ident.head
    c, s = sk.cos, sk.sin
    y_sh = j["l_sho"][1]
    y_hip = j["l_hip"][1]
    upper = outfit.upper
    upper_label = _COAT if upper.kind == "coat" else _UPPER
    lower = outfit.lower
    items: list[tuple[float, float, Callable[[], None]]] = []  # (layer, near, draw function)

    # ---- arms
    for side in (1, -1):
        t = "l" if side == 1 else "r"
        sho, elb, wri, hand = (fr.j(f"{t}_{n}") for n in ("sho", "elb", "wri", "hand"))
        near = float(np.mean([sk.near(j[f"{t}_{n}"]) for n in ("sho", "elb", "wri")]))
        far = near < -0.03

        def draw_arm(side=side, sho=sho, elb=elb, wri=wri, hand=hand, far=far) -> None:
            shade = 0.84 if far else 1.0
            lab = _ARM[side]
            cv.capsule(sho, elb, 0.027 * b * S, 0.025 * b * S, lab, shade)
            cv.capsule(elb, wri, 0.026 * b * S, 0.02 * b * S, lab, shade)
            cv.capsule(wri, hand, 0.021 * S, 0.017 * S, lab, shade)
            extra = 0.01 if upper.kind == "coat" else 0.005
            if upper.kind == "tshirt":
                end = sho + (elb - sho) * upper.length
                cv.capsule(sho, end, (0.027 * b + 0.007) * S, (0.026 * b + 0.007) * S, upper_label, shade)
            else:
                cv.capsule(sho, elb, (0.027 * b + extra) * S, (0.025 * b + extra) * S, upper_label, shade)
                cv.capsule(elb, wri, (0.026 * b + extra) * S, (0.021 * b + extra) * S, upper_label, shade)

        items.append((0.0 if far else 5.0, near, draw_arm))

    # ---- legs
    for side in (1, -1):
        t = "l" if side == 1 else "r"
        hip, knee, ank = fr.j(f"{t}_hip"), fr.j(f"{t}_knee"), fr.j(f"{t}_ank")
        near = float(np.mean([sk.near(j[f"{t}_{n}"]) for n in ("hip", "knee", "ank")]))
        a3 = j[f"{t}_ank"]
        foot = []
        for lat in (-0.03, 0.03):
            for z in (j[f"{t}_heel"][2], j[f"{t}_toe"][2]):
                for y in (a3[1] - 0.012, j[f"{t}_toe"][1]):
                    foot.append(fr.px(np.array([a3[0] + lat, y, z])))
        shoe = _hull(np.array(foot))

        def draw_leg(side=side, hip=hip, knee=knee, ank=ank, shoe=shoe, near=near) -> None:
            shade = 0.86 if near < -0.03 else 1.0
            r_hip, r_knee, r_ank = 0.05 * b * S, 0.036 * b * S, 0.025 * b * S
            if lower.kind == "pants":
                cv.capsule(hip, knee, r_hip + 0.008 * S, r_knee + 0.008 * S, _PANTS, shade)
                cv.capsule(knee, ank, r_knee + 0.008 * S, r_ank + 0.01 * S, _PANTS, shade)
            else:
                cv.capsule(hip, knee, r_hip, r_knee, _LEG[side], shade)
                cv.capsule(knee, ank, r_knee, r_ank, _LEG[side], shade)
                if lower.kind == "shorts":
                    end = hip + (knee - hip) * lower.length
                    cv.capsule(hip, end, r_hip + 0.01 * S, r_knee + 0.012 * S, _PANTS, shade)
            cv.poly(shoe, _SHOE[side], shade * 0.95)

        items.append((1.0, near, draw_leg))

    # ---- lower trunk: pants/shorts top or skirt
    def draw_lower() -> None:
        hw = fr.half_width
        if lower.kind == "skirt":
            hem = y_hip + 0.02 + 0.2 * lower.length
            lv = [(y_hip - 0.085, ident.waist + 0.006, 0.062 * b), (y_hip + 0.02, ident.hip + 0.045 * b, 0.08 * b),
                  (hem, ident.hip + 0.05 + 0.07 * lower.length, 0.085 + 0.06 * lower.length)]
            lab = _SKIRT
        else:
            lv = [(y_hip - 0.085, ident.waist + 0.006, 0.062 * b), (y_hip + 0.02, ident.hip + 0.04 * b, 0.075 * b),
                  (y_hip + 0.07, ident.hip + 0.034 * b, 0.07 * b)]
            lab = _PANTS
        levels = [(fr.px(_axis_point(fr, y)), hw(a, bb)) for y, a, bb in lv]
        core = [(cc, h * 0.55) for cc, h in levels]
        cv.poly(_levels_poly(levels), lab, 1.0, _levels_poly(core))

    items.append((2.0, 0.0, draw_lower))

    # ---- neck, upper trunk, scarf
    def draw_neck() -> None:
        cv.capsule(fr.px(_axis_point(fr, hh - 0.01)), fr.px(_axis_point(fr, y_sh)), 0.03 * b * S, 0.032 * b * S, _FACE)

    items.append((3.0, 0.0, draw_neck))

    def draw_upper() -> None:
        hw = fr.half_width
        hem = y_hip + (0.13 if upper.kind == "coat" else 0.005)
        coat_extra = 0.012 if upper.kind == "coat" else 0.0
        lv = [(j["neck"][1] + 0.012, 0.036 * b, 0.036 * b),
              (y_sh - 0.008, ident.shoulder + 0.012 * b + coat_extra, 0.055 * b + coat_extra),
              (y_sh + 0.07, max(ident.shoulder * 0.93, ident.waist + 0.012) + 0.01 + coat_extra,
               0.07 * b + coat_extra),
              (y_hip - 0.09, ident.waist + coat_extra, 0.062 * b + coat_extra),
              (hem, ident.hip + 0.035 * b + 2 * coat_extra, 0.07 * b + coat_extra)]
        levels = [(fr.px(_axis_point(fr, y)), hw(a, bb)) for y, a, bb in lv]
        core = [(cc, h * 0.6) for cc, h in levels]
        cv.poly(_levels_poly(levels), upper_label, 1.0, _levels_poly(core))
        if upper.kind == "coat" and outfit.coat_open and c > 0.3:
            front = 0.068 * b + coat_extra
            strip = [(fr.px(_axis_point(fr, y) + np.array([0.0, 0.0, front])), S * 0.022 * c)
                     for y in (j["neck"][1] + 0.02, y_hip + 0.12)]
            cv.poly(_levels_poly(strip), _UPPER, 1.0)
        if outfit.scarf is not None:
            p0 = fr.px(_axis_point(fr, y_sh - 0.025) + np.array([0.045, 0.0, 0.02]))
            p1 = fr.px(_axis_point(fr, y_sh - 0.025) + np.array([-0.045, 0.0, 0.02]))
            cv.capsule(p0, p1, 0.026 * S, 0.026 * S, _SCARF)
            if c > -0.2:
                q0 = fr.px(_axis_point(fr, y_sh - 0.02) + np.array([0.025, 0.0, 0.06 * b]))
                q1 = fr.px(_axis_point(fr, y_sh + 0.13) + np.array([0.03, 0.0, 0.075 * b]))
                cv.capsule(q0, q1, 0.02 * S, 0.018 * S, _SCARF)

    items.append((4.0, 0.0, draw_upper))

    # ---- hair hanging behind the head (long / medium): behind the trunk when facing the camera
    style = ident.hair_style
    if style in ("long", "medium"):
        bottom = y_sh + (0.1 if style == "long" else -0.01)

        def draw_hair_panel() -> None:
            v = ident.hair_volume
            lv = [(hh * 0.45, 0.4 * hh * v, 0.32 * hh), (bottom, (0.5 if style == "long" else 0.4) * hh * v, 0.3 * hh)]
            levels = [(fr.px(j["head"] * np.array([1, 0, 1]) + np.array([0, y, -0.22 * hh])), fr.half_width(a, bb))
                      for y, a, bb in lv]
            cv.poly(_levels_poly(levels), _HAIR, 0.95)

        items.append((-0.5 if c > 0 else 4.6, 0.0, draw_hair_panel))

    # ---- head
    details: list[tuple[str, object]] = []

    def draw_head() -> None:
        hc = fr.j("head")
        rx = S * hh * math.hypot(0.37 * c, 0.44 * s)
        ry = S * hh * 0.5
        head3 = j["head"]

        def tail() -> None:
            if style == "ponytail":
                p0 = fr.px(head3 + np.array([0, -0.12 * hh, -0.42 * hh]))
                p1 = fr.px(head3 + np.array([0, 0.62 * hh, -0.55 * hh]))
                cv.capsule(p0, p1, 0.13 * hh * S, 0.08 * hh * S, _HAIR)
            elif style == "bun":
                cv.ellipse(fr.px(head3 + np.array([0, -0.36 * hh, -0.3 * hh])), 0.2 * hh * S, 0.2 * hh * S, _HAIR)

        if c > 0:
            tail()
        if style == "bald":
            cv.ellipse(hc, rx, ry, _FACE)
        else:
            grow = 1.0 if style == "buzz" else 1.05 * ident.hair_volume
            cv.ellipse(hc + np.array([0, -0.02 * hh * S]), rx * grow, ry * (grow + 0.01), _HAIR)
        hairline = {"bald": 0.5, "buzz": 0.34, "short": 0.27, "medium": 0.22}.get(style, 0.24)
        face_c = None
        if style != "bald" and c > -0.3:
            face_hw = rx * (0.58 + 0.3 * max(c, 0.0))
            face_c = np.array([hc[0] + s * rx * 0.42 * (1 - max(c, 0.0) * 0.9), hc[1] + (0.5 - hairline) / 2 * hh * S])
            cv.ellipse(face_c, face_hw, (0.5 + hairline) / 2 * hh * S, _FACE)
        elif style == "bald":
            face_c = hc
            face_hw = rx
        if style in ("medium", "long") and c > 0.3:
            for side in (1, -1):
                p0 = fr.px(head3 + np.array([side * 0.36 * hh, -0.12 * hh, 0.05 * hh]))
                p1 = fr.px(head3 + np.array([side * 0.4 * hh, (0.42 if style == "medium" else 0.7) * hh, 0.0]))
                cv.capsule(p0, p1, 0.1 * hh * S * ident.hair_volume, 0.09 * hh * S * ident.hair_volume, _HAIR)
        if c <= 0:
            tail()
        if outfit.hat is not None:
            cv_box = [float(hc[0] - rx * 1.1), float(hc[1] - 0.62 * hh * S), float(hc[0] + rx * 1.1),
                      float(hc[1] + 0.16 * hh * S)]
            cv.chord(cv_box, 180, 360, _HAT)
            brim = [fr.px(head3 + np.array([sd * 0.42 * hh, -0.22 * hh, 0.05 * hh])) for sd in (1, -1)]
            tip = fr.px(head3 + np.array([0.0, -0.2 * hh, 0.72 * hh]))
            for p in brim:
                cv.capsule(p, tip, 0.045 * hh * S, 0.05 * hh * S, _HAT, 0.9)
        eyes = [fr.px(head3 + np.array([sd * 0.16 * hh, -0.04 * hh, 0.36 * hh])) for sd in (1, -1)]
        if ident.glasses and c > 0.2:
            cv.capsule(eyes[0], eyes[1], 0.075 * hh * S, 0.075 * hh * S, _GLASSES, 0.8)
        elif c > 0.05:
            details.append(("eyes", (eyes, 0.045 * hh * S)))
        if face_c is not None and c > 0.3:
            details.append(("mouth", (fr.px(head3 + np.array([0.0, 0.3 * hh, 0.4 * hh])), 0.09 * hh * S * c,
                                      0.025 * hh * S)))
        if ident.beard and face_c is not None and c > -0.2:
            details.append(("beard", (np.array([face_c[0], hc[1] + 0.33 * hh * S]), face_hw * 0.85, 0.2 * hh * S)))

    items.append((6.0, 0.0, draw_head))

    for _, _, fn in sorted(items, key=lambda it: (it[0], it[1])):
        fn()
    return details


# ------------------------------------------------------------------------------------------- colour


def _noise_field(h: int, w: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [0, 1] with features of about `cell` pixels."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8), "L")
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def render_background(camera: Camera, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """The camera's scene as a float32 (h, w, 3) array: wall (textured) above the horizon, floor below."""
    yy = (np.arange(h, dtype=np.float32) / h)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    hor = float(np.clip(camera.horizon + rng.normal(0, 0.02), 0.4, 0.9))
    wall, wall2, floor = (np.asarray(v, np.float32) for v in (camera.wall, camera.wall2, camera.floor))
    t = np.clip(yy / hor, 0, 1)[..., None]
    img = wall * (1 - t) + wall2 * t
    img = np.broadcast_to(img, (h, w, 3)).copy()
    ts = camera.texture_scale
    off_x, off_y = rng.uniform(0, 400, 2)
    kind = camera.background
    wall_rows = yy[:, 0] < hor
    if kind == "bricks":
        bh = 0.05 * h * ts
        bw = 2.3 * bh
        yb = (np.arange(h)[:, None] + off_y) / bh
        row = np.floor(yb)
        xb = (xx + off_x + (row % 2) * bw / 2) / bw
        colr = np.floor(xb)
        jit = np.sin(row * 12.9898 + colr * 78.233) * 43758.5453
        jit = (jit - np.floor(jit) - 0.5) * 0.25
        mortar = ((yb - row) < 0.12) | ((xb - colr) < 0.05)
        fac = np.where(mortar, 1.25, 1.0 + jit)
        img[wall_rows] *= fac[wall_rows][..., None]
    elif kind == "panels":
        pw = 0.32 * w * ts
        xp = (xx + off_x) / pw
        k = np.floor(xp)
        frac = xp - k
        alt = (k % 2 == 1)[0]
        img[:, alt] = img[:, alt] * 0.82 + wall2 * 0.18
        frame = (frac < 0.05)[0]
        img[:, frame] *= 0.6
        win = ((frac > 0.25) & (frac < 0.75))[0]
        win_rows = (yy[:, 0] > hor * 0.15) & (yy[:, 0] < hor * 0.55)
        img[np.ix_(win_rows, win)] = img[np.ix_(win_rows, win)] * 0.4 + np.float32(200) * 0.6
    elif kind == "foliage":
        n = _noise_field(h, w, 10 * ts, rng)[..., None]
        n2 = _noise_field(h, w, 4 * ts, rng)[..., None]
        img[wall_rows] = (wall * n + wall2 * (1 - n))[wall_rows] * (0.8 + 0.4 * n2[wall_rows])
    floor_rows = ~wall_rows
    depth = np.clip((yy[:, 0] - hor) / max(1 - hor, 1e-3), 0, 1)[floor_rows]
    fl = floor[None, None, :] * (0.85 + 0.3 * depth)[:, None, None]
    fl = np.broadcast_to(fl, (int(floor_rows.sum()), w, 3)).copy()
    if kind == "tiles":
        tsz = 0.09 * h * ts
        ty = (np.arange(h)[floor_rows][:, None] + off_y) / tsz
        tx = (xx + off_x) / tsz
        chk = ((np.floor(ty) + np.floor(tx)) % 2 == 1)
        fl *= np.where(chk, 0.86, 1.06)[..., None]
    elif kind == "foliage":
        fl *= (0.9 + 0.2 * _noise_field(fl.shape[0], w, 3, rng))[..., None]
    img[floor_rows] = fl
    img[np.abs(yy[:, 0] - hor) < 0.006] *= 0.75  # skirting line
    return img


def _colour(ident: Identity, outfit: Outfit, lab: np.ndarray, fr: _Frame, top: float, cx: float) -> np.ndarray:
    """Per-pixel person colours (float32 HxWx3) for the label map, garment patterns included."""
    table = np.zeros((20, 3), np.float32)
    skin = np.asarray(ident.skin, np.float32)
    for lid in (_FACE, 14, 15, 16, 17):
        table[lid] = skin
    hair = np.asarray(ident.hair_colour, np.float32)
    table[_HAIR] = hair * 0.5 + skin * 0.5 if ident.hair_style == "buzz" else hair
    upper = outfit.upper
    table[_UPPER] = outfit.inner if upper.kind == "coat" else upper.colour
    table[_COAT] = upper.colour
    table[_PANTS] = outfit.lower.colour
    table[_SKIRT] = outfit.lower.colour
    table[18] = table[19] = outfit.shoes
    table[_GLASSES] = (35, 35, 40)
    if outfit.hat is not None:
        table[_HAT] = outfit.hat
    if outfit.scarf is not None:
        table[_SCARF] = outfit.scarf
    col = table[lab]
    S = fr.scale
    for garment, labels in ((upper, (_COAT,) if upper.kind == "coat" else (_UPPER,)), (outfit.lower, (_PANTS, _SKIRT))):
        if garment.pattern == "solid":
            continue
        mask = np.isin(lab, labels)
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            continue
        period = garment.period * S
        v = np.floor((ys - top) / period)
        if garment.pattern == "stripes":
            sel = v % 2 == 1
        else:
            u = np.floor((xs - cx) / period)
            sel = (u + v) % 2 == 1
        col[ys[sel], xs[sel]] = col[ys[sel], xs[sel]] * 0.2 + np.asarray(garment.colour2, np.float32) * 0.8
    return col


def _apply_details(col: np.ndarray, lab: np.ndarray, details, ident: Identity, offset: tuple[int, int]) -> None:
    w, h = lab.shape[1], lab.shape[0]
    layer = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(layer)
    ox, oy = offset
    for kind, spec in details:
        if kind == "eyes":
            eyes, r = spec
            for e in eyes:
                d.ellipse([e[0] - ox - r, e[1] - oy - r * 0.8, e[0] - ox + r, e[1] - oy + r * 0.8], fill=1)
        elif kind == "mouth":
            m, rx, ry = spec
            d.ellipse([m[0] - ox - rx, m[1] - oy - ry, m[0] - ox + rx, m[1] - oy + ry], fill=2)
        elif kind == "beard":
            bc, rx, ry = spec
            # draw the beard below the eyes only: an ellipse over the jaw
            d.ellipse([bc[0] - ox - rx, bc[1] - oy - ry, bc[0] - ox + rx, bc[1] - oy + ry], fill=3)
    det = np.asarray(layer)
    face = lab == _FACE
    hair = np.asarray(ident.hair_colour, np.float32)
    m = (det == 3) & face
    col[m] = col[m] * 0.35 + hair * 0.65
    m = (det == 1) & face
    col[m] = col[m] * 0.25 + np.float32(25) * 0.75
    m = (det == 2) & face
    col[m] = col[m] * 0.6 + np.asarray((120, 40, 40), np.float32) * 0.4


def render_person(ident: Identity, outfit: Outfit, camera: Camera, pose: Pose, size: tuple[int, int],
                  rng: np.random.Generator) -> Rendered:
    """Render `ident` wearing `outfit` in `pose` as seen by `camera` into a (w, h) = `size` crop."""
    w, h = size
    W, H = 2 * w, 2 * h
    sk = build_skeleton(ident, pose)
    fill = float(np.clip(camera.fill * (1 + 0.9 * (ident.stature - 0.97)) + rng.normal(0, 0.012), 0.7, 0.95))
    scale = fill * H
    foot_y = H * (1 - rng.uniform(0.025, 0.055))
    xs = [sk.xy(p)[0] for p in sk.joints.values()]
    mid = (min(xs) + max(xs)) / 2
    cx = W / 2 - mid * scale + rng.normal(0, 0.02 * W)
    fr = _Frame(sk=sk, cx=cx, foot_y=foot_y, scale=scale)

    cv = _Canvas(W, H)
    details = _draw_person(cv, fr, ident, outfit)
    lab = np.asarray(cv.lab)
    inst = np.asarray(cv.inst)
    person = lab > 0

    # the scene at 1x, repeated to 2x: background pixels come back unchanged from the 2x -> 1x box filter
    bg = np.repeat(np.repeat(render_background(camera, w, h, rng), 2, axis=0), 2, axis=1)
    # soft contact shadow under the feet (blurred inside a small window only)
    feet_x = (fr.j("l_ank")[0] + fr.j("r_ank")[0]) / 2
    rx, ry = 0.17 * scale, 0.025 * scale
    sx0, sx1 = max(0, int(feet_x - rx) - 10), min(W, int(feet_x + rx) + 11)
    sy0, sy1 = max(0, int(foot_y - ry) - 10), min(H, int(foot_y + ry) + 11)
    if sx1 - sx0 > 2 and sy1 - sy0 > 2:
        sh = Image.new("L", (sx1 - sx0, sy1 - sy0), 0)
        ImageDraw.Draw(sh).ellipse([feet_x - rx - sx0, foot_y - ry - sy0, feet_x + rx - sx0, foot_y + ry - sy0],
                                   fill=255)
        shadow = ndimage.gaussian_filter(np.asarray(sh, np.float32) / 255.0, 3.0)
        bg[sy0:sy1, sx0:sx1] *= (1 - 0.4 * shadow)[..., None]

    # the person: colour, details and shading inside its bounding box (+ margin for the shading blur)
    img = bg
    ys, xs = np.nonzero(person)
    if ys.size:
        m = 6
        y0, y1 = max(0, int(ys.min()) - m), min(H, int(ys.max()) + m + 1)
        x0, x1 = max(0, int(xs.min()) - m), min(W, int(xs.max()) + m + 1)
        lab_c = lab[y0:y1, x0:x1]
        inst_c = inst[y0:y1, x0:x1]
        person_c = person[y0:y1, x0:x1]
        col = _colour(ident, outfit, lab_c, fr, fr.foot_y - scale - y0, fr.cx - x0)
        _apply_details(col, lab_c, details, ident, (x0, y0))
        shade = np.asarray(cv.shade, np.float32)[y0:y1, x0:x1] / _SHADE_UNIT
        shade = ndimage.gaussian_filter(shade, 1.4)
        edge = np.zeros_like(person_c)
        edge[:, :-1] |= inst_c[:, :-1] != inst_c[:, 1:]
        edge[:-1] |= inst_c[:-1] != inst_c[1:]
        shade[edge] *= 0.8
        region = img[y0:y1, x0:x1]
        region[person_c] = col[person_c] * shade[person_c][:, None]
    # 2x -> 1x box filter, then the camera's illumination (brightness, colour cast, vertical falloff) and noise
    small = (img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2]) * np.float32(0.25)
    light = np.float32(camera.brightness) * (1.06 - 0.14 * (np.arange(h, dtype=np.float32) * 2 + 0.5) / H)
    small = small * light[:, None, None] * np.asarray(camera.cast, np.float32)
    small = small + rng.normal(0.0, camera.noise, small.shape).astype(np.float32)
    image = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    labels = np.ascontiguousarray(lab[1::2, 1::2])  # nearest-neighbour 2x downsample (PIL NEAREST picks 2i+1)

    kxy, occluded = coco_keypoints(sk, ident.head)
    kp2 = np.stack([cx + kxy[:, 0] * scale, foot_y + (kxy[:, 1] - 1.0) * scale], axis=1)
    kp = (kp2 - 0.5) / 2.0  # 2x pixel coordinates -> 1x (pixel j covers 2x pixels 2j, 2j+1)
    kp[:, 0] = np.clip(kp[:, 0], 0, w - 1)
    kp[:, 1] = np.clip(kp[:, 1], 0, h - 1)
    return Rendered(image=image, labels=labels, keypoints=kp, occluded=occluded)
