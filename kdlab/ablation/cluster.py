"""Ablation cells as jobs on a Slurm cluster, through submitit: ``kdlab ablate ... --executor slurm``.

Every (cell, seed) of the ablation is one task of a Slurm job array (submitit's ``map_array``), each task running
the cell exactly as the local pool of ``--jobs`` does (:func:`kdlab.ablation.execute.run_cell`). Resources come from
``--slurm KEY=VALUE`` (repeatable), checked before any work, one-line errors for anything unknown:

=============  ===========================================================================================
``time``       each job's time limit (required): minutes (``240``) or ``[D-]H:MM:SS`` (``4:00:00``)
``gpus``       GPUs per cell, 0 or 1 (default 1; a cell is one process)
``cpus``       CPUs per cell (``--cpus-per-task``); torch uses that many threads unless ``--threads`` says
``mem``        memory per cell in GB
``parallel``   at most this many cells run at once (the array's ``%N``; default: all)
``partition``, ``account``, ``qos``: as sbatch's options
``requeues``   how many times a timed-out cell is requeued (default 3; pre-emptions are not counted)
``sbatch.X``   any other sbatch option, e.g. ``sbatch.constraint=a100``, ``sbatch.mail-type=END``
=============  ===========================================================================================

How it runs (:func:`run_on_cluster`)

1. The plan check (:func:`kdlab.check.plan.check_ablation_plan`) finds the runs that are already finished; those are
   read from their run directories and never submitted. Rerunning the same command after the jobs end therefore
   submits nothing and just builds the table.
2. The shared teacher, if it still has to be trained (or, for a table with a teacher row, evaluated), runs first
   as its own job, and the command waits for it before it submits the cells. (Sequential submission rather than
   a Slurm dependency: a failed teacher stops the ablation with its error instead of leaving an array pending on
   a dependency that can never be met, and the local executor the tests use runs the same code.)
3. The cells go out as one job array. A cell that Slurm pre-empts or stops at its time limit is requeued and
   resumes from its last finished epoch (:class:`kdlab.ablation.cluster_job.CellJob`, a submitit ``Checkpointable``);
   one that dies any other way resumes when the command is rerun.
4. The command waits and rewrites the table after every finished cell, exactly as ``--jobs`` does (the same
   rows and CSV: :class:`kdlab.ablation.table.AblationTable`). A failed cell is reported (one line: its error and log)
   after the others finish. Interrupting the command leaves the jobs running; rerunning it reattaches to the
   tasks still queued or running (recorded in ``jobs.json``) instead of submitting them again.

Job logs (``<job id>_0_log.out`` holds one line per epoch), scripts and pickles are kept in
``<output.dir>/submitit/<table>/<job id>/``, beside the runs (ignored by git). ``--executor submitit-local`` runs
the same jobs as local processes through submitit's LocalExecutor, all cells at once: for tests, and to try a
recipe's cluster path on a workstation.

Running the paper-scale ablation on a cluster: on the login node, in a checkout on the shared file system with
the environment installed (``pip install -e ".[slurm]"``), first check the plan (``kdlab check RECIPE
--components``), then::

    kdlab ablate recipes/mixacm_cifar10_gpu.yaml --components --seeds 0,1,2 --executor slurm \\
        --slurm time=2:00:00 --slurm partition=gpu --slurm gpus=1 --slurm cpus=8 --slurm mem=32 --slurm parallel=8

The teacher trains as one job, then the 6 x 3 cells run as one array. Run it inside ``tmux`` or ``screen``, or
let it go and rerun the same command later: it waits for the jobs still running and writes
``results/ablations/<name>-components.csv`` (+ Markdown and plot) from every finished cell.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.ablation.execute import teacher_eval_cache, teacher_provenance
from kdlab.ablation.grid import AblationPlan, Cell
from kdlab.ablation.table import AblationTable
from kdlab.config.names import EXECUTORS, SLURM_SETTINGS
from kdlab.errors import KdlabError, did_you_mean
from kdlab.report.tables import TEACHER_CELL
from kdlab.results import read_json, sole_writer, write_json
from kdlab.runs.console import console

# sbatch options that kdlab or submitit set themselves: given as sbatch.X they would break the job or the array
_RESERVED = {"array", "output", "error", "signal", "open-mode", "job-name", "wckey", "time", "partition", "account",
             "qos", "gpus-per-node", "cpus-per-task", "mem", "nodes", "ntasks-per-node"}
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<hours>\d+):(?P<minutes>\d\d):(?P<seconds>\d\d)$")


@dataclass(frozen=True)
class ClusterSettings:
    """Where and with what each job runs (``--executor`` and ``--slurm``); see the module docstring."""

    executor: str  # slurm | submitit-local
    time_min: int
    gpus: int
    cpus: int | None = None
    mem_gb: float | None = None
    parallel: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    requeues: int = 3
    sbatch: tuple[tuple[str, str], ...] = ()

    @property
    def cluster(self) -> str:
        """submitit's name for the executor."""
        return "slurm" if self.executor == "slurm" else "local"


