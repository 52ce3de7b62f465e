"""The method registry: one :class:`MethodEntry` per training method (docs/design.md "Adding a method").

An entry says everything the rest of rlq needs to know about a method: its name, the model parts it trains
(:class:`ModelParts`, read by :class:`rlq.models.ReIDModel`), whether it trains on an external stream and distils
from a teacher (read by :mod:`rlq.engine.recipe`, :mod:`rlq.engine.build` and the demo), its training strategy (a
:class:`rlq.methods.base.Method` subclass that builds itself from a run with ``from_run``), the loss terms it logs,
and a one-line description (the model card, the demo report, the help texts). The run spec's ``method`` choices are
:func:`method_names`, read when a spec is checked, so a registered method is accepted everywhere and a bad name is
refused before any work.

This module is a plain table (no torch): the CLI reads it for its help texts without importing torch. A strategy may
be named as ``"module:Class"``, imported when a run is built.
"""

from __future__ import annotations

import difflib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = [
    "ModelParts",
    "MethodEntry",
    "register_method",
    "unregister_method",
    "get_method",
    "method_names",
    "REID_LOSSES",
    "TAD_LOSSES",
]

#: Loss terms of the ReID / CAP step (docs/method.md §4) in the order :class:`rlq.methods.reid.ReIDMethod` adds them
#: (its ``metrics.jsonl`` keys): the clothes head's own stage, the ID terms, the triplet, CAP's pose CE with the |cos|
#: term and gender CE, the CAL adversarial term.
REID_LOSSES: tuple[str, ...] = ("clothes_ce", "id_cal", "id_bot", "id_kl", "triplet", "pose", "cos", "gender", "cal")
#: Terms of the TAD step (docs/method.md §5.4, §12), as :class:`rlq.methods.tad.TADMethod` names them: distillation
#: (variants with a teacher), SS_MSE (Table 7 variants), the HQ/LQ ID KL, and the `paper` clothes-logit KL.
TAD_LOSSES: tuple[str, ...] = ("distill", "ss_mse", "ss_kl", "clothes_kl")


def _reid_terms(*drop: str) -> tuple[str, ...]:
    return tuple(t for t in REID_LOSSES if t not in drop)


_NAME = re.compile(r"[a-z0-9][a-z0-9_+.\-]*")


@dataclass(frozen=True)
class ModelParts:
    """The optional parts :class:`rlq.models.ReIDModel` builds (docs/method.md §2.1, §2.3). Every model has the shared
    trunk and the CAL branch with its CAL-ID head; the clothes classifier belongs to the strategy
    (:class:`rlq.methods.reid.ReIDMethod` builds it for every shipped method)."""

    bot_branch: bool = True  # the BOT branch with its BOT-ID head (two-branch Base Model); False: CAL's single branch
    pose_branch: bool = False  # the CAP pose branch with its K+1-way head (needs model.pose_clusters, §3.4)
    gender_head: bool = False  # the CAP gender head (on f_BOT by default: model.gender_on, Table 6)

    def __post_init__(self) -> None:
        for f in ("bot_branch", "pose_branch", "gender_head"):
            if not isinstance(getattr(self, f), bool):
                raise ConfigError(f"ModelParts.{f} must be True or False, got {getattr(self, f)!r}")
        if not self.bot_branch and (self.pose_branch or self.gender_head):
            raise ConfigError("ModelParts: the pose branch forks from the BOT path and the gender head sits on f_BOT "
                              "(docs/method.md §2.1, §2.3): they need bot_branch=True")


