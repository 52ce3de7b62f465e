"""Check a run specification before any work: every field against its declared values, then the combinations a
method needs (:func:`validate_spec`); and the parser options a dataset takes from the spec (:func:`dataset_options`)."""

from __future__ import annotations

from typing import Any

from ..data.datasets import canonical_name
from ..errors import ConfigError
from ..methods.registry import get_method
from ..spec import TEACHER_VARIANTS, RunSpec, value_problems

__all__ = ["validate_spec", "dataset_options"]


def validate_spec(spec: RunSpec) -> None:
    """Reject bad values and impossible combinations before any work starts.

    First every field against its declared choices, pattern or range (engine/spec.py metadata; all the bad values
    are named in one line; ``method`` must be registered, rlq.methods), then the combinations, by what the method's
    registry entry needs."""
    problems = value_problems(spec)
    if problems:
        raise ConfigError("; ".join(problems))
    d, t = spec.data, spec.tad
    entry = get_method(spec.method)
    if d.batch_size % d.num_instances:
        raise ConfigError(f"data.batch_size={d.batch_size} is not divisible by data.num_instances={d.num_instances}")
    if entry.needs_external:
        if t.external_dataset != "folder" and t.external_batch_size % t.external_num_instances:
            raise ConfigError(
                f"tad.external_batch_size={t.external_batch_size} is not divisible by tad.external_num_instances={t.external_num_instances}"
            )
        if entry.needs_teacher and t.variant in TEACHER_VARIANTS and not t.teacher:
            raise ConfigError(f"method {spec.method!r} with TAD variant {t.variant!r} needs tad.teacher=CHECKPOINT (a Base Model "
                              "trained on the external data: `rlq train --config configs/teacher/celeb.yaml`)")
        if t.variant != "target_pairs" and not t.external_root:
            raise ConfigError(f"method {spec.method!r} needs tad.external_root (the external HQ images, e.g. Celeb-reID)")
    auto_side = canonical_name(d.dataset) == "synthcc"  # SynthCC carries its own side inputs
    if entry.parts.pose_branch and not d.pose_csv and not auto_side:
        raise ConfigError(f"method {spec.method!r} has a pose branch but data.pose_csv is not set; make one with "
                          "`rlq poses cluster` (or use the authors' LTCC_Pose_Cluster.csv)")
    if entry.parts.gender_head and not d.gender_csv and not auto_side:
        raise ConfigError(f"method {spec.method!r} has a gender head but data.gender_csv is not set "
                          "(`rlq gender sheet` makes a template for a new dataset)")
    if d.recolor and not d.parsing_root and not auto_side and canonical_name(d.dataset) != "manifest":
        raise ConfigError("clothes recolouring (data.recolor=true) needs data.parsing_root (SCHP LIP maps, or "
                          "`rlq parse estimate`); or set data.recolor=false")


def dataset_options(name: str, skip_bad: bool = False, camera_rule: str = "unique") -> dict[str, Any]:
    """The parser options a dataset takes from the run spec."""
    opts: dict[str, Any] = {"skip_bad": skip_bad}
    if canonical_name(name) == "celebreid":
        opts["camera_rule"] = camera_rule
    return opts
