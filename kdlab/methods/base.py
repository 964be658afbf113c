"""What every distillation method shares: the frozen teacher, feature taps, connectors and the step interface.

A method is an ``nn.Module`` built as ``Method(student, teacher, settings, image_shape=...)``:

* its registered submodules are exactly what the engine trains and checkpoints: ``student`` plus any
  connectors the method adds (``self.connectors``);
* the teacher is frozen (eval mode, ``requires_grad`` off) and held *outside* the module tree (a plain list),
  so it is neither in ``parameters()`` nor in ``state_dict()``; :meth:`DistillationMethod.train` keeps it in
  eval mode, so its BatchNorm statistics never change. Its parameters take no gradient, but gradients still
  flow *through* it to its input (a method whose attack needs the teacher's input gradient can have them);
* one training step is ``forward(batch, generator) -> StepResult``: the engine calls ``method(batch, generator)``,
  so a ``DistributedDataParallel`` wrapper around the method synchronises the step's gradients.
  ``training_step`` is the same call under its older name.

Costs are data (:attr:`passes`, :attr:`teacher_forwards`): forward+backward passes of the student per training
image and teacher forward passes per image, read from the method's settings (``kdlab.config.methods``).

New methods subclass :class:`DistillationMethod`, set ``settings_class`` and are registered by name in
:mod:`kdlab.methods.registry` (one line), or from anywhere with ``register_method``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from kdlab.config.methods.base import MethodSettings
from kdlab.models.connectors import build_connector
from kdlab.models.taps import FeatureTaps, TapKey
from kdlab.train.engine import StepResult


def tapped_shapes(model: nn.Module, keys: list, image_shape: tuple[int, ...],
                  inputs: bool = False) -> list[torch.Size]:
    """The shape of each tapped block's output (or, with ``inputs``, its input) for one image, from one dry
    forward pass (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FeatureTaps(model, keys, detach=True, inputs=inputs) as taps:
        model(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    model.train(was_training)
    return [taps.features[key].shape for key in keys]


def block_channels(model: nn.Module, keys: list, image_shape: tuple[int, ...]) -> list[int]:
    """Channel count of each tapped block, from one dry forward pass (eval mode, no grad)."""
    return [shape[1] for shape in tapped_shapes(model, keys, image_shape)]


def connector_for(student_channels: int, teacher_channels: int, kind: str) -> nn.Module:
    """``kind`` ``auto``: the identity when the channel counts match, else a plain 1x1 convolution."""
    if kind == "auto":
        kind = "identity" if student_channels == teacher_channels else "conv1x1"
    return build_connector(student_channels, teacher_channels, kind)


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: the teacher is used, never trained."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


class DistillationMethod(nn.Module):
    """Base of every method: holds the student (registered) and the frozen teacher (not registered).

    ``teacher`` is held when given and the settings use it (``settings.teacher_forwards > 0``); a method whose
    settings need a teacher and get none raises ``ValueError``, unless ``teacher_optional`` (Structural KD:
    a detection teacher's own training recipe is the same step without a teacher).
    """

    settings_class: ClassVar[type[MethodSettings]]
    teacher_optional: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None, settings: MethodSettings,
                 image_shape: tuple[int, ...] = (3, 32, 32)):
        super().__init__()
        self.student = student
        self.settings = settings
        self.image_shape = tuple(image_shape)
        self._teacher: list[nn.Module] = []  # a plain list keeps it out of state_dict() and parameters()
        if settings.teacher_forwards > 0:
            if teacher is None and not self.teacher_optional:
                raise ValueError(f"method {settings.name} needs a teacher")
            if teacher is not None:
                self._teacher.append(freeze(teacher))

    # ------------------------------------------------------------------ teacher
    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    @property
    def distills(self) -> bool:
        """True when a step runs the teacher."""
        return bool(self._teacher)

    def train(self, mode: bool = True) -> DistillationMethod:
        super().train(mode)
        if self._teacher:
            self._teacher[0].eval()  # frozen: BN statistics and dropout stay in eval mode
        return self

    def teacher_outputs(self, inputs: Any, keys: list[TapKey] = (), inputs_of: bool = False):
        """The teacher's output on ``inputs`` and its tapped features, without grad (detached)."""
        with torch.no_grad(), FeatureTaps(self.teacher, list(keys), detach=True, inputs=inputs_of) as taps:
            output = self.teacher(inputs)
        return output, taps

    # ------------------------------------------------------------------ cost
    @property
    def passes(self) -> float:
        """Forward+backward passes of the student per training image (1 + k with a k-step inner maximisation)."""
        return self.settings.student_passes

    @property
    def teacher_forwards(self) -> float:
        """Teacher forward passes per training image (0 when the step does not run the teacher)."""
        return self.settings.teacher_forwards if self._teacher else 0.0

    # ------------------------------------------------------------------ step
    def forward(self, batch: Any, generator: torch.Generator) -> StepResult:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(batch, generator) -> StepResult")

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine before every epoch (counted from 1, also on resume); a method whose step
        depends on the epoch (IAD's warm-up) overrides it. What it keeps must follow from ``epoch`` alone."""

    def training_step(self, batch: Any, generator: torch.Generator) -> StepResult:
        """The step under its older name; goes through ``forward`` (``__call__``) like the engine's call."""
        return self(batch, generator)