def cluster_settings(executor: str, entries: list[str], jobs: int = 1) -> ClusterSettings | None:
    """``--executor`` and its ``--slurm KEY=VALUE`` settings, checked before any work; None means the local pool."""
    if executor not in EXECUTORS:
        raise KdlabError(f"--executor {executor}: choose {', '.join(EXECUTORS)}{did_you_mean(executor, EXECUTORS)}")
    if executor == "local":
        if entries:
            raise KdlabError(f"--slurm {entries[0]}: Slurm settings need --executor slurm; the local pool "
                             "takes --jobs N")
        return None
    if jobs > 1:
        raise KdlabError(f"--jobs {jobs} sizes the local pool; with --executor {executor} use --slurm parallel=N")
    if importlib.util.find_spec("submitit") is None:
        raise KdlabError(f"--executor {executor} needs submitit: pip install -e \".[slurm]\"")
    if executor == "slurm" and shutil.which("srun") is None:
        raise KdlabError("--executor slurm: no Slurm here (srun not found): run kdlab ablate on the cluster's login "
                         "node, or use --executor local")
    values: dict[str, Any] = {}
    sbatch: dict[str, str] = {}
    for entry in entries:
        key, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or not key or not value:
            raise KdlabError(f"--slurm '{entry}': expected KEY=VALUE, e.g. --slurm time=4:00:00")
        if key.startswith("sbatch."):
            option = key.removeprefix("sbatch.").replace("_", "-")
            if option in _RESERVED:
                own = {"gpus-per-node": "gpus", "cpus-per-task": "cpus"}.get(option, option)
                fix = f"use --slurm {own}=VALUE" if own in SLURM_SETTINGS else "kdlab and submitit set it"
                raise KdlabError(f"--slurm {entry}: {fix}")
            sbatch[option] = value
            continue
        if key not in SLURM_SETTINGS:
            raise KdlabError(f"--slurm {entry}: unknown setting {key!r}{did_you_mean(key, SLURM_SETTINGS)}; settings:"
                             f" {', '.join(SLURM_SETTINGS)}, or sbatch.OPTION=VALUE for any other sbatch option")
        if key in values:
            raise KdlabError(f"--slurm {key} is given twice")
        values[key] = _setting(key, value, entry)
    if "time" not in values and executor == "slurm":
        raise KdlabError("--executor slurm needs each job's time limit: --slurm time=H:MM:SS (a cell that reaches it "
                         "is requeued and resumes)")
    if values.get("gpus", 0) > 1:
        raise KdlabError(f"--slurm gpus={values['gpus']}: a cell is one process on at most one GPU; run more cells "
                         "at once with --slurm parallel=N")
    return ClusterSettings(executor=executor, time_min=values.pop("time", 24 * 60),
                           gpus=values.pop("gpus", 1 if executor == "slurm" else 0),
                           mem_gb=values.pop("mem", None), sbatch=tuple(sorted(sbatch.items())), **values)


def _setting(key: str, value: str, entry: str) -> Any:
    if key in ("partition", "account", "qos"):
        return value
    if key == "time":
        if value.isdigit() and int(value) > 0:
            return int(value)
        match = _TIME.match(value)
        if not match:
            raise KdlabError(f"--slurm {entry}: expected minutes (240) or [D-]H:MM:SS (4:00:00, 1-12:00:00)")
        days, hours, minutes, seconds = (int(match[part] or 0) for part in ("days", "hours", "minutes", "seconds"))
        return max(1, days * 1440 + hours * 60 + minutes + (seconds > 0))
    if key == "mem":
        number = value.upper().removesuffix("B").removesuffix("G")
        try:
            gigabytes = float(number)
        except ValueError:
            gigabytes = 0.0
        if gigabytes <= 0:
            raise KdlabError(f"--slurm {entry}: expected gigabytes, e.g. mem=32")
        return gigabytes
    lowest = 0 if key in ("gpus", "requeues") else 1
    if not value.isdigit() or int(value) < lowest:
        raise KdlabError(f"--slurm {entry}: expected a whole number of at least {lowest}")
    return int(value)


