"""Parametric 3-D stick figure -> projected joints and the 17 COCO keypoints (docs/method.md §3.4 order).

Body frame (units: body heights, head top to sole = 1): X points to the person's own left, Y down,
Z forward. A yaw rotation about the vertical axis and an orthographic projection give image-plane
coordinates: yaw 0 faces the camera (the person's left appears on the image right), 90 faces image
right, 180 shows the back. ``near`` is the signed distance towards the camera (used for draw order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlq.data.synth.identities import Camera, Identity

__all__ = [
    "COCO_KEYPOINTS",
    "ACTIONS",
    "ARM_POSES",
    "Pose",
    "Session",
    "sample_session",
    "frame_pose",
    "Skeleton",
    "build_skeleton",
    "coco_keypoints",
]

COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
ACTIONS = ("walk", "stand")
ARM_POSES = ("swing", "down", "hip", "raised", "phone", "texting", "pocket")

_UPPER_ARM = 0.172
_FOREARM = 0.148
_HAND = 0.058
_THIGH = 0.222
_SHIN = 0.215  # knee to ankle
_ANKLE_H = 0.042  # ankle above the sole


@dataclass(frozen=True)
class Session:
    """What a person does while one camera sees one outfit: action, gesture, heading, gait phase."""

    action: str
    arms: str
    arm_side: int  # +1 = left arm gestures, -1 = right arm
    yaw: float  # base heading (degrees)
    phase0: float
    dphase: float  # gait phase advance per frame


@dataclass(frozen=True)
class Pose:
    """One frame's pose: heading, action, gait phase, arm gesture and small per-limb angle noise."""

    yaw: float
    action: str
    phase: float
    arms: str
    arm_side: int
    lean: float
    noise: tuple[float, ...]  # 10 angle perturbations (degrees)


def sample_session(camera: Camera, rng: np.random.Generator) -> Session:
    """Draw a session (heading from the camera's viewpoint tendency, action and gesture)."""
    view = int(rng.choice(3, p=camera.view_probs))
    if view == 0:
        yaw = rng.normal(0.0, 18.0)
    elif view == 1:
        yaw = 180.0 + rng.normal(0.0, 18.0)
    else:
        yaw = (90.0 if rng.random() < camera.side_right else -90.0) + rng.normal(0.0, 15.0)
    action = "walk" if rng.random() < 0.68 else "stand"
    if action == "walk":
        arms = str(rng.choice(("swing", "phone", "texting", "pocket"), p=(0.76, 0.08, 0.1, 0.06)))
    else:
        arms = str(rng.choice(("down", "hip", "raised", "phone", "texting", "pocket"),
                              p=(0.38, 0.16, 0.1, 0.12, 0.14, 0.1)))
    return Session(action=action, arms=arms, arm_side=1 if rng.random() < 0.5 else -1, yaw=float(yaw),
                   phase0=float(rng.uniform(0, 2 * math.pi)), dphase=float(rng.uniform(0.5, 1.6)))


