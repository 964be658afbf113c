"""The tiny training recipe the ablation tests plan and run (embedded data, one epoch)."""

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
