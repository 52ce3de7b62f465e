"""Batched LQ synthesis (rlq.lq.batched), mixes (rlq.lq.mix), severity grids and preview, against references.

References: the per-image numpy/PIL path of rlq.lq.reference, OpenCV / torchvision (the official code's own
operators) where installed, hand-computed kernels, and the docs/method.md §5.2 numbers.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from rlq.errors import ConfigError, RlqError
from rlq.lq import reference
from rlq.lq.batched import (
    defocus_batch,
    gaussian_kernels1d,
    motion_blur_batch,
    motion_kernels,
    pixelated_hw,
    reference_synthesize,
    synthesize_batch,
)
from rlq.lq.mix import ARTIFACT_CODES, LQ_RANGES, LQMix, draw_lq, draw_params, mix_for_dataset
from rlq.lq.preview import PREVIEW_BLOCK_GAP, PREVIEW_LABEL_H, PREVIEW_PAD, lq_preview_sheet, preview_grid
from rlq.lq.severity import SEVERITY_ARTIFACTS, SEVERITY_GRID, defocus_kernel_size, degrade_batch

PIX, MOT = ARTIFACT_CODES["pixelation"], ARTIFACT_CODES["motion"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Tiny convolutions: OpenMP threads only contend (on 2 busy cores a 9x9 conv went from 0.1 ms to 30 ms).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured test image: smooth colour field + noise + hard black/white edges (uint8 h x w x 3)."""
    base = rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
    img = img + rng.integers(-25, 26, img.shape)
    img[h // 3 : h // 3 + 3] = 255
    img[:, w // 2 : w // 2 + 2] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def _batch(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.cpu() * 255).round().to(torch.int64).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- mixes and ranges (docs/method.md §5.2)


def test_mix_thresholds_match_the_spec_comparisons():
    ltcc = mix_for_dataset("LTCC")
    assert [ltcc.select(r) for r in (0.0, 0.3299999, 0.33, 0.5, 0.63, 0.6300001, 1.0)] == [
        "pixelation", "pixelation", "motion", "motion", "motion", "defocus", "defocus"
    ]  # fmt: skip
    prcc = mix_for_dataset("prcc")
    assert [prcc.select(r) for r in (0.0, 0.5, 0.5000001, 0.99)] == ["defocus", "defocus", "pixelation", "pixelation"]
    fallback = mix_for_dataset("my-custom-set")
    assert [fallback.select(r) for r in (0.1, 0.5, 0.5000001)] == ["motion", "motion", "pixelation"]
    assert mix_for_dataset("LaST") == ltcc and mix_for_dataset("synthcc") == ltcc
    assert mix_for_dataset("DeepChange") == prcc and mix_for_dataset("deep_change") == prcc


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ltcc", {"pixelation": 0.33, "motion": 0.30, "defocus": 0.37}),
        ("last", {"pixelation": 0.33, "motion": 0.30, "defocus": 0.37}),
        ("prcc", {"pixelation": 0.5, "motion": 0.0, "defocus": 0.5}),
        ("deepchange", {"pixelation": 0.5, "motion": 0.0, "defocus": 0.5}),
        ("unknown", {"pixelation": 0.5, "motion": 0.5, "defocus": 0.0}),
    ],
)
def test_empirical_mix_frequencies(name, expected):
    mix = mix_for_dataset(name)
    assert mix.probabilities() == pytest.approx(expected)
    rng = np.random.default_rng(123)
    codes = np.array([draw_lq(rng, mix)[0] for _ in range(20_000)])
    for artifact, p in expected.items():
        freq = float(np.mean(codes == ARTIFACT_CODES[artifact]))
        assert abs(freq - p) < 0.015, (name, artifact, freq, p)
        if p == 0:
            assert freq == 0


