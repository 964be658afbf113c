"""What every task provides: the training setup the engine runs, and how a checkpoint is evaluated.

:mod:`kdlab.runs.run` (training) and :mod:`kdlab.runs.evaluate` (``kdlab eval``) call these through
:func:`kdlab.tasks.get_task`; tasks import neither of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from kdlab.config.recipe import Recipe
from kdlab.errors import KdlabError
from kdlab.results import existing_ancestor, write_problem
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
    force: bool = False  # recompute attacks already recorded in ``out`` (default: skip them)
    notify: Callable[[str], None] | None = None  # one line for the user: a skipped attack, an expected time


@dataclass
class EvalReport:
    """The result rows (appended now, or already recorded and skipped), sanity violations and the eps-sweep plot.

    ``appended``: rows appended to the CSV by this call (the sanity checks' rows included; ``None``: all of
    ``rows``); ``attacks_run``: how many of those were attacks computed by this call (not the sanity verdict,
    which a call may only judge again from recorded attacks); ``skipped``: how many of ``rows`` were already
    recorded and not computed again; ``sanity``: the sanity verdict recorded in the ``sanity`` column (``None``
    when the checks were not run)."""

    rows: list[dict[str, Any]]
    violations: list[str] = field(default_factory=list)
    plot: Path | None = None
    appended: int | None = None
    skipped: int = 0
    sanity: str | None = None
    attacks_run: int | None = None


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``kdlab eval`` after rows were appended: ``message`` says truthfully what was kept, where,
    and how to go on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def refuse_unwritable(path: Path, option: str) -> None:
    """A one-line :class:`~kdlab.errors.KdlabError` naming ``path`` and the fix unless a file can be written
    there: its folder exists and is writable (or can be created under a writable folder), and the file, if it
    exists, is a writable file. Checked before any work, so a long evaluation never ends unable to keep its rows."""
    path = Path(path)
    if path.is_dir():
        raise KdlabError(f"{option} {path} is a folder: give a file path, e.g. {option} {path / 'eval.csv'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise KdlabError(f"{option} {path} is not writable: make it writable (chmod u+w {path}) or choose another "
                         f"{option}")
    folder = path.parent
    existing = existing_ancestor(folder)
    if not existing.is_dir():
        raise KdlabError(f"{option} {path}: {existing} is a file, not a folder, so {folder} cannot be created: "
                         f"choose another {option}")
    what = f"folder {folder}" if existing == folder else f"{existing} (to create {folder} in)"
    fix = f"make it writable (chmod u+w {existing}) or choose another {option}"
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KdlabError(f"{option} {path}: {what} is not writable: {fix}")
    error = write_problem(existing)  # what os.access cannot see: a read-only mount, /proc, root's rights
    if error is not None:
        raise KdlabError(f"{option} {path}: {what} is not writable ({error}): {fix}")


class Task(Protocol):
    name: str

    def load_data(self, recipe: Recipe) -> Any: ...

    def num_classes(self, data: Any) -> int: ...

    def setup(self, recipe: Recipe, data: Any, teacher: nn.Module | None) -> TrainingSetup: ...

    def evaluate(self, model: nn.Module, data: Any, recipe: Recipe,
                 progress: Any = None) -> dict[str, float]: ...

    def evaluate_checkpoint(self, target: EvalTarget, options: EvalOptions) -> EvalReport: ...
