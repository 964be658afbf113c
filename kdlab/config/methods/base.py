"""The base of every method's settings: its ``name``, the tasks it fits and what a training step costs.

Every class states what a training step costs (:attr:`MethodSettings.student_passes`,
:attr:`MethodSettings.teacher_forwards`), as data for the runs and ablation tables.
"""

from __future__ import annotations

from typing import ClassVar

from kdlab.config.schema import Section


class MethodSettings(Section):
    """Base of every method's settings. Subclasses set ``name: Literal["..."] = "..."`` and ``tasks``."""

    name: str
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    @property
    def student_passes(self) -> float:
        """Forward+backward passes of the student per training image (1 for a plain step, 1 + k for a k-step
        inner maximisation); adversarial methods override it."""
        return 1.0

    @property
    def teacher_forwards(self) -> float:
        """Teacher forward passes per training image, counted apart from the student's (0: no teacher used)."""
        return 1.0

    def with_references(self, arch: str, backbone: str, distills: bool) -> MethodSettings:
        """The settings with every ``reference`` default resolved for the recipe's model (``arch``, ``backbone``;
        ``distills``: the recipe has a teacher). Called once, when the recipe is validated
        (``kdlab.config.recipe.Recipe``), so the resolved recipe records the values used; none here."""
        return self

    def reference_grad_clip(self, distills: bool) -> float | None:
        """What ``train.grad_clip: reference`` means for this method (max gradient norm; None: no clipping)."""
        return None