# --------------------------------------------------------------------------- submission
class _Submitter:
    """Builds submitit's executor, submits jobs, records them in ``jobs.json`` and reattaches to live ones."""

    def __init__(self, settings: ClusterSettings, jobs_dir: Path, name: str, threads: int | None):
        import submitit

        self.settings, self.jobs_dir, self.name, self.threads = settings, jobs_dir, name, threads
        self.records_path = jobs_dir / "jobs.json"
        self.records = read_json(self.records_path) if self.records_path.is_file() else {}
        cluster = settings.cluster
        try:
            self.executor = submitit.AutoExecutor(folder=jobs_dir / "%j", cluster=cluster,
                                                  **{f"{cluster}_max_num_timeout": settings.requeues})
            parameters: dict[str, Any] = {"timeout_min": settings.time_min, "gpus_per_node": settings.gpus,
                                          "cpus_per_task": settings.cpus, "mem_gb": settings.mem_gb}
            if cluster == "slurm":
                parameters.update(slurm_partition=settings.partition, slurm_account=settings.account,
                                  slurm_qos=settings.qos, slurm_array_parallelism=settings.parallel,
                                  slurm_additional_parameters=dict(settings.sbatch) or None)
            self.executor.update_parameters(**parameters)
        except (RuntimeError, ValueError, NameError, AssertionError) as error:
            raise KdlabError(f"--executor {settings.executor}: submitit refused the settings: "
                             f"{_first_line(str(error))}") from None

    def live(self, key: str, run_dir: Path | None):
        """The job submitted earlier for this run if Slurm still has it queued or running (reattach, don't
        resubmit); local processes of an earlier command cannot be reattached."""
        record = self.records.get(key)
        if self.settings.cluster != "slurm" or not record or record.get("run_dir") != str(run_dir):
            return None
        import submitit

        job = submitit.SlurmJob(folder=self.jobs_dir / "%j", job_id=record["job_id"])
        return None if job.done(force_check=True) else job

    def submit(self, label: str, works: list[tuple[str, Path | None, dict]]) -> list:
        """Submit ``(key, run_dir, work)`` as one job array (one job when alone); record the job ids."""
        from kdlab.ablation.cluster_job import CellJob

        if not works:
            return []
        self.executor.update_parameters(name=f"{self.name}-{label}")
        try:
            jobs = self.executor.map_array(CellJob(self.threads), [work for _, _, work in works])
        except Exception as error:  # noqa: BLE001 - sbatch's refusal (no such partition, account, ...): one line
            raise KdlabError(f"submitting the {label} failed: {_first_line(str(error))}") from None
        for (key, run_dir, _), job in zip(works, jobs, strict=True):
            self.records[key] = {"job_id": job.job_id, "run_dir": str(run_dir)}
        write_json(self.records_path, self.records)
        return jobs

    def poll_seconds(self) -> float:
        return 1.0 if self.settings.cluster == "local" else 15.0


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _job_error(error: Exception) -> str:
    """The last line of a job's traceback (submitit frames it with dashed lines), else the error's first line."""
    parts = re.split(r"^-{10,}$", str(error), flags=re.MULTILINE)
    trace = [line.strip() for line in (parts[1] if len(parts) > 2 else "").splitlines() if line.strip()]
    line = trace[-1] if trace else _first_line(str(error))
    return line.removeprefix("kdlab.errors.KdlabError: ")


def _failure(what: str, job: Any, error: Exception) -> str:
    return (f"{what}: job {job.job_id} failed: {_job_error(error)} (log {job.paths.stderr}); fix it and rerun "
            "the same command: finished cells are reused, unfinished ones resume")


