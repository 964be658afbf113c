"""The tiny training recipe the ablation tests plan and run (embedded data, one epoch); the real one-node Slurm
cluster of tests/ablation/test_slurm_real.py."""

import os

import pytest
import yaml

DATA = {"dataset": "embedded", "subset": 128, "test_subset": 40, "batch_size": 32}


@pytest.fixture()
def train_recipe(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({
        "name": "abl", "data": DATA, "model": {"arch": "resnet_small", "width": 4}, "train": {"epochs": 1},
        "eval": {"n": 30, "steps": 2},
        "output": {"dir": str(tmp_path / "runs"), "table": str(tmp_path / "runs.csv")},
    }))
    return path


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real one-node Slurm cluster on localhost (:mod:`tests.helpers.slurm`) for the session; skipped with the
    reason where Slurm or root is missing, except in CI (CI set), which installs Slurm: there it fails."""
    from tests.helpers.slurm import one_node_cluster, unavailable

    reason = unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI installs Slurm in .ci/run and runs the real-Slurm test)")
        pytest.skip(reason)
    with one_node_cluster() as cluster:
        yield cluster