@dataclass(frozen=True)
class MethodEntry:
    """One training method: what the model builder, the recipe, the model card, the demo and the presets read."""

    name: str  # the value of the run spec's `method` (and of a checkpoint's model_args.method)
    description: str  # one line, shown in model cards, the demo report and help texts
    parts: ModelParts = field(default_factory=ModelParts)
    #: a Method subclass with a ``from_run`` classmethod, or ``"module:Class"`` naming one (imported when first built)
    strategy: Any = "rlq.methods.reid:ReIDMethod"
    losses: tuple[str, ...] = ()  # the loss terms its steps may log (metrics.jsonl keys): its loss schema
    needs_external: bool = False  # trains on an external HQ stream too (TAD, docs/method.md §5.1): tad.* settings apply
    needs_teacher: bool = False  # distils from a frozen teacher (tad.teacher) when tad.variant uses one (§5.3, §12)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"method name {self.name!r}: use lower-case letters, digits and _ + . - (it names run "
                              "folders and preset files)")
        if not isinstance(self.description, str) or not self.description.strip() or "\n" in self.description:
            raise ConfigError(f"method {self.name!r}: description must be one non-empty line")
        if not isinstance(self.parts, ModelParts):
            raise ConfigError(f"method {self.name!r}: parts must be a ModelParts, got {type(self.parts).__name__}")
        losses = tuple(self.losses) if isinstance(self.losses, (list, tuple)) else None
        if losses is None or not all(isinstance(t, str) and t for t in losses) or len(set(losses)) != len(losses):
            raise ConfigError(f"method {self.name!r}: losses must be distinct term names, got {self.losses!r}")
        object.__setattr__(self, "losses", losses)
        if isinstance(self.strategy, str):
            if ":" not in self.strategy:
                raise ConfigError(f"method {self.name!r}: strategy {self.strategy!r} must be a class or 'module:Class'")
        elif not callable(getattr(self.strategy, "from_run", None)):
            raise ConfigError(f"method {self.name!r}: strategy {self.strategy!r} has no from_run classmethod (subclass "
                              "rlq.methods.reid.ReIDMethod or rlq.methods.base.Method)")
        for f in ("needs_external", "needs_teacher"):
            if not isinstance(getattr(self, f), bool):
                raise ConfigError(f"method {self.name!r}: {f} must be True or False")
        if self.needs_teacher and not self.needs_external:
            raise ConfigError(f"method {self.name!r}: a teacher distils on the external stream (docs/method.md §5.4): "
                              "needs_teacher=True needs needs_external=True")

    def strategy_class(self) -> type:
        """The strategy class (imported now when given as ``"module:Class"``)."""
        return pkgutil.resolve_name(self.strategy) if isinstance(self.strategy, str) else self.strategy


_REGISTRY: dict[str, MethodEntry] = {}


def register_method(entry: MethodEntry, *, replace: bool = False) -> MethodEntry:
    """Add ``entry`` to the registry; a name already registered is refused unless ``replace=True``."""
    if not isinstance(entry, MethodEntry):
        raise ConfigError(f"register_method takes a MethodEntry, got {type(entry).__name__}")
    if entry.name in _REGISTRY and not replace:
        raise ConfigError(f"method {entry.name!r} is already registered ({_REGISTRY[entry.name].description}); "
                          "choose another name, or pass replace=True to replace it")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_method(name: str) -> MethodEntry:
    """Remove a registered method and return its entry (e.g. a test's method, after the test)."""
    entry = get_method(name)
    del _REGISTRY[name]
    return entry


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> MethodEntry:
    """The entry of a registered method; an unknown name is refused with the registered ones, closest first."""
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        names = list(_REGISTRY)
        close = difflib.get_close_matches(str(name).lower(), names, n=len(names), cutoff=0.5)
        ordered = close + [n for n in names if n not in close]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown method {name!r}{hint}; registered methods (closest first): {', '.join(ordered)} "
                          "(rlq.methods.register_method adds one)")
    return entry


# -- the shipped methods (docs/method.md §1, §12; their presets: configs/methods/*.yaml) -----------------------------
_CAP = ModelParts(pose_branch=True, gender_head=True)
for _entry in (
    # the triplet on f_CAL only with loss.cal_triplet=true
    MethodEntry("cal", "CAL (single-branch clothes-adversarial baseline)", ModelParts(bot_branch=False),
                losses=_reid_terms("id_bot", "id_kl", "pose", "cos", "gender")),
    MethodEntry("bm", "Base Model (two-branch CAL + BOT)", losses=_reid_terms("pose", "cos", "gender")),
    MethodEntry("bm+g", "Base Model + gender head (CAP component, training only)", ModelParts(gender_head=True),
                losses=_reid_terms("pose", "cos")),
    MethodEntry("bm+p", "Base Model + pose branch (CAP component, training only)", ModelParts(pose_branch=True),
                losses=_reid_terms("gender")),
    MethodEntry("cap", "Base Model + CAP (Coarse Attribute Prediction: pose clusters and gender, training only)", _CAP,
                losses=REID_LOSSES),
    MethodEntry("tad", "Base Model + TAD (Task Agnostic Distillation from a teacher trained on external data, "
                "training only)", strategy="rlq.methods.tad:TADMethod",
                losses=(*_reid_terms("pose", "cos", "gender"), *TAD_LOSSES), needs_external=True, needs_teacher=True),
    MethodEntry("rlq", "RLQ = Base Model + CAP + TAD (Pathak & Rawat, BMVC 2025)", _CAP,
                strategy="rlq.methods.tad:TADMethod", losses=(*REID_LOSSES, *TAD_LOSSES), needs_external=True,
                needs_teacher=True),
):
    register_method(_entry)
del _entry
