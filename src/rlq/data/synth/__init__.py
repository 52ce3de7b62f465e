"""SynthCC: a procedurally generated, download-free clothes-changing ReID dataset in the LTCC layout.

Pure numpy / PIL / scipy (no torch, no OpenCV). See :func:`generate_synthcc`.
"""

from __future__ import annotations

from rlq.data.lip import LIP_LABELS, lip_palette
from rlq.data.synth.generate import (
    EXTERNAL_SPLITS,
    GENERATOR_VERSION,
    SYNTH_PRESETS,
    TARGET_SPLITS,
    SynthPreset,
    generate_synthcc,
    is_synthcc_root,
)
from rlq.data.synth.identities import Camera, Identity, Outfit, make_cameras, sample_identity, sample_outfits
from rlq.data.synth.preview import make_contact_sheet
from rlq.data.synth.render import render_person
from rlq.data.synth.skeleton import COCO_KEYPOINTS

__all__ = [
    "COCO_KEYPOINTS",
    "Camera",
    "EXTERNAL_SPLITS",
    "GENERATOR_VERSION",
    "Identity",
    "LIP_LABELS",
    "Outfit",
    "SYNTH_PRESETS",
    "SynthPreset",
    "TARGET_SPLITS",
    "generate_synthcc",
    "is_synthcc_root",
    "lip_palette",
    "make_cameras",
    "make_contact_sheet",
    "render_person",
    "sample_identity",
    "sample_outfits",
]
