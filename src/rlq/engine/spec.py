"""Typed option groups of a training run.

These plain dataclasses are the schema the YAML presets are validated against (``rlq.config`` wraps
them with OmegaConf at the edge) and the typed arguments :func:`rlq.engine.recipe.run_training` takes,
so a run can be set up from Python without any YAML. Each field's comment cites the spec where the
default comes from; every row of docs/method.md §10 is an individual key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["DataSpec", "ModelSpec", "LossSpec", "OptimSpec", "TrainSpec", "TADSpec", "EvalSpec_", "RunSpec", "METHODS"]

#: Training methods (strategies in one loop).
METHODS = ("cal", "bm", "bm+g", "bm+p", "cap", "tad", "rlq")


@dataclass
class DataSpec:
    dataset: str = "synthcc"
    root: str = "???"
    height: int = 384  # docs/method.md §2.1 input 3x384x192
    width: int = 192
    batch_size: int = 32  # sampled target images per replica B (2B forwarded with recolouring), §3.2 / §8
    num_instances: int = 4  # §3.2
    workers: int = 4  # §6
    skip_bad: bool = False
    cache_images: bool = False  # decode every image once into memory (small datasets, the demo)
    camera_rule: str = "unique"  # Celeb-reID camid at evaluation (docs/datasets.md §3.7): unique | official
    # Recolouring (§3.3)
    recolor: bool = True
    parsing_root: Optional[str] = None
    parsing_missing: str = "error"  # error | copy (lenient: unmodified copy keeping the real clothes label)
    faulty_pant: Optional[str] = None
    faulty_shirt: Optional[str] = None
    palette: str = "auto"  # auto (by dataset) | default | last
    # CAP side inputs (§3.4, §3.5)
    gender_csv: Optional[str] = None
    gender_missing: str = "error"  # error | ignore | male | female
    pose_csv: Optional[str] = None
    pose_column: str = "R_LA_15"
    pose_missing: str = "error"  # error | null (missing keys -> cluster 0)
    # Model selection on a validation set (§7 `default`): LTCC/PRCC need an opt-in identity hold-out
    val_holdout_ids: int = 0


@dataclass
class ModelSpec:
    backbone: str = "resnet50"
    pretrained: str = "imagenet"  # imagenet | none | PATH (docs/method.md §2.1: IMAGENET1K_V1)
    split: str = "layer2"  # Table 13
    pose_split: str = "layer1"  # Table 14
    pose_clusters: int = 15  # K, §3.4
    gender_on: str = "bot"  # Table 6: bot | cal | both
    cos_partner: str = "bot"  # Table 6: bot | cal | both
    last_stride: int = 1  # §2.1: 1; 2 keeps the stock stride (a deliberate deviation: layer4 at 1/4 the cost; CPU demo)


@dataclass
class LossSpec:
    label_smooth: float = 0.1  # §4 LSCE ε
    triplet_margin: float = 0.3
    kl_tau: float = 0.8
    kl_weighting: str = "official"  # official | paper (KL box, §4)
    cos_variant: str = "abs"  # abs | relu (§12)
    clothes_scale: float = 16.0  # CosFace s, §4
    cal_epsilon: float = 0.1  # §4: t = 0.9 / 0.1
    start_epoch_cc: int = 25  # §4 step 2
    start_epoch_adv: int = 25  # §4 L_CAL
    w_id: float = 1.0
    w_kl: float = 1.0
    w_triplet: float = 1.0
    w_pose: float = 1.0
    w_cos: float = 1.0
    w_gender: float = 1.0
    w_cal: float = 1.0
    cal_triplet: bool = False  # single-branch CAL baseline: add a triplet on f_CAL (CAL's own default is off)
    lq_aug: bool = False  # Table 7 "BM + LQ Aug.": an extra LQ copy of each target image with its real clothes label


@dataclass
class OptimSpec:
    lr: float = 3.5e-4  # §6
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [20, 40])
    gamma: float = 0.1
    warmup_epochs: int = 0  # `paper`: 10 (§10)
    warmup_factor: float = 0.1
    clothes_lr: float = 3.5e-4  # separate Adam, no schedule (§6)


@dataclass
class TADSpec:
    teacher: Optional[str] = None  # checkpoint of a Base Model trained on the external data (§5.3, §9)
    force_teacher: bool = False  # accept a teacher checkpoint without recipe metadata
    # any dataset name; "folder" (any folder of person crops, unlabeled); or "identity_folders" (one subfolder per
    # identity, sampled P x K over its identities, e.g. NTU for paper Table 8)
    external_dataset: str = "celebreid"
    external_root: Optional[str] = None
    external_batch_size: int = 32  # B per replica for the external stream (the presets tie it to data.batch_size, as the code)
    external_num_instances: int = 4
    fraction: float = 1.0  # §5.1 amount (Fig. 6 ablation: ~0.08)
    fraction_mode: str = "fixed"  # fixed | per_epoch
    # identity (⌊n_id·p⌋ images of each identity) | image (⌊n·p⌋ of all images) | identities (⌊C·p⌋ whole
    # identities: the authors' `--sampling` percent sampler, docs/method.md §5.1)
    fraction_by: str = "identity"
    reshuffle: bool = True  # `official`: False (same order every epoch); `default`/`paper`: True (fix)
    source_height: int = 256  # LQ synthesis source size (Celeb-reID images are 128x256)
    source_width: int = 128
    lq_mix: str = "auto"  # auto (by target dataset, §5.2) | ltcc | prcc | custom
    lq_ranges: str = "official"  # official | paper
    alternation: str = "epoch"  # epoch (`official`, TAD first) | step (`paper`)
    clothes_kl: bool = False  # `paper`: active clothes-logit KL (§5.4 step 4)
    aligned: bool = False  # HQ/LQ share crop/flip/erase (ablation)
    variant: str = "tad"  # tad | ss_mse_tad | ss_mse_nt | kl_only | target_pairs (Table 7)
    frozen_stats: bool = False  # keep student BN statistics frozen during TAD steps (ablation)
    run_pose_branch: bool = False  # `official`: the code computes the unused pose branch in TAD steps (its BN stats drift)
    reseed_aug: bool = True  # `official`: False — the external stream's augmentations repeat every epoch (§6 quirk)
    w_distill: float = 1.0
    w_ss: float = 1.0
    w_ss_mse: float = 1.0


@dataclass
class TrainSpec:
    epochs: int = 200  # §6 `official`
    eval_every: int = 10  # §7
    eval_start: int = 0
    seed: int = 1
    # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16. The official/paper/default presets set off (fp32, §6).
    amp: str = "auto"
    channels_last: str = "auto"  # auto (CUDA only) | on | off
    deterministic: bool = True  # §6
    ckpt_every_epochs: int = 1
    ckpt_every_steps: int = 0  # also checkpoint mid-epoch every N optimizer steps (0 = off)
    keep_last: int = 2
    log_every: int = 20
    tensorboard: bool = True
    progress: bool = True
    max_steps_per_epoch: int = 0  # debugging: cut each phase after N steps (0 = full epochs)
    nonfinite: str = "error"  # error | skip (skip the batch, counted)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # torch intra-op threads on CPU (0 = torch default)
    dist_timeout_min: Optional[float] = None  # torchrun collective timeout, minutes (null: env RLQ_DIST_TIMEOUT_MIN, else 60)


@dataclass
class EvalSpec_:
    batch_size: int = 128
    workers: int = 4
    flip: bool = True  # §2.5
    chunk_size: Optional[int] = None
    max_rank: int = 50
    # 95 % percentile-bootstrap intervals of rank-1 / mAP over queries (docs/datasets.md, Confidence intervals)
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    # clean / LQ query rows: a Category,Image,Artifact,Severity,Param table (None: <data.root>/quality.csv if present)
    quality_csv: Optional[str] = None


@dataclass
class RunSpec:
    method: str = "bm"
    preset: str = "default"  # informational: official | paper | default
    role: str = "model"  # "teacher" marks a TAD teacher recipe (docs/method.md §9); TAD refuses other checkpoints unless forced
    output: str = "runs/${method}-${data.dataset}"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    tad: TADSpec = field(default_factory=TADSpec)
    eval: EvalSpec_ = field(default_factory=EvalSpec_)