def test_from_probs():
    mix = LQMix.from_probs(pixelation=0.2, motion=0.3, defocus=0.5)
    assert mix.probabilities() == pytest.approx({"pixelation": 0.2, "motion": 0.3, "defocus": 0.5})
    assert [mix.select(r) for r in (0.19, 0.21, 0.49, 0.51, 1.0)] == ["pixelation", "motion", "motion", "defocus", "defocus"]
    only = LQMix.from_probs(motion=1.0)
    rng = np.random.default_rng(0)
    assert {draw_lq(rng, only)[0] for _ in range(200)} == {MOT}
    with pytest.raises(ConfigError, match="sum"):
        LQMix.from_probs(pixelation=0.5, motion=0.6)
    with pytest.raises(ConfigError):
        LQMix.from_probs(pixelation=-0.5, motion=1.5)
    with pytest.raises(ConfigError):
        LQMix((("blur", 1.0, True),))


@pytest.mark.parametrize("ranges", ["official", "paper"])
def test_params_stay_in_their_ranges(ranges):
    rng = np.random.default_rng(7)
    draws = {a: np.stack([draw_params(rng, a, ranges) for _ in range(4000)]) for a in ARTIFACT_CODES}
    for p in draws.values():
        assert p.dtype == np.float32 and p.shape == (4000, 3)
    s = draws["pixelation"]
    s_hi = 63 if ranges == "official" else 64  # code: range(16, 64); paper: "[16x16, 64x64]" inclusive
    assert set(s[:, 0].astype(int)) == set(range(16, s_hi + 1)) and np.all(s[:, 1:] == 0) and np.all(s[:, 0] % 1 == 0)
    d = draws["defocus"]
    assert set(d[:, 0].astype(int)) == set(range(5, 22, 2)) and np.all(d[:, 2] == 0)
    assert d[:, 1].min() >= np.float32(0.1) and d[:, 1].max() <= np.float32(2.0) and np.ptp(d[:, 1]) > 1.8
    m = draws["motion"]
    n_hi = 19 if ranges == "official" else 20  # docs/method.md §5.2 / §10 motion-blur row
    assert set(m[:, 0].astype(int)) == set(range(8, n_hi + 1)) and np.all(m[:, 2] == 0)
    assert m[:, 1].min() >= 0 and m[:, 1].max() < 180
    if ranges == "official":
        assert set(m[:, 1].astype(int)) == set(range(180)) and np.all(m[:, 1] % 1 == 0)
    else:
        assert np.mean(m[:, 1] % 1 != 0) > 0.99 and m[:, 1].max() > 179
    assert LQ_RANGES[ranges].name == ranges
    with pytest.raises(ConfigError):
        draw_params(rng, "pixelation", "nonsense")


