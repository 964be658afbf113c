"""Executing an ablation's cells: one cell in a worker, the shared teacher first, the local process pool.

Every cell is an ordinary (cached, resumable) run (:func:`kdlab.runs.run.run_recipe`): :func:`run_cell` is the
entry point of a worker process of ``--jobs`` and of a cluster job (:mod:`kdlab.ablation.cluster` runs the same
cells on Slurm); with ``divergence_is_a_result`` (a tuning grid, a declared study) a cell whose loss diverges is a
flagged result instead of an error. :func:`run_ablation` trains (or finds) the shared teacher before any cell,
then runs every (cell, seed) and records each in the plan's :class:`~kdlab.ablation.table.AblationTable` as it finishes. With a
:class:`~kdlab.ablation.slices.TimeSlice` (``--time-limit``) it starts only the cells that fit, stops a running
one at an epoch boundary, and raises :class:`~kdlab.ablation.slices.SliceStopped` with what remains. A declared
study's ``final:`` evaluation runs per cell in the worker that trained it (:func:`final_evaluation`), and a study
continues from its committed table on a fresh checkout (see :func:`run_ablation`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import yaml

from kdlab.ablation.grid import AblationPlan, Cell
from kdlab.ablation.slices import SliceStopped, TimeSlice
from kdlab.ablation.table import AblationTable, committed, missing
from kdlab.config.recipe import Recipe, keyed_settings, validate_recipe
from kdlab.errors import Diverged, KdlabError
from kdlab.report.tables import TEACHER_CELL
from kdlab.results import blank, provenance, results_folder, sole_writer
from kdlab.train.engine import Deadline, OutOfTime, deadline


def _die_with_parent() -> None:
    """Worker initializer: on Linux, end this worker when the ablation process dies (kill, Ctrl-C).

    Without it a killed ``kdlab ablate`` leaves its workers training on; they would hold their cells'
    run-directory locks until done. Elsewhere this is a no-op (workers then finish their current cell).
    """
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


FINAL_LEFT = "final_eval_left"
"""A summary's key when a time slice left no room for its cell's final evaluation (why, in words)."""

FIRST_EVAL_SHARE = 0.5
"""Under ``--time-limit`` with no final evaluation measured yet (in this slice or in the table's rows), a finished
cell is evaluated only while at least this share of the slice is left: an AutoAttack is not cut at epochs, and
nothing yet says how long it takes; after the first, the longest measured evaluation is the estimate."""


def run_cell(recipe_yaml: str, threads: int, overrides: tuple[str, ...] = (), group: str = "",
             cell: str = "", reporter_factory: Callable | None = None,
             divergence_is_a_result: bool = False, command: str = "",
             limit: Deadline | None = None, final: dict | None = None, final_needs: float = 0.0,
             eval_out: str = "results/eval.csv") -> dict[str, Any]:
    """Worker entry point (a separate process with --jobs, a job with kdlab.ablation.cluster): run one cell (resuming
    it from its last epoch when interrupted before) and return its summary; its run records ``command`` (the
    ablate command) and ``overrides`` (every override behind the cell). ``divergence_is_a_result`` (a
    tuning grid, a declared study): a loss that becomes non-finite returns a flagged summary with no metrics
    instead of raising.
    ``limit``: training stops at an epoch boundary before it (:class:`kdlab.train.engine.OutOfTime`).
    ``final`` (a study's declared ``final:``): the cell's final evaluation right after its training, in this
    worker (:func:`final_evaluation`; cached, so a reused run costs nothing), its columns in the summary."""
    import torch

    from kdlab.runs.estimate import NoteReporter
    from kdlab.runs.run import run_recipe, trained_code

    torch.set_num_threads(threads)
    recipe = validate_recipe(yaml.safe_load(recipe_yaml))
    try:
        with deadline(limit) if limit is not None else contextlib.nullcontext():
            outcome = run_recipe(recipe, resume=True, overrides=overrides, group=group, cell=cell,  # group: trackers
                                 reporter_factory=reporter_factory or NoteReporter, command=command)  # expected time
    except Diverged as error:
        if not divergence_is_a_result:
            raise
        from kdlab.runs.console import console

        console.print(f"  {cell} diverged (recorded as its result, the other runs go on): {error}")
        # a result like any other row: the code (commit, a dirty tree's patch) and the machine that trained the
        # run, as its run.json records them (a divergence read back may be older than this code), else this one
        code = (trained_code(Path(error.run_dir)) if error.run_dir else None) \
            or provenance(diffs=results_folder(recipe.output.table))
        return {"flag": "diverged", "note": str(error), **code}
    if final is None:
        return outcome.summary
    return {**outcome.summary, **final_evaluation(outcome.run_dir, final, threads, Path(eval_out), limit,
                                                  final_needs)}


def final_evaluation(run_dir: Path, final: dict, threads: int, out: Path, limit: Deadline | None = None,
                     needs: float = 0.0) -> dict[str, Any]:
    """A finished run's declared final evaluation (``final``: attacks, n, sanity) by
    :func:`kdlab.runs.final_eval.evaluate_finished` (``out``: the evaluation rows, results/eval.csv): its table
    columns. With ``limit`` (a time slice), an evaluation not on record yet runs only when ``needs`` seconds are
    left; otherwise ``{FINAL_LEFT: why}`` and the row stays without its final columns (the next slice evaluates
    it)."""
    from kdlab.runs.final_eval import evaluate_finished, evaluated_columns

    attacks, n, sanity = list(final["attacks"]), int(final["n"]), bool(final["sanity"])
    if limit is not None and limit.left() < needs and evaluated_columns(run_dir, attacks, n, sanity) is None:
        return {FINAL_LEFT: f"was not started: {max(0.0, limit.left()):.0f} s left, it needs about {needs:.0f} s"}
    columns = evaluate_finished(run_dir, attacks, n, sanity, threads=threads, out=out)
    columns.pop("final_eval_cached", None)
    return columns


def teacher_eval_cache(recipe: Recipe, teacher: str) -> Path:
    """The shared teacher's cached evaluation under ``recipe``'s test data and evaluation settings: beside the
    teacher's run directory, or in ``output.dir`` for a checkpoint or zoo teacher (``teacher``: where
    :func:`kdlab.runs.run.prepare_teacher` found it). Keyed by what the numbers depend on, not by the cell."""
    cache_dir = Path(teacher) if Path(teacher).is_dir() else Path(recipe.output.dir)
    setting = json.dumps([keyed_settings(recipe.data, "data"), keyed_settings(recipe.eval, "eval")], sort_keys=True)
    return cache_dir / f"eval-{hashlib.sha256(setting.encode()).hexdigest()[:10]}.json"


def shared_teacher(plan: AblationPlan, threads: int, reporter_factory: Callable | None = None) -> tuple[tuple, dict]:
    """Train or find the shared teacher (:func:`kdlab.runs.run.prepare_teacher`): what :func:`evaluate_teacher`
    needs, and the teacher's info (``teacher``: where it is; ``teacher_sha256``: its weights by content)."""
    import torch

    from kdlab.runs.estimate import NoteReporter
    from kdlab.runs.run import prepare_teacher
    from kdlab.tasks import get_task

    torch.set_num_threads(threads)
    recipe = plan.recipe_for(plan.cells[0], plan.seeds[0])
    task = get_task(recipe.task)
    data = task.load_data(recipe)
    teacher, info = prepare_teacher(recipe, task.num_classes(data), reporter_factory or NoteReporter, plan.command)
    return (recipe, task, data, teacher), info


def evaluate_teacher(loaded: tuple, info: dict, threads: int, final: dict | None = None,
                     eval_out: Path = Path("results/eval.csv"), limit: Deadline | None = None,
                     final_needs: float = 0.0) -> dict[str, Any]:
    """The shared teacher's row under the ablation's attacks (cached beside it, :func:`teacher_eval_cache`) and,
    with ``final``, its final evaluation (a teacher trained from a recipe: a checkpoint or zoo teacher has no run
    directory to evaluate)."""
    from kdlab.results import read_json, write_json

    recipe, task, data, teacher = loaded
    cache = teacher_eval_cache(recipe, info["teacher"])
    if cache.exists():
        evaluation = read_json(cache)
    else:
        evaluation = task.evaluate(teacher, data, recipe)
        write_json(cache, evaluation)
    row = {"run_dir": info["teacher"], **teacher_provenance(info["teacher"]), **evaluation}
    if final is not None and Path(info["teacher"]).is_dir():
        row.update(final_evaluation(Path(info["teacher"]), final, threads, eval_out, limit, final_needs))
    return row


def teacher_row(plan: AblationPlan, threads: int, evaluate: bool,
                reporter_factory: Callable | None = None) -> dict[str, Any] | None:
    """Train or find the shared teacher; with ``evaluate``, its row under the ablation's attacks (cached)."""
    loaded, info = shared_teacher(plan, threads, reporter_factory)
    return evaluate_teacher(loaded, info, threads) if evaluate else None


def refuse_another_teacher(table: AblationTable, info: dict) -> None:
    """Refuse, before any cell trains, to extend a table whose rows were distilled from other teacher weights
    (their ``teacher_sha256``) than the teacher here (a teacher retrained on a fresh checkout that came out
    different). Rows without ``teacher_sha256`` (older tables) are not checked. When the rows ran on another
    processor than the teacher trained here, the refusal names both: CPU training is reproducible on one
    processor type only (the Faster R-CNN BCCD teacher differed between AMD EPYC and Intel Xeon machines)."""
    from kdlab.results import read_json

    here = info.get("teacher_sha256")
    recorded = sorted({str(row["teacher_sha256"]) for row in table.rows.values()
                       if row.get("teacher_sha256") not in (None, "")} - {str(here)})
    if not (here and recorded):
        return
    summary = Path(info["teacher"]) / "summary.json"
    trained_on = str(read_json(summary).get("device_name") or "") if summary.is_file() else ""
    ran_on = sorted(devices_of(table, recorded[0]))
    machines = (f"; its rows ran on {', '.join(ran_on)}, the teacher was retrained on {trained_on}: CPU training is "
                "reproducible on one processor type only") if trained_on and ran_on and trained_on not in ran_on else ""
    raise KdlabError(f"the teacher retrained here ({info['teacher']}, teacher_sha256 {here}) differs from the one "
                     f"this table's rows were distilled from (teacher_sha256 {recorded[0]}, {table.path.name}"
                     f"{machines}): carry its run directory with kdlab pack/unpack, or declare a new study")


def devices_of(table: AblationTable, teacher_sha256: str | None = None) -> set[str]:
    """The devices (``device_name``) that the table's rows recording a teacher ran on (those of that
    ``teacher_sha256`` alone, if given)."""
    return {str(row["device_name"]) for row in table.rows.values()
            if not blank(row.get("teacher_sha256")) and not blank(row.get("device_name"))
            and (teacher_sha256 is None or str(row["teacher_sha256"]) == teacher_sha256)}


def other_processor_warning(table: AblationTable) -> str | None:
    """A warning, before the shared teacher is trained or found, when the rows that record a teacher
    (``teacher_sha256``) all ran on devices other than this one: a teacher retrained here will likely differ
    (CPU training is reproducible on one processor type only), and :func:`refuse_another_teacher` will then refuse
    the study once it has trained. None when a row ran here, or no row records its teacher and device."""
    from kdlab.results import device_facts

    ran_on = devices_of(table)
    here = device_facts()["device_name"]
    if not ran_on or here in ran_on:
        return None
    return (f"  note: this table's rows ran on {', '.join(sorted(ran_on))}, this machine is {here}: a teacher "
            "retrained here will likely differ (CPU training is reproducible on one processor type only) and the "
            "study is then refused once it has trained; carry the teacher's run directory (kdlab pack/unpack) to "
            "continue it here")


def teacher_provenance(teacher: str | Path) -> dict[str, Any]:
    """The code that trained the shared teacher (``git_commit``, ``git_diff_sha256`` of its summary.json; nothing
    for a checkpoint or zoo teacher) and its weights (``teacher_sha256``, a zoo teacher's aside): its table row's
    provenance, whichever executor evaluated it."""
    from kdlab.models.files import file_digest
    from kdlab.results import read_json

    summary = Path(teacher) / "summary.json"
    trained = read_json(summary) if summary.is_file() else {}
    provenance = {key: trained[key] for key in ("git_commit", "git_diff_sha256") if key in trained}
    # the teacher's weights by content, as its students record them (a zoo teacher: not named by a file here)
    weights = Path(teacher) / "best.pt" if Path(teacher).is_dir() else Path(teacher)
    return {**provenance, **({"teacher_sha256": file_digest(weights)} if weights.is_file() else {})}


def final_eval_rows(table: Path) -> Path:
    """Where the final evaluation of a study's ``table`` appends its attack rows: ``eval.csv`` of the results folder
    the table belongs to (:func:`kdlab.results.results_folder`: ``results/eval.csv`` for ``results/ablations/``, the
    folder itself for an ``--out`` of another name), the folder whose ``diffs/`` holds its dirty rows' patches."""
    return results_folder(table) / "eval.csv"


def run_ablation(plan: AblationPlan, out_dir: Path, jobs: int = 1, threads: int | None = None,
                 on_cell: Callable[[str, int, dict], None] | None = None,
                 time_slice: TimeSlice | None = None, final: dict | None = None) -> Path:
    """Run every (cell, seed), in ``jobs`` processes, rebuilding the table after each finished cell
    (:mod:`kdlab.ablation.cluster` runs the same cells as Slurm jobs). With ``time_slice``: only what fits in it
    (:mod:`kdlab.ablation.slices`); raises :class:`SliceStopped` when something is left. ``final`` (a study's
    declared ``final:``): each cell's final evaluation runs in its worker right after its training and its row
    is recorded with the final columns (evaluation rows in :func:`final_eval_rows`, results/eval.csv).

    A declared study (``plan.study``) continues from its committed table on a fresh checkout: a (cell, seed)
    whose row the table holds under the same plan fingerprint, complete (:func:`kdlab.ablation.table.missing`:
    its metrics and, with ``final``, its final columns), is not run again when its run directory is not here
    (the row stays as it is); an incomplete one is retrained (no checkpoint to evaluate). The shared teacher is
    trained (or found) first, and a teacher whose weights differ from the ``teacher_sha256`` the table's rows
    record is refused before any cell (:func:`refuse_another_teacher`). One process writes a table at a time
    (:func:`kdlab.results.sole_writer`): a second ``kdlab ablate`` of the same table is refused before any work."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with sole_writer(plan.table_path(out_dir)):
        return _run_ablation(plan, out_dir, jobs, threads, on_cell, time_slice, final)


def _run_ablation(plan: AblationPlan, out_dir: Path, jobs: int, threads: int | None,
                  on_cell: Callable[[str, int, dict], None] | None, time_slice: TimeSlice | None,
                  final: dict | None) -> Path:
    from kdlab.runs.console import console

    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    table = AblationTable(plan, out_dir, on_cell)
    limit = time_slice.deadline() if time_slice is not None else None
    eval_out = final_eval_rows(table.path)
    from_table = bool(plan.study)
    pending = list(table.order())
    finished: list[str] = []
    stopped: list[str] = []

    def stop_here(not_started: list[str]) -> SliceStopped:
        return SliceStopped(time_slice.text if time_slice else "", finished, stopped, not_started, plan.command, [str(table.path)])

    def final_needs() -> float:
        """Seconds a final evaluation is expected to take (see :data:`FIRST_EVAL_SHARE`); 0 without a slice."""
        if time_slice is None or final is None:
            return 0.0
        measured = [float(row["final_eval_seconds"]) for row in table.rows.values()
                    if isinstance(row.get("final_eval_seconds"), (int, float)) and not blank(row["final_eval_seconds"])]
        return max(measured) if measured else time_slice.limit * FIRST_EVAL_SHARE

    def left_unevaluated(what: str, summary: dict) -> bool:
        if FINAL_LEFT not in summary:
            return False
        stopped.append(f"{what} (trained; its final evaluation {summary[FINAL_LEFT]}: the same command evaluates "
                       "it here, a fresh checkout retrains it)")
        return True

    # The teacher is trained (or found in the cache) before any cell so parallel cells share it.
    if plan.recipe_for(plan.cells[0], plan.seeds[0]).is_distillation:
        warning = other_processor_warning(table) if from_table else None
        if warning:
            console.print(warning, highlight=False, soft_wrap=True, markup=False)
        try:
            with deadline(limit):
                loaded, info = shared_teacher(plan, threads)
        except OutOfTime as error:
            stopped.append(f"the shared teacher ({error})")
            raise stop_here([f"{cell.label} seed {seed}" for cell, seed in pending]) from None
        if from_table:
            refuse_another_teacher(table, info)
        if plan.include_teacher:
            first = (TEACHER_CELL, plan.seeds[0])
            kept = table.rows.get(first)
            if (from_table and kept is not None and missing(plan, Cell(TEACHER_CELL), plan.seeds[0], kept, final) is None
                    and kept.get("teacher_sha256") == info.get("teacher_sha256")):
                console.print(f"  {TEACHER_CELL} seed {plan.seeds[0]}: from the table (the same teacher_sha256 "
                              f"{info.get('teacher_sha256')})", highlight=False)
            else:
                teacher = evaluate_teacher(loaded, info, threads, final, eval_out, limit, final_needs())
                table.record(Cell(TEACHER_CELL), plan.seeds[0], teacher)
                if left_unevaluated("the shared teacher", teacher):
                    raise stop_here([f"{cell.label} seed {seed}" for cell, seed in pending])

    if from_table:  # a fresh checkout: complete rows of the committed table stand for their absent run directories
        kept = committed(plan, table.rows, final)
        for cell, seed in list(pending):
            if (cell.label, seed) not in kept:
                continue  # no row, or its run directory is here: trained or reused as usual
            row, why = table.rows[(cell.label, seed)], kept[(cell.label, seed)]
            run_dir = "" if blank(row.get("run_dir")) else str(row["run_dir"])
            if why is None:
                pending.remove((cell, seed))
                console.print(f"  {cell.label} seed {seed}: from the table (run directory not here)", highlight=False)
                if time_slice is not None:  # its recorded cost informs the estimate of the cells left
                    time_slice.measured({key: row.get(key) for key in ("wall_seconds", "final_eval_seconds")}, 0.0)
            else:
                console.print(f"  {cell.label} seed {seed}: retrained: its row is incomplete ({why}) and its run "
                              f"directory {run_dir or '(none)'} is not here", highlight=False)

    def submit(cell: Cell, seed: int, call: Callable) -> Any:
        return call(run_cell, plan.recipe_for(cell, seed).to_yaml(), threads, plan.cell_overrides(cell, seed),
                    table.path.stem, cell.label, divergence_is_a_result=plan.divergence_is_a_result,
                    command=plan.command, limit=limit, final=final, final_needs=final_needs(),
                    eval_out=str(eval_out))

    def fits(cell: Cell, seed: int) -> bool:
        return time_slice is None or time_slice.fits(plan.recipe_for(cell, seed).train.epochs)

    def done(cell: Cell, seed: int, summary: dict, began: float) -> None:
        table.record(cell, seed, summary)
        if not left_unevaluated(f"{cell.label} seed {seed}", summary):
            finished.append(f"{cell.label} seed {seed}")
        if time_slice is not None:
            time_slice.measured(summary, time_slice.now() - began)
    late: list[str] = []  # reached the deadline before its first epoch (a worker's start-up): nothing kept

    def out_of_time(cell: Cell, seed: int, error: OutOfTime) -> None:
        if error.epoch == 0:
            late.append(f"{cell.label} seed {seed}")
        else:
            stopped.append(f"{cell.label} seed {seed} (epoch {error.epoch} of {error.epochs} kept)")

    clock = time_slice.now if time_slice is not None else (lambda: 0.0)
    if jobs <= 1:
        while pending and not stopped and not late and fits(*pending[0]):
            cell, seed = pending.pop(0)
            began = clock()
            try:
                summary = submit(cell, seed, lambda function, *args, **kwargs: function(*args, **kwargs))
            except OutOfTime as error:
                out_of_time(cell, seed, error)
                break
            done(cell, seed, summary, began)
    else:
        import multiprocessing

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            running: dict = {}
            while pending or running:
                # a cell starts when a worker is free and it fits in the time left (no limit: all at once)
                while pending and len(running) < jobs and not stopped and not late and fits(*pending[0]):
                    cell, seed = pending.pop(0)
                    running[submit(cell, seed, pool.submit)] = (cell, seed, clock())
                if not running:
                    break
                ready, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in ready:
                    cell, seed, began = running.pop(future)
                    try:
                        summary = future.result()
                    except OutOfTime as error:
                        out_of_time(cell, seed, error)
                        continue
                    done(cell, seed, summary, began)
    if pending or stopped or late:
        raise stop_here(late + [f"{cell.label} seed {seed}" for cell, seed in pending])
    return table.path