# --------------------------------------------------------------------------- the ablation
def run_on_cluster(plan: AblationPlan, out_dir: Path, settings: ClusterSettings, threads: int | None = None,
                   on_cell=None) -> Path:
    """Run every (cell, seed) of ``plan`` as a job (see the module docstring); returns the table's CSV. One
    process writes a table at a time (:func:`kdlab.results.sole_writer`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with sole_writer(plan.table_path(out_dir)):
        return _run_on_cluster(plan, out_dir, settings, threads, on_cell)


def _run_on_cluster(plan: AblationPlan, out_dir: Path, settings: ClusterSettings, threads: int | None,
                    on_cell) -> Path:
    from kdlab.check.plan import check_ablation_plan

    first = plan.recipe_for(plan.cells[0], plan.seeds[0])
    if first.device == "cuda" and settings.gpus == 0:
        raise KdlabError(f"{plan.recipe_path} sets device: cuda but its jobs get no GPU: --slurm gpus=1, or device: "
                         "auto")
    table = AblationTable(plan, out_dir, on_cell)
    jobs_dir = Path(first.output.dir).resolve() / "submitit" / table.path.stem
    # which runs are finished (and the teacher's run directory); the jobs, not this machine, need the GPU
    checked = check_ablation_plan(plan, device_here=False)
    submitter = _Submitter(settings, jobs_dir, f"kdlab-{plan.name}", threads)
    try:
        if first.is_distillation:
            teacher = _teacher(plan, first, checked, submitter)
            if teacher is not None:
                table.record(Cell(TEACHER_CELL), plan.seeds[0], teacher)
        planned = {(run.role, run.seed): run for run in checked.runs if run.role != "teacher"}
        waiting, to_submit, works = [], [], []
        for cell, seed in table.order():
            run = planned.get((cell.label, seed))
            if run is not None and run.status == "finished":
                table.record(cell, seed, read_json(run.reuse_from / "summary.json"))
                continue
            key, run_dir = f"{cell.label}|{seed}", run.run_dir if run is not None else None
            job = submitter.live(key, run_dir)
            if job is not None:
                waiting.append((cell, seed, job))
                continue
            to_submit.append((cell, seed))
            works.append((key, run_dir, {"kind": "cell", "recipe": plan.recipe_for(cell, seed).to_yaml(),
                                         "overrides": list(plan.cell_overrides(cell, seed)),
                                         "group": table.path.stem, "cell": cell.label, "command": plan.command,
                                         "divergence_is_a_result": plan.divergence_is_a_result}))
        submitted = submitter.submit("cells", works)
        if submitted or waiting:
            reattached = f"; waiting for {len(waiting)} submitted before" if waiting else ""
            console.print(f"{len(submitted)} cells submitted ({settings.executor}{_array_id(submitted)}){reattached};"
                          f" logs in {jobs_dir}")
        waiting += [(cell, seed, job) for (cell, seed), job in zip(to_submit, submitted, strict=True)]
        failures = _collect(waiting, table, submitter.poll_seconds())
    except KeyboardInterrupt:
        console.print(f"the jobs keep running ({settings.executor}); rerun the same command to wait for them and "
                      "write the table")
        raise
    if failures:
        raise KdlabError("\n".join(failures))
    return table.path


def _array_id(jobs: list) -> str:
    ids = {str(job.job_id).split("_")[0] for job in jobs}
    return f": job array {ids.pop()}" if len(ids) == 1 and len(jobs) > 1 else ""


def _collect(waiting: list, table: AblationTable, poll: float) -> list[str]:
    """Record each cell as its job finishes; the failures, one line each."""
    from submitit.helpers import as_completed

    cells = {id(job): (cell, seed) for cell, seed, job in waiting}
    failures = []
    for job in as_completed([job for _, _, job in waiting], poll_frequency=poll):
        cell, seed = cells[id(job)]
        try:
            outcome = job.result()
        except Exception as error:  # noqa: BLE001 - the job's own error, or a job that ended without a result
            failures.append(_failure(f"cell {cell.label} seed {seed}", job, error))
            continue
        _note_requeues(f"{cell.label} seed {seed}", outcome)
        table.record(cell, seed, outcome["summary"])
    return failures


def _note_requeues(what: str, outcome: dict) -> None:
    """One line for a job that was requeued: by submitit (the attempt number) or by Slurm itself (an administrator's
    ``scontrol requeue``, a failed node: only Slurm's restart count knows those)."""
    requeues = max(outcome["attempt"] - 1, outcome.get("restarts", 0))
    if requeues:
        start = outcome.get("start_epoch")
        resumed = f", resumed at epoch {start}" if start else ""
        console.print(f"  {what} was requeued {requeues}x{resumed}")


def _teacher(plan: AblationPlan, first: Any, checked: Any, submitter: _Submitter) -> dict | None:
    """The teacher row (or None without one), training or evaluating the teacher in a job first when needed."""
    spec, run_dir = first.teacher, None
    if spec.recipe is not None:
        run = next((run for run in checked.runs if run.role == "teacher"), None)
        run_dir = run.run_dir if run is not None else None
        location = str(run.reuse_from) if run is not None and run.status == "finished" else None
    else:  # a checkpoint or zoo teacher is there already; named as kdlab.runs.run.prepare_teacher names it
        location = spec.checkpoint or f"robustbench:{spec.robustbench}"
    if location is not None and not plan.include_teacher:
        return None
    if location is not None and teacher_eval_cache(first, location).is_file():
        return {"run_dir": location, **teacher_provenance(location), **read_json(teacher_eval_cache(first, location))}
    job = submitter.live("teacher", run_dir)
    if job is None:
        work = {"kind": "teacher", "plan": plan, "evaluate": plan.include_teacher}
        [job] = submitter.submit("teacher", [("teacher", run_dir, work)])
        console.print(f"teacher submitted ({submitter.settings.executor}: job {job.job_id}); the cells follow "
                      f"when it is done; logs in {submitter.jobs_dir}")
    try:
        outcome = job.result()
    except Exception as error:  # noqa: BLE001 - whatever stopped the teacher's job, reported as one line
        raise KdlabError(_failure("the shared teacher", job, error)) from None
    _note_requeues("the teacher", outcome)
    return outcome["summary"]
