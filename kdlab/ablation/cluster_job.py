"""What runs inside one cluster job of ``kdlab ablate --executor slurm``: the shared teacher or one cell.

:class:`CellJob` is a ``submitit.helpers.Checkpointable``: when Slurm is about to stop the job (pre-emption, or
the time limit: submitit asks Slurm for USR2 ``signal_delay_s`` seconds before), submitit calls
:meth:`CellJob.checkpoint`, which returns the same work as a new submission (attempt + 1), and requeues the job.
The work itself always runs with ``resume=True`` (:func:`kdlab.runs.run.run_recipe`), so the requeued job continues
from the run's ``last.pt``: at most the epoch in progress is lost. The same holds for any other restart (a node
failure, ``scancel``, rerunning the command): nothing finished is ever trained twice.

This module imports submitit and is only imported where a job is built or runs (:mod:`kdlab.ablation.cluster`), so
kdlab itself runs without the optional ``slurm`` extra. Submission, waiting and the table live in
:mod:`kdlab.ablation.cluster`; see its docstring for the whole flow and for running a paper-scale ablation.

``KDLAB_PREEMPT_AFTER_EPOCH=N`` (environment) is a drill: on its first attempt a job sends itself submitit's
pre-emption signal once epoch N is saved, exactly what Slurm does before pre-empting it, so one can watch the
requeue and the resume on a real cluster (``tests/ablation/test_cluster.py`` does it with ``--executor submitit-local``).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import submitit

from kdlab.ablation.execute import run_cell, teacher_row
from kdlab.train.reporter import Reporter

DRILL = "KDLAB_PREEMPT_AFTER_EPOCH"


def allocated_cpus() -> int:
    """The CPUs this job may use (Slurm's --cpus-per-task, through the process's affinity), not the node's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slurm_restarts() -> int:
    """How many times Slurm restarted this job: every requeue counts, submitit's own (pre-emption, time limit:
    the attempt number counts those too) and any other (``scontrol requeue``, a failed node); 0 outside Slurm."""
    count = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    return int(count) if count.isdigit() else 0


class JobReporter(Reporter):
    """One line per epoch in the job's log (``tail -f`` it); remembers the epoch training started from."""

    def __init__(self, attempt: int):
        self.attempt, self.name, self.epochs, self.start_epoch = attempt, "", 0, None
        drill = os.environ.get(DRILL, "").strip()
        self.preempt_after = int(drill) if drill.isdigit() and attempt == 1 else None

    def named(self, name: str) -> JobReporter:
        """The reporter factory :func:`kdlab.runs.run.run_recipe` calls with the run's name."""
        self.name = name
        return self

    def fit_started(self, epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.epochs, self.start_epoch = epochs, start_epoch
        resumed = f", resumed from last.pt after epoch {start_epoch - 1}" if start_epoch > 1 else ""
        print(f"{self.name}: attempt {self.attempt}, epochs {start_epoch}-{epochs}{resumed}", flush=True)

    def epoch_done(self, epoch: int, metrics: dict[str, Any]) -> None:
        shown = " ".join(f"{key}={value:.4g}" for key, value in metrics.items()
                         if key != "epoch" and isinstance(value, (int, float)))
        print(f"{self.name}: epoch {epoch}/{self.epochs} {shown}", flush=True)
        if epoch == self.preempt_after:
            name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # the signal submitit listens to
            print(f"{self.name}: {DRILL}={epoch}: sending {name} to this job (a pre-emption drill)", flush=True)
            os.kill(os.getpid(), getattr(signal, name))  # submitit's handler checkpoints, requeues and exits


class CellJob(submitit.helpers.Checkpointable):
    """Runs one piece of an ablation in a job: ``work`` is ``{"kind": "teacher", "plan", "evaluate"}`` (train or find
    the shared teacher, evaluate it if the table has a teacher row) or ``{"kind": "cell", "recipe", "overrides",
    "group", "cell"}`` (one cell's run, as the local pool runs it). Returns ``{"summary", "attempt",
    "start_epoch", "restarts"}``: the run's summary (or teacher row) and, for the command's log, how the job got
    there (``restarts``: Slurm's count, which includes requeues submitit did not make)."""

    def __init__(self, threads: int | None, attempt: int = 1):
        self.threads, self.attempt = threads, attempt

    def __call__(self, work: dict[str, Any]) -> dict[str, Any]:
        threads = self.threads or allocated_cpus()
        reporter = JobReporter(self.attempt)
        if work["kind"] == "teacher":
            summary = teacher_row(work["plan"], threads, work["evaluate"], reporter_factory=reporter.named)
        else:
            summary = run_cell(work["recipe"], threads, tuple(work["overrides"]), work["group"], work["cell"],
                               reporter_factory=reporter.named,
                               divergence_is_a_result=work.get("divergence_is_a_result", False),
                               command=work.get("command", ""))
        return {"summary": summary, "attempt": self.attempt, "start_epoch": reporter.start_epoch,
                "restarts": slurm_restarts()}

    def checkpoint(self, work: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        """Called by submitit before Slurm stops the job: the same work, resumed (run_recipe resumes from
        last.pt), as the next attempt."""
        return submitit.helpers.DelayedSubmission(CellJob(self.threads, self.attempt + 1), work)