def test_draws_are_deterministic_per_seed():
    mix = mix_for_dataset("ltcc")
    a = [draw_lq(np.random.default_rng(5), mix) for _ in range(3)]
    b = [draw_lq(np.random.default_rng(5), mix) for _ in range(3)]
    assert all(x[0] == y[0] and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    rng1, rng2 = np.random.default_rng(11), np.random.default_rng(12)
    s1 = [draw_lq(rng1, mix) for _ in range(50)]
    s2 = [draw_lq(rng2, mix) for _ in range(50)]
    assert any(x[0] != y[0] or not np.array_equal(x[1], y[1]) for x, y in zip(s1, s2))


# ---------------------------------------------------------------- kernels


def test_pixelated_size_matches_reference():
    for h, w in [(256, 128), (128, 256), (50, 37), (37, 50), (64, 64), (99, 31)]:
        for s in (1, 7, 16, 33, 63):
            ph, pw = pixelated_hw(h, w, s)
            assert (pw, ph) == reference.pixelated_size((w, h), s)
    assert pixelated_hw(256, 128, 20) == (40, 20)  # hand-computed: shorter side 128 -> 20, 256 -> 40


def test_gaussian_kernels_match_reference_and_are_centred():
    k = torch.tensor([5, 21, 9, 1])
    sigma = torch.tensor([0.3, 2.0, 1.1, 0.7])
    g = gaussian_kernels1d(k, sigma)
    assert g.shape == (4, 21)
    for i in range(4):
        ki = int(k[i])
        lo = 10 - ki // 2
        np.testing.assert_allclose(g[i, lo : lo + ki].numpy(), reference.gaussian_kernel1d(ki, float(sigma[i])), atol=1e-12)
        assert float(g[i].sum()) == pytest.approx(1.0) and float(g[i, :lo].abs().sum()) == 0.0


def test_motion_kernel_hand_cases():
    k = motion_kernels(torch.tensor([3, 3, 8]), torch.tensor([0.0, 90.0, 0.0]))
    assert k.shape == (3, 9, 9)  # 2 * (8 // 2) + 1
    expect_h = np.zeros((9, 9))
    expect_h[4, 3:6] = 1 / 3  # row (3-1)//2 = 1 of the 3x3 kernel, centred on its anchor (1, 1)
    np.testing.assert_allclose(k[0].numpy(), expect_h, atol=1e-12)
    np.testing.assert_allclose(k[1].numpy(), expect_h.T, atol=1e-12)  # rotated 90 degrees: a column
    expect_8 = np.zeros((9, 9))
    expect_8[3, 0:8] = 1 / 8  # n = 8: row 3, anchor (4, 4) on the centre, so the line sits at offsets -4..3
    np.testing.assert_allclose(k[2].numpy(), expect_8, atol=1e-12)


def test_motion_kernels_match_reference_and_opencv():
    ns = list(range(1, 21))
    angles = [0.0, 1.0, 17.0, 45.0, 90.0, 133.5, 179.0, 37.25]
    n_t = torch.tensor([n for n in ns for _ in angles])
    a_t = torch.tensor([a for _ in ns for a in angles], dtype=torch.float64)
    k = motion_kernels(n_t, a_t)
    assert k.shape == (len(n_t), 21, 21)
    cv2 = None
    try:
        import cv2
    except ImportError:  # pragma: no cover
        pass
    for i, (n, a) in enumerate(zip(n_t.tolist(), a_t.tolist())):
        lo = 10 - n // 2
        sub = k[i, lo : lo + n, lo : lo + n].numpy()
        assert float(k[i].sum()) == pytest.approx(1.0) and sub.sum() == pytest.approx(1.0)  # nothing outside n x n
        np.testing.assert_allclose(sub, reference.motion_kernel(n, a), atol=1e-12)
        if cv2 is not None:  # the official construction (docs/method.md §5.2)
            kc = np.zeros((n, n), np.float32)
            kc[(n - 1) // 2, :] = 1
            kc = cv2.warpAffine(kc, cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), a, 1.0), (n, n))
            np.testing.assert_allclose(sub, kc / kc.sum(), atol=1e-5)


# ---------------------------------------------------------------- batched vs the per-image reference path


