"""Recolouring, erasing and tensor geometry against hand computations and the PIL path (docs/method.md §3.1, §3.3)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from rlq.data.batch_ops import apply_erasing, erase_fill_01, geo_batch
from rlq.data.recolor import (
    PALETTES,
    draw_recolor,
    num_clothes_classes,
    positive_clothes_matrix,
    recolor_batch,
    synthetic_label,
)
from rlq.data.transforms import ERASE_FILL_NORMALISED, IMAGENET_MEAN, IMAGENET_STD, GeoParams, apply_geo, draw_erase_box


def _ref_blend(x: int, c: int) -> int:
    return int(Fraction(3, 10) * x + Fraction(7, 10) * c)  # exact 0.3·x + 0.7·c, truncated


def test_recolor_regions_and_exact_blend():
    labels = torch.tensor([[[5, 9, 0], [7, 12, 6]]], dtype=torch.uint8)  # upper, lower, bg / coat, skirt, dress
    img = torch.tensor([[[[10, 20, 30], [40, 50, 60]]] * 3], dtype=torch.uint8).view(1, 3, 2, 3)
    upper = torch.tensor([[255, 0, 128]], dtype=torch.uint8)
    lower = torch.tensor([[0, 255, 1]], dtype=torch.uint8)
    out = recolor_batch(img, labels, upper, lower, faulty=torch.tensor([False]))
    for ch in range(3):
        exp = [
            [_ref_blend(10, int(upper[0, ch])), _ref_blend(20, int(lower[0, ch])), 30],
            [_ref_blend(40, int(upper[0, ch])), _ref_blend(50, int(lower[0, ch])), 60],  # dress (6) only when faulty
        ]
        assert out[0, ch].tolist() == exp
    # faulty: one colour over the all-clothes region A (dress included), background untouched
    out_f = recolor_batch(img, labels, upper, upper, faulty=torch.tensor([True]))
    for ch in range(3):
        c = int(upper[0, ch])
        assert out_f[0, ch].tolist() == [[_ref_blend(10, c), _ref_blend(20, c), 30], [_ref_blend(40, c), _ref_blend(50, c), _ref_blend(60, c)]]
    # lenient copy without a parsing map: unchanged
    assert torch.equal(recolor_batch(img, labels, upper, lower, torch.tensor([False]), enabled=torch.tensor([False])), img)


def test_recolor_matches_exact_reference_on_random_maps():
    g = torch.Generator().manual_seed(0)
    n, h, w = 4, 9, 7
    img = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 20, (n, h, w), generator=g).to(torch.uint8)
    upper = torch.randint(0, 256, (n, 3), generator=g).to(torch.uint8)
    lower = torch.randint(0, 256, (n, 3), generator=g).to(torch.uint8)
    faulty = torch.tensor([False, True, False, True])
    out = recolor_batch(img, labels, upper, lower, faulty)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                lab = int(labels[i, y, x])
                if faulty[i]:
                    col = upper[i] if lab in (1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 18, 19) else None
                else:
                    col = upper[i] if lab in (5, 7, 10) else lower[i] if lab in (9, 12) else None
                for ch in range(3):
                    v = int(img[i, ch, y, x])
                    exp = v if col is None else _ref_blend(v, int(col[ch]))
                    assert int(out[i, ch, y, x]) == exp


def test_synthetic_labels_and_positive_sets():
    # §3.3: N_cl + pid·M + P·i_lower + i_upper; LTCC: 256 + 2·81 + 9·3 + 5 = 450
    assert synthetic_label(256, 2, 3, 5, 9) == 450
    assert num_clothes_classes(256, 77, 9) == 6493  # docs/method.md §8 LTCC total
    assert num_clothes_classes(16035, 5000, 6) == 196035  # LaST
    p2c = np.array([[1, 1, 0], [0, 0, 1]], dtype=bool)
    pos = positive_clothes_matrix(p2c, 2)  # M = 4
    assert pos.shape == (2, 3 + 8)
    assert pos[0].tolist() == [True, True, False] + [True] * 4 + [False] * 4
    assert pos[1].tolist() == [False, False, True] + [False] * 4 + [True] * 4
    rng = np.random.default_rng(0)
    assert all(a == b for a, b in (draw_recolor(rng, True, 9) for _ in range(50)))
    draws = [draw_recolor(rng, False, 9) for _ in range(2000)]
    assert {d[0] for d in draws} == set(range(9)) and {d[1] for d in draws} == set(range(9))
    assert len(PALETTES["default"]) == 9 and len(PALETTES["last"]) == 6


def test_erasing_writes_cal_fill_in_normalised_space():
    x = torch.rand(2, 3, 8, 6)
    boxes = torch.tensor([[1, 2, 3, 2], [-1, -1, 0, 0]])
    y = apply_erasing(x, boxes)
    assert torch.equal(y[1], x[1])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    normalised = (y[0] - mean) / std
    for ch in range(3):
        assert torch.allclose(normalised[ch, 1:4, 2:4], torch.full((3, 2), ERASE_FILL_NORMALISED[ch]), atol=1e-6)
    mask = torch.ones(8, 6, dtype=torch.bool)
    mask[1:4, 2:4] = False
    assert torch.equal(y[0][:, mask], x[0][:, mask])
    assert len(erase_fill_01()) == 3


def test_erase_box_statistics():
    rng = np.random.default_rng(1)
    boxes = [draw_erase_box(rng, 64, 32) for _ in range(3000)]
    used = [b for b in boxes if b[0] >= 0]
    assert 0.42 < len(used) / len(boxes) < 0.58  # p = 0.5
    for top, left, h, w in used:
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 32
        assert 0.02 * 64 * 32 * 0.6 <= h * w <= 0.4 * 64 * 32 * 1.4  # rounding of sqrt sides


@pytest.mark.parametrize("crop,flip", [(None, False), (None, True), ((3, 5), False), ((0, 8), True)])
def test_geo_batch_matches_pil_geometry(crop, flip):
    rng = np.random.default_rng(0)
    src = (rng.random((48, 24, 3)) * 255).astype(np.uint8)
    # smooth image so bilinear implementations agree closely
    src = np.asarray(Image.fromarray(src).resize((6, 12), Image.BILINEAR).resize((24, 48), Image.BILINEAR))
    geo = GeoParams(crop=crop, flip=flip)
    ref = np.asarray(apply_geo(Image.fromarray(src), 64, 32, geo), dtype=np.float32)
    t = torch.from_numpy(src.copy()).permute(2, 0, 1)[None].float() / 255
    out = geo_batch(t, 64, 32, torch.tensor([list(crop) if crop else [-1, -1]]), torch.tensor([flip]))
    got = out[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(got - ref).mean() < 2.0
