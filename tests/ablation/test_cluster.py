"""kdlab ablate --executor slurm without a cluster: the same jobs through submitit's LocalExecutor (separate
processes), against the local pool's table; a pre-empted cell requeued and resumed; the Slurm settings as sbatch
receives them."""

import json

import pandas as pd
import pytest
import submitit
import yaml
from typer.testing import CliRunner

from kdlab.ablation.cluster import _failure, _Submitter, cluster_settings
from kdlab.cli.main import app
from kdlab.errors import KdlabError
from tests.helpers.same_tables import rows, same_runs

DATA = {"dataset": "embedded", "subset": 128, "test_subset": 40, "batch_size": 32}
EVAL = {"n": 30, "steps": 2}
# what differs between two runs of the same cells: timing, where they live, the plan's fingerprint (it hashes the
# recipe, whose output.dir differs), the command that wrote the row (another recipe path, --executor)


def write_recipes(folder, epochs):
    """A teacher recipe and a distill recipe whose runs live under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    output = {"dir": str(folder / "runs"), "table": str(folder / "runs.csv")}
    teacher = folder / "teacher.yaml"
    teacher.write_text(yaml.safe_dump({"name": "t", "data": DATA, "model": {"arch": "resnet_small", "width": 4},
                                       "train": {"epochs": 1, "max_batches_per_epoch": 3}, "eval": EVAL,
                                       "output": output}))
    student = folder / "student.yaml"
    student.write_text(yaml.safe_dump({"name": "s", "data": DATA, "teacher": {"recipe": str(teacher)},
                                       "student": {"arch": "resnet_small", "width": 4},
                                       "train": {"epochs": epochs, "max_batches_per_epoch": 3}, "eval": EVAL,
                                       "output": output}))
    train = folder / "train.yaml"
    train.write_text(yaml.safe_dump({"name": "m", "data": DATA, "model": {"arch": "resnet_small", "width": 4},
                                     "train": {"epochs": epochs, "max_batches_per_epoch": 3}, "eval": EVAL,
                                     "output": output}))
    return student, train


def ablate(recipe, out, *flags, cells=("--grid", "train.lr=0.05,0.1")):
    result = CliRunner().invoke(app, ["ablate", str(recipe), *cells, "--out", str(out), "--threads", "1", *flags])
    assert result.exit_code == 0, result.output
    return result.output


def test_cells_as_submitit_jobs_give_the_local_pools_table(tmp_path):
    local_recipe, _ = write_recipes(tmp_path / "local", epochs=1)
    jobs_recipe, _ = write_recipes(tmp_path / "jobs", epochs=1)
    local = ablate(local_recipe, tmp_path / "local" / "tables")
    output = ablate(jobs_recipe, tmp_path / "jobs" / "tables", "--executor", "submitit-local")
    assert "teacher submitted (submitit-local" in output and "2 cells submitted (submitit-local)" in output
    table = "s-grid-train.lr.csv"
    assert rows(tmp_path / "jobs" / "tables" / table) == rows(tmp_path / "local" / "tables" / table)
    assert len(rows(tmp_path / "jobs" / "tables" / table)) == 2 and "[2/2]" in local
    same_runs(tmp_path / "local" / "runs", tmp_path / "jobs" / "runs")  # the teacher and both cells
    logs = list((tmp_path / "jobs" / "runs" / "submitit" / "s-grid-train.lr").glob("*/*_log.out"))
    assert len(logs) == 3  # one job for the teacher, one per cell, logged beside the runs
    # every job's run (the teacher's too) and every row records the ablate command that submitted it
    command = (f"kdlab ablate {jobs_recipe} --grid train.lr=0.05,0.1 --out {tmp_path / 'jobs' / 'tables'} "
               "--threads 1 --executor submitit-local")
    records = [json.loads(path.read_text()) for path in (tmp_path / "jobs" / "runs").glob("*/run.json")]
    assert len(records) == 3 and all(record["command"] == command for record in records)
    assert pd.read_csv(tmp_path / "jobs" / "tables" / table)["command"].tolist() == [command, command]
    # the same command again: every run is finished, nothing is submitted, the table is rebuilt the same
    before = (tmp_path / "jobs" / "tables" / table).read_text()
    again = ablate(jobs_recipe, tmp_path / "jobs" / "tables", "--executor", "submitit-local")
    assert "submitted" not in again and "[2/2] lr=0.1 seed 0" in again
    assert (tmp_path / "jobs" / "tables" / table).read_text() == before


def test_a_table_with_a_teacher_row_evaluates_the_teacher_in_a_job_once(tmp_path):
    """--methods puts the teacher's row in the table. Its mixacm cell is the finished lr=0.1 cell of the grid
    (lr 0.1 is the default: the same run), so only the teacher's evaluation is left to do, in a job."""
    local_recipe, _ = write_recipes(tmp_path / "local", epochs=1)
    jobs_recipe, _ = write_recipes(tmp_path / "jobs", epochs=1)
    methods = ("--methods", "mixacm")
    for recipe, flags in ((local_recipe, ()), (jobs_recipe, ("--executor", "submitit-local"))):
        ablate(recipe, recipe.parent / "tables", *flags, cells=("--grid", "train.lr=0.1"))
        output = ablate(recipe, recipe.parent / "tables", *flags, cells=methods)
    assert "teacher submitted (submitit-local" in output and "cells submitted" not in output
    table = "s-methods.csv"
    assert rows(tmp_path / "jobs" / "tables" / table) == rows(tmp_path / "local" / "tables" / table)
    assert [row["cell"] for row in rows(tmp_path / "jobs" / "tables" / table)] == ["teacher", "mixacm"]
    # again: the teacher's evaluation is cached beside its run, so nothing is submitted and the CSV is the same
    before = (tmp_path / "jobs" / "tables" / table).read_text()
    again = ablate(jobs_recipe, tmp_path / "jobs" / "tables", "--executor", "submitit-local", cells=methods)
    assert "submitted" not in again and (tmp_path / "jobs" / "tables" / table).read_text() == before


