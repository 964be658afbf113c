"""``kdlab train`` / ``kdlab distill``: the plan check, then the run (:mod:`kdlab.runs.run`), in one process or in
each process of a torchrun group. It lives here, above the runs, because it checks the plan first.

``torchrun --nproc_per_node=N -m kdlab distill RECIPE`` runs this in N processes: they join one process group
(:func:`kdlab.runtime.distributed.session`), check the plan alike (a mistake is printed once, by the lowest rank that
finds it), then train and evaluate the run together (:mod:`kdlab.runs.run`). Rank 0 shows progress and returns the
outcome to print; the other ranks return None.
"""

from __future__ import annotations

from pathlib import Path

from kdlab.runs.run import ReporterFactory, RunOutcome, run_recipe
from kdlab.runtime import distributed


def run_command(recipe_path: Path, overrides: list[str], *, resume: bool, force: bool, expect_distill: bool,
                reporter_factory: ReporterFactory | None, command: str) -> RunOutcome | None:
    """Check the plan, then train (or reuse, or resume) and evaluate the run; the outcome on the process that
    prints (the only one, or rank 0), None on the others."""
    from kdlab.check.plan import check_recipe_plan
    from kdlab.config.shipped import resolve_recipe

    with distributed.session():
        main = distributed.is_main()

        def checked():
            path = resolve_recipe(recipe_path)  # a bare name: the shipped recipe
            # The whole plan (recipe, teacher, models, data sizes, paths, processes) before any data or training.
            plan = check_recipe_plan(path, overrides, expect_distill=expect_distill, resume=resume, force=force)
            if main and plan.notes:  # what --set changed beyond its keys (a changed method's dropped settings)
                from kdlab.runs.console import console

                for note in plan.notes:
                    console.print(note, highlight=False, soft_wrap=True)
            return plan.recipe

        recipe = distributed.agree(checked)
        outcome = run_recipe(recipe, resume=resume, force=force, reporter_factory=reporter_factory if main else None,
                             command=command, overrides=overrides)
    return outcome if main else None
