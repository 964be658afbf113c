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

    planned: list = []
    with distributed.session():
        main = distributed.is_main()

        def checked():
            path = resolve_recipe(recipe_path)  # a bare name: the shipped recipe
            # The whole plan (recipe, teacher, models, data sizes, paths, processes) before any data or training.
            plan = check_recipe_plan(path, overrides, expect_distill=expect_distill, resume=resume, force=force)
            planned[:] = plan.runs
            if main and plan.notes:  # what --set changed beyond its keys (a changed method's dropped settings)
                from kdlab.runs.console import console

                for note in plan.notes:
                    console.print(note, highlight=False, soft_wrap=True)
            return plan.recipe

        recipe = distributed.agree(checked)
        try:
            outcome = run_recipe(recipe, resume=resume, force=force,
                                 reporter_factory=reporter_factory if main else None, command=command,
                                 overrides=overrides)
        except KeyboardInterrupt as interrupt:
            interrupt.kdlab_advice = interrupted_advice(planned, force)  # printed by kdlab.cli.command
            raise
    return outcome if main else None


def _epochs_kept(run_dir: Path) -> int:
    """The epochs an unfinished run has checkpointed (the rows of its metrics.csv, written with last.pt)."""
    if not (run_dir / "last.pt").is_file() or not (run_dir / "metrics.csv").is_file():
        return 0
    return max(0, len((run_dir / "metrics.csv").read_text().strip().splitlines()) - 1)


def interrupted_advice(planned: list, force: bool) -> str | None:
    """What an interrupted ``kdlab train`` / ``distill`` keeps and the command that continues it: a teacher
    (trained from its recipe) always resumes from its last epoch on a plain rerun; the run the command names
    resumes only with ``--resume`` (without it the rerun is refused, :mod:`kdlab.runs.run`). None when no
    planned run was under way (interrupted before training)."""
    for index, run in enumerate(planned):
        if run.run_dir is None or (run.run_dir / "summary.json").is_file() or run.status == "finished":
            continue
        last = index == len(planned) - 1  # the run the command names; the ones before it are its teacher
        total, kept = run.recipe.train.epochs, _epochs_kept(run.run_dir)
        if kept == 0:
            return (f"interrupted: the {run.role} had not finished its first epoch, so nothing was kept; rerun "
                    f"the same command{' without --force' if force and last else ''} to start it again")
        kept_text = f"epoch{'s 1-' if kept > 1 else ' '}{kept} of {total} {'are' if kept > 1 else 'is'} kept in " \
                    f"{run.run_dir}"
        then = f"continue from epoch {kept + 1}" if kept < total else "evaluate it without training again"
        if not last:
            return f"interrupted: the {run.role}'s {kept_text}; rerun the same command to {then}"
        rerun = "rerun with --resume instead of --force" if force else "rerun the same command with --resume"
        return f"interrupted: the {run.role}'s {kept_text}; {rerun} to {then}"
    return None