def frame_pose(session: Session, t: int, rng: np.random.Generator) -> Pose:
    """The pose of frame `t` of a session, with per-frame jitter drawn from `rng`."""
    return Pose(
        yaw=float(session.yaw + rng.normal(0.0, 6.0)), action=session.action,
        phase=float(session.phase0 + t * session.dphase + rng.normal(0.0, 0.15)), arms=session.arms,
        arm_side=session.arm_side, lean=float(rng.normal(0.0, 0.012)),
        noise=tuple(float(v) for v in rng.normal(0.0, 4.0, 10)),
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _dir(abduct: float, flex: float, side: int) -> np.ndarray:
    """Limb direction: from hanging down, `abduct` degrees outwards (towards the limb's side), `flex` forwards."""
    a, f = math.radians(abduct), math.radians(flex)
    return np.array([side * math.sin(a), math.cos(a) * math.cos(f), math.cos(a) * math.sin(f)])


@dataclass(frozen=True)
class Skeleton:
    """3-D joints (body frame) and their projection: xy (image plane, body heights) and near (depth)."""

    joints: dict[str, np.ndarray]
    yaw: float

    @property
    def cos(self) -> float:
        return math.cos(math.radians(self.yaw))

    @property
    def sin(self) -> float:
        return math.sin(math.radians(self.yaw))

    def xy(self, p: np.ndarray) -> np.ndarray:
        """Image-plane (x, y) of a body-frame point (orthographic projection after the yaw)."""
        return np.array([p[0] * self.cos + p[2] * self.sin, p[1]])

    def near(self, p: np.ndarray) -> float:
        """Signed distance of a body-frame point towards the camera."""
        return float(p[2] * self.cos - p[0] * self.sin)

    def point(self, name: str) -> np.ndarray:
        return self.xy(self.joints[name])


def _arm(side: int, pose: Pose, ident: Identity, walk: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper arm, forearm and hand directions of the arm on `side` (+1 left, -1 right)."""
    nz = pose.noise[0:3] if side == 1 else pose.noise[3:6]
    gesture = pose.arms
    both = gesture in ("texting", "hip", "pocket")
    mine = both or side == pose.arm_side
    if walk and (gesture == "swing" or not mine):
        swing = -side * ident.arm_swing * math.sin(pose.phase)  # opposite to the same-side leg
        up = _dir(7 + nz[0] * 0.5, swing + nz[1], side)
        fore = _dir(7, swing + 18 + max(0.0, swing) * 0.8 + nz[2], side)
        return up, fore, fore
    if gesture in ("down", "swing") or not mine:
        up = _dir(6 + nz[0] * 0.5, nz[1], side)
        fore = _dir(5, 8 + nz[2], side)
        return up, fore, fore
    if gesture == "hip":
        up = _unit(np.array([side * 0.68, 0.72, -0.12]) + np.array(nz) * 0.01)
        fore = _unit(np.array([-side * 0.75, 0.62, -0.12]))
        return up, fore, _unit(np.array([-side * 0.3, 0.9, 0.0]))
    if gesture == "raised":
        up = _dir(125 + nz[0], 12 + nz[1], side)
        fore = _dir(165 + nz[2], 8, side)
        return up, fore, fore
    if gesture == "phone":
        up = _unit(np.array([side * 0.32, 0.88, 0.34]) + np.array(nz) * 0.01)
        fore = _unit(np.array([-side * 0.42, -0.86, 0.22]))
        return up, fore, fore
    if gesture == "texting":
        up = _unit(np.array([side * 0.12, 0.96, 0.22]) + np.array(nz) * 0.01)
        fore = _unit(np.array([-side * 0.32, -0.12, 0.94]))
        return up, fore, fore
    # pocket
    up = _dir(10 + nz[0] * 0.5, -6 + nz[1], side)
    fore = _unit(np.array([-side * 0.16, 0.97, 0.12]))
    return up, fore, fore


def build_skeleton(ident: Identity, pose: Pose) -> Skeleton:
    """3-D joints of `ident` in `pose`, shifted so that the lowest sole touches y = 1."""
    hh = ident.head
    j: dict[str, np.ndarray] = {}
    j["head"] = np.array([0.0, hh / 2, 0.0])
    j["neck"] = np.array([0.0, hh + 0.02, 0.0])
    y_sh = hh + 0.056
    leg_len = (_THIGH + _SHIN) * ident.leg
    y_hip = 1.0 - _ANKLE_H - leg_len
    walk = pose.action == "walk"
    for side, tag in ((1, "l"), (-1, "r")):
        j[f"{tag}_sho"] = np.array([side * ident.shoulder, y_sh, 0.0])
        j[f"{tag}_hip"] = np.array([side * ident.hip, y_hip, 0.0])
        up, fore, hand = _arm(side, pose, ident, walk)
        j[f"{tag}_elb"] = j[f"{tag}_sho"] + _UPPER_ARM * up
        j[f"{tag}_wri"] = j[f"{tag}_elb"] + _FOREARM * fore
        j[f"{tag}_hand"] = j[f"{tag}_wri"] + _HAND * hand
        nz = pose.noise[6:8] if side == 1 else pose.noise[8:10]
        if walk:
            ph = pose.phase + (0.0 if side == 1 else math.pi)
            thigh = ident.stride * math.sin(ph) + nz[0] * 0.5
            knee = 5 + 38 * max(0.0, math.cos(ph + 0.15)) ** 2  # flexion peaks in early swing
            spread = 2.0
        else:
            thigh = nz[0] * 0.6
            knee = 3 + abs(nz[1]) * 0.5
            spread = 4.0 + nz[1] * 0.4
        j[f"{tag}_knee"] = j[f"{tag}_hip"] + _THIGH * ident.leg * _dir(spread, thigh, side)
        j[f"{tag}_ank"] = j[f"{tag}_knee"] + _SHIN * ident.leg * _dir(spread * 0.5, thigh - knee, side)
        a = j[f"{tag}_ank"]
        j[f"{tag}_toe"] = a + np.array([side * 0.01, _ANKLE_H, 0.085])
        j[f"{tag}_heel"] = a + np.array([0.0, _ANKLE_H, -0.028])
    # Lean the upper body a little (rotate about the hip line in the sagittal plane).
    for name in ("head", "neck", "l_sho", "r_sho", "l_elb", "r_elb", "l_wri", "r_wri", "l_hand", "r_hand"):
        p = j[name]
        j[name] = p + np.array([0.0, 0.0, -pose.lean * (p[1] - y_hip) * 4])
    lowest = max(j["l_toe"][1], j["r_toe"][1], j["l_heel"][1], j["r_heel"][1])
    shift = np.array([0.0, 1.0 - lowest, 0.0])
    return Skeleton(joints={k: v + shift for k, v in j.items()}, yaw=pose.yaw)


def _face_points(sk: Skeleton, hh: float) -> dict[str, np.ndarray]:
    c = sk.joints["head"]
    return {
        "nose": c + np.array([0.0, 0.1 * hh, 0.44 * hh]),
        "l_eye": c + np.array([0.16 * hh, -0.04 * hh, 0.36 * hh]),
        "r_eye": c + np.array([-0.16 * hh, -0.04 * hh, 0.36 * hh]),
        "l_ear": c + np.array([0.36 * hh, 0.02 * hh, -0.02 * hh]),
        "r_ear": c + np.array([-0.36 * hh, 0.02 * hh, -0.02 * hh]),
    }


_COCO_JOINTS = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_sho", "r_sho", "l_elb", "r_elb", "l_wri", "r_wri",
                "l_hip", "r_hip", "l_knee", "r_knee", "l_ank", "r_ank")


def coco_keypoints(sk: Skeleton, head: float) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 keypoints (17, 2) in the image plane (body heights) and an occlusion flag per keypoint."""
    pts = {**sk.joints, **_face_points(sk, head)}
    xy = np.stack([sk.xy(pts[n]) for n in _COCO_JOINTS])
    occluded = np.zeros(17, dtype=bool)
    c = sk.cos
    # Face points facing away from the camera, and far-side limbs in side views, are hidden.
    occluded[0:3] = c < -0.15
    for i, n in enumerate(_COCO_JOINTS[3:], start=3):
        occluded[i] = sk.near(pts[n]) < -0.045
    return xy, occluded
