"""What every task provides: the training setup the engine runs, and how a checkpoint is evaluated.

:mod:`kdlab.runs.run` (training) and :mod:`kdlab.runs.evaluate` (``kdlab eval``) call these through
:func:`kdlab.tasks.get_task`; tasks import neither of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from kdlab.config.recipe import Recipe
from kdlab.train.engine import DataSource


@dataclass
class TrainingSetup:
    """Everything the engine needs for one run, plus how to save and evaluate the trained network."""

    model: nn.Module  # the network exported as best.pt
    method: nn.Module  # what the engine trains (model + connectors/adapters)
    source: DataSource
    validate: Callable[[], dict[str, float]] | None  # per-epoch validation metrics (see engine.fit)
    num_classes: int
    classes: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


def training_cost(method: nn.Module) -> dict[str, float]:
    """A method's declared cost per training image: student forward+backward passes (``passes_per_image``: 1 for
    a plain step, 1 + k with a k-step inner maximisation) and teacher forward passes, counted apart."""
    return {"passes_per_image": float(method.passes), "teacher_forwards_per_image": float(method.teacher_forwards)}


@dataclass
class EvalTarget:
    """What ``kdlab eval`` was pointed at: a checkpoint, the recipe beside it (if any) and a label for rows."""

    checkpoint: Path
    recipe: Recipe | None
    label: str


@dataclass
class EvalOptions:
    """``kdlab eval``'s options, as given (``None``: the attack's or the recipe's default)."""

    attacks: list[str] | None = None
    eps: float | None = None
    alpha: float | None = None
    steps: int | None = None
    restarts: int | None = None
    n: int = 1000
    batch_size: int = 256
    seed: int = 0
    data: str | None = None
    out: Path = Path("results/eval.csv")
    sanity: bool = False
    eps_sweep: list[float] | None = None
    progress: Any = None
    arch: str | None = None
    num_classes: int | None = None
    norm: str = "dataset"


@dataclass
class EvalReport:
    """The rows ``kdlab eval`` appended, sanity violations and the eps-sweep plot, if any."""

    rows: list[dict[str, Any]]
    violations: list[str] = field(default_factory=list)
    plot: Path | None = None


class Task(Protocol):
    name: str

    def load_data(self, recipe: Recipe) -> Any: ...

    def num_classes(self, data: Any) -> int: ...

    def setup(self, recipe: Recipe, data: Any, teacher: nn.Module | None) -> TrainingSetup: ...

    def evaluate(self, model: nn.Module, data: Any, recipe: Recipe,
                 progress: Any = None) -> dict[str, float]: ...

    def evaluate_checkpoint(self, target: EvalTarget, options: EvalOptions) -> EvalReport: ...
