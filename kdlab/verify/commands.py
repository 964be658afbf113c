"""The (cell, seed) set a ``kdlab ablate`` command line writes into one table, planned with the ablation planner
(:func:`kdlab.ablation.grid.plan_ablation`, :mod:`kdlab.ablation.tuning`) without training anything.

The command's flags are parsed by the caller's ``parse`` (the CLI's own ``kdlab ablate`` parser, so a flag means
here exactly what it means there): it maps the arguments after ``kdlab ablate`` to the ablate function's
parameters (``recipe``, ``grid``, ``seeds``, ``tune``, ``set_``, ``out``, ...).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdlab.ablation.grid import AblationPlan, plan_ablation
from kdlab.errors import KdlabError

AblateParser = Callable[[list[str]], dict[str, Any]]


def ablate_arguments(command: str) -> list[str]:
    """The arguments after ``kdlab ablate`` (or ``python -m kdlab ablate``) of a command line; a one-line error
    for anything else (a placeholder, another command)."""
    try:
        tokens = shlex.split(command)
    except ValueError as error:
        raise KdlabError(f"'{command}' is not a command line ({error})") from None
    for start in range(len(tokens) - 1):
        if tokens[start] == "kdlab" and tokens[start + 1] == "ablate":
            return tokens[start + 2:]
    raise KdlabError(f"'{command}' is not a kdlab ablate command")


def _recipe_path(recipe: Path, root: Path) -> Path:
    """The recipe a command names, as run from the checkout ``root``: a file there, else a shipped recipe's name."""
    if recipe.is_absolute() and recipe.is_file():
        return recipe
    if (root / recipe).is_file():
        return root / recipe
    from kdlab.config.shipped import resolve_recipe

    return resolve_recipe(recipe)


def _seeds(text: str | None) -> list[int]:
    if text is None:  # --seeds not given: seed 0, as kdlab ablate plans it
        return [0]
    try:
        return [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise KdlabError(f"--seeds '{text}': expected comma-separated integers") from None


def command_plans(command: str, root: Path, parse: AblateParser) -> tuple[list[AblationPlan], Path]:
    """The plans whose tables a ``kdlab ablate`` command writes (the plan; with ``--tune`` the tuning grid, unless
    ``--tune-from``, and the tuned seeds instead) and the folder it writes them to, as run from ``root``."""
    flags = parse(ablate_arguments(command))
    recipe = _recipe_path(Path(flags["recipe"]), root)
    plan = plan_ablation(
        str(recipe), components=flags["components"], blocks=flags["blocks"], cumulative=flags["cumulative"],
        grid=list(flags["grid"]), seeds=_seeds(flags["seeds"]), attacks=list(flags["attack"]) or ["pgd"],
        overrides=list(flags["set_"]), name=flags["name"], per_block_weight=flags["per_block_weight"],
        methods=flags["methods"], method_overrides=list(flags["method_set"]), inner_steps=flags["inner_steps"],
        inner_step=flags["inner_step"])
    out = Path(flags["out"])
    out = out if out.is_absolute() else root / out
    if not flags["tune"]:
        return [plan], out
    from kdlab.ablation.tuning import parse_tune, tuning_plan

    rounds = flags.get("tune_rounds", 1)
    seeds = _seeds(flags["tune_seeds"]) if flags.get("tune_seeds") else [
        plan.seeds[0] if flags["tune_seed"] is None else flags["tune_seed"]]
    spec = parse_tune(list(flags["tune"]), seeds=tuple(seeds), max_rounds=rounds, scale=flags.get("tune_scale", "log"))
    plans = []
    if flags["tune_from"] is None and rounds == 1:  # more rounds grow the grid from its results: not planned
        plans.append(tuning_plan(plan, spec, seeds, flags["tune_val_size"]))
    plans.append(replace(plan, title_suffix="-tuned"))  # the chosen values change no cell's label
    return plans, out


def planned_cells(command: str, csv_path: Path, results: Path, parse: AblateParser) -> set[tuple[str, int]]:
    """The (cell, seed) pairs ``command`` writes into the table at ``csv_path`` (not its shared teacher's row): a
    one-line error when it writes no table of that name into that folder."""
    root = results.absolute().parent
    plans, out = command_plans(command, root, parse)
    title = re.sub(r"-v\d+$", "", csv_path.stem)
    for plan in plans:
        if plan.title == title and out.resolve() == csv_path.parent.resolve():
            return {(cell.label, seed) for cell in plan.cells for seed in plan.seeds}
    written = ", ".join(f"{plan.title}.csv" for plan in plans)
    raise KdlabError(f"it writes {written} in {out.relative_to(root) if out.is_relative_to(root) else out}, not "
                     "this table")
