"""The strategy interface between the one training loop and a training method (docs/design.md boundary 4).

The trainer owns the loop (device, AMP, DDP, every optimizer step, checkpoints, logging, evaluation); a
method says which phases an epoch has and turns one batch into named loss terms.

A step may have stages: ``training_step`` returns one :class:`StepOutput` (the main optimizer's losses),
or a generator that yields several. A stage names the optimizer its losses belong to (``"main"``, the
trainer's, or one of :meth:`Method.optimizers`); the trainer checks every term of a stage for finiteness,
then takes that optimizer's step and resumes the generator, so a later stage can use an earlier stage's
update (CAL's clothes head, docs/method.md §4 step 2-3). The main stage comes last. When a stage is not
finite under ``train.nonfinite=skip``, the trainer puts back every parameter, buffer and optimizer state
the batch touched, so a skipped batch changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ..data.records import Dataset
    from ..spec import RunSpec

__all__ = ["Phase", "StepContext", "StepOutput", "StepResult", "Method", "MAIN"]

#: The trainer's own optimizer (the model's parameters, with the learning-rate schedule).
MAIN = "main"


@dataclass(frozen=True)
class Phase:
    """A pass over one loader. With ``paired`` = (loader, kind), every batch of ``loader`` is preceded
    by one step of ``kind`` on the next batch of the paired loader, which cycles (step-wise alternation)."""

    name: str
    loader: str
    kind: str
    paired: tuple[str, str] | None = None


@dataclass
class StepContext:
    """What a training step may use; built by the trainer for every step."""

    model: nn.Module  # the (possibly DDP-wrapped) model: call it
    raw_model: nn.Module  # the underlying ReIDModel: read its attributes
    device: torch.device
    epoch: int
    step: int
    generator: torch.Generator  # device-side randomness of this step, seeded from (seed, epoch, rank, step)
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    channels_last: bool = False


@dataclass
class StepOutput:
    """Loss terms to sum for one optimizer step (``optimizer``: ``"main"`` or a name from
    :meth:`Method.optimizers`), plus scalars to log (not back-propagated)."""

    losses: dict[str, torch.Tensor]
    metrics: dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    optimizer: str = MAIN


#: What ``training_step`` returns: one (main) stage, or a generator of stages, the main one last.
StepResult = StepOutput | Iterator[StepOutput]


class Method:
    """Base class: subclasses implement :meth:`from_run`, :meth:`phases` and :meth:`training_step`.

    A method is registered with its strategy class in :mod:`rlq.methods.registry` (docs/design.md "Adding a method");
    :func:`rlq.engine.build.build_method` builds it with :meth:`from_run`."""

    name = "method"
    #: some parameters are unused in some steps (pose branch in TAD steps): DDP must look for them.
    has_unused_parameters = False

    @classmethod
    def from_run(cls, name: str, spec: RunSpec, dataset: Dataset, *, palette_size: int | None,
                 teacher: nn.Module | None = None) -> Method:
        """The strategy of a run: ``spec`` is its :class:`rlq.spec.RunSpec`, ``dataset`` the target
        :class:`rlq.data.records.Dataset`, ``palette_size`` the recolouring palette's size (None: no recolouring),
        ``teacher`` the frozen teacher when the method's registry entry needs one and the TAD variant distils."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build itself from a run: implement from_run")

    def setup(self, model: nn.Module, device: torch.device, ddp_wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Create method-owned modules and optimizers (e.g. the clothes classifier) on ``device``."""

    def phases(self, epoch: int) -> list[Phase]:
        raise NotImplementedError

    def training_step(self, kind: str, batch: Mapping[str, Any], ctx: StepContext) -> StepResult:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Method-owned optimizers by name (stepped by the trainer when a stage names them)."""
        return {}

    def on_epoch_start(self, epoch: int) -> None:
        """Hook (e.g. to set per-epoch learning rates of method-owned optimizers)."""

    # -- checkpointing of method-owned state --------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        pass

    def train_modules(self) -> list[nn.Module]:
        """Method-owned modules that follow the model's train/eval mode."""
        return []
