"""Typed option groups of a training run.

These plain dataclasses are the schema the YAML presets are validated against (``rlq.config`` wraps
them with OmegaConf at the edge) and the typed arguments :func:`rlq.engine.recipe.run_training` takes,
so a run can be set up from Python without any YAML. Each field's comment cites the spec where the
default comes from; every row of docs/method.md §10 is an individual key.

Every field that takes one of a fixed set of values says so in its metadata (``choices``, or ``pattern``), and
every number says its allowed range (``ge``/``gt``/``le``/``lt``; NaN and infinities are never allowed);
:func:`value_problems` checks them all, and :func:`rlq.engine.validate.validate_spec` refuses a spec that breaks one
before any work starts. The sets are the ones the consuming code keeps: a ``"module:NAME"`` source is imported only
when checked, so this schema stays free of torch; a source that is a function is called then (``method``: the names
in the method registry, :func:`rlq.methods.method_names`, so a registered method is accepted).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

from .data.datasets import DATASET_NAMES, dataset_key
from .data.datasets.celebreid import CAMERA_RULES
from .data.samplers import FRACTION_BY, FRACTION_MODES
from .data.side_tables import PARSING_MISSING, POSE_MISSING
from .data.sidecars import GENDER_MISSING
from .lq.mix import LQ_MIXES, LQ_RANGES

__all__ = ["DataSpec", "ModelSpec", "LossSpec", "OptimSpec", "TrainSpec", "TADSpec", "EvalSpec_", "RunSpec", "ROLES",
           "TAD_VARIANTS", "TEACHER_VARIANTS", "TAD_ALTERNATIONS", "EXTERNAL_FOLDERS", "CHANNELS_LAST_MODES", "NONFINITE_POLICIES",
           "field_choices", "value_problems"]

#: What a run trains: a model, or a TAD teacher (docs/method.md §9).
ROLES = ("model", "teacher")
#: Table 7 variants (docs/method.md §12).
TAD_VARIANTS = ("tad", "ss_mse_tad", "ss_mse_nt", "kl_only", "target_pairs")
#: The Table 7 variants that distil from a teacher (the others: "[NT]", no teacher).
TEACHER_VARIANTS = ("tad", "ss_mse_tad")
#: How TAD and CAP steps interleave: whole epochs (`official`, TAD first) or step by step (`paper`), docs/method.md §6.
TAD_ALTERNATIONS = ("epoch", "step")
#: External streams that are not a registered dataset (docs/method.md §5.1): any folder of crops (unlabeled), or one
#: subfolder per identity.
EXTERNAL_FOLDERS = ("folder", "identity_folders")
CHANNELS_LAST_MODES = ("auto", "on", "off")
#: What a non-finite loss does: stop the run, or skip the batch (counted).
NONFINITE_POLICIES = ("error", "skip")


def _external_key(name: str) -> str:
    """``tad.external_dataset`` as its choices spell it: the folder kinds exactly, dataset names as the registry does."""
    return name if name in EXTERNAL_FOLDERS else dataset_key(name)


def _choice(default: Any, *sources: Any, key: Any = None, hint: str = "") -> Any:
    """A field whose value must be one of the values of ``sources``: tuples, or ``"module:NAME"`` of a tuple or dict
    (its keys) kept by the code that consumes the value, or of a function returning one (called when checked). ``key``
    spells a value as the choices do (e.g. case)."""
    return field(default=default, metadata={"choices": sources, "key": key, "hint": hint})


def _range(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           hint: str = "") -> dict[str, Any]:
    """Metadata of a number (or list of numbers, each checked): finite and within the given bounds."""
    return {"range": {"ge": ge, "gt": gt, "le": le, "lt": lt}, "hint": hint}


def _num(default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata=_range(**bounds))


@dataclass
class DataSpec:
    dataset: str = _choice("synthcc", DATASET_NAMES, key=dataset_key)  # case, '-' and '_' ignored (docs/datasets.md §3)
    root: str = "???"
    height: int = _num(384, ge=1)  # docs/method.md §2.1 input 3x384x192
    width: int = _num(192, ge=1)
    batch_size: int = _num(32, ge=1)  # sampled target images per replica B (2B forwarded with recolouring), §3.2 / §8
    num_instances: int = _num(4, ge=1)  # §3.2
    workers: int = _num(4, ge=0)  # §6
    skip_bad: bool = False
    cache_images: bool = False  # decode every image once into memory (small datasets, the demo)
    camera_rule: str = _choice("unique", CAMERA_RULES)  # Celeb-reID camid at evaluation (docs/datasets.md §3.7): unique | official
    # Recolouring (§3.3)
    recolor: bool = True
    parsing_root: str | None = None
    parsing_missing: str = _choice("error", PARSING_MISSING)  # error | copy (lenient: unmodified copy keeping the real clothes label)
    faulty_pant: str | None = None
    faulty_shirt: str | None = None
    palette: str = _choice("auto", ("auto",), "rlq.data.recolor:PALETTES")  # auto (by dataset) | default | last
    # CAP side inputs (§3.4, §3.5)
    gender_csv: str | None = None
    gender_missing: str = _choice("error", GENDER_MISSING)  # error | ignore | male | female
    pose_csv: str | None = None
    pose_column: str = "R_LA_15"
    pose_missing: str = _choice("error", POSE_MISSING)  # error | null (missing keys -> cluster 0)
    # Model selection on a validation set (§7 `default`): LTCC/PRCC need an opt-in identity hold-out
    val_holdout_ids: int = _num(0, ge=0)  # identities held out (0 = off)


@dataclass
class ModelSpec:
    backbone: str = _choice("resnet50", "rlq.models.backbones:BACKBONES")
    pretrained: str = "imagenet"  # imagenet | none | PATH (docs/method.md §2.1: IMAGENET1K_V1)
    split: str = _choice("layer2", "rlq.models.reid:SPLITS")  # Table 13
    pose_split: str = _choice("layer1", "rlq.models.reid:POSE_SPLITS")  # Table 14
    pose_clusters: int = _num(15, ge=1)  # K, §3.4
    gender_on: str = _choice("bot", "rlq.models.reid:PLACEMENTS")  # Table 6: bot | cal | both
    cos_partner: str = _choice("bot", "rlq.models.reid:PLACEMENTS")  # Table 6: bot | cal | both
    last_stride: int = _choice(1, "rlq.models.backbones:LAST_STRIDES")  # §2.1: 1; 2 keeps the stock stride (a deliberate deviation: layer4 at 1/4 the cost; CPU demo)


@dataclass
class LossSpec:
    label_smooth: float = _num(0.1, ge=0, lt=1)  # §4 LSCE ε
    triplet_margin: float = _num(0.3, ge=0)
    kl_tau: float = _num(0.8, gt=0)
    kl_weighting: str = _choice("official", "rlq.losses.divergence:KL_WEIGHTINGS")  # official | paper (KL box, §4)
    cos_variant: str = _choice("abs", "rlq.losses.metric:COS_VARIANTS")  # abs | relu (§12)
    clothes_scale: float = _num(16.0, gt=0)  # CosFace s, §4
    cal_epsilon: float = _num(0.1, ge=0, le=1)  # §4: t = 0.9 / 0.1
    start_epoch_cc: int = _num(25, ge=0)  # §4 step 2
    start_epoch_adv: int = _num(25, ge=0)  # §4 L_CAL
    w_id: float = _num(1.0, ge=0)
    w_kl: float = _num(1.0, ge=0)
    w_triplet: float = _num(1.0, ge=0)
    w_pose: float = _num(1.0, ge=0)
    w_cos: float = _num(1.0, ge=0)
    w_gender: float = _num(1.0, ge=0)
    w_cal: float = _num(1.0, ge=0)
    cal_triplet: bool = False  # single-branch CAL baseline: add a triplet on f_CAL (CAL's own default is off)
    lq_aug: bool = False  # Table 7 "BM + LQ Aug.": an extra LQ copy of each target image with its real clothes label


@dataclass
class OptimSpec:
    lr: float = _num(3.5e-4, gt=0)  # §6
    weight_decay: float = _num(5e-4, ge=0)
    milestones: list[int] = field(default_factory=lambda: [20, 40], metadata=_range(ge=0))  # epochs where lr *= gamma
    gamma: float = _num(0.1, gt=0, le=1)
    warmup_epochs: int = _num(0, ge=0)  # `paper`: 10 (§10)
    warmup_factor: float = _num(0.1, gt=0, le=1)
    clothes_lr: float = _num(3.5e-4, gt=0)  # separate Adam, no schedule (§6)


@dataclass
class TADSpec:
    teacher: str | None = None  # checkpoint of a Base Model trained on the external data (§5.3, §9)
    force_teacher: bool = False  # accept a teacher checkpoint without recipe metadata
    # any dataset name; "folder" (any folder of person crops, unlabeled); or "identity_folders" (one subfolder per
    # identity, sampled P x K over its identities, e.g. NTU for paper Table 8)
    external_dataset: str = _choice("celebreid", EXTERNAL_FOLDERS, DATASET_NAMES, key=_external_key)
    external_root: str | None = None
    external_batch_size: int = _num(32, ge=1)  # B per replica for the external stream (the presets tie it to data.batch_size, as the code)
    external_num_instances: int = _num(4, ge=1)
    fraction: float = _num(1.0, gt=0, le=1, hint="e.g. 0.08 for the Fig. 6 ablation")  # §5.1 amount (Fig. 6 ablation: ~0.08)
    fraction_mode: str = _choice("fixed", FRACTION_MODES)  # fixed | per_epoch
    # identity (⌊n_id·p⌋ images of each identity) | image (⌊n·p⌋ of all images) | identities (⌊C·p⌋ whole
    # identities: the authors' `--sampling` percent sampler, docs/method.md §5.1)
    fraction_by: str = _choice("identity", FRACTION_BY, hint="identities = the authors' --sampling percent-of-identities sampler")
    reshuffle: bool = True  # `official`: False (same order every epoch); `default`/`paper`: True (fix)
    source_height: int = _num(256, ge=1)  # LQ synthesis source size (Celeb-reID images are 128x256)
    source_width: int = _num(128, ge=1)
    lq_mix: str = _choice("auto", ("auto",), LQ_MIXES)  # auto (by target dataset, §5.2) | ltcc | prcc | custom
    lq_ranges: str = _choice("official", LQ_RANGES)  # official | paper
    alternation: str = _choice("epoch", TAD_ALTERNATIONS)  # epoch (`official`, TAD first) | step (`paper`)
    clothes_kl: bool = False  # `paper`: active clothes-logit KL (§5.4 step 4)
    aligned: bool = False  # HQ/LQ share crop/flip/erase (ablation)
    variant: str = _choice("tad", TAD_VARIANTS)  # tad | ss_mse_tad | ss_mse_nt | kl_only | target_pairs (Table 7)
    frozen_stats: bool = False  # keep student BN statistics frozen during TAD steps (ablation)
    run_pose_branch: bool = False  # `official`: the code computes the unused pose branch in TAD steps (its BN stats drift)
    reseed_aug: bool = True  # `official`: False — the external stream's augmentations repeat every epoch (§6 quirk)
    w_distill: float = _num(1.0, ge=0)
    w_ss: float = _num(1.0, ge=0)
    w_ss_mse: float = _num(1.0, ge=0)


@dataclass
class TrainSpec:
    epochs: int = _num(200, ge=1)  # §6 `official`
    eval_every: int = _num(10, ge=1)  # §7: every N epochs (and always after the last)
    eval_start: int = _num(0, ge=0)
    seed: int = _num(1, ge=0)
    # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16. The official/paper/default presets set off (fp32, §6).
    amp: str = _choice("auto", ("auto",), "rlq.runtime.device:AMP_DTYPES")
    channels_last: str = _choice("auto", CHANNELS_LAST_MODES)  # auto (CUDA only) | on | off
    deterministic: bool = True  # §6
    ckpt_every_epochs: int = _num(1, ge=1)
    ckpt_every_steps: int = _num(0, ge=0)  # also checkpoint mid-epoch every N optimizer steps (0 = off)
    keep_last: int = _num(2, ge=1)
    log_every: int = _num(20, ge=1)
    tensorboard: bool = True
    progress: bool = True
    max_steps_per_epoch: int = _num(0, ge=0)  # debugging: cut each phase after N steps (0 = full epochs)
    nonfinite: str = _choice("error", NONFINITE_POLICIES)  # error | skip (skip the batch, counted)
    device: str = field(default="auto", metadata={"pattern": r"auto|cpu|cuda(:\d+)?", "hint": "auto, cpu, cuda or cuda:N"})  # auto | cpu | cuda | cuda:N
    num_threads: int = _num(0, ge=0)  # torch intra-op threads on CPU (0 = torch default)
    dist_timeout_min: float | None = _num(None, gt=0, hint="null: env RLQ_DIST_TIMEOUT_MIN, else 60")  # torchrun collective timeout, minutes (null: env RLQ_DIST_TIMEOUT_MIN, else 60)


@dataclass
class EvalSpec_:
    batch_size: int = _num(128, ge=1)
    workers: int = _num(4, ge=0)
    flip: bool = True  # §2.5
    chunk_size: int | None = _num(None, ge=1)  # query rows per distance chunk (null: from a memory budget)
    max_rank: int = _num(50, ge=1)
    # 95 % percentile-bootstrap intervals of rank-1 / mAP over queries (docs/datasets.md, Confidence intervals)
    bootstrap_resamples: int = _num(1000, ge=1, hint="1000 for the reported intervals")
    bootstrap_seed: int = _num(0, ge=0)
    # clean / LQ query rows: a Category,Image,Artifact,Severity,Param table (None: <data.root>/quality.csv if present)
    quality_csv: str | None = None


@dataclass
class RunSpec:
    method: str = _choice("bm", "rlq.methods.registry:method_names")  # a registered method (rlq.methods)
    preset: str = "default"  # informational: official | paper | default
    role: str = _choice("model", ROLES)  # "teacher" marks a TAD teacher recipe (docs/method.md §9); TAD refuses other checkpoints unless forced
    output: str = "runs/${method}-${data.dataset}"
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    tad: TADSpec = field(default_factory=TADSpec)
    eval: EvalSpec_ = field(default_factory=EvalSpec_)


# -- checking the values (docs/design.md boundary 1: the edge refuses bad values before any work) ---------------------
def field_choices(f: dataclasses.Field) -> tuple | None:
    """The values a field allows (its ``choices`` sources joined, in order), or None for a field without choices."""
    sources = f.metadata.get("choices")
    if sources is None:
        return None
    values: list = []
    for src in sources:
        if isinstance(src, str):
            src = pkgutil.resolve_name(src)
        if callable(src):  # read when checked, e.g. the method registry
            src = src()
        values += list(src)  # a dict gives its keys
    return tuple(dict.fromkeys(values))


def _range_text(r: dict[str, Any], is_float: bool) -> str:
    lo = f"[{r['ge']}" if r["ge"] is not None else f"({r['gt']}" if r["gt"] is not None else None
    hi = f"{r['le']}]" if r["le"] is not None else f"{r['lt']})" if r["lt"] is not None else None
    what = "a finite number" if is_float else "an integer"
    if lo and hi:
        return f"{what} in {lo}, {hi}"
    if lo:
        return f"{what} {'>=' if lo[0] == '[' else '>'} {lo[1:]}"
    return f"{what} {'<=' if hi[-1] == ']' else '<'} {hi[:-1]}"


def _in_range(v: Any, r: dict[str, Any]) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return ((r["ge"] is None or v >= r["ge"]) and (r["gt"] is None or v > r["gt"])
            and (r["le"] is None or v <= r["le"]) and (r["lt"] is None or v < r["lt"]))


def _problem(key: str, f: dataclasses.Field, value: Any) -> str | None:
    meta, hint = f.metadata, f.metadata.get("hint")
    tail = f" ({hint})" if hint else ""
    choices = field_choices(f)
    if choices is not None:
        keyed = meta["key"](value) if meta.get("key") and isinstance(value, str) else value
        if keyed in choices:
            return None
        names = [str(c) for c in choices]
        close = difflib.get_close_matches(str(value).lower(), names, n=3, cutoff=0.5)
        return (f"{key}={value!r}: choose one of {', '.join(names)}" + (f" (closest: {', '.join(close)})" if close else "")
                + tail)
    if "pattern" in meta:
        if isinstance(value, str) and re.fullmatch(meta["pattern"], value):
            return None
        return f"{key}={value!r}: must be {hint}"
    if "range" in meta and value is not None:
        r = meta["range"]
        is_float = "float" in str(f.type)
        items = value if isinstance(value, (list, tuple)) else [value]
        if all(_in_range(v, r) for v in items):
            return None
        each = "every entry must be " if isinstance(value, (list, tuple)) else "must be "
        return f"{key}={value}: {each}{_range_text(r, is_float)}{tail}"
    return None


def value_problems(spec: Any, prefix: str = "") -> list[str]:
    """One line per field of ``spec`` (a RunSpec or one of its sections, nested) whose value breaks its choices,
    pattern or range, naming the key, the value and what is allowed; [] when every value is allowed."""
    problems: list[str] = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value):
            problems += value_problems(value, f"{prefix}{f.name}.")
        else:
            p = _problem(prefix + f.name, f, value)
            if p:
                problems.append(p)
    return problems
