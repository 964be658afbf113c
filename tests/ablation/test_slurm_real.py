"""kdlab ablate --executor slurm against a real one-node Slurm cluster (tests/helpers/slurm.py): the cells go out
through real sbatch as a job array, one is requeued by ``scontrol requeue`` after its epoch 1 is saved and resumes
from there, and the table and weights equal the local pool's. Skipped without Slurm (apt-get install slurm-wlm
munge) or root; in CI (CI set) a missing cluster fails it."""

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kdlab.cli.main import app
from tests.helpers.same_tables import rows, same_runs

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
DATA = {"dataset": "embedded", "subset": 500, "test_subset": 20, "batch_size": 50}
GRID = ("--grid", "train.lr=0.05,0.1", "--seeds", "0")
TABLE = "m-grid-train.lr.csv"
# what differs between the two tables' rows: timing, where the runs live, the plan's fingerprint (it hashes the
# recipe, whose output.dir differs), the command that wrote the row (as tests/ablation/test_cluster.py)
# After `scontrol requeue`, Slurm sends SIGTERM (which submitit ignores) and kills the job's processes about 5 s
# later (SIGKILL 4.7 s after SIGTERM with KillWait=1, measured); the cell must have that long of training left after
# its epoch 1, on any CPU: the epochs are counted from a timed epoch so that ~10 s remain.
REMAINING_S = 10.0


def write_recipe(folder, epochs):
    folder.mkdir(parents=True)
    recipe = folder / "train.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "m", "data": DATA, "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": epochs},
        "eval": {"n": 20, "steps": 2}, "output": {"dir": str(folder / "runs"), "table": str(folder / "runs.csv")}}))
    return recipe


def epochs_for_the_requeue(folder):
    """1 + enough epochs of ``DATA`` to fill REMAINING_S on this machine (4 to 60)."""
    recipe = write_recipe(folder, epochs=2)
    result = CliRunner().invoke(app, ["train", str(recipe), "--threads", "1"])
    assert result.exit_code == 0, result.output
    [metrics] = (folder / "runs").glob("*/metrics.csv")
    seconds = pd.read_csv(metrics)["epoch_seconds"].iloc[-1]  # the second epoch: warm
    return min(60, max(4, 1 + math.ceil(REMAINING_S / seconds)))


def wait_for(what, found, timeout, ablate):
    """Poll ``found()`` until it returns something, at most ``timeout`` s, failing early if the command ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if ablate.poll() is not None:
            pytest.fail(f"kdlab ablate ended ({ablate.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s")


def test_cells_through_real_sbatch_resume_after_scontrol_requeue_and_give_the_local_table(tmp_path, slurm_cluster):
    epochs = epochs_for_the_requeue(tmp_path / "timing")
    local_recipe = write_recipe(tmp_path / "local", epochs)
    result = CliRunner().invoke(app, ["ablate", str(local_recipe), *GRID, "--out", str(tmp_path / "local" / "tables"),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output

    recipe = write_recipe(tmp_path / "slurm", epochs)
    out = tmp_path / "slurm" / "ablate.out"
    env = {**slurm_cluster.env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "kdlab", "ablate", str(recipe), *GRID, "--out", str(tmp_path / "slurm" / "tables"),
               "--threads", "1", "--executor", "slurm", "--slurm", "time=10", "--slurm", "gpus=0", "--slurm", "cpus=1"]
    with open(out, "w") as log:
        ablate = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        jobs_dir = tmp_path / "slurm" / "runs" / "submitit" / Path(TABLE).stem
        records = wait_for("jobs.json (the array submitted)", lambda: (jobs_dir / "jobs.json").is_file()
                           and json.loads((jobs_dir / "jobs.json").read_text()), 60, ablate)
        job_id = records["lr=0.05|0"]["job_id"]

        def cell_log():
            logs = list((jobs_dir / job_id).glob("*_log.out"))
            return logs[0].read_text() if logs else ""

        # the cell's job has saved epoch 1 (the log line follows last.pt): requeue it, as an administrator would
        wait_for(f"epoch 1 of job {job_id}", lambda: f": epoch 1/{epochs} " in cell_log(), 90, ablate)
        slurm_cluster.run("scontrol", "requeue", job_id)
        ablate.wait(timeout=150)
    finally:
        if ablate.poll() is None:
            ablate.kill()
            ablate.wait()
    output = out.read_text()
    assert ablate.returncode == 0, f"{output}\n{slurm_cluster.logs()}"
    assert re.search(r"2 cells submitted \(slurm: job array \d+\)", output), output

    # Slurm restarted the job once; the restart resumed from the last saved epoch, so each epoch trained once
    assert "Restarts=1 " in slurm_cluster.run("scontrol", "show", "job", job_id)
    log = cell_log()
    every_epoch = [str(epoch) for epoch in range(1, epochs + 1)]
    requeued = log.index("Bypassing signal SIGTERM")  # submitit's line: Slurm's SIGTERM reached the running job
    resumed = re.search(rf"attempt 1, epochs (\d+)-{epochs}, resumed from last\.pt after epoch (\d+)\n", log)
    assert resumed and resumed.start() > requeued and 2 <= int(resumed[1]) <= epochs, log
    saved = int(resumed[2])
    assert int(resumed[1]) == saved + 1, log  # it starts after the last epoch the killed attempt saved
    # the killed attempt logged epochs 1..saved, or 1..saved-1 when the kill fell between saving the last one and
    # printing its line (the line follows last.pt); the restart trains saved+1..epochs: no epoch twice, none skipped
    before = re.findall(rf": epoch (\d+)/{epochs} ", log[:resumed.start()])
    assert before in (every_epoch[:saved], every_epoch[:saved - 1]), log
    assert re.findall(rf": epoch (\d+)/{epochs} ", log[resumed.start():]) == every_epoch[saved:], log
    # and the command says so (before, only submitit's own requeues were reported: this one was silent)
    assert f"lr=0.05 seed 0 was requeued 1x, resumed at epoch {resumed[1]}\n" in output, output
    assert "lr=0.1 seed 0 was requeued" not in output
    other = next((jobs_dir / records["lr=0.1|0"]["job_id"]).glob("*_log.out")).read_text()
    assert "resumed" not in other and re.findall(rf": epoch (\d+)/{epochs} ", other) == every_epoch

    # the same table as the local pool's, and the requeued run's weights equal an uninterrupted run's
    tables = [tmp_path / where / "tables" / TABLE for where in ("slurm", "local")]
    assert rows(tables[0]) == rows(tables[1]) and len(rows(tables[0])) == 2
    same_runs(tmp_path / "local" / "runs", tmp_path / "slurm" / "runs")
