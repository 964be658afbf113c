"""A run's time, estimated from a few timed steps (``kdlab check``): how long a plan takes before it is started.

:func:`kdlab.check.models.time_steps` times three training steps (the median counts; one for a slow model) on a
handful of random images of the data's size (after a warm-up step), one forward+backward and one forward of the
trained network alone. Scaled here:

* training: seconds per image of a step x images per epoch (full batches; ``train.max_batches_per_epoch``
  caps them) x ``train.epochs``;
* validation (``data.val_size`` with a selection metric): per epoch, every validation image once (clean
  accuracy, or a detector's AP50) plus ``train.select_steps`` + 1 forward+backward passes for PGD selection;
* evaluation: the ``eval.n`` images of the evaluated split once per attack, times the attack's iterations
  (PGD: ``eval.steps``; others: their documented defaults, ``kdlab.robustness.attacks``) in forward+backward passes.

It is a rough figure: the same machine and thread count as the check, small timed batches (per-image costs
fall with larger batches, so it tends to overestimate), no data loading time; early-stopping attacks
(AutoAttack) make it an upper bound.
"""

from __future__ import annotations

from typing import Any


def _images_per_epoch(recipe: Any, facts: Any) -> int:
    batch = recipe.data.batch_size
    if recipe.task == "detection" and facts.train < batch:
        return facts.train  # detection keeps a lone partial batch
    batches = facts.train // batch
    if recipe.train.max_batches_per_epoch is not None:
        batches = min(batches, recipe.train.max_batches_per_epoch)
    return batches * batch


def _attack_passes(recipe: Any, name: str) -> float:
    """Forward+backward passes per image of one evaluation column (clean: one forward, counted apart)."""
    from kdlab.robustness.attacks import attack_def

    if name == "pgd":
        return recipe.eval.steps + 1.0
    entry = attack_def(name)
    return float(max(1, entry.steps) * max(1, entry.restarts) + 1)


def validation_seconds(recipe: Any, facts: Any, cost: Any) -> float:
    """Estimated wall seconds of one epoch's validation (0 without a validation split or selection)."""
    if not facts.val or recipe.selection_metric == "last":
        return 0.0
    per_image = cost.forward
    if recipe.selection_metric == "pgd":
        per_image += (recipe.train.select_steps + 1) * cost.forward_backward
    return facts.val * per_image


def evaluation_seconds(recipe: Any, facts: Any, cost: Any) -> float:
    """Estimated wall seconds of the final evaluation (``eval.n`` images, every column of ``eval.attacks``)."""
    evaluated = facts.split(recipe.eval.split) or 0
    n = min(recipe.eval.n, evaluated)
    if recipe.task == "detection":
        return n * cost.forward
    return sum(cost.forward if name == "clean" else _attack_passes(recipe, name) * cost.forward_backward
               for name in recipe.eval.attacks) * n


def run_seconds(recipe: Any, facts: Any, cost: Any) -> float:
    """Estimated wall seconds of one run (training, per-epoch validation, final evaluation)."""
    train = cost.train * _images_per_epoch(recipe, facts) * recipe.train.epochs
    validation = validation_seconds(recipe, facts, cost) * recipe.train.epochs
    return train + validation + evaluation_seconds(recipe, facts, cost)


def how_estimated(runs: list[Any], threads: int) -> str:
    """One sentence saying how the estimate was made."""
    sizes = sorted({run.cost.images for run in runs if run.cost is not None})
    shown = "/".join(str(s) for s in sizes) or "a few"
    return (f"timed training steps on {shown} random images per distinct setting (the median of 3 after a warm-up "
            f"step; one step for slow models), on this machine with {threads} torch thread{'s' if threads > 1 else ''}"
            ", scaled to the split sizes, epochs, validation and attack iterations; data loading not included")


def clock(seconds: float | None) -> str | None:
    """``H:MM:SS`` (``1 day, H:MM:SS`` past a day)."""
    import datetime

    return None if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


def plan_lines(plan: Any) -> list[str]:
    """One line per run of the plan: what it is, whether it trains or is reused, its estimate, its directory
    (plain padded text, never cut to the terminal's width: the directory is what a user looks for)."""
    status = {"finished": "finished: reused", "unfinished": "unfinished: resumes", "to train": "to train"}

    def role(run: Any) -> str:
        return run.role if run.role == "teacher" or plan.seeds <= 1 else f"{run.role}, seed {run.seed}"

    rows = [(role(run), status[run.status], (clock(run.seconds) or "-") if run.status != "finished" else "",
             str(run.reuse_from or run.run_dir)) for run in plan.runs]
    rows.insert(0, ("run", "status", "estimate", "directory"))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
            for row in rows]


def plan_summary(plan: Any, threads: int) -> list[str]:
    """The lines under the plan's table: counts, the estimate and how it was made."""
    finished = [run for run in plan.runs if run.status == "finished"]
    lines = [f"{len(plan.runs)} runs: {len(finished)} finished (reused), {len(plan.to_train)} to train"
             + (f"; {plan.cells} cells x {plan.seeds} seeds" if plan.cells > 1 or plan.seeds > 1 else "")]
    timed = [run.seconds for run in plan.to_train if run.seconds is not None]
    if plan.to_train and timed:
        lines.append(f"estimated time, one run after another: {clock(sum(timed))} "
                     f"({how_estimated(plan.to_train, threads)})")
    elif not plan.to_train:
        lines.append("nothing to train: every run is finished and will be reused (--force retrains)")
    return lines
