"""``kdlab eval``: evaluate a checkpoint or run directory and append the rows to a CSV.

The command layer: it resolves the target (a run directory with its recipe, a kdlab checkpoint, or with
``--arch`` any plain state dict) and hands it to its task (:mod:`kdlab.tasks`), which knows how to evaluate
it: attacks for a classifier (:mod:`kdlab.tasks.classification_eval`), COCO box AP for a detector.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kdlab.config.recipe import validate_recipe
from kdlab.errors import KdlabError
from kdlab.runtime.distributed import refuse_multiprocess
from kdlab.tasks import EvalOptions, EvalReport, EvalTarget, get_task
from kdlab.tasks.base import refuse_unwritable


def resolve_target(target: str | Path) -> EvalTarget:
    """A run directory (its best.pt and recipe.yaml) or a bare model checkpoint."""
    import yaml

    from kdlab.models.files import resolve_model_path

    path = Path(target)
    if not path.exists():
        raise KdlabError(f"'{target}' not found: pass a run directory (results/runs/<name>-<key>) or a .pt file")
    checkpoint = resolve_model_path(path)
    recipe_file = (path if path.is_dir() else path.parent) / "recipe.yaml"
    recipe = validate_recipe(yaml.safe_load(recipe_file.read_text()), str(recipe_file)) if recipe_file.is_file() else None
    label = path.name if path.is_dir() else f"{path.parent.name}/{path.name}"
    return EvalTarget(checkpoint, recipe, label)


def evaluate_target(target: str | Path, attacks: list[str] | None = None, **options) -> EvalReport:
    """Evaluate a run directory or checkpoint with its task and append its rows to ``options['out']``
    (the keyword options are :class:`~kdlab.tasks.EvalOptions`' fields). An unwritable ``out`` is refused
    (one line) before anything is loaded."""
    from kdlab.config.zoo import PREFIX

    refuse_multiprocess("kdlab eval")  # it would append every row once per process
    model_dir = options.pop("model_dir", "models")
    chosen = EvalOptions(attacks=attacks, **options)
    # Every output path first, before a checkpoint is read or an image decoded: the CSV (and the eps-sweep plot,
    # written beside it; its exact name is checked once the test set is known).
    refuse_unwritable(Path(chosen.out), "--out")
    if str(target).startswith(PREFIX):  # a RobustBench model: its file in the zoo layout, CIFAR-10 by default
        from kdlab.config.zoo import existing_checkpoint

        path = existing_checkpoint(str(target)[len(PREFIX):], model_dir=model_dir)  # missing: one line
        chosen = replace(chosen, arch=str(target), data=chosen.data or "cifar10")
        return get_task("classification").evaluate_checkpoint(EvalTarget(path, None, str(target)), chosen)
    if chosen.arch is None and chosen.num_classes is not None:
        raise KdlabError("--num-classes applies to external checkpoints: give --arch NAME as well")
    resolved = resolve_target(target)
    if chosen.arch is not None:
        resolved = replace(resolved, recipe=None)  # an external checkpoint: nothing beside it describes it
    task = resolved.recipe.task if resolved.recipe is not None else "classification"
    return get_task(task).evaluate_checkpoint(resolved, chosen)


def latest_rows(path: Path):
    """The newest row per (model, test set, attack, eps, alpha, steps, restarts, n, seed): re-evaluations
    supersede; rows on another test set (data root, subset) are kept apart (:data:`kdlab.report.tables.EVAL_KEY`)."""
    from kdlab.report.tables import latest_eval_rows
    from kdlab.results import read_table

    return latest_eval_rows(read_table(path))
