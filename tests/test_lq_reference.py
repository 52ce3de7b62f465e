"""Reference LQ artifacts (rlq.lq.reference) against OpenCV and hand-computed cases (docs/method.md §5.2).

Tolerances: Gaussian/motion blur images vs OpenCV's float64 path: max |diff| <= 1 grey level (rounding
ties); vs OpenCV's uint8 fixed-point path: max |diff| <= 2 and >= 99 % of pixels within 1. Motion kernels
vs cv2.warpAffine on float32: entries within 0.02 (OpenCV quantises bilinear weights to 1/32).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from rlq.errors import ConfigError
from rlq.lq.reference import (
    ARTIFACTS,
    apply_artifact,
    defocus,
    gaussian_kernel1d,
    motion_blur,
    motion_kernel,
    pixelate,
    pixelated_size,
)


def _img(h: int, w: int, seed: int, smooth: bool = False) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if smooth:  # natural-image-like content as well as pure noise
        arr = cv2.GaussianBlur(arr, (5, 5), 1.2)
    return arr


def _cv_motion_kernel(n: int, angle: float) -> np.ndarray:
    k = np.zeros((n, n), np.float32)
    k[(n - 1) // 2, :] = 1
    m = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), angle, 1.0)
    k = cv2.warpAffine(k, m, (n, n))
    return k / k.sum()


# ---------------------------------------------------------------------------------------------- pixelation


@pytest.mark.parametrize(
    ("size", "s", "expected"),
    [((64, 128), 16, (16, 32)), ((100, 37), 20, (54, 20)), ((50, 50), 16, (16, 16)),
     ((128, 256), 63, (63, 126)), ((30, 45), 16, (16, 24)), ((45, 30), 20, (30, 20)),
     # round(21 * 5 / 2) = round(52.5) = 52 (Python rounds half to even)
     ((2, 21), 5, (5, 52))],
)
def test_pixelated_size_hand_computed(size, s, expected):
    assert pixelated_size(size, s) == expected
    assert pixelate(Image.new("RGB", size), s).size == expected


def _authors_pixelated_size(w, h, s):
    # The authors' create_low_res written out: ratio = s / min(side); PIL size (round(W * ratio), round(H * ratio)).
    ratio = s / min(w, h)
    return round(w * ratio), round(h * ratio)


def test_pixelated_size_equals_the_authors_formula_on_a_grid_with_half_ties():
    from rlq.lq.batched import pixelated_hw

    ties = differ = 0
    for short in range(2, 41):
        for side in range(short, 161):
            for s in range(1, 64):
                if (2 * side * s) % short == 0 and (2 * side * s // short) % 2 == 1:
                    ties += 1  # side * s / short is exactly k + 0.5
                differ += round(side * s / short) != round(side * (s / short))
                for w, h in ((short, side), (side, short)):
                    expected = _authors_pixelated_size(w, h, s)
                    assert pixelated_size((w, h), s) == expected, (w, h, s)
                    assert pixelated_hw(h, w, s) == expected[::-1], (w, h, s)
    # the grid covers exact .5 ties, and cases where the product-first formula rounds the other way
    assert ties > 1000 and differ > 10


def test_pixelate_restore_and_content():
    arr = _img(128, 64, 0)
    img = Image.fromarray(arr)
    small = pixelate(img, 16)
    assert small.size == (16, 32) and small.mode == "RGB"
    # PIL's default filter for RGB is bicubic: the reference must equal the default-filter resize.
    assert np.array_equal(np.asarray(small), np.asarray(img.resize((16, 32))))
    back = pixelate(img, 16, restore_size=(64, 128))
    assert back.size == (64, 128)
    assert np.array_equal(np.asarray(back), np.asarray(small.resize((64, 128), Image.Resampling.BILINEAR)))
    # Pixelating noise removes high-frequency energy.
    def hf(a):
        return np.abs(np.diff(a.astype(float), axis=1)).mean()

    assert hf(np.asarray(back)) < 0.5 * hf(arr)
    # A constant image stays constant.
    flat = Image.new("RGB", (64, 128), (90, 140, 200))
    assert np.all(np.asarray(pixelate(flat, 20, restore_size=(64, 128))) == (90, 140, 200))


def test_pixelate_rejects_bad_size():
    with pytest.raises(ConfigError):
        pixelate(Image.new("RGB", (10, 20)), 0)


# ---------------------------------------------------------------------------------------------- defocus


def test_gaussian_kernel_hand_computed_and_opencv():
    e = math.exp(-0.5)
    np.testing.assert_allclose(gaussian_kernel1d(3, 1.0), np.array([e, 1, e]) / (1 + 2 * e), rtol=1e-12)
    for k, s in [(5, 0.1), (7, 1.0), (9, 2.0), (21, 2.0), (21, 0.37), (13, 5.0)]:
        ref = cv2.getGaussianKernel(k, s, cv2.CV_64F)[:, 0]
        np.testing.assert_allclose(gaussian_kernel1d(k, s), ref, atol=1e-12)
        assert gaussian_kernel1d(k, s).sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("k", "sigma"), [(5, 0.1), (5, 1.3), (7, 1.0), (11, 2.0), (21, 0.5), (21, 2.0)])
@pytest.mark.parametrize("smooth", [False, True])
def test_defocus_matches_opencv(k, sigma, smooth):
    arr = _img(41, 27, k * 10 + int(smooth), smooth)
    ours = np.asarray(defocus(Image.fromarray(arr), k, sigma)).astype(int)
    ref64 = cv2.GaussianBlur(arr.astype(np.float64), (k, k), sigmaX=sigma, sigmaY=sigma,
                             borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(ours - np.clip(np.rint(ref64), 0, 255)).max() <= 1
    ref8 = cv2.GaussianBlur(arr, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    d = np.abs(ours - ref8.astype(int))
    assert d.max() <= 2 and (d <= 1).mean() >= 0.99


@pytest.mark.parametrize(("k", "sigma"), [(4, 1.0), (0, 1.0), (5, 0.0), (5, float("nan"))])
def test_defocus_rejects_bad_params(k, sigma):
    with pytest.raises(ConfigError):
        gaussian_kernel1d(k, sigma)


# ---------------------------------------------------------------------------------------------- motion


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9, 12, 15, 19, 20])
@pytest.mark.parametrize("angle", [0, 7, 30, 45, 90, 111.5, 135, 179, -25])
def test_motion_kernel_matches_opencv(n, angle):
    k = motion_kernel(n, angle)
    assert k.shape == (n, n)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert (k >= 0).all()
    np.testing.assert_allclose(k, _cv_motion_kernel(n, angle), atol=0.02)


def test_motion_kernel_hand_computed():
    # angle 0: the unrotated row, each entry 1/n.
    k = motion_kernel(8, 0)
    expected = np.zeros((8, 8))
    expected[3, :] = 1 / 8
    np.testing.assert_allclose(k, expected, atol=1e-12)
    # odd n, 90 degrees about the exact centre: a column of 1/n.
    k = motion_kernel(9, 90)
    expected = np.zeros((9, 9))
    expected[:, 4] = 1 / 9
    np.testing.assert_allclose(k, expected, atol=1e-12)
    # odd n, 45 degrees counter-clockwise (y down): the anti-diagonal through the centre dominates.
    k = motion_kernel(9, 45)
    assert k[1, 7] > 0 == k[1, 1] and k[7, 1] > 0 == k[7, 7] and k[4, 4] == pytest.approx(k.max())
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)  # point-symmetric about the centre


@pytest.mark.parametrize(("n", "angle"), [(8, 0), (9, 45), (12, 90), (15, 61), (19, 133), (20, 7)])
@pytest.mark.parametrize("smooth", [False, True])
def test_motion_blur_matches_opencv_filter2d(n, angle, smooth):
    arr = _img(37, 29, n + int(smooth), smooth)
    k = motion_kernel(n, angle)
    ours = np.asarray(motion_blur(Image.fromarray(arr), n, angle)).astype(int)
    ref64 = cv2.filter2D(arr.astype(np.float64), -1, k, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(ours - np.clip(np.rint(ref64), 0, 255)).max() <= 1
    ref8 = cv2.filter2D(arr, -1, k.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(ours - ref8.astype(int)).max() <= 1


def test_motion_blur_is_correlation_not_convolution():
    # An asymmetric (even-size) kernel distinguishes the two; filter2D correlates.
    arr = np.zeros((21, 21, 3), np.uint8)
    arr[10, 10] = 240
    out = np.asarray(motion_blur(Image.fromarray(arr), 8, 0)).astype(int)
    ref = cv2.filter2D(arr, -1, motion_kernel(8, 0).astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    assert np.array_equal(out, ref.astype(int))
    # Kernel row 3, anchor (4, 4): out(y, x) = sum_j K[3, j] * I[y - 1, x + j - 4] -> the impulse at
    # (10, 10) reaches row 11 and columns 14 - j for j = 0..7 (a convolution would give row 9).
    assert set(np.nonzero(out[..., 0])[0]) == {11}
    assert sorted(set(np.nonzero(out[..., 0])[1])) == list(range(7, 15))


# ---------------------------------------------------------------------------------------------- dispatch


def test_apply_artifact_dispatch_and_determinism():
    img = Image.fromarray(_img(96, 48, 3, smooth=True))
    cases = {
        "pixelation": ({"s": 20, "restore_size": (48, 96)}, pixelate(img, 20, restore_size=(48, 96))),
        "defocus": ({"k": 9, "sigma": 1.5}, defocus(img, 9, 1.5)),
        "motion": ({"n": 11, "angle": 30}, motion_blur(img, 11, 30)),
    }
    assert set(cases) == set(ARTIFACTS)
    for name, (params, direct) in cases.items():
        a = apply_artifact(img, name, params)
        b = apply_artifact(img, name, params)
        assert a.tobytes() == b.tobytes() == direct.tobytes()
        assert not np.array_equal(np.asarray(a), np.asarray(img))
    with pytest.raises(ConfigError, match="unknown LQ artifact"):
        apply_artifact(img, "jpeg", {})
    with pytest.raises(ConfigError, match="takes parameters"):
        apply_artifact(img, "defocus", {"k": 5})
