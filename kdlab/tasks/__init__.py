"""Tasks: what differs between classification and detection runs (data, method, evaluation).

The run layer (``kdlab.runs.run``) is task-agnostic: it asks the task registered under
``recipe.task`` for its data, its training setup and its evaluation, and does everything else
(teacher cache, run directory, engine, summary, results row) the same way for every task.
``kdlab eval`` (``kdlab.runs.evaluate``) likewise asks the checkpoint's task to evaluate it.
"""

from __future__ import annotations

from kdlab.errors import KdlabError
from kdlab.tasks.base import (  # noqa: F401  (the task interface, importable from kdlab.tasks)
    EvalOptions,
    EvalReport,
    EvalTarget,
    Task,
    TrainingSetup,
    training_cost,
)


def get_task(name: str) -> Task:
    if name == "classification":
        from kdlab.tasks.classification import ClassificationTask

        return ClassificationTask()
    if name == "detection":
        from kdlab.tasks.detection import DetectionTask

        return DetectionTask()
    raise KdlabError(f"unknown task '{name}': use classification or detection")