def test_a_preempted_cell_is_requeued_and_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    _, local_recipe = write_recipes(tmp_path / "local", epochs=2)
    _, jobs_recipe = write_recipes(tmp_path / "jobs", epochs=2)
    ablate(local_recipe, tmp_path / "local" / "tables")
    # each job sends itself submitit's pre-emption signal (Slurm's USR2) after epoch 1 of its first attempt
    monkeypatch.setenv("KDLAB_PREEMPT_AFTER_EPOCH", "1")
    output = ablate(jobs_recipe, tmp_path / "jobs" / "tables", "--executor", "submitit-local")
    assert "lr=0.05 seed 0 was requeued 1x, resumed at epoch 2" in output
    assert "lr=0.1 seed 0 was requeued 1x, resumed at epoch 2" in output
    logs = "".join(path.read_text() for path in (tmp_path / "jobs" / "runs").glob("submitit/*/*/*_log.out"))
    assert logs.count("attempt 1, epochs 1-2\n") == 2 and logs.count("epoch 1/2") == 2  # epoch 1 trained once
    assert logs.count("attempt 2, epochs 2-2, resumed from last.pt after epoch 1") == 2
    table = "m-grid-train.lr.csv"
    assert rows(tmp_path / "jobs" / "tables" / table) == rows(tmp_path / "local" / "tables" / table)
    same_runs(tmp_path / "local" / "runs", tmp_path / "jobs" / "runs")  # the interrupted runs equal uninterrupted ones


def fails(message):
    raise KdlabError(message)


def test_a_failed_job_is_one_line_with_its_error_and_log(tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="local")
    executor.update_parameters(timeout_min=1)
    job = executor.submit(fails, "loss became nan at epoch 3")
    with pytest.raises(submitit.core.utils.FailedJobError) as error:
        job.result()
    line = _failure("cell acm seed 1", job, error.value)
    assert "\n" not in line
    assert line.startswith(f"cell acm seed 1: job {job.job_id} failed: loss became nan at epoch 3 (log ")
    assert str(job.paths.stderr) in line and line.endswith("rerun the same command: finished cells are reused, "
                                                           "unfinished ones resume")


