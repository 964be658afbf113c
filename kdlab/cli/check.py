"""``kdlab check`` and ``kdlab inspect``: look before running. ``check`` checks a plan (a recipe, or with the
ablation flags of ``kdlab ablate`` every cell of an ablation) and estimates its time; ``inspect`` lists the
blocks of a model or of a recipe's student and teacher."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.cli import ablation_flags
from kdlab.cli.command import friendly
from kdlab.cli.options import OVERRIDES, SET_HELP, THREADS, set_threads


@friendly
def inspect(
    target: str = typer.Argument(
        ..., help="An architecture (resnet_small, preact_resnet18, wrn-16-4, wrn-34-10, ...), a recipe .yaml or a "
                  "shipped recipe's name (quickstart): a distillation recipe shows student and teacher blocks side by side with the ACM pairs."),
    width: int | None = typer.Option(None, help="Base width (resnet_small; architecture names only)."),
    blocks_per_stage: int | None = typer.Option(None, help="Residual blocks per stage (resnet_small; names)."),
    num_classes: int = typer.Option(10, help="Output classes (a teacher checkpoint keeps its own)."),
    image_size: int = typer.Option(32, help="Input height and width."),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP + " Recipes only."),
) -> None:
    """List a model's blocks (index, module path, output shape, channels): the indices recipes tap."""
    from kdlab.check.inspect import architecture_view, recipe_target, recipe_view
    from kdlab.runs.console import console, results_table

    recipe = recipe_target(target)
    if recipe is not None:
        view = recipe_view(str(recipe), set_ or [], num_classes, image_size)
    else:
        options = {"width": width, "blocks_per_stage": blocks_per_stage}
        options = {k: v for k, v in options.items() if v is not None}
        view = architecture_view(target, num_classes, image_size, **options)
    console.print(results_table(view.title, view.rows, view.columns))


@friendly
def check(
    recipe: Path = typer.Argument(..., help="A training, distillation or (with the ablation flags) ablation recipe."),
    set_: list[str] = OVERRIDES,
    components: bool = ablation_flags.COMPONENTS,
    blocks: str | None = ablation_flags.BLOCKS,
    cumulative: bool = ablation_flags.CUMULATIVE,
    per_block_weight: bool = ablation_flags.PER_BLOCK_WEIGHT,
    grid: list[str] = ablation_flags.GRID,
    methods: str | None = ablation_flags.METHODS,
    method_set: list[str] = ablation_flags.METHOD_SET,
    inner_steps: int | None = ablation_flags.INNER_STEPS,
    inner_step: str | None = ablation_flags.INNER_STEP,
    seeds: str | None = ablation_flags.SEEDS,
    attack: list[str] = ablation_flags.ATTACKS,
    name: str | None = ablation_flags.NAME,
    out: Path = ablation_flags.OUT,
    timing: bool = typer.Option(True, "--timing/--no-timing", help="Time a few steps to estimate the run time."),
    threads: int = THREADS,
) -> None:
    """Check a plan without running it: recipe, teacher recipe or checkpoint, every ablation cell, data, models,
    block keys, one step on random images, output paths. Prints which runs will train, which are finished
    (and where), and an estimated time from a few timed steps. Writes nothing; exit code 2 lists every problem."""
    from rich.markup import escape

    from kdlab.check.plan import check_ablation_plan, check_recipe_plan
    from kdlab.runs.console import console
    from kdlab.runs.estimate import plan_lines, plan_summary

    set_threads(threads)
    from kdlab.ablation.study import check_study_plan, is_study_file

    if is_study_file(recipe):  # a declared study: its own cells and seeds, no plan flags
        study = ablation_flags.study_plan(recipe, {
            "--components": components, "--blocks": blocks is not None, "--cumulative": cumulative,
            "--per-block-weight": per_block_weight, "--grid": bool(grid), "--methods": methods is not None,
            "--method-set": bool(method_set), "--inner-steps": inner_steps is not None,
            "--inner-step": inner_step is not None, "--seeds": seeds is not None, "--attack": bool(attack),
            "--set": bool(set_), "--name": name is not None}, out)
        plans = check_study_plan(study, out, timing=timing, threads=threads)
    elif components or blocks is not None or grid or methods is not None:
        _, ablation = ablation_flags.ablation_plan(
            recipe, components=components, blocks=blocks, cumulative=cumulative, grid=grid, seeds=seeds,
            attacks=attack, overrides=set_, name=name, per_block_weight=per_block_weight, methods=methods,
            method_overrides=method_set, inner_steps=inner_steps, inner_step=inner_step)
        plans = [check_ablation_plan(ablation, out, timing=timing, threads=threads)]
    else:
        from kdlab.config.shipped import resolve_recipe

        plans = [check_recipe_plan(resolve_recipe(recipe), set_, resume=True, timing=timing, threads=threads)]
    for plan in plans:  # a tuned study: its tuning grid's round, then its final runs
        for note in plan.notes:  # what --set changed beyond its keys (a changed method's dropped settings)
            console.print(escape(note), highlight=False, soft_wrap=True)
        console.print(f"[bold]plan {plan.title}[/]: checked, no problems found", highlight=False)
        for line in [*plan_lines(plan), *plan_summary(plan)]:
            console.print(escape(line), highlight=False, soft_wrap=True)