def _mixed_draws(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    codes, params = [], []
    for i in range(n):
        artifact = ("pixelation", "defocus", "motion")[i % 3]
        p = draw_params(rng, artifact, "paper" if i % 2 else "official")
        if artifact == "pixelation":
            p[0] = rng.integers(3, 30)  # small sources: keep the shorter side below the image's
        codes.append(ARTIFACT_CODES[artifact])
        params.append(p)
    return torch.tensor(codes), torch.from_numpy(np.stack(params))


# Tolerances in grey levels (mean, max). We resample width first with a rounded uint8 intermediate, as PIL
# always did; Pillow >= 12 goes height first for some size pairs (not for a 2:1 crop shrunk to 2:1), which moves
# pixels next to clipped bicubic overshoot by up to ~10 levels: those images get the loose pixelation tolerance.
# Per image, measured on these images: pixelation mean <= 0.10, max 2 (height-first: mean <= 0.34, max 10);
# blurs at the source size max 1 (float32 vs float64 sums just below .5); blurs + a bilinear resize mean
# <= 0.23 (PIL's 22-bit fixed-point weights round differently at near-ties), max 2.
TOL = {
    "pixelation": (0.15, 2),
    "pixelation_pil_height_first": (0.6, 12),
    "blur_same_size": (0.01, 1),
    "blur_resized": (0.3, 2),
}


def _pil_goes_width_first(img: np.ndarray, s: int) -> bool:
    """Whether this Pillow's one-call bicubic shrink equals its width-then-height two-call version."""
    im = Image.fromarray(img)
    size = reference.pixelated_size(im.size, s)
    one = np.asarray(im.resize(size, Image.Resampling.BICUBIC))
    two = np.asarray(im.resize((size[0], im.height), Image.Resampling.BICUBIC).resize(size, Image.Resampling.BICUBIC))
    return np.array_equal(one, two)


@pytest.mark.parametrize(
    "src_hw, out_hw", [((48, 24), (48, 24)), ((48, 24), (72, 36)), ((60, 40), (32, 16)), ((75, 35), (48, 24))]
)
@pytest.mark.parametrize("device", DEVICES)
def test_synthesize_batch_matches_reference_pipeline(src_hw, out_hw, device):
    rng = np.random.default_rng(sum(src_hw) + sum(out_hw))
    imgs = [_image(rng, *src_hw) for _ in range(18)]
    codes, params = _mixed_draws(rng, len(imgs))
    out = synthesize_batch(_batch(imgs).to(device), codes.to(device), params.to(device), out_hw)
    assert out.dtype == torch.float32 and tuple(out.shape) == (len(imgs), 3, *out_hw) and out.device.type == device
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    got = _to_u8(out)
    ref = np.stack([reference_synthesize(Image.fromarray(im), int(c), p.tolist(), out_hw) for im, c, p in zip(imgs, codes, params)])
    assert ref.shape == got.shape
    diff = np.abs(got - ref.astype(np.int64))
    for i, code in enumerate(codes.tolist()):
        if code == PIX:
            width_first = _pil_goes_width_first(imgs[i], int(params[i, 0]))
            key = "pixelation" if width_first else "pixelation_pil_height_first"
        else:
            key = "blur_same_size" if src_hw == out_hw else "blur_resized"
        mean_tol, max_tol = TOL[key]
        assert diff[i].mean() <= mean_tol and diff[i].max() <= max_tol, (i, key, diff[i].mean(), diff[i].max())
    assert diff.mean() <= 0.3
    # the artifacts really changed the images (not an identity that trivially matches)
    clean = np.stack([np.asarray(Image.fromarray(im).resize(out_hw[::-1], Image.Resampling.BILINEAR)) for im in imgs]).astype(int)
    assert np.abs(got - clean).mean() > 3


def test_blurs_match_the_official_operators():
    cv2 = pytest.importorskip("cv2")
    from torchvision.transforms.functional import gaussian_blur

    rng = np.random.default_rng(3)
    imgs = [_image(rng, 40, 24) for _ in range(6)]
    x = _batch(imgs).float()
    # official out-of-focus: torchvision GaussianBlur on the PIL image (reflect padding, rounded to uint8)
    k, sigma = torch.tensor([5, 21, 9, 13, 7, 11]), torch.tensor([0.1, 2.0, 0.77, 1.5, 1.9, 0.4])
    got = defocus_batch(x, k, sigma).round()
    for i in range(len(imgs)):
        tv = gaussian_blur(torch.from_numpy(imgs[i]).permute(2, 0, 1), [int(k[i])] * 2, [float(sigma[i])] * 2)
        assert (got[i] - tv.float()).abs().max() <= 1
    # official motion blur: cv2.warpAffine kernel + cv2.filter2D (anchor n // 2, BORDER_REFLECT_101)
    n, ang = torch.tensor([8, 19, 12, 9, 20, 15]), torch.tensor([0.0, 179.0, 45.0, 90.0, 33.3, 120.0])
    got = motion_blur_batch(x, n, ang).round().permute(0, 2, 3, 1).numpy()
    for i in range(len(imgs)):
        ni, ai = int(n[i]), float(ang[i])
        kc = np.zeros((ni, ni), np.float32)
        kc[(ni - 1) // 2, :] = 1
        kc = cv2.warpAffine(kc, cv2.getRotationMatrix2D((ni / 2 - 0.5, ni / 2 - 0.5), ai, 1.0), (ni, ni))
        cvo = cv2.filter2D(imgs[i], -1, kc / kc.sum())
        assert np.abs(got[i] - cvo.astype(np.float32)).max() <= 1


def test_uint8_and_float_inputs_agree_and_runs_are_deterministic():
    rng = np.random.default_rng(9)
    imgs = [_image(rng, 32, 16) for _ in range(9)]
    codes, params = _mixed_draws(rng, 9)
    src = _batch(imgs)
    a = synthesize_batch(src, codes, params, (32, 16))
    b = synthesize_batch(src, codes, params, (32, 16))
    assert torch.equal(a, b)
    c = synthesize_batch(src.float() / 255.0, codes, params, (32, 16))
    assert (a - c).abs().max() <= 1 / 255 + 1e-6 and (a != c).float().mean() < 0.01
    # an image's result does not depend on its batch mates (up to a rare 1-level rounding flip)
    for i in (0, 1, 2):
        single = synthesize_batch(src[i : i + 1], codes[i : i + 1], params[i : i + 1], (32, 16))
        assert (single[0] - a[i]).abs().max() <= 1 / 255 + 1e-6


def test_synthesize_batch_rejects_bad_input():
    src = torch.zeros(2, 3, 16, 8, dtype=torch.uint8)
    with pytest.raises(RlqError, match="code"):
        synthesize_batch(src, torch.tensor([0, 5]), torch.tensor([[4.0, 0, 0], [4.0, 0, 0]]), (16, 8))
    with pytest.raises(RlqError, match="shape"):
        synthesize_batch(src, torch.tensor([0]), torch.tensor([[4.0, 0, 0]]), (16, 8))
    with pytest.raises(RlqError, match="image 1"):
        synthesize_batch(src, torch.tensor([1, 1]), torch.tensor([[5.0, 1.0, 0], [6.0, 1.0, 0]]), (16, 8))  # even k
    with pytest.raises(RlqError, match="image 0"):
        synthesize_batch(src, torch.tensor([2, 0]), torch.tensor([[17.0, 30.0, 0], [4.0, 0, 0]]), (16, 8))  # n > 2 x 8
    with pytest.raises(RlqError, match="sigma"):
        synthesize_batch(src, torch.tensor([1, 0]), torch.tensor([[5.0, 0.0, 0], [4.0, 0, 0]]), (16, 8))
    empty = synthesize_batch(src[:0], torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3), (16, 8))
    assert tuple(empty.shape) == (0, 3, 16, 8)


# ---------------------------------------------------------------- severity grid (docs/method.md §12)


def test_defocus_kernel_size_rule():
    assert [defocus_kernel_size(s) for s in (0.5, 1.0, 1.2, 2.0, 3.0, 4.0)] == [5, 7, 9, 13, 19, 21]
    for artifact, grid in SEVERITY_GRID.items():
        assert len(grid) == 5 and grid[0] == {}, artifact


@pytest.mark.parametrize("artifact", ["pixelation", "defocus", "motion", "jpeg"])
def test_degrade_batch_levels(artifact):
    rng = np.random.default_rng(2)
    images = _batch([_image(rng, 112, 56) for _ in range(3)])
    assert degrade_batch(images, artifact, 0, seed=1) is images  # level 0: unchanged
    errors = []
    for level in range(1, 5):
        out = degrade_batch(images, artifact, level, seed=1)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        errors.append(float((out.float() - images.float()).abs().mean()))
    assert errors[0] > 0.5 and all(b >= a * 0.98 for a, b in zip(errors, errors[1:])), errors
    with pytest.raises(ConfigError):
        degrade_batch(images, artifact, 5, seed=1)
    if artifact == "pixelation":
        with pytest.raises(ConfigError, match="shorter side"):
            degrade_batch(images[..., :48], artifact, 1, seed=1)  # s = 48 would not shrink a 48-wide image


def test_degrade_batch_matches_reference_and_is_seeded():
    rng = np.random.default_rng(4)
    imgs = [_image(rng, 64, 32) for _ in range(5)]
    images = _batch(imgs)
    # pixelation level = the training path with the level's s, restored to the input size
    s = SEVERITY_GRID["pixelation"][3]["s"]
    got = degrade_batch(images, "pixelation", 3, seed=0).permute(0, 2, 3, 1).numpy().astype(int)
    ref = np.stack([np.asarray(reference.pixelate(Image.fromarray(im), s, restore_size=(32, 64))) for im in imgs])
    assert np.abs(got - ref).max() <= 2
    # motion: a fixed angle per image from the seed; the same angles whatever the batch split (via `start`)
    a = degrade_batch(images, "motion", 2, seed=3)
    assert torch.equal(a, degrade_batch(images, "motion", 2, seed=3))
    assert not torch.equal(a, degrade_batch(images, "motion", 2, seed=4))
    assert torch.equal(a[2:], degrade_batch(images[2:], "motion", 2, seed=3, start=2))
    angle0 = int(torch.randint(0, 180, (1,), generator=torch.Generator().manual_seed(3)))
    ref0 = np.asarray(reference.motion_blur(Image.fromarray(imgs[0]), SEVERITY_GRID["motion"][2]["n"], angle0)).astype(int)
    assert np.abs(a[0].permute(1, 2, 0).numpy().astype(int) - ref0).max() <= 1
    with pytest.raises(ConfigError):
        degrade_batch(images, "noise", 1, seed=0)
    with pytest.raises(ConfigError):
        degrade_batch(images.float(), "jpeg", 1, seed=0)


# ---------------------------------------------------------------- preview


def test_preview_sheet(tmp_path):
    rng = np.random.default_rng(6)
    images = [Image.fromarray(_image(rng, 80, 40)), Image.fromarray(_image(rng, 60, 30)), Image.fromarray(_image(rng, 40, 20))]
    path = lq_preview_sheet(images, tmp_path / "sub" / "lq.png", levels=(1, 3), height=112)
    assert path == tmp_path / "sub" / "lq.png" and [p.name for p in path.parent.iterdir()] == ["lq.png"]
    sheet = Image.open(io.BytesIO(path.read_bytes()))
    assert sheet.format == "PNG"
    pad, lab = PREVIEW_PAD, PREVIEW_LABEL_H
    assert (pad, lab) == (4, 14)
    # tiles 56 x 112 (first image's aspect); 3 columns per block; 4 blocks of 2 label lines + 3 rows, laid out
    # 3 per row (10 columns at most: 3 blocks x 3 columns), so 2 block rows
    assert preview_grid(2) == (3, 2) and preview_grid(4) == (2, 2) and preview_grid(4, max_columns=4) == (1, 4)
    assert sheet.size == (4 + 3 * 3 * (56 + 4) + 2 * PREVIEW_BLOCK_GAP, 4 + 2 * (2 * 14 + 3 * (112 + 4)))
    arr = np.asarray(sheet.convert("RGB"))
    tiles = _batch([np.asarray(im.resize((56, 112), Image.Resampling.BILINEAR)) for im in images])
    clean_tile = arr[pad + 2 * lab : pad + 2 * lab + 112, pad : pad + 56]
    assert np.array_equal(clean_tile, tiles[0].permute(1, 2, 0).numpy())
    pix3 = degrade_batch(tiles, "pixelation", 3, seed=0)[1].permute(1, 2, 0).numpy()
    y, x = pad + 2 * lab + (112 + pad), pad + 2 * (56 + pad)  # second image row, third column (level 3)
    assert np.array_equal(arr[y : y + 112, x : x + 56], pix3)
    assert not np.array_equal(pix3, tiles[1].permute(1, 2, 0).numpy())
    # the 4th block (jpeg) wraps to the second block row, first position
    jpeg1 = degrade_batch(tiles, "jpeg", 1, seed=0)[0].permute(1, 2, 0).numpy()
    y, x = pad + (2 * lab + 3 * (112 + pad)) + 2 * lab, pad + 1 * (56 + pad)
    assert SEVERITY_ARTIFACTS[3] == "jpeg" and np.array_equal(arr[y : y + 112, x : x + 56], jpeg1)
