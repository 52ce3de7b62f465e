"""benchmarks/synthcc_cues.py: the learning-free cue oracle that measures how much identity SynthCC shows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import synthcc_cues


def test_part_colours_hand_case():
    img = np.zeros((4, 4, 3), np.float32)
    lab = np.zeros((4, 4), np.uint8)
    img[:2, :2] = (255, 0, 51)
    lab[:2, :2] = 2  # hair: 4 pixels
    img[2:, :] = (0, 102, 0)
    lab[2:, :2] = 14  # left arm
    lab[2:, 2:] = 17  # right leg
    v = synthcc_cues.part_colours(img, lab, ("hair", "face", "limbs"))
    np.testing.assert_allclose(v, [1.0, 0.0, 0.2, 0.5, 0.5, 0.5, 0.0, 0.4, 0.0], atol=1e-6)
    # too few pixels for a part: grey
    np.testing.assert_allclose(synthcc_cues.part_colours(img, lab, ("hair",), min_pixels=5), [0.5] * 3)


@pytest.mark.slow
def test_quick_run_writes_json(tmp_path):
    out = tmp_path / "cues.json"
    r = synthcc_cues.main(["--quick", "--out", str(out)])
    assert out.is_file() and r["synthcc"]["preset"] == "tiny"
    assert set(r["cc"]) == {"hair", "face", "hair+face", "hair+face+limbs"}
    for v in r["cc"].values():
        assert 0.0 <= v["rank1"] <= 1.0 and 0.0 < v["mAP"] <= 1.0
