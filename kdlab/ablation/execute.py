"""Executing an ablation's cells: one cell in a worker, the shared teacher first, the local process pool.

Every cell is an ordinary (cached, resumable) run (:func:`kdlab.runs.run.run_recipe`): :func:`run_cell` is the
entry point of a worker process of ``--jobs`` and of a cluster job (:mod:`kdlab.ablation.cluster` runs the same
cells on Slurm); with ``divergence_is_a_result`` (a tuning grid) a cell whose loss diverges is a flagged result
instead of an error. :func:`run_ablation` trains (or finds) the shared teacher before any cell, then runs every
(cell, seed) and records each in the plan's :class:`~kdlab.ablation.table.AblationTable` as it finishes. With a
:class:`~kdlab.ablation.slices.TimeSlice` (``--time-limit``) it starts only the cells that fit, stops a running
one at an epoch boundary, and raises :class:`~kdlab.ablation.slices.SliceStopped` with what remains.
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
from kdlab.ablation.table import AblationTable
from kdlab.config.recipe import Recipe, keyed_settings, validate_recipe
from kdlab.errors import Diverged
from kdlab.report.tables import TEACHER_CELL
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


def run_cell(recipe_yaml: str, threads: int, overrides: tuple[str, ...] = (), group: str = "",
             cell: str = "", reporter_factory: Callable | None = None,
             divergence_is_a_result: bool = False, command: str = "",
             limit: Deadline | None = None) -> dict[str, Any]:
    """Worker entry point (a separate process with --jobs, a job with kdlab.ablation.cluster): run one cell (resuming
    it from its last epoch when interrupted before) and return its summary; its run records ``command`` (the
    ablate command) and ``overrides`` (every override behind the cell). ``divergence_is_a_result`` (a
    tuning grid): a loss that becomes non-finite returns a flagged summary with no metrics instead of raising.
    ``limit``: training stops at an epoch boundary before it (:class:`kdlab.train.engine.OutOfTime`)."""
    import torch

    from kdlab.runs.estimate import NoteReporter
    from kdlab.runs.run import run_recipe

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

        console.print(f"  {cell} diverged (recorded, the tuning goes on): {error}")
        return {"flag": "diverged", "note": str(error)}
    return outcome.summary


def teacher_eval_cache(recipe: Recipe, teacher: str) -> Path:
    """The shared teacher's cached evaluation under ``recipe``'s test data and evaluation settings: beside the
    teacher's run directory, or in ``output.dir`` for a checkpoint or zoo teacher (``teacher``: where
    :func:`kdlab.runs.run.prepare_teacher` found it). Keyed by what the numbers depend on, not by the cell."""
    cache_dir = Path(teacher) if Path(teacher).is_dir() else Path(recipe.output.dir)
    setting = json.dumps([keyed_settings(recipe.data, "data"), keyed_settings(recipe.eval, "eval")], sort_keys=True)
    return cache_dir / f"eval-{hashlib.sha256(setting.encode()).hexdigest()[:10]}.json"


def teacher_row(plan: AblationPlan, threads: int, evaluate: bool,
                reporter_factory: Callable | None = None) -> dict[str, Any] | None:
    """Train or find the shared teacher; with ``evaluate``, its row under the ablation's attacks (cached)."""
    import torch

    from kdlab.results import read_json, write_json
    from kdlab.runs.estimate import NoteReporter
    from kdlab.runs.run import prepare_teacher
    from kdlab.tasks import get_task

    torch.set_num_threads(threads)
    recipe = plan.recipe_for(plan.cells[0], plan.seeds[0])
    task = get_task(recipe.task)
    data = task.load_data(recipe)
    teacher, info = prepare_teacher(recipe, task.num_classes(data), reporter_factory or NoteReporter, plan.command)
    if not evaluate:
        return None
    cache = teacher_eval_cache(recipe, info["teacher"])
    if cache.exists():
        evaluation = read_json(cache)
    else:
        evaluation = task.evaluate(teacher, data, recipe)
        write_json(cache, evaluation)
    return {"run_dir": info["teacher"], **teacher_provenance(info["teacher"]), **evaluation}


def teacher_provenance(teacher: str | Path) -> dict[str, Any]:
    """The code that trained the shared teacher (``git_commit``, ``git_diff_sha256`` of its summary.json; nothing
    for a checkpoint or zoo teacher): its table row's provenance, whichever executor evaluated it."""
    from kdlab.results import read_json

    summary = Path(teacher) / "summary.json"
    trained = read_json(summary) if summary.is_file() else {}
    return {key: trained[key] for key in ("git_commit", "git_diff_sha256") if key in trained}


def run_ablation(plan: AblationPlan, out_dir: Path, jobs: int = 1, threads: int | None = None,
                 on_cell: Callable[[str, int, dict], None] | None = None,
                 time_slice: TimeSlice | None = None) -> Path:
    """Run every (cell, seed), in ``jobs`` processes, rebuilding the table after each finished cell
    (:mod:`kdlab.ablation.cluster` runs the same cells as Slurm jobs). With ``time_slice``: only what fits in it
    (:mod:`kdlab.ablation.slices`); raises :class:`SliceStopped` when something is left."""
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    table = AblationTable(plan, out_dir, on_cell)
    limit = time_slice.deadline() if time_slice is not None else None
    pending = list(table.order())
    finished: list[str] = []
    stopped: list[str] = []

    def stop_here(not_started: list[str]) -> SliceStopped:
        return SliceStopped(time_slice.text if time_slice else "", finished, stopped, not_started, plan.command, [str(table.path)])

    # The teacher is trained (or found in the cache) before any cell so parallel cells share it.
    if plan.recipe_for(plan.cells[0], plan.seeds[0]).is_distillation:
        try:
            with deadline(limit):
                teacher = teacher_row(plan, threads, evaluate=plan.include_teacher)
        except OutOfTime as error:
            stopped.append(f"the shared teacher ({error})")
            raise stop_here([f"{cell.label} seed {seed}" for cell, seed in pending]) from None
        if teacher is not None:
            table.record(Cell(TEACHER_CELL), plan.seeds[0], teacher)

    def submit(cell: Cell, seed: int, call: Callable) -> Any:
        return call(run_cell, plan.recipe_for(cell, seed).to_yaml(), threads, plan.cell_overrides(cell, seed),
                    table.path.stem, cell.label, divergence_is_a_result=plan.divergence_is_a_result,
                    command=plan.command, limit=limit)

    def fits(cell: Cell, seed: int) -> bool:
        return time_slice is None or time_slice.fits(plan.recipe_for(cell, seed).train.epochs)

    def done(cell: Cell, seed: int, summary: dict, began: float) -> None:
        table.record(cell, seed, summary)
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