def test_slurm_settings_reach_sbatch(tmp_path, monkeypatch):
    """Without Slurm: pretend srun exists and read the sbatch script submitit would submit."""
    from submitit.slurm import slurm

    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    settings = cluster_settings("slurm", ["time=1-02:30:00", "partition=gpu", "cpus=8", "mem=32", "parallel=2",
                                          "account=lab", "qos=high", "sbatch.constraint=a100"])
    submitter = _Submitter(settings, tmp_path, "kdlab-x", threads=None)
    script = slurm._make_sbatch_string(command="run", folder=tmp_path / "%j", map_count=6,
                                       **submitter.executor._executor.parameters)
    for line in ["--time=1590", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--array=0-5%2", "--account=lab", "--qos=high", "--constraint=a100", "--signal=USR2@90"]:
        assert f"#SBATCH {line}\n" in script, line
    assert submitter.executor._executor.max_num_timeout == 3  # a timed-out cell is requeued up to 3 times


@pytest.mark.parametrize(("executor", "entries", "jobs", "message"), [
    ("slurn", [], 1, "--executor slurn: choose local, slurm, submitit-local (did you mean 'slurm'?)"),
    ("local", ["time=10"], 1, "--slurm time=10: Slurm settings need --executor slurm"),
    ("submitit-local", [], 2, "--jobs 2 sizes the local pool; with --executor submitit-local use --slurm parallel=N"),
    ("submitit-local", ["partiton=gpu"], 1, "unknown setting 'partiton' (did you mean 'partition'?)"),
    ("submitit-local", ["time=4h"], 1, "--slurm time=4h: expected minutes (240) or [D-]H:MM:SS"),
    ("submitit-local", ["gpus=2"], 1, "a cell is one process on at most one GPU"),
    ("submitit-local", ["cpus=0"], 1, "--slurm cpus=0: expected a whole number of at least 1"),
    ("submitit-local", ["sbatch.time=10"], 1, "--slurm sbatch.time=10: use --slurm time=VALUE"),
    ("submitit-local", ["sbatch.array=0-3"], 1, "kdlab and submitit set it"),
    ("submitit-local", ["time=10", "time=20"], 1, "--slurm time is given twice"),
])
def test_executor_mistakes_are_one_line(executor, entries, jobs, message):
    with pytest.raises(KdlabError) as error:
        cluster_settings(executor, entries, jobs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_slurm_needs_a_time_limit_and_a_cluster(tmp_path, monkeypatch):
    _, recipe = write_recipes(tmp_path, epochs=1)
    monkeypatch.setattr("shutil.which", lambda name: None)  # a machine without Slurm (CI installs it)
    result = CliRunner().invoke(app, ["ablate", str(recipe), "--grid", "train.lr=0.1,0.2", "--executor", "slurm"])
    assert result.exit_code == 2 and "no Slurm here (srun not found)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(KdlabError, match=r"needs each job's time limit: --slurm time=H:MM:SS"):
        cluster_settings("slurm", ["partition=gpu"])
    assert cluster_settings("slurm", ["time=90"]).gpus == 1  # a GPU per cell unless told otherwise
    assert cluster_settings("submitit-local", []).time_min == 24 * 60  # submitit's local default would be 2 min
    assert cluster_settings("local", []) is None


def test_cuda_recipes_are_checked_for_the_jobs_not_this_machine(tmp_path):
    """The login node has no GPU: device: cuda is refused only when the jobs would get none either."""
    _, recipe = write_recipes(tmp_path, epochs=1)
    result = CliRunner().invoke(app, ["ablate", str(recipe), "--grid", "train.lr=0.1,0.2", "--set", "device=cuda",
                                      "--executor", "submitit-local", "--out", str(tmp_path / "tables")])
    assert result.exit_code == 2 and "no CUDA GPU is visible" not in result.output
    assert "sets device: cuda but its jobs get no GPU: --slurm gpus=1, or device: auto" in result.output

