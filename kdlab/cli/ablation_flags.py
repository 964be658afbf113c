"""The ablation flags, declared once: ``kdlab ablate`` runs the plan they describe and ``kdlab check`` checks it
(``--components``, ``--blocks``, ``--cumulative``, ``--per-block-weight``, ``--grid``, ``--methods``,
``--method-set``, ``--inner-steps``, ``--inner-step``, ``--seeds``, ``--attack``, ``--name``, ``--out``), and the
plan they are turned into (:func:`ablation_plan`)."""

from __future__ import annotations

from pathlib import Path

import typer

from kdlab.config.methods import SETTINGS
from kdlab.errors import KdlabError

COMPONENTS = typer.Option(
    False, "--components",
    help="MixACM component ablation: teacher, student-ce, kd-only, acm, acm+kd, acm+mixup, mixacm.")
BLOCKS = typer.Option(
    None, "--blocks", help="Block ablation, e.g. 2,3,4: one student per block plus one with all listed blocks.")
CUMULATIVE = typer.Option(False, "--cumulative", help="With --blocks: growing prefixes (2; 2,3; 2,3,4).")
PER_BLOCK_WEIGHT = typer.Option(
    False, "--per-block-weight",
    help="With --blocks: every block keeps weight acm.weight, so a cell's total ACM weight grows with its "
         "block count (default: every cell gets the recipe's total ACM weight, divided over its blocks).")
GRID = typer.Option([], "--grid", help="KEY=V1,V2,... over any recipe key (repeatable: product).")
METHODS = typer.Option(
    None, "--methods",
    help="Method comparison, e.g. mixacm,rrm,kd: one cell per method over the recipe's teacher and student, each "
         "with its own defaults (table <name>-methods). Methods of the recipe's task, among: "
         f"{', '.join(sorted(SETTINGS))}.")
METHOD_SET = typer.Option(
    [], "--method-set", help="With --methods: METHOD.KEY=VALUE for that method's cell only (repeatable), "
                             "e.g. ard.alpha=0.9.")
INNER_STEPS = typer.Option(
    None, "--inner-steps", min=1,
    help="With --methods: inner PGD steps k of every adversarially trained student (the same for all).")
INNER_STEP = typer.Option(
    None, "--inner-step", help="With --methods: their inner PGD step size, e.g. 6.67/255 (the same for all).")
SEEDS = typer.Option(None, "--seeds", help="Comma-separated seeds; every cell runs once per seed (default 0).")
ATTACKS = typer.Option([], "--attack", help="Evaluation columns besides clean (repeatable; default pgd).")
NAME = typer.Option(None, "--name", help="Table name (default: the recipe's name).")
OUT = typer.Option(Path("results/ablations"), "--out", help="Folder for the CSV, Markdown and PNG.")


def int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KdlabError(f"{option} '{text}': expected comma-separated integers, e.g. {option} 0,1,2") from None


def ablation_plan(recipe: Path, *, seeds: str | None, attacks: list[str], **flags):
    """The recipe argument as a file (a bare name is a shipped recipe) and the ablation plan the flags describe:
    what ``kdlab ablate`` runs and ``kdlab check`` checks."""
    from kdlab.ablation.grid import plan_ablation
    from kdlab.config.shipped import resolve_recipe

    recipe = resolve_recipe(recipe)
    return recipe, plan_ablation(str(recipe), seeds=int_list(seeds or "0", "--seeds"), attacks=attacks or ["pgd"],
                                 **flags)


def study_plan(path: Path, given: dict[str, bool], out: Path):
    """A study file's :class:`~kdlab.ablation.study.Study`, refusing the flags that would change its declaration
    (``given``: flag -> whether it was given on the command line) and a table in ``out`` of another declaration."""
    from kdlab.ablation.study import load_study, refuse_changed, refuse_plan_flags

    refuse_plan_flags(path, given)
    study = load_study(path)
    refuse_changed(study, out)
    return study
