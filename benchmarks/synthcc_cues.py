"""How much identity SynthCC shows across outfits: a learning-free cue oracle.

Each test image is described only by the mean colour of its identity parts, read with the ground-truth
parsing map (hair; face; arms and legs), and the query / gallery split is ranked by these few numbers
under the clothes-changing protocol. No network is involved, so the result measures the data: if even
perfectly segmented hair and skin colours cannot tell people apart across outfits, no model trained on
SynthCC will, and the demo's clothes-changing numbers say little about the methods.

Read it as a rough ceiling for colour cues alone (a network also sees hair style, build and stature, and
can learn to discount camera brightness; it also has to find the parts itself under low quality).

    python benchmarks/synthcc_cues.py                       # generates SynthCC `default` into a temp folder
    python benchmarks/synthcc_cues.py --root data/synthcc   # an existing SynthCC folder
    python benchmarks/synthcc_cues.py --quick               # SynthCC `tiny` (smoke run)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import add_common_args, env_info, write_json

#: Label ids of the LIP parsing maps SynthCC writes (docs/datasets.md §5.2).
PARTS: dict[str, tuple[int, ...]] = {"hair": (2,), "face": (13,), "limbs": (14, 15, 16, 17)}
CUE_SETS: tuple[tuple[str, ...], ...] = (("hair",), ("face",), ("hair", "face"), ("hair", "face", "limbs"))


def part_colours(image: np.ndarray, labels: np.ndarray, parts: Sequence[str], min_pixels: int = 4) -> np.ndarray:
    """Mean RGB in [0, 1] of each part (grey 0.5 where the part has fewer than ``min_pixels`` pixels)."""
    out = []
    for name in parts:
        mask = np.isin(labels, PARTS[name])
        out.append(image[mask].mean(0) / 255.0 if int(mask.sum()) >= min_pixels else np.full(3, 0.5))
    return np.concatenate(out).astype(np.float32)


def cue_oracle(root: Path, cue_sets: Sequence[Sequence[str]] = CUE_SETS) -> dict[str, Any]:
    """Clothes-changing rank-1 / mAP of the part-colour descriptors on SynthCC's test protocol."""
    import torch
    from PIL import Image

    from rlq.data.datasets import load_dataset
    from rlq.evaluation.ranking import evaluate_features

    root = root.resolve()
    ds = load_dataset("synthcc", root)
    q, g = ds.split("query"), ds.split("gallery")
    pixels: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, split in (("query", q), ("gallery", g)):
        rows = []
        for s in split:
            rel = Path(s.path).resolve().relative_to(root).with_suffix(".png")
            rows.append((np.asarray(Image.open(s.path).convert("RGB"), np.float32),
                         np.asarray(Image.open(root / "parsing" / rel))))
        pixels[name] = rows
    out: dict[str, Any] = {}
    for parts in cue_sets:
        qf = np.stack([part_colours(im, lab, parts) for im, lab in pixels["query"]])
        gf = np.stack([part_colours(im, lab, parts) for im, lab in pixels["gallery"]])
        centre = np.concatenate([qf, gf]).mean(0)  # centred, then compared by cosine (evaluate_features)
        r = evaluate_features(torch.from_numpy(qf - centre), torch.from_numpy(gf - centre),
                              [s.pid for s in q], [s.pid for s in g], [s.camid for s in q], [s.camid for s in g],
                              [s.clothes_id for s in q], [s.clothes_id for s in g], mode="cc")
        out["+".join(parts)] = {"rank1": float(r["rank1"]), "mAP": float(r["mAP"])}
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_out="benchmarks/results/synthcc_cues.json")
    parser.add_argument("--root", type=Path, default=None, help="an existing SynthCC folder (default: generate one)")
    parser.add_argument("--seed", type=int, default=0, help="SynthCC data seed when generating")
    args = parser.parse_args(argv)

    from rlq.data.synth import GENERATOR_VERSION, generate_synthcc

    preset = "tiny" if args.quick else "default"
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "synthcc"
            generate_synthcc(root, preset=preset, seed=args.seed, progress=False)
        res = cue_oracle(root)
    payload = {"env": env_info(), "generator_version": GENERATOR_VERSION,
               "synthcc": {"preset": preset if args.root is None else str(args.root), "seed": args.seed},
               "protocol": "cc (clothes-changing), part mean colours from the ground-truth parsing maps, cosine",
               "cc": res}
    write_json(args.out, payload, quick=args.quick)
    for k, v in res.items():
        print(f"{k:18s} CC R1 {100 * v['rank1']:5.1f}  mAP {100 * v['mAP']:5.1f}")
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
