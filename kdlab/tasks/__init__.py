"""Tasks: what differs between classification and detection runs (data, method, evaluation).

The run layer (``kdlab.run``) is task-agnostic: it asks the task registered under
``recipe.task`` for its data, its training setup and its evaluation, and does everything else
(teacher cache, run directory, engine, summary, results row) the same way for every task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from kdlab.engine import DataSource
from kdlab.errors import KdlabError
from kdlab.recipe import Recipe


@dataclass
class TrainingSetup:
    """Everything the engine needs for one run, plus how to save and evaluate the trained network."""

    model: nn.Module  # the network exported as best.pt
    method: nn.Module  # what the engine trains (model + connectors/adapters)
    source: DataSource
    validate: Callable[[], float] | None
    num_classes: int
    classes: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


def training_cost(method: nn.Module) -> dict[str, float]:
    """A method's declared cost per training image: student forward+backward passes (``passes_per_image``: 1 for
    a plain step, 1 + k with a k-step inner maximisation) and teacher forward passes, counted apart."""
    return {"passes_per_image": float(method.passes), "teacher_forwards_per_image": float(method.teacher_forwards)}


class Task(Protocol):
    name: str

    def load_data(self, recipe: Recipe) -> Any: ...

    def num_classes(self, data: Any) -> int: ...

    def setup(self, recipe: Recipe, data: Any, teacher: nn.Module | None) -> TrainingSetup: ...

    def evaluate(self, model: nn.Module, data: Any, recipe: Recipe,
                 progress: Any = None) -> dict[str, float]: ...


def get_task(name: str) -> Task:
    if name == "classification":
        from kdlab.tasks.classification import ClassificationTask

        return ClassificationTask()
    if name == "detection":
        from kdlab.tasks.detection import DetectionTask

        return DetectionTask()
    raise KdlabError(f"unknown task '{name}': use classification or detection")
