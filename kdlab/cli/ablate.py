"""``kdlab ablate``: an ablation grid, checked before any work, run locally or on Slurm, tuned on a validation
split if asked. Its plan flags are shared with ``kdlab check`` (:mod:`kdlab.cli.ablation_flags`); the
``--executor`` and ``--slurm`` help lists the names of :mod:`kdlab.config.names`."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.ablation.slices import STOPPED_EXIT
from kdlab.cli import ablation_flags
from kdlab.cli.command import friendly, typed_command
from kdlab.cli.options import CELL_THREADS, SET_HELP, cell_threads
from kdlab.config.names import EXECUTORS, SLURM_SETTINGS


@friendly
def ablate(
    recipe: Path = typer.Argument(
        ..., help="Base recipe (a file or a shipped recipe's name); every cell is this recipe plus the cell's "
                  "overrides. Or a study file (recipes/studies/*.yaml, top-level study: key): exactly the cells, "
                  "seeds, tuning and comparisons it declares, with runtime flags only."),
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
    tune: list[str] = typer.Option(  # "\\[": rich markup would take [kind=mgd] for a style and drop it
        [], "--tune",
        help="KEY=V1,V2,V3: first choose KEY per cell on a validation split (one seed), then run --seeds with "
             "the chosen value (tables <title>-val and <title>-tuned; kdlab.ablation.tuning). Repeat as "
             "'KEY[CELL]=V1,V2' for a cell's own values, e.g. 'method.feature.weight\\[kind=mgd]=2e-6,2e-5'."),
    tune_val_size: int | None = typer.Option(
        None, "--tune-val-size", min=1,
        help="With --tune, for a recipe without data.val_size: training images held out to tune on."),
    tune_seed: int | None = typer.Option(None, "--tune-seed", help="With --tune: its one seed (default: the "
                                                                    "first of --seeds)."),
    tune_seeds: str | None = typer.Option(
        None, "--tune-seeds", help="With --tune: seeds whose mean validation metric decides, e.g. 0,1."),
    tune_rounds: int = typer.Option(
        1, "--tune-rounds", min=1, help="With --tune: rounds the grid may grow by (an open edge extended, a diverged "
                                        "neighbour of the best bisected; kdlab.ablation.tuning). 1: the values given."),
    tune_scale: str = typer.Option("log", "--tune-scale", help="With --tune-rounds: the grid's spacing, log or "
                                                               "linear."),
    tune_metric: str | None = typer.Option(
        None, "--tune-metric", help="With --tune: the validation metric maximised (default AP for detection, "
                                    "else pgd_acc with --attack pgd, else clean_acc)."),
    tune_from: Path | None = typer.Option(
        None, "--tune-from", help="With --tune: choose from this finished <title>-val.csv (e.g. another "
                                  "detector's) instead of running a tuning grid."),
    attack: list[str] = ablation_flags.ATTACKS,
    jobs: int = typer.Option(
        1, "--jobs", min=1, help="Cells run in parallel processes (with --threads per cell: keep jobs x threads at "
                                 "most the core count)."),
    executor: str = typer.Option(
        "local", "--executor",
        help=f"One of {', '.join(EXECUTORS)} (kdlab.ablation.cluster): local runs --jobs processes, slurm one "
             "job per cell, submitit-local those jobs as local processes (tests)."),
    slurm: list[str] = typer.Option(
        [], "--slurm", help=f"With --executor slurm, KEY=VALUE (repeatable), KEY one of {', '.join(SLURM_SETTINGS)} "
                            "or sbatch.OPTION, e.g. time=4:00:00."),
    time_limit: str | None = typer.Option(
        None, "--time-limit",
        help="Stop cleanly before this much time has passed (90s, 9m, 1h30m): a cell that does not fit is not "
             f"started, a running one stops at an epoch boundary (last.pt kept); exits {STOPPED_EXIT} naming what "
             "is left; the same command continues (docs/scale.md, GPU time in slices)."),
    threads: int | None = CELL_THREADS,
    set_: list[str] = typer.Option([], "--set", help=SET_HELP + " Applies to every cell."),
    name: str | None = ablation_flags.NAME,
    out: Path = ablation_flags.OUT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and print the plan (a study: its declaration and "
                                                          "cells); train nothing."),
) -> None:
    """Run an ablation grid; finished cells are reused, interrupted ones resume; writes CSV + Markdown + PNG."""
    from kdlab.ablation.cluster import cluster_settings
    from kdlab.ablation.command import run_ablation_command, run_study_command
    from kdlab.ablation.slices import SliceStopped, TimeSlice, parse_duration
    from kdlab.ablation.study import is_study_file
    from kdlab.check.plan import check_ablation_plan
    from kdlab.config.paths import check_paths
    from kdlab.errors import KdlabError

    # the slice starts with the command, so the plan check counts against the limit
    time_slice = None if time_limit is None else TimeSlice(parse_duration(time_limit), text=time_limit)
    cluster = cluster_settings(executor, slurm, jobs)  # None: the local pool
    if time_slice is not None and cluster is not None:
        raise KdlabError("--time-limit stops local cells; on Slurm give each job its time with --slurm "
                         "time=H:MM:SS instead")
    if is_study_file(recipe):
        study = ablation_flags.study_plan(recipe, {
            "--components": components, "--blocks": blocks is not None, "--cumulative": cumulative,
            "--per-block-weight": per_block_weight, "--grid": bool(grid), "--methods": methods is not None,
            "--method-set": bool(method_set), "--inner-steps": inner_steps is not None,
            "--inner-step": inner_step is not None, "--seeds": seeds is not None, "--attack": bool(attack),
            "--set": bool(set_), "--name": name is not None, "--tune": bool(tune),
            "--tune-val-size": tune_val_size is not None, "--tune-seed": tune_seed is not None,
            "--tune-seeds": tune_seeds is not None, "--tune-rounds": tune_rounds != 1, "--tune-scale": tune_scale != "log",
            "--tune-metric": tune_metric is not None, "--tune-from": tune_from is not None}, out)
        plan = study.plan()
        check_paths(plan.recipe_for(plan.cells[0], plan.seeds[0]), str(study.path))
        if dry_run:
            _print(study.describe())
            return
        run = lambda: run_study_command(study, out, jobs=jobs, threads=cell_threads(threads, local=cluster is None),
                                        cluster=cluster, time_slice=time_slice,
                                        check=lambda: check_ablation_plan(plan, out, device_here=cluster is None))
    else:
        recipe, plan = ablation_flags.ablation_plan(
            recipe, components=components, blocks=blocks, cumulative=cumulative, grid=grid, seeds=seeds,
            attacks=attack, overrides=set_, name=name, per_block_weight=per_block_weight, methods=methods,
            method_overrides=method_set, inner_steps=inner_steps, inner_step=inner_step)
        check_paths(plan.recipe_for(plan.cells[0], plan.seeds[0]), str(recipe))  # a missing teacher, before any work
        if dry_run:
            _print([f"{plan.title}: {len(plan.cells)} cells × {len(plan.seeds)} seeds: "
                    + ", ".join(cell.label for cell in plan.cells)])
            return
        # the plan check (every cell's models, data, paths) runs after the flags and the table's writer lock
        run = lambda: run_ablation_command(
            plan, out, jobs=jobs, threads=cell_threads(threads, local=cluster is None), tune=tune,
            tune_seed=tune_seed, tune_val_size=tune_val_size, tune_metric=tune_metric, tune_from=tune_from,
            attacks=plan.attacks, cluster=cluster, command=typed_command(), time_slice=time_slice,
            tune_seeds=ablation_flags.int_list(tune_seeds, "--tune-seeds") if tune_seeds else None,
            tune_rounds=tune_rounds, tune_scale=tune_scale,
            check=lambda: check_ablation_plan(plan, out, device_here=cluster is None))
    try:
        run()
    except SliceStopped as stopped:
        from kdlab.runs.console import console

        for line in stopped.lines():
            console.print(line, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(STOPPED_EXIT) from None


def _print(lines: list[str]) -> None:
    from kdlab.runs.console import console

    for line in lines:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
