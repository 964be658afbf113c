"""The kdlab command line: parse, call one function, print. No experiment logic lives here."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from kdlab.errors import KdlabError

app = typer.Typer(
    help="kdlab: knowledge-distillation experiments from YAML recipes — MixACM robustness transfer, "
    "structural KD for detection, and trustworthy robustness evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

SET_HELP = "Override a recipe key, e.g. --set train.epochs=5 (repeatable; type-checked like the file)."


def friendly(command: Callable) -> Callable:
    """Turn user mistakes (KdlabError) into one line on stderr and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KdlabError as error:
            from kdlab.console import error_console

            error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            from kdlab.console import error_console

            error_console.print("interrupted: the last finished epoch is kept; rerun with --resume to continue")
            raise typer.Exit(130) from None

    return wrapper


def _print_run(outcome, role: str) -> None:
    from kdlab.console import console, results_table

    summary = outcome.summary
    rows = []
    if summary.get("teacher_clean_acc") is not None:
        rows.append({"role": "teacher", "run": summary.get("teacher"), "clean": summary.get("teacher_clean_acc"),
                     "pgd": summary.get("teacher_pgd_acc")})
    rows.append({"role": role, "run": summary["run_dir"], "clean": summary.get("clean_acc"),
                 "pgd": summary.get("pgd_acc")})
    note = " (finished earlier: reused; --force retrains)" if outcome.reused else ""
    title = (f"{summary['name']}: accuracy (%) on {summary.get('eval_n')} test images, "
             f"PGD-{summary.get('eval_steps')} eps {summary.get('eval_eps', 0) * 255:.0f}/255{note}")
    console.print(results_table(title, rows, ["role", "run", "clean", "pgd"]))


def _run(recipe_path: Path, overrides: List[str], resume: bool, force: bool, expect_distill: bool) -> None:
    from kdlab.console import RichReporter
    from kdlab.recipe import load_recipe
    from kdlab.run import run_recipe

    recipe = load_recipe(recipe_path, overrides)
    if recipe.is_distillation != expect_distill:
        other = "distill" if recipe.is_distillation else "train"
        raise KdlabError(f"{recipe_path} is a {other} recipe: run it with `kdlab {other} {recipe_path}`")
    outcome = run_recipe(recipe, resume=resume, force=force, reporter_factory=RichReporter,
                         command=" ".join(sys.argv))
    _print_run(outcome, "student" if expect_distill else "model")


@app.command()
@friendly
def distill(
    recipe: Path = typer.Argument(..., help="Distillation recipe (YAML with student: and teacher:)."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Discard an existing run with the same recipe and retrain."),
) -> None:
    """Distil a student from a teacher (trained first from its recipe if needed), evaluate it, append a row.

    Writes results/runs/<name>-<key>/ (recipe.yaml, run.json, metrics.csv, best.pt, last.pt,
    summary.json) and one row in results/runs.csv; prints clean and PGD-20 accuracy of teacher and student.
    """
    _run(recipe, set_, resume, force, expect_distill=True)


@app.command()
@friendly
def train(
    recipe: Path = typer.Argument(..., help="Training recipe (YAML with model:)."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Discard an existing run with the same recipe and retrain."),
) -> None:
    """Train one model (standard, PGD-AT, FGSM-RS or TRADES adversarial training), evaluate it, append a row."""
    _run(recipe, set_, resume, force, expect_distill=False)


@app.command()
@friendly
def inspect(
    model: str = typer.Argument(..., help="Architecture: resnet_small, preact_resnet18, wrn-16-4, wrn-34-10, ..."),
    width: Optional[int] = typer.Option(None, help="Base width (resnet_small)."),
    blocks_per_stage: Optional[int] = typer.Option(None, help="Residual blocks per stage (resnet_small)."),
    num_classes: int = typer.Option(10, help="Output classes."),
    image_size: int = typer.Option(32, help="Input height and width."),
) -> None:
    """List a model's blocks (index, module path, output shape, channels): the indices recipes tap."""
    from kdlab.console import console, results_table
    from kdlab.models.registry import build_classifier, describe_blocks

    options = {k: v for k, v in {"width": width, "blocks_per_stage": blocks_per_stage}.items() if v is not None}
    network = build_classifier(model, num_classes, **options)
    rows = describe_blocks(network, image_size=(3, image_size, image_size))
    parameters = sum(p.numel() for p in network.parameters())
    table = results_table(
        f"{model}: {parameters / 1e6:.2f}M parameters; block 1 = stem, blocks 2.. = stages",
        [{"block": r["index"], "module path": r["path"], "output shape": "×".join(map(str, r["shape"])),
          "channels": r["channels"]} for r in rows],
        ["block", "module path", "output shape", "channels"],
    )
    console.print(table)


def main() -> None:  # pragma: no cover - console-script convenience
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
