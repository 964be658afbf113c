"""``kdlab train`` and ``kdlab distill``: one run from a recipe (checked first, then run; a finished run is
reused), and its results table."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.cli.command import friendly, typed_command
from kdlab.cli.options import FORCE, OVERRIDES, RESUME, THREADS, set_threads


def _print_run(outcome, role: str) -> None:
    from kdlab.runs.console import console, results_table
    from kdlab.runs.result_view import run_result_view

    view = run_result_view(outcome.summary, role, outcome.reused)
    console.print(results_table(view.title, view.rows, view.columns, short=view.short, notes=view.notes))
    if outcome.summary.get("flag"):
        console.print(f"[bold red]{role} {outcome.summary['flag']}[/]", highlight=False)


def _run(recipe_path: Path, overrides: list[str], resume: bool, force: bool, expect_distill: bool,
         threads: int | None) -> None:
    from kdlab.check.launch import run_command
    from kdlab.runs.console import RichReporter

    set_threads(threads)
    outcome = run_command(recipe_path, overrides, resume=resume, force=force, expect_distill=expect_distill,
                          reporter_factory=RichReporter, command=typed_command())
    if outcome is not None:  # None on the other processes of a torchrun group: rank 0 prints
        _print_run(outcome, "student" if expect_distill else "model")


@friendly
def distill(
    recipe: Path = typer.Argument(
        ..., help="Distillation recipe (YAML with student: and teacher:) or a shipped recipe's name, e.g. quickstart."),
    set_: list[str] = OVERRIDES,
    resume: bool = RESUME,
    force: bool = FORCE,
    threads: int | None = THREADS,
) -> None:
    """Distil a student from a teacher (trained first from its recipe if needed), evaluate it, append a row.

    Writes results/runs/<name>-<key>/ (recipe.yaml, run.json, metrics.csv, best.pt, last.pt,
    summary.json) and one row in results/runs.csv; prints clean and PGD-20 accuracy of teacher and student.
    """
    _run(recipe, set_, resume, force, expect_distill=True, threads=threads)


@friendly
def train(
    recipe: Path = typer.Argument(
        ..., help="Training recipe (YAML with model:) or a shipped recipe's name, e.g. quickstart_teacher."),
    set_: list[str] = OVERRIDES,
    resume: bool = RESUME,
    force: bool = FORCE,
    threads: int | None = THREADS,
) -> None:
    """Train one model (standard, PGD-AT, FGSM-RS or TRADES adversarial training), evaluate it, append a row."""
    _run(recipe, set_, resume, force, expect_distill=False, threads=threads)
