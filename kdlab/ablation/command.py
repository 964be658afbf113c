"""``kdlab ablate`` after its plan is checked: optional tuning on the validation split, then the seeds.

Prints one line per finished cell (with the runs left and an ETA) and each table's Markdown; the CLI only
parses its options and calls :func:`run_ablation_command`. The cells run in a local process pool
(:func:`kdlab.ablation.execute.run_ablation`) or, with ``cluster`` settings, as jobs on Slurm (:mod:`kdlab.ablation.cluster`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from kdlab.ablation.execute import final_eval_rows, run_ablation
from kdlab.ablation.grid import AblationPlan
from kdlab.ablation.slices import TimeSlice
from kdlab.config.names import HEADLINE_METRICS
from kdlab.errors import KdlabError
from kdlab.results import sole_writer
from kdlab.runs.console import console, print_markdown
from kdlab.runs.estimate import clock, remaining_seconds


def run_ablation_command(plan: AblationPlan, out: Path, *, jobs: int, threads: int | None, tune: list[str],
                         tune_seed: int | None, tune_val_size: int | None, tune_metric: str | None,
                         attacks: list[str], cluster=None, tune_from: Path | None = None, command: str = "",
                         time_slice: TimeSlice | None = None, tune_seeds: list[int] | None = None,
                         tune_rounds: int = 1, tune_scale: str = "log", check: Callable[[], None] | None = None
                         ) -> Path:
    """With ``tune`` (``KEY=V1,V2``), first choose KEY per cell on a validation split (kdlab.ablation.tuning), then run
    the seeds with the chosen values; returns the final table. ``tune_from``: choose from that finished tuning
    table (e.g. another detector's) instead of running one. ``tune_seeds`` (default: ``tune_seed``, else the first
    seed) average the choice; ``tune_rounds`` > 1 lets the grid grow past an open edge or into a bracketed
    divergence (:func:`kdlab.ablation.tuning.next_values`, on a ``tune_scale`` spacing). ``cluster``
    (:class:`kdlab.ablation.cluster.ClusterSettings`): run every cell as a job there instead of in ``jobs`` processes.
    ``command``: the ablate command line as typed, recorded by every run and table row (the tuning grid's too).
    ``time_slice`` (``--time-limit``, started when the command began): stop cleanly before its end
    (:mod:`kdlab.ablation.slices`), raising :class:`~kdlab.ablation.slices.SliceStopped` when cells remain.
    ``check`` (the plan check) runs after the flags are checked and, without ``tune``, once the table's writer
    lock is held (:func:`kdlab.results.sole_writer`: a second ``kdlab ablate`` of it is refused before any work;
    a tuned grid's tables are named by its tuning, so theirs are taken as each starts)."""
    plan = replace(plan, command=command)
    if (tune_val_size is not None or tune_seed is not None or tune_metric is not None or tune_from is not None
            or tune_seeds is not None or tune_rounds != 1) and not tune:
        raise KdlabError("--tune-val-size, --tune-seed(s), --tune-rounds, --tune-metric and --tune-from belong to "
                         "--tune KEY=V1,V2: add it")
    if tune and tune_seed is not None and tune_seeds is not None:
        raise KdlabError("--tune-seed and --tune-seeds: give one (--tune-seeds 0,1 averages two seeds)")
    if tune and tune_from is not None and (tune_val_size is not None or tune_seed is not None
                                           or tune_seeds is not None):
        raise KdlabError("--tune-from reuses a finished tuning table: drop --tune-val-size and --tune-seed(s)")
    if not tune:
        with _writing(out, [plan.table_path(out)], check):
            return _run_plan(plan, out, jobs, threads, cluster, time_slice)
    from kdlab.ablation.tuning import choose, default_metric, parse_tune, seeds_plan, tuned_rows

    seeds = tune_seeds or [plan.seeds[0] if tune_seed is None else tune_seed]
    spec = parse_tune(tune, seeds=tuple(seeds), max_rounds=tune_rounds, scale=tune_scale)
    metric = tune_metric or default_metric(plan.recipe_for(plan.cells[0], plan.seeds[0]).task, attacks)
    if check is not None:
        check()
    if tune_from is None:
        table, chosen = run_tuning(plan, spec, metric, tune_val_size,
                                   lambda tuning: _run_plan(tuning, out, jobs, threads, cluster, time_slice))
    else:
        table = tune_from
        chosen = choose(plan, spec, tuned_rows(table), metric)
        console.print(f"chosen on validation {metric} in {table}: "
                      + ", ".join(f"{c}: {spec.axis(c).setting(v)}" for c, v in chosen.items()))
    plan = seeds_plan(plan, spec, chosen, table)
    return _run_plan(plan, out, jobs, threads, cluster, time_slice)


def run_tuning(plan: AblationPlan, spec, metric: str, val_size: int | None, run) -> tuple[Path, dict[str, str]]:
    """The tuning rounds (:mod:`kdlab.ablation.tuning`): ``run`` runs each round's plan (finished cells are reused)
    and returns its table, until every group's search stopped; records why in the table. Returns the tuning table
    and the chosen value per tuned cell."""
    from kdlab.ablation.tuning import choose, record_stops, search_rounds, tuned_rows

    tables: list[Path] = []

    def rows_of(tuning: AblationPlan, rounds: int, searches) -> list[dict]:
        if rounds == 1:
            keys = ", ".join(dict.fromkeys(search.axis.key for search in searches.values()))
            console.print(f"[bold]tuning {keys}[/] per cell on the validation split (eval.split=val), seeds "
                          f"{', '.join(map(str, tuning.seeds))} (their mean decides), up to {spec.max_rounds} "
                          f"round{'s' if spec.max_rounds != 1 else ''}; the test split is not evaluated")
        else:
            console.print(f"tuning round {rounds}: " + "; ".join(
                f"{group}: {', '.join(f'{t.text} ({t.added})' for t in search.trials if t.round == rounds)}"
                for group, search in searches.items() if any(t.round == rounds for t in search.trials)))
        tables.append(run(tuning))
        return tuned_rows(tables[-1])

    _, searches, _, _ = search_rounds(plan, spec, val_size, metric, rows_of)
    table = tables[-1]
    record_stops(table, searches)
    chosen = choose(plan, spec, tuned_rows(table), metric, searches)
    console.print(f"chosen on validation {metric} (mean of {len(spec.seeds)} seed{'s' if len(spec.seeds) != 1 else ''}): "
                  + "; ".join(f"{c}: {spec.axis(c).setting(v)} ({searches[c].stop})" for c, v in chosen.items()))
    return table, chosen


def run_study_command(study, out: Path, *, jobs: int, threads: int | None, cluster=None,
                      time_slice: TimeSlice | None = None, check: Callable[[], None] | None = None) -> Path:
    """A declared study (:class:`kdlab.ablation.study.Study`): exactly its cells and seeds, after its declared
    tuning, into ``<out>/<study>.csv`` (tuning: ``<study>-val.csv``); refused before any work when a table there
    holds another declaration of the same study or another process writes one of them
    (:func:`kdlab.results.sole_writer`). ``check`` (the plan check) runs after those two refusals, before any
    cell. Returns the final table."""
    from kdlab.ablation.study import refuse_changed

    def checks() -> None:
        refuse_changed(study, out)
        if check is not None:
            check()

    with _writing(out, study.tables(out), checks):
        return _run_study(study, out, jobs, threads, cluster, time_slice)


@contextmanager
def _writing(out: Path, tables: Sequence[Path], check: Callable[[], None] | None) -> Iterator[None]:
    """Hold the writer locks of ``tables`` (:func:`kdlab.results.sole_writer`), then run ``check``: a second
    writer of one of them is refused before the plan check. A folder that does not exist yet holds no table to
    protect: there the check runs first, so a refused plan leaves nothing behind (not even the folder)."""
    if not out.is_dir() and check is not None:
        check()
        check = None
    out.mkdir(parents=True, exist_ok=True)
    with sole_writer(*tables):
        if check is not None:
            check()
        yield


def _run_study(study, out: Path, jobs: int, threads: int | None, cluster, time_slice: TimeSlice | None) -> Path:
    from kdlab.ablation.tuning import seeds_plan

    plan = study.plan()
    if study.tune is not None:
        spec = study.tune_spec()
        table, chosen = run_tuning(plan, spec, study.tune_metric, study.tune_val_size,
                                   lambda tuning: _run_plan(tuning, out, jobs, threads, cluster, time_slice))
        plan = seeds_plan(plan, spec, chosen, table, suffix="")
    final = study.declaration["final"]
    # the local executor evaluates each cell as it finishes (kdlab.ablation.execute.run_cell); a cluster's jobs
    # do not: their runs are evaluated by the catch-up below, or by the printed command
    table = _run_plan(plan, out, jobs, threads, cluster, time_slice, final=final)
    if final is not None:
        # the catch-up (cached: nothing to do for rows evaluated with their cell); not under a cluster executor (its
        # own job) nor a --time-limit slice (AutoAttack is not cut at epochs)
        run_final_evaluation(table, final, threads=threads or 1, here=cluster is None and time_slice is None)
    return table


def final_evaluation_command(table: Path, final: dict) -> str:
    """The command that evaluates every finished run of ``table`` as a study's ``final:`` declares."""
    attacks = " ".join(f"--attack {attack}" for attack in final["attacks"])
    return f"kdlab eval {table} {attacks} --n {final['n']}" + (" --sanity" if final["sanity"] else "")


def run_final_evaluation(table: Path, final: dict, *, threads: int, here: bool) -> None:
    """A study's declared final evaluation (``final:``) of every finished run of its table, never retraining
    (:func:`kdlab.runs.final_eval.evaluate_table`; resumable: runs already evaluated cost nothing). Only when
    ``here``: under a cluster executor or a time slice the evaluation is a step of its own, so its command is
    printed."""
    from kdlab.runs.final_eval import evaluate_table

    command = final_evaluation_command(table, final)
    if not unevaluated_rows(table, final):
        console.print(f"final evaluation (declared): {command}: every row of {Path(table).name} was evaluated with "
                      "its cell", highlight=False, soft_wrap=True)
        return
    if not here:
        console.print(f"final evaluation (declared), not run by this command: {command}", highlight=False,
                      soft_wrap=True)
        return
    console.print(f"final evaluation (declared): {command}", highlight=False, soft_wrap=True)
    evaluate_table(table, list(final["attacks"]), int(final["n"]), bool(final["sanity"]), threads=threads,
                   out=final_eval_rows(Path(table)),
                   notify=lambda line: console.print(f"  {line}", highlight=False, soft_wrap=True))


def unevaluated_rows(table: Path, final: dict) -> list[str]:
    """``cell seed N`` of every row of ``table`` without a column of its declared final evaluation (a diverged
    row has nothing to evaluate)."""
    from kdlab.results import read_table
    from kdlab.runs.final_eval import check_attacks

    frame = read_table(table)
    columns = [f"{attack}_{suffix}" for attack in ["clean", *check_attacks(list(final["attacks"]))]
               for suffix in ("acc", "n")] + ["sanity"]
    flags = frame["flag"].fillna("").astype(str) if "flag" in frame.columns else [""] * len(frame)
    return [f"{cell} seed {seed}" for (_, row), flag, cell, seed in zip(frame.iterrows(), flags, frame["cell"],
                                                                        frame["seed"])
            if not flag.startswith("diverged") and any(column not in frame.columns or row.isna()[column]
                                                       for column in columns)]


def _run_plan(plan, out: Path, jobs: int, threads: int | None, cluster=None, time_slice: TimeSlice | None = None,
              final: dict | None = None) -> Path:
    """Run one ablation plan with progress lines; print its Markdown; return its CSV. ``final`` (a study's
    declared final evaluation): each cell's runs in its worker (local executor; a cluster's jobs do not)."""
    total = len(plan.cells) * len(plan.seeds)
    target = plan.table_path(out)
    if target.stem != plan.title:
        console.print(f"{out / plan.title}.csv holds another ablation (other values, recipe or --set): "
                      f"writing {target.name} instead")
    console.print(f"[bold]{plan.title}[/]: {len(plan.cells)} cells × {len(plan.seeds)} seeds = {total} runs"
                  f" ({', '.join(c.label for c in plan.cells)})")
    finished, cell_seconds = [], []
    parallel = jobs if cluster is None else (cluster.parallel or total)  # runs at once, for the ETA

    def on_cell(label: str, seed: int, summary: dict) -> None:
        finished.append(label)
        if isinstance(summary.get("wall_seconds"), (int, float)):
            cell_seconds.append(summary["wall_seconds"])
        shown = " ".join(f"{k}={v:.2f}" for k, v in summary.items()
                         if k in HEADLINE_METRICS and isinstance(v, (int, float)))
        left = total + plan.include_teacher - len(finished)
        eta = remaining_seconds(cell_seconds, left, parallel) if left else None
        until = f" · {left} left, eta {clock(eta)}" if eta is not None else ""
        console.print(f"  [{len(finished)}/{total + plan.include_teacher}] {label} seed {seed}: {shown}{until}")

    if cluster is None:
        table = run_ablation(plan, out, jobs=jobs, threads=threads, on_cell=on_cell, time_slice=time_slice,
                             final=final)
    else:
        from kdlab.ablation.cluster import run_on_cluster

        table = run_on_cluster(plan, out, cluster, threads=threads, on_cell=on_cell)
    print_markdown(console, table.with_suffix(".md").read_text())
    console.print(f"wrote {table}, {table.with_suffix('.md')}, {table.with_suffix('.png')}")
    return table
